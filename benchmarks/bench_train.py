#!/usr/bin/env python
"""Images/s and peak memory of a training step, alone and with each speed lever, and of evaluation.

    python benchmarks/bench_train.py                                   # paper model, batch 8, this device
    python benchmarks/bench_train.py --device cuda --batch 64 --repeats 3
    python benchmarks/bench_train.py --levers channels_last compile --skip-eval
    python benchmarks/bench_train.py --quick --levers channels_last    # tiny model and data: seconds
    python benchmarks/bench_train.py --json                            # last line: every row as JSON

Rows: the baseline (float32, every lever off), each lever alone, and all of them together:

* ``grad_checkpoint`` (MODEL.GRAD_CHECKPOINT): activations recomputed in the backward (less memory, more time);
* ``channels_last`` (MODEL.CHANNELS_LAST): the CNN branch in channels-last memory format;
* ``compile`` (MODEL.COMPILE): ``torch.compile`` (the untimed warm-up steps include the compilation);
* ``fp16`` / ``bf16`` (SOLVER.AMP): autocast; fp16 with a GradScaler (CUDA only); bf16 is CPU autocast on a CPU.

"all" takes one AMP mode: bf16 where the device has native bfloat16 (as SOLVER.AMP 'auto'), else fp16.
Each row is measured in its own process (peak memory cannot carry over between rows): the trainer's own
``Trainer.train_step`` on random images of INPUT.SIZE_TRAIN (forward, loss, backward, optimizer step; no data
loading), ``--iters`` timed steps after ``--warmup`` untimed ones, then eval-mode feature extraction (no grad)
the same way. Peak memory: the CUDA allocator's peak over the timed steps, or on CPU the process's peak
resident set size. ``--repeats`` runs every row that many times, in turn (baseline, lever 1, ..., all,
baseline, ...), and reports the median; ratios are against the baseline of the same run.

Evaluation: ``utils.metrics.evaluate`` on synthetic features at ``--eval-scale`` (default MSMT17: 11,659 queries
x 82,161 gallery) for each of ``--eval-dims``, each in its own process (``benchmarks/bench_eval.py``): seconds and
peak memory beyond the features. Without ``--config_file`` the model is the paper's (ResNet50 + ViT-B/16*, D=768,
256x128) with random weights.
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402

utils.prefer_passive_omp()  # before torch is imported

import torch  # noqa: E402

from benchmarks.bench_eval import SCALES, measure  # noqa: E402
from configs import load_cfg  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import FusionReIDError, UsageError, cli_entry  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.misc import autocast, native_bf16, resolve_device, set_seed  # noqa: E402

logger = logging.getLogger(__name__)

# lever name -> the config override that turns it on
LEVERS = {
    "grad_checkpoint": ("MODEL.GRAD_CHECKPOINT", "True"),
    "channels_last": ("MODEL.CHANNELS_LAST", "True"),
    "compile": ("MODEL.COMPILE", "True"),
    "fp16": ("SOLVER.AMP", "fp16"),
    "bf16": ("SOLVER.AMP", "bf16"),
}
AMP_LEVERS = ("bf16", "fp16")  # in the order "all" prefers them
# every lever off: the baseline (a config file's own settings do not leak into it)
LEVERS_OFF = ["MODEL.GRAD_CHECKPOINT", "False", "MODEL.CHANNELS_LAST", "False", "MODEL.COMPILE", "False",
              "SOLVER.AMP", "off"]
QUICK_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Synthetic",
                            "tiny.yml")
# the measured quantities of a row, and how each is printed
ROW_FIELDS = ("train_images_per_s", "train_peak_mib", "extract_images_per_s")


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = ConfigArgumentParser(__doc__.split("\n\n")[0], config_help="YAML config (default: the paper's full "
                                                                        "model; with --quick: the tiny config)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (training and extraction)")
    parser.add_argument("--iters", type=int, help="timed steps per row (default 5; --quick: 1)")
    parser.add_argument("--warmup", type=int,
                        help="untimed steps first, where compilation happens (default 2; --quick: 1)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--levers", nargs="+", choices=sorted(LEVERS), metavar="LEVER",
                        help=f"levers to measure, of {', '.join(LEVERS)} (default: all; fp16 on CUDA only)")
    parser.add_argument("--repeats", type=int,
                        help="runs of every row, interleaved; the median is shown (default 2; --quick: 1)")
    parser.add_argument("--num-classes", type=int, default=751, help="identities of the ID classifiers")
    parser.add_argument("--skip-eval", action="store_true", help="no evaluate() measurement")
    parser.add_argument("--eval-scale", default="msmt", choices=sorted(SCALES),
                        help="query x gallery size of the evaluate() measurement (benchmarks/bench_eval.py)")
    parser.add_argument("--eval-dims", nargs="+", type=int, default=[768, 5888], metavar="D",
                        help="feature dimensions of the evaluate() measurement (768: D; 5888: f_a of the paper model)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the tiny config (unless --config_file), 1 warm-up + 1 timed step, one "
                             "repeat (unless given), evaluate() at the 'tiny' scale with d=64")
    parser.add_argument("--json", action="store_true", help="print every row as one JSON object on the last line")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # the row a child process measures
    args = parser.parse_args(argv)
    defaults = {"iters": 1, "warmup": 1, "repeats": 1} if args.quick else {"iters": 5, "warmup": 2, "repeats": 2}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.config_file = args.config_file or QUICK_CONFIG
        args.eval_scale, args.eval_dims = "tiny", [64]
    for name in ("batch", "iters", "repeats"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or any(d < 1 for d in args.eval_dims):
        raise UsageError("--warmup must be >= 0 and every --eval-dims value >= 1")
    return args


# ----------------------------------------------------------------------------- rows
def model_description(cfg) -> str:
    """'resnet50 + vit_base_patch16_224, D=768, 256x128': the model a report is about."""
    h, w = cfg.INPUT.SIZE_TRAIN
    return f"{cfg.MODEL.CNN.NAME or '-'} + {cfg.MODEL.TRANSFORMER.NAME or '-'}, D={cfg.MODEL.FUSION.DIM}, {h}x{w}"


def amp_for_all(levers: Sequence[str], device: torch.device) -> Optional[str]:
    """The AMP lever of the "all" row: bf16 where native (and on CPU, where fp16 is not offered), else fp16."""
    chosen = [name for name in AMP_LEVERS if name in levers]
    if "bf16" in chosen and (device.type != "cuda" or native_bf16()):
        return "bf16"
    return "fp16" if "fp16" in chosen else None


def build_rows(levers: Sequence[str], device: torch.device) -> Dict[str, List[str]]:
    """``{row name: its levers}``: baseline, each lever, and "all" when there are several."""
    rows = {"baseline": []}
    rows.update({name: [name] for name in levers})
    if len(levers) > 1:
        amp = amp_for_all(levers, device)
        rows["all"] = [name for name in levers if name not in AMP_LEVERS] + ([amp] if amp else [])
    return rows


def row_opts(levers: Sequence[str]) -> List[str]:
    """Config overrides of a row: every lever off, then its own on."""
    return LEVERS_OFF + [value for name in levers for value in LEVERS[name]]


# ----------------------------------------------------------------------------- one row (child process)
def peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], steps: int, warmup: int, batch: int, device: torch.device) -> Dict[str, float]:
    """Images/s of ``fn()`` over ``steps`` calls after ``warmup`` calls, the warm-up's seconds, and the peak
    memory (MiB; on CUDA over the timed calls)."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "warmup_s": warmup_s,
            "peak_mib": peak_memory_mib(device)}


