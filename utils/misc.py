"""Seeding, RNG state capture, device choice and mixed-precision (AMP) selection."""
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- seeding
def set_seed(seed):
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed) % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# Independent random streams derived from the same (seed, epoch, rank).
DATA_STREAM, TRAINING_STREAM = 0, 1


def epoch_seed(seed, epoch, rank=0, stream=TRAINING_STREAM):
    """The 63-bit seed of one random stream of one epoch on one rank: depends only on its arguments.

    ``TRAINING_STREAM`` reseeds the global RNGs at the start of every epoch (dropout, drop-path);
    ``DATA_STREAM`` seeds the data loader's augmentation. Because an epoch's randomness is
    independent of what ran before, a resumed run repeats an uninterrupted one exactly (on CPU).
    """
    entropy = [int(seed), int(rank), int(epoch)] + ([int(stream)] if stream != DATA_STREAM else [])
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


def get_rng_state():
    """Every global RNG state as plain types and tensors (loadable with ``torch.load(weights_only=True)``)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the states captured by :func:`get_rng_state` (CUDA only where present on both sides)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("CUDA RNG state saved for %d devices, %d present: not restored",
                           len(cuda_states), torch.cuda.device_count())


# ----------------------------------------------------------------------------- device
def resolve_device(name="auto", local_rank=0):
    """``MODEL.DEVICE`` ('auto' | 'cuda' | 'cpu') as a ``torch.device``; 'cuda' uses GPU ``local_rank``.

    Raises:
        ConfigError: 'cuda' asked for but not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("MODEL.DEVICE is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# ----------------------------------------------------------------------------- mixed precision
@dataclass(frozen=True)
class AmpSettings:
    """The resolved mixed-precision mode of one device.

    Attributes:
        dtype: autocast dtype (``torch.float16`` / ``torch.bfloat16``) or ``None`` for full precision.
        use_scaler: whether a ``GradScaler`` scales the loss (fp16 only).
        device_type: ``'cuda'`` or ``'cpu'`` (autocast's device type).
    """
    dtype: Optional[torch.dtype]
    use_scaler: bool
    device_type: str

    @property
    def enabled(self):
        return self.dtype is not None

    @property
    def name(self):
        return {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]


def native_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (compute capability 8.0+, or ROCm),
    not through the slow emulation that ``torch.cuda.is_bf16_supported()`` also counts by default."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # PyTorch before 2.3 has no including_emulation (and counts native support only)
        return bool(torch.cuda.is_bf16_supported())


def resolve_amp(mode: str, device) -> AmpSettings:
    """``SOLVER.AMP`` for ``device``.

    'auto' is what the released code trains with: fp16 autocast with a GradScaler on a GPU, and float32 on
    CPU (the CPU reference numerics). 'fp16' is fp16 with a GradScaler (CUDA; float32 with a warning
    elsewhere); 'bf16' is bfloat16 autocast without a scaler (on CUDA, fp16 with a warning where the GPU has
    no bfloat16 at all; on CPU, CPU autocast, which pays only on CPUs with bfloat16 instructions:
    benchmarks/bench_train.py measured 2.1x the float32 speed with AVX512-BF16 and 0.71x without);
    'off' is float32.
    """
    device = torch.device(device)
    if mode not in ("auto", "fp16", "bf16", "off"):
        raise ValueError(f"SOLVER.AMP must be 'auto', 'fp16', 'bf16' or 'off', got {mode!r}")
    if device.type != "cuda":
        if mode == "bf16" and device.type == "cpu":
            return AmpSettings(torch.bfloat16, False, "cpu")
        if mode in ("fp16", "bf16"):
            logger.warning("SOLVER.AMP=%s needs CUDA; running in float32 on %s", mode, device.type)
        return AmpSettings(None, False, device.type)
    if mode in ("auto", "fp16"):
        return AmpSettings(torch.float16, True, "cuda")
    if mode == "bf16":
        if not torch.cuda.is_bf16_supported():
            logger.warning("SOLVER.AMP=bf16 is not supported by this GPU; using fp16 with a GradScaler")
            return AmpSettings(torch.float16, True, "cuda")
        return AmpSettings(torch.bfloat16, False, "cuda")
    return AmpSettings(None, False, "cuda")


def autocast(amp):
    """The autocast context of ``amp`` (a no-op context when AMP is off)."""
    if not amp.enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=amp.device_type, dtype=amp.dtype)


def make_grad_scaler(amp):
    """A ``GradScaler`` that is enabled only when ``amp`` needs loss scaling."""
    return torch.amp.GradScaler("cuda" if amp.device_type == "cuda" else "cpu", enabled=amp.use_scaler)
