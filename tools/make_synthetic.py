"""Generate the synthetic person re-identification dataset (Market-1501 format) under DATASETS.ROOT_DIR.

    python tools/make_synthetic.py [--config_file F] [--force] [KEY VALUE ...]

The dataset is also generated automatically on first use; this tool does it ahead of time and prints
where it went, its statistics and how long it took. It is regenerated only when the DATASETS.SYNTHETIC.*
settings differ from those in its manifest (or with --force).
"""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import load_cfg  # noqa: E402
from datasets.synthetic import SYNTHETIC_FOLDER  # noqa: E402
from datasets.synthetic_generator import SyntheticParams, ensure_generated  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402


@cli_entry
def main(argv=None):
    parser = ConfigArgumentParser(__doc__.splitlines()[0], config_help="YAML config (default: the repository defaults)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the files are up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = load_cfg(args.config_file, args.opts)
    params = SyntheticParams.from_cfg(cfg)
    target = os.path.join(cfg.DATASETS.ROOT_DIR, SYNTHETIC_FOLDER)
    start = time.perf_counter()
    written = ensure_generated(target, params, force=args.force)
    seconds = time.perf_counter() - start
    stats = params.expected_statistics()
    print(f"{'generated' if written else 'up to date'}: {os.path.abspath(target)}"
          + (f" in {seconds:.1f} s" if written else ""))
    for split, s in stats.items():
        print(f"  {split:<8} {s['ids']:>5} ids {s['images']:>6} images {s['cameras']:>3} cameras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
