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
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Protocol

from payoff import _own_pools
from payoff._forks import held_at_fork_hint
from payoff._waiting import woken_by
from payoff.config import ParallelConfig
from payoff.errors import PoolStartTimeoutError, WorkerInitError
from payoff.strategies.main_guard import refuse_while_importing_main
from payoff.strategies.reloads import Reload
from payoff.worker import CancelToken, ChunkOutcome

START_WAIT_SLICE_SECONDS = 0.2
"""Longest wait between checks of the calling map's cancel token and deadline during a start."""


class StartStop(Protocol):
    """What a pool start checks while it waits: the cancel token and deadline of the call(s) waiting for it."""

    def is_set(self) -> bool: ...

    def expired(self) -> bool: ...

    def seconds_left(self) -> float | None: ...


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
    check_each: bool = False
    """Its budget is checked before each item (``Plan.check_each``), not only between timing blocks."""
    killed_workers: bool = False
    """Lost as ``ChunkKilledWorkers`` says: the pool's own scheduler found it kills every worker it runs on."""


class Strategy(ABC):
    """A pool of workers of one kind."""

    name: ClassVar[str]
    crosses_processes: ClassVar[bool] = False
    pickler: ClassVar[str] = ""
    """``pickle`` or ``cloudpickle`` where payloads cross processes."""
    remote: ClassVar[bool] = False
    """Workers live on another service (a cluster): a pool that broke and cannot start again means that
    service is gone, not that an item crashed a worker (whose exit code this process never sees)."""
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
        self.stopped_by: str | None = None
        """Which call stopped this pool on purpose (its timeout, a cancel): the others lost work, not a worker."""
        self.start_timeout: float = ParallelConfig.pool_start_timeout
        """``ParallelConfig.pool_start_timeout``: the longest a start waits for its workers without a call timeout."""
        self.versions_written = 0
        """Versions of a large function this pool sent its workers for the first time (``ship``): a call that
        sent one paid a one-off cost its next calls do not (``MapRecord.fn_shipped``)."""
        self.inner_threads: int | None = None
        """``ParallelConfig.inner_threads``: the native threads (BLAS, OpenMP) a process worker may run."""
        self.forked_beside: tuple[str, ...] = ()
        """The program's other threads when this pool's workers were forked (none for other start methods)."""

    def lost_a_worker(self) -> bool:
        """Whether a worker of this pool has ended other than by the pool's own choice; the caller asks when no
        call holds the pool, so no call's item killed it (the OOM killer, an operator)."""
        return False

    def start(self, stop: StartStop | None = None) -> float:
        """Create the pool and prove every worker is up; returns seconds spent.

        The wait for the workers ends when ``stop`` expires (``PoolStartTimeoutError``) or is set
        (``CancelledError``), and after ``start_timeout`` in any case; the caller then kills the
        half-started pool.
        """
        if self.crosses_processes:
            refuse_while_importing_main(self.name)
        t0 = time.perf_counter()
        self._start_stop = stop
        try:
            with _own_pools.starting(self.crosses_processes):
                self._start()
        finally:
            self._start_stop = None
        return time.perf_counter() - t0

    _start_stop: StartStop | None = None

    @abstractmethod
    def _start(self) -> None: ...

    def _await_ready(self, pings: Sequence[Future[Any]]) -> None:
        """Wait for every worker's first answer, as bounded as :meth:`start` says; a failed one raises."""
        stop = self._start_stop
        began = time.monotonic()
        limit = began + self.start_timeout
        pending: set[Future[Any]] = set(pings)
        answered = woken_by(pending)  # a Ctrl-C leaves no ping's lock taken, as concurrent.futures.wait may
        while pending:
            left = stop.seconds_left() if stop is not None else None
            answered.wait(min(START_WAIT_SLICE_SECONDS, max(0.0, limit - time.monotonic()),
                              START_WAIT_SLICE_SECONDS if left is None else max(0.0, left)))
            answered.clear()
            done = {f for f in pending if f.done()}
            pending -= done
            for future in done:
                self._ready_or_raise(future)
            if not pending:
                return
            broken = self._start_broken()
            if broken is not None:
                raise broken
            waited = time.monotonic() - began
            if stop is not None and stop.expired():
                raise PoolStartTimeoutError(self._still_starting(len(pending), waited, "the call's timeout ran "
                                                                 "out"), by_call=True)
            if stop is not None and stop.is_set():
                raise CancelledError(f"payoff: the call was cancelled while its {self.name} pool was starting")
            if time.monotonic() >= limit:
                raise PoolStartTimeoutError(self._still_starting(
                    len(pending), waited, f"pool_start_timeout={self.start_timeout:g} s ran out"))

    def _start_broken(self) -> BaseException | None:
        """Why the start can no longer finish, seen while workers have not answered yet; None while it can."""
        return None

    def _ready_or_raise(self, ping: Future[Any]) -> None:
        try:
            ping.result()
        except Exception as exc:
            self._raise_start_failure(exc)

    def _raise_start_failure(self, exc: Exception) -> NoReturn:
        """A worker whose initializer raised breaks the pool: the initializer's error is the answer, when
        the pool can tell it (see :meth:`_init_error`), else the pool's own ``exc``."""
        error = self._init_error() if self.initializer is not None else None
        raise exc if error is None else error

    def _init_error(self) -> WorkerInitError | None:
        """What the ``worker_initializer`` raised in a worker of this pool, if the pool learned it."""
        return None

    def _still_starting(self, pending: int, waited: float, why: str) -> str:
        what = (f"its worker_initializer {describe_callable(self.initializer)} had not returned"
                if self.initializer is not None else "its workers had not come up")
        held = held_at_fork_hint(self.forked_beside)
        # the detail promised what to do and said nothing (advice trial); beside a lock hint too: a thread alive
        # at the fork (tqdm's monitor) is no proof of a held lock, and a slow initializer was told only of locks
        longer = "" if "pool_start_timeout" not in why else (
            "; if the start needs longer (an initializer loading a large model), raise pool_start_timeout "
            "(start_timeout= in PAYOFF_PARALLEL)")
        return (f"payoff: the {self.name} pool was still starting after {waited:.1f} s ({why}): {what} on "
                f"{pending} of {self.workers} workers{held}. The half-started pool was stopped; the next call "
                f"starts a fresh one{longer}")

    def departed_for(self, call: int) -> str | None:
        """Workers that left a cluster holding work of the call ``call`` (the ``payoff_call`` its chunks' futures
        carry), which its scheduler reran unseen, in words; None when none did, or the backend tells of each
        loss itself (a broken pool)."""
        return None

    def refresh(self, stop: StartStop | None = None) -> None:
        """A warm pool about to serve another call: count its workers again where they may have changed (a
        cluster); raises PoolClosedError when its workers are gone for good. Local pools know their count."""
        return None

    def outdated(self) -> list[Reload]:
        """The user's modules changed in this process (reloaded) since the workers got them; see
        :mod:`payoff.strategies.reloads`. Workers that share the caller's memory (threads) never hold old code."""
        return []

    def cancel_queued(self) -> None:
        """Cancel the work queued on this pool that no worker has taken yet; running work goes on."""
        return None

    @abstractmethod
    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]: ...

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        """Prepare ``fn`` once per call for ``submit``; process pools may leave it in a file."""
        return fn

    def sends_by_value(self, fn: Callable[[Any], Any]) -> bool:
        """Whether ``ship`` would send ``fn`` by value, with all it holds and every ``__main__`` global it reads,
        where pickle would name it: a cloudpickle backend does so for any ``__main__`` function."""
        return self.pickler == "cloudpickle"

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """A plain call on the pool, for ``ParallelExecutor.submit``."""
        pool = self._pool
        if pool is None:
            raise closed_pool(self.name)
        return self._into(pool, fn, *args, **kwargs)

    marks_submits = False
    """Whether a submitted call marks its worker's crash mark while it runs (``payoff._rescue``)."""

    def submit_marked(self, tag: int | None, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any], into: Future[Any] | None = None, rescue: Any = None) -> Future[Any]:
        """``submit_call``, the call marked with ``tag``, ending ``into`` (an earlier run's future) and taken
        over by ``rescue`` if its pool breaks, where the pool marks submitted calls (``payoff._rescue``)."""
        return self.submit_call(fn, *args, **kwargs)

    def _into(self, pool: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """``pool.submit``; a pool this strategy let go of meanwhile (``cancel()`` stopped it, another call
        discarded it) raises :class:`PoolClosedError`, on which the caller retries on a fresh pool, never the
        stdlib's "cannot schedule new futures after shutdown": the executor itself was not shut down."""
        try:
            future: Future[Any] = pool.submit(fn, *args, **kwargs)
        except RuntimeError as exc:
            if self._pool is pool or isinstance(exc, BrokenExecutor):
                raise
            raise closed_pool(self.name) from exc
        return future

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

    def where_the_dead_stood(self, call: int) -> list[int]:
        """The items of ``call`` (its cancel token's id) this pool's dead workers were running, where reruns
        marked them (``payoff._crash_marks``)."""
        return []

    def exit_codes(self, broke: BaseException | None = None) -> list[int]:
        """Exit codes of this pool's worker processes that have ended (negative: killed by that signal), the
        likeliest crash first; ``broke``, the error the pool broke with, may tell which one crashed."""
        return []

    def running_tasks(self) -> int:
        """Tasks still executing in threads that nothing can stop (threads only)."""
        return 0

    def is_own_thread(self) -> bool:
        """Whether the calling thread is one of this pool's workers (threads only): work it queued here and
        waited for could wait behind itself."""
        return False


def init_error(initializer: object, raised: str, where: str, pid: int | None,
               cause: BaseException) -> WorkerInitError:
    """What a pool start raises when its ``worker_initializer`` raised: ``cause`` is that exception or its text."""
    error = WorkerInitError(f"payoff: worker_initializer {describe_callable(initializer)} raised {raised} in "
                            f"{where}", pid=pid)
    error.__cause__ = cause
    return error


def describe_callable(fn: object) -> str:
    """``module.qualname`` of a function (its repr for anything else), for messages."""
    name = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(fn)


CANCEL_ALL = "cancel()"
"""``Strategy.stopped_by`` of a pool ``ParallelExecutor.cancel()`` stopped: its calls asked to be cancelled."""


class PoolClosedError(BrokenExecutor):
    """The pool was shut down or killed while a call still wanted it: the call retries on a fresh pool."""


def closed_pool(name: str) -> PoolClosedError:
    return PoolClosedError(f"the {name} pool is closed")
