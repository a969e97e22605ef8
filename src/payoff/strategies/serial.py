"""Serial: runs chunks in the caller, so results and exceptions are exactly a loop's."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from payoff.strategies.base import ChunkTask, Strategy
from payoff.worker import run_chunk


class SerialStrategy(Strategy):
    name = "serial"

    def _start(self) -> None:
        return None

    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]:
        future: Future[Any] = Future()
        task.submit_ns = time.monotonic_ns()
        future.set_result(run_chunk(fn, task.items, task.first, task.index, task.cancel))
        return future

    def shutdown(self, wait: bool = True) -> None:
        return None
