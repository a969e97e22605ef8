"""One ``map`` call from plan to record: the single owner of where the call runs now.

A :class:`MapRun` holds everything one call needs (its plan, record builder,
pool lease, chunk queue, in-flight futures, cancel token and deadline), so the
executor keeps only what outlives calls: the config, the pools and the
observers. Every wait has an exit (a finished, failed or cancelled future, the
cancel token, the deadline), and a worker that dies is handled here: lost
chunks go to fresh workers, and an item that kills a worker again is narrowed
down alone, never rerun in the caller's own process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import os
import pickle
import queue
import re
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import BrokenExecutor, CancelledError, Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from payoff import _forks, _gil_wait, _relayed_logs, _relayed_warnings, planning
from payoff._exit import ended_with_the_program, program_ending
from payoff._forks import held_at_fork_hint
from payoff._item_size import item_bytes_in_memory
from payoff._library import NO_LIBRARY, LibraryCall
from payoff._pools import Lease, pool_key
from payoff._probe import PROBE_STOP_GRACE_SECONDS
from payoff._reruns import Reruns
from payoff._source import Source
from payoff._spare_threads import run_on_a_spare_thread
from payoff._waiting import all_done, wait_in_slices
from payoff.errors import ChunkKilledWorkers, StuckThreadsWarning, WorkerCrashedError, describe_exit
from payoff.observers import CallInfo, find_call_site, warn_before_raising
from payoff.progress import SHOW_AFTER_SECONDS, interactive
from payoff.reasons import Reason
from payoff.record import CLOUDPICKLE_CANNOT, ChunkStats, RecordBuilder, waits_mostly
from payoff.scheduling import (
    IMAP_CHUNK_SECONDS,
    POOL_CHUNK_SECONDS,
    SHARED_CHUNK_SECONDS,
    GuidedChunks,
    items_within_bytes,
)
from payoff.strategies import CROSSES_PROCESSES, ChunkTask, Strategy, make_strategy
from payoff.strategies.base import PoolClosedError, closed_pool
from payoff.strategies.external import ExternalStrategy, external_workers
from payoff.strategies.main_guard import ImportingMainError
from payoff.strategies.serial import SerialStrategy
from payoff.strategies.start_failure import ProcessesRefused, start_failure_detail, thread_refused_error
from payoff.worker import (
    UNPICKLING_CHUNK,
    CancelToken,
    ChunkOutcome,
    StreamedChunk,
    alone,
    fail_at,
    fail_at_refused,
    first_unpicklable,
    in_worker,
    noted,
    run_chunk,
    run_queue_ns,
    running_on,
)

if TYPE_CHECKING:
    from payoff.executor import ParallelExecutor

WAIT_SLICE_SECONDS = 0.2
"""Longest wait between checks of the cancel token and the deadline."""
MAX_POOL_RESTARTS = 24
"""Fresh pools one call may start after crashes before it gives up on the backend."""
PROGRESS_PIECE_SECONDS = 0.2
"""How much of a serial map's work runs between updates of its progress bar."""
SERIAL_CHUNK_SECONDS = 0.01
MAX_SERIAL_CHUNK = 65_536
"""A serial ``imap`` runs its items one per result asked for; its record groups them into chunks of about
10 ms of work (a chunk's bookkeeping costs ~20 us, under 1% of that), trivial items at most this many."""
HELD_CHUNKS_PER_WORKER = 4
"""Finished chunks ``imap`` holds for order while an earlier one runs, per worker, before it stops submitting."""
STOP_GRACE_SECONDS = 0.1
"""Thread chunks stop at their next timing block once cancelled; those still running after this are stuck."""
READER_GRACE_SECONDS = 10.0
"""After this long waiting for an ``imap`` paused in another live thread's hands, ``shutdown(wait=True)`` says
so, naming the thread: it waits for as long as that thread keeps the imap unfinished (a generator a server's
request thread holds on to), and waited silently. It is not let go: a reader that is only slow (an upload per
result) would lose the results computed for it."""


class _BoundHere(Exception):
    """Items that raised on the pool an error naming a thread were handed back: the call goes on here."""


_NAMES_A_THREAD = re.compile(r"\bthreads?\b", re.IGNORECASE)
"""An item's error that names a thread: "SQLite objects created in a thread can only be used in that same
thread", "main thread is not in main loop", "... attached to a different thread"."""


def _text_of(error: BaseException) -> str:
    """What ``str`` says of a user's exception; "" where its ``__str__`` raises (that error stays the item's)."""
    try:
        return str(error)
    except Exception:
        return ""


class _PoolClosedAtExit(Exception):
    """A process pool's own exit hook refused the map's next chunk: see :meth:`MapRun._finish_here`."""


def _waited_for_at_exit() -> bool:
    """Whether the program's end waits for this thread to finish: a non-daemon thread other than the main one
    (``threading`` joins those after the pools' exit hooks have run)."""
    me = threading.current_thread()
    return not me.daemon and me is not threading.main_thread()


def in_flight_limit(workers: int) -> int:
    """Chunks a call keeps sent: each worker's running one, one queued behind it, and one more.

    A worker that finishes takes its next chunk at once only if one is queued;
    the parent refills after a hop through three threads (result, caller,
    feeder), which on 2 busy cores took 1-6 ms: with one queued chunk for two
    workers, 1,000 items of 50 us left each worker 4-5 ms idle in a 37 ms call,
    and calls of that size ran 3% faster with two.
    """
    return 2 * workers + 1


IN_FLIGHT_HINTS = 16
"""The pickles a call keeps in flight beyond one chunk a worker, in ``task_size_hint_bytes`` (256 MiB by default)."""
AHEAD_HINTS = 64
"""The same for an ``imap`` under a timeout, which sends ahead of its consumer (1 GiB by default)."""


