#!/usr/bin/env python
"""Peak memory of the live tensors of a training step, per memory switch, extrapolated to GPU sizes.

    python benchmarks/bench_memory.py                          # paper model, batches 4 and 8: minutes on CPU
    python benchmarks/bench_memory.py --batches 4 8 16 --calibrate
    python benchmarks/bench_memory.py --config_file F MODEL.CNN.NAME resnet101
    python benchmarks/bench_memory.py --quick --calibrate --json  # tiny model: seconds

Rows: the baseline (float32, every lever off), ``MODEL.GRAD_CHECKPOINT True``, bf16 autocast, and both. Each
is measured at every ``--batches`` size (P x K images, K = DATALOADER.NUM_INSTANCE, 4 unless overridden) with
``benchmarks/bench_train.py``'s own row (``measure_row``: the trainer's ``Trainer.train_step`` on random
images, one warm-up step and one measured step, so the optimizer state exists), on the CPU, whatever GPU the
machine has.

What is measured is what CUDA's ``torch.cuda.max_memory_allocated`` reports on a GPU, but device-independently:
the bytes of the live tensor storages, counted by a ``TorchDispatchMode`` that sees the output of every op
(forward, loss, the autograd engine's backward ops, checkpointing's recomputation, the optimizer) and registers
each new storage until it is freed. Parameters, gradients, optimizer state, BatchNorm buffers, the batch and
the tensors autograd saves for the backward are all op outputs, so all are counted; the scratch memory a
kernel allocates inside itself (cuDNN / cuBLAS workspaces on a GPU) is not.

Extrapolation: the measured step runs the same ops at every batch, and the live bytes after each op are linear
in the batch (activations, saved tensors and their gradients grow with it; parameters, gradients and
optimizer state do not), so the steps at the two largest batches give each op's ``constant + slope x batch``;
the step's peak at any batch is the largest of these lines. (A line through the two peaks would not do: at
a small batch the peak sits late in the backward, when most gradients exist and most activations are freed;
at a large one it moves to where the activations are largest. The two steps' ops are aligned by name: a
batch of one identity, P = 1, runs a shorter triplet loss; where fewer than 90% align, a line through the
peaks stands in, and the output says so.) Reported: the peak measured at each batch, the
slope (MiB per image) and constant (MiB: parameters, the optimizer state and the gradients that exist at that
moment, batch-independent buffers) of the op where the batch-128 peak is reached, the ``state`` at the step's
start (parameters + gradients of the previous step + optimizer state + buffers + the batch), the optimizer
step's own peak, the peak at batch 128 (the paper's) and the largest batch, a multiple of K, whose peak
fits in 24 / 40 / 80 GB cards less ``--headroom`` (the CUDA context, cuDNN / cuBLAS workspaces and the caching
allocator's fragmentation, none of them counted here). GB are the cards' binary gigabytes (24 GB = 24 GiB).

Caveats: the bf16 rows use CPU autocast (``torch.autocast('cpu', torch.bfloat16)``), whose list of
lower-precision ops differs from CUDA's, so they approximate a GPU's bf16; on a GPU, PyTorch's foreach SGD
also holds one weight-decayed copy of the gradients during the optimizer step (below the backward's peak).
``--calibrate`` checks the counter: a 100 MiB tensor held through the measured step must raise the first
batch's baseline peak by 100 MiB (+-1), and a checkpointed block must get the same gradients under the counter
as without it, with a lower peak than unchecked.
"""
import argparse
import contextlib
import difflib
import json
import logging
import os
import sys
import time
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402

utils.prefer_passive_omp()  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from benchmarks.bench_train import QUICK_CONFIG, base_opts, measure_row, model_description  # noqa: E402
from configs import load_cfg  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402
from utils.logger import setup_logger  # noqa: E402

logger = logging.getLogger(__name__)

MIB = 2 ** 20
# row name -> bench_train levers
ROWS = {
    "baseline": [],
    "grad_checkpoint": ["grad_checkpoint"],
    "bf16": ["bf16"],
    "grad_checkpoint+bf16": ["grad_checkpoint", "bf16"],
}
GPU_GB = (24, 40, 80)
PAPER_BATCH = 128
CALIBRATION_MIB = 100
BF16_NOTE = ("bf16 rows: CPU bfloat16 autocast; a GPU's autocast casts another list of ops, so these rows are "
             "approximate")


