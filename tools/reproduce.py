#!/usr/bin/env python
"""Reproduce a table or figure of the paper: train its missing runs (over several seeds), then print paper vs ours.

    python tools/reproduce.py --table 2                   # train what is missing, print the table
    python tools/reproduce.py --table 2 --seeds 3         # three seeds per row: mean +- std and a verdict
    python tools/reproduce.py --table 2 --dry-run         # list the runs and the commands, train nothing
    python tools/reproduce.py --table 6 --no-train        # only the table, from the results that exist
    python tools/reproduce.py --table fig5 --launcher torchrun --gpus 2 [KEY VALUE ...]
    python tools/reproduce.py --table fig5 --rows "L = 1" "L = 2" --seeds 3 --no-stats \\
        --base-config configs/Synthetic/tiny.yml SOLVER.MAX_EPOCHS 1   # the rows' overrides on another setup

Tables: 1 (three datasets x two input sizes x two patch strides), 2-6, fig5, fig6. Each row of a table
is one YAML file found by a naming rule (:func:`config_path`, the only table->file mapping):
``configs/MSMT17/table{N}/{slug of the row name}.yml`` for Tables II-VI and Figs. 5-6 (ablations are
on MSMT17; e.g. ``table2/method5_full.yml``), ``configs/{Market,DukeMTMC,MSMT17}/table1/{H}x{W}_stride_{S}.yml``
for Table I. The rows, their config overrides and the paper's numbers come from ``configs/paper_tables.py``.
``--rows`` keeps some rows (by name or file name).

``--base-config F`` runs each row as *F + the row's overrides* (those of ``paper_tables.py``, which the
row's YAML holds over the paper's base) instead of the row's YAML, each in
``<F's OUTPUT_DIR>/<table folder>/<row slug>``: the same ablations on another setup, e.g. the tiny synthetic
config (``configs/Synthetic/tiny.yml``) in seconds per run. The paper's numbers are shown only where F's
dataset is the one the paper reports the row on (MSMT17 for the ablations, each Table I dataset for its
rows); elsewhere the verdict is "no paper value". ``OUTPUT_DIR`` among the overrides is the root of every
run's folder: ``<root>/<table folder>/<slug>`` with ``--base-config``, ``<root>/<dataset>/<table>/<slug>``
(the YAML's path under configs/) without.

Seeds: ``--seeds N`` trains every row with the seeds S, S+1, ..., S+N-1 (``SOLVER.SEED``; S is the config's
seed, 1111 unless an override says otherwise), ``--seed-list`` with the seeds given; each seed's run lives in
``<the row's OUTPUT_DIR>/seed_<seed>``. Without either, each row is one run in its own OUTPUT_DIR.

A run is finished when ``OUTPUT_DIR/results.json`` exists (written by train_net.py) and is then reused, never
retrained. Runs whose resolved configs are identical apart from OUTPUT_DIR (e.g. Table II Method5 and Table V
GeMP, or a row's ``seed_1111`` run and its single run with the default seed) are the same experiment: the
results of either serve both, and only one of them is trained. Runs are trained one after another with
``python train_net.py --config_file F`` (or ``torchrun --nproc_per_node=G train_net.py ...``); extra
``KEY VALUE`` overrides go to every run.

The printed table has the paper's mAP / Rank-1 / Params / FLOPs beside ours: accuracy from ``results.json``
(``--metrics latest``, the last evaluation, or ``best``), the mean +- sample standard deviation over the n
seeds that have results, blank where none; Params/FLOPs measured by ``tools/model_stats.py``'s ``measure``
(``--no-stats`` skips it: it builds every model). The verdict of a metric (:func:`verdict`):

* "reproduced" when |mean - paper| <= max(t * s * sqrt(1 + 1/n), 0.5), s the sample standard deviation of
  our n runs and t the two-sided 95% Student-t quantile with n - 1 degrees of freedom. The paper reports one
  run per row: if our training is theirs, their number is one more draw from the distribution our seeds
  sample, and this is the 95% prediction interval of one draw (t * sqrt(1 + 1/n) = 4.97 for n = 3, 3.04 for
  n = 5, 2.37 for n = 10, -> 1.96: "2 std" with many seeds). The 0.5-point floor: a few seeds can agree
  by chance far more closely than ReID runs do (+-0.5-1 mAP between seeds is typical), and the paper prints
  one decimal;
* otherwise "gap +x.x" (ours - paper, points);
* "n/a (n=1), gap +x.x" with one run (no spread to judge by), "no paper value" where the paper has none.

The table is printed and written as ``<table>.md`` and ``<table>.csv`` (one row per table row, the per-seed
values included) into ``--out-dir`` (default ``output/reproduce``, with ``--base-config``
``<its OUTPUT_DIR>/reproduce``); Figures 5 and 6 are also drawn as ``<table>.png`` there (mean +- std).
docs/REPRODUCE.md has a worked example.
"""
import argparse
import csv
import json
import logging
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from collections import namedtuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import ConfigError, load_cfg  # noqa: E402
from configs.paper_tables import TABLE1, TABLES, Row  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.dotted import get_dotted  # noqa: E402
from utils.errors import FusionReIDError, UsageError, cli_entry  # noqa: E402
from utils.output_files import RESULTS_FILE  # noqa: E402

