"""Atomic checkpoint files, the ``last_checkpoint`` pointer, and loading weights with clear errors.

Layout of ``OUTPUT_DIR``:
    checkpoint_epoch{N}.pth  full training state after epoch N (see :func:`training_state`)
    last_checkpoint          text file naming the newest checkpoint file (relative to OUTPUT_DIR)
    model_best.pth           model weights of the best evaluation (mAP)
(names in :mod:`utils.output_files`).

Every file is written to a temporary file in the same folder, flushed, fsync'ed and moved into
place with ``os.replace``, so a crash or a failing save never leaves a truncated file behind and
never touches the previous checkpoint. Everything stored loads with ``torch.load(weights_only=True)``:
tensors, plain numbers/strings, and the config as a YAML string.

A process killed during a write (SIGKILL, power loss) leaves only a hidden temporary file
(``.checkpoint_epoch{N}.pth.<random>.tmp``): the next :func:`save_checkpoint` deletes such leftovers.
``--resume`` uses :func:`load_last_checkpoint`: the checkpoint named by ``last_checkpoint``, or, when
that one is missing or unreadable, the newest (highest epoch) loadable ``checkpoint_epoch{N}.pth``,
with a warning.
"""
import logging
import os
import re
import tempfile

import torch

from .errors import FusionReIDError
from .output_files import LAST_CHECKPOINT

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^checkpoint_epoch(\d+)\.pth$")
# What a training checkpoint must hold to be resumed from (processor.Trainer.state_dict writes more).
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch")
# Temporary files of atomic_write: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
_TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


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


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then move it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=_TMP_SUFFIX, dir=folder)
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
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temp_files(folder):
    """Delete the temporary files that killed atomic writes left in ``folder``; returns their names.

    Call it only while no atomic write into ``folder`` is in progress (training writes from one
    process, one file at a time).
    """
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        if _TMP_RE.match(name) and os.path.isfile(os.path.join(folder, name)):
            try:
                os.remove(os.path.join(folder, name))
            except OSError as e:
                logger.warning("could not delete the leftover temporary file %s: %s", os.path.join(folder, name), e)
                continue
            removed.append(name)
    if removed:
        logger.warning("deleted %d leftover temporary file(s) of interrupted writes in %s: %s", len(removed),
                       folder, ", ".join(removed))
    return removed


# ----------------------------------------------------------------------------- training checkpoints
def checkpoint_name(epoch):
    return f"checkpoint_epoch{int(epoch)}.pth"


def save_checkpoint(output_dir, epoch, state):
    """Write ``state`` as ``checkpoint_epoch{epoch}.pth``, then point ``last_checkpoint`` at it.

    Leftover temporary files of earlier, interrupted writes are deleted first (they can be as large
    as a checkpoint). The pointer is updated only after the checkpoint is completely on disk.
    Returns the checkpoint's path.
    """
    remove_stale_temp_files(output_dir)
    path = os.path.join(output_dir, checkpoint_name(epoch))
    atomic_torch_save(state, path)
    atomic_write_text(os.path.join(output_dir, LAST_CHECKPOINT), os.path.basename(path) + "\n")
    return path


def _read_pointer(output_dir):
    """The path ``last_checkpoint`` names (``''`` if it is empty), or ``None`` without a pointer file."""
    pointer = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, "r", encoding="utf-8", errors="replace") as f:
        name = f.read().strip()
    if not name:
        return ""
    return name if os.path.isabs(name) else os.path.join(output_dir, name)


def _numbered_checkpoints(output_dir):
    """``checkpoint_epoch{N}.pth`` paths of ``output_dir``, highest N first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir) if (m := _CKPT_RE.match(n))]
    return [os.path.join(output_dir, n) for _, n in sorted(found, reverse=True)]


def find_last_checkpoint(output_dir):
    """The path of the newest checkpoint of ``output_dir``, or ``None`` (existence only, nothing is read).

    Reads ``last_checkpoint``; when it is missing or names a file that does not exist, falls back to
    the highest-numbered ``checkpoint_epoch{N}.pth``.
    """
    named = _read_pointer(output_dir)
    if named:
        if os.path.isfile(named):
            return named
        logger.warning("%s names %r, which does not exist; looking for checkpoint files",
                       os.path.join(output_dir, LAST_CHECKPOINT), named)
    found = _numbered_checkpoints(output_dir)
    return found[0] if found else None


def load_last_checkpoint(output_dir, required=TRAINING_KEYS):
    """The newest usable training checkpoint of ``output_dir`` as ``(path, state)``, or ``None``.

    Tries the file ``last_checkpoint`` names, then every ``checkpoint_epoch{N}.pth`` from the highest
    N down; a file that is missing, unreadable (e.g. truncated) or lacks one of ``required`` is
    skipped with a warning. ``None`` means there is no checkpoint file at all (leftover temporary
    files of a killed write do not count).

    Raises:
        CheckpointError: checkpoint files exist but none of them can be used.
    """
    named = _read_pointer(output_dir)
    candidates = _numbered_checkpoints(output_dir)
    if named:
        candidates = [named] + [p for p in candidates if os.path.abspath(p) != os.path.abspath(named)]
    elif named == "":
        logger.warning("%s is empty; looking for checkpoint files", os.path.join(output_dir, LAST_CHECKPOINT))
    if not candidates:
        return None
    problems = []
    for path in candidates:
        try:
            state = load_checkpoint(path, key="resume checkpoint")
            if not isinstance(state, dict):
                raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training checkpoint")
            missing = [k for k in required if k not in state]
            if missing:
                raise CheckpointError(f"{path} is not a training checkpoint (no {', '.join(missing)})")
        except CheckpointError as e:
            why = " (named by last_checkpoint)" if path == named else ""
            logger.warning("cannot resume from %s%s: %s", path, why, e)
            problems.append(os.path.basename(path))
            continue
        if problems:
            logger.warning("resuming from %s, the newest loadable checkpoint in %s (skipped: %s)", path,
                           output_dir, ", ".join(problems))
        return path, state
    raise CheckpointError(f"no usable checkpoint in {output_dir} (tried {', '.join(problems)}; see the warnings "
                          "above); delete or move them to start from scratch")


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
