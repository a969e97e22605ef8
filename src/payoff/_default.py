"""The shared executor behind :func:`payoff.map`."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Unpack

from payoff import _forks
from payoff.config import ALIAS_ENV_VAR, ENV_VAR, ParallelConfig
from payoff.executor import MapOptions, ParallelExecutor

_R = TypeVar("_R")

_lock = _forks.Lock()
_executors: OrderedDict[ParallelConfig, ParallelExecutor] = OrderedDict()
"""Executors by the config ``PAYOFF_PARALLEL`` and ``CE_PARALLEL`` gave, the latest last: spellings of one
setting (``processes``, `` Processes``) share one, and its warm pool."""
_read: dict[tuple[str | None, str | None], ParallelConfig] = {}
"""Each text of the variables as read once: ``payoff.map`` runs per request, the parse only when they change."""
KEPT_SETTINGS = 4
"""Settings whose executors (and their warm pools, until their idle timeout) are kept for a return to them: a
service switching the variable between two values per request started a cold pool on every switch (300 pool
starts in 300 calls, 41.5 ms a call against 17.1 ms)."""


def default_executor() -> ParallelExecutor:
    """Made from ``PAYOFF_PARALLEL`` (or ``CE_PARALLEL``), and made again when either changes.

    A notebook sets ``CE_PARALLEL`` in a cell after a first ``payoff.map``: keeping the
    first value ran ``CE_PARALLEL=off`` on processes without a word. An executor a
    caller got from here earlier keeps its config (and its pools, until it is dropped
    or shut down); going back to an earlier setting (one of the last ``KEPT_SETTINGS``)
    goes back to its executor. A user who closed the shared executor (``with payoff.default_executor():``
    or ``shutdown()``) closed it for that block, not for every later ``payoff.map``: it reopens.
    """
    text = (os.environ.get(ENV_VAR), os.environ.get(ALIAS_ENV_VAR))
    with _lock:
        config = _read.get(text)
        if config is None:
            config = ParallelConfig.from_env()  # a bad value raises here, naming it; the next call reads it again
            if len(_read) >= 4 * KEPT_SETTINGS:
                _read.clear()
            _read[text] = config
        executor = _executors.get(config)
        if executor is None:
            executor = _executors[config] = ParallelExecutor(config)
            while len(_executors) > KEPT_SETTINGS:
                _executors.popitem(last=False)
        elif executor._closed:
            executor._reopen()
        _executors.move_to_end(config)
        return executor


def map(fn: Callable[..., _R], *iterables: Iterable[Any], **kwargs: Unpack[MapOptions]) -> list[_R]:  # noqa: A001
    """``list(map(fn, *iterables))`` on the shared executor; keywords as :meth:`ParallelExecutor.map`."""
    return default_executor().map(fn, *iterables, **kwargs)