logger = logging.getLogger(__name__)

# Dataset name (DATASETS.NAMES) -> its folder under configs/ and output/, and its number of cameras.
DATASET_DIRS = {"market1501": "Market", "dukemtmcreid": "DukeMTMC", "msmt17": "MSMT17"}
DATASET_CAMS = {"market1501": 6, "dukemtmcreid": 8, "msmt17": 15}
ABLATION_DATASET = "msmt17"
TABLE_KEYS = ("1",) + tuple(sorted(TABLES))
# Keys that differ between experiments without changing the experiment.
RUN_INDEPENDENT_KEYS = ("OUTPUT_DIR",)
# The smallest tolerance of a "reproduced" verdict, in points (see the module's docstring).
NOISE_FLOOR = 0.5
# Two-sided 95% quantiles of Student's t with 1..30 degrees of freedom; beyond, a Cornish-Fisher expansion.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

# One run of a table: its row (paper numbers), the dataset the paper reports it on, the YAML it is trained from,
# and with --base-config the row's overrides (after the YAML, before the user's) and its folder under the
# base's OUTPUT_DIR (``layout``). Rows of the YAMLs themselves have neither.
Run = namedtuple("Run", "table row dataset config overrides layout", defaults=((), None))


# ----------------------------------------------------------------------------- table -> runs
def slug(name):
    """File name of a row: lower case, every run of other characters than letters/digits -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def table1_rows(datasets=tuple(DATASET_DIRS)):
    """Table I as ``(Row, dataset)`` pairs: per dataset, the four (input size, stride) settings (no paper
    numbers for a dataset the paper does not have)."""
    rows = []
    for dataset in datasets:
        for ((h, w), stride), numbers in TABLE1.items():
            mAP, rank1 = numbers.get(dataset, (None, None))
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


def table_folder(key):
    return key if key.startswith("fig") else f"table{key}"


def config_path(key, row, dataset, root=ROOT):
    """The YAML file of one row: ``configs/<dataset folder>/<table folder>/<slug of the row name>.yml``."""
    return os.path.join(root, "configs", DATASET_DIRS[dataset], table_folder(key), f"{slug(row.name)}.yml")


def dataset_name(cfg):
    """DATASETS.NAMES of a config as one name ('a+b' for several)."""
    return "+".join(cfg.DATASETS.NAMES)


def list_runs(key, root=ROOT, base=None, dataset=None):
    """Every run of table ``key``, in the paper's row order: the rows' YAMLs, or with ``base`` (a config
    file whose dataset is ``dataset``) the base plus each row's overrides, paper numbers only where the paper
    reports the row on ``dataset``."""
    if base is None:
        _, rows = table_rows(key)
        return [Run(key, row, ds, config_path(key, row, ds, root)) for row, ds in rows]
    if key == "1":
        rows = table1_rows([dataset])
    else:
        rows = [(row if dataset == ABLATION_DATASET else row._replace(mAP=None, rank1=None, params=None, flops=None),
                 dataset) for row, _ in table_rows(key)[1]]
    return [Run(key, row, ds, base, tuple(row.overrides), os.path.join(table_folder(key), slug(row.name)))
            for row, ds in rows]


def row_label(run):
    """The name of a run's row in the printed table (Table I's rows name their dataset)."""
    return run.row.name if run.table != "1" else f"{DATASET_DIRS.get(run.dataset, run.dataset)} {run.row.name}"


def select_rows(runs, names):
    """The runs whose row is one of ``names`` (a row's name, its label or either's slug); all when empty."""
    if not names:
        return list(runs)
    wanted = {slug(n) for n in names}
    kept = [r for r in runs if {slug(r.row.name), slug(row_label(r))} & wanted]
    known = {slug(r.row.name) for r in runs} | {slug(row_label(r)) for r in runs}
    unknown = [n for n in names if slug(n) not in known]
    if unknown:
        raise UsageError(f"--rows: no row {', '.join(map(repr, unknown))}; rows: "
                         f"{', '.join(repr(r.row.name) for r in runs)}")
    return kept


def all_config_files(root=ROOT):
    """Every experiment YAML under configs/<dataset folders> (the bases excluded)."""
    files = []
    for folder in DATASET_DIRS.values():
        base = os.path.join(root, "configs", folder)
        for dirpath, _, names in os.walk(base):
            files += [os.path.join(dirpath, n) for n in names if n.endswith(".yml") and dirpath != base]
    return sorted(files)


# ----------------------------------------------------------------------------- run -> config
def resolve(config, opts=()):
    """The frozen config of a run (``ConfigError`` naming the file when it is missing or invalid)."""
    return load_cfg(config, list(opts))


def override(opts, key):
    """The last value of ``key`` among KEY VALUE ``opts``, or None."""
    values = [v for k, v in zip(opts[::2], opts[1::2]) if k == key]
    return values[-1] if values else None


def seed_dir(folder, seed):
    """The folder of one seed's run of the row whose folder is ``folder``."""
    return os.path.join(folder, f"seed_{seed}")


