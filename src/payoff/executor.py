"""ParallelExecutor: one facade over serial, threads, processes, joblib and user executors.

Every call goes config -> plan -> strategy -> worker -> MapRecord -> observers.
Pools are created on first need and kept across calls (inside ``with`` and
without it) until ``shutdown``, the idle timeout, or interpreter exit: a pool
per call is the defect that makes parallel modes slower than a loop.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, CancelledError, Future, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any

from payoff import planning
from payoff.config import ParallelConfig
from payoff.observers import CallInfo, CallSite, Observer, Observers, find_call_site
from payoff.reasons import Reason
from payoff.record import MapRecord, RecordBuilder
from payoff.strategies import ChunkTask, Strategy, make_strategy
from payoff.strategies.external import ExternalStrategy, external_workers
from payoff.strategies.serial import SerialStrategy
from payoff.worker import CancelToken, ChunkOutcome

if TYPE_CHECKING:
    from payoff.report import Report

GRANULARITY_CHOICES = (None, "instance", "feature")
MAX_WORKLOAD_LABELS = 50
_WAIT_SLICE_SECONDS = 0.2

_live: weakref.WeakSet[ParallelExecutor] = weakref.WeakSet()


class ParallelExecutor:
    """Runs ``fn`` over items in parallel when, and only when, that pays off.

    >>> with ParallelExecutor() as ex:          # doctest: +SKIP
    ...     squares = ex.map(square, range(10_000))
    ...     print(ex.last_record.summary())
    """

    def __init__(
        self,
        config: ParallelConfig | None = None,
        *,
        observers: Sequence[Observer] | None = None,
        tracer_provider: object | None = None,
        meter_provider: object | None = None,
        max_records: int = 256,
    ) -> None:
        if config is not None and not isinstance(config, ParallelConfig):
            raise TypeError(f"config must be a ParallelConfig or None, got {type(config).__name__}")
        self.config = config if config is not None else ParallelConfig.from_env()
        if observers is None:
            from payoff.telemetry import default_observers

            observers = default_observers(tracer_provider, meter_provider)
        self._observers = Observers(observers)
        self.records: deque[MapRecord] = deque(maxlen=max_records)
        self._pools: dict[str, Strategy] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._depth = 0
        self._active = 0
        self._tokens: set[CancelToken] = set()
        self._cancel_generation = 0
        self._workload_calls: Counter[str] = Counter()
        self._last_used = time.monotonic()
        self._idle_thread: threading.Thread | None = None
        self._idle_wake = threading.Event()
        _live.add(self)

    # -- public surface ------------------------------------------------------

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        chunksize: int | None = None,
        granularity: str | None = None,
        workload: str = "default",
        releases_gil: bool | None = None,
        progress: bool | None = None,
    ) -> list[Any]:
        """``[fn(x) for x in items]``, in input order, run however pays off best.

        ``granularity`` names the axis the items split (``"instance"`` or
        ``"feature"``); ``workload`` labels the call in telemetry;
        ``releases_gil=True`` says ``fn`` spends its time outside the GIL
        (numpy, I/O), which makes threads the best choice; ``progress`` shows a
        bar (``None``: only in terminals and notebooks, after half a second).
        """
        out: list[Any] = []
        for block in self._run(fn, items, chunksize, granularity, workload, releases_gil, progress):
            out.extend(block)
        return out

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        chunksize: int | None = None,
        granularity: str | None = None,
        workload: str = "default",
        releases_gil: bool | None = None,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Like :meth:`map`, but yields results in order as soon as they are ready."""
        for block in self._run(fn, items, chunksize, granularity, workload, releases_gil, progress,
                               streaming=True):
            yield from block

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """One call on the pool, ``concurrent.futures`` style (threads unless a strategy is named)."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        name = self.config.strategy_name
        if not self.config.enabled or name == "serial":
            future: Future[Any] = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except Exception as exc:
                future.set_exception(exc)
            return future
        if name == "custom":
            return self.config.strategy.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]
        pool = self._pool_for("threads" if name == "auto" else name, planning.available_workers(self.config))
        return pool.submit_call(fn, *args, **kwargs)

    @property
    def last_record(self) -> MapRecord | None:
        return self.records[-1] if self.records else None

    def report(self, title: str = "payoff report") -> Report:
        """The kept records as a report: HTML in notebooks, a table in terminals, ``to_html(path)``."""
        from payoff.report import Report

        return Report(list(self.records), title=title)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release every pool; the executor stays usable and starts a new pool when needed."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            if cancel_futures:
                pool.kill()
            else:
                pool.shutdown(wait=wait)
        self._idle_wake.set()

    def close(self) -> None:
        self.shutdown(wait=True)

    def cancel(self) -> None:
        """Stop every running call now: they raise ``CancelledError``; no worker is left behind."""
        with self._lock:
            self._cancel_generation += 1
            for token in self._tokens:
                token.set()
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.kill()

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes, for diagnostics and tests."""
        with self._lock:
            return [pid for pool in self._pools.values() for pid in pool.process_ids()]

    def __enter__(self) -> ParallelExecutor:
        with self._lock:
            self._depth += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._depth -= 1
            outermost = self._depth == 0
        if outermost:
            self.shutdown(wait=exc_type is None, cancel_futures=exc_type is not None)

    # -- one call ------------------------------------------------------------

    def _run(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        chunksize: int | None,
        granularity: str | None,
        workload: str,
        releases_gil: bool | None,
        progress: bool | None,
        streaming: bool = False,
    ) -> Iterator[list[Any]]:
        """Yields each chunk's results, in input order."""
        _check_call(fn, items, chunksize, granularity, workload, releases_gil, progress)
        seq = items if isinstance(items, Sequence) else list(items)
        requested = self.config.strategy_name
        call = CallInfo(next(self._ids), self._workload_label(workload), requested, granularity, len(seq),
                        find_call_site(), progress=progress)
        rec = RecordBuilder(call.call_id, call.workload, requested, granularity, len(seq),
                            call.started_ns, call.started_at)
        token = CancelToken()
        generation = self._begin(token)
        self._observers.started(call)
        error: BaseException | None = None
        try:
            # map() consumes every chunk itself, so one scope can span the whole call; imap hands
            # control to the user between chunks, so there each stretch of work gets its own.
            with contextlib.nullcontext() if streaming else self._observers.scope(call):
                call.scoped = not streaming
                with self._observers.scope(call):
                    plan = self._plan(fn, seq, chunksize, granularity, releases_gil, requested, call.workload,
                                      rec)
                call.selected_strategy, call.workers = rec.selected, rec.workers
                self._observers.planned(call)
                yield from self._execute(plan, fn, seq, rec, call, token, generation, streaming)
        except GeneratorExit:
            token.set()
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._end(token)
            record = rec.build()
            self.records.append(record)
            _learn(record, fn)
            self._observers.finished(call, record, error)

    def _record_unmapped(self, n_items: int, reason: Reason, detail: str, workload: str, site: CallSite,
                         started_ns: int, started_at: float) -> MapRecord:
        """Record work a library did itself instead of calling ``map`` (a fallback no map call can see).

        Observers get it like any call, so the warning, the span and the
        fallback counter say what happened; it has no chunks and no speedup.
        """
        call = CallInfo(next(self._ids), self._workload_label(workload), self.config.strategy_name, None,
                        n_items, site, started_ns=started_ns, started_at=started_at)
        rec = RecordBuilder(call.call_id, call.workload, call.requested_strategy, None, n_items,
                            started_ns, started_at)
        rec.fall_back(reason, detail)
        self._observers.started(call)
        record = rec.build()
        self.records.append(record)
        self._observers.finished(call, record, None)
        return record

    def _plan(self, fn: Callable[[Any], Any], seq: Sequence[Any], chunksize: int | None,
              granularity: str | None, releases_gil: bool | None, requested: str, workload: str,
              rec: RecordBuilder) -> planning.Plan:
        t0 = time.perf_counter_ns()
        with self._lock:
            warm = frozenset(name for name, pool in self._pools.items() if not pool.broken)
            prior = self._workload_calls[workload]
            self._workload_calls[workload] += 1
        plan = planning.plan(planning.Call(fn, seq, self.config, requested, chunksize, granularity,
                                           releases_gil, warm, prior))
        if requested == "custom" and plan.strategy == "custom":
            plan = _replace_workers(plan, external_workers(self.config.strategy, plan.workers))
        probe_ns = plan.probe.outcome.end_ns - plan.probe.outcome.start_ns if plan.probe.outcome else 0
        rec.overhead_ns["planning"] += max(0, time.perf_counter_ns() - t0 - probe_ns)
        rec.selected, rec.workers, rec.decision = plan.strategy, plan.workers, plan.decision
        rec.chunk_size, rec.cpu_ratio = plan.chunk_size, plan.probe.cpu_ratio
        rec.probe_items = plan.probe.n
        if plan.fallback is not None:
            rec.fall_back(plan.fallback, plan.detail)
        return plan

    def _execute(self, plan: planning.Plan, fn: Callable[[Any], Any], seq: Sequence[Any],
                 rec: RecordBuilder, call: CallInfo, token: CancelToken, generation: int,
                 streaming: bool) -> Iterator[list[Any]]:
        start = 0
        probe = plan.probe.outcome
        if probe is not None:
            self._observers.chunk(call, rec.add(probe, "caller", probe.start_ns))
            if probe.error is not None:
                raise probe.error
            start = probe.n_done
            yield probe.results
        if start >= len(seq):
            return
        pool = None if plan.strategy == "serial" else self._acquire(plan, rec)
        if pool is None:
            call.selected_strategy, call.workers = "serial", 1
            step = plan.chunk_size if streaming else len(seq)
            yield from self._serially(fn, seq, range(start, len(seq), max(1, step)), step, rec, call, token)
            return
        yield from self._in_parallel(pool, plan, fn, seq, start, rec, call, token, generation)

    def _serially(self, fn: Callable[[Any], Any], seq: Sequence[Any], starts: Iterable[int], size: int,
                  rec: RecordBuilder, call: CallInfo, token: CancelToken) -> Iterator[list[Any]]:
        for lo in starts:
            outcome = self._in_caller(fn, seq, len(rec.chunks), lo, size, rec, call, token, "caller")
            if token.is_set():
                raise CancelledError("payoff: the map was cancelled")
            yield outcome.results

    def _in_caller(self, fn: Callable[[Any], Any], seq: Sequence[Any], index: int, lo: int, size: int,
                   rec: RecordBuilder, call: CallInfo, token: CancelToken, where: str) -> ChunkOutcome:
        """One chunk run in the calling thread, under the observers' scope."""
        items = seq[lo:lo + size] if lo or size < len(seq) else seq
        task = ChunkTask(index, lo, items, token)
        with self._observers.scope(call):
            outcome: ChunkOutcome = SerialStrategy(1).submit(fn, task).result()
        self._observers.chunk(call, rec.add(outcome, where, task.submit_ns))
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def _in_parallel(self, pool: Strategy, plan: planning.Plan, fn: Callable[[Any], Any],
                     seq: Sequence[Any], start: int, rec: RecordBuilder, call: CallInfo,
                     token: CancelToken, generation: int) -> Iterator[list[Any]]:
        size = plan.chunk_size
        base = len(rec.chunks)
        pending = deque((base + i, lo) for i, lo in enumerate(range(start, len(seq), size)))
        in_flight: dict[Future[Any], ChunkTask] = {}
        ready: dict[int, ChunkOutcome] = {}
        order: deque[int] = deque()
        limit = plan.workers + max(1, plan.workers // 2)
        t0 = time.perf_counter_ns()
        shipped = pool.ship(fn)
        rec.overhead_ns["serialization"] += time.perf_counter_ns() - t0
        try:
            while pending or in_flight or order:
                if pending and len(in_flight) < limit:
                    with self._observers.scope(call):
                        self._top_up(pool, shipped, seq, size, pending, in_flight, order, limit, rec, token)
                while order and order[0] in ready:
                    yield ready.pop(order.popleft()).results
                if not in_flight:
                    continue
                done, _ = wait(in_flight, timeout=_WAIT_SLICE_SECONDS, return_when=FIRST_COMPLETED)
                self._raise_if_cancelled(generation)
                for future in done:
                    task = in_flight[future]
                    outcome = self._collect(pool, future, task, rec, call)
                    del in_flight[future]
                    if outcome.error is not None:
                        raise outcome.error
                    ready[task.index] = outcome
        except BrokenExecutor as exc:
            self._raise_if_cancelled(generation)
            self._discard(pool)
            if not self.config.force_serial_on_failure:
                raise
            rec.fall_back(Reason.MAP_FAILURE_RETRY, f"the {pool.name} pool broke: {exc}")
            call.selected_strategy, call.workers = "serial", 1
            redo = sorted([(t.index, t.first) for t in in_flight.values()] + list(pending))
            order.extend(index for index, _ in pending)
            in_flight.clear()
            yield from self._finish_after_failure(fn, seq, redo, size, ready, order, rec, call, token)
        except BaseException as exc:
            token.set()
            for future in in_flight:
                future.cancel()
            user_error = isinstance(exc, Exception) and not isinstance(exc, CancelledError)
            if pool.crosses_processes and not user_error:
                self._discard(pool)
            raise

    def _top_up(self, pool: Strategy, fn: Callable[[Any], Any], seq: Sequence[Any], size: int,
                pending: deque[tuple[int, int]], in_flight: dict[Future[Any], ChunkTask], order: deque[int],
                limit: int, rec: RecordBuilder, token: CancelToken) -> None:
        while pending and len(in_flight) < limit:
            index, lo = pending[0]
            task = ChunkTask(index, lo, seq[lo:lo + size], token)
            t0 = time.perf_counter_ns()
            future = pool.submit(fn, task)  # a broken pool raises here: the chunk stays pending for the retry
            pending.popleft()
            rec.overhead_ns["serialization"] += task.encode_ns
            rec.overhead_ns["dispatch"] += time.perf_counter_ns() - t0 - task.encode_ns
            in_flight[future] = task
            order.append(index)

    def _collect(self, pool: Strategy, future: Future[Any], task: ChunkTask, rec: RecordBuilder,
                 call: CallInfo) -> ChunkOutcome:
        raw = future.result()
        t0 = time.perf_counter_ns()
        outcome = pool.collect(raw, task)
        rec.overhead_ns["serialization"] += time.perf_counter_ns() - t0
        self._observers.chunk(call, rec.add(outcome, "pool", task.submit_ns))
        return outcome

    def _finish_after_failure(self, fn: Callable[[Any], Any], seq: Sequence[Any],
                              redo: list[tuple[int, int]], size: int,
                              ready: dict[int, ChunkOutcome], order: deque[int], rec: RecordBuilder,
                              call: CallInfo, token: CancelToken) -> Iterator[list[Any]]:
        """Rerun the unfinished chunks in the caller, then yield everything in order."""
        for index, lo in redo:
            ready[index] = self._in_caller(fn, seq, index, lo, size, rec, call, token, "retry")
        while order:
            yield ready.pop(order.popleft()).results

    # -- pools ---------------------------------------------------------------

    def _acquire(self, plan: planning.Plan, rec: RecordBuilder) -> Strategy | None:
        """The warm pool for ``plan``, or a new one; ``None`` after an init failure."""
        with self._lock:
            pool = self._pools.get(plan.strategy)
            if pool is not None and not pool.broken:
                rec.pool_reused = True
                return pool
        if plan.strategy == "custom":
            pool = ExternalStrategy(self.config.strategy, plan.workers)
            with self._lock:
                self._pools["custom"] = pool
            return pool
        try:
            pool = self._pool_for(plan.strategy, plan.workers, rec)
        except Exception as exc:
            if not self.config.force_serial_on_failure:
                raise
            rec.fall_back(Reason.INIT_FAILURE, f"the {plan.strategy} pool failed to start: {exc!r}")
            return None
        return pool

    def _pool_for(self, name: str, workers: int, rec: RecordBuilder | None = None) -> Strategy:
        with self._lock:
            existing = self._pools.get(name)
            if existing is not None and not existing.broken:
                return existing
            pool = make_strategy(name, workers, self.config)
            t0 = time.perf_counter()
            try:
                pool.start()
            except BaseException:
                pool.kill()
                if rec is not None:
                    rec.pool_started, rec.pool_start_failed = True, True
                    rec.pool_start_seconds = time.perf_counter() - t0
                raise
            if rec is not None:
                rec.pool_started, rec.pool_start_seconds = True, time.perf_counter() - t0
            self._pools[name] = pool
            self._watch_idle()
            return pool

    def _discard(self, pool: Strategy) -> None:
        pool.broken = True
        with self._lock:
            if self._pools.get(pool.name) is pool:
                del self._pools[pool.name]
        pool.kill()

    def _begin(self, token: CancelToken) -> int:
        with self._lock:
            self._active += 1
            self._tokens.add(token)
            return self._cancel_generation

    def _end(self, token: CancelToken) -> None:
        with self._lock:
            self._active -= 1
            self._tokens.discard(token)
            self._last_used = time.monotonic()

    def _raise_if_cancelled(self, generation: int) -> None:
        if self._cancel_generation != generation:
            raise CancelledError("payoff: the map was cancelled")

    def _workload_label(self, workload: str) -> str:
        with self._lock:
            known = self._workload_calls
            if workload in known or len(known) < MAX_WORKLOAD_LABELS:
                return workload
        return "other"

    # -- idle timeout ----------------------------------------------------------

    def _watch_idle(self) -> None:
        timeout = self.config.idle_timeout
        if timeout is None or (self._idle_thread is not None and self._idle_thread.is_alive()):
            return
        self._idle_wake.clear()
        ref = weakref.ref(self)
        thread = threading.Thread(target=_idle_loop, args=(ref, timeout, self._idle_wake),
                                  name="payoff-idle", daemon=True)
        self._idle_thread = thread
        thread.start()


def _idle_loop(ref: weakref.ReferenceType[ParallelExecutor], timeout: float, wake: threading.Event) -> None:
    """Close the pools of an executor nobody used for ``timeout`` seconds."""
    while True:
        wake.wait(timeout=max(0.05, timeout / 4))
        executor = ref()
        if executor is None:
            return
        with executor._lock:
            if not executor._pools:
                return
            idle = executor._active == 0 and time.monotonic() - executor._last_used >= timeout
        if idle:
            executor.shutdown(wait=False)
            return
        del executor


def _replace_workers(plan: planning.Plan, workers: int) -> planning.Plan:
    from dataclasses import replace

    return replace(plan, workers=workers)


def _learn(record: MapRecord, fn: Callable[[Any], Any]) -> None:
    """Feed measured item cost and backend overheads back into the planner."""
    if record.n_items and not record.n_errors:
        planning.KNOWLEDGE.observe(fn, record.serial_estimate_seconds / record.n_items)
    if record.pool_started and not record.pool_start_failed:
        planning.COSTS.learn(record.selected_strategy, start=record.pool_start_seconds)
    if record.mode != "parallel" or record.fallback_reason is not None or record.n_errors:
        return
    if record.decision_reason is Reason.AUTO_SHARED_MEMORY:
        planning.KNOWLEDGE.observe_threads(fn, record.speedup)
    pool_chunks = [c for c in record.chunks if c.where == "pool"]
    if not pool_chunks:
        return
    # Per-call overhead is the latency of getting work into the pool (and, symmetrically, back out):
    # submit to the first start. Idle gaps and imbalance inside a big map grow with the map, not the
    # call, and learning them here would keep every later small call serial (and so never re-measured).
    first_submit = min(c.submit_ns for c in pool_chunks)
    latency = max(0, min(c.start_ns for c in pool_chunks) - first_submit) / 1e9
    planning.COSTS.learn(record.selected_strategy, per_call=2 * latency)


def _check_call(fn: object, items: object, chunksize: object, granularity: object, workload: object,
                releases_gil: object, progress: object) -> None:
    if not callable(fn):
        raise TypeError(f"map() needs a callable as fn, got {type(fn).__name__}: {fn!r}")
    if not isinstance(items, Iterable):
        raise TypeError(f"map() needs an iterable of items, got {type(items).__name__}")
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int)
                                  or chunksize < 1):
        raise ValueError(f"chunksize must be None (automatic) or an int >= 1, got {chunksize!r}")
    if granularity not in GRANULARITY_CHOICES:
        raise ValueError(f"granularity must be None, 'instance' or 'feature', got {granularity!r}")
    if not isinstance(workload, str) or not workload:
        raise ValueError(f"workload must be a non-empty str (a telemetry label), got {workload!r}")
    if releases_gil not in (None, True, False):
        raise ValueError(f"releases_gil must be None, True or False, got {releases_gil!r}")
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None, True or False, got {progress!r}")


@atexit.register
def _close_all() -> None:
    for executor in list(_live):
        with contextlib.suppress(Exception):
            executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ParallelExecutor"]
