"""Waits on futures that a Ctrl-C leaves as they were.

``concurrent.futures.wait`` takes every future's lock in turn, outside a ``with``. A Ctrl-C that lands while it
blocks on one of them (the pool's thread holds it while it settles that future) leaves the locks it took held
for good; the pool's thread then waits for one of them forever, and so does whatever joins that thread: a
shutdown, the program's exit (5 of 40 exits interrupted beside three busy loops hung). These take a future's
lock only inside ``add_done_callback`` and ``done``, each within a ``with``, one lock at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from concurrent.futures import Future
from typing import Any


def all_done(futures: Collection[Future[Any]]) -> threading.Event:
    """An event set once every one of ``futures`` is done; wait on it in slices, so a Ctrl-C is seen (CPython
    runs a signal's handler when the waiting thread wakes: one landing just before a lock blocks waited for
    the next signal)."""
    event, lock, left = threading.Event(), threading.Lock(), [len(futures)]

    def one_done(_: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if left[0] <= 0:
                event.set()

    if not futures:
        event.set()
    for future in futures:
        future.add_done_callback(one_done)
    return event


def wait_in_slices(event: threading.Event, seconds: float, slice_seconds: float = 0.25) -> bool:
    """``event.wait(seconds)``, waking every ``slice_seconds``: CPython runs a signal's handler only when the
    waiting thread wakes, and a Ctrl-C that landed just before the wait blocked waited for the next signal."""
    deadline = time.monotonic() + seconds
    while not event.wait(max(0.0, min(slice_seconds, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return False
    return True


def woken_by(futures: Collection[Future[Any]]) -> threading.Event:
    """An event set whenever one of ``futures`` is done (``concurrent.futures.wait``'s ``FIRST_COMPLETED``):
    wait on it, ``clear`` it, then see which are done; a future done after that sets it again. Its callbacks
    are added once, not on every slice of a long wait (a worker slow to start gathered 1,500)."""
    event = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: event.set())
    return event
