"""Speed levers of training: SOLVER.AMP 'auto' (bf16 / fp16 + GradScaler / off, with the CUDA capability
queries monkeypatched) and MODEL.COMPILE (torch.compile with a fallback to the eager model).

The compile tests use the 'aot_eager' backend (dynamo + AOTAutograd, no generated kernels): the same
tracing and failure paths as inductor in a second instead of a C++ build.
"""
import logging
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from utils import compile as compile_mod
from utils.compile import CompiledModule, maybe_compile
from utils.misc import make_grad_scaler, resolve_amp


# ----------------------------------------------------------------------------- AMP 'auto'
def fake_gpu(monkeypatch, native_bf16: bool, emulated_bf16: bool = True):
    """CUDA capability queries of a GPU with/without native bfloat16 (no GPU needed)."""
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native_bf16 or (including_emulation and emulated_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_on_cuda_is_the_release_fp16(monkeypatch, native):
    """'auto' trains as released on every GPU: fp16 autocast with a GradScaler, bf16-capable or not."""
    fake_gpu(monkeypatch, native_bf16=native)
    amp = resolve_amp("auto", torch.device("cuda", 0))
    assert (amp.dtype, amp.use_scaler, amp.device_type) == (torch.float16, True, "cuda")
    assert amp.name == "fp16"


def test_amp_auto_is_off_on_cpu(monkeypatch):
    fake_gpu(monkeypatch, native_bf16=True)  # a GPU elsewhere in the machine changes nothing
    amp = resolve_amp("auto", "cpu")
    assert not amp.enabled and not amp.use_scaler and amp.name == "off"
    assert not make_grad_scaler(amp).is_enabled()


def test_grad_scaler_only_for_fp16(monkeypatch):
    fake_gpu(monkeypatch, native_bf16=True)
    cuda = torch.device("cuda", 0)
    assert resolve_amp("fp16", cuda).use_scaler
    assert not resolve_amp("bf16", cuda).use_scaler
    assert not resolve_amp("off", cuda).use_scaler
    # an explicit bf16 is honoured where the GPU emulates it; without any bfloat16: fp16 + scaler
    fake_gpu(monkeypatch, native_bf16=False, emulated_bf16=True)
    assert resolve_amp("bf16", cuda).dtype == torch.bfloat16
    fake_gpu(monkeypatch, native_bf16=False, emulated_bf16=False)
    assert resolve_amp("bf16", cuda).use_scaler


def test_amp_bf16_before_torch_2_3(monkeypatch):
    """``is_bf16_supported`` without ``including_emulation`` (older PyTorch) is asked plainly."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_amp("bf16", torch.device("cuda", 0)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- MODEL.COMPILE
class Tiny(nn.Module):
    """Conv + BatchNorm + linear head, with a named submodule reached through the wrapper."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3))) * scale


def twins():
    torch.manual_seed(0)
    a = Tiny()
    b = Tiny()
    b.load_state_dict(a.state_dict())
    return a, b


def run_step(module: nn.Module, x: torch.Tensor):
    """Output and parameter gradients of one training forward/backward."""
    module.train()
    out = module(x, scale=2.0)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in module.parameters()]


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compile_mod, "COMPILE_BACKEND", "aot_eager")


def test_compiled_module_matches_eager(aot_eager, caplog):
    eager, model = twins()
    wrapped = maybe_compile(model, True)
    assert isinstance(wrapped, CompiledModule) and maybe_compile(model, False) is model
    x = torch.randn(3, 3, 8, 6)
    with caplog.at_level(logging.WARNING):
        out_c, grads_c = run_step(wrapped, x)
    out_e, grads_e = run_step(eager, x)
    assert wrapped.is_compiled and wrapped.failure is None and not caplog.records
    torch.testing.assert_close(out_c, out_e)
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge)
    torch.testing.assert_close(model.body[1].running_mean, eager.body[1].running_mean)  # buffers updated in place
    # train()/eval() and attributes reach the wrapped model; its own state dict keeps its keys
    wrapped.eval()
    assert not model.training and wrapped.head is model.head
    assert model.state_dict().keys() == eager.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), eager.eval()(x))


def failing_backend(gm, example_inputs):
    raise RuntimeError("no C compiler found\nsecond line of a long report")


def test_failure_at_the_first_call_falls_back(caplog):
    eager, model = twins()
    wrapped = CompiledModule(model, backend=failing_backend)
    x = torch.randn(2, 3, 8, 6)
    with caplog.at_level(logging.WARNING):
        out_c, grads_c = run_step(wrapped, x)
        run_step(wrapped, x)  # no second warning
    out_e, grads_e = run_step(eager, x)
    torch.testing.assert_close(out_c, out_e)
    assert not wrapped.is_compiled and wrapped.failure == "RuntimeError: no C compiler found"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["MODEL.COMPILE: torch.compile failed (RuntimeError: no C compiler found); running the "
                        "model uncompiled"]


def test_failure_compiling_the_backward_falls_back_at_the_forward(caplog):
    """AOTAutograd compiles the backward lazily; the wrapper makes it fail in the forward, where it can fall back."""
    from torch._dynamo.backends.common import aot_autograd

    backend = aot_autograd(fw_compiler=lambda gm, inputs: gm, bw_compiler=failing_backend)
    eager, model = twins()
    wrapped = CompiledModule(model, backend=backend)
    x = torch.randn(2, 3, 8, 6)
    with caplog.at_level(logging.WARNING):
        out_c, grads_c = run_step(wrapped, x)
    out_e, grads_e = run_step(eager, x)
    assert not wrapped.is_compiled and "no C compiler found" in wrapped.failure
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge)