def resolve_run(run, opts=(), seed=None, root=ROOT):
    """The frozen config one run trains with: its YAML, the row's overrides, the user's ``opts``, its
    OUTPUT_DIR (the layout of the module's docstring) and, unless ``seed`` is None, SOLVER.SEED = ``seed``
    with OUTPUT_DIR ``.../seed_<seed>``."""
    cfg = load_cfg(run.config, list(run.overrides) + list(opts), freeze=False)
    user_root = override(list(opts), "OUTPUT_DIR")
    if run.layout is not None:
        cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, run.layout)
    elif user_root is not None:
        layout = os.path.splitext(os.path.relpath(run.config, os.path.join(root, "configs")))[0]
        cfg.OUTPUT_DIR = os.path.join(user_root, layout)
    if seed is not None:
        cfg.SOLVER.SEED = int(seed)
        cfg.OUTPUT_DIR = seed_dir(cfg.OUTPUT_DIR, seed)
    cfg.freeze()
    return cfg


def command_opts(run, opts, cfg, seed=None):
    """The KEY VALUE overrides of a run's command line (they resolve to ``cfg``, see :func:`resolve_run`)."""
    opts = list(opts)
    own_dir = run.layout is not None or seed is not None or override(opts, "OUTPUT_DIR") is not None
    if own_dir:  # the run's folder replaces the user's OUTPUT_DIR (the root it is under)
        opts = [x for k, v in zip(opts[::2], opts[1::2]) if k != "OUTPUT_DIR" for x in (k, v)]
    out = list(run.overrides) + opts
    if seed is not None:
        out += ["SOLVER.SEED", str(seed)]
    if own_dir:
        out += ["OUTPUT_DIR", cfg.OUTPUT_DIR]
    return out


