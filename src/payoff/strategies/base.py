"""The protocol every backend implements.

A strategy owns one pool. The executor asks it to start (once), to run chunks
(``submit`` returns a future of raw output, ``collect`` turns that into a
:class:`~payoff.worker.ChunkOutcome`, so decoding cost lands in the parent's
measured collection phase), and to stop: politely (``shutdown``) or now
(``kill``, for cancel and Ctrl-C).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass
from typing import Any, ClassVar

from payoff.worker import CancelToken, ChunkOutcome


@dataclass
class ChunkTask:
    """One chunk on its way to a worker."""

    index: int
    first: int
    items: Sequence[Any]
    cancel: CancelToken | None = None
    """Set when the call is cancelled; in-process chunks stop at their next timing block."""
    budget_ns: int | None = None
    """How long the chunk may run before it hands back the items it has not started (None: no limit)."""
    submit_ns: int = 0
    bytes_sent: int = 0
    encode_ns: int = 0
    retry: bool = False
    """Rerun after its pool broke."""
    alone: bool = False
    """Suspected of crashing a worker: runs with nothing else in flight, so a crash names it."""


class Strategy(ABC):
    """A pool of workers of one kind."""

    name: ClassVar[str]
    crosses_processes: ClassVar[bool] = False
    pickler: ClassVar[str] = ""
    """``pickle`` or ``cloudpickle`` where payloads cross processes."""
    _pool: Executor | None = None

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: str | None = None,
    ) -> None:
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.start_method = start_method
        self.broken = False

    def start(self) -> float:
        """Create the pool and prove every worker is up; returns seconds spent."""
        t0 = time.perf_counter()
        self._start()
        return time.perf_counter() - t0

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]: ...

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        """Prepare ``fn`` once per call for ``submit``; process pools may leave it in a file."""
        return fn

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """A plain call on the pool, for ``ParallelExecutor.submit``."""
        if self._pool is None:
            raise closed_pool(self.name)
        return self._pool.submit(fn, *args, **kwargs)

    def collect(self, raw: Any, task: ChunkTask) -> ChunkOutcome:
        assert isinstance(raw, ChunkOutcome)
        return raw

    @abstractmethod
    def shutdown(self, wait: bool = True) -> None: ...

    def kill(self) -> None:
        """Stop now: drop what is queued; running chunks stop as far as the backend allows."""
        self.shutdown(wait=False)

    def process_ids(self) -> list[int]:
        """Worker process ids (empty for in-process backends)."""
        return []

    def exit_codes(self) -> list[int]:
        """Exit codes of this pool's worker processes that have ended (negative: killed by that signal)."""
        return []

    def running_tasks(self) -> int:
        """Tasks still executing in threads that nothing can stop (threads only)."""
        return 0


class PoolClosedError(BrokenExecutor):
    """The pool was shut down or killed while a call still wanted it: the call retries on a fresh pool."""


def closed_pool(name: str) -> PoolClosedError:
    return PoolClosedError(f"the {name} pool is closed")
