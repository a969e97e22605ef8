"""What a child made by ``os.fork`` inherits from payoff, and what it must leave alone.

The child gets copies of the parent's executors but not the threads and worker
processes behind their pools, so a call on an inherited pool waits for workers
that do not exist. Those pools still belong to the parent: closing them from
the child (its ``atexit``, a finalizer) would stop the parent's workers and
delete its files. And a lock another parent thread held at the fork stays held
in the child forever. So in the child every executor forgets its pools without
touching them, takes fresh locks, and starts new pools when it needs them.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

_inherited: list[object] = []
"""The parent's pools, kept referenced in the child: nothing there ever finalizes or closes them."""


def in_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every child forked from now on (where ``os.fork`` exists)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=hook)


def keep(parent_owned: object) -> None:
    """Hold something of the parent's for the child's whole life, so that nothing in the child closes it."""
    _inherited.append(parent_owned)


def _forget_parent_processes() -> None:
    """The parent's worker processes are not the child's children: its exit must not join or stop them.

    ``multiprocessing`` resets this set in the children it forks itself, but not after a plain
    ``os.fork``; its exit handler then fails on every one ("can only join a child process").
    """
    process = sys.modules.get("multiprocessing.process")
    children = getattr(process, "_children", None)
    if isinstance(children, set):
        me = os.getpid()
        for proc in list(children):
            if getattr(proc, "_parent_pid", me) != me:
                children.discard(proc)


in_child(_forget_parent_processes)


class Lock:
    """A lock that a child made by ``os.fork`` gets afresh, unlocked.

    A parent thread inside payoff's bookkeeping at the fork (a planner
    update, a metrics batch) holds its lock in the child forever: that thread
    does not exist there, so the child's first map would wait for it. The
    child has one thread, so nothing it could wait for is lost.
    """

    __slots__ = ("__weakref__", "_lock", "_reentrant")

    def __init__(self, reentrant: bool = False) -> None:
        self._reentrant = reentrant
        self._lock: Any = threading.RLock() if reentrant else threading.Lock()
        _locks.add(self)

    def _renew(self) -> None:
        self._lock = threading.RLock() if self._reentrant else threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return bool(self._lock.__enter__())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.__exit__(exc_type, exc, tb)


_locks: weakref.WeakSet[Lock] = weakref.WeakSet()


def _renew_locks() -> None:
    for lock in list(_locks):
        lock._renew()


in_child(_renew_locks)
