#!/usr/bin/env python
"""One command that checks the paper model on one GPU in at most 8 minutes: training speed and memory per
precision and checkpointing, torch.compile, feature extraction, evaluate() at MSMT17 scale and NCCL.

    python benchmarks/gpu_check.py --json gpu_check.json                  # on the GPU machine
    python benchmarks/gpu_check.py --memory-prediction mem.txt --json gpu_check.json
    python benchmarks/gpu_check.py --device cpu --quick --json q.json      # a smoke run anywhere (seconds)

Dependencies the GPU machine lacks (it has torch, timm, opencv, onnxruntime, tensorboard and tqdm, and cannot
install packages): yacs (for configs/) travels as a wheel. Here, with the package index reachable::

    pip download yacs==0.1.8 --no-deps -d wheels/

then copy the repository with its ``wheels/`` folder to the GPU machine and run the command above: this script
puts every ``wheels/*.whl`` at the end of ``sys.path`` before it imports the repository (a wheel of pure Python
is a zip that Python imports from directly; installed packages still take precedence). Without the script's
help, ``PYTHONPATH=wheels/yacs-0.1.8-py3-none-any.whl python ...`` does the same for any entry point. Only
pure-Python wheels work that way (``py3-none-any``); yacs' one dependency, PyYAML, is a dependency of timm and
so is there already. The setup line of the report lists the wheels added.

Rows, each in this process, one after another, each under its own time budget (``SIGALRM``) and within
``--budget`` seconds in all (default 450: with the imports and the
report, the command ends within 8 minutes): a row that fails (CUDA out of memory, a compile error) or runs out
of time is reported in its row, with the error, and the next row runs; rows that no time is left for are
"skipped: out of time".

* ``train <amp>[ +ckpt]`` for amp in fp32 (SOLVER.AMP off), fp16 (+ GradScaler) and bf16, activation
  checkpointing (MODEL.GRAD_CHECKPOINT) off and on: the trainer's own ``Trainer.train_step`` at ``--batch``
  (default 128 = the paper's P x K = 8 x 16) on random images, ``--warmup`` untimed steps then ``--iters`` timed
  ones (``benchmarks/bench_train.py``'s ``measure_row``, the row's levers as in bench_train): images/s and
  ``torch.cuda.max_memory_allocated`` over the timed steps, beside ``benchmarks/bench_memory.py``'s prediction of
  that row when ``--memory-prediction`` names the output of ``bench_memory.py --json`` (its last line is read;
  made on any CPU machine beforehand, minutes: ``python benchmarks/bench_memory.py --json > mem.txt``). The fp16
  rows are predicted by bench_memory's bf16 rows (both 16-bit autocast; bench_memory has no fp16 row: CPUs have
  no fp16 autocast), and a batch other than 128 by the line of the op where bench_memory's batch-128 peak is.
  Also each row's eval-mode extraction images/s at the same batch.
* ``train default +compile``: MODEL.COMPILE with the repository's default AMP (fp16 + GradScaler on a GPU),
  the compilation in the warm-up (its seconds reported); last, as it takes longest.
* ``extract``: eval-mode features (f_a) at TEST.IMS_PER_BATCH with the default AMP, no gradients.
* ``evaluate``: ``utils.metrics.evaluate`` of random features with an identity structure
  (``benchmarks/bench_eval.py``'s ``make_features``) at MSMT17 scale (11,659 query x 82,161 gallery) and the
  dimension of the model's f_a, on the device: seconds, peak memory beyond the features, mAP.
* ``nccl``: a world-size-1 NCCL process group (TCP store on 127.0.0.1): init, an all_reduce, destroy; seconds
  of each and whether the sum came back right.

The model and training settings are the repository's defaults (``configs/defaults.py``: ResNet50 + ViT-B/16,
stride 12, D=768, L=2, 256x128), random initialisation (MODEL.PRETRAIN_CHOICE none, no files read), plus the
user's KEY VALUE overrides; the row's own levers then turn precision / checkpointing / compile on or off. The
default SOLVER.AMP 'auto' is fp16 + GradScaler on a GPU (float32 on a CPU): the row that equals the
repository's default training is marked "default". cuDNN autotuning is on, as train_net.py sets it on CUDA.

``--device cpu --quick`` runs the tiny config (unless --config_file) at batch 8, one warm-up and one timed step,
evaluate() at the tiny scale; rows that need CUDA (fp16, NCCL) say "skipped: no CUDA", and compile is skipped
under --quick on a CPU (minutes of compilation there). ``--rows`` picks rows by name. Prints a table; ``--json
PATH`` writes the report (``setup``, ``rows``: name -> status, seconds and figures, ``wall_s``).
"""
import argparse
import contextlib
import datetime
import gc
import glob
import json
import logging
import os
import platform
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL_DIR = os.path.join(ROOT, "wheels")