# ----------------------------------------------------------------------------- the counter
class LiveTensorBytes(TorchDispatchMode):
    """Within the context: ``current`` and ``peak`` bytes of the tensor storages that ops created.

    Every op output's untyped storage is registered once (views share it) with its size, and unregistered
    by a ``weakref.finalize`` when the storage is freed; a storage that an op resized (``resize_``, ``out=``)
    is counted at its new size. A storage created before the context counts from the first op inside it that
    returns it (an in-place op on it), or not at all. ``reset_peak()`` starts a new peak from the current bytes.
    """

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: Dict[int, int] = {}  # StorageImpl address -> bytes
        self.timeline: Optional[List[Tuple[Any, int]]] = None  # a list: (op, current bytes after it) appended

    def reset_peak(self) -> None:
        self.peak = self.current

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def _register(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta" or tensor.layout != torch.strided:
            return
        storage = tensor.untyped_storage()
        key, size = storage._cdata, storage.nbytes()
        old = self._live.get(key)
        if old is None:
            weakref.finalize(storage, self._release, key)  # the storage's Python object lives as long as it
        elif old == size:
            return
        self._live[key] = size
        self.current += size - (old or 0)
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._register(value)
        if self.timeline is not None:
            self.timeline.append((func, self.current))
        return out


@contextlib.contextmanager
def steps_recorded(counter: LiveTensorBytes, steps: List[Dict[str, int]]) -> Iterator[None]:
    """Within the context, each ``Trainer.train_step`` appends to ``steps`` its peaks (the counter's peak from
    the step's start to the optimizer step, and in the optimizer step), its timeline (the live bytes after each
    op) and, at its start, the live bytes (``state``) and the bytes of the parameters, their gradients and the
    optimizer's state."""
    from processor.trainer import Trainer

    original = Trainer.train_step

    def recorded(trainer, *args, **kwargs):
        params = list(trainer.model.parameters())
        state = [t for s in trainer.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        entry = {"state": counter.current, "params": _nbytes(params), "numel": sum(p.numel() for p in params),
                 "grads": _nbytes([p.grad for p in params if p.grad is not None]), "optimizer": _nbytes(state)}
        counter.reset_peak()
        counter.timeline = [("start", counter.current)]
        try:
            result = original(trainer, *args, **kwargs)
        finally:
            timeline, counter.timeline = counter.timeline, None
        steps.append(dict(entry, optimizer_peak=counter.peak, timeline=timeline, **phase))
        return result

    def before_update(optimizer, args, kwargs):
        phase["peak"] = counter.peak  # forward, loss, backward
        counter.reset_peak()

    phase: Dict[str, int] = {}
    pre = register_optimizer_step_pre_hook(before_update)
    try:
        with mock.patch.object(Trainer, "train_step", recorded):
            yield
    finally:
        pre.remove()


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------- one measurement
def measure(args, levers: Sequence[str], batch: int, extra_mib: int = 0) -> Dict[str, Any]:
    """Peak live bytes of bench_train's row ``levers`` at ``batch`` (its second, measured training step);
    ``extra_mib``: a tensor of that size allocated in the measured region and held through it."""
    row_args = argparse.Namespace(config_file=args.config_file, opts=args.opts, device="cpu", batch=batch,
                                  num_classes=args.num_classes, iters=1, warmup=1)
    steps: List[Dict[str, int]] = []
    start = time.perf_counter()
    with LiveTensorBytes() as counter, steps_recorded(counter, steps):
        extra = torch.ones(extra_mib * MIB, dtype=torch.uint8) if extra_mib else None
        row = measure_row(row_args, levers)
        del extra
    last = steps[-1]
    result = {"peak_mib": max(last["peak"], last["optimizer_peak"]) / MIB, "train_peak_mib": last["peak"] / MIB,
              "update_peak_mib": last["optimizer_peak"] / MIB, "state_mib": last["state"] / MIB,
              "params_mib": last["params"] / MIB, "grads_mib": last["grads"] / MIB,
              "optimizer_mib": last["optimizer"] / MIB, "params": last["numel"], "amp": row["amp"],
              "seconds": time.perf_counter() - start, "timeline": last["timeline"]}
    logger.info("%s, batch %d: peak %.0f MiB in the forward + backward, %.0f MiB in the optimizer step, %.0f MiB "
                "live at the step's start; %.0f s", "+".join(levers) or "baseline", batch, result["train_peak_mib"],
                result["update_peak_mib"], result["state_mib"], result["seconds"])
    return result


def timeline_lines(b1: int, run1: Dict[str, Any], b2: int, run2: Dict[str, Any], min_matched: float = 0.9):
    """``(constant, slope, ops, matched)``: the live MiB after each op of the measured step as ``constant + slope
    x batch``, solved from its values at batches ``b1`` and ``b2``, over the ops the two steps ran alike
    (aligned by op name; a few may differ, e.g. the triplet loss finds no negatives in a batch of one identity),
    and the fraction of ops aligned; None when fewer than ``min_matched`` are."""
    (ops1, v1), (ops2, v2) = (zip(*run["timeline"]) for run in (run1, run2))
    names1, names2 = [str(f) for f in ops1], [str(f) for f in ops2]
    matcher = difflib.SequenceMatcher(None, names1, names2, autojunk=False)
    pairs = [(i + n, j + n) for i, j, size in matcher.get_matching_blocks() for n in range(size)]
    matched = len(pairs) / max(len(names1), len(names2))
    if matched < min_matched:
        return None
    m1 = np.array([v1[i] for i, _ in pairs], dtype=np.float64) / MIB
    m2 = np.array([v2[j] for _, j in pairs], dtype=np.float64) / MIB
    slope = (m2 - m1) / (b2 - b1)
    return m1 - b1 * slope, slope, [names1[i] for i, _ in pairs], matched


def peak_at(lines, batch: int) -> Tuple[float, int]:
    """(peak MiB at ``batch``, index of the op where it is reached) of ``(constant, slope, ...)``."""
    values = lines[0] + batch * lines[1]
    i = int(np.argmax(values))
    return float(values[i]), i


def largest_batch(lines, gib: float, headroom: float, k: int, limit: int = 2 ** 17) -> int:
    """The largest multiple of ``k`` whose peak fits in ``gib`` GiB less the headroom: 0 if none, -1 if
    any up to ``limit``. (The peak, a maximum of lines, is convex in the batch: increasing beyond the measured
    batches.)"""
    budget = gib * 1024 * (1 - headroom)
    if peak_at(lines, k)[0] > budget:
        return 0
    if peak_at(lines, limit)[0] <= budget:
        return -1
    lo, hi = 1, limit // k  # lo * k fits, hi * k does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if peak_at(lines, mid * k)[0] <= budget else (lo, mid)
    return lo * k


def summarize(batches: Sequence[int], runs: Sequence[Dict[str, Any]], headroom: float, k: int) -> Dict[str, Any]:
    """A row's figures from its measurements at ``batches``.

    The step's live bytes after every op are linear in the batch (activations and their gradients grow with
    it; parameters, gradients, optimizer state do not), so the two largest batches' timelines give each op's
    ``constant + slope x batch`` and the peak at any batch is the largest of them: the slope and constant
    reported are those of the op where the batch-128 peak is reached. Where the two steps ran different ops,
    a line through the forward + backward peaks and the optimizer step's peak stand in for the timeline.
    """
    # least-squares line through the forward + backward peaks
    secant, intercept = (float(c) for c in np.polyfit(batches, [r["train_peak_mib"] for r in runs], 1))
    update = max(r["update_peak_mib"] for r in runs)
    lines = timeline_lines(batches[-2], runs[-2], batches[-1], runs[-1])
    exact = lines is not None
    if not exact:
        lines = (np.array([intercept, update]), np.array([secant, 0.0]), ["forward + backward", "optimizer step"], 0.0)
    peak, i = peak_at(lines, PAPER_BATCH)
    last = runs[-1]
    return {"amp": last["amp"], "peaks_mib": {str(b): r["peak_mib"] for b, r in zip(batches, runs)},
            "predicted_peaks_mib": {str(b): peak_at(lines, b)[0] for b in batches},
            "train_peaks_mib": {str(b): r["train_peak_mib"] for b, r in zip(batches, runs)},
            "slope_mib_per_image": float(lines[1][i]), "constant_mib": float(lines[0][i]), "peak_op": lines[2][i],
            "timeline": exact, "ops_aligned": lines[3], "secant_slope_mib_per_image": secant,
            "secant_constant_mib": intercept,
            "update_peak_mib": update, "state_mib": last["state_mib"], "params_mib": last["params_mib"],
            "grads_mib": last["grads_mib"], "optimizer_mib": last["optimizer_mib"], "params": last["params"],
            "peak_at_%d_gib" % PAPER_BATCH: peak / 1024,
            "max_batch": {str(gb): largest_batch(lines, gb, headroom, k) for gb in GPU_GB},
            "seconds": sum(r["seconds"] for r in runs)}


# ----------------------------------------------------------------------------- calibration
def calibrate_checkpoint() -> Dict[str, Any]:
    """A checkpointed stack of conv + BatchNorm blocks (model/checkpointing.py) under the counter: the same
    gradients as without the counter, and a lower peak than the stack unchecked."""
    from model.checkpointing import checkpoint

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                                     torch.nn.ReLU()) for _ in range(6))
    images = torch.randn(4, 8, 32, 32)

    def step(checkpointed: bool):
        blocks.zero_grad(set_to_none=True)
        x = images
        for block in blocks:
            x = checkpoint(block, x) if checkpointed else block(x)
        x.square().mean().backward()
        return [p.grad.clone() for p in blocks.parameters()]

    reference = step(True)
    peaks, grads = {}, {}
    for checkpointed in (False, True):
        with LiveTensorBytes() as counter:
            grads[checkpointed] = step(checkpointed)
        peaks[checkpointed] = counter.peak
    return {"checkpoint_grads_equal": all(torch.equal(a, b) for a, b in zip(reference, grads[True])),
            "checkpoint_peak_kib": peaks[True] / 1024, "plain_peak_kib": peaks[False] / 1024}


