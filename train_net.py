#!/usr/bin/env python
"""Train (and evaluate) FusionReID.

    python train_net.py --config_file configs/Synthetic/quickstart.yml [--resume] [KEY VALUE ...]
    torchrun --nproc_per_node=2 train_net.py --config_file FILE ...     # DDP, global batch unchanged

Writes to OUTPUT_DIR: train.log (appended), config.yaml, TensorBoard events, checkpoint_epoch{N}.pth +
last_checkpoint, model_best.pth and results.json; the checkpoints and results.json also record the run's
provenance (command line, git commit, library versions, device, AMP, world size, wall times:
utils/provenance.py). ``--resume`` continues from OUTPUT_DIR's last checkpoint (a fresh start when there
is none; when the one ``last_checkpoint`` names is missing or unreadable, the newest loadable
checkpoint, with a warning).
"""
import logging

import utils

utils.prefer_passive_omp()  # before torch is imported

from processor import Builders, build_trainer  # noqa: E402
from processor.cli import RunContext  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402
from utils.provenance import command_line  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = ConfigArgumentParser("Train and evaluate FusionReID.")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR (see its last_checkpoint file)")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None, builders=Builders(), callbacks=()):
    """Train as the command line ``argv`` says; ``builders`` / ``callbacks``: see ``processor.build_trainer``
    (for code that runs this entry point with another piece, e.g. an extra callback)."""
    args = parse_args(argv)
    with RunContext(args.config_file, args.opts, "train.log") as ctx:
        # Nothing in OUTPUT_DIR but the appended log changes until the run has set itself up (data, model, resume):
        # config.yaml and the TensorBoard file are written after, so a refused run leaves them as they were.
        trainer = build_trainer(ctx.cfg, ctx.device, builders, callbacks)
        trainer.set_command(command_line(argv, __file__))
        if args.resume and trainer.resume_last() is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", ctx.cfg.OUTPUT_DIR)
        ctx.save_config()
        return trainer.train()


if __name__ == "__main__":
    main()