# ----------------------------------------------------------------------------- results
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


def shown(path, root=ROOT):
    """A path as printed: relative to the repository root when inside it."""
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel


class ResultIndex:
    """Finds the results of a run: its own OUTPUT_DIR, else that of any run of the same experiment.

    ``opts``: the KEY VALUE overrides every run gets (part of what an experiment is); ``root``: the
    repository root (configs/ and relative OUTPUT_DIRs are found there); ``seeds``: the seeds runs are trained
    with (each known run is also known at each of them); ``runs``: runs known besides every YAML under configs/
    (those of ``--base-config``).
    """

    def __init__(self, opts=(), root=ROOT, seeds=(), runs=()):
        self.opts, self.root = list(opts), root
        self.seeds = [s for s in seeds if s is not None]
        self.runs = list(runs)
        self._twins = None

    def _index(self):
        if self._twins is None:
            self._twins = {}
            known = self.runs + [Run(None, None, None, path) for path in all_config_files(self.root)]
            for run in known:
                try:
                    cfg = resolve_run(run, self.opts, None, self.root)
                except ConfigError as e:
                    logger.warning("skipping %s when looking for shared runs: %s", run.config, e)
                    continue
                for seed in [None] + self.seeds:
                    seeded = cfg if seed is None else resolve_seed(cfg, seed)
                    folders = self._twins.setdefault(experiment_key(seeded), [])
                    folder = output_dir(seeded, self.root)
                    if folder not in folders:
                        folders.append(folder)
        return self._twins

    def find(self, cfg):
        """``(results dict, output dir it came from)`` or ``(None, None)``."""
        own = output_dir(cfg, self.root)
        for folder in [own] + [d for d in self._index().get(experiment_key(cfg), []) if d != own]:
            results = read_results(folder)
            if results is not None:
                return results, folder
        return None, None


def resolve_seed(cfg, seed):
    """A resolved run's config at another seed (what :func:`resolve_run` gives with ``seed``)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.SEED = int(seed)
    cfg.OUTPUT_DIR = seed_dir(cfg.OUTPUT_DIR, seed)
    cfg.freeze()
    return cfg


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


def train_missing(runs, index, launcher="python", gpus=2, dry_run=False, seeds=(None,)):
    """Train every run (at every seed of ``seeds``; None: the config's own seed and OUTPUT_DIR) that has no
    results, once per experiment, with ``index.opts`` as extra overrides; seed by seed, so that a whole table
    at the first seed comes first. Returns the failed runs; logs ``reused`` for each run that has results."""
    failed, started = [], set()
    for seed in seeds:
        for run in runs:
            cfg = resolve_run(run, index.opts, seed, index.root)
            results, folder = index.find(cfg)
            key = experiment_key(cfg)
            label = row_label(run) + ("" if seed is None else f", seed {seed}")
            if results is not None:
                logger.info("%s: reused (%s)", label, shown(folder, index.root))
                continue
            if key in started:
                logger.info("%s: same experiment as a run above, not trained twice", label)
                continue
            started.add(key)
            cmd = train_command(run.config, launcher, gpus, command_opts(run, index.opts, cfg, seed), index.root)
            print(("would run: " if dry_run else "running: ") + shlex.join(cmd), flush=True)
            if dry_run:
                continue
            rc = subprocess.call(cmd, cwd=index.root)
            if rc != 0:
                logger.error("%s: %s exited with %d", label, shlex.join(cmd), rc)
                failed.append(run)
    return failed


# ----------------------------------------------------------------------------- statistics
def t975(df):
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def verdict(values, paper, floor=NOISE_FLOOR):
    """Our per-seed ``values`` of a metric against the paper's (points): ``{'n', 'mean', 'std', 'gap',
    'tolerance', 'verdict'}`` (None where undefined). See the module's docstring for the rule."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    mean = statistics.fmean(values) if n else None
    std = statistics.stdev(values) if n > 1 else None
    gap = None if mean is None or paper is None else mean - paper
    tolerance = None if std is None else max(t975(n - 1) * std * math.sqrt(1 + 1 / n), floor)
    if paper is None:
        text = "no paper value"
    elif n == 0:
        text = "not run"
    elif n == 1:
        text = f"n/a (n=1), gap {gap:+.1f}"
    elif abs(gap) <= tolerance:
        text = "reproduced"
    else:
        text = f"gap {gap:+.1f}"
    return {"n": n, "mean": mean, "std": std, "gap": gap, "tolerance": tolerance, "verdict": text}