# ----------------------------------------------------------------------------- the table
def parse_args(argv: Optional[Sequence[str]] = None):
    parser = ConfigArgumentParser(__doc__.split("\n\n")[0], config_help="YAML config (default: the paper's full "
                                                                        "model; with --quick: the tiny config)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8], metavar="B",
                        help="batch sizes measured, at least two (default 4 8; P x K images)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), metavar="ROW",
                        help=f"rows to measure, of {', '.join(ROWS)} (default: all)")
    parser.add_argument("--headroom", type=float, default=0.1,
                        help="fraction of each GPU's memory left free in the largest-batch columns (default 0.1)")
    parser.add_argument("--num-classes", type=int, default=751, help="identities of the ID classifiers")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"check the counter: a {CALIBRATION_MIB} MiB tensor held through the baseline's step "
                             "(one more measurement), checkpointing under the counter")
    parser.add_argument("--quick", action="store_true", help="the tiny config (unless --config_file): seconds")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.quick:
        args.config_file = args.config_file or QUICK_CONFIG
    args.batches = sorted(set(args.batches))
    if len(args.batches) < 2 or args.batches[0] < 1:
        raise UsageError(f"--batches needs at least two different sizes >= 1, got {args.batches}")
    if not 0 <= args.headroom < 1:
        raise UsageError(f"--headroom must be in [0, 1), got {args.headroom}")
    # K = 4 images per identity unless the user's overrides say otherwise; always on the CPU
    args.opts = ["DATALOADER.NUM_INSTANCE", "4"] + list(args.opts) + ["MODEL.DEVICE", "cpu"]
    return args


