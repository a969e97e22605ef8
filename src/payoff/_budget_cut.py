"""A timer that ends a serial run's large blocks at its budget, wherever in a block the budget runs out.

A serial run that may outgrow its estimate (``Plan.outgrow``) checks its clock between blocks of items, and
trivial items fill blocks of thousands, the last as one unbounded ``map`` (``worker.TAIL_BLOCK_NS``): items
that turn dear inside such a block ran on unchecked to its end. 2,000 items of ~50 ns then 400 of 4 ms (an
input sorted by size, the small ones empty) ran all 2.4 s of their work here where two processes took 1.0 s
(hunt 55). The items' own iterator is moved to its end at the budget instead: the block's ``map`` stops after
the item it is in, and the run hands back what it did. Only a list's, tuple's or range's iterator can be moved
so (``__setstate__``), and only while the items run Python code: a builtin's ``map`` never lets the timer's
thread in, and its items cost what they cost.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from payoff._spare_threads import run_on_a_spare_thread

STOPPABLE: tuple[type, ...] = (type(iter([])), type(iter(())), type(iter(range(0))))
"""Iterators a timer can end from another thread: the built-in sequences' own (``__setstate__(index)``)."""


class Cut:
    """One armed timer: ``end`` disarms it and says whether it had moved the iterator to its end."""

    __slots__ = ("_done", "_fired", "_lock", "_source", "_stop_at_ns")

    def __init__(self, source: Iterator[Any], stop_at_ns: int) -> None:
        self._source: Iterator[Any] | None = source
        self._stop_at_ns = stop_at_ns
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._fired = False

    def _watch(self) -> None:
        if self._done.wait(max(0.0, (self._stop_at_ns - time.perf_counter_ns()) / 1e9)):
            return
        with self._lock:
            if self._source is not None:
                self._source.__setstate__(sys.maxsize)  # type: ignore[attr-defined]  # clamped to the length
                self._fired = True

    def end(self) -> bool:
        """Disarm; True when the timer ended the iterator first. Once this returns it never will."""
        with self._lock:
            self._source = None
        self._done.set()
        return self._fired


def arm(source: Iterator[Any], stop_at_ns: int) -> Cut:
    """End ``source`` (one of ``STOPPABLE``) at ``stop_at_ns`` (``time.perf_counter_ns``) unless disarmed first."""
    cut = Cut(source, stop_at_ns)
    run_on_a_spare_thread(cut._watch)
    return cut
