"""The shared executor behind :func:`payoff.map`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from payoff import _forks
from payoff.config import ALIAS_ENV_VAR, ENV_VAR
from payoff.executor import ParallelExecutor

_lock = _forks.Lock()
_executor: ParallelExecutor | None = None
_made_from: tuple[str | None, str | None] = (None, None)
"""The ``PAYOFF_PARALLEL`` and ``CE_PARALLEL`` values ``_executor`` was made from."""


def default_executor() -> ParallelExecutor:
    """Made from ``PAYOFF_PARALLEL`` (or ``CE_PARALLEL``), and made again when either changes.

    A notebook sets ``CE_PARALLEL`` in a cell after a first ``payoff.map``: keeping the
    first value ran ``CE_PARALLEL=off`` on processes without a word. An executor a
    caller got from here earlier keeps its config (and its pools, until it is dropped
    or shut down). A user who closed the shared executor (``with payoff.default_executor():``
    or ``shutdown()``) closed it for that block, not for every later ``payoff.map``: it reopens.
    """
    global _executor, _made_from
    setting = (os.environ.get(ENV_VAR), os.environ.get(ALIAS_ENV_VAR))
    with _lock:
        if _executor is None or setting != _made_from:
            _executor = ParallelExecutor()  # a bad value raises here, naming it; the next call reads it again
            _made_from = setting
        elif _executor._closed:
            _executor._reopen()
        return _executor


def map(fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> list[Any]:  # noqa: A001
    """``list(map(fn, *iterables))`` on the shared executor; keywords as :meth:`ParallelExecutor.map`."""
    return default_executor().map(fn, *iterables, **kwargs)