def format_table(report: Dict[str, Any]) -> str:
    """The report as a readable text table."""
    head = report["setup"]
    batches = head["batches"]
    lines = [f"peak live-tensor memory of one training step (forward, loss, backward, {head['optimizer']} step): "
             f"{head['model']}, {head['params_m']:.1f}M parameters, K={head['k']} images per identity, measured on "
             f"CPU ({head['threads']} threads) in {head['wall_s']:.0f} s",
             f"{'row':21s} {'AMP':4s} " + " ".join(f"{'peak@' + str(b):>8s}" for b in batches)
             + f" {'MiB/img':>8s} {'const':>7s} {'state':>7s} {'update':>7s} {'@' + str(PAPER_BATCH) + ' GiB':>8s} "
             + " ".join(f"{'max@' + str(gb) + 'GB':>8s}" for gb in GPU_GB)]
    for name, row in report["rows"].items():
        fits = " ".join(f"{row['max_batch'][str(gb)] if row['max_batch'][str(gb)] >= 0 else 'any':>8}"
                        for gb in GPU_GB)
        lines.append(f"{name:21s} {row['amp']:4s} " + " ".join(f"{row['peaks_mib'][str(b)]:8.0f}" for b in batches)
                     + f" {row['slope_mib_per_image']:8.1f} {row['constant_mib']:7.0f} {row['state_mib']:7.0f} "
                     f"{row['update_peak_mib']:7.0f} "
                     f"{row['peak_at_%d_gib' % PAPER_BATCH]:8.2f} {fits}")
    base = report["rows"].get("baseline")
    lines += [f"MiB throughout except @{PAPER_BATCH} (GiB); peak@B: the measured (second) step's peak at batch B; "
              "update: the optimizer step's peak; state: live at the step's start (parameters "
              + (f"{base['params_mib']:.0f} + gradients {base['grads_mib']:.0f} + optimizer state "
                 f"{base['optimizer_mib']:.0f} MiB, plus buffers and the batch; the step frees the gradients before "
                 "its forward)" if base else "+ gradients + optimizer state, plus buffers and the batch)"),
              f"the live bytes after every op are linear in the batch, solved from the steps at batches {batches[-2]} "
              f"and {batches[-1]}; the peak at a batch is their largest; MiB/img and const: those of the op where the "
              f"batch-{PAPER_BATCH} peak is reached (@{PAPER_BATCH}); max@G GB: the largest batch (multiple of "
              f"K={head['k']}) whose peak fits in G GiB less {head['headroom']:.0%} headroom (CUDA context, "
              "cuDNN/cuBLAS workspaces, allocator fragmentation: not counted here)"]
    for name, row in report["rows"].items():
        checks = [f"{b}: {row['predicted_peaks_mib'][str(b)]:.0f}" for b in batches[:-2]]
        lines.append(f"{name}: batch-{PAPER_BATCH} peak at {row['peak_op']}"
                     + (f" ({row['ops_aligned']:.1%} of the ops aligned)" if row["timeline"] else
                        " (the steps ran different ops: a line through the peaks instead)")
                     + (f"; predicted peak@{', '.join(checks)} MiB" if checks else ""))
    if any("bf16" in ROWS[name] for name in report["rows"]):
        lines.append(BF16_NOTE)
    cal = report.get("calibration")
    if cal:
        lines.append(f"calibration: a {cal['extra_mib']} MiB tensor held through the baseline step at batch "
                     f"{batches[0]} raised its peak by {cal['peak_delta_mib']:.2f} MiB; checkpointed blocks under the "
                     f"counter: gradients {'equal' if cal['checkpoint_grads_equal'] else 'DIFFERENT'}, peak "
                     f"{cal['checkpoint_peak_kib']:.0f} KiB vs {cal['plain_peak_kib']:.0f} KiB unchecked")
    return "\n".join(lines)


