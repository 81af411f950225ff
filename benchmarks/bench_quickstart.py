"""How robust the quick start is: mAP and wall time over seeds and torch thread counts.

    python benchmarks/bench_quickstart.py [--seeds 1 2 3 4 5] [--threads 1 2] [--jobs 1] [--out DIR] [--json]
                                          [--config_file configs/Synthetic/quickstart.yml] [KEY VALUE ...]

Each (threads, seed) pair is one full ``train_net.py`` run in its own process (``SOLVER.SEED`` = seed,
``OMP_NUM_THREADS`` = threads, outputs under ``--out``). Runs go one after the other unless ``--jobs N``:
then up to N runs at a time, never more threads than CPUs (so on 2 cores, two 1-thread runs share the
machine and each one's wall time is an upper bound of what it takes alone). Printed: one line per
run (final and best mAP, Rank-1, wall time of the whole command, data generation included), then min /
median / max of the final mAP and of the wall time for each thread count and over all runs. With
``--json`` the last line is the same as JSON. The exit code is 1 when a run fails or when a final mAP is
below ``--min-map`` (so the script can guard the quick start's claim).

The figures depend on the machine (CPU model, load, library builds): read them as ranges, not digits.
"""
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import load_cfg  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402

DEFAULT_CONFIG = os.path.join("configs", "Synthetic", "quickstart.yml")


def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__.split("\n\n")[0], config_default=DEFAULT_CONFIG,
                                  opts_help="config overrides for every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="SOLVER.SEED values")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts")
    parser.add_argument("--out", default=os.path.join("output", "bench_quickstart"),
                        help="folder of the runs' OUTPUT_DIRs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (threads x jobs <= CPUs)")
    parser.add_argument("--min-map", type=float, default=0.6, help="final mAP every run must reach (fraction)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads):
        raise UsageError(f"--threads must be positive integers, got {args.threads}")
    load_cfg(args.config_file, args.opts)  # a bad file or override fails here, before any run starts
    return args


def start_run(args, seed, threads):
    """Starts one training run; returns (process, record so far, console file)."""
    out_dir = os.path.join(args.out, f"threads{threads}_seed{seed}")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config_file", args.config_file,
           *args.opts, "SOLVER.SEED", str(seed), "OUTPUT_DIR", out_dir]
    os.makedirs(out_dir, exist_ok=True)
    console = open(os.path.join(out_dir, "console.txt"), "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=console, stderr=subprocess.STDOUT)
    return proc, {"seed": seed, "threads": threads, "out_dir": out_dir, "start": time.perf_counter()}, console


def finish_run(proc, record, console):
    """Waits for a run started by :func:`start_run`; returns its record (metrics, wall seconds, exit code)."""
    rc = proc.wait()
    console.close()
    record = dict(record)
    start, out_dir = record.pop("start"), record.pop("out_dir")
    record.update(seconds=round(time.perf_counter() - start, 1), rc=rc)
    results = os.path.join(out_dir, "results.json")
    if rc == 0 and os.path.isfile(results):
        with open(results, encoding="utf-8") as f:
            res = json.load(f)
        record.update(final_mAP=res["latest"]["mAP"], final_rank1=res["latest"]["rank1"],
                      best_mAP=res["best"]["mAP"], best_epoch=res["best"]["epoch"])
    return record


def print_record(args, r):
    """One line of the per-run table (as soon as the run ends)."""
    threads, seed = r["threads"], r["seed"]
    if "final_mAP" in r:
        print(f"{threads:>7} | {seed:>4} | {100 * r['final_mAP']:8.1f}% | {100 * r['final_rank1']:7.1f}% | "
              f"{100 * r['best_mAP']:8.1f}% ({r['best_epoch']:>2}) | {r['seconds'] / 60:.1f}", flush=True)
    else:
        print(f"{threads:>7} | {seed:>4} | failed (exit code {r['rc']}; see "
              f"{os.path.join(args.out, f'threads{threads}_seed{seed}', 'console.txt')})", flush=True)


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(records):
    ok = [r for r in records if "final_mAP" in r]
    if not ok:
        return {}
    return {"runs": len(records), "failed": len(records) - len(ok),
            "final_mAP": spread([r["final_mAP"] for r in ok]), "seconds": spread([r["seconds"] for r in ok])}


def print_spread(label, summary):
    m, s = summary["final_mAP"], summary["seconds"]
    print(f"{label:<12} | {summary['runs']:>4} | {100 * m['min']:5.1f} / {100 * m['median']:5.1f} / "
          f"{100 * m['max']:5.1f} | {s['min'] / 60:4.1f} / {s['median'] / 60:4.1f} / {s['max'] / 60:4.1f}")


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    records = []
    print(f"{args.config_file}: seeds {args.seeds} x threads {args.threads}, up to {args.jobs} run(s) at a time, "
          f"{os.cpu_count()} CPUs")
    print("threads | seed | final mAP | final R1 | best mAP (epoch) | wall (min)")
    for threads in args.threads:
        jobs = max(1, min(args.jobs, (os.cpu_count() or 1) // threads))
        pending = list(args.seeds)
        while pending:
            batch = [start_run(args, seed, threads) for seed in pending[:jobs]]
            pending = pending[jobs:]
            for proc, record, console in batch:
                records.append(finish_run(proc, record, console))
                print_record(args, records[-1])
    summary = {"config": args.config_file, "overrides": args.opts, "records": records,
               "by_threads": {}, "all": summarise(records)}
    if summary["all"]:
        print("\nfinal mAP (%) and wall time (min), min / median / max")
        print("             | runs |   final mAP (%)     |   wall (min)")
        for threads in args.threads:
            part = summarise([r for r in records if r["threads"] == threads])
            if part:
                summary["by_threads"][str(threads)] = part
                print_spread(f"{threads} thread(s)", part)
        print_spread("all", summary["all"])
    if args.json:
        print(json.dumps(summary))
    below = [r for r in records if r.get("final_mAP", -1.0) < args.min_map]
    if below:
        print(f"{len(below)} run(s) failed or ended below mAP {args.min_map:.2f}: "
              + ", ".join(f"threads {r['threads']} seed {r['seed']}" for r in below), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