def measure_row(args, levers: Sequence[str]) -> Dict[str, Any]:
    """Train-step and extraction figures of one row, in this process (``Trainer.train_step`` itself)."""
    from loss import build_loss
    from model import build_model
    from processor.trainer import Trainer
    from solver import build_optimizer, build_scheduler

    cfg = load_cfg(args.config_file, base_opts(args) + row_opts(levers))
    device = resolve_device(cfg.MODEL.DEVICE)
    set_seed(cfg.SOLVER.SEED)
    b, k = args.batch, max(1, min(cfg.DATALOADER.NUM_INSTANCE, args.batch))
    h, w = cfg.INPUT.SIZE_TRAIN
    images = torch.randn(b, 3, h, w, device=device)
    pids = (torch.arange(b, device=device) // k) % args.num_classes
    camids = torch.arange(b, device=device) % 6
    model = build_model(cfg, args.num_classes, 6).to(device)
    optimizer = build_optimizer(cfg, model)
    batch = (images, pids, camids, torch.arange(b))
    trainer = Trainer(cfg, model, build_loss(cfg, args.num_classes), optimizer, build_scheduler(cfg, optimizer),
                      [batch], None, 0, device)
    logger.info("row %s: %s, %.1fM parameters | %s | AMP %s | batch %d | %d threads", "+".join(levers) or "baseline",
                model_description(cfg), sum(p.numel() for p in model.parameters()) / 1e6, device, trainer.amp.name, b,
                torch.get_num_threads())
    trainer.net.train()
    train = timed(lambda: trainer.train_step(images, pids, camids, 1, 1), args.iters, args.warmup, b, device)
    th, tw = cfg.INPUT.SIZE_TEST
    test_images = torch.randn(b, 3, th, tw, device=device)

    @torch.no_grad()
    def extract():
        with autocast(trainer.amp):
            trainer.eval_model(test_images, camids)

    trainer.eval_model.eval()
    extraction = timed(extract, args.iters, args.warmup, b, device)
    notes = [f"compile failed: {net.failure}" for net in (trainer.net, trainer.eval_model)
             if getattr(net, "failure", None)]
    return {"train_images_per_s": train["images_per_s"], "train_peak_mib": train["peak_mib"],
            "train_warmup_s": train["warmup_s"], "extract_images_per_s": extraction["images_per_s"],
            "amp": trainer.amp.name, "notes": sorted(set(notes))}


# ----------------------------------------------------------------------------- the table (parent process)
def base_opts(args) -> List[str]:
    """Overrides of every row before its levers: random weights, the device, no output files, the user's
    KEY VALUE pairs."""
    return ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", args.device, "OUTPUT_DIR", ""] + list(args.opts)


def run_row(argv: Sequence[str], name: str) -> Dict[str, Any]:
    """One row measured in a fresh process: its figures, or ``{'error': its last line}`` when it failed."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--row", name],
                          capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return {"error": lines[-1].split(": error: ", 1)[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_row(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The median of each measured field over a row's runs (the first error when any run failed)."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {"error": failed[0]["error"], "runs": len(runs)}
    row = {key: statistics.median(r[key] for r in runs) for key in ROW_FIELDS + ("train_warmup_s",)}
    row.update(amp=runs[0]["amp"], notes=sorted({n for r in runs for n in r["notes"]}), runs=len(runs))
    return row


def measure_rows(argv: Sequence[str], rows: Dict[str, List[str]], repeats: int) -> Dict[str, Dict[str, Any]]:
    """Every row ``repeats`` times, in turn; the baseline's failure (e.g. a config the model rejects) stops
    the run with its message."""
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in rows}
    for repeat in range(repeats):
        for name in rows:
            result = run_row(argv, name)
            if name == "baseline" and "error" in result:
                raise FusionReIDError(result["error"])
            logger.info("repeat %d/%d, %s: %s", repeat + 1, repeats, name,
                        result.get("error") or ", ".join(f"{k} {result[k]:.1f}" for k in ROW_FIELDS))
            runs[name].append(result)
    table = {name: dict(median_row(r), levers=rows[name]) for name, r in runs.items()}
    base = table["baseline"]
    for row in table.values():
        for key in ROW_FIELDS if "error" not in row else ():
            row[key + "_ratio"] = row[key] / base[key]
    return table


def measure_evaluate(scale: str, dims: Sequence[int]) -> List[Dict[str, Any]]:
    """``utils.metrics.evaluate`` at ``scale`` for each of ``dims`` (benchmarks/bench_eval.py, own process)."""
    nq, ng = SCALES[scale][:2]
    results = []
    for dim in dims:
        logger.info("evaluate(): %s scale, %d x %d, d=%d", scale, nq, ng, dim)
        r = measure("ours", scale, dim, threads=torch.get_num_threads())
        results.append({"scale": scale, "num_query": nq, "num_gallery": ng, "dim": dim, "seconds": r["seconds"],
                        "distance_seconds": r["dist_seconds"], "extra_peak_mib": r["extra_bytes"] / 2 ** 20,
                        "mAP": r["mAP"]})
    return results


def format_table(report: Dict[str, Any]) -> str:
    """The report as a readable text table."""
    head = report["setup"]
    lines = [f"training step: {head['model']}, batch {head['batch']}, {head['device']}, {head['threads']} threads, "
             f"{head['iters']} timed steps after {head['warmup']}, median of {head['repeats']} "
             f"(load average {head['load_before'][0]:.1f} before, {head['load_after'][0]:.1f} after)",
             f"{'row':16s} {'levers':44s} {'AMP':4s} {'train img/s':>11s} {'x':>5s} {'peak MiB':>9s} {'x':>5s} "
             f"{'extract img/s':>13s} {'x':>5s}  notes"]
    for name, row in report["rows"].items():
        levers = "+".join(row["levers"]) or "-"
        if "error" in row:
            lines.append(f"{name:16s} {levers:44s} failed: {row['error']}")
            continue
        notes = "; ".join(row["notes"] + ([f"warm-up {row['train_warmup_s']:.0f} s"] if "compile" in row["levers"]
                                          else []))
        lines.append(f"{name:16s} {levers:44s} {row['amp']:4s} {row['train_images_per_s']:11.2f} "
                     f"{row['train_images_per_s_ratio']:5.2f} {row['train_peak_mib']:9.0f} "
                     f"{row['train_peak_mib_ratio']:5.2f} {row['extract_images_per_s']:13.2f} "
                     f"{row['extract_images_per_s_ratio']:5.2f}  {notes}")
    for r in report["evaluate"]:
        lines.append(f"evaluate(): {r['scale']} {r['num_query']} x {r['num_gallery']}, d={r['dim']}: "
                     f"{r['seconds']:.1f} s (distances {r['distance_seconds']:.1f} s), peak {r['extra_peak_mib']:.0f} "
                     f"MiB beyond the features, mAP {r['mAP']:.3f}")
    return "\n".join(lines)


@cli_entry
def main(argv: Optional[Sequence[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    setup_logger(None)
    cfg = load_cfg(args.config_file, base_opts(args))  # a bad key or file fails here, in one line
    device = resolve_device(cfg.MODEL.DEVICE)
    levers = list(dict.fromkeys(args.levers or [n for n in LEVERS if device.type == "cuda" or n != "fp16"]))
    if "fp16" in levers and device.type != "cuda":
        raise UsageError("--levers fp16 needs CUDA (on CPU the bf16 row measures CPU autocast)")
    rows = build_rows(levers, device)
    if args.row is not None:
        if args.row not in rows:
            raise UsageError(f"--row {args.row!r} is none of {', '.join(rows)}")
        print(json.dumps(measure_row(args, rows[args.row])))  # the parent reads this line
        return None
    start, load_before = time.perf_counter(), os.getloadavg()
    table = measure_rows(argv, rows, args.repeats)
    evaluation = [] if args.skip_eval else measure_evaluate(args.eval_scale, args.eval_dims)
    report = {"setup": {"model": model_description(cfg),
                        "config_file": args.config_file, "batch": args.batch, "device": str(device),
                        "threads": torch.get_num_threads(), "iters": args.iters, "warmup": args.warmup,
                        "repeats": args.repeats, "load_before": list(load_before),
                        "load_after": list(os.getloadavg()), "wall_s": time.perf_counter() - start},
              "rows": table, "evaluate": evaluation}
    print(format_table(report))
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
