"""Logging to the console and to ``OUTPUT_DIR/<name>.log``, rank-aware.

Every module logs through ``logging.getLogger(__name__)`` (``datasets.base``, ``processor.trainer``,
``__main__`` for a script run directly); :func:`setup_logger` puts the handlers on the root logger,
so all of them, and the libraries' loggers, end up in the same console and file.

Only the main process logs at INFO to the console and writes the log file; the other ranks print
warnings and errors only. The file is opened in append mode, so a resumed run keeps the history of
the first one. Console lines go through ``tqdm.write`` so they do not break a running progress bar.
"""
import logging
import os
import sys

from tqdm import tqdm

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"
# Marks the handlers added here, so that a second setup (tests, notebooks) replaces them.
_OWNED = "_fusionreid_handler"


class TqdmHandler(logging.StreamHandler):
    """A console handler that writes through ``tqdm.write`` (keeps progress bars intact)."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logger(output_dir=None, rank=0, filename="train.log", level=logging.INFO):
    """Configure the root logger's handlers and return the root logger.

    Args:
        output_dir: folder of the log file (created if needed); ``None`` logs to the console only.
        rank: process rank; ranks other than 0 log warnings to the console and write no file.
        filename: name of the log file inside ``output_dir``; appended to, never truncated.
        level: console level of the main process.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _OWNED, False)]:
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.DEBUG)
    fmt = logging.Formatter(_FORMAT, datefmt=_DATEFMT)

    console = TqdmHandler(sys.stdout)
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.setFormatter(fmt if rank == 0 else logging.Formatter(f"[rank {rank}] " + _FORMAT, _DATEFMT))
    setattr(console, _OWNED, True)
    root.addHandler(console)

    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        # DEBUG in the file: it also keeps the tracebacks behind one-line CLI error messages.
        fh = logging.FileHandler(os.path.join(output_dir, filename), mode="a", encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        setattr(fh, _OWNED, True)
        root.addHandler(fh)
    # Third-party libraries that are chatty at DEBUG.
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return root


def close_logger():
    """Remove and close the handlers added by :func:`setup_logger` (releases the log file)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _OWNED, False)]:
        root.removeHandler(h)
        h.close()
