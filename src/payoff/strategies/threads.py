"""Threads: no pickling, shared memory; pays off when the work releases the GIL.

Each chunk runs inside a copy of the submitting context, so a span that is
current in the caller (the map span) is current in the worker thread too and
user spans nest under it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from payoff.strategies.base import ChunkTask, Strategy
from payoff.worker import ping, run_chunk


class ThreadStrategy(Strategy):
    name = "threads"

    def _start(self) -> None:
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="payoff",
                                  initializer=self.initializer, initargs=self.initargs)
        self._pool = pool
        for f in [pool.submit(ping) for _ in range(self.workers)]:
            f.result()

    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]:
        assert self._pool is not None, "start() first"
        ctx = contextvars.copy_context()
        task.submit_ns = time.monotonic_ns()
        return self._pool.submit(ctx.run, run_chunk, fn, task.items, task.first, task.index, task.cancel)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
