"""The worker initializer as a dask worker plugin: it runs on every worker the cluster has and on each one that
joins later (a cluster scaled up, a nanny's restart after a crash, ``client.restart()``).

Run once on the workers there were, it left every later one without it: after a worker died under a map, the
chunks dask reran on its replacement ran where the initializer never had (``predict`` found no model).
Imported only with ``distributed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class InitializerFailed(Exception):
    """The initializer's own error on a worker, carried whole: told apart from a worker the scheduler could not
    reach, which fails the plugin's registration with a transport error (``CommClosedError``, ``OSError``)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error,))


class WorkerInitializer(WorkerPlugin):
    """Runs ``initializer(*args)`` as each worker sets the plugin up."""

    def __init__(self, initializer: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.initializer, self.args = initializer, args

    def setup(self, worker: Any) -> None:
        try:
            self.initializer(*self.args)
        except BaseException as exc:  # its own SystemExit too: the start fails with it, as on a process pool
            raise InitializerFailed(exc) from None
