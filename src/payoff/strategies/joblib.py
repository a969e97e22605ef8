"""joblib: a private loky process pool, the engine behind ``joblib.Parallel``.

payoff does its own chunking, so it talks to loky directly rather than through
``Parallel``, whose result loop polls every 10 ms. Payloads are cloudpickled:
lambdas, closures and notebook functions work here, unlike ``processes``.
"""

from __future__ import annotations

import os
from typing import Any

import cloudpickle
from joblib.externals.loky import ProcessPoolExecutor as LokyPool

from payoff.strategies.processes import PickledPoolStrategy
from payoff.worker import init_process

IDLE_WORKER_TIMEOUT_SECONDS = 300


class JoblibStrategy(PickledPoolStrategy):
    name = "joblib"
    pickler = "cloudpickle"

    def _dumps(self, obj: Any) -> bytes:
        return bytes(cloudpickle.dumps(obj))

    def _start(self) -> None:
        self._pool = LokyPool(max_workers=self.workers, timeout=IDLE_WORKER_TIMEOUT_SECONDS,
                              initializer=init_process,
                              initargs=(self.initializer, self.initargs, os.getpid()))
        self._warm_up()

    def shutdown(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if isinstance(pool, LokyPool):
            pool.shutdown(wait=wait, kill_workers=not wait)
        self._remove_shipped()
