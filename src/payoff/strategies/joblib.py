"""joblib: a private loky process pool, the engine behind ``joblib.Parallel``.

payoff does its own chunking, so it talks to loky directly rather than through
``Parallel``, whose result loop polls every 10 ms. Payloads are cloudpickled:
lambdas, closures and notebook functions work here, unlike ``processes``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import cloudpickle
from joblib.externals.loky import ProcessPoolExecutor as LokyPool

from payoff.strategies.base import closed_pool
from payoff.strategies.processes import PickledPoolStrategy
from payoff.worker import init_process

IDLE_WORKER_TIMEOUT_SECONDS = 300


class JoblibStrategy(PickledPoolStrategy):
    name = "joblib"
    pickler = "cloudpickle"
    retires_idle_workers = True

    def _dumps(self, obj: Any) -> bytes:
        return bytes(cloudpickle.dumps(obj))

    def _start(self) -> None:
        self._pool = LokyPool(max_workers=self.workers, timeout=IDLE_WORKER_TIMEOUT_SECONDS,
                              initializer=init_process, initargs=self._init_args(os.getpid()))
        self._warm_up()

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """loky's ``submit(fn, *args, **kwargs)`` takes ``fn`` by keyword too: keywords travel bound."""
        if self._pool is None:
            raise closed_pool(self.name)
        return self._pool.submit(functools.partial(fn, **kwargs) if kwargs else fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Queued work is cancelled, running work ends as it would (``kill`` stops the workers itself).

        Never loky's ``kill_workers=True``: its manager thread then drops every pending item while their
        work ids are still queued, and dies on the first one it meets (``KeyError`` on stderr, the
        pool's queues and semaphores left behind).
        """
        pool, self._pool = self._pool, None
        if isinstance(pool, LokyPool):
            self._cancel_queued_of(pool)
            pool.shutdown(wait=wait, kill_workers=False)
        self._remove_files()