@cli_entry
def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    setup_logger(None)
    cfg = load_cfg(args.config_file, base_opts(argparse.Namespace(device="cpu", opts=args.opts)))  # fails early
    k = cfg.DATALOADER.NUM_INSTANCE
    start = time.perf_counter()
    rows = {name: ROWS[name] for name in (args.rows or ROWS)}
    runs = {name: [measure(args, levers, b) for b in args.batches] for name, levers in rows.items()}
    report = {"rows": {name: summarize(args.batches, r, args.headroom, k) for name, r in runs.items()}}
    if args.calibrate:
        base = runs["baseline"][0]["peak_mib"] if "baseline" in runs else measure(args, [], args.batches[0])["peak_mib"]
        held = measure(args, [], args.batches[0], extra_mib=CALIBRATION_MIB)["peak_mib"]
        report["calibration"] = dict(calibrate_checkpoint(), extra_mib=CALIBRATION_MIB, peak_delta_mib=held - base)
    first = next(iter(report["rows"].values()))
    report["setup"] = {"model": model_description(cfg),
                       "config_file": args.config_file, "opts": args.opts, "batches": args.batches, "k": k,
                       "optimizer": cfg.SOLVER.OPTIMIZER_NAME, "params_m": first["params"] / 1e6,
                       "headroom": args.headroom, "gpu_gib": list(GPU_GB), "paper_batch": PAPER_BATCH,
                       "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - start,
                       "notes": [BF16_NOTE]}
    print(format_table(report))
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
