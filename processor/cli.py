"""What ``train_net.py`` and ``test_net.py`` share: the process setup of a run (device, process group,
logging, seeding, the saved config). Their command line is :class:`utils.cli.ConfigArgumentParser`, as for
every entry point. User errors become one-line messages through :mod:`utils.errors` (``cli_entry`` on
``main``; :class:`RunContext` first logs their traceback)."""
import logging
import os
import sys
from typing import Optional, Sequence

import torch

from configs import load_cfg
from utils.checkpoint import atomic_write_text
from utils.distributed import cleanup_distributed, env_local_rank, get_rank, get_world_size, init_distributed
from utils.errors import exit_on_user_error, is_user_error, script_name, user_exit
from utils.logger import close_logger, setup_logger
from utils.misc import resolve_device, set_seed

logger = logging.getLogger(__name__)


class RunContext:
    """The per-process setup of one run: config, device, process group, logger, output folder.

    Use as ``with RunContext(args.config_file, args.opts, 'train.log') as ctx: ...``. Leaving it destroys
    the process group and closes the log file; user errors (:data:`utils.errors.USER_ERRORS`: config, dataset, weights,
    checkpoint, diverging loss, missing file) become ``SystemExit('<script>: error: <message>')``
    (exit code 1, :func:`utils.errors.user_exit`) with the traceback kept in the log.
    """

    def __init__(self, config_file: str, opts: Optional[Sequence[str]], log_name: str,
                 overrides: Optional[Sequence[str]] = None):
        self.script = script_name()
        self.config_file, self.opts, self.log_name = config_file, opts, log_name
        self.overrides = overrides or []
        self.cfg = self.device = None

    def __enter__(self) -> "RunContext":
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

    def save_config(self, name: str = "config.yaml") -> None:
        """The resolved config as ``OUTPUT_DIR/name`` (rank 0)."""
        if get_rank() == 0:
            path = os.path.join(self.cfg.OUTPUT_DIR, name)
            atomic_write_text(path, self.cfg.dump())
            logger.info("config saved to %s", path)

    def __exit__(self, exc_type, exc, tb) -> bool:
        cleanup_distributed()
        if exc is not None and is_user_error(exc):
            stop = user_exit(exc, self.script)  # logs the traceback while the log file is still open
            close_logger()
            raise stop from None
        close_logger()
        return False
