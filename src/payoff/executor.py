"""ParallelExecutor: one facade over serial, threads, processes, joblib and user executors.

Every call goes config -> plan -> strategy -> worker -> MapRecord -> observers.
Pools are created on first need and kept across calls (inside ``with`` and
without it) until ``shutdown``, the idle timeout, or interpreter exit: a pool
per call is the defect that makes parallel modes slower than a loop.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import math
import numbers
import operator
import os
import threading
import time
import weakref
from array import array
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import BrokenExecutor, Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, SupportsIndex, TypedDict, TypeVar, Unpack, cast

from payoff import _exit, _forks, _maprun, _spare_threads, _waiting, planning
from payoff._event_loop import blocking_loop, warn_if_held, warn_if_waited
from payoff._knowledge import Knowledge, fn_key
from payoff._library import NO_LIBRARY, LibraryCall
from payoff._maprun import MapRun, on_a_thread_of_its_own
from payoff._pools import Lease, PoolKey, PoolRegistry, pool_key
from payoff._rescue import Rescue
from payoff._source import Source, as_given
from payoff._tracebacks import show_from_the_function
from payoff.config import MAX_SECONDS, ParallelConfig
from payoff.errors import PoolStartTimeoutError, WorkerCrashedError
from payoff.observers import CallInfo, CallSite, Observer, Observers, warn_before_raising
from payoff.reasons import Reason
from payoff.record import MapRecord, RecordBuilder
from payoff.strategies import make_strategy
from payoff.strategies.start_failure import interpreter_shutting_down, os_refusal
from payoff.worker import (
    CancelToken,
    ChunkOutcome,
    Star,
    Submitted,
    Zipped,
    in_submitted,
    in_worker,
    in_worker_process,
    initialize_here,
    running_calls,
)

if TYPE_CHECKING:
    from payoff.report import Report

_R = TypeVar("_R")
_P = ParamSpec("_P")


class MapOptions(TypedDict, total=False):
    """The keyword options every map call takes (:meth:`ParallelExecutor.map`), for a type checker to check."""

    chunksize: int | None
    granularity: str | None
    workload: str
    releases_gil: bool | None
    progress: bool | None
    timeout: float | None


GRANULARITY_CHOICES = (None, "instance", "feature")
MAX_WORKLOAD_LABELS = 50
SPARE_JOIN_SECONDS = 1.0
"""How long ``shutdown(wait=True)`` waits for each idle kept thread it released to end (it ends at once)."""

_live: weakref.WeakSet[ParallelExecutor] = weakref.WeakSet()


class ParallelExecutor:
    """Runs ``fn`` over items in parallel when, and only when, that pays off.

    >>> with ParallelExecutor() as ex:          # doctest: +SKIP
    ...     squares = ex.map(square, range(10_000))
    ...     print(ex.last_record.summary())
    """

    def __init__(
        self,
        max_workers: int | ParallelConfig | None = None,
        strategy: object | None = None,
        *,
        config: ParallelConfig | None = None,
        observers: Sequence[Observer] | None = None,
        tracer_provider: object | None = None,
        meter_provider: object | None = None,
        max_records: int = 256,
        planner: planning.Planner | None = None,
    ) -> None:
        """``ParallelExecutor(4)``, ``ParallelExecutor(max_workers=4, strategy="processes")`` or
        ``ParallelExecutor(config=ParallelConfig(...))`` (a config as the first argument works too).

        The shortcuts apply on top of ``config`` (or of ``PAYOFF_PARALLEL``/``CE_PARALLEL``). ``observers``
        replace the default telemetry (``[]`` for none); a call's ``progress=True`` still draws its bar.
        """
        config = _config_from(max_workers, strategy, config)
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0:
            raise ValueError(f"max_records must be an int >= 0 (the records kept in .records), got {max_records!r}")
        self._pools = PoolRegistry()
        self._start_timeouts: weakref.WeakKeyDictionary[MapRun, PoolStartTimeoutError] = weakref.WeakKeyDictionary()
        """Calls whose own timeout ran out while their pool was starting: their ``TimeoutError`` says so."""
        self._pools.stop_for_caller = _caller_stop(weakref.ref(self))
        self._planner = planner if planner is not None else planning.PLANNER
        self.config = config
        self._closed = False
        if observers is None:
            from payoff.telemetry import default_observers

            observers = default_observers(tracer_provider, meter_provider)
        self._observers = Observers(_with_progress(_checked_observers(observers)))
        self.records: deque[MapRecord] = _Records(maxlen=max_records)
        self._mine = threading.local()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._depth = 0
        self._active = 0
        self._runs: set[MapRun] = set()
        self._runs_changed = threading.Condition(self._lock)
        self._submitted: set[Future[Any]] = set()
        """Submitted calls not done yet: the program's end waits for them, as ``concurrent.futures`` does."""
        self._started_for: dict[str, Hashable | None] = {}
        """By strategy: the key (``fn_key``) of the function whose auto call started the current pool
        (``Knowledge.pool_closed``): not the function, which may hold what holds this executor."""
        self._workload_calls: Counter[str] = Counter()
        self._last_used = time.monotonic()
        self._idle_thread: threading.Thread | None = None
        self._idle_wake = threading.Event()
        self._dropped = _on_drop(self)
        _live.add(self)

    # -- public surface ------------------------------------------------------

    @property
    def config(self) -> ParallelConfig:
        return self._config

    @config.setter
    def config(self, config: ParallelConfig) -> None:
        """A new config applies to the next call; pools it no longer describes are released."""
        if not isinstance(config, ParallelConfig):
            raise TypeError(f"config must be a ParallelConfig, got {type(config).__name__}")
        old, self._config = getattr(self, "_config", None), config
        if old is not None and config != old:
            self._pools.retire(_still_fits(config))
            self._idle_wake.set()

    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        granularity: str | None = None,
        workload: str = "default",
        releases_gil: bool | None = None,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> list[_R]:
        """``list(map(fn, *iterables))``, in input order, run however pays off best.

        Several iterables give ``fn`` one argument from each, up to the
        shortest, as the builtin does. ``granularity`` names the axis the
        items split (``"instance"`` or ``"feature"``; ``"auto"``, like None,
        names none); ``workload`` labels the
        call in telemetry; ``releases_gil=True`` says ``fn`` spends its time
        outside the GIL (numpy, I/O), which makes threads the best choice;
        ``progress`` shows a bar (``None``: only in terminals and notebooks,
        once the call has run half a second; shorter calls make none); ``timeout`` (seconds, whole call) raises
        ``TimeoutError`` and stops the call's worker processes. The whole input is read before the first
        item runs, so the plan knows its length; an input slow to yield (a cursor, a socket: still read
        after 50 ms, at under 100,000 items a second) is read as it goes, as ``imap`` reads it, its items
        running meanwhile. Items valid only until the next read (``itertools.groupby``'s groups) need
        ``imap`` or a list (docs/reliability.md). An error the input raises is raised after the items before
        it ran, as the builtin's: one of theirs goes first.
        """
        loop = blocking_loop()
        started = time.monotonic()
        fn, items = _spread(fn, iterables)
        chunksize, granularity, timeout = _plain_call(chunksize, granularity, timeout)
        out: list[Any] | None = None
        try:
            for block in self._run(fn, items, chunksize, granularity, workload, releases_gil, progress, timeout):
                if out is None:
                    out = block  # the first chunk's own fresh list: a serial call returns it without a copy
                elif len(block) > len(out):  # a probe's few results ahead of the rest: move the few, not the rest
                    block[0:0] = out
                    out = block
                else:
                    out.extend(block)
        except BaseException as exc:  # an item's error from here on: a loop's traceback (see _tracebacks)
            if isinstance(exc, WorkerCrashedError) and out:  # handed here in order already: finished all the same
                exc.completed = {**dict(enumerate(out)), **exc.completed}
            if show_from_the_function(exc):
                raise exc
            raise
        out = [] if out is None else out
        if loop is not None and not in_worker():  # a map in an item of a serial map: the outer call is said
            warn_if_held(loop, started, len(out))
        return out

    def starmap(
        self,
        fn: Callable[..., _R],
        iterable: Iterable[Iterable[Any]],
        *,
        chunksize: int | None = None,
        granularity: str | None = None,
        workload: str = "default",
        releases_gil: bool | None = None,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> list[_R]:
        """``[fn(*args) for args in iterable]``; takes :meth:`map`'s keyword options."""
        return self.map(Star(fn), iterable, chunksize=chunksize, granularity=granularity, workload=workload,
                        releases_gil=releases_gil, progress=progress, timeout=timeout)

    def imap(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        chunksize: int | None = None,
        granularity: str | None = None,
        workload: str = "default",
        releases_gil: bool | None = None,
        progress: bool | None = None,
        timeout: float | None = None,
    ) -> Iterator[_R]:
        """Like :meth:`map`, but yields results in order as soon as they are ready.

        An iterator input is read only as far as the work has got (a bounded
        number of items in flight), so an endless generator works under
        ``itertools.islice``. Bad arguments raise here, not at the first ``next()``.
        """
        options = {"chunksize": chunksize, "granularity": granularity, "workload": workload,
                   "releases_gil": releases_gil, "progress": progress, "timeout": timeout}
        return self._stream(fn, iterables, options)

    def imap_unordered(self, fn: Callable[..., _R], *iterables: Iterable[Any],
                       **options: Unpack[MapOptions]) -> Iterator[_R]:
        """Like :meth:`imap`, but each chunk's results come as soon as that chunk is done, in any order.

        The call's record is as complete as for :meth:`map`.
        """
        return self._stream(fn, iterables, options, ordered=False)

    def _stream(self, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], options: Mapping[str, Any],
                ordered: bool = True, library: LibraryCall = NO_LIBRARY) -> Iterator[Any]:
        """Checks the call at once, as ``map`` and ``concurrent.futures`` do; the work starts when iterated.

        ``library``: what a library of this package that split the work into items itself says about them.
        """
        fn, items = _spread(fn, iterables)
        known = {"chunksize": None, "granularity": None, "workload": "default", "releases_gil": None,
                 "progress": None, "timeout": None}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}; accepted: {', '.join(known)}")
        args = {**known, **options}
        args["chunksize"], args["granularity"], args["timeout"] = _plain_call(args["chunksize"], args["granularity"],
                                                                             args["timeout"])
        self._check_open(nested_ok=True)
        _check_call(fn, items, *args.values())
        # the deadline counts from this call, as concurrent.futures' map's does, not from the first next()
        deadline = None if args["timeout"] is None else time.monotonic() + args["timeout"]
        return self._results(self._run(fn, items, **args, streaming=True, ordered=ordered, accepted=True,
                                       library=library, deadline=deadline))

    @staticmethod
    def _results(blocks: Iterator[list[Any]]) -> Iterator[Any]:
        """The results, block by block; the time each block was waited for in a running asyncio loop's thread
        is summed, and said once past the loop's bar (``_event_loop.warn_if_waited``)."""
        held, told = 0.0, in_worker()  # an imap in an item of a serial map: the outer call is said
        try:
            while True:
                loop = None if told else blocking_loop()
                started = time.monotonic()
                block = next(blocks, None)
                if block is None:
                    return
                waited = time.monotonic() - started
                yield from block
                if loop is not None:  # said once its results are out: a warning made an error loses none
                    held += waited + getattr(block, "work_ns", 0) / 1e9  # a serial run's items ran as handed out
                    told = warn_if_waited(loop, held)
        except BaseException as exc:  # an item's error from here on: a loop's traceback (see _tracebacks)
            if show_from_the_function(exc):
                raise exc
            raise

    def submit(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]:
        """One call on the pool, ``concurrent.futures`` style (threads unless a strategy is named).

        Not recorded: no ``MapRecord``, span or metrics, and nothing is learned from it. One call has no
        chunks to weigh against serial, and a record with its observers costs about 30 us in the caller,
        about half a thread pool's round trip (README, "Install and use").
        """
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        _check_not_async(fn, "submit()")
        self._check_open()
        config = self.config
        name = config.strategy_name
        if not config.enabled or name == "serial":
            self._initialize_caller(config)  # the caller is the worker, as for a serial map
            return _run_now(fn, args, kwargs)
        if name == "custom":
            return config.strategy.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]
        name = "threads" if name == "auto" else name
        if in_worker_process():  # as a map there is nested: a pool of its own in every worker oversubscribes
            return _run_now(fn, args, kwargs)
        if planning.starts_processes(config, name) and not planning.may_start_processes():
            self._initialize_caller(config)  # a daemonic process, as a map there is nested: no children
            return _run_now(fn, args, kwargs)
        try:
            try:
                return self._submit_on_pool(config, name, fn, args, kwargs)
            except BrokenExecutor:  # the pool broke since its last call: replaced once, as a map's is
                return self._submit_on_pool(config, name, fn, args, kwargs)
        except RuntimeError as exc:  # at the program's end its pools stop (a daemon thread's submit may meet one)
            if not (interpreter_shutting_down(exc) or _exit.program_ending()):
                raise
        self._initialize_caller(config)  # at exit no pool starts or takes work: it runs here, as a map there does
        return _run_now(fn, args, kwargs)

    def _submit_on_pool(self, config: ParallelConfig, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Future[Any]:
        """The call holds the executor open until its future is done, however many times it is sent: shutdown
        waits for it, the idle timer too. On a process pool it runs again when a pool another call broke
        lost it (``payoff._rescue``)."""
        self._begin()
        rescue: Rescue | None = None
        lease: Lease | None = None
        try:
            lease = self._lease_for_submit(config, name)
            # an item or submitted task of this pool, which may wait for this call: it would wait behind itself
            # (a done-callback on the pool's thread is neither: its submit queues, so a chain of them does not nest)
            here = lease.pool.is_own_thread() and (in_worker() or in_submitted())
            if here:
                self._give_back(lease, False, in_callback=False)
                future = _run_now(fn, args, kwargs)
            else:
                if lease.pool.marks_submits:
                    rescue = Rescue(lease, relay=(lambda: self._lease_for_submit(config, name),
                                                  lambda at, tag, into: self._send_submitted(at, fn, args, kwargs, tag,
                                                                                             into)),
                                    give_back=self._give_back, epoch=self._cancel_count)
                future = self._send_submitted(lease, fn, args, kwargs, rescue=rescue)
        except BaseException:
            if lease is not None:  # nothing was sent (a Ctrl-C before it left the pool leased, and shutdown waiting)
                self._give_back(lease, False, in_callback=False)
            self._end()
            raise
        if not here:
            self._submitted.add(future)
            future.add_done_callback(self._submitted.discard)
        if rescue is not None and getattr(future, "rescue", None) is rescue:
            future.add_done_callback(_Once(functools.partial(self._rescued_ended, cast("Rescue", rescue))))
        elif not here:  # a call run here gave its lease back already
            future.add_done_callback(_Once(functools.partial(self._done_submitted, lease)))
        future.add_done_callback(_Once(lambda _: self._end()))
        return future

    def _rescued_ended(self, rescue: Rescue, future: Future[Any]) -> None:
        """Its last run's lease given back; and its rescue let go, which holds its function and arguments."""
        self._done_submitted(rescue.take_lease(), future)
        future.rescue = None  # type: ignore[attr-defined]

    def _lease_for_submit(self, config: ParallelConfig, name: str) -> Lease:
        """A pool the OS refused to start raises its error, as ``concurrent.futures`` does, with a note of what
        the OS refused and what to do, as a map's fallback detail says (a bare ``OSError`` said neither)."""
        workers = planning.available_workers(config)
        try:
            return self._pools.lease(pool_key(config, name, workers), lambda: make_strategy(name, workers, config),
                                     watch=False)
        except Exception as exc:
            refusal = os_refusal(name, exc)
            if refusal is not None:
                exc.add_note(f"payoff: {refusal}")
            raise

    def _send_submitted(self, lease: Lease, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                        tag: int | None = None, into: Future[Any] | None = None,
                        rescue: Rescue | None = None) -> Future[Any]:
        """The call sent to the leased pool; a pool found broken on the way is given back broken."""
        try:
            return lease.pool.submit_marked(tag, Submitted(fn, id(lease.pool)), args, kwargs, into, rescue)
        except BaseException as exc:
            if into is None:  # a run again gives its lease back itself
                self._give_back(lease, isinstance(exc, BrokenExecutor), in_callback=False)
            raise

    def _give_back(self, lease: Lease, broken: bool, *, in_callback: bool = True) -> None:
        """A submitted call's lease released (marking its pool broken); ``in_callback``: from a future's
        done-callback, on the pool's own thread (see ``PoolRegistry.release``)."""
        if broken:
            lease.pool.broken = True
        self._pools.release(lease, in_callback=in_callback)

    def _done_submitted(self, lease: Lease | None, future: Future[Any]) -> None:
        """A sent call gives its pool back when it is done. One that broke its pool (a worker died) marks it
        broken first: the next call, submitted or mapped, gets fresh workers, and nothing is learned against
        its function."""
        if lease is not None:
            self._give_back(lease, not future.cancelled() and isinstance(future.exception(), BrokenExecutor))

    def _cancel_count(self) -> int:
        """How many cancels (``cancel()``, ``shutdown(cancel_futures=True)``) the executor has had."""
        return self._cancels

    _cancels = 0

    @property
    def last_record(self) -> MapRecord | None:
        """The calling thread's latest map call on this executor; from a thread that made none, the latest.

        Request threads sharing one executor each read their own call: the executor's latest could be
        another request's by the time a thread looks. A coroutine that awaited ``asyncio.to_thread(ex.map, ...)``
        runs in the loop's thread, not the one that mapped: read the record in that thread (docs/quickstart.md,
        "From asyncio code").
        """
        mine: MapRecord | None = getattr(self._mine, "record", None)
        if mine is not None:
            return mine
        return self.records[-1] if self.records else None

    def _keep(self, record: MapRecord, owner: threading.Thread | None = None) -> None:
        """The latest record whole; the one it follows, now older, as records are kept (``MapRecord.kept``).

        Each call leans the record its own append made older, outside the lock, and puts the lean copy where
        that record is by then: calls of other threads may have appended theirs meanwhile. ``owner``: the thread
        that made the call, whose ``last_record`` it becomes; another thread ending it (a garbage collection
        there closed an imap dropped in a reference cycle) read it as its own call's (hunt 56, F2)."""
        with self._lock:
            self.records.append(record)
            older = self.records[-2] if len(self.records) > 1 else None
        if owner is None or owner is threading.current_thread():  # not its ident: a new thread may reuse it
            self._mine.record = record
        lean = older.kept() if older is not None else None
        if lean is None or lean is older:
            return
        with self._lock:
            for i in range(len(self.records) - 2, -1, -1):  # near the end, unless it fell out of the deque
                if self.records[i] is older:
                    self.records[i] = lean
                    break

    def report(self, title: str = "payoff report", *, last: int | None = None) -> Report:
        """The kept records as a report: HTML in notebooks, a table in terminals, ``to_html(path)``. ``last``:
        only the last so many calls, as ``payoff report --last N`` (a notebook's report details the last ten,
        ``report.html.NOTEBOOK_SECTIONS``: 256 kept records in detail were 3.5 MB of HTML in the cell)."""
        from payoff.report import Report

        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise ValueError(f"last must be an int >= 1 (the calls to show) or None (all), got {last!r}")
        records = list(self.records)
        return Report(records[-last:] if last else records, title=title)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release every pool and close the executor, as ``concurrent.futures`` does.

        Running maps and submitted calls finish on the pools they hold
        (``wait=True`` waits for them). ``cancel_futures=True`` cancels what
        no worker has started yet, as ``concurrent.futures`` does: queued
        submitted calls end cancelled, running maps raise ``CancelledError``,
        and work already running finishes (``wait=True`` waits for it); to
        stop running work too, call :meth:`cancel`. Afterwards ``map`` and
        ``submit`` raise ``RuntimeError`` until the executor is entered again
        (``with ex:``), which reopens it.
        """
        with self._lock:
            self._closed = self._pools.closed = True
            running = set(self._runs)  # once closed, only a reopen lets more begin: not this shutdown's to wait for
            if cancel_futures:
                self._pools.gentle = True  # a pool a cancelled map gives up keeps its running work
        if _forks.holding_a_lock():  # a signal handler (SIGTERM's graceful stop) or a collection ran this inside
            # one of payoff's locks, which the interrupted frame lets go once this returns: not waited for here
            on_a_thread_of_its_own(self._close, False, cancel_futures, running)
            return
        self._close(wait and not self._inside_own_work(), cancel_futures, running)

    def _close(self, wait: bool, cancel_futures: bool, running: set[MapRun]) -> None:
        if wait:
            self._detach_paused()
        _count_closed(self._pools, self._started_for, self._planner.knowledge.pool_closed)
        self._pools.retire(close_idle=not wait)  # first: a pool given up below is then waited for and joined
        if cancel_futures:
            self._cancel_queued()
        if wait:
            self._wait_for_runs(running)
            self._pools.wait_closed()  # joins every worker, the idle pools' too, as concurrent.futures does
        for thread in _spare_threads.release_idle():  # the threads kept to run callers' items under a timeout
            if wait:
                thread.join(SPARE_JOIN_SECONDS)
        self._idle_wake.set()

    def _cancel_queued(self) -> None:
        """``cancel_futures``: running maps stop submitting and raise ``CancelledError``; the work queued on
        every pool, theirs and submitted calls', is cancelled; what workers have started goes on."""
        self._stop_calls()
        self._pools.cancel_queued()

    def _stop_calls(self) -> None:
        """Every running map told to stop, and the submitted calls given up on: the program's end does not wait
        for them (a thread task still running cannot be stopped)."""
        with self._lock:
            runs = list(self._runs)
            self._cancels += 1
        self._submitted.clear()
        for run in runs:
            run.token.set()

    def _inside_own_work(self) -> bool:
        """Called from this executor's own work (an item, a submitted task, an observer of a call running in
        this thread): waiting would wait for the caller itself, so shutdown cannot wait there."""
        return in_worker() or in_submitted() or self._running_here()

    def _running_here(self) -> bool:
        """Whether one of this executor's calls runs in this thread now (not an ``imap`` paused here)."""
        me = threading.get_ident()
        with self._lock:
            return any(run.thread == me and not run.paused for run in self._runs)

    def _detach_paused(self) -> None:
        """An ``imap`` paused in this thread's hands cannot resume while this thread waits: it stops instead.

        Its caller may never come back (a ``with`` block left after ``next(it)``).
        """
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.detach()

    def _wait_for_runs(self, running: set[MapRun]) -> None:
        """Every call of ``running`` ends, including one still planning or starting its pool.

        Calls begun after a reopen (the shared executor of ``payoff.map`` reopens
        for its next call) are not waited for: other threads mapping all along
        kept a ``with payoff.default_executor():`` from ever being left. An
        ``imap`` whose reader thread ends meanwhile without finishing it is let go then; one another live
        thread keeps paused is waited for, and named in a warning after ``READER_GRACE_SECONDS``.
        """
        since, said = time.monotonic(), False
        while True:
            with self._lock:
                if all(run.detached or run not in self._runs for run in running):
                    return
                self._runs_changed.wait(0.2)
            self._detach_paused()
            if not said and time.monotonic() - since >= _maprun.READER_GRACE_SECONDS:
                said = self._say_kept_paused(running)

    def _say_kept_paused(self, running: set[MapRun]) -> bool:
        """Warn that shutdown waits for ``imap`` calls other live threads keep paused, naming them; whether any."""
        grace = _maprun.READER_GRACE_SECONDS
        holders = sorted({t.name for run in running if (t := run.kept_paused_by(grace)) is not None})
        if not holders:
            return False
        note = warn_before_raising(RuntimeWarning(
            f"payoff: shutdown(wait=True) has waited {grace:g} s for an imap that thread(s) {', '.join(holders)} "
            "keep paused, and waits for as long as they keep it unfinished: take its results or close() it in "
            "that thread, or shut down with wait=False (it then finishes on its retired pool)"))
        if note is not None:  # -W error: raised out of here, it cut the shutdown short and left its pools
            logging.getLogger("payoff").warning("%s", note)
        return True

    def _release_pools(self) -> None:
        self._pools.retire()
        self._idle_wake.set()

    def _reopen(self) -> None:
        """After a ``shutdown``: the next call starts pools again (what entering ``with`` does, uncounted)."""
        with self._lock:
            self._closed = self._pools.closed = self._pools.gentle = False

    def _check_open(self, nested_ok: bool = False) -> None:
        if self._closed and not (nested_ok and self._inside_a_running_call()):
            raise RuntimeError("cannot schedule new work after shutdown(); enter the executor again "
                               "(`with ex:`) to reopen it")

    def _inside_a_running_call(self) -> bool:
        """Whether this code runs in an item of one of this executor's running calls: a map there is part of that
        call, which ``shutdown`` lets finish (an object mapping its own method, whose items map again on its
        executor: a shutdown from another thread failed the running call, 12 of 12: interrupts trial)."""
        tokens = running_calls()
        with self._lock:  # a pool's chunk carries its call's token; an item in the caller (a probe) runs in its thread
            return any(t is run.token for run in self._runs for t in tokens) or (in_worker() and self._running_here())

    def close(self) -> None:
        self.shutdown(wait=True)

    def cancel(self) -> None:
        """Stop every running call now: they raise ``CancelledError``; worker processes are stopped."""
        self._stop_calls()
        self._pools.kill_all()
        self._idle_wake.set()

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes, for diagnostics and tests."""
        return [pid for pool in self._pools.current() for pid in pool.process_ids()]

    def __reduce__(self) -> tuple[Callable[..., ParallelExecutor], tuple[ParallelConfig, int | None]]:
        """Pickled, it is its config: an object that holds its executor and maps its own method sends itself,
        executor and all, to the worker processes (it did not pickle, and every such call ran serially). The
        copy there has no pool, record or planner of this one's; a map on it inside an item is nested."""
        return _carried, (self.config, self.records.maxlen)

    def __copy__(self) -> ParallelExecutor:
        """Itself, as a logger is: its pools are meant to live across calls, and a library that copies its
        parameters (scikit-learn's ``clone`` deep-copies them) would start a pool of its own for each copy."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ParallelExecutor:
        return self

    def __enter__(self) -> Self:
        with self._lock:
            self._depth += 1
            self._closed = self._pools.closed = self._pools.gentle = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._depth -= 1
            outermost = self._depth == 0
        if not outermost:
            return
        if exc_type is not None and not issubclass(exc_type, Exception):  # Ctrl-C, SystemExit: stop now
            with self._lock:
                self._closed = self._pools.closed = True
            self.cancel()
            return
        self.shutdown(wait=True)

    # -- one call ------------------------------------------------------------

    def _run(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int | None, granularity: str | None,
             workload: str, releases_gil: bool | None, progress: bool | None, timeout: float | None,
             streaming: bool = False, ordered: bool = True, accepted: bool = False,
             library: LibraryCall = NO_LIBRARY, deadline: float | None = None) -> Iterator[list[Any]]:
        """Yields each chunk's results, in input order (unless ``ordered=False``).

        ``deadline``: an ``imap``'s, set when it was called (``timeout`` counts from then).
        ``accepted``: an ``imap`` checked (and so accepted) while the executor was open. It runs when first
        iterated, even after a ``shutdown`` meanwhile, on a pool of its own that closes when the call ends:
        ``concurrent.futures``' map results stay available after ``with``, and so do these.
        """
        started_ns = time.monotonic_ns()  # the call's wall time includes checking and reading its input
        if not accepted:
            self._check_open(nested_ok=True)
            _check_call(fn, items, chunksize, granularity, workload, releases_gil, progress, timeout)
        if deadline is None and timeout is not None:  # reading the input counts
            deadline = time.monotonic() + timeout
        run = MapRun(self, fn, Source(items, lazy=streaming, deadline=deadline), chunksize=chunksize,
                     granularity=granularity, workload=workload, releases_gil=releases_gil, progress=progress,
                     timeout=timeout, streaming=streaming, ordered=ordered, deadline=deadline, started_ns=started_ns,
                     accepted=accepted, library=library)
        try:
            yield from run.blocks()
        except TimeoutError as exc:
            start = self._start_timeouts.pop(run, None)
            if start is None or exc is start:
                raise
            detail = str(start).removeprefix("payoff: ")  # the deadline passed while the pool was starting
            raise PoolStartTimeoutError(f"{exc}: {detail}", by_call=True) from start

    def _caller_stop(self) -> _CallStop | None:
        """What bounds a pool start in this thread: the calls running here (not an ``imap`` paused here)."""
        me = threading.get_ident()
        with self._lock:
            runs = [run for run in self._runs if run.thread == me and not run.paused]
        return _CallStop(self, runs) if runs else None

    def _record_unmapped(self, n_items: int, reason: Reason | None, detail: str, workload: str, site: CallSite,
                         started_ns: int, started_at: float, said: str = "", asked: str | None = None) -> MapRecord:
        """Record work a library did itself instead of calling ``map`` (a fallback no map call can see; None: no
        fallback, the serial run that was asked for); ``said``: its items in the library's words
        (``MapRecord.items_said``); ``asked``: the strategy its user asked for (``LibraryCall.asked``).

        Observers get it like any call, so the warning, the span and the
        fallback counter say what happened. Its items ran here, serially, in its time: one chunk in the caller,
        so its record is the loop it was (a one-instance explain read 0.0x with no items done, and a service of
        such requests drew the dashboard's speedup down to 0: trial 50).
        """
        call = CallInfo(self._next_id(), workload, asked or self.config.strategy_name, None,
                        n_items, site, started_ns=started_ns, started_at=started_at)
        rec = RecordBuilder(call.call_id, call.workload, call.requested_strategy, None, n_items,
                            started_ns, started_at)
        if n_items:
            ended_ns = max(started_ns + 1, time.monotonic_ns())
            rec.add(ChunkOutcome(0, 0, [None] * n_items, started_ns, ended_ns, 0, array("q", [ended_ns - started_ns]),
                                 array("q", [n_items]), "caller"), "caller", started_ns)
        if reason is not None:
            rec.fall_back(reason, detail)
        if said:
            rec.items_said = lambda: said
        self._observers.started(call)
        record = rec.build()
        self._keep(record)
        self._observers.finished(call, record, None)
        return record

    # -- what MapRun asks of the executor --------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _count_workload(self, workload: str) -> int:
        """Earlier calls of ``workload``: a pool start is shared by them (past MAX_WORKLOAD_LABELS names, the
        rest are counted together, so the count stays bounded)."""
        with self._lock:
            known = self._workload_calls
            key = workload if workload in known or len(known) < MAX_WORKLOAD_LABELS else "other"
            prior = known[key]
            known[key] += 1
            return prior

    def _begin(self, run: MapRun | None = None) -> None:
        """A call (or a ``submit``, with no run) starts: the idle timer leaves the pools alone until it ends.

        Checked and counted under the lock ``shutdown`` closes under, so a call either sees the executor
        closed or is waited for.
        """
        with self._lock:
            if run is None or not run.accepted:
                self._check_open(nested_ok=run is not None)
            self._active += 1
            if run is not None:
                run.thread, run.owner = threading.get_ident(), threading.current_thread()
                self._runs.add(run)

    def _end(self, run: MapRun | None = None) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)  # a call begun before a fork ends in the child uncounted
            self._runs.discard(run)
            self._last_used = time.monotonic()
            self._runs_changed.notify_all()
        self._watch_idle()

    def _finish(self, call: CallInfo, record: MapRecord, fn: Callable[[Any], Any],
                error: BaseException | None, config: ParallelConfig, stop: CancelToken | None = None,
                owner: threading.Thread | None = None) -> None:
        self._keep(record, owner)
        if record.pool_started and record.requested_strategy == "auto":  # its shutdown may throw the pool away
            self._started_for[record.selected_strategy] = fn_key(fn)
        # a WorkerCrashedError keeps fn out of the caller from now on
        self._planner.learn(record, fn, config, error, shared_pool=record.pool_shared, stop=stop)
        self._observers.finished(call, record, error)

    def _initialize_caller(self, config: ParallelConfig) -> None:
        """Run the config's ``worker_initializer`` here once, before items run here: serially, the caller is the
        worker (``strategy="serial"``, ``enabled=False``, a granularity mismatch), and ``fn`` may need it."""
        init = config.worker_initializer
        if init is None:
            return
        key = (os.getpid(), init, config.worker_init_args)
        with self._lock:
            if self._caller_init is not None and self._caller_init[0] == key[0] \
                    and self._caller_init[1] is init and self._caller_init[2] is key[2]:
                return
            self._caller_init = key  # first: an initializer that maps with this executor does not recurse
            try:
                initialize_here(init, config.worker_init_args)
            except BaseException:
                self._caller_init = None
                raise

    _caller_init: tuple[int, object, object] | None = None

    # -- a forked child ------------------------------------------------------------

    def _forget_parent(self) -> None:
        """In a child made by ``os.fork``: the pools, their threads and the calls running were the parent's.

        The pools are left untouched (their workers are the parent's); locks are
        new, since another parent thread may have held one at the fork.
        """
        _forks.keep(self._pools)
        closed = self._pools.closed
        self._pools = PoolRegistry()
        self._pools.closed = closed
        self._pools.stop_for_caller = _caller_stop(weakref.ref(self))
        self._lock = threading.RLock()
        self._runs_changed = threading.Condition(self._lock)
        self._active = 0
        self._runs = set()
        self._submitted = set()
        self._started_for = {}
        self._idle_thread = None
        self._idle_wake = threading.Event()
        self._dropped.detach()
        self._dropped = _on_drop(self)

    # -- idle timeout ----------------------------------------------------------

    def _watch_idle(self) -> None:
        # not once the program ends: its exit hooks stop the pools, and Python 3.12.0-3.12.1 refuse any new
        # thread from then on ("can't create new thread at interpreter shutdown"), which replaced the call's
        # own outcome (a map's SystemExit at exit) or was printed from a submitted call's done-callback
        if self.config.idle_timeout is None or not self._pools.current() or _exit.program_ending():
            return
        with self._lock:
            if self._idle_thread is not None and self._idle_thread.is_alive():
                return
            self._idle_wake.clear()
            thread = threading.Thread(target=_idle_loop, args=(weakref.ref(self), self._idle_wake),
                                      name="payoff-idle", daemon=True)
            self._idle_thread = thread
        try:
            thread.start()
        except RuntimeError:  # the interpreter's end began between the check and the start: nothing to watch
            with self._lock:
                if self._idle_thread is thread:
                    self._idle_thread = None


def _with_progress(observers: list[Observer]) -> list[Observer]:
    """The observers, and a bar for calls that ask for one where none of them draws bars."""
    from payoff.progress import ASKED_ONLY, Progress

    return observers if any(isinstance(o, Progress) for o in observers) else [*observers, ASKED_ONLY]


def _checked_observers(observers: object) -> list[Observer]:
    """``observers=`` as a list, or an error that says what it takes: ``int`` is not iterable, or ``type object
    'str' has no attribute 'scope'``, named neither the argument nor what it accepts."""
    accepted = ("observers= takes a list of payoff.Observer instances (subclass payoff.Observer and override "
                "the hooks you need), [] for none, or None for the default telemetry")
    if isinstance(observers, (str, bytes, Observer)) or not isinstance(observers, Iterable):
        raise TypeError(f"{accepted}; got {observers!r}")
    items = list(observers)
    wrong = [o for o in items if not isinstance(o, Observer)]
    if wrong:
        raise TypeError(f"{accepted}; got {wrong[0]!r} (a {type(wrong[0]).__name__}) in the list")
    return items


def _run_now(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
    """A serial ``submit``: whatever ``fn`` raises goes to the future, as a pool's worker would deliver it,
    except Ctrl-C, which belongs to the caller's own thread."""
    future: Future[Any] = Future()
    try:
        result = fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)
    return future


def _carried(config: ParallelConfig, max_records: int | None) -> ParallelExecutor:
    """A pickled executor, unpickled in another process: a fresh one of the same config (saved objects that
    hold an executor name this function: keep its name)."""
    return ParallelExecutor(config, max_records=max_records if max_records is not None else 256)


def _on_drop(executor: ParallelExecutor) -> weakref.finalize[
        [PoolRegistry, threading.Event, dict[str, Hashable | None], Knowledge], ParallelExecutor]:
    """Close ``executor``'s pools when nobody holds it any more, as ``concurrent.futures`` does.

    Its worker threads wait on their queues forever otherwise, and its idle timer for up
    to a minute. The finalizer holds the pools, never the executor; at interpreter exit
    the exit hooks stop the pools instead.
    """
    dropped = weakref.finalize(executor, _close_dropped, executor._pools, executor._idle_wake,
                               executor._started_for, executor._planner.knowledge)
    dropped.atexit = False
    return dropped


def _count_closed(pools: PoolRegistry, started_for: dict[str, Hashable | None],
                  count: Callable[[Hashable | None, str, int], None]) -> None:
    """Hand ``count`` each current pool an auto call started (its function's key), with the calls it served."""
    for strategy, calls in pools.calls_served().items():
        if strategy in started_for:
            count(started_for.pop(strategy), strategy, calls)


def _close_dropped(pools: PoolRegistry, idle_wake: threading.Event, started_for: dict[str, Hashable | None],
                   knowledge: Knowledge) -> None:
    """Without waiting: nothing is queued there (a pending submit or a running call holds the executor). A pool
    an auto call started is counted as ``shutdown`` counts it, when the next call plans (``closed_later``):
    ``ParallelExecutor().map(...)`` in a loop bought a pool every few calls."""
    _count_closed(pools, started_for, knowledge.closed_later)
    pools.closed = True
    pools.retire()
    idle_wake.set()  # the idle timer sees its executor gone and ends


class _CallStop:
    """The calls running in one thread, as a bound on a pool start they wait for: set when any of them is
    cancelled, expired at the earliest deadline among them."""

    __slots__ = ("_executor", "_runs")

    def __init__(self, executor: ParallelExecutor, runs: list[MapRun]) -> None:
        self._executor = executor
        self._runs = runs

    @property
    def tokens(self) -> tuple[CancelToken, ...]:
        """The calls' own tokens: what their planning waited with (``payoff.strategies.cluster`` tells them apart)."""
        return tuple(run.token for run in self._runs)

    def is_set(self) -> bool:
        return any(run.token.is_set() for run in self._runs)

    def expired(self) -> bool:
        return any(run.token.expired() for run in self._runs)

    def seconds_left(self) -> float | None:
        left = [s for run in self._runs if (s := run.token.seconds_left()) is not None]
        return min(left) if left else None

    def start_failed(self, error: PoolStartTimeoutError) -> None:
        for run in self._runs:
            if run.token.expired():
                self._executor._start_timeouts[run] = error


def _caller_stop(ref: weakref.ReferenceType[ParallelExecutor]) -> Callable[[], _CallStop | None]:
    """The registry's way to the executor's running calls, without keeping the executor alive."""
    def find() -> _CallStop | None:
        executor = ref()
        return None if executor is None else executor._caller_stop()
    return find


def _idle_loop(ref: weakref.ReferenceType[ParallelExecutor], wake: threading.Event) -> None:
    """Close the pools of an executor nobody used for ``idle_timeout`` seconds (read afresh each round)."""
    while True:
        executor = ref()
        if executor is None:
            return
        timeout = executor.config.idle_timeout
        if timeout is None or not executor._pools.current():
            return
        with executor._lock:
            idle = executor._active == 0 and time.monotonic() - executor._last_used >= timeout
            wait = max(0.05, min(timeout / 4, 60.0))
        if idle:
            executor._release_pools()
            return
        del executor
        wake.wait(timeout=wait)
        wake.clear()


def _known_empty(items: object) -> bool:
    """An empty input has nothing to wait for, so a spent timeout returns ``[]`` as ``Executor.map`` does.

    An input of no length is read for its first item: an empty generator raised "no item ran" where an empty
    list returned ``[]``. The item read is lost only to a call that raises for want of time anyway (as
    ``Executor.map`` takes all of them before its timeout strikes); an error reading it is raised as reading
    the input raises it.
    """
    if not isinstance(items, Sized):
        return next(iter(items), _NONE) is _NONE  # type: ignore[call-overload]  # its error is the call's
    try:
        return len(items) == 0
    except Exception:  # a broken __len__ is the call's to report, not this check's
        return False


_NONE = object()


def _iterable(obj: object) -> bool:
    """What ``iter()`` takes: ``__iter__``, or the old sequence protocol (``__getitem__`` from 0 to an IndexError)."""
    return isinstance(obj, Iterable) or (hasattr(type(obj), "__getitem__") and not isinstance(obj, type))


def _spread(fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...]) -> tuple[Callable[[Any], Any],
                                                                                 Iterable[Any]]:
    """One iterable as given; several zipped (up to the shortest) with ``fn`` called on their elements."""
    if not iterables:
        raise TypeError("map() needs at least one iterable of items after the function")
    if len(iterables) == 1:
        return fn, iterables[0]
    for it in iterables:
        if not _iterable(it):
            raise TypeError(f"map() needs iterables of items, got {type(it).__name__}")
    columns = [as_given(it) for it in iterables]
    if all(c is not None for c in columns):
        return Star(fn), Zipped(cast("list[Sequence[Any]]", columns))  # no tuple list built
    return Star(fn), zip(*iterables, strict=False)  # the builtin stops at the shortest


def _config_from(max_workers: object, strategy: object, config: object) -> ParallelConfig:
    if isinstance(max_workers, ParallelConfig):  # the positional config of earlier versions
        if config is not None:
            raise TypeError("pass the config once: positionally or as config=, not both")
        max_workers, config = None, max_workers
    max_workers = _as_index(max_workers)
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
        raise TypeError("ParallelExecutor's first argument is max_workers (an int) or a ParallelConfig, "
                        f"got {type(max_workers).__name__}: {max_workers!r}")
    if config is not None and not isinstance(config, ParallelConfig):
        raise TypeError(f"config must be a ParallelConfig or None, got {type(config).__name__}")
    base = config if config is not None else ParallelConfig.from_env()
    changes: dict[str, object] = {}
    if max_workers is not None:
        changes["max_workers"] = max_workers
    if strategy is not None:
        changes["strategy"] = strategy
    return base.with_changes(**changes) if changes else base


def _still_fits(config: ParallelConfig) -> Callable[[PoolKey], bool]:
    """Which running pools a new config can still use: same definition, and a strategy it may select."""
    name = config.strategy_name
    workers = planning.available_workers(config)

    def keep(key: PoolKey) -> bool:
        selectable = name in ("auto", key.strategy) or (name != "serial" and key.strategy == "threads")
        return config.enabled and selectable and key.serves(pool_key(config, key.strategy, workers))

    return keep


def _as_index(value: Any) -> Any:
    """A numpy integer (anything with ``__index__`` but an int) as the int it holds; anything else as given,
    for the caller's check to accept or refuse."""
    if not isinstance(value, (int, type(None))) and hasattr(type(value), "__index__"):
        return operator.index(cast("SupportsIndex", value))
    return value


def _is_flag(value: object) -> bool:
    """None, True or False by identity: ``1 in (None, True, False)`` holds, and ``releases_gil=1`` passed."""
    return value is None or value is True or value is False


def _plain_call(chunksize: Any, granularity: Any, timeout: Any) -> tuple[Any, Any, Any]:
    """A call's options as ``ParallelConfig`` takes its own: a numpy integer chunk size as the int it holds, a
    numpy float timeout as a float, and ``granularity="auto"`` (the config's "either axis") as no axis named.
    What is still not accepted is refused by ``_check_call``, naming what is."""
    chunksize = _as_index(chunksize)
    if isinstance(timeout, numbers.Real) and not isinstance(timeout, (bool, int, float)):
        timeout = float(timeout)
    return chunksize, None if isinstance(granularity, str) and granularity == "auto" else granularity, timeout


def _check_call(fn: object, items: object, chunksize: object, granularity: object, workload: object,
                releases_gil: object, progress: object, timeout: object) -> None:
    if not callable(fn):
        raise TypeError(f"map() needs a callable as fn, got {type(fn).__name__}: {fn!r}")
    _check_not_async(fn.fn if isinstance(fn, Star) else fn)
    if not _iterable(items):
        raise TypeError(f"map() needs an iterable of items, got {type(items).__name__}")
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int)
                                  or chunksize < 1):
        raise ValueError(f"chunksize must be None (automatic) or an int >= 1, got {chunksize!r}")
    if granularity not in GRANULARITY_CHOICES:
        raise ValueError(f"granularity must be None, 'auto', 'instance' or 'feature', got {granularity!r}")
    if not isinstance(workload, str) or not workload:
        raise ValueError(f"workload must be a non-empty str (a telemetry label), got {workload!r}")
    if not _is_flag(releases_gil):
        raise ValueError(f"releases_gil must be None, True or False, got {releases_gil!r}")
    if not _is_flag(progress):
        raise ValueError(f"progress must be None, True or False, got {progress!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not -math.inf < timeout <= MAX_SECONDS):
        raise ValueError(f"timeout must be None or a number of seconds up to {MAX_SECONDS} (one year), "
                         f"got {timeout!r}")
    if timeout is not None and timeout <= 0 and not _known_empty(items):  # a deadline already past
        raise TimeoutError(f"payoff: timeout={timeout:g} s had run out before the call started; no item ran")


def _check_not_async(fn: object, caller: str = "map()") -> None:
    """An ``async def`` function called in a worker only makes a coroutine, and none of its body runs: the call
    returned a list of never-awaited coroutines, recorded as a ``tiny_workload`` fallback whose advice was to
    force parallelism. Refused before anything runs, also as a callable object's ``async def __call__``."""
    target = fn
    while isinstance(target, functools.partial):  # to what it calls: a callable object's __call__ is not its own
        target = target.func
    target = target if inspect.isroutine(target) else type(target).__call__
    kind = "an async generator function (async def with yield): calling it only makes an async generator" \
        if inspect.isasyncgenfunction(target) else \
        "a coroutine function (async def): calling it only makes a coroutine" \
        if inspect.iscoroutinefunction(target) else None
    if kind is not None:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise TypeError(
            f"{caller} runs plain functions; {name} is {kind}, none of its body would run. Run async I/O on the "
            "event loop (asyncio.gather); from a coroutine, run CPU-bound plain functions as "
            "`await asyncio.to_thread(ex.map, fn, items)`")


class _Once:
    """A future's done-callback that lets go of what it calls once it ran: a future keeps its callbacks for as
    long as it lives, and those holding the executor kept a dropped executor's pool and worker processes alive
    for as long as the user kept the future of one ``submit`` (until the idle timeout, 300 s by default)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Future[Any]], object]) -> None:
        self._fn: Callable[[Future[Any]], object] | None = fn

    def __call__(self, future: Future[Any]) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn(future)


class _Records(deque[MapRecord]):
    """The records an executor keeps: a deque (the oldest drop out) that also slices, as a list does
    (``ex.records[-5:]`` raised ``TypeError: sequence index must be integer, not 'slice'``)."""

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        return super().__getitem__(index)


def _close_all() -> None:
    """At the program's end its submitted calls finish first, as ``concurrent.futures``' do: a script that
    submitted its work and ended lost what had not run, silently. After Ctrl-C they do not. Then the pools
    stop: what still runs is cancelled (a map in a daemon thread, a call submitted since), and worker processes
    end."""
    executors = list(_live)
    if not _exit.interrupted():
        _finish_submitted([f for executor in executors for f in list(executor._submitted)])
    for executor in executors:
        with contextlib.suppress(Exception):
            executor.cancel()


EXIT_NOTICE_SECONDS = 2.0
"""How long the program's end waits for submitted calls before it says that it waits, and how to stop it."""
EXIT_WAIT_SLICE_SECONDS = 0.25
"""The end's wait for submitted calls wakes this often. CPython runs a signal's handler when the waiting
thread wakes: a Ctrl-C that lands between the notice and the lock's blocking wait was lost until a second one
(1 of 25 runs beside three busy loops hung 20 s, then for good)."""


def _finish_submitted(pending: list[Future[Any]]) -> None:
    """Wait for ``pending``, saying so on stderr past ``EXIT_NOTICE_SECONDS`` (a program that does not end is
    no mystery then); a Ctrl-C during the wait stops it, and says how many calls it cancelled."""
    try:
        all_done = _waiting.all_done(pending)
        if not all_done.wait(EXIT_NOTICE_SECONDS):
            _exit.say(f"payoff: the program waits for {sum(not f.done() for f in pending)} submitted call(s) to "
                      f"finish, as concurrent.futures does; Ctrl-C cancels them")
        _waiting.wait_in_slices(all_done, math.inf, EXIT_WAIT_SLICE_SECONDS)
    except KeyboardInterrupt:
        _exit.say(f"payoff: Ctrl-C: {sum(not f.done() for f in pending)} submitted call(s) cancelled unfinished")


def _forget_parent_pools() -> None:
    """Every executor a forked child inherits starts afresh there; see :mod:`payoff._forks`."""
    global _live
    executors = list(_live)
    _live = weakref.WeakSet(executors)  # the parent may have been iterating it at the fork
    for executor in executors:
        with contextlib.suppress(Exception):
            executor._forget_parent()


_exit.at_exit(_close_all)
_forks.in_child(_forget_parent_pools)


__all__ = ["ParallelExecutor"]
