"""Shared helpers: logging, checkpoints, distributed training, seeding/device/AMP and metrics.

The submodules are imported explicitly (``from utils.checkpoint import save_checkpoint``) so that
importing one of them never pulls in the others. This package file imports nothing heavy, so the
scripts can call :func:`prefer_passive_omp` before ``torch`` is imported.
"""
import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameter for the size from which malloc serves a request with its own mmap.
_M_MMAP_THRESHOLD = -3


def prefer_passive_omp():
    """Make idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) unless set.

    Must run before ``torch`` is imported. On a small or shared CPU, idle intra-op threads that spin
    take cores from data-loader workers and other processes, which can slow CPU training several
    times over (compare ``OMP_WAIT_POLICY=ACTIVE python benchmarks/bench_train.py`` with a plain run to
    see it on a given machine). It has no effect on GPU work.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def return_large_frees_to_os(threshold: int = 4 << 20) -> bool:
    """Serve CPU allocations of ``threshold`` bytes or more with mmap, so that freeing them gives the
    memory back to the system at once (glibc ``mallopt(M_MMAP_THRESHOLD)``); returns whether it was set.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which the
    activations of a CPU training step come from the heap, where freed memory stays in the process and
    fragments. Measured with ``benchmarks/bench_train.py`` (paper model, batch 8, 2 cores): peak RSS of a
    checkpointed step 3418 / 3328 MiB -> 2980 / 2971 MiB with a fixed 4 MiB threshold, but the step ran
    ~25% slower (every large block is page-faulted in afresh), so the Trainer sets it only for
    ``MODEL.GRAD_CHECKPOINT`` on CPU, where memory was asked for over time. GPU tensors are not affected.
    Nothing is changed where ``MALLOC_MMAP_THRESHOLD_`` is set (glibc reads that itself) or the C library
    is not glibc.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
