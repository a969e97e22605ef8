"""Threads kept between calls to run a caller's items under its timeout.

A call whose items run serially under a ``timeout=`` runs them on a payoff thread that the caller waits for
no longer than the time left (``MapRun._on_a_thread``): an item that hangs then cannot hold the caller.
Starting a thread for each such call cost about 350 us a call (100 items of ``abs``: 820 us against 470 us
without a timeout); an idle thread kept from an earlier call takes the next job for the price of a queue.
A thread goes back to the idle ones when its job ends, however late; one whose job never ends is never
handed another (they are daemons: none keeps the program from exiting).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from payoff import _forks

_IDLE: list[_Spare] = []
_LOCK = _forks.Lock()


def run_on_a_spare_thread(job: Callable[[], object]) -> None:
    """Run ``job`` on an idle kept thread, or a new one; ``job`` reports its own outcome and errors."""
    with _LOCK:
        spare = _IDLE.pop() if _IDLE else None
    if spare is None:
        spare = _Spare()
    spare.jobs.put(job)


class _Spare:
    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="payoff-serial", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            with contextlib.suppress(BaseException):  # the job hands its own errors to its caller
                job()
            del job
            with _LOCK:
                _IDLE.append(self)


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: jobs queued to them would never run."""
    _IDLE.clear()


_forks.in_child(_forget_in_child)
