"""How long a worker spent importing while it loaded a chunk: the one-time part of the load.

The first chunk a worker loads for a function imports the modules the function names (a ``__main__`` function
naming ``sklearn``): a cost no later chunk pays, which no verdict on parallelism may count
(``ChunkStats.warmup_ns``). Timing the whole load whenever the module table grew counted the items' unpickling
too, every call's cost, and made another thread's import meanwhile read as this chunk's (review). Only the
imports this thread makes are timed: ``builtins.__import__`` (which unpickling calls for a module it lacks) is
wrapped for the load and put back after. A process worker loads one chunk at a time: nothing else swaps it.
"""

from __future__ import annotations

import builtins
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from payoff import _forks


class ImportClock:
    """``with ImportClock() as clock:`` around a load; then ``clock.ns`` is what its new imports took."""

    def __init__(self) -> None:
        self.ns = 0
        self._real: Any = None

    def __enter__(self) -> ImportClock:
        real = self._real = builtins.__import__
        thread, inside = threading.get_ident(), [False]

        def timed(*args: Any, **kwargs: Any) -> Any:
            if inside[0] or threading.get_ident() != thread:  # a nested import, or another thread's
                return real(*args, **kwargs)
            inside[0], modules, began = True, len(sys.modules), time.monotonic_ns()
            try:
                return real(*args, **kwargs)
            finally:
                inside[0] = False
                if len(sys.modules) > modules:  # a module imported afresh, not one looked up
                    self.ns += time.monotonic_ns() - began

        builtins.__import__ = timed
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        builtins.__import__ = self._real


def warmup_since(began_ns: int, modules: int) -> int:
    """The time since ``began_ns`` if the module table grew past ``modules`` meanwhile, else 0: a dask worker's
    reading, whose threads load chunks at once (``ImportClock`` would swap ``__import__`` under the others). It
    counts the whole load then, items included. Not a shipped function's load in either: a function new on
    each call (a model refit each round) is loaded again, and a call that pays it each time is judged with it."""
    if len(sys.modules) <= modules:
        return 0
    return time.monotonic_ns() - began_ns


class CallerImports:
    """``with CallerImports() as clock:`` around items run in the caller (a probe's); then ``clock.ns`` is what
    the imports they made took (waits for a CPU left out; ``clock.cpu_ns`` of CPU), those of this thread only.

    A function that imports inside its body (``import sklearn`` in a worker function, the usual advice for
    process pools) pays the import with its first item: the probe read that item's 1 s as the cost of an item
    of 1 ms, and warm worker processes, started before the import, paid it again each (hunt 59: a first call
    1.7x the loop's time, its record 6x too high). Unlike :class:`ImportClock`, which owns a worker process's
    one chunk at a time, the caller may probe in several threads at once: one wrapper stays installed while any
    clock runs, and each thread counts its own.
    """

    def __init__(self) -> None:
        self.ns = 0
        self.cpu_ns = 0

    def __enter__(self) -> CallerImports:
        global _users, _real
        with _lock:
            if _users == 0:
                _real = builtins.__import__
                builtins.__import__ = _timed
            _users += 1
        _local.clocks = [*getattr(_local, "clocks", ()), self]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _users
        _local.clocks = [clock for clock in getattr(_local, "clocks", ()) if clock is not self]
        with _lock:
            _users = max(0, _users - 1)  # a forked child starts from none (``_forget_in_child``)
            if _users == 0 and builtins.__import__ is _timed:  # one a user put in meanwhile stays theirs
                builtins.__import__ = _real


_lock = _forks.Lock()
_users = 0
_real: Any = builtins.__import__
_local = threading.local()


def _forget_in_child() -> None:
    """A worker forked while another thread probed keeps no wrapper on its every import."""
    global _users
    _users = 0
    if builtins.__import__ is _timed:
        builtins.__import__ = _real


_forks.in_child(_forget_in_child)


def importing() -> bool:
    """Whether this thread is inside an import a :class:`CallerImports` times (a garbage collection it sets off
    is the import's then, not counted twice)."""
    return bool(getattr(_local, "inside", False))


def _timed(*args: Any, **kwargs: Any) -> Any:
    clocks = getattr(_local, "clocks", None)
    if not clocks or getattr(_local, "inside", False):  # another thread's import, or a nested one
        return _real(*args, **kwargs)
    _local.inside, modules = True, len(sys.modules)
    began, began_cpu, began_waiting = time.perf_counter_ns(), time.thread_time_ns(), waiting_ns()
    try:
        return _real(*args, **kwargs)
    finally:
        _local.inside = False
        if len(sys.modules) > modules:  # a module imported afresh, not one looked up
            took = time.perf_counter_ns() - began - max(0, waiting_ns() - began_waiting)
            took_cpu = time.thread_time_ns() - began_cpu
            for clock in clocks:
                clock.ns += max(took, 0)
                clock.cpu_ns += took_cpu


def _no_waits() -> int:
    return 0


waiting_ns: Callable[[], int] = _no_waits
"""This thread's wait for a CPU so far (``payoff.worker.run_queue_ns``, set by the probe): an import's time is
read without it, as the items' is (``_own_ns``), or a loaded machine's wait during it was taken off them twice
and a probe read its items at 1 ns."""
