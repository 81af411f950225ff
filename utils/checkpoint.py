"""Atomic checkpoint files, the ``last_checkpoint`` pointer, and loading weights with clear errors.

Layout of ``OUTPUT_DIR``:
    checkpoint_epoch{N}.pth  full training state after epoch N (see :func:`training_state`)
    last_checkpoint          text file naming the newest checkpoint file (relative to OUTPUT_DIR)
    model_best.pth           model weights of the best evaluation (mAP)

Every file is written to a temporary file in the same folder, flushed, fsync'ed and moved into
place with ``os.replace``, so a crash or a failing save never leaves a truncated file behind and
never touches the previous checkpoint. Everything stored loads with ``torch.load(weights_only=True)``:
tensors, plain numbers/strings, and the config as a YAML string.
"""
import logging
import os
import re
import tempfile

import torch

from .errors import FusionReIDError

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
BEST_CHECKPOINT = "model_best.pth"
_CKPT_RE = re.compile(r"^checkpoint_epoch(\d+)\.pth$")


class CheckpointError(FusionReIDError, RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


# ----------------------------------------------------------------------------- atomic writes
def _fsync_dir(folder):
    """Persist a rename in ``folder`` (best effort: not every OS/filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then move it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)``, atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------- training checkpoints
def checkpoint_name(epoch):
    return f"checkpoint_epoch{int(epoch)}.pth"


def save_checkpoint(output_dir, epoch, state):
    """Write ``state`` as ``checkpoint_epoch{epoch}.pth``, then point ``last_checkpoint`` at it.

    The pointer is updated only after the checkpoint is completely on disk.
    Returns the checkpoint's path.
    """
    path = os.path.join(output_dir, checkpoint_name(epoch))
    atomic_torch_save(state, path)
    atomic_write_text(os.path.join(output_dir, LAST_CHECKPOINT), os.path.basename(path) + "\n")
    return path


def find_last_checkpoint(output_dir):
    """The path of the newest checkpoint of ``output_dir``, or ``None``.

    Reads ``last_checkpoint``; when it is missing or names a file that does not exist, falls back to
    the highest-numbered ``checkpoint_epoch{N}.pth``.
    """
    pointer = os.path.join(output_dir, LAST_CHECKPOINT)
    if os.path.isfile(pointer):
        with open(pointer, "r", encoding="utf-8") as f:
            name = f.read().strip()
        path = name if os.path.isabs(name) else os.path.join(output_dir, name)
        if name and os.path.isfile(path):
            return path
        logger.warning("%s names %r, which does not exist; looking for checkpoint files", pointer, name)
    if not os.path.isdir(output_dir):
        return None
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir) if (m := _CKPT_RE.match(n))]
    return os.path.join(output_dir, max(found)[1]) if found else None


def load_checkpoint(path, key="checkpoint"):
    """``torch.load(path, weights_only=True)`` on CPU, with one-line errors.

    Args:
        key: how the path was given (e.g. ``'TEST.WEIGHT'``), named in the error messages.
    Raises:
        CheckpointError: the file is missing or is not a loadable checkpoint.
    """
    if not path:
        raise CheckpointError(f"{key} is empty: give the path of a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{key} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/zip error means the same thing here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{key}: {path} is not a loadable checkpoint ({first})") from None