class MapRun:
    """Plans, runs and records one call; iterate :meth:`blocks` for its results in input order."""

    def __init__(self, executor: ParallelExecutor, fn: Callable[[Any], Any], source: Source, *,
                 chunksize: int | None, granularity: str | None, workload: str, releases_gil: bool | None,
                 progress: bool | None, timeout: float | None, deadline: float | None, streaming: bool,
                 ordered: bool = True, started_ns: int | None = None, accepted: bool = False,
                 library: LibraryCall = NO_LIBRARY) -> None:
        """``deadline``: ``timeout`` as a ``time.monotonic()`` instant, set by the caller before it read the
        input (reading a ``map``'s input counts); ``started_ns`` is when the call began, for its wall time;
        ``accepted``: an ``imap`` accepted while the executor was open, which runs even if it closed since;
        ``library``: what a library that split the work into items itself says about them."""
        self.ex, self.fn, self.source = executor, fn, source
        self.accepted, self.library = accepted, library
        self.chunksize, self.granularity, self.releases_gil = chunksize, granularity, releases_gil
        self.streaming, self.timeout, self.ordered = streaming, timeout, ordered
        self.config = executor.config
        self.requested = self.config.strategy_name
        n = source.known_length or 0
        asked = library.asked or self.requested  # what the user asked, where a library chose the backend
        self.call = CallInfo(executor._next_id(), workload, asked, granularity,
                             n, find_call_site(), progress=progress,
                             started_ns=time.monotonic_ns() if started_ns is None else started_ns)
        self.rec = RecordBuilder(self.call.call_id, self.call.workload, asked, granularity, n,
                                 self.call.started_ns, self.call.started_at)
        self.rec.serial_price, self.rec.items_said = library.serial_price, library.items_said
        self.token = CancelToken(deadline)
        self.lease: Lease | None = None
        self.gil_watch: int | None = None
        """When the call began to watch the GIL's queue (``payoff._gil_wait``), while it does."""
        self.gil_samplers = 1
        """The sampler threads it asked for: more for a shorter call (``_gil_wait.samplers_for``)."""
        self.in_flight: dict[Future[Any], ChunkTask] = {}
        self.bytes_in_flight = 0
        """The pickled bytes of the chunks in flight (``_room_for_bytes``)."""
        self.workers_fed = 1
        """The workers the chunks in flight are for: each gets one whatever its bytes."""
        self.bytes_cap = IN_FLIGHT_HINTS * self.config.task_size_hint_bytes
        """Beyond those, the pickles kept in flight (``AHEAD_HINTS`` of them for an imap ahead of its consumer)."""
        self.item_error: BaseException | None = None
        """The item's exception this call raised, if it did: one outside ``Exception`` is no stop (``_abandon``)."""
        self.collected: list[ChunkStats] = []
        """Chunks taken in whose observers have not run yet (see ``_observe_collected``)."""
        self.token_id = next(_CALL_TOKENS)
        """This call among every call of the process, for a cluster's record of lost work (``departed_for``)."""
        self.sent_remote = False
        self.done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.requeued: deque[ChunkTask] = deque()
        self.isolate: deque[ChunkTask] = deque()
        self.parts: dict[int, list[ChunkOutcome]] = {}
        self.sizes: dict[int, int] = {}
        self.starts: dict[int, int] = {}
        self.failed: tuple[int, int, ChunkOutcome] | None = None
        """An ``imap``'s earliest failing chunk, item and error, held until the results before it are out."""
        self.next_index = 0
        self.next_yield = 0
        self.crashes: Counter[int] = Counter()
        self.restarts = 0
        self.lost: list[ChunkTask] = []
        self.source_done = False
        self.shipped: Any = None
        """The function as the first pool sends it (shipped once the pool is leased)."""
        self.crash_known = False
        """The function crashed a worker process before: its items never run in the caller."""
        self.reruns = Reruns()
        """Items whose results could not come back from the pool, run again here in their turn (``_settle``)."""
        self.bound: list[str] = []
        """What items raised on the pool that names a thread, each such item handed back to run here
        (``_handed_back_bound``): the rest of the call runs in the caller's thread."""
        self.stream = False
        self.sizer = GuidedChunks(1, 1, 1, None)
        self._bound_bytes = False
        """Chunks are cut to hold ``task_size_hint_bytes`` of items and results as they come back."""
        self._item_bytes = 0
        """An item's bytes as the plan knew them (0: not known), for ``_bound_bytes``."""
        self.streamed: StreamedChunk | None = None
        """A serial ``imap``'s chunk whose items its consumer is taking now: recorded when it ends or is left."""
        self._sample: list[Any] = []
        """An item a serial ``imap``'s stream ran, which stands for its rest when that is planned again."""
        self._results_sample: list[Any] = []
        """The result of the item ``_sample`` holds: what the planner sizes the rest's results by."""
        self._lazily_spent_ns = self._others_cpu_ns = 0
        """Of a lazy serial run stopped for a check: its items' time since the last, and the CPU the process's
        other threads used in its last chunk (``_others_cpu_ns``)."""
        self.pause_lock = threading.Lock()
        self.paused = self.detached = False
        self.paused_by: threading.Thread | None = None
        self.paused_at = 0.0
        """``time.monotonic()`` when the imap last handed a result to its caller (``_pause``)."""
        self.thread = threading.get_ident()
        """The thread the call began in (set again by ``_begin``): shutdown from there cannot wait for it."""
        self.owner = threading.current_thread()
        """That thread, whose ``last_record`` the call's record becomes (an ident may be a later thread's)."""
        self.pid = os.getpid()
        self.prior: int | None = None

    # -- the call as a whole ---------------------------------------------------

    def where(self, strategy: str, workers: int) -> None:
        """Where the call runs from now on: the record and the observers always agree."""
        self.rec.selected, self.rec.workers = strategy, workers
        self.call.selected_strategy, self.call.workers = strategy, workers
        if strategy != "serial":
            self.call.pool = strategy

    def blocks(self) -> Iterator[list[Any]]:
        """Each chunk's results, in input order; the record is built however the call ends.

        A serial ``imap``'s blocks are not lists but :class:`StreamedChunk` runs, which run each item as its
        result is taken; ``imap`` only iterates its blocks (``map`` never gets one of those).
        """
        obs = self.ex._observers
        self.ex._begin(self)
        error: BaseException | None = None
        closed = elsewhere = False
        left: GeneratorExit | None = None
        try:
            obs.started(self.call)
            self._raise_if_run_out()
            with contextlib.nullcontext() if self.streaming else obs.scope(self.call):
                self.call.scoped = not self.streaming
                plan = self._plan()
                obs.planned(self.call)
                for block in self._execute(plan):
                    self._pause(True)
                    handed = time.monotonic_ns(), getattr(block, "work_ns", 0), getattr(block, "consumer_ns", 0), \
                        run_queue_ns() if self.streaming else 0  # only an imap's consumer is counted
                    try:
                        yield block
                    except GeneratorExit:
                        closed = True  # by its consumer; an item's own GeneratorExit is a failure like any
                        raise
                    self._count_consumer(block, *handed)
                    self._pause(False)
                self.rec.input_failed = self.source.failed
                self.source.raise_error()
        except GeneratorExit as exc:
            self.token.set()
            if closed:
                left = exc
            else:
                error = exc
            if _forks.holding_a_lock():  # closed by a collection inside payoff's own lock: ended elsewhere
                elsewhere = True
            else:
                self._abandon()
            raise
        except BaseException as exc:
            error = exc
            self._abandon(exc)
            raise
        finally:
            if elsewhere:
                on_a_thread_of_its_own(self._abandon_and_end, error, left)
            else:
                self._end_call(error, left)

    def _abandon_and_end(self, error: BaseException | None, left: GeneratorExit | None) -> None:
        try:
            self._abandon()
        finally:
            self._end_call(error, left)

    def _end_call(self, error: BaseException | None, left: GeneratorExit | None) -> None:
        """The call's end: its pool given back, its record built and handed to the observers and the planner.
        ``left``: its consumer closed it (an ``imap`` not run to its end)."""
        try:
            self._stop_watching()
            self._end_streamed()
            if self.lease is not None:
                self._release(self.lease)
            if self.stream:
                self.rec.n_items = self.source.taken
            self.rec.input_ns = int(self.source.read_seconds * 1e9)
            if left is not None and error is None and not self._all_done():
                error = left  # its consumer left before the last result: cancelled, not judged
            self._say_reruns()
            record = self.rec.build(error)
            self.ex._finish(self.call, record, self.fn, error, self.config, self.token, self.owner)
        finally:
            self.ex._end(self)  # last: shutdown(wait=True) returns once the call's record is out

    def _initialized_elsewhere(self) -> bool:
        """A serial run needs the initializer here, unless this is a payoff worker, where it ran (a daemonic
        worker of another pool never ran it), or no item runs (an empty input: the initializer ran a second
        time in a worker whose item mapped over nothing). A pool that failed to start ran it nowhere that counts
        here."""
        return (self.rec.fallback_reason is Reason.NESTED and in_worker()) or self.rec.decision is Reason.EMPTY_INPUT

    def _initialize_here(self) -> None:
        """The initializer in the caller before a serial run; after a pool that failed to start, its failure
        here too stops the call: no item runs where the initializer did not."""
        try:
            self.ex._initialize_caller(self.config)
        except Exception as exc:
            if self.rec.fallback_reason is Reason.INIT_FAILURE:
                with contextlib.suppress(Exception):
                    exc.add_note(f"payoff: {self.rec.fallback_detail}; the worker_initializer raised here too, "
                                 "so no item ran (an item never runs where the initializer did not)")
            raise

    def _all_done(self) -> bool:
        """Every item of the input ran (an ``imap`` closed after its last result is a completed call)."""
        return self.source.exhausted and sum(c.n_items for c in self.rec.chunks) >= self.rec.n_items

    def _count_consumer(self, block: Any, handed_ns: int, work_ns: int, consumer_ns: int, runq_ns: int) -> None:
        """An ``imap`` caller's own time with this block: a pool's block, its wait less its thread's waits for a
        CPU (a loop's consumer has the machine to itself: one that shared 2 cores with 2 busy workers took
        316-484 ms where the loop's took 190-270, and the record added all of it to the loop's estimate,
        1.74-2.05x recorded for 1.12-1.26x measured); a serial block, what the block read of it. Its wait less the
        items run meanwhile also held payoff's handing out of each result, no part of a loop's time: 200,000
        results of ``abs`` read 0.96x for a call 0.08-0.27x the builtin's speed."""
        if isinstance(block, StreamedChunk):  # consumed whole meanwhile: its own reading leaves payoff's handing out
            spent = time.monotonic_ns() - handed_ns - (block.work_ns - work_ns)  # a sample's outlier is no more
            self.rec.consumer_ns += max(0, min(block.consumer_ns - consumer_ns, spent))
        elif self.streaming:
            waited_ns = max(0, run_queue_ns() - runq_ns)
            self.rec.consumer_ns += max(0, time.monotonic_ns() - handed_ns - waited_ns)

    def _pause(self, paused: bool) -> None:
        """``imap`` hands a result to its caller: until resumed, ``shutdown`` may detach the call."""
        if not self.streaming:
            return
        if not paused and self.lease is not None:
            self._raise_if_forked()
        with self.pause_lock:
            self.paused, self.paused_by = paused, threading.current_thread()
            self.paused_at = time.monotonic()
            if not paused and self.detached:
                raise RuntimeError(f"payoff: the executor was shut down while this {self._kind()} waited for "
                                   f"its caller to take the next result (after {self.next_yield:,} chunks of "
                                   "results); its work stopped there. Take all results before shutdown, or "
                                   "use map()")

    def _raise_if_forked(self) -> None:
        """An ``imap`` begun before ``os.fork()`` goes on in the child only while it needs no pool: its chunks run
        on the parent's pools, and a pool leased in the child was one the child's executor never knew of (it
        forgets the parent's calls): auto's ``imap``, its first results from its probe, took one there, and the
        child's ``shutdown`` waited for that lease forever."""
        if os.getpid() != self.pid:
            raise RuntimeError(f"payoff: this {self._kind()} was started in process {self.pid}; a process forked "
                               "from it cannot continue it: its chunks run on that process's pools. Start a new "
                               f"{self._kind()} here (the parent can still take the rest)")

    def _raise_if_run_out(self) -> None:
        """An ``imap`` first asked for a result after its deadline (it counts from the call): no item starts.
        A probe run then on a payoff thread was left running past the deadline, and a serial run handed out
        its first result. An input known to be empty has no item to be late for: it ends, as ``map``'s does.
        A ``map`` whose input was still being read at its deadline runs none of what it read."""
        if self.source.late is not None:
            raise self.source.late
        if self.streaming and self.token.expired() and self.source.known_length != 0:
            raise TimeoutError(f"payoff: the {self._kind()}'s timeout={self.timeout:g} s, counted from the call, "
                               "had run out before its first result was asked for; no item ran")

    def kept_paused_by(self, seconds: float) -> threading.Thread | None:
        """The live thread other than this one that has held this ``imap`` paused for ``seconds`` or more."""
        with self.pause_lock:
            holder = self.paused_by
            if not self.paused or self.detached or holder is None or holder is threading.current_thread() \
                    or not holder.is_alive() or time.monotonic() - self.paused_at < seconds:
                return None
            return holder

    def _kind(self) -> str:
        return "imap" if self.ordered else "imap_unordered"

    def detach(self) -> bool:
        """Called by ``shutdown(wait=True)``: an ``imap`` paused in the shutting-down thread's own hands, or in
        the hands of a thread that has ended, lets go of its pool instead of holding that wait forever (nothing
        could resume it meanwhile).

        Its chunks already queued are cancelled, running ones end with the pool;
        the call raises ``RuntimeError`` when its caller asks for more. An imap
        paused in another live thread is being read: shutdown waits for it.
        """
        with self.pause_lock:
            holder = self.paused_by
            if not self.paused or self.detached or holder is None \
                    or (holder is not threading.current_thread() and holder.is_alive()):
                return False
            self.detached = True
        self.token.set()
        for future in list(self.in_flight):
            future.cancel()
        if self.lease is not None:
            self.ex._pools.release(self.lease)
        return True

    def _plan(self) -> planning.Plan:
        t0 = time.perf_counter_ns()
        with self.ex._observers.scope(self.call):
            plan = self._make_plan()
        probe_ns = plan.probe.outcome.end_ns - plan.probe.outcome.start_ns if plan.probe.outcome else 0
        rec = self.rec
        rec.overhead_ns["planning"] += max(0, time.perf_counter_ns() - t0 - probe_ns)
        rec.decision, rec.chunk_size, rec.contention = plan.decision, plan.chunk_size, plan.contention
        if self.library.asked == "auto" and plan.decision is Reason.EXPLICIT_STRATEGY:
            rec.decision = Reason.AUTO_CPU_BOUND  # the library chose the backend for auto: auto's decision
        rec.cpu_ratio = plan.probe.cpu_ratio if plan.probe.seconds_per_item is not None else None
        rec.probe_items = plan.probe.n
        # a library's items (CE's tasks of many instances) differ in size: the first one's cost is no item's
        rec.planned_cost = None if self.library.decide_after_first is not None else plan.probe.seconds_per_item
        self.where(plan.strategy, plan.workers)
        if plan.fallback is not None:
            rec.fall_back(plan.fallback, plan.detail)
        return plan

    def _call_for(self, items: Sequence[Any],
                  cut_probe: Callable[[ChunkOutcome], None] | None = None) -> planning.Call:
        """What the planner is asked about this call, for ``items``: all of them, or the rest of a serial run."""
        return planning.Call(self.fn, items, self.config, self.requested, self.chunksize, self.granularity,
                             self.releases_gil, self.ex._pools.warm(), self._prior_calls(), self.timeout,
                             self.library.serial_because, cut_probe, self.token,
                             self.library.decide_after_first, sized=self.source.known_length is not None,
                             warm_processes=self.ex._pools.warm_processes(),
                             sends_by_value=functools.partial(self.ex._pools.sends_by_value, fn=self.fn))

    def _prior_calls(self) -> int:
        """Earlier calls of this call's workload, counted once for the call however often it is planned."""
        if self.prior is None:
            self.prior = self.ex._count_workload(self.call.workload)
        return self.prior

    def _make_plan(self) -> planning.Plan:
        """A stream is planned on what the planner reads of it: its first item, and the items its probe runs,
        each read just before it runs (an unknown length counts as PLANNED_STREAM_ITEMS)."""
        lazy = not self.source.exhausted
        if lazy:
            with contextlib.suppress(IndexError):  # an empty input: nothing to plan
                self.source.first()
        plan = self.ex._planner.plan(self._call_for(self.source.for_planning(), self._count_cut_probe))
        if lazy:
            self.stream = self.call.stream = self.source.known_length is None
            self.rec.n_items = self.call.n_items = self.source.known_length or 0
            if self.stream:
                source = self.source
                self.call.read = lambda: source.taken
                self.call.told_length = source.told_length
        if self.requested == "custom" and plan.strategy == "custom":
            plan = replace(plan, workers=external_workers(self.config.strategy, plan.workers))
        return plan

    def _count_cut_probe(self, outcome: ChunkOutcome) -> None:
        """The probe's items that ran before Ctrl-C cut it short: the record counts them, as a serial map's."""
        if outcome.n_done:
            self.ex._observers.chunk(self.call, self.rec.add(outcome, "caller", outcome.start_ns))

    def _execute(self, plan: planning.Plan) -> Iterator[list[Any]]:
        probe = plan.probe.outcome
        if probe is not None:
            self.ex._observers.chunk(self.call, self.rec.add(probe, "caller", probe.start_ns))
            self.source.skip(plan.probe.n)  # before its results go out: a consumer may leave while they do
            if probe.error is not None:
                if self.streaming and probe.results:
                    yield probe.results  # an imap hands out what came before the failing item, as map does
                raise self._items_error(probe)
            self.next_index = self.next_yield = 1
            if probe.results:
                yield probe.results
        self.source.skip(plan.probe.n)
        if plan.outgrow is not None and (self._may_outgrow() or self._may_outgrow_lazily()):
            outgrown = self._serial_until_outgrown(plan) if self._may_outgrow() else self._lazily_until_outgrown(plan)
            again = yield from outgrown
            if again is None:
                return
            plan = again
        self.crash_known = plan.probe.crashed is not None
        if plan.strategy != "serial":
            self.lease = self._acquire(plan)
        if self.lease is not None:
            self.shipped = self._ship_or_fall_back(plan, self.lease)
        if self.lease is None:
            self.where("serial", 1)
            if not self._initialized_elsewhere():
                self._initialize_here()
            yield from self._serially(plan)
            return
        # the planner caps a fixed chunk size at the items it knows of, for a stream only a planned length
        size = self.chunksize if self.stream and self.chunksize else plan.chunk_size
        chosen = self._chunk_chosen()
        ceiling = IMAP_CHUNK_SECONDS if (self.streaming or self.stream) and not chosen else None
        floor = size if self.stream and chosen else plan.min_chunk
        if plan.budget_item and not self.stream and not chosen:
            floor = 1  # dear items together: a guided schedule, however few chunks, so those handed back are cut apart
        # a stream's chunks are read ahead of the results handed out, and a process pool's chunk is one pickle
        # each way; a list's chunks run in this process hold nothing more than the list and the results do
        self._bound_bytes = not chosen and (self.stream or plan.strategy in CROSSES_PROCESSES)
        self.sizer = GuidedChunks(size, floor, self.rec.workers, plan.probe.seconds_per_item, plan.floor_seconds,
                                  max_seconds=ceiling, check_each=plan.check_each, budget_item=plan.budget_item,
                                  max_items=self._items_by_bytes(plan) if self._bound_bytes else None,
                                  unsized=self.stream and not chosen and not plan.probe.result_bytes)
        yield from self._in_parallel()

    def _items_by_bytes(self, plan: planning.Plan) -> int | None:
        """The most items a chunk holds for their bytes and their results' (``task_size_hint_bytes``)."""
        self._item_bytes = plan.probe.item_bytes or item_bytes_in_memory(self.source.for_planning()) or 0
        return items_within_bytes(self._item_bytes + plan.probe.result_bytes, self.config.task_size_hint_bytes)

    def _may_outgrow(self) -> bool:
        """A ``map`` of a known input, run here with no deadline: its serial run can stop to be planned again."""
        return not self.streaming and self.source.known_length is not None and not self._bounded_here()

    def _may_outgrow_lazily(self) -> bool:
        """An ``imap`` run here with no deadline: its lazy serial run can stop to be planned again; not in a child
        forked from the process that began it, which goes on with it only while it needs no pool (review)."""
        return self.streaming and not self._bounded_here() and os.getpid() == self.pid

    def _lazily_until_outgrown(self, plan: planning.Plan) -> Generator[list[Any], None, planning.Plan | None]:
        """A serial ``imap`` its first items' cost made runs as ``_lazily`` does, one item per result asked for,
        until its items have taken several times that estimate (``Plan.outgrow``); the rest is then planned again
        at what its later items cost, as a ``map``'s is (``_serial_until_outgrown``). A stream's first items (a
        header, short records, answers from a warm cache) priced all of it as tiny, and it ran serially to its
        end, however dear the rest. Still cheap, it goes on here and is asked again after twice as much work
        (its run is endless as like as not). Returns the plan for the rest, or None once every item ran here."""
        assert plan.outgrow is not None
        self.where("serial", 1)
        if not self._initialized_elsewhere():
            self._initialize_here()
        base_ns = budget_ns = int(plan.outgrow.after_seconds * 1e9)
        item_ns = (plan.probe.seconds_per_item or 0.0) * 1e9
        while True:
            ran = yield from self._lazily(budget_ns, item_ns)
            if ran is None:
                return None
            rest, self._sample = self.source.rest_for_planning(self._sample), []
            again = self.ex._planner.outgrown(self._call_for(rest), plan, ran, one_by_one=True,
                                              results=self._results_sample,
                                              others_cpu_ns=self._others_cpu_ns) if rest else None
            item_ns = (ran.end_ns - ran.start_ns) / max(1, ran.n_done)
            if again is not None:
                self.next_yield = self.next_index
                return self._replanned(again)
            if self._lazily_spent_ns < budget_ns:  # stopped early by dear items: the rest of this budget first
                budget_ns -= self._lazily_spent_ns  # (under a threshold of 0.3 s the move came at 0.69 s; review 80)
            else:  # a stream may turn dear later on: asked again, each plan under 1% of the work between
                base_ns *= 2
                budget_ns = base_ns

    def _replanned(self, again: planning.Plan) -> planning.Plan:
        """The record follows the plan for the rest of a serial run that outgrew its estimate."""
        self.rec.decision, self.rec.chunk_size, self.rec.contention = again.decision, again.chunk_size, \
            again.contention
        self.rec.fallback_reason, self.rec.fallback_detail = None, ""
        if again.probe.seconds_per_item is not None:  # the rest's items' CPU share, which prices threads' chunks:
            self.rec.cpu_ratio = again.probe.cpu_ratio  # the free head's 1.0 read naps on threads as 2.8x slower
        self.where(again.strategy, again.workers)
        return again

    def _serial_until_outgrown(self, plan: planning.Plan) -> Generator[list[Any], None, planning.Plan | None]:
        """A serial plan its first items' cost made runs here until it has taken several times that estimate
        (``Plan.outgrow``); the rest is then planned again at what its later items cost. Still cheap, it goes on
        here and is asked again after twice as much work, as an ``imap``'s is: its items may turn dear further on
        (2,000 of ~50 ns, then 400 of 4 ms: the block its budget cut held both kinds, priced the rest at 25 us an
        item, and the dear rest ran here). A bar's pieces (``_progress_piece_ns``) cut it more often, without
        a check: under a ``tiny_workload_threshold`` of a minute, the budget is a minute. Returns the plan for
        the rest, or None once every item ran."""
        assert plan.outgrow is not None
        self.where("serial", 1)
        if not self._initialized_elsewhere():
            self._initialize_here()
        budget_ns, spent_ns = int(plan.outgrow.after_seconds * 1e9), 0
        piece_ns = self._progress_piece_ns()
        while (part := self.source.rest()) is not None:
            lo, items = part
            cut_ns = budget_ns - spent_ns if piece_ns is None else min(piece_ns, budget_ns - spent_ns)
            thread0, process0 = time.thread_time_ns(), time.process_time_ns()
            outcome = self._in_caller(ChunkTask(self.next_index, lo, items, self.token), "caller",
                                      budget_ns=max(1, cut_ns), tail_in_budget=True)
            others_ns = _others_cpu_ns(thread0, process0)
            self.next_index += 1
            self.next_yield = self.next_index
            self._raise_if_stopped()
            done = outcome.n_done  # read first: map may put what came before into the list it is handed
            latest = outcome.results[done - 1:done]
            yield outcome.results
            if done >= len(items):
                return None
            self.source.skip(lo + done)
            spent_ns += max(cut_ns, sum(outcome.durations_ns))  # stopped at its cut: a few us before the first
            # block's clock started (hunt: 2 of 32 cuts then ran slivers of 1-9 items the check then priced)
            piece_ns = None if piece_ns is None else int(PROGRESS_PIECE_SECONDS * 1e9)
            if spent_ns < budget_ns:
                continue
            rest = self.source.for_planning()[lo + done:]
            again = self.ex._planner.outgrown(self._call_for(rest), plan, outcome, results=latest,
                                              others_cpu_ns=others_ns)
            if again is not None:
                return self._replanned(again)
            budget_ns, spent_ns = budget_ns * 2, 0  # each plan costs under 1% of the work between two
        return None

    def _chunk_chosen(self) -> bool:
        """The user fixed the chunk size (``chunksize=``, or the config's size for the call's granularity)."""
        config = self.config
        return self.chunksize is not None \
            or (self.granularity == "instance" and config.instance_chunk_size is not None) \
            or (self.granularity == "feature" and config.feature_chunk_size is not None)

    # -- serial ---------------------------------------------------------------

    def _serially(self, plan: planning.Plan) -> Iterator[list[Any]]:
        """A ``map`` in one chunk; an ``imap`` one item per result asked for, as the builtin ``map`` runs."""
        if self.streaming and self._bounded_here():
            yield from self._bounded_stream()
            return
        if self.streaming:
            yield from self._lazily()
            return
        piece_ns = self._progress_piece_ns()
        while (part := self.source.rest()) is not None:
            lo, items = part
            outcome = self._in_caller(ChunkTask(self.next_index, lo, items, self.token), "caller", piece_ns)
            self.next_index += 1
            self._raise_if_stopped()
            done = outcome.n_done  # read first: map may put what came before into the list it is handed
            yield outcome.results
            if piece_ns is not None and done < len(items):  # the rest, in pieces a bar can follow
                self.source.skip(lo + done)
                piece_ns = int(PROGRESS_PIECE_SECONDS * 1e9)

    def _progress_piece_ns(self) -> int | None:
        """A serial map whose progress may be shown runs in pieces of about PROGRESS_PIECE_SECONDS: in one
        chunk its bar stood at 0% until the end (3 s of work: 0%, then 100%). The first piece runs as long as
        a bar is hidden (SHOW_AFTER_SECONDS), so a short call is still one chunk; elsewhere (a script, CI, a
        pipe) nothing changes."""
        wanted = self.call.progress if self.call.progress is not None else interactive()
        if not wanted or self.source.known_length is None:
            return None
        return int((PROGRESS_PIECE_SECONDS if self.call.progress else SHOW_AFTER_SECONDS) * 1e9)

    def _bounded_stream(self) -> Iterator[list[Any]]:
        """A serial ``imap`` under a timeout whose user did not ask for serial: its items in small, growing
        chunks on a payoff thread, each waited for no longer than the time left, as a ``map``'s are. Run in
        the consumer's thread, one hung item held ``next()`` for as long as it hung (20 s past ``timeout=1``
        on a named ``processes`` backend that found the call too small for its pool). Only as many items are
        read ahead of the consumer as the chunk holds (one, then twice as many while a chunk stays short)."""
        size = 1
        while (part := self.source.take(size)) is not None:
            lo, items = part
            done: list[Any] = []
            try:
                outcome = self._on_a_thread(ChunkTask(self.next_index, lo, items, self.token), done)
            except TimeoutError:
                if done:
                    yield list(done)  # every result computed before the deadline is handed out
                raise
            if outcome.n_done or outcome.error is not None:
                self.ex._observers.chunk(self.call, self.rec.add(outcome, "caller", outcome.start_ns))
            self.next_index += 1
            if outcome.results:  # those of a chunk the deadline cut short too
                yield outcome.results
            if outcome.error is not None:
                raise self._items_error(outcome)
            self._raise_if_stopped()
            if outcome.end_ns - outcome.start_ns < SERIAL_CHUNK_SECONDS * 1e9 / 2:
                size = min(2 * size, MAX_SERIAL_CHUNK)
        if not self.source.exhausted:  # no item is read past the deadline: the input did not end, the time did
            self._raise_if_stopped()

    def _lazily(self, outgrow_ns: int | None = None,
                item_ns: float = 0.0) -> Generator[list[Any], None, ChunkOutcome | None]:
        """A serial ``imap``: each item read and run only when its result is asked for.

        No item starts once the call is cancelled or past its deadline; asking
        for a result then raises (every result asked for before came out). A
        chunk here is the record's: about SERIAL_CHUNK_SECONDS of items' work.
        ``outgrow_ns``: once its items' work reached that, it stops after the chunk and returns what that chunk
        ran, the latest items' cost (the stream handed back to the source where it stopped); None once every
        item ran. Not all it ran: a stream's rest is its latest items' kind, and 120 items of ~10 ms after 200,000
        cheap ones were the later half of none of its chunks' timing blocks by count. It stops sooner after a
        chunk whose items cost ``OUTGROW_FACTOR`` times ``item_ns`` (the cost it was planned at) or more: with
        the budget doubled at each check, dear items that came late had run here for as long again.
        """
        items = self.source.stream()
        obs = self.ex._observers
        spent = 0
        while True:
            thread0, process0 = time.thread_time_ns(), time.process_time_ns()
            context = None
            if obs._scoped:  # the call's span current for each item, at the cost of one scope a chunk
                with obs.scope(self.call):
                    context = contextvars.copy_context()
            chunk = StreamedChunk(self.fn, items, self.next_index, self.source.taken, self.token,
                                  int(SERIAL_CHUNK_SECONDS * 1e9), MAX_SERIAL_CHUNK, context)
            self.streamed = chunk
            yield cast("list[Any]", chunk)  # iterated by imap, which runs its items as their results are taken
            outcome = self._end_streamed()
            if chunk.error is not None:
                self.item_error = chunk.error
                raise chunk.error
            if chunk.ended:
                return None
            self._raise_if_stopped()
            if outgrow_ns is not None and outcome is not None:
                took = outcome.end_ns - outcome.start_ns
                spent += took
                if spent >= outgrow_ns or took >= planning.OUTGROW_FACTOR * item_ns * max(1, outcome.n_done) > 0:
                    self._lazily_spent_ns = spent
                    self._others_cpu_ns = _others_cpu_ns(thread0, process0)
                    self.source.hand_back(items)
                    self._sample, self._results_sample = chunk.sample, chunk.result_sample
                    return outcome

    def _end_streamed(self) -> ChunkOutcome | None:
        """Record the streamed chunk its consumer finished or left; what it ran, if any."""
        chunk, self.streamed = self.streamed, None
        if chunk is None:
            return None
        outcome = chunk.outcome()
        self.source.advance(chunk.count + (chunk.error is not None), chunk.ended, chunk.input_error)
        self.next_index += 1
        if outcome.n_done or outcome.error is not None:
            self.ex._observers.chunk(self.call, self.rec.add(outcome, "caller", outcome.start_ns))
        return outcome

    def _in_caller(self, task: ChunkTask, where: str, budget_ns: int | None = None,
                   tail_in_budget: bool = False) -> ChunkOutcome:
        """The chunk run here; its item's error raised. A Ctrl-C in it goes on as it came, its items that ran
        recorded first (they were lost from the record, while ``cancel()`` there counted them).
        ``tail_in_budget``: see :func:`payoff.worker.run_chunk`."""
        def count(outcome: ChunkOutcome) -> None:
            self.ex._observers.chunk(self.call, self.rec.add(outcome, where, task.submit_ns))

        task.submit_ns = time.monotonic_ns()
        if self._bounded_here():
            outcome = self._on_a_thread(task, on_interrupt=count)
        else:
            with self.ex._observers.scope(self.call), alone() if self._serial_asked() else contextlib.nullcontext():
                outcome = run_chunk(self.fn, task.items, task.first, task.index, task.cancel, budget_ns,
                                    on_interrupt=count, tail_in_budget=tail_in_budget)
        count(outcome)
        if outcome.error is not None:
            raise self._items_error(outcome)
        return outcome

    def _serial_asked(self) -> bool:
        """Whether the user asked for this call to run serially (``strategy="serial"``, parallelism switched off):
        its items are then a loop's, and a map inside one may use a pool (``payoff.worker.alone``). Not a serial
        run auto chose: it may be a check that times the items alone, as a pool's would run them."""
        return self.requested == "serial" or not self.config.enabled

    def _bounded_here(self) -> bool:
        """Items that run in the caller under a timeout the user did not ask to run there (a call too small for
        the pool it named, or auto's) run on a payoff thread: in the caller the deadline is only read between
        items, and one that hung held ``map(..., timeout=1)`` for as long as it hung. A call asked to run
        serially (``strategy="serial"``, parallelism switched off) runs in the caller, as asked."""
        return self.timeout is not None and self.requested != "serial" and self.config.enabled

    def _on_a_thread(self, task: ChunkTask, results: list[Any] | None = None,
                     on_interrupt: Callable[[ChunkOutcome], object] | None = None,
                     judged: bool = True) -> ChunkOutcome:
        """The chunk run on a payoff thread the caller waits for no longer than the call's time left; its
        items start only before the deadline, so on time the thread stops at its next item, and an item that
        hangs leaves it stuck (no thread can be stopped from outside), as a hung probe does. A Ctrl-C in the
        caller stops it before its next item, and ``on_interrupt`` gets the items it ran if its item ends
        within the probe's grace, as a probe's do (they were lost from the record: "1 of 12" for 8)."""
        box: list[ChunkOutcome] = []
        errors: list[BaseException] = []
        finished = threading.Event()
        context = contextvars.copy_context()

        def run() -> None:
            try:
                with self.ex._observers.scope(self.call):
                    box.append(run_chunk(self.fn, task.items, task.first, task.index, task.cancel,
                                         results=results))
            except BaseException as exc:  # a Ctrl-C the item raised itself: the caller's, as if it ran there
                errors.append(exc)
            finally:
                finished.set()

        given = max(0.0, self.token.seconds_left() or 0.0)
        started = True
        try:
            try:
                run_on_a_spare_thread(functools.partial(context.run, run))
            except RuntimeError as exc:  # no thread left (ulimit -u)
                if not thread_refused_error(exc):
                    raise
                started = False
            if started:
                wait_in_slices(finished, given, WAIT_SLICE_SECONDS)
        except BaseException:  # Ctrl-C in the caller: the thread starts no item after it
            self.token.set()
            if on_interrupt is not None and finished.wait(PROBE_STOP_GRACE_SECONDS) and box:
                on_interrupt(box[0])
            raise
        if not started:
            return self._here_instead(task, results, on_interrupt)
        if not finished.is_set():
            note = self.ex._planner.outlived(self.fn, lambda: not finished.is_set(), self.timeout or 0.0, given) \
                if judged else None
            try:
                self._raise_if_stopped()
                raise TimeoutError(f"payoff: the map did not finish within timeout={self.timeout} s")
            except (TimeoutError, CancelledError) as exc:
                if note is not None:
                    exc.add_note(note)
                raise
        if errors:
            raise errors[0]
        return box[0]

    def _here_instead(self, task: ChunkTask, results: list[Any] | None,
                      on_interrupt: Callable[[ChunkOutcome], object] | None) -> ChunkOutcome:
        """The chunk ``_on_a_thread`` had no thread for, run in the caller: its items start only before the
        deadline, one that runs past it raises the call's timeout, as on a thread (reviews 61, 62), and a
        Ctrl-C hands ``on_interrupt`` the items it ran."""
        with self.ex._observers.scope(self.call):
            outcome = run_chunk(self.fn, task.items, task.first, task.index, task.cancel, results=results,
                                on_interrupt=on_interrupt)
        if self.token.expired():
            late = TimeoutError(f"payoff: the map did not finish within timeout={self.timeout} s")
            late.add_note("payoff: no thread could start (ulimit -u, a pids limit), so its items ran in the "
                          "caller, which cannot stop one that runs past the deadline")
            raise late
        return outcome

    # -- pools ------------------------------------------------------------------

    def _acquire(self, plan: planning.Plan) -> Lease | None:
        """A lease on the pool ``plan`` needs; None after an init failure the config lets fall back."""
        if self.streaming:
            self._raise_if_forked()
        asked = time.perf_counter()
        try:
            lease = self._current(self._lease(plan.strategy, plan.workers), plan)
        except Exception as exc:
            self._raise_if_cancelled_during_start(plan, exc)
            if not isinstance(exc, ProcessesRefused):  # none was tried: the last one the OS refused is recent
                self.rec.pool_started = self.rec.pool_start_failed = True
                self.rec.pool_starts += 1
                # what the failed start took is overhead too (a quarter of a call's wall time went uncounted)
                self.rec.pool_start_seconds += time.perf_counter() - asked
            # the call's own timeout struck during the start: its TimeoutError, not a serial run; and a function
            # that crashed a worker process has no caller to fall back to
            crashed = plan.probe.crashed is not None
            if not self.config.force_serial_on_failure or crashed or getattr(exc, "by_call", False) \
                    or isinstance(exc, ImportingMainError):
                raise
            self.rec.fall_back(Reason.INIT_FAILURE, start_failure_detail(plan.strategy, exc))
            return None
        if running_on(lease.pool) or lease.pool.is_own_thread():
            self.ex._pools.release(lease)
            self.rec.fall_back(Reason.NESTED, f"map called on a thread of the {plan.strategy} pool it would run on "
                               "(in a task submitted to it, or a done-callback of one): its chunks would wait "
                               "behind that thread's work")
            return None
        try:
            self._leased(lease, plan)
        except BaseException:  # the call does not hold it yet: a Ctrl-C here left it leased, and shutdown waited
            self.ex._pools.release(lease)
            raise
        return lease

    def _leased(self, lease: Lease, plan: planning.Plan) -> None:
        """The call's bookkeeping of the pool it leased: where it runs, and the GIL's queue watched for threads
        of waiting work."""
        self.rec.pool_reused = not lease.started
        self.rec.pool_leased()
        pool = lease.pool  # a cluster is as big as it is now; a larger warm thread pool runs what was planned
        self.where(plan.strategy, self._cluster_share(pool) if pool.remote else min(plan.workers, pool.workers))
        if plan.strategy == "threads" and waits_mostly(self.rec.cpu_ratio) and self.gil_watch is None \
                and not self.streaming:  # an imap's window would hold its consumer's pauses, and last as long
            self.gil_samplers = _gil_wait.samplers_for(self._expected_seconds(plan))
            with contextlib.suppress(RuntimeError):  # no thread left to sample with: priced as before
                self.gil_watch = _gil_wait.watch(self.gil_samplers)  # None where it cannot be sampled

    def _cluster_share(self, pool: Strategy) -> int:
        """A cluster's worker threads this call may use: all of them, or ``max_workers`` (a shared cluster)."""
        cap = self.config.max_workers
        if cap is None:
            return pool.workers
        self.rec.workers_cap = cap  # its chunks, each on a worker of its own, overlap in the cluster's stamps
        return max(1, min(cap, pool.workers))

    def _expected_seconds(self, plan: planning.Plan) -> float | None:
        """How long the plan's items should keep its workers busy, at their planned cost; None: unknown."""
        cost = self.rec.planned_cost
        return None if cost is None else self.rec.n_items * cost / max(1, plan.workers)

    def _stop_watching(self) -> None:
        """The GIL's queue as the call's threads met it, into the record; the sampler stops if no call watches."""
        if self.gil_watch is not None:
            _gil_wait.unwatch(self.gil_samplers)
            self.rec.gil_waits = _gil_wait.since(self.gil_watch, time.perf_counter_ns())
            self.gil_watch = None

    def _current(self, lease: Lease, plan: planning.Plan) -> Lease:
        """A warm pool on a cluster counts its workers again (``Strategy.refresh``): the cluster may have scaled or
        lost a worker since its start. One whose scheduler is gone is dropped, and the fresh start that replaces
        it fails at once (the failure is remembered), so the call falls back as for an unreachable scheduler."""
        if lease.started or not lease.pool.remote:
            return lease
        try:
            lease.pool.refresh(self.token)
        except PoolClosedError:
            lease.pool.broken = True
            self.ex._pools.release(lease)
            return self._lease(plan.strategy, plan.workers)
        except BaseException:
            self.ex._pools.release(lease)
            raise
        return lease

    def _raise_if_cancelled_during_start(self, plan: planning.Plan, exc: Exception) -> None:
        """A cancel during the start ends the start's wait (``CancelledError``) or the half-started pool (which
        then fails as it may): the call is cancelled, as at any other time, not a pool that failed to start (an
        ``init_failure`` fallback ran the initializer and an item in the caller after the cancel, and the pool
        was counted and learned as failing)."""
        if not self.token.is_set() or self.token.expired():
            return
        if program_ending():  # a daemon thread's call ends with the program (SystemExit), as at any other time
            raise ended_with_the_program(f"payoff: the map was cancelled: the program is ending, and its "
                                         f"{plan.strategy} pool was still starting") from exc
        if isinstance(exc, CancelledError):
            raise exc
        raise CancelledError(f"payoff: the call was cancelled while its {plan.strategy} pool was starting") from exc

    def _lease(self, strategy: str, workers: int) -> Lease:
        if strategy == "custom":
            pool: Strategy = ExternalStrategy(self.config.strategy, workers)
            return Lease(pool)
        lease = self.ex._pools.lease(pool_key(self.config, strategy, workers),
                                     lambda: make_strategy(strategy, workers, self.config))
        if lease.started:
            self.rec.pool_started = True
            self.rec.pool_starts += 1
            self.rec.pool_start_seconds += lease.start_seconds
        return lease

    # -- parallel ---------------------------------------------------------------

    def _in_parallel(self) -> Iterator[list[Any]]:
        assert self.lease is not None
        while True:
            pool = self.lease.pool
            broken: BrokenExecutor | None = None
            try:
                yield from self._drive(pool)
                return
            except BrokenExecutor as exc:
                broken = exc
            except _PoolClosedAtExit as exc:
                self._finish_here(pool, str(exc))
                continue
            except _BoundHere:
                self._bound_rest_here(pool)
                continue
            # out of the except clause: what the recovery raises (the call's timeout as a fresh pool starts) came
            # "during handling of" the pool's own error, which is payoff's, not the user's
            self._after_break(pool, broken)

    def _finish_here(self, pool: Strategy, refused: str) -> None:
        """The pool's exit hook refused new work while the program waits for this thread: the chunks it took
        finish there, the rest run here, in the thread the program's end waits for. A worker that dies meanwhile
        names its item (``WorkerCrashedError``): no fresh pool starts now, and the caller never runs such an item."""
        try:
            while self.in_flight:
                self._wait_and_collect(pool)
        except BrokenExecutor as exc:
            lost = self._drain_broken(pool)
            self._raise_if_stopped()
            if pool.stopped_by is None:
                raise self._crash_error(lost[0], pool.exit_codes(exc), "the program was ending, so no fresh pool "
                                        "could rerun it", exc) from exc
            self._rerun(lost)  # another call's stop killed the workers: no item is suspect
        self._run_the_rest_here(f"the program began to end while this map ran in a thread it waits for, and the "
                                f"{pool.name} pool's exit hook took no more work ({refused}); the chunks it had not "
                                "started ran in this thread")

    def _bound_rest_here(self, pool: Strategy) -> None:
        """Items bound to the caller's thread: the chunks on the pool finish (their own such items handed back
        too), then the rest of the call runs here."""
        try:
            while self.in_flight:
                self._wait_and_collect(pool)
        except BrokenExecutor:
            lost = self._drain_broken(pool)
            self._raise_if_stopped()
            self._rerun(lost)
        n = len(self.bound)
        self._run_the_rest_here(  # kept for later calls once the rest ran here (``Planner.learn``)
            f"{self.bound[0]}{f' (and {n - 1} more such items)' if n > 1 else ''} on the {pool.name} pool, which "
            "the caller's thread does not meet (an object bound to the thread that made it); auto ran the items not "
            f"yet done in the caller's thread, {'that item' if n == 1 else 'each of them'} again, and keeps this "
            "function there from now on", Reason.THREAD_BOUND)

    def _run_the_rest_here(self, detail: str, reason: Reason = Reason.POOL_STOPPED) -> None:
        """What is left of the map runs in the caller's thread: no pool may start once the program ends (in a
        thread the end waits for), or its items are bound to this thread (``thread_bound``)."""
        assert self.lease is not None
        self._release(self.lease)
        self.rec.recover(reason, detail)
        self.where("serial", 1)
        self.lease = Lease(SerialStrategy(1))

    def _rerun(self, lost: list[ChunkTask]) -> None:
        """Chunks lost with no worker to blame run again first, whole, with nothing counted against them."""
        for task in lost:
            task.retry, task.budget_ns = True, None
        self.requeued.extendleft(reversed(lost))

    def _ship_or_fall_back(self, plan: planning.Plan, lease: Lease) -> Any:
        """The function as the pool will send it; a function only the pool finds it cannot send runs here.

        A ``__main__`` function defined after forked workers started travels by
        value, and cloudpickle may refuse what it reads (a lock, a connection):
        the probe, which pickles by name, could not know. Like any unsendable
        call, it falls back as ``unpicklable`` unless its items must stay off
        the caller (an initializer, an earlier crash), where the error is raised.
        """
        try:
            return self._ship(lease.pool)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            if plan.probe.crashed is not None or self.config.worker_initializer is not None \
                    or not self.config.force_serial_on_failure:
                exc.add_note(f"payoff: {plan.strategy} sends this __main__ function by value (its workers cannot "
                             "look it up by name), and cloudpickle cannot pickle it")
                raise
            self.ex._pools.release(lease)
            self.lease = None
            self.rec.fall_back(Reason.UNPICKLABLE, f"{plan.strategy} sends this __main__ function by value (its "
                               f"workers cannot look it up by name: defined after they started, or no script "
                               f"to import): {exc!r}{CLOUDPICKLE_CANNOT}")  # joblib is no advice then
            return None

    def _ship(self, pool: Strategy) -> Any:
        t0, written = time.perf_counter_ns(), pool.versions_written
        try:
            return pool.ship(self.fn)
        finally:
            self.rec.overhead_ns["serialization"] += time.perf_counter_ns() - t0
            self.rec.fn_shipped |= pool.versions_written > written

    def _drive(self, pool: Strategy) -> Iterator[list[Any]]:
        shipped, self.shipped = self.shipped, None
        if shipped is None:  # a fresh pool after a break ships it again
            shipped = self._ship(pool)
        workers = min(self.rec.workers, pool.workers)  # a larger warm pool than planned: as planned
        self.workers_fed = max(1, workers)
        # a cluster's scheduler runs every chunk it holds on any free thread: a cap is kept by sending no more
        capped = pool.remote and self.config.max_workers is not None and self.config.max_workers < pool.workers
        ahead = self._ahead_of_the_consumer()
        limit = workers if capped else ahead or in_flight_limit(workers)
        self.bytes_cap = (IN_FLIGHT_HINTS if ahead is None else AHEAD_HINTS) * self.config.task_size_hint_bytes
        while True:
            if self.bound and not isinstance(pool, SerialStrategy):
                raise _BoundHere
            if self.source.cut:  # a slow input: what is ready goes out before more of it is read
                yield from self._ready_blocks()
            try:
                if not self.token.is_set():  # nothing starts once the call is cancelled or past its deadline
                    with self.ex._observers.scope(self.call):
                        self._top_up(pool, shipped, limit)
            except Exception as exc:
                self._raise_if_stopped()  # a pool stopped by the call's cancel mid-submit
                if program_ending() and isinstance(exc, RuntimeError):  # a backend's exit hook stopped its pool
                    if _waited_for_at_exit():
                        raise _PoolClosedAtExit(repr(exc)) from exc
                    raise ended_with_the_program(f"payoff: the map was cancelled: the program is ending, and the "
                                                  f"{pool.name} pool was stopped while this map, in another thread, "
                                                  f"still ran ({exc!r})") from exc
                raise
            finally:
                self._observe_collected()
            yield from self._ready_blocks()
            if not self.in_flight:
                if self._nothing_left():
                    if self.failed is not None:  # only if a piece before the error was lost with no rerun
                        raise self._items_error(self.failed[2])
                    self._note_departures(pool)
                    return
                self._raise_if_stopped()  # work left that may not start now
                continue
            self._wait_and_collect(pool)

    def _ahead_of_the_consumer(self) -> int | None:
        """An ``imap`` of a known input under a timeout sends every chunk at once, as ``concurrent.futures``' map
        submits every item: its work goes on while the consumer works on each result, and a deadline it shares
        with that map is not spent by the consumer's own time (200 items of 1 ms under ``timeout=1``, each result
        taking its consumer 10 ms: the stdlib handed out all 200, payoff raised after 179-197; trial 49)."""
        if not self.streaming or self.token.deadline is None:
            return None
        known = self.source.known_length
        return None if known is None else max(1, known - self.source.taken)

    def _note_departures(self, pool: Strategy) -> None:
        """Workers of a cluster that left holding the call's chunks, which its scheduler reran unseen: a recovery."""
        if self.sent_remote and self.rec.fallback_reason is None \
                and (detail := pool.departed_for(self.token_id)) is not None:
            self._note_retry(detail)

    def _nothing_left(self) -> bool:
        return self.source_done and not self.requeued and not self.isolate

    def _top_up(self, pool: Strategy, shipped: Any, limit: int) -> None:
        if self.isolate or self._suspect_in_flight():  # a suspected crash runs alone, so a crash names it
            if not self.in_flight and self.isolate:
                self._submit(pool, shipped, self.isolate[0])
                self.isolate.popleft()
            return
        while self.requeued and len(self.in_flight) < limit:  # earlier than anything held back: never blocked
            self._submit_or_keep(pool, shipped, self.requeued.popleft())
        while len(self.in_flight) + self._waiting() < limit and self._room_for_bytes() \
                and (task := self._next_task()) is not None:
            self._submit_or_keep(pool, shipped, task)
            if self.source.cut:  # a slow input: the results in flight go out before more of it is read
                break

    def _room_for_bytes(self) -> bool:
        """Past one chunk a worker, another is sent only while the pickles in flight weigh less than
        ``IN_FLIGHT_HINTS`` times ``task_size_hint_bytes``. A process pool holds a chunk's payload until its
        queue has taken it: 2 x workers + 1 chunks of a 500 MB item each held 3 GB beside the input. Chunks
        of a few MB keep their queued ones: one a worker only, 100 arrays of 4 MB took 1.6x as long.

        An ``imap`` under a timeout sends ahead of its consumer so that the workers go on while the consumer
        holds a result, and pickled nearly all of its input (2,000 arrays of 1 MB: 2 GB more, hunt 64). It
        goes on past ``AHEAD_HINTS``: a cap of 256 MiB idled the workers behind a consumer slow on one
        result, and 160 arrays of 4 MB under ``timeout=7`` timed out where they had run in 5.4 s (review)."""
        return len(self.in_flight) < self.workers_fed or self.bytes_in_flight < self.bytes_cap

    def _suspect_in_flight(self) -> bool:
        return bool(self.crashes) and any(task.alone for task in self.in_flight.values())

    def _submit_or_keep(self, pool: Strategy, shipped: Any, task: ChunkTask) -> None:
        try:
            self._submit(pool, shipped, task)
        except Exception as exc:
            if not self._unsendable_item(pool, shipped, task, exc):
                self.requeued.appendleft(task)  # a pool that breaks on submit loses no chunk
                raise
        except BaseException:
            self.requeued.appendleft(task)
            raise

    def _unsendable_item(self, pool: Strategy, shipped: Any, task: ChunkTask, exc: Exception) -> bool:
        """A chunk one of whose items cannot be pickled: that item's error waits for the items before it, as an
        item's own error does, and those are sent without it. Raised at once, an ``imap`` on processes handed
        out 1-2 of the 300 results before an unpicklable item 300 (trial 49). False: no item is at fault."""
        if pool.name not in CROSSES_PROCESSES:
            return False
        found = first_unpicklable(task.items, pickle.dumps)
        if found is None:
            return False
        k = found[0]
        now = time.monotonic_ns()
        failing = ChunkOutcome(task.index, task.first, [], now, now, 0, array("q"), array("q"), "caller", error=exc,
                               error_index=task.first + k)
        self._count(failing, "caller", task)  # the record counts it as an item's error
        self._hold_error(task, failing)  # first: a pool that breaks on the rest's submit keeps that rest for a rerun
        if k:
            self._submit_or_keep(pool, shipped, replace(task, items=task.items[:k]))
        return True

    def _waiting(self) -> int:
        """Finished chunks held for order beyond what the call may hold: they count against the in-flight bound.

        ``map`` over a list keeps every item and result anyway, so holding them
        for order costs nothing, while stopping submissions would idle every
        worker but the one running the slow chunk. ``imap`` hands results out as
        they come and may read a stream, so one stuck chunk must not make it
        run, and hold, the rest of its input.
        """
        if not (self.stream or self.streaming):
            return 0
        held = sum(1 for i in self.parts if i != self.next_yield)
        return max(0, held - HELD_CHUNKS_PER_WORKER * self.rec.workers)

    def _next_task(self) -> ChunkTask | None:
        size = self.sizer.next(self._left_to_take())
        if self.lease is not None:  # a pool others may join, or share now: their chunks queue behind this one's
            size = self.sizer.within(size, SHARED_CHUNK_SECONDS if self.lease.crowded() else POOL_CHUNK_SECONDS)
        part = None if self.source_done else self.source.take(size)
        if part is None:
            self.source_done = True
            return None
        task = ChunkTask(self.next_index, part[0], part[1], self.token, budget_ns=self.sizer.budget_ns(len(part[1])),
                         check_each=self.sizer.check_each)
        self.sizes[task.index] = len(part[1])
        self.starts[task.index] = part[0]
        self.next_index += 1
        return task

    def _left_to_take(self) -> int | None:
        """Items the source has not handed out yet; None for a stream of unknown length."""
        known = self.source.known_length
        return None if known is None else known - self.source.taken

    def _requeue_rest(self, task: ChunkTask, done: int) -> None:
        """A chunk over its budget handed back its unstarted items: cut them again, first in line."""
        ahead = self._left_to_take() or 0
        items, first, pieces = task.items[done:], task.first + done, []
        self.sizer.restart()
        while items:
            size = self.sizer.next(len(items) + ahead)
            pieces.append(ChunkTask(task.index, first, items[:size], self.token, retry=task.retry,
                                    budget_ns=self.sizer.budget_ns(size), check_each=self.sizer.check_each))
            items, first = items[size:], first + size
        self.requeued.extendleft(reversed(pieces))

    def _submit(self, pool: Strategy, shipped: Any, task: ChunkTask) -> None:
        t0 = time.perf_counter_ns()
        future = pool.submit(shipped, task)
        self.rec.overhead_ns["serialization"] += task.encode_ns
        self.rec.overhead_ns["dispatch"] += time.perf_counter_ns() - t0 - task.encode_ns
        self.in_flight[future] = task
        self.bytes_in_flight += task.bytes_sent
        if pool.remote:  # tagged, not kept: holding every chunk's future kept every result (96 to 454 MB)
            future.payoff_call = self.token_id  # type: ignore[attr-defined]
            self.sent_remote = True
        future.add_done_callback(self.done.put)

    def _wait_and_collect(self, pool: Strategy) -> None:
        """Wait for one future at most a slice, then take in everything finished.

        Past the deadline nothing is waited for, but what has finished is taken
        in: results already computed are handed out, as ``concurrent.futures``
        does; only a result still to come raises ``TimeoutError``.
        """
        try:
            first = self.done.get(timeout=self._slice())
        except queue.Empty:
            first = None
        if first is None:  # outside the except: a timeout raised there came "during handling of" queue.Empty
            self._raise_if_stopped()
            return
        if self.token.is_set() and not self.token.expired():
            self._raise_if_stopped()  # cancelled: stop now
        finished = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                finished.append(self.done.get_nowait())
        broken: BrokenExecutor | None = None
        try:
            for future in finished:
                task = self.in_flight.pop(future, None)
                if task is None:
                    continue  # a chunk of a pool this call already gave up
                self.bytes_in_flight -= task.bytes_sent
                try:
                    self._collect(pool, future, task)
                except BrokenExecutor as exc:
                    task.killed_workers = isinstance(exc, ChunkKilledWorkers)
                    self.lost.append(task)
                    broken = exc
            if broken is not None:
                raise broken
        except BaseException:  # the call goes another way: what was collected is observed now
            self._observe_collected()
            raise

    def _observe_collected(self) -> None:
        """The observers' turn for the chunks collected since the last: after the next chunks were sent.

        Observing a chunk (metrics of every timing block) took the parent
        ~0.3 ms while the worker that returned it waited for its next chunk:
        on 2 cores, 10,000 items of 50 us ran 6% slower with the default
        observers than without, before the chunks went out first.
        """
        collected, self.collected = self.collected, []
        for stats in collected:
            self.ex._observers.chunk(self.call, stats)

    def _collect(self, pool: Strategy, future: Future[Any], task: ChunkTask) -> None:
        if future.cancelled():
            self._raise_if_stopped()  # this call's own deadline or cancel, whoever's kill cancelled the chunk
            if pool.stopped_by is not None:  # the kill of another call's stop
                raise closed_pool(pool.name)  # lost, not cancelled: rerun on fresh workers as pool_stopped
            raise CancelledError("payoff: a chunk was cancelled")
        try:
            raw = future.result()
        except Exception as exc:
            if UNPICKLING_CHUNK in getattr(exc, "__notes__", ()):
                exc.add_note(f"payoff: the chunk held {_items_of(task)} of the map (chunk {task.index})")
            raise
        t0 = time.perf_counter_ns()
        try:
            outcome = pool.collect(raw, task)
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(
                f"payoff: the results of {_items_of(task)} of the map (chunk {task.index}) came back but cannot "
                f"be unpickled in the caller: {exc}") from exc.__cause__
        except MemoryError as exc:
            exc.add_note(f"payoff: while unpickling the results of {_items_of(task)} of the map (chunk {task.index})")
            raise
        self.rec.overhead_ns["serialization"] += time.perf_counter_ns() - t0
        if outcome.warnings:
            self._show_warnings(task, outcome)
        if outcome.logs:
            _relayed_logs.handle_here(outcome.logs)
        if outcome.unsent:
            self._unsent_back(task, outcome)
        where = _where(pool, task)
        bound = where != "caller" and self._handed_back_bound(pool, outcome)
        stats = self._count(outcome, where, task)
        if outcome.error is not None:
            self._hold_error(task, outcome)  # unordered too: the results its chunk had before it go out first
            return
        if bound:
            self.parts.setdefault(task.index, []).append(outcome)
            self._requeue_rest(task, outcome.n_done)
            return
        self.sizer.observe(stats.n_items, stats.busy_seconds)
        if self._bound_bytes:
            self.sizer.observe_bytes(stats.n_items, self._item_bytes * stats.n_items + _result_bytes(stats, outcome),
                                     self.config.task_size_hint_bytes)
        self.parts.setdefault(task.index, []).append(outcome)
        if outcome.n_done < len(task.items):
            self._requeue_rest(task, outcome.n_done)

    @staticmethod
    def _show_warnings(task: ChunkTask, outcome: ChunkOutcome) -> None:
        """The chunk's warnings, shown here. One the caller's filters make an error, which its worker could not
        (a filter of a class defined in ``__main__`` does not travel), is the chunk's error, its items named: it
        was raised in the middle of collecting, out of the call's account of its items (review 74)."""
        try:
            _relayed_warnings.show_here(outcome.warnings)
        except Warning as exc:
            where = (f"an item among {_items_of(task)} of the map (chunk {task.index}) raised it in a worker process, "
                     "where the filter that makes it an error could not be loaded (a class defined in __main__)")
            if outcome.error is not None:  # which came first is not known: the item's own error stands, said
                with contextlib.suppress(Exception):
                    outcome.error.add_note(f"payoff: besides, {where}, and it is an error here: {exc!r}")
                return
            exc.add_note(f"payoff: {where}; which item is not known, so the chunk's first is named")
            outcome.results, outcome.unsent, outcome.error, outcome.error_index = [], (), exc, outcome.first

    def _handed_back_bound(self, pool: Strategy, outcome: ChunkOutcome) -> bool:
        """An item's error that names a thread, raised on the pool, under auto: the item and the rest of its chunk
        are handed back to run in the caller's thread (``_bound_rest_here``), as a loop would run them. An sqlite3
        connection serves only the thread that made it: waiting items planned on threads raised
        ``ProgrammingError`` on every call where a loop ran them all. An item whose error is its own raises it
        again here. Where that may not be (a named backend, a timeout, which runs a serial call's items on a
        thread of payoff's), the error says what it may mean."""
        error = outcome.error
        if not isinstance(error, Exception) or not _NAMES_A_THREAD.search(said := _text_of(error)):
            return False
        not_here = self._not_here()
        if not_here is None and self.token.deadline is not None:
            not_here = "a call under timeout= runs a serial call's items on a thread of payoff's too"
        if not_here is not None:
            if not self.bound:
                with contextlib.suppress(Exception):
                    error.add_note(f"payoff: raised on the {pool.name} pool; if the function uses an object bound "
                                   "to the thread that made it (an sqlite3 connection), make it in each item or once "
                                   'per thread (threading.local), or run the map with strategy="serial" ('
                                   f"not run again here: {not_here})")
            return False
        at = outcome.first + outcome.n_done if outcome.error_index is None else outcome.error_index
        self.bound.append(f"item {at} raised {type(error).__name__}({said!r})")
        outcome.results = outcome.results[:at - outcome.first]
        outcome.error, outcome.error_index = None, None
        return True

    def _unsent_back(self, task: ChunkTask, outcome: ChunkOutcome) -> None:
        """Results pickle could not send back from a worker. A loop returns them, so auto, which chose the pool,
        keeps those items to run again here when their results' turn comes (``_settle``): a lock among 400 ints
        raised what a loop never does. Where they may not run here (``_not_here``), the first of them is the
        call's error, the results before it out, as before; an item's own error stands, as before."""
        not_here = self._not_here()
        if not_here is None:
            self.reruns.keep(task.index, outcome.first, task.items[outcome.first - task.first:], outcome.unsent)
        elif outcome.error is not None:
            outcome.results, outcome.unsent = [], ()
        else:
            fail_at_refused(outcome, outcome.unsent[0], not_here)

    def _not_here(self) -> str | None:
        """Why the items whose results could not travel may not run in the caller; None: they may."""
        if self.requested != "auto":
            return f"strategy={self.requested!r} was named: payoff runs its items nowhere else"
        if not self.config.force_serial_on_failure:
            return "force_serial_on_failure=False: payoff runs no item elsewhere than on the pool"
        if self.config.worker_initializer is not None:
            return "the caller never ran the pool's worker_initializer, so its items never run there"
        if self.crash_known or self.rec.decision is Reason.AUTO_ISOLATES_CRASHES \
                or self.rec.fallback_reason is Reason.MAP_FAILURE_RETRY:
            return "the function crashed a worker process, and the caller's process never runs its items"
        return None

    def _settle(self, index: int, part: ChunkOutcome) -> bool:
        """Its results whose items run again here filled in, as they are handed out; False when that made the
        piece an item's error, held as any (an earlier error the call holds, or a crash since, keeps them off
        the caller: a loop never reached them)."""
        if not part.unsent:
            return part.error is None
        why_not = self._not_here()
        if why_not is None and self.failed is not None and self.failed[1] < part.first + part.unsent[0][0]:
            why_not = "an earlier item's error ends the call first"
        if why_not is not None:
            self.reruns.take(index, part.first)
            fail_at_refused(part, part.unsent[0], why_not)
        else:
            self._rerun_here(index, part)
        if part.error is None:
            return True
        assert part.error_index is not None
        if self.failed is None or part.error_index < self.failed[1]:
            self.failed = (index, part.error_index, part)
        self.source_done = True
        return False

    def _rerun_here(self, index: int, part: ChunkOutcome) -> None:
        """The items run again as one chunk here, as a serial call's (on a thread under a timeout), the call's
        deadline and ``cancel()`` read as it goes; those that ran are counted however it ends."""
        unsent, items = part.unsent, self.reruns.take(index, part.first)
        part.unsent = ()
        ran: list[Any] = []

        def count(done: ChunkOutcome) -> None:
            self.reruns.ran(part.first, unsent[:done.n_done + (done.error is not None)])

        try:
            again = self._again_here(ChunkTask(index, 0, items, self.token), ran, count)
        except (TimeoutError, CancelledError):  # the items that ran by then ran twice
            self.reruns.ran(part.first, unsent[:len(ran)])
            raise
        count(again)
        for j, result in enumerate(again.results):
            part.results[unsent[j][0]] = result
        if again.error is not None:
            assert again.error_index is not None
            k = unsent[again.error_index][0]
            again.error.add_note(f"payoff: item {part.first + k} ran again in the caller's process: in a worker "
                                 "process its result was one pickle cannot send back")
            part.worker = again.worker  # the note that names where the item raised
            fail_at(part, k, again.error)
        elif again.n_done < len(items):  # the call was cancelled or timed out among them
            self._raise_if_stopped()
            raise CancelledError("payoff: the map was cancelled")

    def _again_here(self, rerun: ChunkTask, ran: list[Any],
                    count: Callable[[ChunkOutcome], None]) -> ChunkOutcome:
        if self._bounded_here():  # no verdict on the function: a rerun is no probe of whether its items hang
            return self._on_a_thread(rerun, results=ran, on_interrupt=count, judged=False)
        with self.ex._observers.scope(self.call):
            return run_chunk(self.fn, rerun.items, 0, rerun.index, self.token, results=ran, on_interrupt=count)

    def _say_reruns(self) -> None:
        """The record names the items that ran twice, however the call ended. A worker's death or a stopped
        pool, which the call met too, keeps the reason as the graver event, the reruns said after its detail."""
        said = self.reruns.said()
        if not said:
            return
        if self.rec.fallback_reason is None:
            self.rec.recover(Reason.UNPICKLABLE_RESULT_RERUN, said)
        elif self.rec.fallback_reason.recovered:
            self.rec.fallback_detail += f"; besides, {said}"

    def _count(self, outcome: ChunkOutcome, where: str, task: ChunkTask) -> ChunkStats:
        """The chunk into the record, its observers' turn to come (``_observe_collected``)."""
        stats = self.rec.add(outcome, where, task.submit_ns)
        if where == "pool" and self.lease is not None:
            self.lease.ran(stats.start_ns, stats.end_ns)
        self.collected.append(stats)
        return stats

    def _hold_error(self, task: ChunkTask, outcome: ChunkOutcome) -> None:
        """A failing chunk: its error waits for every item before it, as the builtin ``map``'s would, so the
        error raised is the first failing item's in input order, not the first to fail (an ``imap`` hands out
        the results before it too).

        Nothing more is read from the input; chunks already running finish.
        """
        at = outcome.error_index if outcome.error_index is not None else task.first + outcome.n_done
        assert outcome.error is not None
        if self.failed is None or at < self.failed[1]:
            self.failed = (task.index, at, outcome)
        self.parts.setdefault(task.index, []).append(outcome)
        self.source_done = True

    def _ready_blocks(self) -> Iterator[list[Any]]:
        """The results ready in input order, a chunk's first ones included while the rest of it still runs.

        A chunk over its time budget hands back its unstarted items, which run
        later under the same index: waiting for the whole chunk kept results
        computed long before a deadline from an ``imap``'s caller (the deadline
        then raised with none of them out).
        """
        if not self.ordered:
            yield from self._done_blocks()
            if self.failed is not None:  # the first error to come is the first in its order
                yield from self._up_to_the_error()
            return
        while True:
            index = self.next_yield
            if self.failed is not None and index == self.failed[0]:
                yield from self._up_to_the_error()
                return
            if index not in self.parts:
                return
            block = self._take_ready(index)
            if block:
                yield block
            if self.failed is not None and index == self.failed[0]:  # an item run again here raised
                yield from self._up_to_the_error()
                return
            if index in self.sizes:
                return  # the rest of the chunk is still to come
            self.next_yield += 1

    def _up_to_the_error(self) -> Iterator[list[Any]]:
        """The failing chunk's results before its failing item, once all are back; then the item's error."""
        assert self.failed is not None
        index, at, failing = self.failed
        before = sorted((p for p in self.parts[index] if p.first < at), key=lambda p: p.first)
        if sum(p.n_done for p in before) < at - self.starts[index]:
            return  # a piece of the chunk before the error is still running
        if not all(self._settle(index, p) or p is failing for p in before) and self.failed[1] < at:
            yield from self._up_to_the_error()  # an item before it, run again here, raised first
            return
        results = [r for p in before for r in p.results][: at - self.starts[index]]
        if results:
            yield results
        raise self._items_error(failing)

    def _done_blocks(self) -> Iterator[list[Any]]:
        """Every chunk's results that are back, whatever its place: ``imap_unordered``."""
        for index in list(self.parts):
            if self.failed is not None and index == self.failed[0]:
                continue  # its results before the error go out with it
            block = self._take_ready(index)
            if block:
                yield block

    def _take_ready(self, index: int) -> list[Any]:
        """The chunk's results from its first not yet taken up to the first still to come (or failed).

        Its pieces (handed back, or split to isolate a crash) come back in any
        order; those taken leave the chunk, whose start and size move past them:
        a chunk all out leaves ``sizes`` and ``starts``.
        """
        parts = sorted(self.parts[index], key=lambda p: p.first)
        at, taken = self.starts[index], 0
        while taken < len(parts) and parts[taken].first == at and self._settle(index, parts[taken]):
            at += parts[taken].n_done
            taken += 1
        if parts[taken:]:
            self.parts[index] = parts[taken:]
        else:
            del self.parts[index]
        self.sizes[index] -= at - self.starts[index]
        self.starts[index] = at
        if not self.sizes[index]:  # all out: an endless imap cuts chunks for as long as it runs
            del self.sizes[index], self.starts[index]
        if taken == 1:
            return parts[0].results  # a whole chunk's own list: a serial map returns it without a copy
        return [r for p in parts[:taken] for r in p.results]

    # -- failures -----------------------------------------------------------------

    def _after_break(self, pool: Strategy, exc: BrokenExecutor) -> None:
        """Recover from a broken pool: finished chunks kept, lost ones to fresh workers or isolation."""
        first = pool.exit_codes(exc)  # before the pool stops the survivors: the dead worker, most often alone
        lost = self._drain_broken(pool)
        stood = pool.where_the_dead_stood(id(self.token))  # before the survivors are stopped too
        self.ex._pools.discard(pool)
        codes = first or pool.exit_codes()  # after the kill: every worker has been reaped and has its code
        self._raise_if_stopped()
        if pool.stopped_by is not None:  # never a user's pool: _abandon does not stop those
            self._after_stop(pool, lost)
            return
        if not lost:
            self._resume_after_submit_failure(pool, exc)
            return
        if not self.config.force_serial_on_failure:
            raise self._crash_error(lost[0], codes, "force_serial_on_failure=False: not rerun", exc)
        confirmed = next((task for task in lost if task.killed_workers), None)
        if confirmed is not None:  # the pool's scheduler tried it on worker after worker: not narrowed down
            raise self._crash_error(confirmed, codes, "the cluster's scheduler ran it on worker after worker and "
                                    "every one died; narrowed down further, each try would cost the cluster as "
                                    "many workers again", exc)
        self._triage(lost, codes, exc, stood)
        self._restart(pool, exc, lost)

    def _after_stop(self, pool: Strategy, lost: list[ChunkTask]) -> None:
        """Another call stopped the shared pool on purpose: this call's lost chunks rerun as they were, on fresh
        workers, and nothing is counted against them (no item is suspect: no worker crashed)."""
        self.restarts += 1
        if self.restarts > MAX_POOL_RESTARTS:
            raise RuntimeError(f"payoff: the {pool.name} pool this call ran on was stopped {self.restarts} times "
                               f"by other calls (last by {pool.stopped_by}); the call gave up")
        self._rerun(lost)
        if self._here_at_exit(f"the {pool.name} pool was stopped by {pool.stopped_by}",
                              f"{len(lost)} lost chunk(s) and the rest"):
            return
        self.rec.recover(Reason.POOL_STOPPED, f"the {pool.name} pool was stopped by {pool.stopped_by} while this "
                         f"call ran on it; {len(lost)} lost chunk(s) were rerun in fresh workers")
        self._fresh_lease(pool)

    def _drain_broken(self, pool: Strategy) -> list[ChunkTask]:
        """Every chunk still in flight on a broken pool ends soon: keep what finished, return what was lost."""
        while self.in_flight:
            with contextlib.suppress(BrokenExecutor):
                self._wait_and_collect(pool)
        self._observe_collected()
        lost, self.lost = self.lost, []
        return sorted(lost, key=lambda t: (t.index, t.first))

    def _triage(self, lost: list[ChunkTask], codes: list[int], exc: BaseException, stood: list[int]) -> None:
        """A chunk lost once reruns with the rest; lost again, alone; lost alone, split until one item is left.

        A rerun marks each item before it runs (``Strategy.where_the_dead_stood``): an item a dead worker
        stood on runs alone next, the rest of its chunk with the others, so a segfault is named on its third
        crash, not after halving its chunk to one item (eight crashes, 5 s on joblib, for a map of 200).
        """
        alone = len(lost) == 1 and lost[0].alone
        again = [t for t in lost if t.alone and len(t.items) == 1 and (alone or t.first in stood)]
        if again:
            raise self._crash_error(again[0], codes, "it crashed a fresh worker again, alone", exc)
        self.crashes.update({task.index for task in lost})  # pieces of one handed-back chunk are lost once
        if stood and self._isolate_where_they_stood(lost, stood):
            return
        for task in reversed(lost):
            task.retry, task.budget_ns = True, None  # a suspect runs whole, so a crash names it
            if alone:
                if len(task.items) == 1:
                    raise self._crash_error(task, codes, "it crashed a fresh worker again, alone", exc)
                for half in reversed(_halves(task)):
                    self.isolate.appendleft(half)
            elif self.crashes[task.index] >= 2:
                task.alone = True
                self.isolate.appendleft(task)
            else:
                self.requeued.appendleft(task)

    def _isolate_where_they_stood(self, lost: list[ChunkTask], stood: list[int]) -> bool:
        """Each lost chunk holding a marked item is cut around it: the item to run alone, the rest rerun."""
        suspects: list[ChunkTask] = []
        rerun: list[ChunkTask] = []
        for task in lost:
            cuts = [at - task.first for at in stood if task.first <= at < task.first + len(task.items)]
            lo = 0
            for cut in cuts:
                if cut > lo:
                    rerun.append(self._piece(task, lo, cut))
                suspects.append(self._piece(task, cut, cut + 1, alone=True))
                lo = cut + 1
            if lo < len(task.items):
                rerun.append(self._piece(task, lo, len(task.items)))
        if not suspects:
            return False
        self.isolate.extendleft(reversed(suspects))
        self.requeued.extendleft(reversed(rerun))
        return True

    def _piece(self, task: ChunkTask, lo: int, hi: int, alone: bool = False) -> ChunkTask:
        return ChunkTask(task.index, task.first + lo, task.items[lo:hi], self.token, retry=True, alone=alone)

    def _restart(self, pool: Strategy, exc: BrokenExecutor, lost: list[ChunkTask]) -> None:
        self.restarts += 1
        if self.restarts > MAX_POOL_RESTARTS or isinstance(pool, ExternalStrategy):
            why = ("workers kept dying" if self.restarts > MAX_POOL_RESTARTS
                   else "a user-supplied pool cannot be restarted")
            raise self._crash_error(lost[0], pool.exit_codes(exc), why, exc)
        try:
            self._fresh_lease(pool)
        except Exception as start_error:
            self._raise_if_stopped()  # a cancel or the deadline ended the start: no item is to blame
            if pool.remote:  # no fresh pool on the service the workers live on: it went, not a worker
                raise RuntimeError(
                    f"payoff: the {pool.name} cluster this call ran on is gone or has no workers: its chunks were lost "
                    f"({exc}) and no fresh {pool.name} pool could start on it ({start_error!r}); no item is suspect"
                ) from start_error
            raise self._crash_error(lost[0], [], f"no fresh {pool.name} pool could start ({start_error!r})",
                                    exc) from start_error
        self._note_retry(f"the {pool.name} pool broke ({exc}); lost chunks were rerun in fresh workers")

    def _resume_after_submit_failure(self, pool: Strategy, exc: BrokenExecutor) -> None:
        """Nothing ran on the broken pool: a fresh one of ours; a user's pool cannot be restarted, so the call
        raises. Run in the caller, a call on a user's process pool broken by an item of the call before (its
        function's, or one it wraps: a ``partial``) ended the caller's process (pip-user trial); a thread pool
        breaks only when its initializer failed, and its items ran where that never ran (the second review).
        A plain ``BrokenExecutor``: nothing of this call crashed, and its function is not marked for it."""
        if isinstance(pool, ExternalStrategy):
            raise BrokenExecutor(
                f"payoff: the user-supplied pool is broken ({exc}) and payoff cannot restart a pool it does not "
                "own; nothing of this call ran (its items never run in the caller's process instead: an item "
                "that killed a worker would end it, and a pool's initializer never ran there). Hand over a "
                "fresh pool, or name a strategy (payoff restarts its own pools).") from exc
        if self._here_at_exit(f"the {pool.name} pool broke ({exc})", "the chunks it never started"):
            return
        self._note_retry(f"the {pool.name} pool broke ({exc}); chunks it never started went to a fresh pool")
        self._fresh_lease(pool)

    def _here_at_exit(self, what: str, rest: str) -> bool:
        """Once the program ends no pool may start ("cannot schedule new futures after interpreter shutdown"):
        what a fresh pool would have run runs in a thread the program's end waits for; a daemon thread's call
        ends with the program. False while the program goes on."""
        if not program_ending():
            return False
        if not _waited_for_at_exit():
            raise ended_with_the_program(f"payoff: the map was cancelled: the program is ending, and {what}")
        self._run_the_rest_here(f"{what} while the program was ending, when no fresh pool may start; {rest} ran "
                                "in this thread, which the program's end waits for")
        return True

    def _fresh_lease(self, broken: Strategy) -> None:
        """Give back the lease on the broken pool and take one on a new pool of the same kind."""
        assert self.lease is not None
        self._release(self.lease)
        self.lease = self._lease(broken.name, broken.workers)

    def _release(self, lease: Lease) -> None:
        """Give back a lease the call ran on, first noting what other work held of its pool meanwhile."""
        own = [(c.start_ns, c.end_ns) for c in self.rec.chunks if c.where == "pool"]
        self.rec.share(lease.shared(), lease.held_by_others_ns(self.rec.workers, own))
        self.ex._pools.release(lease)

    def _note_retry(self, detail: str) -> None:
        self.rec.recover(Reason.MAP_FAILURE_RETRY, detail)

    def _crash_error(self, task: ChunkTask, codes: list[int], why: str, cause: BaseException) -> WorkerCrashedError:
        code = _culprit_code(codes)
        item = task.first if len(task.items) == 1 else None
        where = _items_of(task)
        err = WorkerCrashedError(
            f"payoff: a worker process died ({describe_exit(code)}) running {where} of the map "
            f"(chunk {task.index}); {why}. The caller's process never runs an item that crashed a worker.",
            item_index=item, chunk_index=task.index, exitcode=code, completed=self._completed())
        err.__cause__ = cause
        return err

    def _completed(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for parts in self.parts.values():
            for p in parts:
                out.update(zip(range(p.first, p.first + p.n_done), p.results, strict=True))
        return out

    # -- stopping -------------------------------------------------------------------

    def _slice(self) -> float:
        left = self.token.seconds_left()
        return WAIT_SLICE_SECONDS if left is None else max(0.0, min(WAIT_SLICE_SECONDS, left))

    def _raise_if_stopped(self) -> None:
        if self.token.expired():
            # only where no chunk came back from the pool: workers that finished chunks hold no lost lock (a
            # notebook's kernel threads are always there, and its every slow call was blamed on them)
            hint = "" if self.lease is None or any(c.where == "pool" for c in self.rec.chunks) \
                else held_at_fork_hint(self.lease.pool.forked_beside)
            # "from None" here and below: raised while payoff handles its own exceptions (a pool that broke or
            # closed as another call's timeout stopped it), which are no part of the user's traceback
            if self.streaming:
                raise TimeoutError(f"payoff: the {self._kind()}'s next result was not ready within timeout="
                                   f"{self.timeout} s of the call (every result ready by then was handed "
                                   f"out){hint}") from None
            raise TimeoutError(f"payoff: the map did not finish within timeout={self.timeout} s{hint}") from None
        if self.token.is_set():
            if program_ending():
                raise ended_with_the_program("payoff: the map was cancelled: the program is ending") from None
            raise CancelledError("payoff: the map was cancelled") from None

    def _items_error(self, outcome: ChunkOutcome) -> BaseException:
        """The outcome's item's error, noted, to be raised; kept as this call's item error."""
        self.item_error = noted(outcome)
        return self.item_error

    def _abandon(self, exc: BaseException | None = None) -> None:
        """Stop this call's work: cancel queued chunks, and stop workers that cannot be left running.

        An item's own error is no stop, whatever its class: an item's ``sys.exit()`` or a user's
        ``BaseException`` (pytest's ``fail``) killed the process pool another call shared, as Ctrl-C does.
        """
        self.token.set()
        pool = self.lease.pool if self.lease is not None else None
        outside = exc is not None and not isinstance(exc, Exception)  # Ctrl-C, the program's end
        stop = exc is not self.item_error and (isinstance(exc, CancelledError | TimeoutError) or outside)
        if pool is not None and self.in_flight and stop and not isinstance(pool, ExternalStrategy):
            pool.stopped_by = f"call {self.call.call_id}'s {_stop_cause(exc)}"
            self._stop_workers(pool, exc)
        else:
            for future in self.in_flight:
                future.cancel()
        self.in_flight.clear()
        self.bytes_in_flight = 0

    def _stop_workers(self, pool: Strategy, exc: BaseException | None) -> None:
        """Processes are killed (the pool is rebuilt); threads cannot be, so say so when one is stuck (beside
        ``exc``, the call's own error, which the warning must not replace)."""
        if pool.crosses_processes:
            self.ex._pools.discard(pool)  # its futures fail with the pool; cancelling them races its manager
            return
        for future in self.in_flight:
            future.cancel()
        all_done(self.in_flight).wait(STOP_GRACE_SECONDS)  # a second Ctrl-C leaves no future's lock taken
        self._count_stopped_chunks(pool)
        stuck = sum(1 for f in self.in_flight if f.running())
        if stuck:
            self.ex._pools.discard(pool)
            note = warn_before_raising(StuckThreadsWarning(
                f"payoff: {stuck} thread task(s) of this map still run after it stopped: Python cannot stop "
                "a thread from outside. They finish in the background and never keep the program from "
                "exiting; the next map gets a fresh pool."))
            if note is not None and exc is not None:
                exc.add_note(note)

    def _count_stopped_chunks(self, pool: Strategy) -> None:
        """Thread chunks that stopped at their next item once the call stopped: the items they ran count in its
        record, as a chunk in the caller's do (a timeout read "0 of 200 items done" with 50 run on 2 threads).
        One that met an item's error after the stop is left out: the call did not fail of it."""
        for future, task in self.in_flight.items():
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            outcome = pool.collect(future.result(), task)
            if outcome.error is None and outcome.n_done:
                self._count(outcome, _where(pool, task), task)
        self._observe_collected()


_CALL_TOKENS = itertools.count(1)


def _result_bytes(stats: ChunkStats, outcome: ChunkOutcome) -> int:
    """A chunk's results' bytes: as pickled, where they came back from a process; else in memory, read off the
    first (an array, bytes) as the planner reads items. Not what went out: that holds the function, sent with
    the chunk or loaded by its worker (a 64 MiB function read as one item's bytes cut every later chunk to one
    item: 41 s for a 0.33 s map), and the items' bytes are the plan's."""
    if stats.bytes_received:
        return stats.bytes_received
    first = item_bytes_in_memory(outcome.results[:1])
    return 0 if first is None else first * len(outcome.results)


def _where(pool: Strategy, task: ChunkTask) -> str:
    """Where a chunk ran, as its record says: in the caller, a rerun in fresh workers, or the pool."""
    return "caller" if isinstance(pool, SerialStrategy) else "retry" if task.retry else "pool"


def _stop_cause(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, CancelledError):
        return "cancel"
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C"
    return type(exc).__name__ if exc is not None else "stop"


def _halves(task: ChunkTask) -> list[ChunkTask]:
    mid = len(task.items) // 2
    parts = [(task.first, task.items[:mid]), (task.first + mid, task.items[mid:])]
    return [ChunkTask(task.index, lo, items, task.cancel, retry=True, alone=True) for lo, items in parts]


def _items_of(task: ChunkTask) -> str:
    return f"item {task.first}" if len(task.items) == 1 else f"items {task.first}..{task.first + len(task.items) - 1}"


def _culprit_code(codes: list[int]) -> int | None:
    """The dead worker's code, not a survivor's: pools list the likeliest first (``Strategy.exit_codes``)."""
    return codes[0] if codes else None


def on_a_thread_of_its_own(end: Callable[..., None], *args: Any) -> None:
    """Work that takes payoff's locks (a call's end, a shutdown) where none is held: the thread a garbage
    collection or a signal handler interrupted may hold one (they are not reentrant), and lets it go once they
    return. Where no thread can start (the process is out of them), it runs here, as it did before."""
    try:
        threading.Thread(target=end, args=args, name="payoff-call-end", daemon=True).start()
    except RuntimeError as exc:
        if not thread_refused_error(exc):
            raise
        end(*args)


def _others_cpu_ns(thread0_ns: int, process0_ns: int) -> int:
    """CPU this process's other threads used since the two readings: while they compute they hold the GIL as
    well, and a serial run's items that waited for it read as items that wait (review 81: CPU work beside two
    busy threads of the program went to 9-14 threads, not processes)."""
    return max(0, (time.process_time_ns() - process0_ns) - (time.thread_time_ns() - thread0_ns))
