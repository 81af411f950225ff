"""Where a result came from: command line, code version, library versions, device, AMP mode, world size.

:func:`collect_provenance` gathers it once per run; ``processor.Trainer`` adds the wall times and writes
it under ``"provenance"`` into ``results.json``, every ``checkpoint_epoch{N}.pth`` and ``model_best.pth``;
``test_net.py`` into ``test_results.json``. Every value is a plain ``str`` / ``int`` / ``float`` / ``bool``
/ ``None`` / ``list`` / ``dict``, so checkpoints still load with ``torch.load(weights_only=True)``.

Collecting never fails: what cannot be found (no ``git`` program, not a git checkout, a library that is
not installed) is ``None``. ``git`` runs in the repository root with a short timeout.
"""
import datetime
import logging
import os
import platform
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIT_TIMEOUT_S = 5.0
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories


def command_line(argv: Optional[Sequence[str]] = None, script: Optional[str] = None) -> List[str]:
    """The command line of a run: ``sys.argv`` when the script parsed it (``argv`` None), else ``script``
    (default ``sys.argv[0]``) followed by the ``argv`` given to its ``main`` (a call from Python)."""
    if argv is None:
        return [str(a) for a in sys.argv]
    return [str(script if script is not None else sys.argv[0])] + [str(a) for a in argv]


def _git(*args: str) -> Optional[str]:
    """Stripped stdout of ``git args`` run in the repository root; None when git is missing, fails or hangs."""
    try:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        logger.debug("git %s: %s", " ".join(args), exc)
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> Dict[str, Optional[Any]]:
    """``{'git_commit': HEAD's hash or None, 'git_dirty': bool or None}`` of the checkout holding this code.

    ``git_dirty``: whether ``git status`` lists anything under the repository root (changed, staged or
    untracked files that are not ignored); None when there is no commit to compare with.
    """
    commit = _git("rev-parse", "--verify", "--quiet", "HEAD")
    if commit is None or not _COMMIT_RE.match(commit):
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--", ".")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def library_versions() -> Dict[str, Optional[str]]:
    """Versions of Python and of torch, torchvision, timm (None for one that cannot be imported)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm"):
        try:
            versions[name] = str(__import__(name).__version__)
        except Exception as exc:  # noqa: BLE001 - an optional report: any import failure means "unknown"
            logger.debug("version of %s: %s", name, exc)
            versions[name] = None
    return versions


def _cpu_name() -> Optional[str]:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor / machine name, else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def device_name(device: Any) -> Optional[str]:
    """The accelerator's name (``torch.cuda.get_device_name``), else the CPU's, else None."""
    try:
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            return str(torch.cuda.get_device_name(device))
        return _cpu_name()
    except Exception as exc:  # noqa: BLE001
        logger.debug("device name of %s: %s", device, exc)
        return None


def collect_provenance(device: Any, amp: Any, world_size: int,
                       command: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The provenance of a run (never raises).

    Args:
        device: the ``torch.device`` (or its string) of this process.
        amp: ``utils.misc.AmpSettings`` (its ``name`` is recorded) or the mode as a string.
        world_size: the number of processes.
        command: the command line (default ``sys.argv``; see :func:`command_line`).

    Returns:
        ``{'command', 'git_commit', 'git_dirty', 'versions': {python, torch, torchvision, timm}, 'device',
        'device_name', 'amp', 'world_size', 'started'}`` (``started``: UTC time, ISO 8601).
    """
    info: Dict[str, Any] = {"command": command_line() if command is None else [str(a) for a in command]}
    info.update(git_state())
    info["versions"] = library_versions()
    info["device"] = str(device)
    info["device_name"] = device_name(device)
    try:
        info["amp"] = None if amp is None else str(amp if isinstance(amp, str) else amp.name)
    except Exception:  # noqa: BLE001
        info["amp"] = None
    try:
        info["world_size"] = int(world_size)
    except (TypeError, ValueError):
        info["world_size"] = None
    info["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return info


def wall_times(train_s: Optional[float], eval_last_s: Optional[float], eval_total_s: Optional[float]
               ) -> Dict[str, Optional[float]]:
    """The ``wall_time_s`` entry of a provenance record: seconds of training (the epochs so far, evaluation
    not included; None for a run that does not train), of the last evaluation and of all evaluations."""
    def seconds(value):
        return None if value is None else round(float(value), 3)

    return {"train": seconds(train_s), "eval_last": seconds(eval_last_s), "eval_total": seconds(eval_total_s)}
