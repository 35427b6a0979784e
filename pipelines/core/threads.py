"""Threads on a shared worker: OpenMP's passive wait policy and a per-task cap on native thread pools.

OpenMP reads `OMP_WAIT_POLICY` once, when the library loads (scikit-learn loads it). Its default spins at the end
of every parallel region; with the cores taken by other tasks each region then waits for a time slice, and a
HistGradientBoosting `predict_proba` (one region per call) ran at a third of its speed next to two busy
processes (STACK_NOTES). Importing `pipelines` sets the policy to PASSIVE unless the environment already says
otherwise; the Makefile, the compose file and the test harness set it for every Airflow process as well.

The same goes for Arrow's allocator, read once when pyarrow loads: its default (jemalloc) keeps freed pages for
a while, which on a worker shared by several tasks is memory no other task can use; the system allocator gives
them back at once. Scoring 2M rows peaked at 428 MB with it against 481 MB with jemalloc, and was no slower
(bench/results-scoring.txt). `ARROW_DEFAULT_MEMORY_POOL` set in the environment wins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"
ARROW_POOL = "ARROW_DEFAULT_MEMORY_POOL"


def openmp_loaded() -> bool:
    """Whether this process has loaded an OpenMP runtime already (its wait policy is then fixed)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any(name in maps for name in ("libgomp", "libomp", "libiomp"))


def prefer_passive_openmp() -> None:
    """Ask for OpenMP's passive wait policy, unless set by the environment; warn when it is too late to matter."""
    if WAIT_POLICY in os.environ:
        return
    if openmp_loaded():
        log.warning("OpenMP was loaded before %s could be set: set it in the worker's environment", WAIT_POLICY)
    os.environ[WAIT_POLICY] = "PASSIVE"


def prefer_system_arrow_allocator() -> None:
    """Ask for Arrow's system allocator, unless the environment names one; warn when pyarrow is already loaded."""
    import sys

    if ARROW_POOL in os.environ:
        return
    if "pyarrow" in sys.modules:
        log.warning("pyarrow was loaded before %s could be set: set it in the worker's environment", ARROW_POOL)
    os.environ[ARROW_POOL] = "system"


@contextmanager
def thread_cap(threads: int, what: str) -> Iterator[None]:
    """Cap the native thread pools (OpenMP, BLAS) of this process to `threads` (0: all cores) inside the block."""
    from threadpoolctl import threadpool_limits

    log.info(
        "%s: %s threads, OpenMP wait policy %s",
        what,
        threads or f"all {os.cpu_count()}",
        os.environ.get(WAIT_POLICY, "the library default"),
    )
    with threadpool_limits(limits=threads or None):
        yield


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`; nothing elsewhere).

    Reading a wide partition frees many medium blocks that the C allocator keeps, fragmented, for later: after
    sampling six 1,000-column partitions a training task held 1.1 GB for a 250 MB frame, and 480 MB after a trim.
    Called after the steps that stream wide reads, before the next one allocates.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)
    except OSError:  # not glibc: nothing to do
        return