# ----------------------------------------------------------------------------- table
def num_cams(cfg, dataset):
    """Cameras of a run's dataset (the camera embeddings' size, counted in Params)."""
    if dataset in DATASET_CAMS:
        return DATASET_CAMS[dataset]
    if dataset == "synthetic":
        return cfg.DATASETS.SYNTHETIC.NUM_CAMS
    return 1


def measure_stats(cfg, dataset, scope):
    """Our (Params M, FLOPs G) of a run, in the paper's convention (whole model, or one HTM)."""
    from tools.model_stats import measure

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.PRETRAIN_CHOICE = "none"
    stats = measure(cfg, num_cams=num_cams(cfg, dataset))
    if scope == "htm":
        return stats.get("htm_params_m"), stats.get("htm_flops_g")
    return stats["params_m"], stats["flops_g"]


def collect(runs, index, which="latest", stats=True, seeds=(None,)):
    """One dict per run: paper numbers; ours over ``seeds`` (``mAP``/``rank1``: the mean, None where no seed
    has results; ``*_std``, ``*_values`` per seed, ``*_verdict``...); config and results folders."""
    rows = []
    for run in runs:
        per_seed = []
        for seed in seeds:
            cfg = resolve_run(run, index.opts, seed, index.root)
            results, folder = index.find(cfg)
            if results is not None:
                per_seed.append({"seed": cfg.SOLVER.SEED, "folder": shown(folder, index.root),
                                 "mAP": metric(results, which, "mAP"), "rank1": metric(results, which, "rank1")})
        params = flops = None
        if stats:
            params, flops = measure_stats(resolve_run(run, index.opts, seeds[0], index.root), run.dataset,
                                          run.row.scope)
        config = os.path.relpath(run.config, index.root)
        if run.overrides:
            config += " + " + " ".join(run.overrides)
        row = {"table": run.table, "row": row_label(run), "config": config,
               "results": [p["folder"] for p in per_seed], "seeds": [p["seed"] for p in per_seed],
               "paper_mAP": run.row.mAP, "paper_rank1": run.row.rank1,
               "paper_params": run.row.params, "paper_flops": run.row.flops, "params": params, "flops": flops}
        for name in ("mAP", "rank1"):
            values = [(p["seed"], p[name]) for p in per_seed if p[name] is not None]
            v = verdict([x for _, x in values], row[f"paper_{name}"])
            row.update({name: v["mean"], f"{name}_std": v["std"], f"{name}_n": v["n"], f"{name}_gap": v["gap"],
                        f"{name}_tolerance": v["tolerance"], f"{name}_verdict": v["verdict"],
                        f"{name}_values": dict(values)})
        row["n"] = len(per_seed)
        rows.append(row)
    return rows


def _fmt(value, spec=".1f"):
    return "" if value is None else format(value, spec)


def _ours(row, name):
    """'65.1 ± 0.4' (mean ± sample std over the seeds), '65.1' for one run, '' for none."""
    if row[name] is None:
        return ""
    return _fmt(row[name]) + ("" if row[f"{name}_std"] is None else f" ± {row[name + '_std']:.1f}")


VERDICT_NOTE = ("ours: mean ± sample std over the n seeds with results; verdict: 'reproduced' when |mean - paper| "
                f"<= max(t(n-1) * std * sqrt(1 + 1/n), {NOISE_FLOOR}) (the 95% prediction interval of one run), "
                "else the gap ours - paper (points)")