def add_wheels(folder: str = WHEEL_DIR) -> List[str]:
    """Append every ``*.whl`` of ``folder`` to ``sys.path`` (after the installed packages); returns them."""
    added = []
    for wheel in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        if wheel not in sys.path:
            sys.path.append(wheel)
            added.append(wheel)
    return added


WHEELS = add_wheels()
sys.path.insert(0, ROOT)
try:
    import yacs  # noqa: F401  -- the one dependency of configs/ that the GPU machine lacks
except ModuleNotFoundError as _missing:
    sys.exit(f"gpu_check.py: error: {_missing}: run `pip download yacs==0.1.8 --no-deps -d wheels/` where the package "
             "index is reachable and bring wheels/ along (see this script's docstring)")

import utils  # noqa: E402

utils.prefer_passive_omp()  # before torch is imported

import torch  # noqa: E402

from benchmarks import bench_memory  # noqa: E402
from benchmarks.bench_eval import SCALES, make_features  # noqa: E402
from benchmarks.bench_train import (QUICK_CONFIG, base_opts, measure_row, model_description, row_opts,  # noqa: E402
                                    timed)
from configs import load_cfg  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.misc import autocast, resolve_amp, resolve_device, set_seed  # noqa: E402

logger = logging.getLogger(__name__)

GIB = 2 ** 30
MIN_ROW_S = 5.0  # a row is not started with less time than this left
AMPS = {"fp32": [], "fp16": ["fp16"], "bf16": ["bf16"]}  # row precision -> bench_train's AMP lever
CUDA_ONLY_AMPS = ("fp16",)
AMP_LEVER_VALUES = {"fp16": "fp16", "bf16": "bf16"}  # bench_train's AMP lever -> the AmpSettings name it gives
# row name -> (kind, bench_train levers, time budget s)
CHECKS: Dict[str, Any] = {}
for _amp, _levers in AMPS.items():
    CHECKS[f"train {_amp}"] = ("train", _levers, 60)
    CHECKS[f"train {_amp} +ckpt"] = ("train", ["grad_checkpoint"] + _levers, 60)
CHECKS["extract"] = ("extract", [], 40)
CHECKS["evaluate"] = ("evaluate", [], 120)
CHECKS["nccl"] = ("nccl", [], 60)
CHECKS["train default +compile"] = ("train", ["compile"], 240)  # + the AMP lever of the default (main)


