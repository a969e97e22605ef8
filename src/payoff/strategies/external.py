"""A user-supplied strategy object (ADR-004's "explicit strategy object").

Anything with ``submit(fn, *args)`` returning a future and ``shutdown()`` works,
which includes every ``concurrent.futures.Executor``. The object belongs to the
user: payoff never shuts it down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from payoff.strategies.base import ChunkTask, Strategy
from payoff.worker import run_chunk


class ExternalStrategy(Strategy):
    name = "custom"

    def __init__(self, target: Any, workers: int) -> None:
        super().__init__(workers)
        self.target = target

    def _start(self) -> None:
        return None

    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]:
        task.submit_ns = time.monotonic_ns()
        future: Future[Any] = self.target.submit(run_chunk, fn, task.items, task.first, task.index, None,
                                                      task.budget_ns)
        return future

    def shutdown(self, wait: bool = True) -> None:
        return None


def external_workers(target: Any, default: int) -> int:
    """Best guess at how many workers a foreign executor has."""
    for attr in ("workers", "max_workers", "_max_workers"):
        value = getattr(target, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
