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
from types import TracebackType
from typing import Any


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
