"""Shared helpers: logging, checkpoints, distributed training, seeding/device/AMP and metrics.

The submodules are imported explicitly (``from utils.checkpoint import save_checkpoint``) so that
importing one of them never pulls in the others. This package file imports nothing heavy, so the
scripts can call :func:`prefer_passive_omp` before ``torch`` is imported.
"""
import os


def prefer_passive_omp():
    """Make idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) unless set.

    Must run before ``torch`` is imported. On a small or shared CPU, idle intra-op threads that spin
    take cores from data-loader workers and other processes, which can slow CPU training several
    times over (compare ``OMP_WAIT_POLICY=ACTIVE python benchmarks/bench_train.py`` with a plain run to
    see it on a given machine). It has no effect on GPU work.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