def markdown_table(title, rows):
    """The paper's numbers beside ours (mean ± std over the seeds, and a verdict), as a markdown table."""
    lines = [f"## {title}", "",
             "| row | n | paper mAP | ours mAP | mAP verdict | paper R1 | ours R1 | R1 verdict | paper Params (M) | "
             "ours Params (M) | paper FLOPs (G) | ours FLOPs (G) | config |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['n']} | {_fmt(r['paper_mAP'])} | {_ours(r, 'mAP')} | {r['mAP_verdict']} | "
                     f"{_fmt(r['paper_rank1'])} | {_ours(r, 'rank1')} | {r['rank1_verdict']} | "
                     f"{_fmt(r['paper_params'])} | {_fmt(r['params'], '.2f')} | "
                     f"{_fmt(r['paper_flops'])} | {_fmt(r['flops'], '.2f')} | {r['config']} |")
    return "\n".join(lines + ["", VERDICT_NOTE]) + "\n"


CSV_FIELDS = ("table", "row", "n", "seeds", "paper_mAP", "mAP_mean", "mAP_std", "mAP_tolerance", "mAP_gap",
              "mAP_verdict", "mAP_per_seed", "paper_rank1", "rank1_mean", "rank1_std", "rank1_tolerance", "rank1_gap",
              "rank1_verdict", "rank1_per_seed", "paper_params", "params", "paper_flops", "flops", "config", "results")


def csv_records(rows):
    """The rows as CSV records (:data:`CSV_FIELDS`): numbers unrounded, blank where None; per seed as
    ``seed:value`` joined by ';'."""
    def cell(value):
        return "" if value is None else value

    records = []
    for r in rows:
        record = {"table": r["table"], "row": r["row"], "n": r["n"], "seeds": ";".join(map(str, r["seeds"])),
                  "config": r["config"], "results": ";".join(r["results"])}
        for name in ("mAP", "rank1"):
            record.update({f"paper_{name}": cell(r[f"paper_{name}"]), f"{name}_mean": cell(r[name]),
                           f"{name}_std": cell(r[f"{name}_std"]), f"{name}_tolerance": cell(r[f"{name}_tolerance"]),
                           f"{name}_gap": cell(r[f"{name}_gap"]), f"{name}_verdict": r[f"{name}_verdict"],
                           f"{name}_per_seed": ";".join(f"{s}:{v!r}" for s, v in r[f"{name}_values"].items())})
        for name in ("params", "flops"):
            record.update({f"paper_{name}": cell(r[f"paper_{name}"]), name: cell(r[name])})
        records.append(record)
    return records


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_records(rows))
    return path


FIGURE_AXES = {"fig5": ("MODEL.FUSION.HTM_LAYERS", "number of HTMs L"),
               "fig6": ("MODEL.FUSION.DIM", "fused dimension D")}


