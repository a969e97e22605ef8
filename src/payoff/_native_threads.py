"""How many threads the native libraries in a process worker (BLAS, OpenMP) may run.

OpenBLAS, MKL, BLIS and OpenMP each start a thread per core for one call, and
``joblib.Parallel(n_jobs=-1)`` a process (or thread) per core. In
a pool of process workers every worker does, so two workers on two cores run
four busy threads that take turns: a BLAS-heavy map ran ten times slower than
a loop, and each worker's timing included the waits for its helper threads, so
the record still claimed a gain. Like loky under ``joblib.Parallel``, each
worker gets ``capacity // workers`` threads (at least one): the limits go to
the libraries already loaded (``threadpoolctl``, which a forked worker needs:
its libraries read their settings in the parent) and into the worker's
environment for those loaded later. A variable the user set in the environment
is kept where it asks for no more than that share, and lowered to it where it
asks for more: a user's ``OMP_NUM_THREADS=2`` on 2 cores meant two threads for
the program, and gave two workers two spinning OpenBLAS threads each, 3.5-20x
slower than the loop, while the record said 1.2-1.4x faster (environments
trial). ``ParallelConfig.inner_threads`` names any number.
"""

from __future__ import annotations

import os
from typing import Any

USER_SETS: dict[str, tuple[str, ...]] = {
    "OMP_NUM_THREADS": ("OMP_NUM_THREADS",),
    "OPENBLAS_NUM_THREADS": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),
    "MKL_NUM_THREADS": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
    "BLIS_NUM_THREADS": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
    "VECLIB_MAXIMUM_THREADS": ("VECLIB_MAXIMUM_THREADS",),
    "NUMEXPR_NUM_THREADS": ("NUMEXPR_NUM_THREADS", "OMP_NUM_THREADS"),
    "LOKY_MAX_CPU_COUNT": ("LOKY_MAX_CPU_COUNT",),
}
"""Each variable payoff sets in a worker, and those that, set by the user, leave it to them: OpenBLAS, MKL,
BLIS and numexpr fall back to ``OMP_NUM_THREADS``, so a user's ``OMP_NUM_THREADS=4`` is their setting too.
``LOKY_MAX_CPU_COUNT`` caps loky's ``cpu_count``, which loky reads at every call: ``joblib.Parallel(n_jobs=-1)``
in an item (a scikit-learn ``n_jobs=-1`` fit or predict) started a loky pool of one process per core in every
worker, four CPU-bound processes for two workers on two cores and a pool start in each; with the worker's share
(one there) joblib runs the item's tasks in the worker itself: a forest's ``n_jobs=-1`` predict took 0.13 s
instead of 0.38 s for 40 items, 30 ``joblib.Parallel`` calls of small tasks 5 ms instead of 190 ms."""

_LIBRARY_VARIABLE = {"openblas": "OPENBLAS_NUM_THREADS", "mkl": "MKL_NUM_THREADS", "blis": "BLIS_NUM_THREADS",
                     "openmp": "OMP_NUM_THREADS"}
"""threadpoolctl's ``internal_api`` of a loaded library, and the variable it reads; others go by OpenMP's."""


def per_worker(inner_threads: int | None, workers: int) -> tuple[int, bool] | None:
    """The threads each of ``workers`` workers' native libraries may run, and whether that is the user's number
    (which then overrides their environment variables); None to leave the libraries alone (``inner_threads=0``)."""
    if inner_threads is None:
        from payoff.config import cpu_capacity  # not at import: workers import this module, and config numpy

        return max(1, int(cpu_capacity() // max(1, workers))), False
    return (inner_threads, True) if inner_threads > 0 else None


def _users(name: str, environ: dict[str, str]) -> int | None:
    """The number the user's own variables give ``name`` (the first set of those it reads); None: unset. A value
    that is not a positive number is theirs as it is (0 when it is not a number)."""
    for var in USER_SETS.get(name, ("OMP_NUM_THREADS",)):
        raw = environ.get(var, "").strip()
        if raw:
            head = raw.split(",", 1)[0].strip()  # OpenMP's nested form: "4,2"
            return int(head) if head.isdigit() else 0
    return None


def _within(threads: int, forced: bool, users: int | None) -> int | None:
    """The threads to set, or None to leave the user's own setting: kept when at most ``threads``."""
    if forced or users is None or users > threads:
        return threads
    return None


def limit_here(threads: int, forced: bool) -> None:
    """In a worker: set the variables the user left unset or set above ``threads`` (all of them if ``forced``),
    then limit the loaded libraries whose variables those are. Runs before the user's ``worker_initializer``,
    which may change it."""
    user = dict(os.environ)
    for name in USER_SETS:
        if _within(threads, forced, _users(name, user)) is not None:
            os.environ[name] = str(threads)
    from threadpoolctl import ThreadpoolController  # here: a worker that never limits never pays its import

    for lib in ThreadpoolController().lib_controllers:
        variable = _LIBRARY_VARIABLE.get(lib.internal_api, "OMP_NUM_THREADS")
        if _within(threads, forced, _users(variable, user)) is not None:
            if lib.internal_api == "openblas" and lib.num_threads == threads:
                continue  # a set starts the thread server (even for the same number), which some builds cannot stop
            lib.set_num_threads(threads)
            if lib.internal_api == "openblas":
                _stop_thread_server(lib.dynlib)


_OPENBLAS_AFFIXES = (("", ""), ("scipy_", ""), ("", "64_"), ("scipy_", "64_"), ("", "_64"), ("scipy_", "_64"))


def _stop_thread_server(dynlib: Any) -> None:
    """Stop the thread server that setting OpenBLAS's threads started, as the fork had left it.

    A forked worker's OpenBLAS has no threads (its fork handler stopped them in
    the parent's copy), and ``openblas_set_num_threads`` starts them again, even
    for one: each then spins for about 0.1 s waiting for work, 120 ms of a core
    per worker after every pool start, in a worker that may never call BLAS.
    Stopped, they are started by the first call that uses them, as after a fork.
    A build without the symbol keeps its threads.
    """
    for prefix, suffix in _OPENBLAS_AFFIXES:
        stop = getattr(dynlib, f"{prefix}blas_thread_shutdown_{suffix}", None)
        if stop is not None:
            stop()
            return
