"""Threads kept between calls to run a caller's items under its timeout.

A call whose items run serially under a ``timeout=`` runs them on a payoff thread that the caller waits for
no longer than the time left (``MapRun._on_a_thread``): an item that hangs then cannot hold the caller.
Starting a thread for each such call cost about 350 us a call (100 items of ``abs``: 820 us against 470 us
without a timeout); an idle thread kept from an earlier call takes the next job for the price of a queue.
A thread goes back to the idle ones when its job ends, however late; one whose job never ends is never
handed another (they are daemons: none keeps the program from exiting). Idle ones end after
``IDLE_SECONDS`` without a job, or when an executor shuts down: as after ``concurrent.futures``' shutdown,
no thread of payoff's is left behind (16 threads mapping at once under timeouts left 16).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from payoff import _forks
from payoff._own_pools import mark_own

_IDLE: list[_Spare] = []
_LOCK = _forks.Lock()
IDLE_SECONDS = 30.0
_released = 0
"""How many times the idle threads were released: a thread busy then ends after its job instead of idling."""


def run_on_a_spare_thread(job: Callable[[], object]) -> None:
    """Run ``job`` on an idle kept thread, or a new one; ``job`` reports its own outcome and errors."""
    with _LOCK:
        spare = _IDLE.pop() if _IDLE else None
        released = _released
    if spare is None:
        spare = _Spare()
    spare.jobs.put((job, released))


def release_idle() -> list[threading.Thread]:
    """The idle kept threads end now (an executor's shutdown); returned to be joined. Busy ones stay theirs."""
    global _released
    with _LOCK:
        idle = _IDLE[:]
        _IDLE.clear()
        _released += 1
    for spare in idle:
        spare.jobs.put(None)
    return [spare.thread for spare in idle]


class _Spare:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], object], int] | None] = queue.SimpleQueue()
        self.thread = mark_own(threading.Thread(target=self._serve, name="payoff-serial", daemon=True))
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with _LOCK:
                    if self not in _IDLE:  # taken for a job just now: it is on its way
                        continue
                    _IDLE.remove(self)
                return
            if job is None:  # released
                return
            run, released = job
            del job
            with contextlib.suppress(BaseException):  # the job hands its own errors to its caller
                run()
            del run
            with _LOCK:
                if released != _released:  # released while it ran: it would have ended had it been idle
                    return
                _IDLE.append(self)


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: jobs queued to them would never run."""
    _IDLE.clear()


_forks.in_child(_forget_in_child)
