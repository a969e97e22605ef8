"""joblib: a private loky process pool, the engine behind ``joblib.Parallel``.

payoff does its own chunking, so it talks to loky directly rather than through
``Parallel``, whose result loop polls every 10 ms. Payloads are cloudpickled:
lambdas, closures and notebook functions work here, unlike ``processes``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from joblib.externals.loky import ProcessPoolExecutor as LokyPool
from joblib.externals.loky.process_executor import TerminatedWorkerError

from payoff import _by_value as by_value
from payoff import _out_of_band as out_of_band
from payoff.strategies.processes import PickledPoolStrategy
from payoff.strategies.reach import WorkerImports
from payoff.worker import init_process

IDLE_WORKER_TIMEOUT_SECONDS = 300


class JoblibStrategy(PickledPoolStrategy):
    name = "joblib"
    pickler = "cloudpickle"
    retires_idle_workers = True

    def exit_codes(self, broke: BaseException | None = None) -> list[int]:
        """The codes loky saw when it found a worker dead come first: it kills the others (SIGKILL) at once,
        often before payoff looks, and a clean exit, which may be an idle worker's retirement, ranks below a
        kill. loky's ``TerminatedWorkerError`` lists only the codes of the workers already dead then."""
        at_the_crash = _codes_at_the_crash(broke)
        return self.likeliest_first(at_the_crash) if at_the_crash else super().exit_codes()

    def _dumps(self, obj: Any) -> bytes:
        return by_value.dumps(obj)

    def _dumps_fn(self, fn: Any) -> out_of_band.OutOfBand:
        return out_of_band.dumps(fn, by_value.dumps)

    def _start(self) -> None:
        self._imports = WorkerImports(forked=False)
        self._pool = LokyPool(max_workers=self.workers, timeout=IDLE_WORKER_TIMEOUT_SECONDS,
                              initializer=init_process, initargs=self._init_args(os.getpid()))
        self._warm_up()

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


_LOKY_CODES = re.compile(r"exit codes of the workers are \{([^}]*)\}")


def _codes_at_the_crash(broke: BaseException | None) -> list[int]:
    """The exit codes in loky's crash message (``{EXIT(0), SIGKILL(-9)}``); none if it has no such list."""
    found = _LOKY_CODES.search(str(broke)) if isinstance(broke, TerminatedWorkerError) else None
    return [int(code) for code in re.findall(r"\((-?\d+)\)", found.group(1))] if found else []
