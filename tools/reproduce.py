#!/usr/bin/env python
"""Reproduce a table or figure of the paper: train its missing runs, then print paper vs ours.

    python tools/reproduce.py --table 2                   # train what is missing, print the table
    python tools/reproduce.py --table 2 --dry-run         # list the runs and the commands, train nothing
    python tools/reproduce.py --table 6 --no-train        # only the table, from the results that exist
    python tools/reproduce.py --table fig5 --launcher torchrun --gpus 2 [KEY VALUE ...]

Tables: 1 (three datasets x two input sizes x two patch strides), 2-6, fig5, fig6. Each row of a table
is one YAML file found by a naming rule (:func:`config_path`, the only table->file mapping):
``configs/MSMT17/table{N}/{slug of the row name}.yml`` for Tables II-VI and Figs. 5-6 (ablations are
on MSMT17; e.g. ``table2/method5_full.yml``), ``configs/{Market,DukeMTMC,MSMT17}/table1/{H}x{W}_stride_{S}.yml``
for Table I. The rows,
their config overrides and the paper's numbers come from ``configs/paper_tables.py``.

A run is finished when ``OUTPUT_DIR/results.json`` exists (written by train_net.py). Runs whose
resolved configs are identical apart from OUTPUT_DIR (e.g. Table II Method5 and Table V GeMP) are
the same experiment: the results of either serve both, and only one of them is trained.
Runs are trained one after another with ``python train_net.py --config_file F`` (or
``torchrun --nproc_per_node=G train_net.py ...``); extra ``KEY VALUE`` overrides go to every run.

The printed table has the paper's mAP / Rank-1 / Params / FLOPs beside ours: accuracy from
``results.json`` (``--metrics latest``, the last evaluation, or ``best``), blank where not run;
Params/FLOPs measured by ``tools/model_stats.py``'s ``measure`` (``--no-stats`` skips it: it builds
every model). Figures 5 and 6 are also drawn as a PNG (``--plot-dir``).
"""
import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections import namedtuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import ConfigError, load_cfg  # noqa: E402
from configs.paper_tables import TABLE1, TABLES, Row  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import FusionReIDError, cli_entry  # noqa: E402
from utils.output_files import RESULTS_FILE  # noqa: E402

logger = logging.getLogger(__name__)

# Dataset name (DATASETS.NAMES) -> its folder under configs/ and output/, and its number of cameras.
DATASET_DIRS = {"market1501": "Market", "dukemtmcreid": "DukeMTMC", "msmt17": "MSMT17"}
DATASET_CAMS = {"market1501": 6, "dukemtmcreid": 8, "msmt17": 15}
ABLATION_DATASET = "msmt17"
TABLE_KEYS = ("1",) + tuple(sorted(TABLES))
# Keys that differ between experiments without changing the experiment.
RUN_INDEPENDENT_KEYS = ("OUTPUT_DIR",)

Run = namedtuple("Run", "table row dataset config")


# ----------------------------------------------------------------------------- table -> runs
def slug(name):
    """File name of a row: lower case, every run of other characters than letters/digits -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def table1_rows():
    """Table I as ``(Row, dataset)`` pairs: per dataset, the four (input size, stride) settings."""
    rows = []
    for dataset in DATASET_DIRS:
        for ((h, w), stride), numbers in TABLE1.items():
            mAP, rank1 = numbers[dataset]
            overrides = ["INPUT.SIZE_TRAIN", f"[{h}, {w}]", "INPUT.SIZE_TEST", f"[{h}, {w}]",
                         "MODEL.TRANSFORMER.STRIDE_SIZE", f"[{stride}, {stride}]"]
            rows.append((Row(f"{h}x{w} stride {stride}", overrides, mAP, rank1, None, None, "model"), dataset))
    return rows


def table_rows(key):
    """``(title, [(Row, dataset), ...])`` of table ``key`` (``'1'``..``'6'``, ``'fig5'``, ``'fig6'``)."""
    if key == "1":
        return "Table I: FusionReID (ResNet50 + ViT-B/16, stride 12 = ViT-B/16*) on three datasets", table1_rows()
    if key not in TABLES:
        raise KeyError(f"unknown table {key!r}; known: {', '.join(TABLE_KEYS)}")
    title, rows = TABLES[key]
    return title, [(row, ABLATION_DATASET) for row in rows]


def config_path(key, row, dataset, root=ROOT):
    """The YAML file of one row: ``configs/<dataset folder>/<table folder>/<slug of the row name>.yml``."""
    folder = key if key.startswith("fig") else f"table{key}"
    return os.path.join(root, "configs", DATASET_DIRS[dataset], folder, f"{slug(row.name)}.yml")


def list_runs(key, root=ROOT):
    """Every run of table ``key``, in the paper's row order."""
    _, rows = table_rows(key)
    return [Run(key, row, dataset, config_path(key, row, dataset, root)) for row, dataset in rows]


