"""Threads: no pickling, shared memory; pays off when the work releases the GIL.

Each chunk runs inside a copy of the submitting context, so a span that is
current in the caller (the map span) is current in the worker thread too and
user spans nest under it.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from payoff.errors import WorkerInitError
from payoff.strategies.base import ChunkTask, Strategy, closed_pool, init_error
from payoff.strategies.daemon_threads import DaemonThreadPool
from payoff.worker import ping, run_chunk


class ThreadStrategy(Strategy):
    name = "threads"

    def _start(self) -> None:
        pool = DaemonThreadPool(self.workers, "payoff", self.initializer, self.initargs)
        self._pool = pool
        try:
            pings = [pool.submit(ping) for _ in range(self.workers)]
        except BrokenThreadPool as exc:  # an initializer raised before every ping was queued
            self._raise_start_failure(exc)
        self._await_ready(pings)

    def _init_error(self) -> WorkerInitError | None:
        pool = self._pool
        raised = pool.init_error if isinstance(pool, DaemonThreadPool) else None
        if raised is None:
            return None
        return init_error(self.initializer, repr(raised), "a worker thread", os.getpid(), raised)

    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]:
        pool = self._pool
        if pool is None:
            raise closed_pool(self.name)
        ctx = contextvars.copy_context()
        task.submit_ns = time.monotonic_ns()
        return self._into(pool, ctx.run, run_chunk, fn, task.items, task.first, task.index, task.cancel,
                          task.budget_ns, check_each=task.check_each)

    def shutdown(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    def cancel_queued(self) -> None:
        pool = self._pool
        if isinstance(pool, DaemonThreadPool):
            pool.cancel_queued()

    def running_tasks(self) -> int:
        pool = self._pool
        return pool.running if isinstance(pool, DaemonThreadPool) else 0

    def is_own_thread(self) -> bool:
        pool = self._pool
        return isinstance(pool, DaemonThreadPool) and pool.owns(threading.current_thread())
