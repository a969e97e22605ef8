"""The shared executor behind :func:`payoff.map`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from payoff import _forks
from payoff.executor import ParallelExecutor

_lock = threading.Lock()
_executor: ParallelExecutor | None = None


def default_executor() -> ParallelExecutor:
    """Created on first use from ``PAYOFF_PARALLEL`` (or ``CE_PARALLEL``) as it is then; kept for the process."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ParallelExecutor()
        return _executor


def _new_lock() -> None:
    """In a forked child: another parent thread may have held the lock at the fork (the executor itself
    forgets its parent's pools on its own)."""
    global _lock
    _lock = threading.Lock()


_forks.in_child(_new_lock)


def map(fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:  # noqa: A001
    """``list(map(fn, *iterables))`` on the shared executor; keywords as :meth:`ParallelExecutor.map`."""
    return default_executor().map(fn, *iterables, **kwargs)