# ----------------------------------------------------------------------------- time budgets
class RowTimeout(Exception):
    """A row ran past its time budget."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`RowTimeout` in this (main) thread after ``seconds`` (a CUDA call in progress finishes
    first); no limit where SIGALRM is not available."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise RowTimeout(f"over its time budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def error_line(e: BaseException) -> str:
    """The first line of an exception's message, with its type, at most 300 characters."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_guarded(fn: Callable[[], Dict[str, Any]], budget: float, deadline: float,
                device: torch.device) -> Dict[str, Any]:
    """``fn()``'s figures with ``status`` 'ok', or ``status`` 'failed: ...' / 'timeout: ...' / 'skipped: out of
    time'; ``seconds`` (the row's wall time) and ``budget_s`` in both."""
    left = deadline - time.monotonic()
    if left < MIN_ROW_S:
        return {"status": f"skipped: out of time ({left:.0f} s of the total budget left)", "seconds": 0.0}
    limit = min(budget, left)
    start = time.perf_counter()
    result: Dict[str, Any] = {}
    try:
        with time_limit(limit):
            result = dict(fn())
        result["status"] = "ok"
    except RowTimeout as e:
        result = {"status": f"timeout: {e}"}
    except Exception as e:  # noqa: BLE001 -- one row's failure (OOM, compile error) must not stop the others
        result = {"status": f"failed: {error_line(e)}"}
        logger.warning("row failed: %s", error_line(e))
    finally:
        release_memory(device)
    result.update(seconds=time.perf_counter() - start, budget_s=limit)
    return result


# ----------------------------------------------------------------------------- the rows
def row_config(args, levers: Sequence[str] = ()):
    """The config of a row: the defaults (or --config_file), random init, the device, no output, the user's
    overrides, then bench_train's levers of the row."""
    return load_cfg(args.config_file, base_opts(args) + (row_opts(levers) if levers else []))


def memory_prediction(predictions: Optional[Dict[str, Any]], levers: Sequence[str], batch: int,
                      model: str) -> Dict[str, Any]:
    """bench_memory's predicted peak (GiB) of the row with ``levers`` at ``batch``, from its --json report."""
    if not predictions:
        return {}
    wanted = {"bf16" if lever == "fp16" else lever for lever in levers}
    name = next((n for n, ls in bench_memory.ROWS.items() if set(ls) == wanted), None)
    row = predictions.get("rows", {}).get(name) if name else None
    if row is None:
        return {}
    notes = []
    if batch == bench_memory.PAPER_BATCH:
        gib = row[f"peak_at_{bench_memory.PAPER_BATCH}_gib"]
    else:
        gib = (row["constant_mib"] + row["slope_mib_per_image"] * batch) / 1024
        notes.append(f"predicted at {batch} from the line of bench_memory's batch-{bench_memory.PAPER_BATCH} peak op")
    if "fp16" in levers:
        notes.append(f"predicted by bench_memory's {name} row")
    predicted_model = predictions.get("setup", {}).get("model")
    if predicted_model and predicted_model != model:
        notes.append(f"prediction made for another model: {predicted_model}")
    return {"predicted_peak_gib": gib, "predicted_row": name, "prediction_notes": notes}


