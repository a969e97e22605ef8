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
Arming is now a set insertion; the watcher sleeps until the soonest budget and is woken only by an arming
sooner than that.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from payoff import _forks
from payoff._own_pools import mark_own

STOPPABLE: tuple[type, ...] = (type(iter([])), type(iter(())), type(iter(range(0))))
"""Iterators a watcher can end from another thread: the built-in sequences' own (``__setstate__(index)``)."""
IDLE_SECONDS = 30.0
"""A watcher with nothing armed this long ends; the next arming starts another."""

_LOCK = _forks.Lock()
_ARMED: set[Cut] = set()
_watcher: _Watcher | None = None


class Cut:
    """One armed run: ``end`` disarms it and says whether the watcher had moved the iterator to its end."""

    __slots__ = ("_fired", "_source", "stop_at_ns")

    def __init__(self, source: Iterator[Any], stop_at_ns: int) -> None:
        self._source: Iterator[Any] | None = source
        self.stop_at_ns = stop_at_ns
        self._fired = False

    def end(self) -> bool:
        """Disarm; True when the watcher ended the iterator first. Once this returns it never will."""
        with _LOCK:
            self._source = None
            _ARMED.discard(self)
        return self._fired

    def _fire(self) -> None:
        """Under ``_LOCK``."""
        if self._source is not None:
            self._source.__setstate__(sys.maxsize)  # type: ignore[attr-defined]  # clamped to the length
            self._source = None
            self._fired = True


def arm(source: Iterator[Any], stop_at_ns: int) -> Cut:
    """End ``source`` (one of ``STOPPABLE``) at ``stop_at_ns`` (``time.perf_counter_ns``) unless disarmed first."""
    global _watcher
    cut = Cut(source, stop_at_ns)
    with _LOCK:
        _ARMED.add(cut)
        if _watcher is None:
            _watcher = _Watcher()
        elif _watcher.until_ns is None or stop_at_ns < _watcher.until_ns:
            _watcher.until_ns = stop_at_ns
            _watcher.wake.set()
    return cut


def release() -> threading.Thread | None:
    """The watcher ends now if nothing is armed (an executor's shutdown leaves no payoff thread behind); returned
    to be joined. One watching a run of another executor stays."""
    global _watcher
    with _LOCK:
        watcher = _watcher
        if watcher is None or _ARMED:
            return None
        _watcher = None
    watcher.wake.set()
    return watcher.thread


class _Watcher:
    """Sleeps until the soonest armed budget, woken only by an arming sooner than that: a run's block ends within
    the wait for the GIL after its budget (none while its item waits; up to the switch interval, 5 ms, while it
    runs Python code), and a run that ends in time costs it at most two wake-ups, its arming's and its budget's."""

    def __init__(self) -> None:
        """Under ``_LOCK``: started as it is made, so a run is never armed with no thread to watch it."""
        self.until_ns: int | None = 0
        """The budget it sleeps until; None when nothing is armed."""
        self.wake = threading.Event()
        self.thread = mark_own(threading.Thread(target=self._serve, name="payoff-budget-cut", daemon=True))
        self.thread.start()

    def _serve(self) -> None:
        while True:
            with _LOCK:
                if _watcher is not self:  # released
                    return
                soonest = self.until_ns = _fire_due()
                self.wake.clear()
            if soonest is not None:
                self.wake.wait(max(0, soonest - time.perf_counter_ns()) / 1e9)
            elif not self._sleep():
                return

    def _sleep(self) -> bool:
        """Waits for an arming; False when this watcher is to end (released, or idle ``IDLE_SECONDS``)."""
        global _watcher
        woken = self.wake.wait(IDLE_SECONDS)
        with _LOCK:
            if _watcher is not self:
                return False
            if not woken and self.until_ns is None:
                _watcher = None
                return False
            return True


def _fire_due() -> int | None:
    """Under ``_LOCK``: ends the runs past their budget; the soonest budget still armed, or None."""
    now = time.perf_counter_ns()
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