def all_config_files(root=ROOT):
    """Every experiment YAML under configs/<dataset folders> (the bases excluded)."""
    files = []
    for folder in DATASET_DIRS.values():
        base = os.path.join(root, "configs", folder)
        for dirpath, _, names in os.walk(base):
            files += [os.path.join(dirpath, n) for n in names if n.endswith(".yml") and dirpath != base]
    return sorted(files)


# ----------------------------------------------------------------------------- results
def resolve(config, opts=()):
    """The frozen config of a run (``ConfigError`` naming the file when it is missing or invalid)."""
    return load_cfg(config, list(opts))


def experiment_key(cfg):
    """What identifies the experiment: the resolved config without the run-independent keys."""
    cfg = cfg.clone()
    cfg.defrost()
    for key in RUN_INDEPENDENT_KEYS:
        cfg[key] = ""
    return cfg.dump()


def read_results(output_dir):
    """``results.json`` of a run as a dict, or None when the run has not finished."""
    path = os.path.join(output_dir, RESULTS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("ignoring unreadable %s: %s", path, e)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring %s: expected an object with 'latest' and 'best'", path)
        return None
    return data


def output_dir(cfg, root=ROOT):
    """OUTPUT_DIR of a run; relative paths are relative to the repository root (where runs start)."""
    return cfg.OUTPUT_DIR if os.path.isabs(cfg.OUTPUT_DIR) else os.path.join(root, cfg.OUTPUT_DIR)


class ResultIndex:
    """Finds the results of a run: its own OUTPUT_DIR, else that of any config of the same experiment.

    ``opts``: the KEY VALUE overrides every run gets (part of what an experiment is); ``root``: the
    repository root (configs/ and relative OUTPUT_DIRs are found there).
    """

    def __init__(self, opts=(), root=ROOT):
        self.opts, self.root = list(opts), root
        self._twins = None

    def _index(self):
        if self._twins is None:
            self._twins = {}
            for path in all_config_files(self.root):
                try:
                    cfg = resolve(path, self.opts)
                except ConfigError as e:
                    logger.warning("skipping %s when looking for shared runs: %s", path, e)
                    continue
                self._twins.setdefault(experiment_key(cfg), []).append(output_dir(cfg, self.root))
        return self._twins

    def find(self, cfg):
        """``(results dict, output dir it came from)`` or ``(None, None)``."""
        own = output_dir(cfg, self.root)
        for folder in [own] + [d for d in self._index().get(experiment_key(cfg), []) if d != own]:
            results = read_results(folder)
            if results is not None:
                return results, folder
        return None, None


def metric(results, which, name):
    """A metric of ``results`` as a percentage, or None."""
    entry = (results or {}).get(which) or {}
    value = entry.get(name)
    return None if value is None else 100.0 * float(value)


# ----------------------------------------------------------------------------- commands
def train_command(config, launcher="python", gpus=2, opts=(), root=ROOT):
    """The command line that trains one run (run from the repository root ``root``)."""
    if launcher == "torchrun":
        cmd = ["torchrun", f"--nproc_per_node={gpus}", "train_net.py"]
    else:
        cmd = [sys.executable, "train_net.py"]
    return cmd + ["--config_file", os.path.relpath(config, root)] + list(opts)


def train_missing(runs, index, launcher="python", gpus=2, dry_run=False):
    """Train every run that has no results (once per experiment), with ``index.opts`` as extra overrides;
    returns the failed runs."""
    failed, started = [], set()
    for run in runs:
        cfg = resolve(run.config, index.opts)
        results, folder = index.find(cfg)
        key = experiment_key(cfg)
        if results is not None:
            logger.info("%s: done (%s)", run.row.name, os.path.relpath(folder, index.root))
            continue
        if key in started:
            logger.info("%s: same experiment as a run above, not trained twice", run.row.name)
            continue
        started.add(key)
        cmd = train_command(run.config, launcher, gpus, index.opts, index.root)
        print(("would run: " if dry_run else "running: ") + shlex.join(cmd), flush=True)
        if dry_run:
            continue
        rc = subprocess.call(cmd, cwd=index.root)
        if rc != 0:
            logger.error("%s: %s exited with %d", run.row.name, shlex.join(cmd), rc)
            failed.append(run)
    return failed


# ----------------------------------------------------------------------------- table
def measure_stats(cfg, dataset, scope):
    """Our (Params M, FLOPs G) of a run, in the paper's convention (whole model, or one HTM)."""
    from tools.model_stats import measure

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.PRETRAIN_CHOICE = "none"
    stats = measure(cfg, num_cams=DATASET_CAMS[dataset])
    if scope == "htm":
        return stats.get("htm_params_m"), stats.get("htm_flops_g")
    return stats["params_m"], stats["flops_g"]


def collect(runs, index, which="latest", stats=True):
    """One dict per run: paper numbers, ours (None where missing), config and results folder."""
    rows = []
    for run in runs:
        cfg = resolve(run.config, index.opts)
        results, folder = index.find(cfg)
        params = flops = None
        if stats:
            params, flops = measure_stats(cfg, run.dataset, run.row.scope)
        rows.append({
            "row": run.row.name if run.table != "1" else f"{DATASET_DIRS[run.dataset]} {run.row.name}",
            "config": os.path.relpath(run.config, index.root),
            "results": None if folder is None else os.path.relpath(folder, index.root),
            "paper_mAP": run.row.mAP, "paper_rank1": run.row.rank1,
            "paper_params": run.row.params, "paper_flops": run.row.flops,
            "mAP": metric(results, which, "mAP"), "rank1": metric(results, which, "rank1"),
            "params": params, "flops": flops,
        })
    return rows


def _fmt(value, spec=".1f"):
    return "" if value is None else format(value, spec)


def markdown_table(title, rows):
    """The paper's numbers beside ours, as a markdown table."""
    lines = [f"## {title}", "",
             "| row | paper mAP | ours mAP | paper R1 | ours R1 | paper Params (M) | ours Params (M) | "
             "paper FLOPs (G) | ours FLOPs (G) | config |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {_fmt(r['paper_mAP'])} | {_fmt(r['mAP'])} | {_fmt(r['paper_rank1'])} | "
                     f"{_fmt(r['rank1'])} | {_fmt(r['paper_params'])} | {_fmt(r['params'], '.2f')} | "
                     f"{_fmt(r['paper_flops'])} | {_fmt(r['flops'], '.2f')} | {r['config']} |")
    return "\n".join(lines) + "\n"


FIGURE_AXES = {"fig5": ("MODEL.FUSION.HTM_LAYERS", "number of HTMs L"),
               "fig6": ("MODEL.FUSION.DIM", "fused dimension D")}


def plot_figure(key, runs, rows, path, opts=()):
    """Figure 5 or 6 as a PNG: mAP and Rank-1 against the swept key, the paper's point(s) and ours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg_key, label = FIGURE_AXES[key]
    xs = []
    for run in runs:
        node = resolve(run.config, opts)
        for part in cfg_key.split("."):
            node = node[part]
        xs.append(node)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, name, title in ((axes[0], "mAP", "mAP (%)"), (axes[1], "rank1", "Rank-1 (%)")):
        paper = [(x, r[f"paper_{name}"]) for x, r in zip(xs, rows) if r[f"paper_{name}"] is not None]
        ours = [(x, r[name]) for x, r in zip(xs, rows) if r[name] is not None]
        if paper:
            ax.plot(*zip(*paper), "s", color="tab:gray", label="paper")
        if ours:
            ax.plot(*zip(*ours), "o-", color="tab:blue", label="ours")
        ax.set_xticks(xs)
        ax.set_xlabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(TABLES[key][0], fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    # no --config_file: every run has its own (the table's rows); the overrides go to all of them
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, config_file=False,
                                  opts_help="KEY VALUE overrides passed to every run")
    parser.add_argument("--table", required=True, choices=TABLE_KEYS, help="table (1-6) or figure (fig5, fig6)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and print the commands only")
    parser.add_argument("--no-train", action="store_true", help="print the table from existing results only")
    parser.add_argument("--no-stats", action="store_true", help="skip measuring Params/FLOPs")
    parser.add_argument("--launcher", choices=("python", "torchrun"), default="python")
    parser.add_argument("--gpus", type=int, default=2, help="processes per run with --launcher torchrun")
    parser.add_argument("--metrics", choices=("latest", "best"), default="latest",
                        help="which entry of results.json to report")
    parser.add_argument("--plot-dir", default=os.path.join(ROOT, "output", "reproduce"),
                        help="folder of the fig5/fig6 PNG")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_cfg("", args.opts)  # a bad override fails here, once, naming the key
    title, _ = table_rows(args.table)
    runs = list_runs(args.table)
    missing = [r.config for r in runs if not os.path.isfile(r.config)]
    if missing:
        raise ConfigError(f"config files missing for table {args.table}: {', '.join(missing)}")
    index = ResultIndex(args.opts)
    print(f"# {title}: {len(runs)} runs")
    for run in runs:
        print(f"- {run.row.name}: {os.path.relpath(run.config, ROOT)}")
    failed = []
    if not args.no_train:
        failed = train_missing(runs, index, args.launcher, args.gpus, args.dry_run)
    rows = collect(runs, index, args.metrics, stats=not (args.no_stats or args.dry_run))
    print()
    print(markdown_table(title, rows))
    if args.table in FIGURE_AXES and not args.dry_run:
        path = plot_figure(args.table, runs, rows, os.path.join(args.plot_dir, f"{args.table}.png"), args.opts)
        print(f"plot: {path}")
    if failed:
        raise FusionReIDError(f"{len(failed)} run(s) failed: {', '.join(r.row.name for r in failed)}")


if __name__ == "__main__":
    main()
