#!/usr/bin/env python
"""Write a registered dataset as the CSV dataset (train.csv, query.csv, gallery.csv: path,pid,camid).

    python tools/make_csv.py [--config_file F] [--dataset NAME] [--out DIR] [KEY VALUE ...]
    # then train on the copy:
    python train_net.py --config_file F DATASETS.NAMES csv DATASETS.CSV_DIR DIR

The dataset (default: the config's DATASETS.NAMES, which must name one) is read as training reads it,
from DATASETS.ROOT_DIR (the synthetic one is generated there first if needed). The CSV files point at the
existing images with paths relative to DIR (default: DATASETS.ROOT_DIR/<name>_csv); no image is copied.
Train pids are written relabelled 0..N-1, query and gallery pids as the dataset gives them, camids
0-based; junk images the dataset skips are not written.
"""
import logging
import os
import sys
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import load_cfg  # noqa: E402
from datasets import build_dataset, dataset_names  # noqa: E402
from datasets.base import SPLITS  # noqa: E402
from datasets.csv_dataset import csv_file_name, write_csv_split  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402

logger = logging.getLogger(__name__)


def configured_name(names: Sequence[str]) -> str:
    """The one dataset name of ``DATASETS.NAMES``."""
    if len(names) != 1:
        raise UsageError(f"DATASETS.NAMES = {list(names)} names {len(names)} datasets: choose one with --dataset NAME")
    return names[0]


@cli_entry
def main(argv=None) -> str:
    """Write the CSV files; returns the folder they went to."""
    parser = ConfigArgumentParser(__doc__.splitlines()[0], config_help="YAML config (default: the repository defaults)")
    parser.add_argument("--dataset", metavar="NAME",
                        help=f"registered dataset to write ({', '.join(dataset_names())}; default: DATASETS.NAMES)")
    parser.add_argument("--out", metavar="DIR", help="folder of the CSV files (default: DATASETS.ROOT_DIR/<name>_csv)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = load_cfg(args.config_file, args.opts)
    name = args.dataset or configured_name(cfg.DATASETS.NAMES)
    if name == "csv":
        logger.info("writing the CSV dataset %s as a CSV dataset (a copy of its lists)", cfg.DATASETS.CSV_DIR)
    dataset = build_dataset(name, cfg.DATASETS.ROOT_DIR, cfg)
    out = args.out or os.path.join(cfg.DATASETS.ROOT_DIR, f"{name}_csv")
    for split in SPLITS:
        records = getattr(dataset, split)
        write_csv_split(records, os.path.join(out, csv_file_name(split)))
        print(f"  {csv_file_name(split):<12} {len(records):>6} images")
    print(f"written: {os.path.abspath(out)}\n"
          f"train on it with: DATASETS.NAMES csv DATASETS.CSV_DIR {out}")
    return out


if __name__ == "__main__":
    main()
