"""What ``train_net.py`` and ``test_net.py`` share: argument parsing and process setup (device, process
group, logging, seeding, the saved config). User errors become one-line messages through
:mod:`utils.errors` (``cli_entry`` on ``main``; :class:`RunContext` first logs their traceback)."""
import argparse
import logging
import os
import sys

import torch

from configs import load_cfg
from utils.checkpoint import atomic_write_text
from utils.distributed import cleanup_distributed, env_local_rank, get_rank, get_world_size, init_distributed
from utils.errors import exit_on_user_error, is_user_error, script_name, user_exit
from utils.logger import close_logger, setup_logger
from utils.misc import resolve_device, set_seed

logger = logging.getLogger(__name__)


def base_parser(description):
    """``--config_file FILE`` plus ``KEY VALUE ...`` overrides (argparse REMAINDER)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config_file", default="", metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_EPOCHS 10 OUTPUT_DIR ./output/run1")
    return parser


def parse_cli(parser, argv=None):
    """``parser.parse_args`` that also accepts options after the KEY VALUE pairs.

    argparse's REMAINDER puts everything after the first KEY into ``opts``, including a late
    ``--resume``; such options are parsed again and taken out of ``opts``.
    """
    args = parser.parse_args(argv)
    opts = list(args.opts)
    late = next((i for i, tok in enumerate(opts) if tok.startswith("--")), None)
    if late is None:
        return args
    tail = parse_cli(parser, opts[late:])
    for name, value in vars(tail).items():
        if name != "opts" and value != parser.get_default(name):
            setattr(args, name, value)
    args.opts = opts[:late] + list(tail.opts)
    return args


class RunContext:
    """The per-process setup of one run: config, device, process group, logger, output folder.

    Use as ``with RunContext(args, 'train.log') as ctx: ...``. Leaving it destroys the process group
    and closes the log file; user errors (:data:`utils.errors.USER_ERRORS`: config, dataset, weights,
    checkpoint, diverging loss, missing file) become ``SystemExit('<script>: error: <message>')``
    (exit code 1, :func:`utils.errors.user_exit`) with the traceback kept in the log.
    """

    def __init__(self, config_file, opts, log_name, overrides=None):
        self.script = script_name()
        self.config_file, self.opts, self.log_name = config_file, opts, log_name
        self.overrides = overrides or []
        self.cfg = self.device = None

    def __enter__(self):
        with exit_on_user_error(self.script):
            self.cfg = load_cfg(self.config_file, list(self.opts or []) + list(self.overrides))
            self.device = resolve_device(self.cfg.MODEL.DEVICE, env_local_rank())
        init_distributed(self.device)
        setup_logger(self.cfg.OUTPUT_DIR, get_rank(), filename=self.log_name)
        logger.info("%s %s | torch %s | device %s | %d process(es)", self.script, " ".join(sys.argv[1:]),
                    torch.__version__, self.device, get_world_size())
        logger.debug("config:\n%s", self.cfg.dump())
        set_seed(self.cfg.SOLVER.SEED)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return self

    def save_config(self, name="config.yaml"):
        """The resolved config as ``OUTPUT_DIR/name`` (rank 0)."""
        if get_rank() == 0:
            path = os.path.join(self.cfg.OUTPUT_DIR, name)
            atomic_write_text(path, self.cfg.dump())
            logger.info("config saved to %s", path)

    def __exit__(self, exc_type, exc, tb):
        cleanup_distributed()
        if exc is not None and is_user_error(exc):
            stop = user_exit(exc, self.script)  # logs the traceback while the log file is still open
            close_logger()
            raise stop from None
        close_logger()
        return False