def test_failure_of_torch_compile_itself(monkeypatch, caplog):
    """E.g. a Python version torch.compile does not support: it raises at once."""
    def unsupported(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")
    monkeypatch.setattr(torch, "compile", unsupported)
    _, model = twins()
    with caplog.at_level(logging.WARNING):
        wrapped = CompiledModule(model)
    assert not wrapped.is_compiled and "Python 3.99" in caplog.text
    wrapped(torch.randn(2, 3, 8, 6))


def test_model_errors_still_surface():
    """An error of the model itself is raised by the eager retry, not swallowed."""
    _, model = twins()
    wrapped = CompiledModule(model, backend="aot_eager")
    with pytest.raises(RuntimeError):
        wrapped(torch.randn(2, 5, 8, 6))  # 5 channels for a 3-channel conv


def test_trainer_compiles_training_and_evaluation(aot_eager, tmp_path):
    """MODEL.COMPILE in the Trainer: a compiled step gives the eager step's loss, checkpoints keep their keys."""
    from processor import build_trainer
    from tests.helpers import TINY_CONFIG
    from configs import load_cfg
    from utils.misc import set_seed

    opts = ["DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", "", "MODEL.PRETRAIN_CHOICE", "none"]
    results = {}
    for flag in (False, True):
        cfg = load_cfg(TINY_CONFIG, opts + ["MODEL.COMPILE", str(flag)])
        set_seed(0)
        trainer = build_trainer(cfg, torch.device("cpu"))
        assert isinstance(trainer.net, CompiledModule) == flag == isinstance(trainer.eval_model, CompiledModule)
        images, pids, camids, _ = next(iter(trainer.train_loader))
        set_seed(1)
        trainer.net.train()
        results[flag] = trainer.train_step(images, pids, camids, 1, 1), trainer.state_dict(1)["model"]
        if flag:
            assert trainer.net.is_compiled
    (loss_e, terms_e, acc_e), state_e = results[False]
    (loss_c, terms_c, acc_c), state_c = results[True]
    assert loss_c == pytest.approx(loss_e, rel=1e-4) and acc_c == acc_e and terms_c.keys() == terms_e.keys()
    assert state_c.keys() == state_e.keys() and not any("_orig_mod" in k or k.startswith("module.") for k in state_c)


# ----------------------------------------------------------------------------- malloc threshold
MALLOC_CHILD = r"""
import ctypes, sys
import numpy as np
import utils
if sys.argv[1] == "fixed":
    assert utils.return_large_frees_to_os()

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

a = np.ones(5 << 20, np.uint8)
del a                            # glibc raises its dynamic mmap threshold above 5 MiB here
before = rss_mib()
bigs, smalls = [], []
for _ in range(40):              # 5 MiB blocks, each followed by a small block that pins the heap
    bigs.append(np.ones(5 << 20, np.uint8))
    smalls.append(ctypes.create_string_buffer(4000))
del bigs
print(rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_large_cpu_frees_return_to_the_system(tmp_path):
    """utils.return_large_frees_to_os: 200 MiB of freed 5 MiB blocks leave the process at once, where glibc's
    dynamic threshold alone keeps them (the control run shows the default behaviour the switch fixes)."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kept = {}
    for mode in ("default", "fixed"):
        out = subprocess.run([sys.executable, "-c", MALLOC_CHILD, mode], env=env, capture_output=True,
                             text=True, check=True).stdout
        kept[mode] = float(out.split()[-1])
    assert kept["default"] > 150 and kept["fixed"] < 20, kept


def test_malloc_threshold_left_to_the_user(monkeypatch):
    import utils

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")  # glibc reads it at start-up: not overridden
    assert utils.return_large_frees_to_os() is False


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_returns_frees_to_os_only_for_checkpointing_on_cpu(monkeypatch, tmp_path, checkpointing):
    from configs import load_cfg
    from processor import trainer as trainer_mod
    from tests.helpers import TINY_CONFIG

    calls = []
    monkeypatch.setattr(trainer_mod, "return_large_frees_to_os", lambda: calls.append(1) or True)
    cfg = load_cfg(TINY_CONFIG, ["DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", "",
                                 "MODEL.PRETRAIN_CHOICE", "none", "MODEL.GRAD_CHECKPOINT", str(checkpointing)])
    trainer_mod.build_trainer(cfg, torch.device("cpu"))
    assert len(calls) == int(checkpointing)


def test_bf16_on_cpu_trains_under_cpu_autocast(tmp_path):
    """SOLVER.AMP bf16 on a CPU: the step runs under CPU autocast (its loss differs from float32's by rounding
    only) and the parameters stay float32."""
    from configs import load_cfg
    from processor import build_trainer
    from tests.helpers import TINY_CONFIG
    from utils.misc import set_seed

    opts = ["DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", "", "MODEL.PRETRAIN_CHOICE", "none"]
    losses = {}
    for mode in ("off", "bf16"):
        set_seed(0)
        trainer = build_trainer(load_cfg(TINY_CONFIG, opts + ["SOLVER.AMP", mode]), torch.device("cpu"))
        assert trainer.amp.name == mode
        images, pids, camids, _ = next(iter(trainer.train_loader))
        set_seed(1)
        trainer.net.train()
        losses[mode] = trainer.train_step(images, pids, camids, 1, 1)[0]
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert losses["bf16"] != losses["off"] and losses["bf16"] == pytest.approx(losses["off"], rel=0.05), losses