def plot_figure(key, runs, rows, path, opts=(), root=ROOT):
    """Figure 5 or 6 as a PNG: mAP and Rank-1 against the swept key, the paper's point(s) and ours (mean ±
    std over the seeds, each seed a faint dot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg_key, label = FIGURE_AXES[key]
    xs = []
    for run in runs:
        xs.append(get_dotted(resolve_run(run, opts, None, root), cfg_key))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, name, title in ((axes[0], "mAP", "mAP (%)"), (axes[1], "rank1", "Rank-1 (%)")):
        paper = [(x, r[f"paper_{name}"]) for x, r in zip(xs, rows) if r[f"paper_{name}"] is not None]
        ours = [(x, r[name], r.get(f"{name}_std") or 0.0) for x, r in zip(xs, rows) if r[name] is not None]
        seeds = [(x, v) for x, r in zip(xs, rows) for v in (r.get(f"{name}_values") or {}).values()]
        if paper:
            ax.plot(*zip(*paper), "s", color="tab:gray", label="paper")
        if ours:
            x, mean, std = zip(*ours)
            ax.errorbar(x, mean, yerr=std, fmt="o-", color="tab:blue", capsize=3,
                        label="ours" + (" (mean ± std)" if any(std) else ""))
        if len(seeds) > len(ours):
            ax.plot(*zip(*seeds), ".", color="tab:blue", alpha=0.3)
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
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows (names or file names)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, metavar="N",
                       help="N seeds per row: SOLVER.SEED S..S+N-1 (S: the config's seed), one folder each")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="these seeds per row")
    parser.add_argument("--base-config", metavar="FILE",
                        help="run each row as FILE + the row's overrides instead of the row's YAML")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and print the commands only")
    parser.add_argument("--no-train", action="store_true", help="print the table from existing results only")
    parser.add_argument("--no-stats", action="store_true", help="skip measuring Params/FLOPs")
    parser.add_argument("--launcher", choices=("python", "torchrun"), default="python")
    parser.add_argument("--gpus", type=int, default=2, help="processes per run with --launcher torchrun")
    parser.add_argument("--metrics", choices=("latest", "best"), default="latest",
                        help="which entry of results.json to report")
    parser.add_argument("--out-dir", "--plot-dir", dest="out_dir",
                        help="folder of <table>.md, <table>.csv and the fig5/fig6 PNG (default output/reproduce; "
                             "with --base-config <its OUTPUT_DIR>/reproduce)")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    return args


def plan(args, root=ROOT):
    """``(title, runs, seeds, known runs, out dir)`` of the command line."""
    title, _ = table_rows(args.table)
    known = []
    if args.base_config:
        base = args.base_config if os.path.isabs(args.base_config) else os.path.join(root, args.base_config)
        base_cfg = resolve(base, args.opts)  # a missing file or bad key fails here, naming it
        dataset = dataset_name(base_cfg)
        runs = list_runs(args.table, root, base, dataset)
        known = [run for key in TABLE_KEYS for run in list_runs(key, root, base, dataset)]
        title += f" -- each row on {os.path.relpath(base, root)} ({dataset})"
        out_dir = os.path.join(output_dir(base_cfg, root), "reproduce")
        start = base_cfg.SOLVER.SEED
    else:
        runs = list_runs(args.table, root)
        missing = [r.config for r in runs if not os.path.isfile(r.config)]
        if missing:
            raise ConfigError(f"config files missing for table {args.table}: {', '.join(missing)}")
        out_dir = os.path.join(root, "output", "reproduce")
        start = load_cfg("", args.opts).SOLVER.SEED
    runs = select_rows(runs, args.rows)
    seeds = [None]
    if args.seeds is not None:
        seeds = [start + i for i in range(args.seeds)]
    elif args.seed_list:
        seeds = list(dict.fromkeys(args.seed_list))
    return title, runs, seeds, known, args.out_dir or out_dir


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_cfg("", args.opts)  # a bad override fails here, once, naming the key
    title, runs, seeds, known, out_dir = plan(args)
    index = ResultIndex(args.opts, seeds=seeds, runs=known)
    print(f"# {title}: {len(runs)} rows" + ("" if seeds == [None] else f" x {len(seeds)} seeds "
                                             f"({', '.join(map(str, seeds))})"))
    for run in runs:
        print(f"- {row_label(run)}: {os.path.relpath(run.config, ROOT)}"
              + (" + " + " ".join(run.overrides) if run.overrides else ""))
    failed = []
    if not args.no_train:
        failed = train_missing(runs, index, args.launcher, args.gpus, args.dry_run, seeds)
    rows = collect(runs, index, args.metrics, stats=not (args.no_stats or args.dry_run), seeds=seeds)
    text = markdown_table(title, rows)
    print()
    print(text)
    if not args.dry_run:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{args.table}.md"), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"markdown: {os.path.join(out_dir, args.table + '.md')}")
        print(f"csv: {write_csv(rows, os.path.join(out_dir, args.table + '.csv'))}")
        if args.table in FIGURE_AXES:
            path = plot_figure(args.table, runs, rows, os.path.join(out_dir, f"{args.table}.png"), args.opts)
            print(f"plot: {path}")
    if failed:
        raise FusionReIDError(f"{len(failed)} run(s) failed: {', '.join(row_label(r) for r in failed)}")
    return rows


if __name__ == "__main__":
    main()
