"""User errors, and the one place that turns them into ``<script>: error: <one line>`` and exit code 1.

A *user error* is a failure the user can fix: a config key or value, a dataset folder or image, a weight
file, a checkpoint, a command-line argument. Such errors derive from :class:`FusionReIDError` (with a
builtin base as well where callers catch it: ``ConfigError`` is also a ``ValueError``), and their message
names the culprit (key, file, argument). ``FileNotFoundError`` counts as one too.

Every entry point (``train_net.py``, ``test_net.py``, ``tools/*.py``, ``benchmarks/*.py``) decorates
its ``main`` with :func:`cli_entry`: a user error then ends the program with one line on stderr and exit
code 1, the full traceback going to the log at DEBUG level only (``OUTPUT_DIR/*.log`` where the script
writes one). Any other exception is a bug and keeps its traceback. Argument errors found by argparse
already end with ``<script>: error: ...`` and exit code 2.

An error raised inside a ``DataLoader`` worker is re-raised by PyTorch in the main process as the same
class with the message ``Caught X in DataLoader worker process N.\\nOriginal Traceback ...``;
:func:`user_message` recovers the worker's own message from it.

This module imports nothing heavy (no torch), so light tools can use it.
"""
import contextlib
import functools
import inspect
import logging
import os
import re
import sys
import traceback

logger = logging.getLogger(__name__)


class FusionReIDError(Exception):
    """Base class of the user errors: the message names the config key, file or argument at fault."""


class ConfigError(FusionReIDError, ValueError):
    """A configuration file or override that cannot be used; the message says which key and why."""


class UsageError(FusionReIDError, ValueError):
    """A command-line argument value (or tool input) that argparse cannot check; the message names it."""


# The failures that end an entry point with one line instead of a traceback.
USER_ERRORS = (FusionReIDError, FileNotFoundError)

# PyTorch's ``ExceptionWrapper.reraise``: "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback..."
_WORKER_WRAPPED = re.compile(r"\ACaught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def is_user_error(exc):
    return isinstance(exc, USER_ERRORS)


def _exception_line_names(cls):
    """How ``traceback.format_exception`` names ``cls`` on its last line (module-qualified unless builtin)."""
    if cls.__module__ in ("builtins", "__main__"):
        return [cls.__qualname__]
    return [f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__]


def worker_message(text, cls):
    """The original message inside the text of an error re-raised from a ``DataLoader`` worker, else None.

    The worker's formatted traceback ends with ``<module>.<Class>: <message>`` (the message may span
    lines); the last such line of ``cls`` is taken, so chained exceptions before it are skipped.
    """
    if not _WORKER_WRAPPED.match(text):
        return None
    for name in _exception_line_names(cls):
        at = text.rfind(f"\n{name}: ")
        if at >= 0:
            return text[at + len(name) + 3:]
    return None


def user_message(exc):
    """The message of ``exc`` on one line: the worker's own message for an error from a ``DataLoader``
    worker, lines joined with spaces, the class name when the message is empty."""
    text = str(exc)
    text = worker_message(text, type(exc)) or text
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def script_name(func=None):
    """File name of the running script (of ``func``'s module when given and it has a file)."""
    if func is not None:
        try:
            return os.path.basename(inspect.getfile(func))
        except TypeError:
            pass
    return os.path.basename(sys.argv[0]) or "fusionreid"


def user_exit(exc, script=None):
    """The ``SystemExit`` for user error ``exc``: message ``<script>: error: <one line>`` (exit code 1).

    The full traceback (the worker's included) is logged at DEBUG: it reaches the log files, not the console.
    """
    logger.debug("stopped by:\n%s", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return SystemExit(f"{script or script_name()}: error: {user_message(exc)}")


@contextlib.contextmanager
def exit_on_user_error(script=None):
    """Turns a user error raised inside into :func:`user_exit`; other exceptions pass unchanged."""
    try:
        yield
    except USER_ERRORS as exc:
        raise user_exit(exc, script) from None


def cli_entry(main):
    """Decorator of an entry point's ``main``: user errors end it with one line and exit code 1."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        with exit_on_user_error(script_name(main)):
            return main(*args, **kwargs)
    return wrapper
