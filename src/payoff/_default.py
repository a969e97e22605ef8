"""The shared executor behind :func:`payoff.map`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from payoff import _forks
from payoff.executor import ParallelExecutor

_lock = _forks.Lock()
_executor: ParallelExecutor | None = None


def default_executor() -> ParallelExecutor:
    """Created on first use from ``PAYOFF_PARALLEL`` (or ``CE_PARALLEL``) as it is then; kept for the process.

    A user who closed it (``with payoff.default_executor():`` or ``shutdown()``) closed
    it for that block, not for every later ``payoff.map`` of the program: it reopens.
    """
    global _executor
    with _lock:
        if _executor is None:
            _executor = ParallelExecutor()
        elif _executor._closed:
            _executor._reopen()
        return _executor


def map(fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:  # noqa: A001
    """``list(map(fn, *iterables))`` on the shared executor; keywords as :meth:`ParallelExecutor.map`."""
    return default_executor().map(fn, *iterables, **kwargs)
