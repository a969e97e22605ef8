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
from collections.abc import Callable

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
