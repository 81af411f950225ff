#!/usr/bin/env python
"""Parameters and FLOPs of FusionReID in the paper's convention, with no data needed.

    python tools/model_stats.py [--config_file F] [KEY VALUE ...]     # one model
    python tools/model_stats.py --table 2                            # 2 3 4 5 6 fig5 fig6: paper beside ours

One model: a table of the parts, then a last line with a JSON object: ``params_m`` (all layers except
the ID classifiers, without the position/class/camera embeddings, millions), ``flops_g`` (GMACs of
convolution and linear layers at batch 1 and INPUT.SIZE_TEST; attention products left out) and
``flops_g_total`` (every MAC, attention products included).
"""
import argparse
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import load_cfg  # noqa: E402
from configs.paper_tables import TABLES  # noqa: E402
from model import build_model  # noqa: E402
from model.complexity import count_macs, count_params, subtree_macs  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402

NUM_CAMS = 15  # MSMT17, the dataset of the ablation tables (only the camera embedding depends on it)
NUM_CLASSES = 1041


def measure(cfg, num_cams=NUM_CAMS):
    """Stats of the model ``cfg`` describes: whole model and its first HTM."""
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, num_cams)
    h, w = cfg.INPUT.SIZE_TEST
    macs = count_macs(model, torch.randn(1, 3, h, w), torch.zeros(1, dtype=torch.long))
    layers, embeds = count_params(model)
    stats = {
        "params_m": layers / 1e6,
        "params_m_embeddings": embeds / 1e6,
        "flops_g": macs["layers"] / 1e9,
        "flops_g_total": macs["total"] / 1e9,
        "parts": {},
    }
    for name, child in model.named_children():
        p, e = count_params(child)
        stats["parts"][name] = ((p + e) / 1e6, subtree_macs(macs["by_module"], name) / 1e9)
    if len(model.htm):
        stats["htm_params_m"] = count_params(model.htm[0])[0] / 1e6
        stats["htm_flops_g"] = subtree_macs(macs["by_module"], "htm.0") / 1e9
    return stats


def _cfg(config_file, opts):
    return load_cfg(config_file, ["MODEL.PRETRAIN_CHOICE", "none"] + list(opts))


def _fmt(v, spec=".1f"):
    return "" if v is None else format(v, spec)


def print_table(key, config_file, opts):
    title, rows = TABLES[key]
    print(f"## {title}\n")
    print("| row | paper mAP | paper R1 | paper Params (M) | ours Params (M) | paper FLOPs (G) | ours FLOPs (G) |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for row in rows:
        stats = measure(_cfg(config_file, list(opts) + row.overrides))
        params, flops = ((stats["htm_params_m"], stats["htm_flops_g"]) if row.scope == "htm"
                         else (stats["params_m"], stats["flops_g"]))
        print(f"| {row.name} | {_fmt(row.mAP)} | {_fmt(row.rank1)} | {_fmt(row.params)} | {params:.2f} | "
              f"{_fmt(row.flops)} | {flops:.2f} |")
        results.append({"row": row.name, "params_m": round(params, 3), "flops_g": round(flops, 3),
                        "paper_params_m": row.params, "paper_flops_g": row.flops})
    print()
    print(json.dumps({"table": key, "rows": results}))


def print_model(config_file, opts):
    cfg = _cfg(config_file, opts)
    stats = measure(cfg)
    h, w = cfg.INPUT.SIZE_TEST
    print(f"FusionReID: CNN {cfg.MODEL.CNN.NAME or '-'}, Transformer {cfg.MODEL.TRANSFORMER.NAME or '-'}, "
          f"D={cfg.MODEL.FUSION.DIM}, L={cfg.MODEL.FUSION.HTM_LAYERS}, input {h}x{w}\n")
    print("| part | Params (M) | FLOPs (GMACs) |\n|---|---|---|")
    for name, (p, f) in stats["parts"].items():
        print(f"| {name} | {p:.2f} | {f:.2f} |")
    print()
    out = {k: round(v, 4) for k, v in stats.items() if k != "parts"}
    print(json.dumps(out))


@cli_entry
def main(argv=None):
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config (defaults: the paper's model)")
    parser.add_argument("--table", choices=sorted(TABLES), help="print a paper table beside our numbers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.table:
        print_table(args.table, args.config_file, args.opts)
    else:
        print_model(args.config_file, args.opts)


if __name__ == "__main__":
    main()