def train_row(args, levers: Sequence[str], predictions) -> Dict[str, Any]:
    """bench_train's row ``levers`` in this process (Trainer.train_step), with bench_memory's prediction."""
    warmup = max(args.warmup, 1) if "compile" in levers else args.warmup  # compilation outside the timed steps
    ns = argparse.Namespace(config_file=args.config_file, opts=args.opts, device=args.device, batch=args.batch,
                            num_classes=args.num_classes, iters=args.iters, warmup=warmup)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = measure_row(ns, levers)
    result["train_peak_gib"] = result.pop("train_peak_mib") / 1024
    result["peak_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "process_peak_rss"
    cfg = row_config(args, levers)
    amp = resolve_amp(cfg.SOLVER.AMP, device)
    result["grad_scaler"] = amp.use_scaler
    result.update(memory_prediction(predictions, levers, args.batch, model_description(cfg)))
    return result


def extract_row(args) -> Dict[str, Any]:
    """Eval-mode f_a of random images at TEST.IMS_PER_BATCH, the default AMP, no gradients (the evaluation's
    forward: ``maybe_compile`` as in the trainer)."""
    from model import build_model
    from utils.compile import maybe_compile

    cfg = row_config(args)
    device = resolve_device(cfg.MODEL.DEVICE)
    set_seed(cfg.SOLVER.SEED)
    amp = resolve_amp(cfg.SOLVER.AMP, device)
    model = maybe_compile(build_model(cfg, args.num_classes, 6).to(device).eval(), cfg.MODEL.COMPILE)
    b = cfg.TEST.IMS_PER_BATCH
    h, w = cfg.INPUT.SIZE_TEST
    images = torch.randn(b, 3, h, w, device=device)
    camids = torch.arange(b, device=device) % 6
    out = {}

    @torch.no_grad()
    def extract():
        with autocast(amp):
            out["feat"] = model(images, camids)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    figures = timed(extract, args.iters, args.warmup, b, device)
    return {"images_per_s": figures["images_per_s"], "peak_gib": figures["peak_mib"] / 1024, "batch": b,
            "amp": amp.name, "dim": int(out["feat"].shape[1]), "peak_kind": "cuda_max_memory_allocated"
            if device.type == "cuda" else "process_peak_rss"}


def evaluate_row(args, dim: int) -> Dict[str, Any]:
    """``utils.metrics.evaluate`` of bench_eval's features at ``args.eval_scale`` and ``dim``, on the device."""
    from utils.metrics import evaluate

    device = resolve_device(args.device)
    start = time.perf_counter()
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_features(args.eval_scale, dim)
    make_s = time.perf_counter() - start
    start = time.perf_counter()
    qf, gf = torch.from_numpy(qf).to(device), torch.from_numpy(gf).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    copy_s = time.perf_counter() - start
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    metrics = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    extra = (torch.cuda.max_memory_allocated(device) - before) / GIB if device.type == "cuda" else None
    return {"scale": args.eval_scale, "num_query": len(q_pids), "num_gallery": len(g_pids), "dim": dim,
            "evaluate_s": seconds, "extra_peak_gib": extra, "features_gib": (qf.numel() + gf.numel()) * 4 / GIB,
            "make_features_s": make_s, "to_device_s": copy_s, "mAP": float(metrics["mAP"]),
            "rank1": float(metrics["cmc"][0])}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nccl_row(device: torch.device) -> Dict[str, Any]:
    """A world-size-1 NCCL process group: init (TCP store), one all_reduce, destroy; seconds of each."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_nccl_available():
        raise RuntimeError("this torch build has no NCCL")
    times = {}
    start = time.perf_counter()
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60), device_id=device)
    times["init_s"] = time.perf_counter() - start
    try:
        value = torch.full((1024,), 2.0, device=device)
        start = time.perf_counter()
        dist.all_reduce(value)
        torch.cuda.synchronize(device)
        times["all_reduce_s"] = time.perf_counter() - start
        correct = bool(torch.all(value == 2.0).item())
        backend = dist.get_backend()
    finally:
        start = time.perf_counter()
        dist.destroy_process_group()
        times["destroy_s"] = time.perf_counter() - start
    if not correct:
        raise RuntimeError("all_reduce over one process changed the tensor")
    version = torch.cuda.nccl.version()
    return dict(times, backend=backend, all_reduce_correct=correct,
                nccl_version=".".join(map(str, version)) if isinstance(version, tuple) else str(version))


# ----------------------------------------------------------------------------- the report
def skip_reason(name: str, levers: Sequence[str], device: torch.device, quick: bool) -> Optional[str]:
    kind = CHECKS[name][0]
    if device.type != "cuda" and (kind == "nccl" or any(lever in CUDA_ONLY_AMPS for lever in levers)):
        return "skipped: no CUDA"
    if device.type != "cuda" and quick and "compile" in levers:
        return "skipped: --quick on a CPU (torch.compile takes minutes there)"
    return None


def read_predictions(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """bench_memory's --json report: the last line of ``path`` that is a JSON object."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip().startswith("{")]
    if not lines:
        raise UsageError(f"--memory-prediction {path}: no JSON line (the output of bench_memory.py --json)")
    return json.loads(lines[-1])


def _num(value, spec):
    if value is None:
        return ""
    return format(value, spec) if abs(value) >= 10 or value == 0 else format(value, ".3g")


def format_table(report: Dict[str, Any]) -> str:
    """The report as a text table."""
    s = report["setup"]
    lines = [f"gpu_check: {s['model']}, {s['params_m']:.1f}M parameters, batch {s['batch']}, {s['device_name']}, "
             f"torch {s['torch']}, {s['iters']} timed steps after {s['warmup']}; repository default training: "
             f"AMP {s['default_amp']}, MODEL.GRAD_CHECKPOINT {s['default_grad_checkpoint']}; "
             f"wall {report['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget"
             + (f"; wheels on sys.path: {', '.join(os.path.basename(w) for w in s['wheels'])}" if s["wheels"] else ""),
             f"{'row':22s} {'status':8s} {'img/s':>9s} {'peak GiB':>9s} {'pred GiB':>9s} {'s':>6s}  details"]
    for name, r in report["rows"].items():
        status = r["status"] if r["status"] == "ok" else r["status"].split(":")[0]
        rate = peak = pred = ""
        details = []
        if r["status"] != "ok":
            details.append(r["status"])
        elif name.startswith("train"):
            rate, peak, pred = (_num(r["train_images_per_s"], ".1f"), _num(r["train_peak_gib"], ".2f"),
                                _num(r.get("predicted_peak_gib"), ".2f"))
            details.append(f"AMP {r['amp']}{' + GradScaler' if r['grad_scaler'] else ''}, extract "
                           f"{_num(r['extract_images_per_s'], '.0f')} img/s")
            if "compile" in name:
                details.append(f"warm-up with compilation {r['train_warmup_s']:.0f} s")
            details += r.get("prediction_notes", []) + r.get("notes", [])
        elif name == "extract":
            rate, peak = _num(r["images_per_s"], ".1f"), _num(r["peak_gib"], ".2f")
            details.append(f"batch {r['batch']}, AMP {r['amp']}, d={r['dim']}")
        elif name == "evaluate":
            peak = _num(r["extra_peak_gib"], ".2f")
            details.append(f"{r['scale']} {r['num_query']} x {r['num_gallery']}, d={r['dim']}: evaluate "
                           f"{r['evaluate_s']:.2f} s, mAP {r['mAP']:.3f} (features {r['features_gib']:.2f} GiB made in "
                           f"{r['make_features_s']:.0f} s; peak: beyond them)")
        elif name == "nccl":
            details.append(f"init {r['init_s']:.2f} s, all_reduce {r['all_reduce_s'] * 1e3:.1f} ms "
                           f"({'correct' if r['all_reduce_correct'] else 'WRONG'}), destroy {r['destroy_s']:.2f} s, "
                           f"NCCL {r['nccl_version']}")
        if r.get("default"):
            details.insert(0, "default")
        lines.append(f"{name:22s} {status:8s} {rate:>9s} {peak:>9s} {pred:>9s} {r['seconds']:6.1f}  "
                     + "; ".join(details))
    if s["device"] != "cuda":
        lines.append("peak GiB on a CPU: the process's peak resident set so far (not per row)")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = ConfigArgumentParser(__doc__.split("\n\n")[0], config_help="YAML config (default: the paper's model; "
                                                                        "with --quick: the tiny config)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch", type=int, help="training images per step (default 128; --quick: 8)")
    parser.add_argument("--iters", type=int, help="timed steps per row (default 5; --quick: 1)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 2; --quick: 1)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all rows (default 450)")
    parser.add_argument("--rows", nargs="+", choices=list(CHECKS), metavar="ROW",
                        help=f"rows to run, of: {', '.join(CHECKS)} (default: all)")
    parser.add_argument("--num-classes", type=int, default=751, help="identities of the ID classifiers")
    parser.add_argument("--eval-scale", choices=sorted(SCALES), help="evaluate() size (default msmt; --quick: tiny)")
    parser.add_argument("--memory-prediction", metavar="FILE",
                        help="output of benchmarks/bench_memory.py --json: its predicted peaks beside the measured")
    parser.add_argument("--quick", action="store_true", help="tiny config, batch 8, 1 + 1 steps, tiny evaluate()")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = parser.parse_args(argv)
    defaults = ({"batch": 8, "iters": 1, "warmup": 1, "eval_scale": "tiny"} if args.quick else
                {"batch": 128, "iters": 5, "warmup": 2, "eval_scale": "msmt"})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.config_file = args.config_file or QUICK_CONFIG
    if args.batch < 1 or args.iters < 1 or args.warmup < 0 or args.budget <= 0:
        raise UsageError("--batch and --iters must be >= 1, --warmup >= 0, --budget > 0")
    return args


@cli_entry
def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    setup_logger(None)
    start = time.perf_counter()
    deadline = time.monotonic() + args.budget
    cfg = row_config(args)  # a bad key or file fails here, in one line
    device = resolve_device(cfg.MODEL.DEVICE)
    args.device = device.type
    predictions = read_predictions(args.memory_prediction)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_net.py on CUDA
    default_cfg = load_cfg(args.config_file, ["MODEL.DEVICE", device.type] + list(args.opts))
    default_amp = resolve_amp(default_cfg.SOLVER.AMP, device)
    from model import build_model

    with torch.device("meta"):
        model = build_model(cfg, args.num_classes, 6)
    dim, params = int(model.test_dim), sum(p.numel() for p in model.parameters())
    del model
    setup = {"model": model_description(cfg), "params_m": params / 1e6, "feature_dim": dim,
             "config_file": args.config_file, "opts": list(args.opts), "device": device.type,
             "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
             or "cpu", "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
             "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "python": platform.python_version(), "threads": torch.get_num_threads(), "batch": args.batch,
             "k": min(cfg.DATALOADER.NUM_INSTANCE, args.batch), "num_classes": args.num_classes, "iters": args.iters,
             "warmup": args.warmup, "budget_s": args.budget, "eval_scale": args.eval_scale,
             "default_amp": default_amp.name + (" + GradScaler" if default_amp.use_scaler else ""),
             "default_solver_amp": default_cfg.SOLVER.AMP,
             "default_grad_checkpoint": bool(default_cfg.MODEL.GRAD_CHECKPOINT),
             "cudnn_benchmark": torch.backends.cudnn.benchmark,
             "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
             "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "wheels": WHEELS,
             "memory_prediction": args.memory_prediction}
    logger.info("gpu_check: %s on %s, batch %d, budget %.0f s", setup["model"], setup["device_name"], args.batch,
                args.budget)
    rows: Dict[str, Dict[str, Any]] = {}
    for name in [n for n in CHECKS if not args.rows or n in args.rows]:
        kind, levers, budget = CHECKS[name]
        if "compile" in levers:  # with the default training's AMP
            levers = levers + [lever for lever, value in AMP_LEVER_VALUES.items() if value == default_amp.name]
        reason = skip_reason(name, levers, device, args.quick)
        if reason:
            rows[name] = {"status": reason, "seconds": 0.0}
            logger.info("%s: %s", name, reason)
            continue
        logger.info("%s: running (budget %.0f s, %.0f s left in all)", name, budget, deadline - time.monotonic())
        if kind == "train":
            fn = (lambda lv=levers: train_row(args, lv, predictions))
        elif kind == "extract":
            fn = (lambda: extract_row(args))
        elif kind == "evaluate":
            fn = (lambda: evaluate_row(args, dim))
        else:
            fn = (lambda: nccl_row(device))
        rows[name] = run_guarded(fn, budget, deadline, device)
        if kind == "train" and rows[name]["status"] == "ok":
            rows[name]["default"] = (rows[name]["amp"] == default_amp.name
                                     and rows[name]["grad_scaler"] == default_amp.use_scaler
                                     and ("grad_checkpoint" in levers) == setup["default_grad_checkpoint"]
                                     and ("compile" in levers) == bool(default_cfg.MODEL.COMPILE))
        logger.info("%s: %s (%.1f s)", name, rows[name]["status"], rows[name]["seconds"])
    report = {"setup": setup, "rows": rows, "wall_s": time.perf_counter() - start}
    print(format_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"json: {args.json}")
    return report


if __name__ == "__main__":
    main()
