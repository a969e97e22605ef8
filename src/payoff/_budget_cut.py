"""A watcher that ends a serial run's block of items at its budget, wherever in a block the budget runs out.

A serial run that may outgrow its estimate (``Plan.outgrow``) checks its clock between blocks of items, and
free items fill blocks of thousands, the last as one unbounded ``map`` (``worker.TAIL_BLOCK_NS``): items
that turn dear inside such a block ran on unchecked to its end. 2,000 items of ~50 ns then 400 of 4 ms (an
input sorted by size, the small ones empty) ran all 2.4 s of their work here where two processes took 1.0 s
(hunt 55); 100 free items then 100 naps of 10 ms ran all 1.02 s in a block of 127 (threads: 0.06 s). The
items' own iterator is moved to its end at the budget instead: the block's ``map`` stops after the item it is
in, and the run hands back what it did. Only a list's, tuple's or range's iterator can be moved so
(``__setstate__``), and only while the items run Python code or wait: a builtin's ``map`` never lets the
watcher's thread in, and its items cost what they cost.

One long-lived thread watches every armed run. A thread per arming (a spare thread woken through a queue) cost
80-180 us a call of a few hundred free items, most of it threads started because the last one had not yet gone
back to idle (2,000 armings in a row left 70 threads), so only blocks of 1,024 items or more were watched.
Arming is now a set insertion; the watcher waits until the soonest budget, and looks again every 10 ms for a
second after its last run, so that the next run's arming need not wake it, then ends.
"""

from __future__ import annotations

import functools
import operator
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from payoff import _exit, _forks
from payoff._own_pools import mark_own

STOPPABLE: tuple[type, ...] = (type(iter([])), type(iter(())), type(iter(range(0))))
"""Iterators a watcher can end from another thread: the built-in sequences' own (``__setstate__(index)``)."""
TICK_NS = 10_000_000
"""A watcher with nothing armed looks again this often, so a run armed meanwhile needs no wake-up (every budget
is at least ``planning.OUTGROW_MIN_SECONDS``, 20 ms). Waking it on each arming cost a call of a few hundred
trivial items 5-40 us, the woken thread taking the GIL from the caller."""
LINGER_NS = 1_000_000_000
"""A watcher with nothing armed this long ends; the next arming starts another (about 120 us). It is not ended
by an executor's shutdown: one joined there and started again by the next call made ``with ParallelExecutor()``
around a call of 100 trivial items cost 840 us where it took 415 (review 82)."""

_LOCK = _forks.Lock()
_ARMED: set[Cut] = set()
_watcher: _Watcher | None = None


class Cut:
    """One armed run: ``end`` disarms it and says whether the watcher had moved the iterator to its end, and
    ``left`` how many of its items were still to come then (a run that stopped with more of its items taken
    than it has results stopped for another reason: an item raised ``StopIteration``)."""

    __slots__ = ("_fired", "_source", "left", "stop_at_ns")

    def __init__(self, source: Iterator[Any] | None, stop_at_ns: int) -> None:
        self._source = source
        self.stop_at_ns = stop_at_ns
        self._fired = False
        self.left = 0

    def end(self) -> bool:
        """Disarm; True when the watcher ended the iterator first. Once this returns it never will."""
        with _LOCK:
            self._source = None
            _ARMED.discard(self)
        return self._fired

    def _fire(self) -> None:
        """Under ``_LOCK``."""
        if self._source is not None:
            # counted and ended inside one bytecode (the unpacking runs both calls in C): between two calls from
            # Python the run's thread could take the GIL and more items, past a stale count
            end = functools.partial(self._source.__setstate__, sys.maxsize)  # type: ignore[attr-defined]
            self.left, _ = map(operator.call, (self._source.__length_hint__, end))  # type: ignore[attr-defined]
            self._source = None
            self._fired = True


def arm(source: Iterator[Any], stop_at_ns: int) -> Cut:
    """End ``source`` (one of ``STOPPABLE``) at ``stop_at_ns`` (``time.perf_counter_ns``) unless disarmed first.
    Once the program's end has begun no thread may start (Python 3.12.0-3.12.1 refuse one): the run goes on
    unwatched, checked between its blocks."""
    global _watcher
    with _LOCK:
        if _watcher is None:
            if _exit.program_ending():
                return Cut(None, stop_at_ns)
            try:
                _watcher = _Watcher()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return Cut(None, stop_at_ns)
        cut = Cut(source, stop_at_ns)
        _ARMED.add(cut)
        _watcher.latest_ns = max(_watcher.latest_ns, stop_at_ns)
        if stop_at_ns < _watcher.until_ns:
            _watcher.until_ns = stop_at_ns
            _watcher.wake.set()
    return cut


class _Watcher:
    """Waits until the soonest armed budget, woken only by an arming sooner than that: a run's block ends within
    the wait for the GIL after its budget (none while its item waits; up to the switch interval, 5 ms, while it
    runs Python code), and a run that ends in time costs it at most its budget's wake-up."""

    def __init__(self) -> None:
        """Under ``_LOCK``: started as it is made, so a run is never armed with no thread to watch it."""
        self.until_ns = 0
        """The time it waits until."""
        self.latest_ns = 0
        """The latest budget armed: runs armed and ended between two of its looks count too."""
        self.wake = threading.Event()
        self.thread = mark_own(threading.Thread(target=self._serve, name="payoff-budget-cut", daemon=True))
        self.thread.start()

    def _serve(self) -> None:
        global _watcher
        while True:
            now = time.perf_counter_ns()
            with _LOCK:
                soonest = _fire_due(now)
                if soonest is None and now - self.latest_ns >= LINGER_NS:
                    _watcher = None
                    return
                if soonest is None:
                    soonest = now + TICK_NS
                self.until_ns = soonest
                self.wake.clear()
            self.wake.wait(max(0, soonest - now) / 1e9)


def _fire_due(now: int) -> int | None:
    """Under ``_LOCK``: ends the runs past their budget; the soonest budget still armed, or None."""
    for cut in [cut for cut in _ARMED if cut.stop_at_ns <= now]:
        cut._fire()
        _ARMED.discard(cut)
    return min((cut.stop_at_ns for cut in _ARMED), default=None)


def _forget_in_child() -> None:
    """A forked child has no watcher thread, and its parent's armed runs are not its own."""
    global _watcher
    _watcher = None
    _ARMED.clear()


_forks.in_child(_forget_in_child)
