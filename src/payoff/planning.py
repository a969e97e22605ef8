"""From measured facts to a Plan: strategy, workers, chunk size and the reason.

The planner runs the first item(s) in the caller (their results are kept, not
recomputed) to learn what an item costs, checks that function, items and
results can travel to worker processes, and compares the estimated serial
time of the rest against what a pool would need: start-up (unless warm),
per-call and per-chunk overhead, payload transfer. The overhead figures start
as priors and are corrected from every parallel call this process measures.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import pickle
import statistics
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from payoff import _forks
from payoff._costs import CostModel, start_method
from payoff._gil_share import GIL_PROBE_SECONDS, GIL_UNREAD, threads_may_beat_processes
from payoff._item_size import first_item_bytes, item_bytes_in_memory
from payoff._knowledge import (
    CORES,
    COST_SHIFT,
    RESHARE_EVERY,
    SHARE_SHIFT,
    THREADS_KEEP_SPEEDUP,
    VERDICT_REACH,
    Facts,
    Knowledge,
    Verdict,
    cost_shifted,
    pace_for,
    rebuy,
    verdict_counter,
    verdict_near,
)
from payoff._outer_pools import outer_pool
from payoff._payload import by_value_size, cloudpickled_fn, cloudpickled_size, measure_fn, measure_payload, pickled_size
from payoff._probe import (
    PROBE_MAX_ITEMS,
    WAITING_BAND,
    Probe,
    ProbeOutlivedTimeout,
    bounded,
    cpu_ratio_of,
    forget_stuck_probes,
    later_half,
    left_running,
    next_item_here,
    own_seconds,
    probe_cost,
    probe_share,
    stuck_probes,
    waiting_line,
)
from payoff._side_by_side import CHECK_MAX_LOSS_SECONDS, ON_CPU, comparable
from payoff._side_by_side import POOLS as LOCAL_POOLS
from payoff.config import (
    ALIAS_ENV_VAR,
    ENV_VAR,
    ParallelConfig,
    cpu_capacity,
    cpus_described,
    max_workers_limit,
    parse_ce_parallel,
    usable_cpus,
)
from payoff.errors import WorkerCrashedError, describe_exit
from payoff.observers import find_call_site, warning_action
from payoff.reasons import Reason, initial_decision
from payoff.record import (
    ABOVE_THE_LIMIT,
    CLOUDPICKLE_CANNOT,
    EACH_MOVED_ALONE,
    EARLIER_CALLS_COST,
    FEW_BYTES,
    FUNCTION_CARRIES,
    GIL_BOUND_CORES,
    GIL_PRICED_RATIO,
    LOCAL_PROCESS_POOLS,
    ChunkStats,
    MapRecord,
    dear_items,
    gil_bound,
    items_seconds,
    own_work_seconds,
    shares_the_gil,
    stolen_seconds,
    waits_mostly,
)
from payoff.scheduling import CHUNKS_PER_WORKER, even_chunks
from payoff.strategies import CROSSES_PROCESSES, PICKLER, SHIP_ONCE_BYTES
from payoff.strategies.base import describe_callable
from payoff.strategies.joblib_config import asked_n_jobs
from payoff.worker import (
    CPU_SAMPLE_NS,
    ArrayRows,
    CancelToken,
    ChunkOutcome,
    Zipped,
    gate_cost_ns,
    in_an_item,
    in_an_item_run_alone,
    in_worker,
    run_queue_readable,
)

CHECK_EACH_PAYS = 5
"""Dear items hidden among cheap ones must have cost this many times what checking each item costs."""
MIN_CHUNK_SECONDS = 0.005
"""Chunks need not be larger than this much work to amortise their dispatch."""
CHUNK_OVERHEAD_MULTIPLE = 20
"""A chunk holds at least this many times its strategy's per-chunk overhead of work (overhead <= 5%), so a
small call (a 5 ms map on warm processes) still splits across the workers instead of running as one chunk."""
PAYOFF_MARGIN = 1.2
"""Parallel must be estimated this many times faster before payoff pays for a pool."""
OUTSIDE_LOAD_RUNQ = 0.25
"""Worker processes that waited for a CPU this share of their busy time met other programs on the cores (alone,
two workers on 2 CPUs wait 3-7%; beside one busy loop about half, beside two 52-86%)."""
TIMED_LOOP_SECONDS = 60.0
"""A whole serial call is what a loop takes for this long after it (``_beside_a_timed_loop``): busy programs
come and go."""
LOOP_WALL_OWN = 1.25
"""A pool call that met no outside load is held to a loop only whose wall time was its items' own this much at
most: a loop whose probe and planning waited for a CPU outside its items (which read 13-17% waiting) read a
quiet pool's 0.58x as 3.0x (review 71); one slowed by another thread's GIL has the waits in its items."""
STOLEN_LOOP = 0.1
"""A serial call whose items lost more than this share of their time to the machine (``stolen_seconds``) is no
loop to hold pools to: one slowed so set their verdicts at 2.1-2.6 for calls of 0.5-0.6x (hunt 72, F1)."""
CALLER_BUSY = 0.25
"""A pool call whose caller spent this share of its wall time on the call's own work (pickling items and
results, an ``imap``'s consumer) kept a core from its workers itself: a loop that met no load is fair to its loss
(trial 53). One whose caller mostly waited met other programs' load, and is held only to a loop timed under it."""
TIMED_LOOP_ALIKE = 1.5
"""A pool call is held to a timed loop only where its items' own time each is within this ratio of the loop's."""
UNJUDGED_LOSSES = 2
"""Losses in a row under other programs' load with no loop timed lately, after which auto's next call on that
pool runs serially to time one (``auto_serial_check``): 200,000 short texts stayed on processes through 8
calls of 0.51-1.04x, each discarded as the load's (trial 53)."""
ITEM_SPREADS_CORES = 1.5
"""CPUs an item keeps busy at once (``Probe.cores``) from which its native threads compute beside it."""
OVERSUBSCRIBED = 1.25
"""Threads asking for this many times the CPUs there are, with their items' native threads, run slower than a loop."""
GIL_PROBE_WORK = 10
"""A call samples the GIL in a longer probe only where its work is this many times that probe's budget: the
probe's items run in the caller, about half of them time a pool would have saved."""
PACED = ("threads", "processes")
"""The strategies whose calls' wall time an item is kept, for ``Planner._gil_free`` to compare."""
THREADS_MATCH = 0.95
"""Threads chosen for items that hold the GIL little keep them while an item there takes at most 1/0.95 of the
wall time it takes on processes: they send nothing and copy no data into workers, so a tie is theirs."""
THREADS_MIN_ITEM_SECONDS = 10e-6
"""Items cheaper than this cannot gain on threads, even items that release the GIL: each item hands the GIL
between the threads, which costs about as much as the item. Two threads against a loop on 2 cores, with
``zlib.crc32`` (GIL-free above 5 KB): 0.75x at 0.6 us an item, 0.70x at 2.2 us, 0.99x at 8 us, 1.36x at
31 us, 1.44x at 124 us (``ThreadPoolExecutor(2)``, 8 chunks). On a million trivial items of 65 ns, auto's
first call tried threads for data processes could not take and ran 1.3x the loop (5x beside a busy program)."""
DATA_WEIGHS = 0.25
"""Moving a call's data to worker processes weighs from this share of their compute on: a call it keeps off them
is ``payload_too_large`` (not ``tiny_workload``), and after a measured loss threads, which share the data, are
tried (``Planner._shares_instead``)."""
SHARE_WITHOUT_GIL = LOCAL_PROCESS_POOLS | {"serial"}
"""Where a call's items read their CPU share with no other thread of the call holding the GIL."""
SIZE_SERIAL_CALLS_FROM = 0.05
"""Seconds of measured work from which an auto call kept serial still pickles its function, an item and a result
to size them and remembers what it measured (see ``_worth_sizing``)."""
IMAP_ITEM_MIN_SECONDS = 1e-6
"""An ``imap``'s items cheaper than this, timed one by one as their results were asked for, stay in the caller when
its run is planned again: the caller reads, sends, receives and hands out each item whatever runs it (~0.4 us a
number from a generator), and timed between the consumer's steps an item reads dearer than in a pool's tight loop
(squares: 175 ns against 64). 1,000,000 squares from a generator went to processes at a later check, 1.6-1.8x
the time of the serial run, in 2 of 3 runs."""
RECALL_OVERTURNED = 10.0
"""A recalled function runs its first item here while no result of it was seen to pickle; if that item cost under
a tenth of what earlier calls measured, the call is planned at this call's cost: its arguments differ (a cache
that hits again after calls that missed: 60 items of 0.1 us went to processes on a remembered 3 ms an item, 48x
slower than serial). Items that turn out dear after all are caught by the serial run's budget (``_outgrow``).
Not extended to every call after a cost shift: on an input sorted by cost its first item is the cheapest, and
a function whose cost keeps shifting is probed in full on every call anyway (``UNSTEADY_SHIFTS``)."""
IMPORTS_SAID = 0.25
"""A fallback's detail names the workers' imports (``_imports_again``) where they are this share of the pool's
time or more."""
SHARE_SHIFT_FLOOR = 0.1
"""A share read by the items checked overturns the recalled one only this far from it too (``_other_work``)."""
MISLEADING_FIRSTS = 2
"""After this many objects of one source whose first item read another share and the second did not, the
source's first items are its own kind (a connection set up per closure): its other objects are not checked
(each check ran two items ahead of the pool, 0.015 s a call where 0.009 s sufficed). Other work found resets it."""
OTHER_WORK_ITEMS = 8
"""Items a worker from which another object of a measured source has its first item checked here (see
``_another_object``): one item run ahead of the pool costs such a call at most an eighth of its time."""
UNSTEADY_SHIFTS = 2
"""A workload whose cost shifted this often in its last ``COST_HISTORY`` measured calls has no one cost (a
partial or lambda per request over other arguments, all keyed by one code location): each call probes again."""
AMORTIZE_CALLS = 100
"""A pool outlives the call that starts it: a workload seen N times before shares the start over N + 1."""
CALL_EVENTS = 4096
"""Starts and ends of this process's calls the planner remembers, to tell a call that ran alone from one that
shared the process (its GIL, its pools) with others."""
LEFT_RUNNING = -1
"""``Planner._last_event_of``'s key for the ends of calls that left items running: no thread's ident. A call this
thread ended with items still running (a ``timeout=``, an item's error) did not end before the next: a
pure-Python function probed right after a timed-out map on threads read a share of 0.35-0.40 and went to 5-6
threads as waiting work (review)."""
CALL_EVENT_THREADS = 256
"""Threads whose last call's time the planner keeps; past this, the older half is forgotten (a thread per
request comes and goes)."""
OPEN_CALL_HORIZON_SECONDS = 60.0
"""A call planned this long ago and not ended no longer counts as running beside the calls that end now."""
CROWDED_SHIFT_SECONDS = 1e-3
"""A call among others teaches a dearer cost only when its items took this much longer in all than the remembered
cost says (``Planner._learn_beyond_crowding``)."""
OTHERS_WINDOW_SECONDS = 1.0
"""A probe counts as among other calls when a call of another thread of this process started or ended this
recently."""
OUTGROW_FACTOR = 4.0
"""A call auto planned serial on what its first items cost is planned again once its run here has taken this
many times that estimate: its items grew dearer along the input (a cheap head, sizes sorted ascending), and
the first items, all a probe can read, had priced the whole call as tiny (0.3 s of work run serially)."""
_OUTGROWN = (Reason.TINY_WORKLOAD, Reason.POOL_START_COST, Reason.NO_MEASURED_GAIN)
"""The fallbacks made on the cost of a call's work, which its serial run may show was wrong (``_outgrow``); and
``payload_too_large`` for items and results of a few bytes (``_moved_alone``)."""
OUTGROW_MIN_SECONDS = 0.02
"""...and at least this long: a serial call whose work stays under it never pays for a second plan."""


@dataclass(frozen=True)
class Plan:
    strategy: str
    workers: int
    chunk_size: int
    decision: Reason
    fallback: Reason | None = None
    detail: str = ""
    probe: Probe = field(default_factory=Probe)
    min_chunk: int = 0
    """The guided schedule's floor: chunks shrink towards it at the tail (equal to ``chunk_size`` when fixed)."""
    floor_seconds: float = 0.0
    """For a cost not yet measured (no probe ran): the work a tail chunk must hold, in items once measured."""
    isolated: bool = False
    """No item of this call may run in the caller: a function not measured yet under a backend named for its worker
    processes, or one that crashed a worker process. A pool that cannot start must then raise, not fall back."""
    check_each: bool = False
    """Chunks check their budget before each item: the function's earlier call hid dear items among cheap ones
    in blocks that ran past their chunk's budget (``Facts.hidden_dear``)."""
    budget_item: float | None = None
    """With ``check_each``: the typical item's seconds, which chunk budgets are cut for (not the mean)."""
    outgrow: Outgrow | None = None
    """A serial plan made on its first items' cost: where the rest may go once its run here outgrows that."""
    contention: float = 1.0
    """How many times longer the function's items took on this pool than alone (``payoff._side_by_side``)."""


class Outgrow(NamedTuple):
    """The pool a serial plan's rest may move to, and after how many seconds of its run in the caller."""

    strategy: str
    workers: int
    after_seconds: float


Decide = Callable[[float], "tuple[Reason, str] | None"]
"""A library's decision once its first item ran in the caller, from the seconds it took: a reason keeps the
rest of the call there, None (or an exception) sends it where the call was asked to run."""


@dataclass(frozen=True)
class Call:
    """The facts of one call the planner needs."""

    fn: Callable[[Any], Any]
    items: Sequence[Any]
    config: ParallelConfig
    requested: str
    chunksize: int | None
    granularity: str | None
    releases_gil: bool | None
    warm: frozenset[str]
    """Strategies whose pool is already running in this executor."""
    prior_calls: int
    """Earlier calls of the same workload on this executor: a pool start is shared by them."""
    timeout: float | None = None
    """The call's ``timeout=``: the probe may not keep the caller waiting longer."""
    serial_because: tuple[Reason, str] | None = None
    """A library that split the work into items itself (the CE adapter, in instances) already decided they run
    serially, and why: its reason is the record's, where the items' own count would only say "too few"."""
    on_interrupt: Callable[[ChunkOutcome], object] | None = None
    """Gets the items the probe ran in the caller when Ctrl-C (any non-``Exception``) cuts it short: the plan
    that would carry them to the record never comes."""
    stop: CancelToken | None = None
    """The call's cancel token and deadline: a wait while planning (a dask connect) ends when they say so."""
    decide_after_first: Decide | None = None
    """Such a library deciding once the first item ran in the caller (under a named process backend too): the
    planner's own rules, made for items of one kind, do not know what the library's items hold."""
    sized: bool = True
    """``items`` are all the call's; False: a stream's first ones (an ``imap`` over a generator), whose end no
    one knows."""
    warm_processes: Mapping[str, frozenset[int]] = field(default_factory=dict)
    """The worker process ids of each warm pool of this machine's processes (``processes``, ``joblib``)."""
    sends_by_value: Callable[[str], bool] | None = None
    """Whether the warm pool of a strategy would send ``fn`` by value (``Strategy.sends_by_value``); asked only
    of a function whose pickle names ``__main__``."""


def available_workers(config: ParallelConfig) -> int:
    """``max_workers``; else, for ``strategy="joblib"``, what a ``joblib.parallel_config(n_jobs=...)`` around
    the call asks (as joblib's own ``Parallel`` would use); else the usable CPUs."""
    if config.max_workers is not None:
        return config.max_workers
    cpus = usable_cpus()
    if config.strategy_name == "joblib":  # as many as max_workers may be: 64 per CPU
        return min(asked_n_jobs(cpus) or cpus, max_workers_limit())
    return cpus


def _forget_open_calls() -> None:
    """A forked child runs none of its parent's calls: those still open there never end in it."""
    for planner in list(_PLANNERS):
        planner._open = weakref.WeakKeyDictionary()


_PLANNERS: weakref.WeakSet[Planner] = weakref.WeakSet()
_forks.in_child(_forget_open_calls)


class Planner:
    """Everything this process has learned about backends and functions, and the decisions drawn from it.

    ``plan`` is a function of the call and this state: with the facts of a
    function taught (``knowledge.teach``) no item runs and no clock is read for
    the decision, so decisions can be tested from a table. ``learn`` feeds each
    finished call's record back, so a plan that did not pay off is not repeated;
    what a call measured while other calls of this process ran is partly theirs,
    and only what holds regardless is learned from it (see ``learn``).
    """

    def __init__(self) -> None:
        self.costs = CostModel()
        self.knowledge = Knowledge()
        self._events_lock = _forks.Lock()
        self._events: deque[int] = deque(maxlen=CALL_EVENTS)
        self._last_event_of: dict[int, int] = {}
        """Per thread (``threading.get_ident``): when its last call started or ended. A scan of ``_events`` for
        other threads' took 40-90 us a call in a program of back-to-back calls (the window held thousands)."""
        self._open: weakref.WeakKeyDictionary[CancelToken, int] = weakref.WeakKeyDictionary()
        """Calls planned and not yet learned from, by their cancel token (a call's own, dropped with it)."""
        _PLANNERS.add(self)

    def reset(self) -> None:
        self.costs.reset()
        self.knowledge.forget()
        forget_stuck_probes()
        with self._events_lock:
            self._events.clear()
            self._last_event_of.clear()
            self._open.clear()

    def _event(self, stop: CancelToken | None = None, *, ends: bool = False, left_running: bool = False) -> None:
        """A call starts (``plan``) or ends (``learn``) now; ``stop`` names it among the calls still open.
        ``left_running``: it ended with items still running (a timeout, an item's error: the rest finish in the
        background), which the next probe of its thread meets as another thread's call."""
        with self._events_lock:
            now = time.monotonic_ns()
            self._events.append(now)
            self._last_event_of[LEFT_RUNNING if left_running else threading.get_ident()] = now
            if len(self._last_event_of) > CALL_EVENT_THREADS:
                self._last_event_of = dict(sorted(self._last_event_of.items(), key=lambda kv: kv[1])[
                    -CALL_EVENT_THREADS // 2:])
            if stop is not None and ends:
                self._open.pop(stop, None)
            elif stop is not None:
                self._open[stop] = self._events[-1]

    def _others_open(self, stop: CancelToken | None) -> bool:
        """Whether a call other than ``stop``'s, planned in the last ``OPEN_CALL_HORIZON_SECONDS``, is not yet
        learned from: it runs now. An ``imap`` its consumer left paused (a ``break``, its iterator kept)
        stays open until collected, and must not mark every later call as crowded for good."""
        since = time.monotonic_ns() - int(OPEN_CALL_HORIZON_SECONDS * 1e9)
        with self._events_lock:
            return any(token is not stop and at >= since for token, at in self._open.items())

    def _among_others(self, wall_seconds: float, stop: CancelToken | None = None) -> bool:
        """Whether another call of this process started or ended while the call ending now ran.

        Its own start is one event in that window; any second one is another
        call's. Two calls that overlap both see it: the later one's start falls in
        the earlier one's run, the earlier one's end in the later one's. (A call
        that starts before this one and ends after it, with no other call
        starting or ending meanwhile, is not seen here: calls that name
        themselves (their cancel token) are, by ``_others_open``.) A call that
        names itself is timed from its own start: its wall time, counted back from
        now, misses that start by however long its thread was held after its
        record was made (its observers, a busy machine).
        """
        seen = 0
        with self._events_lock:
            began = self._open.get(stop) if stop is not None else None
            since = time.monotonic_ns() - int(wall_seconds * 1e9) if began is None else began
            for at in reversed(self._events):
                if at < since:
                    break
                seen += 1
                if seen >= 2:
                    return True
        return False

    def _others_lately(self, seconds: float) -> bool:
        """Whether a call of another thread of this process started or ended in the last ``seconds``.

        A call this thread made before, and that has ended, ran before this one, not beside it. Counted, every
        call right after another of the same thread read as among others: that turned off the probe's reading
        of CPU an item delegates to its own pool (a forest's ``n_jobs=-1`` predict went to 15-20 threads as
        waiting work after its serial check, 1.3x the loop, where processes ran it at 5x; trial 52), and read a
        program's spinning BLAS thread as a GIL holder.
        """
        me, since = threading.get_ident(), time.monotonic_ns() - int(seconds * 1e9)
        with self._events_lock:
            return any(at >= since and thread != me for thread, at in self._last_event_of.items())

    def _others_since(self, start_ns: int) -> bool:
        """Whether another call of this process started or ended since ``start_ns`` (``time.monotonic_ns``): a
        probe that began alone may have shared the GIL with calls that came during it."""
        with self._events_lock:
            return bool(self._events) and self._events[-1] >= start_ns

    def outlived(self, fn: Callable[..., Any], running: Callable[[], bool], timeout: float,
                 given: float) -> str | None:
        """A call's serial items on a payoff thread still ran at its deadline (see ``left_running``): a function
        whose items had at least HUNG_SHARE of the timeout runs only in worker processes while that item runs,
        so a request that hangs for good leaves no more threads (and one that was only slow, once it ends,
        none). Returns the warning's note for the call's ``TimeoutError`` where the filters made it an error."""
        hung, note = left_running(running, timeout, given, "an item of this call still runs")
        if hung:
            self.knowledge.crashed(fn, f"its items, run on a payoff thread, still ran after timeout={timeout:g} s",
                                   running)
        return note

    def plan(self, call: Call) -> Plan:
        """Decide how to run ``call``; may run its first items (the probe)."""
        self._event(call.stop)
        self.knowledge.take_notes()
        cfg = call.config
        if not call.items:
            return Plan("serial", 1, 1, Reason.EMPTY_INPUT)
        workers = local = available_workers(cfg)
        decision = initial_decision(call.requested)
        early = _early_fallback(call, workers)
        if early is not None and not (early[0] is Reason.SINGLE_WORKER and self._may_need_a_worker(call)):
            return _serial(call, early[0], early[1], decision)
        if call.requested == "serial":
            return _serial(call, None, "", decision)
        if call.serial_because is not None:
            return _serial(call, *call.serial_because, decision)
        if call.requested == "auto" and (bound := self.knowledge.bound_of(call.fn)) is not None:
            return _serial(call, Reason.THREAD_BOUND, f"{EARLIER_BOUND}{bound}", decision)
        try:
            open_now = self._others_open(call.stop)
            crowded = open_now or self._others_lately(OTHERS_WINDOW_SECONDS)
            probe = _run_probe(self.knowledge, call, workers, crowded, self.costs, self._others_since, open_now)
        except ProbeOutlivedTimeout as exc:
            if exc.hung:  # its next calls run where payoff can stop an item, while that one runs
                self.knowledge.crashed(call.fn, exc.detail, exc.running)
            raise
        if probe.failed:
            return _serial(call, None, "the probe item raised", decision, probe)
        if probe.decided is not None:
            return _serial(call, *probe.decided, decision, probe)
        remaining = len(call.items) - probe.n
        if call.requested == "custom":
            return self._chunked(call, "custom", workers, probe, remaining, decision)
        strategy, decision, why = self._choose(call, probe, workers)
        sides = (Reason.AUTO_WAITING, Reason.AUTO_CPU_BOUND, Reason.AUTO_RELEASES_GIL)
        if decision in sides and not call.releases_gil \
                and probe.waited is not (decision is Reason.AUTO_WAITING):  # unchanged: no write, no lock
            self.knowledge.sided(call.fn, decision is Reason.AUTO_WAITING)
        isolate = _stays_in_workers(call, probe)
        if why is not None and not (isolate and why[0] is Reason.PAYLOAD_TOO_LARGE):  # large is costly, not unsendable
            _refuse_the_caller(call, probe, strategy, why)
            return _serial(call, why[0], why[1], decision, probe)
        unreachable: list[str] = []
        workers = _cluster_workers(call.config, workers, call.stop, unreachable) if strategy == "dask" else \
            _workers_for(call, decision, probe, remaining, workers)
        if _starts_processes(call, strategy):  # inside another pool's worker: its share of the CPUs
            workers = _process_workers_left(workers)
        if isolate:  # the serial fallbacks below would run its items here: they are for measured functions
            floor = None if _off_the_caller(call, probe) else _floor_fallback(call) or _too_few(call, remaining)
            if floor is not None:  # the user's own minimum for parallel, or nothing to split: it runs here
                return _serial(call, floor[0], floor[1], decision, probe)
            return replace(self._chunked(call, strategy, workers, probe, remaining, decision), isolated=True)
        # measured, and no pool to wait in: the caller is faster, but a process backend the user named is a pool
        # of one as ProcessPoolExecutor(1) is (the caller stays out of reach of a crashing or leaking item), and a
        # named cluster is used as it is (its one thread may be a remote machine's, and only a pool on it sees it
        # grow or go)
        if workers < 2 and cfg.tiny_workload_threshold != 0 and call.requested not in CROSSES_PROCESSES:
            return _serial(call, Reason.SINGLE_WORKER, one_worker_said(cfg, local), decision, probe)
        return self._weighed(call, strategy, decision, workers, probe, remaining, unreachable)

    def _weighed(self, call: Call, strategy: str, decision: Reason, workers: int, probe: Probe, remaining: int,
                 unreachable: list[str]) -> Plan:
        """A measured call on ``strategy``'s pool, or serial where the user's thresholds, its work against the
        pool's cost, or a loss measured at its size say the pool does not pay (``unreachable``: why a cluster
        could not be asked)."""
        if call.requested == "auto" and strategy in call.warm and probe.forgone.get(strategy) \
                and not _imports_again(call, strategy, probe):
            # another auto call's start paid what waiting cost; a named executor's warm pool paid nothing of this
            # executor's: its every call wiped what auto's calls kept serial had forgone, and 7 calls of the
            # matrix's W1 beside one never bought their pool
            self.knowledge.started(call.fn, strategy)
        if call.decide_after_first is not None:  # the library weighed its own items (of unlike sizes): as asked
            return self._chunked(call, strategy, workers, probe, remaining, decision)
        floor = _floor_fallback(call) or _too_few(call, remaining)
        threshold = floor or _work_under_threshold(call, probe, remaining)
        fallback = threshold or (None if _kept_in_workers(call) and call.requested != "auto"
                                 else self._cost_fallback(call, strategy, workers, probe, remaining))
        if fallback is not None and fallback[0] is Reason.PAYLOAD_TOO_LARGE and call.requested == "auto":
            if self._threads_may_pay(call, probe, workers) \
                    and self._cost_fallback(call, "threads", workers, probe, remaining) is None:
                return self._pool_or_alone(call, "threads", workers, probe, remaining, Reason.AUTO_SHARED_MEMORY)
            if _too_cheap_for_threads(probe) or threads_oversubscribe(probe, workers) \
                    or probe.threads_speedup is not None:  # held after a loss: the warning says so (trial 47)
                fallback = (fallback[0], fallback[1] + _why_not_threads(probe, workers))
        fallback = fallback or self._held_by_verdict(call, strategy, decision, probe, remaining)
        if fallback is not None and unreachable and fallback[0] in (Reason.TINY_WORKLOAD, Reason.POOL_START_COST):
            # a cluster that could not be asked: that is why it runs here (after the wait to connect), not its size
            return _serial(call, Reason.INIT_FAILURE, unreachable[0], decision, probe)
        if fallback is not None and fallback[0] is Reason.NO_MEASURED_GAIN \
                and self._shares_instead(call, strategy, workers, probe, remaining):
            return self._pool_or_alone(call, "threads", workers, probe, remaining, Reason.AUTO_SHARED_MEMORY)
        if fallback is None:
            return self._pool_or_alone(call, strategy, workers, probe, remaining, decision)
        if fallback[0] is Reason.POOL_START_COST and probe.seconds_per_item is not None:
            est = _estimate(self.costs, call, strategy, workers, probe, remaining, probe.seconds_per_item)
            self.knowledge.forgo(call.fn, strategy, est.serial - est.warm)
        outgrows = fallback[0] in _OUTGROWN or (fallback[0] is Reason.PAYLOAD_TOO_LARGE and _moved_alone(probe))
        at_least = call.config.tiny_workload_threshold if threshold is not None else None
        grow = _outgrow(call, strategy, workers, probe, remaining, at_least) if floor is None and outgrows else None
        return replace(_serial(call, fallback[0], fallback[1], decision, probe), outgrow=grow)

    def _held_by_verdict(self, call: Call, strategy: str, decision: Reason, probe: Probe,
                         remaining: int) -> tuple[Reason, str] | None:
        """Serial by a loss auto measured at about this call's size, but not every time (``Knowledge.hold``): one
        noisy call must not decide forever. Not for a call forced parallel to be measured
        (``tiny_workload_threshold=0``), nor for threads chosen for shared memory, which have their own verdict."""
        if call.requested != "auto" or decision is Reason.AUTO_SHARED_MEMORY \
                or call.config.tiny_workload_threshold == 0:
            return None
        verdict = verdict_near(probe.verdicts, strategy, remaining)
        fallback = _verdict_fallback(strategy, verdict, probe, remaining, call.sized)
        if fallback is None or verdict is None or self.knowledge.hold(call.fn, verdict_counter(strategy, verdict)):
            return fallback
        return None  # held long enough: measured again

    def outgrown(self, call: Call, plan: Plan, outcome: ChunkOutcome, one_by_one: bool = False,
                 results: Sequence[Any] = (), others_cpu_ns: int = 0) -> Plan | None:
        """The rest of a serial run (``call``'s items) cut once it outgrew its first items' estimate
        (``Plan.outgrow``), planned again at what the run's later items cost; None: it stays serial.
        ``one_by_one``: an ``imap``'s run, its results handed out as asked for (``IMAP_ITEM_MIN_SECONDS``).
        ``results``: the run's latest result, which the rest's are sized by, not the probe's first ones.
        ``others_cpu_ns``: CPU the process's other threads used meanwhile (``_maprun._others_cpu_ns``)."""
        grow = plan.outgrow
        steps = [(ns, k) for ns, k in zip(outcome.durations_ns, outcome.block_sizes, strict=True) if k]
        if grow is None or not steps or not call.items:
            return None
        ns, n = later_half(steps)
        own = _share_not_descheduled(outcome)
        if one_by_one and max(ns / n, steps[-1][0] / steps[-1][1]) * own / 1e9 < IMAP_ITEM_MIN_SECONDS:
            return None  # the latest items too: dear ones that just came are few in a half by count
        # under auto, a rest whose items mostly wait goes to threads, as many as the wait needs, whatever the
        # first plan weighed: items free at first, then sleeping 10 ms, went to 2 processes (hunt 75 F4)
        probe = replace(plan.probe, outcome=None, seconds_per_item=max(ns / n * own / 1e9, 1e-9), known=True,
                        cpu_ratio=cpu_ratio_of(outcome))
        waits = call.requested == "auto" and _waits(probe, grow.workers) \
            and self._waited_alone(outcome, others_cpu_ns)
        strategy, workers = (grow.strategy, grow.workers) if not waits else \
            ("threads", _workers_for(call, Reason.AUTO_WAITING, probe, len(call.items), grow.workers))
        if (waits or strategy in CROSSES_PROCESSES) and not probe.fn_checked:
            # a plan that stayed here surely pickled nothing (``_surely_serial``): a closure over a lock went to
            # processes and raised there (review 80)
            measure_fn(call.fn, probe)
        if waits and probe.pickle_error and not probe.cloudpickle_ok:
            return None  # what no pickler takes may be bound to this thread (an sqlite3 connection: review 81)
        if strategy in CROSSES_PROCESSES:
            item_bytes, result_bytes = _rest_item_bytes(call), _rest_result_bytes(results, plan.probe)
            if item_bytes is None or result_bytes is None:
                return None  # no process takes what pickle refuses: the rest runs here
            probe = replace(probe, item_bytes=item_bytes, result_bytes=result_bytes)
        if _payload_problem(call, strategy, probe) is not None \
                or _work_under_threshold(call, probe, len(call.items)) is not None \
                or self._cost_fallback(call, strategy, workers, probe, len(call.items)) is not None:
            return None  # over ``task_size_hint_bytes`` (hunt 75) or under the user's threshold: as it would be planned
        decision = Reason.AUTO_OUTGREW_ESTIMATE if call.requested == "auto" else plan.decision  # named: as asked
        return self._chunked(call, strategy, workers, probe, len(call.items), decision)

    def _waited_alone(self, outcome: ChunkOutcome, others_cpu_ns: int) -> bool:
        """Whether a serial run's waits were its items' own: not for the GIL other threads of the program (a
        quarter of the wait in their CPU) or other calls held, as the probe tells its items' (review 81: CPU work
        beside two busy threads read a share of 0.15 and went to 9-14 threads where processes ran it 2x)."""
        wait_ns = sum(outcome.durations_ns) - outcome.cpu_ns - outcome.runq_ns
        return wait_ns > 4 * others_cpu_ns and not self._others_since(outcome.start_ns)

    def _may_need_a_worker(self, call: Call) -> bool:
        """Whether one worker still means a pool of one worker process rather than the caller: under a backend
        named for its worker processes (a pool of one, as ``ProcessPoolExecutor(1)``; not ``joblib`` inside a
        ``parallel_config`` of one job, which joblib runs in the caller: see ``_joblib_asks_one``), for a function that
        crashed a worker process, or for workers that run a ``worker_initializer``; or, under auto with one
        CPU, auto's or named threads, more threads than CPUs for work the probe may find waiting."""
        if call.requested in ("auto", "threads") and call.config.max_workers is None:
            return True
        crashed = self.knowledge.crash_of(call.fn) is not None
        named_pool = call.requested in CROSSES_PROCESSES and (crashed or not _joblib_asks_one(call.config))
        return named_pool or _has_initializer(call) or (call.requested == "auto" and crashed)

    def _choose(self, call: Call, probe: Probe, workers: int) -> tuple[str, Reason, tuple[Reason, str] | None]:
        """Pick the backend for ``workers`` local workers; the third element is a reason to stay serial instead."""
        requested = call.requested
        if requested != "auto":
            return requested, Reason.EXPLICIT_STRATEGY, _payload_problem(call, requested, probe)
        if probe.crashed is not None:
            return _isolating_choice(call, probe)
        if _waits(probe, workers):
            return "threads", Reason.AUTO_WAITING, None
        if call.releases_gil:
            return "threads", Reason.AUTO_RELEASES_GIL, None
        problem = _no_children() or _payload_problem(call, "processes", probe)
        if problem is None:
            if self._gil_free(probe, workers, len(call.items) - probe.n):
                return "threads", Reason.AUTO_RELEASES_GIL, None
            return "processes", Reason.AUTO_CPU_BOUND, None
        if problem[0] is Reason.NESTED:
            return "processes", Reason.AUTO_CPU_BOUND, problem
        if problem[0] is Reason.UNPICKLABLE:
            if _cloudpickle_ok(call, probe):
                return "joblib", Reason.AUTO_NEEDS_CLOUDPICKLE, _payload_problem(call, "joblib", probe)
            problem = (problem[0], _cannot_either(problem[1]))
        if problem[0] is Reason.PAYLOAD_TOO_LARGE or probe.payload_cloudpickle_ok is False:
            # data no process backend can take (too large, or no pickler sends it): threads share it in memory
            if self._threads_may_pay(call, probe, workers):
                return "threads", Reason.AUTO_SHARED_MEMORY, None
            problem = (problem[0], problem[1] + _why_not_threads(probe, workers))
        return "processes", Reason.AUTO_CPU_BOUND, problem

    @staticmethod
    def _gil_free(probe: Probe, workers: int, remaining: int) -> bool:
        """Threads for CPU-bound items a probe saw hold the GIL little (``payoff._gil_share``): they share the
        items and results processes would pickle. Each runs a call of a size comparable to this one's
        (``VERDICT_REACH``), threads first; then the faster of the two by the wall clock an item keeps the work
        (``Facts.paces``; threads within ``THREADS_MATCH``). A pace measured at another size is measured again
        (trial 48: a 512-item call's pace on threads, beside 64-item calls on processes, left those on the
        slower processes for good). Their verdicts cannot tell: each is held to its own items' times, and FFTs
        of large arrays on threads read 1.90x for a real 1.68x (memory bandwidth), where a numpy bootstrap read
        1.8x for a real 3.6x (its large temporaries cost fresh pages in the caller's thread) until a serial check read
        the loop (``payoff._side_by_side.ON_CPU``).
        """
        if not threads_may_beat_processes(probe.gil_held, workers) or _too_cheap_for_threads(probe) \
                or threads_oversubscribe(probe, workers):
            return False
        cost = probe.seconds_per_item or 0.0
        threads = pace_for(probe.paces.get("threads", ()), remaining, cost)
        if threads is None:
            return True
        processes = pace_for(probe.paces.get("processes", ()), remaining, cost)
        if processes is None:
            return False
        return threads * THREADS_MATCH <= processes

    def _threads_may_pay(self, call: Call, probe: Probe, workers: int) -> bool:
        """Under auto, threads for data processes cannot take, unless a run showed the GIL holds them back, or
        the items' native threads already keep the CPUs busy (``threads_oversubscribe``).

        That verdict is re-measured like any other (every ``VERDICT_RETRY`` held
        calls, the wait doubling while the loss is confirmed): a run on a busy
        machine must not ban threads for the life of the process.
        """
        if call.requested != "auto" or _too_cheap_for_threads(probe) or threads_oversubscribe(probe, workers):
            return False
        speedup = probe.threads_speedup
        if speedup is None or speedup >= THREADS_KEEP_SPEEDUP:
            return True
        if self.knowledge.hold(call.fn, "threads"):
            return False
        probe.threads_speedup = None  # held long enough: this call measures threads again
        return True

    def _shares_instead(self, call: Call, strategy: str, workers: int, probe: Probe, remaining: int) -> bool:
        """Whether threads get a try where worker processes measured no gain on data whose moving weighed.

        1.5 MB array slices on 2 processes measured 0.90-0.96x (300 MB pickled each call) and auto then ran
        them here for good, where threads share the arrays and ran their numpy work 1.8x faster than the
        loop (memory trial). Threads are measured once, as for data processes cannot take at all
        (``_threads_may_pay``): a loss there keeps the call here too.
        """
        cost = probe.seconds_per_item
        if strategy not in CROSSES_PROCESSES or cost is None:
            return False
        est = _estimate(self.costs, call, strategy, workers, probe, remaining, cost)
        return est.data_weighs and self._threads_may_pay(call, probe, workers) \
            and self._cost_fallback(call, "threads", workers, probe, remaining) is None

    def _pool_or_alone(self, call: Call, strategy: str, workers: int, probe: Probe, remaining: int,
                       decision: Reason) -> Plan:
        """The pool's plan or, once for a pool whose gain was small, a serial call that times the items alone
        (``payoff._side_by_side``): only that tells a loop's time from the pool's items' own, side by side."""
        if call.requested == "auto" and strategy in LOCAL_POOLS and _may_check(call) \
                and not self._others_open(call.stop) \
                and (self.knowledge.check_alone(call.fn, strategy, remaining, decision is Reason.AUTO_SHARED_MEMORY,
                                                probe.seconds_per_item)
                     or (_loop_worth_timing(probe, remaining, workers)
                         and self.knowledge.loop_wanted(call.fn, UNJUDGED_LOSSES, remaining, TIMED_LOOP_SECONDS))):
            return _serial(call, None, "", Reason.AUTO_SERIAL_CHECK, probe)
        return self._chunked(call, strategy, workers, probe, remaining, decision)

    def _chunked(self, call: Call, strategy: str, workers: int, probe: Probe, remaining: int,
                 decision: Reason) -> Plan:
        cost = probe.seconds_per_item
        chunk = _chunk_size(self.costs, call, strategy, workers, cost, remaining)
        floor = _chunk_floor(self.costs, call, strategy, cost, chunk)
        unmeasured = cost is None and _fixed_chunk(call) is None
        return Plan(strategy, workers, chunk, decision, None, "", probe, min_chunk=1 if unmeasured else floor,
                    floor_seconds=_work_floor_seconds(self.costs, strategy) if unmeasured else 0.0,
                    contention=probe.factors.get(strategy, 1.0), **self._check_each(call, remaining))

    def _check_each(self, call: Call, remaining: int) -> dict[str, Any]:
        """``check_each`` and the typical item chunk budgets are cut for (0.0, scattered dear items: the mean).

        Chunks check their budget before each item when dear items among cheap ones cost the last call more
        than ``CHECK_EACH_PAYS`` times what the checks would cost this one (60-110 ns an item, measured: a
        timing hiccup read as dear items costs little, and a cheap function of many items is never checked
        for one).
        """
        known = self.knowledge.get(call.fn)
        if known is None or not known.hidden_dear \
                or known.hidden_dear <= CHECK_EACH_PAYS * remaining * gate_cost_ns() / 1e9:  # measured only then
            return {}
        return {"check_each": True, "budget_item": known.typical_item}

    def _cost_fallback(self, call: Call, strategy: str, workers: int, probe: Probe,
                       remaining: int) -> tuple[Reason, str] | None:
        return _cost_fallback(self.costs, call, strategy, workers, probe, remaining)

    def learn(self, record: MapRecord, fn: Callable[[Any], Any], config: ParallelConfig | None = None,
              error: BaseException | None = None, *, shared_pool: bool = False,
              stop: CancelToken | None = None) -> None:
        """Feed measured item cost, CPU share, backend overheads and the verdict back into the planner.

        ``config`` is the one the call ran with: a process pool's start is learned for its start method.
        ``error`` is what the call raised: a ``WorkerCrashedError`` (or a crash the call recovered from, its
        record's ``map_failure_retry``) marks ``fn`` as one that crashes worker processes.
        ``shared_pool``: other work (a ``submit``, another call) held the call's pool meanwhile, so its
        chunks may have queued behind that work, which is no cost of the pool's (as for ``crowded``).
        ``stop``: the call's cancel token, as given to ``plan`` in its ``Call``: a call still open that began
        before this one counts as beside it too.
        """
        crash = _crash_of(record, error)
        if crash is not None:
            self.knowledge.crashed(fn, crash)
        if record.fallback_reason is Reason.THREAD_BOUND and error is None and record.completed \
                and not record.fallback_detail.startswith(EARLIER_BOUND):  # its items ran here: not their own error
            self.knowledge.bound_to_its_thread(fn, record.fallback_detail)
        if record.selected_strategy in CROSSES_PROCESSES and any(c.where != "caller" for c in record.chunks):
            self.knowledge.ran_on(fn, record.selected_strategy, _worker_processes(record))
        crowded = shared_pool or self._among_others(record.wall_seconds, stop) or self._others_open(stop)
        self._event(stop, ends=True, left_running=_left_running(record, error))
        if _waiting_on_threads(record):
            if record.speedup < 1.0 and record.cpu_seconds >= GIL_BOUND_CORES * record.busy_seconds > 0:
                self.knowledge.not_waiting(fn)  # its items ran on a CPU all their time: never waiting, crowded or not
            self.knowledge.ran_waiting_on_threads(fn)
        measured_all = bool(record.completed and record.n_items and not record.n_errors)  # timed out: ran a part
        self._learn_cost(record, fn, crowded, measured_all)
        if _gil_queue_measured(record, config) and not crowded:  # after the cost: a new cost forgets the count
            self.knowledge.observe_gil_threads(fn, record.speedup)
        if record.pool_start_failed:  # ends the wait too: the next attempt is earned afresh, not made every call
            self.knowledge.started(fn, None)
        elif record.pool_started:
            self.knowledge.started(fn, record.selected_strategy)
            self.costs.learn(record.selected_strategy, start=record.pool_start_seconds,
                             method=start_method(config.start_method if config is not None else None))
        if measured_all and not crowded and _judged(record):
            self._learn_outcome(record, fn)

    def _learn_cost(self, record: MapRecord, fn: Callable[[Any], Any], crowded: bool, measured_all: bool) -> None:
        """The items' cost and CPU share, their results' size, and the readings of items alone and side by side.
        Items that shared the GIL with another call's are no reading of their own cost."""
        in_process = record.selected_strategy not in CROSSES_PROCESSES
        known = self.knowledge.get(fn)
        taught = _taught(record, known, crowded) if measured_all and record.busy_seconds > 0 \
            and not (crowded and in_process) else None
        far = taught is not None and _check_far_dearer(record, known, taught[0])
        if far:  # no new cost, and no reading: it spent one of the pool's checks (CHECK_TRIES)
            self.knowledge.far_check(fn)
            taught = None
        if taught is None:
            if measured_all and record.busy_seconds > 0 and not far:
                self._learn_beyond_crowding(record, fn)
            return
        per_item, share, n = taught
        own = record.selected_strategy in SHARE_WITHOUT_GIL
        if not self.knowledge.observe(fn, per_item, share, own, n):  # no probe ran: the pool measured it first
            self.knowledge.first_measured(fn, per_item, _threads_share(record) if share is None else share, own, n)
        elif _waiting_on_threads(record) and _misread_as_cpu_bound(record, known):
            self.knowledge.reshare(fn)
        if not in_process:
            self.knowledge.observe_results(fn, record.bytes_received // record.n_items)
        if record.mode == "parallel":
            self.knowledge.observe_hidden_dear(fn, dear_items(record.chunks, record.n_items))
        if crowded:
            return
        self._learn_side_by_side(record, fn, per_item, n)
        if _times_a_loop(record) and _stolen(record.chunks) <= STOLEN_LOOP * (items := items_seconds(record)):
            self.knowledge.observe_timed_loop(fn, record.wall_seconds / record.n_items, record.n_items,
                                              items / record.n_items, record.cpu_seconds / record.n_items,
                                              _met_outside_load(record))

    def _learn_outcome(self, record: MapRecord, fn: Callable[[Any], Any]) -> None:
        """What a parallel call that ran all its items alone gained: its pace, its verdict, and the pool's
        per-call and per-chunk latencies."""
        if _paced(record):
            self.knowledge.observe_pace(fn, record.selected_strategy, record.wall_seconds / record.n_items,
                                        record.n_items)
        if record.decision_reason is Reason.AUTO_SHARED_MEMORY:
            self.knowledge.observe_threads(fn, record.speedup * self._refactored(record, fn))
        elif record.requested_strategy == "auto" and (not record.pool_started or _reran_here(record)) \
                and not record.fn_shipped:
            # cold workers are no verdict, nor workers sent a large function's new version (forkserver trial: a
            # 20 MB closure's first call, 0.9x, held the next calls serial, where warm calls ran 1.75x); but a
            # call that ran items twice is judged at once, its start taken off (review 65: every later call of
            # results that cannot travel went to processes again, each twice the work)
            self._learn_verdict(record, fn)
        latency = _dispatch_latency(record)
        if latency is not None:
            self.costs.learn(record.selected_strategy, per_call=2 * latency)
        handover = _handover_latency(record)
        if handover is not None:
            self.costs.learn(record.selected_strategy, per_chunk=handover)

    def _learn_verdict(self, record: MapRecord, fn: Callable[[Any], Any]) -> None:
        """The speedup auto's warm call measured, held to a loop timed lately where it lost: the next plan of a
        call of its size believes it."""
        speedup = _warm_speedup(record)
        speedup = None if speedup is None else speedup * self._refactored(record, fn)
        # items run again in the caller take the workers' CPUs themselves: no outside load (review 72)
        loaded = _under_outside_load(record) and not _reran_here(record)
        self.knowledge.pool_met_load(fn, loaded)
        if speedup is not None and speedup < 1.0:  # a loop timed lately is what serial costs here now
            timed = _beside_a_timed_loop(record, self.knowledge.get(fn), loaded)
            if timed is not None:
                speedup = timed
            elif loaded:  # the items' own time gave serial a core a loop would not have had: no verdict
                speedup = None
                self.knowledge.loss_unjudged(fn, record.n_items)
        if speedup is None:
            return
        self.knowledge.observe_verdict(fn, record.selected_strategy, speedup, record.n_items)
        if record.selected_strategy == "threads" and record.decision_reason is not Reason.AUTO_WAITING:
            # what threads gain on CPU work, wherever auto chose them: one cold 0.99x for data processes
            # cannot take outweighed five calls of 1.26-1.39x and held 7 calls of 1 MiB hashes serial (trial
            # 53); the verdict above counted its confirmation (waiting work on many threads gains otherwise)
            self.knowledge.observe_threads(fn, speedup, confirms=False)

    def _learn_side_by_side(self, record: MapRecord, fn: Callable[[Any], Any], per_item: float, n: int) -> None:
        """A whole serial call times the items alone; a local pool's, side by side (its factor taken off again).

        No reading from a pool's first call whose workers imported on the way (its items paid the imports), from
        a call whose threads waited for a CPU a good part of their time (a loop's items are read without those
        waits, a pool's estimate adds what other programs took: ``_others_load``), nor of a library's items
        (tasks of as many instances as it chose, call by call). Only auto's calls: a named executor of the same
        function may map other data (a serial one over half the rows moved a factor from 1.19 to 1.37).
        """
        if record.requested_strategy != "auto" or record.items_said \
                or record.decision_reason is Reason.AUTO_OUTGREW_ESTIMATE or _met_outside_load(record):
            return
        if record.mode == "serial" and all(c.where == "caller" for c in record.chunks):
            self.knowledge.observe_alone(fn, per_item, n, _on_cpu(record, per_item))
        elif record.mode == "parallel" and record.fallback_reason is None and record.selected_strategy in LOCAL_POOLS \
                and not record.overhead_seconds.get("worker_warmup"):
            self.knowledge.observe_on_pool(fn, record.selected_strategy, per_item * record.contention, n,
                                           record.wall_seconds)

    def _refactored(self, record: MapRecord, fn: Callable[[Any], Any]) -> float:
        """What the record's speedup is multiplied by to stand at the factor side by side learned since its plan
        (this very call's reading may have completed it): the verdicts already held were corrected then."""
        known = self.knowledge.get(fn)
        now = 1.0 if known is None else known.side_by_side.factor(record.selected_strategy)
        return record.contention / now

    def _learn_beyond_crowding(self, record: MapRecord, fn: Callable[[Any], Any]) -> None:
        """A new item cost from a call that ran in this process among other calls: one crowding cannot explain.

        Sharing the GIL makes an item's wall time a few times longer, never its
        CPU time, and never makes it shorter: CPU time per item ``COST_SHIFT``
        times dearer than the remembered cost, or wall time per item that many
        times cheaper, is the items' own. Without this, a function learned alone
        at 1 us an item that turned 1,000x dearer while other threads kept mapping
        stayed serial on its old cost for good: its calls ran among others.
        A shift of a few microseconds in all is no such sign: a GIL handover costs the thread that
        takes it CPU too, and beside another call still open, 200 items of 80 ns read 3-25x their cost, which
        marked the function's cost unsteady and had every later call probe it again (soak trial 44).
        """
        known = self.knowledge.get(fn)
        if known is None:
            return
        wall, cpu = record.work_seconds / record.n_items, record.cpu_seconds / record.n_items
        dearer = min(cpu, wall)
        if dearer > COST_SHIFT * known.seconds_per_item \
                and (dearer - known.seconds_per_item) * record.n_items >= CROWDED_SHIFT_SECONDS:
            self.knowledge.observe(fn, dearer)
        elif 0 < wall * COST_SHIFT < known.seconds_per_item:
            self.knowledge.observe(fn, wall)


PLANNER = Planner()
"""The process's planner: every executor shares what any of them measured."""
COSTS = PLANNER.costs
KNOWLEDGE = PLANNER.knowledge


def plan(call: Call) -> Plan:
    """Decide how to run ``call`` with the process's planner."""
    return PLANNER.plan(call)


def _under_outside_load(record: MapRecord) -> bool:
    """Whether the call's worker processes waited for a CPU a good part of their time (``OUTSIDE_LOAD_RUNQ``), no
    more of them than the CPUs: other programs had the cores. Its speedup is then no verdict against serial,
    whose estimate is the items' CPU time, a core a loop on that machine would not have had either: a service
    beside two busy programs read its processes at 0.8-0.9x serial (they ran 1.6x faster than its serial
    calls), held 116 of its first 150 calls serial, and a re-measure let through after each wait read low as
    well (service trial). A gain read so stands."""
    return record.workers <= cpu_capacity() and record.selected_strategy in LOCAL_PROCESS_POOLS \
        and _waited_for_a_cpu([c for c in record.chunks if c.where != "caller"])


def _on_cpu(record: MapRecord, per_item: float) -> bool:
    """Whether a serial call's items ran on a CPU ``ON_CPU`` of their own time (waits for a CPU taken off: a
    loaded machine is no wait of the items'), read where each item's CPU clock is (items of ``CPU_SAMPLE_NS``
    or more: a streamed call counts a cheaper item's wall time as its CPU, and a loop of 10 us sleeps read
    0.95)."""
    own = items_seconds(record)
    return per_item * 1e9 >= CPU_SAMPLE_NS and own > 0 and record.cpu_seconds >= ON_CPU * own


def _check_far_dearer(record: MapRecord, known: Facts | None, per_item: float) -> bool:
    """A serial check whose items cost ``COST_SHIFT`` times what its pools' calls read or more: a loop far dearer
    than the workers' items, or this call's data moved (nothing but its own run reads a check's items). A
    forest's ``n_jobs=-1`` predict took 13 ms an item in the caller (joblib's threads) and 2.8 ms in a worker
    (one thread). Read as a new cost, it forgot what the pools had read, and with it the checks spent: a
    check came at every chance, each 0.45 s for a pool call of 0.07 s (trial 52 F1). Not read, it is one of
    the pool's checks; where the data moved, the next pool call reads the new cost. Nor does it end the checks
    for good: one call of other data (a review: 10 ms sleeps among 2 ms ones) is not told from a dearer loop."""
    return record.decision_reason is Reason.AUTO_SERIAL_CHECK and known is not None \
        and per_item > COST_SHIFT * known.seconds_per_item


def _times_a_loop(record: MapRecord) -> bool:
    """A whole serial auto call, in the caller: a loop's wall time lately, the one thing a pool's call under
    other programs' load can be held to. One that met the load itself (trial 51), or not: a loop then had the
    cores a pool's workers waited for beside its own caller (200,000 short texts: the caller pickled 0.8-2.4 s
    of items and results beside 2 workers on 2 CPUs, and their losses were read as other programs'; trial 53)."""
    return record.requested_strategy == "auto" and record.mode == "serial" and not record.items_said \
        and record.decision_reason is not Reason.AUTO_OUTGREW_ESTIMATE \
        and all(c.where == "caller" for c in record.chunks)


def _left_running(record: MapRecord, error: BaseException | None) -> bool:
    """Whether a call ended with its items still running in this process: a pool of threads that did not finish
    (an item's error, a timeout, a stream left early), or items run on a payoff thread under a timeout. Items a
    serial call ran in the caller, or processes, hold no GIL of the next probe's (review)."""
    unfinished = error is not None or not record.completed or bool(record.n_errors)
    return unfinished and (record.selected_strategy == "threads" or isinstance(error, TimeoutError))


def _loop_worth_timing(probe: Probe, remaining: int, workers: int) -> bool:
    """Whether running this call serially to time a loop costs at most ``CHECK_MAX_LOSS_SECONDS`` more than the
    pool would take at the most its workers could gain."""
    cost = probe.seconds_per_item
    return cost is not None and cost * remaining * (1 - 1 / max(1, workers)) <= CHECK_MAX_LOSS_SECONDS


def _waiting_on_threads(record: MapRecord) -> bool:
    return record.decision_reason is Reason.AUTO_WAITING and record.selected_strategy == "threads"


def _judged(record: MapRecord) -> bool:
    """Whether a call that ran all its items speaks for its pool: parallel to its end (items rerun here because
    their results could not travel: its speedup, reruns and all, stands), and not a serial run's outgrown rest
    (its head ran here: its speedup is not the pool's)."""
    return record.mode == "parallel" and record.fallback_reason in (None, Reason.UNPICKLABLE_RESULT_RERUN) \
        and record.decision_reason is not Reason.AUTO_OUTGREW_ESTIMATE


def _beside_a_timed_loop(record: MapRecord, known: Facts | None, loaded: bool = True) -> float | None:
    """A pool's loss against the function's serial call of about its size, lately (``TIMED_LOOP_SECONDS``):
    wall time against wall time; None without one (no verdict). Under other programs' load (``loaded``) one
    timed while the load was on (it met it, or the pool's call before it did: a load that leaves the caller a
    core shows in the workers only, and refused, every loss went unjudged, 368 calls of 600 at 0.47-0.63x;
    review 78), or any where the caller's own work took a core from its workers (``_caller_busy``): held to a
    loop from before the load, processes beside two busy programs that ran 1.1-1.8x a loop read 0.67-1.16,
    and auto kept serial 1-7 quiet calls after the load went (hunt 72, F5). Without load, only
    one that met none either: its wall time is then the program's own (a thread of it holding the GIL), where
    a loop slowed by a load since gone read a pool's 0.59x as 3.5x (review 70).

    Its items' own time gives serial a core a loop would not have had (``_under_outside_load``), but not every
    loss there is the load's: 1,000 items of 5 us beside two busy programs ran on processes 13 calls of 13,
    each recorded at 0.54-1.0x and each discarded, at 1.36-2.07x the time of a loop timed beside them (trial 51).
    """
    loop = None if known is None else known.timed_loop
    if loop is not None and not loaded and (loop.loaded or loop.wall_per_item > LOOP_WALL_OWN * loop.item_seconds):
        return None  # a loop slowed by a load the pool's call did not meet: 0.59x read as 3.5x (reviews 70-71)
    if loop is not None and loaded and not loop.loaded and not loop.after_load and not _caller_busy(record):
        return None  # a loop from before other programs took the cores: processes at 1.1-1.8x read as losses
    if loop is None or time.monotonic() - loop.at > TIMED_LOOP_SECONDS \
            or not comparable(record.n_items, loop.n_items, VERDICT_REACH) or not record.n_items:
        return None
    items = items_seconds(record) / record.n_items
    cpu = record.cpu_seconds / record.n_items
    if loop.item_cpu > 0 and cpu >= ON_CPU * items:  # CPU work: the same data costs the same CPU time each
        items, loop_items = cpu, loop.item_cpu
    else:
        loop_items = loop.item_seconds
    if max(items, loop_items) > TIMED_LOOP_ALIKE * min(items, loop_items):
        return None  # other data: texts 1.7x longer than the loop's read 0.65x for a real 1.50x (review)
    wall = record.wall_seconds - record.overhead_seconds.get("worker_warmup", 0.0)
    return loop.wall_per_item * record.n_items / wall if wall > 0 else None


def _stolen(chunks: Sequence[ChunkStats]) -> float:
    """The chunks' time the machine took (``stolen_seconds``), where this machine tells waits for a CPU apart: a
    thread preempted by other programs gives up its CPU without waiting too, and without its run-queue wait that
    load would read as the machine's (review 78: 640 ms of it, beside a busy loop on one CPU)."""
    return sum(stolen_seconds(c) for c in chunks) if run_queue_readable() else 0.0


def _caller_busy(record: MapRecord) -> bool:
    """Whether the caller's own work for the call (``CALLER_BUSY``) took a core its workers waited for."""
    own = record.overhead_seconds.get("serialization", 0.0) + record.consumer_seconds
    return own >= CALLER_BUSY * record.wall_seconds


def _may_check(call: Call) -> bool:
    """Whether a serial check may take this call: not one with a ``timeout=`` (payoff cannot stop an item in the
    caller), a stream of no known end (it could never leave the caller), or forced parallel
    (``tiny_workload_threshold=0``: the user asked for a pool whatever it costs)."""
    return call.timeout is None and call.sized and call.config.tiny_workload_threshold != 0


def _met_outside_load(record: MapRecord) -> bool:
    """Whether the call's chunks, wherever they ran, waited for a CPU ``OUTSIDE_LOAD_RUNQ`` of their busy time."""
    return _waited_for_a_cpu(record.chunks)


def _waited_for_a_cpu(chunks: Sequence[ChunkStats]) -> bool:
    busy = sum(c.end_ns - c.start_ns for c in chunks)
    return busy > 0 and sum(c.runq_ns for c in chunks) >= OUTSIDE_LOAD_RUNQ * busy


def _paced(record: MapRecord) -> bool:
    """Whether an auto call's wall time an item is a pace to compare threads and processes by (``Facts.paces``):
    a cold threads pool's included (it starts in a millisecond: a first call on threads is a reading, and a
    wrong try costs one call, not two), a process pool's start or a function shipped anew not."""
    return record.requested_strategy == "auto" and record.selected_strategy in PACED and not record.items_said \
        and not record.fn_shipped and not (record.pool_started and record.selected_strategy != "threads") \
        and not _met_outside_load(record)


def _warm_speedup(record: MapRecord) -> float | None:
    """The call's speedup on warm workers: its wall time less each worker's share of what they imported once
    (``ChunkStats.warmup_ns``: an import while unpickling the function). After ``import sklearn`` a call's workers
    imported it too (4.08 s against a 1.2-1.5 s loop), and that one loss held every later call serial, 10-35%
    slower than the pool. None when the warm-up was about all the call's time: nothing left to judge by.

    Workers take chunks as they come free, so one that loads while the others run costs the call about its
    share of the workers' time, the mean rather than the longest."""
    warmup = record.overhead_seconds.get("worker_warmup", 0.0)  # each worker's share
    if record.pool_started:  # judged cold only where it ran items twice (``_reran_here``)
        warmup += record.pool_start_seconds
    if not warmup:
        return record.speedup
    wall = record.wall_seconds - warmup
    if wall < WARM_WALL_LEFT * record.wall_seconds:
        return None
    return record.serial_estimate_seconds / wall


def _reran_here(record: MapRecord) -> bool:
    """Whether the call ran items again in the caller, their results unable to travel back."""
    return record.fallback_reason is Reason.UNPICKLABLE_RESULT_RERUN


WARM_WALL_LEFT = 0.02
"""Less of a call's wall time than this left beside its workers' warm-up judges nothing: the clock reads of the
warm-up and of the call are not one measurement, and a wall time of almost nothing divides into any speedup."""


LIGHT_CHUNK_BYTES = 64 * 1024
"""Only a first chunk this light measures dispatch: a heavy one measures moving its payload (costed per byte)."""


def _dispatch_latency(record: MapRecord) -> float | None:
    """Seconds from the first submit to the first chunk starting: the per-call cost of reaching the pool.

    Idle gaps and imbalance inside a big map grow with the map, not the call,
    and a new pool's first chunks wait for its workers to warm up; learning
    either would keep every later small call serial (and so never re-measured).
    """
    pool_chunks = [c for c in record.chunks if c.where == "pool"]
    if not pool_chunks or record.pool_started:
        return None
    first = min(pool_chunks, key=lambda c: c.submit_ns)
    if first.bytes_sent > LIGHT_CHUNK_BYTES:
        return None
    return max(0, min(c.start_ns - c.warmup_ns for c in pool_chunks) - first.submit_ns) / 1e9


def _handover_latency(record: MapRecord) -> float | None:
    """Seconds a worker stood idle between two chunks of the call while the second one waited for it: what
    each chunk costs the pool beyond its items (the result's way back, the next chunk's way out). The
    median of such gaps; None when no chunk waited for a worker that had just finished one.

    A gap after which a heavy chunk came is moving its payload (costed per byte); a new pool's workers
    are still warming up. The prior (0.15 ms for processes) was a guess: on a 2-core machine whose
    workers keep both cores busy the parent's threads wait for a CPU to pass chunks on (0.3-0.8 ms).
    """
    if record.pool_started or record.selected_strategy not in CROSSES_PROCESSES:
        return None  # on threads a gap is as likely a wait for the GIL the other threads' items held
    by_worker: dict[str, list[ChunkStats]] = {}
    for c in record.chunks:
        if c.where == "pool" and c.pieces == 1:  # a folded one has no end of its own to measure a gap from
            by_worker.setdefault(c.worker, []).append(c)
    gaps = [b.start_ns - b.warmup_ns - a.end_ns for chunks in by_worker.values()
            for a, b in itertools.pairwise(sorted(chunks, key=lambda c: c.start_ns))
            if b.submit_ns <= a.end_ns <= b.start_ns and b.bytes_sent <= LIGHT_CHUNK_BYTES]
    return statistics.median(gaps) / 1e9 if gaps else None


def _taught(record: MapRecord, known: Facts | None, crowded: bool) -> tuple[float, float | None, int] | None:
    """(seconds an item, CPU share, items) a call measured, for ``Knowledge.observe``.

    Among other calls, a pool's call teaches only what its pool's chunks measured: those run in the caller
    (its probe, the head of a serial run it outgrew) waited for the GIL the other calls held. Twelve handlers
    on one executor: an outgrown head read spin's share as 0.32, and the next call went to threads as waiting
    work, a second pool. None: nothing measured off the caller.
    """
    share = None if known is not None and known.delegates else \
        _cpu_share(record, None if known is None else known.cpu_ratio)
    pool = [c for c in record.chunks if c.where != "caller"]  # a retry ran in fresh workers too
    if not crowded or len(pool) == len(record.chunks):
        # the machine's time in the items run here is no cost of theirs (hunt 72, F2); a pool's chunks are
        # priced otherwise (by a factor side by side, or by their CPU time), and keep theirs
        stolen = _stolen([c for c in record.chunks if c.where == "caller"])
        return max(0.0, items_seconds(record) - stolen) / record.n_items, share, record.n_items
    items = sum(c.n_items for c in pool)
    timed = sum(sum(c.durations_ns) for c in pool) / 1e9
    if not items or timed <= 0:
        return None
    return timed / items, None if share is None else _chunks_share(pool), items


def _cpu_share(record: MapRecord, known_share: float | None = None) -> float | None:
    """CPU per second of item time, where wall time is not inflated by waiting for the GIL.

    Threads contend for the GIL, so their busy time overstates a CPU-bound
    item; only a threads run chosen because the work waits is trusted, and
    only while its threads together used less than one core (more would mean
    the GIL, not waiting, set the pace). Items known to hold the GIL for under
    ``GIL_PRICED_RATIO`` of their time are the exception: 32 threads of a 5 ms
    sleep with 0.1 ms of CPU kept the GIL 0.8 busy under other programs' load,
    which says how many threads the GIL takes, not that the items use a CPU.
    Their reading only raises the share, never lowers it: each item's own time
    holds its waits for the GIL the other threads held, so 22-32 threads of
    items of share 0.09 read 0.04, and smoothed in call after call it priced
    their items at twice their cost.
    """
    if record.busy_seconds <= 0:
        return None
    if not shares_the_gil(record.selected_strategy, record.chunks):
        return _own_share(record)
    if record.decision_reason is Reason.AUTO_WAITING:
        if known_share is not None and known_share < GIL_PRICED_RATIO:
            return max(known_share, _own_share(record))
        return _threads_share(record)
    if record.decision_reason is Reason.AUTO_OUTGREW_ESTIMATE and record.selected_strategy == "threads":
        return _threads_share(record)  # the rest went to threads for what the run read: naps after a free head
        # kept the head's share of 1.0, and the next call took them for CPU work on processes (0.55 s, not 0.08 s)
    return None


def _misread_as_cpu_bound(record: MapRecord, known: Facts | None) -> bool:
    """Threads kept the GIL busy, which a share read only by a probe takes as CPU-bound items (1.0, smoothed in):
    enough threads of waiting items fill it too, so the next call reads the share alone. Below
    ``GIL_PRICED_RATIO`` such a run is read as waiting anyway (see ``_cpu_share``)."""
    return known is not None and not known.share_without_gil and known.cpu_ratio >= GIL_PRICED_RATIO \
        and _gil_filled(record)


def _gil_filled(record: MapRecord) -> bool:
    """The call's threads together kept about a core busy: the GIL set their pace."""
    return gil_bound(record.cpu_seconds, record.wall_seconds)


def _threads_share(record: MapRecord) -> float:
    """The best reading threads give of a function nothing else measured: threads that together kept about a
    core busy were held to it by the GIL (CPU-bound), and otherwise their items waited for what their CPU
    share says. Only a first guess: a probe or a run on processes corrects it."""
    return 1.0 if _gil_filled(record) else _own_share(record)


def _own_share(record: MapRecord) -> float:
    """CPU per second of the items' own time: their waits for a CPU are not the items'."""
    return _chunks_share(record.chunks, record.cpu_seconds, record.busy_seconds)


def _chunks_share(chunks: Sequence[ChunkStats], cpu_seconds: float | None = None, busy: float = 0.0) -> float:
    """CPU per second of the chunks' timed items less their waits for a CPU (``own_work_seconds``), at most 1.

    Not per second of the chunks' busy time: a fresh worker's first chunk was blocked 11 ms around 0.25 ms of
    items (its set-up), and a CPU-bound function read a share of 0.16, then ran on threads as waiting work.
    """
    own = sum(own_work_seconds(c) for c in chunks) or busy
    cpu = sum(c.cpu_ns for c in chunks) / 1e9 if cpu_seconds is None else cpu_seconds
    cpu += _stolen(chunks)  # the machine's time, on a CPU as far as the items knew
    return min(1.0, cpu / own) if own > 0 else 1.0


def _gil_queue_measured(record: MapRecord, config: ParallelConfig | None) -> bool:
    """A whole call of waiting items on threads as many as the cores or more, sized by payoff (no
    ``max_workers``: a speedup cannot pass the workers it was given), its items priced without their waits for
    the GIL: its speedup says about how many threads kept busy with their own work rather than queueing
    (``Knowledge.observe_gil_threads``; the planning and probe time in its wall time make it a little less).
    A call on just the cores teaches too, so a count learned low grows back."""
    return record.selected_strategy == "threads" and record.gil_priced and record.mode == "parallel" \
        and record.completed and not record.n_errors and record.fallback_reason is None \
        and record.workers >= max(2.0, cpu_capacity()) and (config is None or config.max_workers is None)


def _workers_for(call: Call, decision: Reason, probe: Probe, remaining: int, workers: int) -> int:
    """More threads than cores for work that waits: as many as its measured wait needs, up to the cap.

    Named threads too: a user who asks for threads mostly has waiting work, and one thread per CPU ran
    400 items of a 5 ms sleep at a third of ``ThreadPoolExecutor()``'s speed.
    """
    named_waiting = call.requested == "threads" and _waits(probe, workers)
    if not (decision is Reason.AUTO_WAITING or named_waiting) or call.config.max_workers is not None:
        return workers
    wanted = math.ceil(workers / max(probe.cpu_ratio, 0.01))
    if probe.gil_threads is not None and waits_mostly(probe.cpu_ratio):  # not a longer queue for the GIL
        wanted = min(wanted, math.ceil(probe.gil_threads))
    return max(workers, min(call.config.max_waiting_workers, wanted, remaining))


def _waits(probe: Probe, workers: int) -> bool:
    """The measured items mostly wait (I/O, sleep, a lock): threads beyond the CPUs keep them going."""
    if probe.seconds_per_item is None:
        return False
    line = waiting_line(workers)
    if probe.waited is not None:
        line *= 1 + WAITING_BAND if probe.waited else 1 - WAITING_BAND
    return probe.cpu_ratio < line


def _cluster_workers(config: ParallelConfig, workers: int, stop: CancelToken | None = None,
                     unreachable: list[str] | None = None) -> int:
    """A running cluster is planned with its own worker threads (asked once, cached), not local cores; a cancel
    or the call's timeout while payoff connects to ask is raised; ``unreachable`` gets why it could not be."""
    from payoff.strategies.cluster import planning_facts

    facts = planning_facts(config, stop, unreachable)
    if facts is None or facts.worker_threads < 1:
        return workers
    cap = config.max_workers  # a share of a cluster others use too
    return facts.worker_threads if cap is None else min(cap, facts.worker_threads)


def _verdict_fallback(strategy: str, verdict: Verdict | None, probe: Probe, remaining: int,
                      sized: bool = True) -> tuple[Reason, str] | None:
    """Serial when ``verdict``, ``strategy``'s measured nearest this call's size (``verdict_near``), is a loss at
    a similar size."""
    if verdict is None:
        return None
    speedup, n_items = verdict
    if speedup >= 1.0 or remaining > VERDICT_REACH * n_items:
        return None
    return (Reason.NO_MEASURED_GAIN, f"an earlier call of this function on {strategy} with {n_items:,} items "
            f"measured {speedup:.2f}x against serial{_side_by_side_said(probe, strategy)}; "
            + (f"this call has {remaining:,}" if sized else f"{_items_of(False, remaining)} were weighed{STREAM_SAID}"))


def _side_by_side_said(probe: Probe, strategy: str) -> str:
    slower = probe.factors.get(strategy, 1.0)
    return f" (its items took {slower:.2f}x their time alone side by side, a serial call of it showed)" \
        if slower != 1 else ""


EARLIER_BOUND = "in an earlier call, "
"""How a call kept here for an earlier call's items bound to the caller's thread (``thread_bound``) begins its
detail: that earlier call's own detail follows."""


def _serial(call: Call, reason: Reason | None, detail: str, decision: Reason,
            probe: Probe | None = None) -> Plan:
    probe = probe or Probe()
    n = max(1, len(call.items) - probe.n)
    return Plan("serial", 1, n, decision, reason, detail, probe, min_chunk=n)


def _share_not_descheduled(outcome: ChunkOutcome) -> float:
    """The share of a serial run's item time that was its items' own: less their thread's waits for a CPU (at
    least their CPU time), as a probe reads it (``own_seconds``). Other programs that took the
    caller's CPU stretch the items' clocks: records of 2 MB read 15 ms an item beside two busy programs, where
    their thread ran on a CPU a third of it, and the rest went to processes, whose moving of them over the same
    busy CPUs took 3.2 s for a run of 1.0 s here."""
    run = sum(outcome.durations_ns) / 1e9
    return own_seconds(outcome) / run if run > 0 else 1.0


def _rest_item_bytes(call: Call) -> int | None:
    """What an item of the rest of an outgrown serial run adds to a chunk's pickle: its first one's bytes, not the
    probed items' (a head of empty records before items of 2 MB went to processes at 12-17x the loop's time,
    priced as moving a few bytes an item: review), or the mean of items spread over the rest where that is more
    (``_spread_bytes``); None where pickle refuses its first item."""
    size = _first_bytes(call.items)
    spread = _spread_bytes(call.items)
    return size if size is None or spread is None else max(size, spread)


def _first_bytes(items: Sequence[Any]) -> int | None:
    """The first item's bytes, read in memory where it can be, else pickled; None where pickle refuses it: an
    outgrown run's rest whose first item or latest result was a lock raised pickle's TypeError from planning
    (a review)."""
    size = item_bytes_in_memory(items)
    if size is not None:
        return size
    try:
        return pickled_size(items[0])
    except Exception:  # what pickle raises for what it refuses varies: TypeError, PicklingError, RecursionError
        return None

REST_SIZED = 8
"""Items of an outgrown run's rest sized in memory, spread over it (``_spread_bytes``)."""


def _spread_bytes(items: Sequence[Any]) -> int | None:
    """The mean bytes of ``REST_SIZED`` items spread over ``items``, where each is sized without pickling (arrays,
    bytes, a few of them in a tuple); None otherwise. A rest whose first items carried 50 KB and its later ones
    6 MB went to processes priced at its first, at 2.5-2.7x the loop's time (hunt 75): a map's rest is in memory.
    A stream's rest stands for its latest item alone (``Source.rest_for_planning``): none is read ahead."""
    if isinstance(items, ArrayRows | Zipped) or len(items) < 2:
        return None  # rows of one array are all one size
    step = max(1, len(items) // REST_SIZED)
    sizes = [item_bytes_in_memory([items[i]]) for i in range(step - 1, len(items), step)][:REST_SIZED]
    known = [size for size in sizes if size is not None]
    return sum(known) // len(known) if known and len(known) == len(sizes) else None


def _rest_result_bytes(results: Sequence[Any], probe: Probe) -> int | None:
    """What a result of the rest of an outgrown serial run brings back: the run's latest one's bytes, not the
    probed items' (results of 1 byte, then of 6 MB, went to processes at 3.7-6.1x the loop's time: hunt 75);
    None where pickle refuses it."""
    return _first_bytes(results) if results else probe.result_bytes


def _outgrow(call: Call, strategy: str, workers: int, probe: Probe, remaining: int,
             at_least: float | None = None) -> Outgrow | None:
    """Where a call kept serial as tiny, or by a loss measured on calls of its cost, may move once its run here
    outgrows the estimate (``OUTGROW_FACTOR``): the cost its own first items read, or the one earlier calls
    measured. Those ran all their items, but at their arguments: a function of 5 us items at ``n=200`` ran 4
    items of 70 ms at ``n=2_000_000`` serially on a named ``processes`` (0.27 s, where the pool takes 0.15 s);
    a loss measured on 2,000 items of 5 us held 2,000 of 0.65 ms serial (hunt 66). A remembered cost of
    trivial items too: a cache that missed made 300 items of 2 ms after calls of 0.1 us, and the call ran them
    all here (0.66 s; a pool took 0.35 s). Their run keeps its unbounded rest while that fits the budget
    (``run_chunk(tail_in_budget=True)``), which is what keeps a serial call of trivial items at a loop's pace.
    A call under the user's ``tiny_workload_threshold`` has a budget of ``at_least`` that long (an ``imap`` is
    checked sooner where its items turn dearer, and its rest weighed against the threshold): its work was
    estimated under it, and 100,000 items of a stream measured 7 ms on their first 1,024 ran 0.8 s here, where
    processes took 0.45 s."""
    cost = probe.seconds_per_item
    if call.timeout is not None or cost is None or remaining < 2:
        return None
    return Outgrow(strategy, workers, max(OUTGROW_MIN_SECONDS, OUTGROW_FACTOR * cost * remaining, at_least or 0.0))


def switched_off_by() -> str:
    """Where ``enabled=False`` came from, for the ``disabled`` detail: following "or CE_PARALLEL to a strategy"
    raised (PAYOFF_PARALLEL=off said otherwise) or did nothing (a config given as it is reads no variable)."""
    said = [f"{name}={value.strip()}" for name in (ENV_VAR, ALIAS_ENV_VAR)
            if (value := os.environ.get(name)) and _says_off(value, name)]
    if said:  # which of the two it was, the executor's config cannot tell (review): both are named
        return (f"enabled=False: {' and '.join(said)} is set, which switches off an executor made without a "
                "ParallelConfig; one given a config reads no variable, and its enabled=False did")
    return (f"enabled=False in the ParallelConfig the executor was given (a config given as it is reads neither "
            f"{ENV_VAR} nor {ALIAS_ENV_VAR})")


def _says_off(text: str, name: str) -> bool:
    try:
        return parse_ce_parallel(text, name).get("enabled") is False
    except ValueError:
        return False


def _early_fallback(call: Call, workers: int) -> tuple[Reason, str] | None:
    cfg = call.config
    if not cfg.enabled:
        return Reason.DISABLED, switched_off_by()
    if in_worker() and not in_an_item_run_alone():
        return Reason.NESTED, ("map called from inside an item of another payoff map" if in_an_item() else
                               "map called in a payoff worker process (by a task given to submit(), an item of "
                               "another map or its worker_initializer, or a thread one of them started): a worker "
                               "process starts no pool of its own")
    daemonic = _no_children() if _starts_processes(call, call.requested) else None
    if daemonic is not None:
        return daemonic
    if call.granularity is not None and cfg.granularity not in ("auto", call.granularity):
        return (Reason.GRANULARITY_MISMATCH,
                f"the call splits on {call.granularity!r}, the config allows only {cfg.granularity!r}")
    if call.requested == "serial" or len(call.items) == 0:
        return None
    if workers < 2:
        return Reason.SINGLE_WORKER, one_worker_said(cfg, workers)
    return None


def _joblib_asks_one(cfg: ParallelConfig) -> bool:
    """``strategy="joblib"`` inside a ``joblib.parallel_config`` whose ``n_jobs`` leaves one worker (``1``, or
    ``-2`` on 2 CPUs): how a joblib user turns parallelism off, to debug or to profile. joblib's own ``Parallel``
    then runs in the caller; a pool of one worker process was slower than a loop, out of a debugger's reach."""
    return cfg.max_workers is None and cfg.strategy_name == "joblib" and asked_n_jobs(usable_cpus()) == 1


def one_worker_said(cfg: ParallelConfig, workers: int) -> str:
    """Why ``workers`` is 1, for a ``single_worker`` detail."""
    if _joblib_asks_one(cfg):
        return ("the joblib.parallel_config(n_jobs=...) around the call leaves 1 worker, and joblib's own Parallel "
                "then runs in the caller, as this call did (max_workers= sets a pool's size instead)")
    limit = f"max_workers={cfg.max_workers}" if cfg.max_workers is not None else cpus_described()
    return f"{workers} worker available ({limit})"


DAEMONIC_DETAIL = ("this process is a daemonic worker of another pool (a multiprocessing.Pool's, for one), which "
                   "may not start processes; that pool already has the cores")
OUTER_POOL_DETAIL = ": they fill the cores, and a process pool started here would oversubscribe them"


def _no_children() -> tuple[Reason, str] | None:
    """The map is nested in another library's process pool, which has the cores: no processes of its own.

    A daemonic process may not start processes: trying anyway failed as
    ``init_failure`` ("daemonic processes are not allowed to have children") on
    every call, after a pool start. A worker of a ``ProcessPoolExecutor`` or a
    joblib pool may, but its siblings take the other cores: a pool of its own
    ran 4 CPU-bound processes on 2 cores (see ``_outer_pools``). Asked only when
    a call would start processes.
    """
    if not may_start_processes():
        return Reason.NESTED, DAEMONIC_DETAIL
    outer = outer_pool()
    if outer is not None and outer.cpus_left(usable_cpus()) < 2:
        return Reason.NESTED, outer.described(cpus_described()) + OUTER_POOL_DETAIL
    return None


def _process_workers_left(workers: int) -> int:
    """At most this worker's share of the CPUs when it is a worker of another library's process pool."""
    outer = outer_pool()
    return workers if outer is None else min(workers, outer.cpus_left(usable_cpus()))


def _starts_processes(call: Call, strategy: str) -> bool:
    return starts_processes(call.config, strategy)


def starts_processes(config: ParallelConfig, strategy: str) -> bool:
    """Whether ``strategy`` starts processes of this one's (dask only for a LocalCluster of its own)."""
    if strategy == "dask":
        return config.address is None and isinstance(config.strategy, str)
    return strategy in CROSSES_PROCESSES


def may_start_processes() -> bool:
    """Whether this process may start processes: a daemonic one may not (``_no_children``)."""
    return not multiprocessing.current_process().daemon


def config_floor(config: ParallelConfig, granularity: str | None) -> int | None:
    """The fewest items the config lets a call of ``granularity`` run in parallel (``min_batch_size``, and
    ``min_instances_for_parallel`` for instances); None: no floor of its own."""
    floor = config.min_batch_size
    if granularity == "instance" and config.min_instances_for_parallel is not None:
        floor = max(floor or 0, config.min_instances_for_parallel)
    return floor


def _floor_fallback(call: Call) -> tuple[Reason, str] | None:
    """The configuration's own minimum for parallel (``min_batch_size``, ``min_instances_for_parallel``)."""
    n = len(call.items)
    floor = config_floor(call.config, call.granularity)
    if floor is not None and n < floor:
        return Reason.TINY_WORKLOAD, f"{n} items is below the minimum of {floor} for parallel"
    return None


def _too_few(call: Call, remaining: int) -> tuple[Reason, str] | None:
    """One item left: nothing to split across workers (unless ``tiny_workload_threshold=0`` forces a pool). Not
    tiny work: two items of 0.5 s, the first run here to measure it, were called ``tiny_workload`` (advice
    trial)."""
    n = len(call.items)
    if remaining >= 2 or _kept_in_workers(call):
        return None
    if n == 1:
        return Reason.TOO_FEW_ITEMS, "1 item cannot be split across workers"
    if not remaining:
        return Reason.TOO_FEW_ITEMS, f"all {n:,} items ran here to measure the function: none is left to split"
    return Reason.TOO_FEW_ITEMS, (f"{n:,} items, {n - 1:,} of them run here to measure the function: the one left "
                                  "cannot be split across workers")


def _kept_in_workers(call: Call) -> bool:
    """Whether even a call too small for its pool runs in it: forced (``tiny_workload_threshold=0``), or under a
    ``timeout=`` on a backend the user named for its worker processes. There the items payoff keeps out of a pool
    run on a payoff thread (the caller may leave a hung one behind), where ``signal.signal`` and other main-thread
    APIs raise that a worker's main thread takes (hunt 58: the second call of such a function raised), and a hung
    item stays stuck for good where a worker is stopped."""
    return call.config.tiny_workload_threshold == 0 or (call.timeout is not None
                                                         and call.requested in LOCAL_PROCESS_POOLS)


def _work_under_threshold(call: Call, probe: Probe, remaining: int) -> tuple[Reason, str] | None:
    """The user's ``tiny_workload_threshold`` against the estimated work: an estimate the call's serial run may
    overturn (``_outgrow``), where the user's counts (``min_batch_size``, ``min_instances_for_parallel``) stand."""
    cfg = call.config
    cost = probe.seconds_per_item
    if cfg.tiny_workload_threshold is not None and cost is not None and not _kept_in_workers(call):
        work = cost * remaining
        if work < cfg.tiny_workload_threshold:
            return (Reason.TINY_WORKLOAD, f"{work * 1e3:.2f} ms of estimated work is below "
                    f"tiny_workload_threshold={cfg.tiny_workload_threshold}")
    return None


class Estimate(NamedTuple):
    """An auto call's parallel cost against serial, in seconds."""

    serial: float
    start: float
    """The pool's start as charged to this call: zero when warm, shared by the workload's earlier calls."""
    warm: float
    """Everything but the start: per call, compute, per chunk and moving the data."""
    transfer: float
    compute: float
    fn_copies: int = 1
    """Copies of the function the call moves: one per worker once it ships apart, else one per chunk."""
    imports: float = 0.0
    """Of the start, the workers' imports of what the function's first items imported here (``_imports_again``)."""

    @property
    def parallel(self) -> float:
        return self.start + self.warm

    @property
    def data_weighs(self) -> bool:
        """Moving the data weighs ``DATA_WEIGHS`` of the compute or more."""
        return self.transfer >= DATA_WEIGHS * self.compute


def _estimate(costs: CostModel, call: Call, strategy: str, workers: int, probe: Probe, remaining: int,
              cost: float) -> Estimate:
    oh = costs.get(strategy, start_method(call.config.start_method), workers)
    serial = cost * remaining
    chunk = _chunk_size(costs, call, strategy, workers, cost, remaining)
    chunks = math.ceil(remaining / chunk)
    imports = _imports_again(call, strategy, probe)
    start = (0.0 if strategy in call.warm else oh.start / (1 + min(call.prior_calls, AMORTIZE_CALLS))) + imports
    fn_bytes = _fn_bytes(call, strategy, probe)
    fn_copies = workers if fn_bytes >= SHIP_ONCE_BYTES else chunks
    transfer = oh.per_byte * (remaining * (probe.item_bytes + probe.result_bytes) + fn_copies * fn_bytes)
    if strategy in CROSSES_PROCESSES:  # the workers' share runs in parallel, the parent's does not
        transfer += remaining * (probe.pickling.parent + probe.pickling.worker / workers)
    compute = max(serial / _parallelism(strategy, workers), cost * chunk)
    warm = oh.per_call + compute + oh.per_chunk * math.ceil(chunks / workers) + transfer
    return Estimate(serial, start, warm, transfer, compute, fn_copies, imports)


def _imports_again(call: Call, strategy: str, probe: Probe) -> float:
    """What the workers of ``strategy`` spend importing, each at once, the modules the function's first probed
    items imported here (``Probe.import_seconds``), until it ran on that pool: all but a process pool forked
    after them, which has them. A one-time cost, as a pool's start is (priced and waited for as one: the
    ski-rental rule). A function importing sklearn in its body, probed here, was sent to warm processes that
    each imported it again: its first call 1.7x the loop's time (hunt 59, F1)."""
    if not probe.import_seconds or strategy not in CROSSES_PROCESSES:
        return 0.0
    return 0.0 if _have_the_imports(call, strategy, probe) else probe.import_seconds


def _have_the_imports(call: Call, strategy: str, probe: Probe) -> bool:
    """Whether the workers ``strategy`` would run on have the modules: those that ran the function, a process
    pool forked now; a cluster (its processes unknown here) once it ran there. A new executor's spawned pool,
    or loky's workers replacing its retired idle ones, lack them (review 60)."""
    if strategy not in LOCAL_PROCESS_POOLS:
        return strategy in probe.imported_on
    if strategy not in call.warm:
        return strategy == "processes" and start_method(call.config.start_method) == "fork"
    pids = call.warm_processes.get(strategy)
    return pids <= probe.imported_in if pids else strategy in probe.imported_on


def _parallelism(strategy: str, workers: int) -> float:
    """How many items at once a pool computes: worker processes of this machine share its CPUs (its affinity,
    its cgroup quota), however many there are; threads that wait and a cluster's workers are not bound by them."""
    return min(float(workers), cpu_capacity()) if strategy in LOCAL_PROCESS_POOLS else float(workers)


def _too_cheap_for_threads(probe: Probe) -> bool:
    return probe.seconds_per_item is not None and probe.seconds_per_item < THREADS_MIN_ITEM_SECONDS


def threads_oversubscribe(probe: Probe, workers: int) -> bool:
    """Whether ``workers`` threads running these items would ask for more CPUs than there are, each item already
    computing on several in its native libraries' threads (BLAS, OpenMP), which payoff cannot limit in this
    process while other threads may call them (threadpoolctl's limits are not safe then). Worker processes get
    their share of native threads (``payoff._native_threads``); threads all share the caller's: a matmul item
    on 2 threads x 2 OpenBLAS threads on 2 CPUs ran 0.34-0.58x the loop's speed (trial 43, sklearn F1)."""
    return probe.cores >= ITEM_SPREADS_CORES and probe.cores * workers > OVERSUBSCRIBED * cpu_capacity()


def _why_not_threads(probe: Probe, workers: int) -> str:
    """What keeps data that processes cannot take off threads too, for the fallback's detail."""
    if threads_oversubscribe(probe, workers):
        return (f"; threads would not gain either: each item already keeps {probe.cores:.1f} CPUs busy in its "
                f"native threads (BLAS, OpenMP), so {workers} threads would ask for {probe.cores * workers:.1f} of "
                f"{cpu_capacity():g}")
    if probe.threads_speedup is not None:
        return (f"; threads measured {probe.threads_speedup:.2f}x against serial{_side_by_side_said(probe, 'threads')}"
                " sharing the data in memory, and are held off it for a few calls, then measured again")
    cost = probe.seconds_per_item or 0.0
    return (f"; threads cannot gain on items of {_per_item(cost)} either (handing the GIL between threads costs "
            f"about as much as an item under {_per_item(THREADS_MIN_ITEM_SECONDS)})")


def _carried(fn_bytes: int, probe: Probe, est: Estimate, remaining: int) -> str:
    """Where the function, not the items, is most of the data moved: saying so, since the advice differs (its
    items were indices already, and "send indices instead of data" was all a 50 MB ``partial`` was told); where
    each item and its result are a few bytes, that it is their number that costs."""
    if fn_bytes * est.fn_copies <= remaining * (probe.item_bytes + probe.result_bytes):
        return _each_moved_alone(probe, est, remaining)
    how = ", by value with the __main__ globals it reads" if fn_bytes != probe.fn_bytes else ""
    return f" ({FUNCTION_CARRIES}{fn_bytes / 1e6:,.1f} MB pickled{how}, the most of it)"


def _moved_alone(probe: Probe) -> bool:
    """Items and results of a few bytes each (``FEW_BYTES``), whose moving outweighed the first items' work by
    what moving each one costs, not by their bytes: items that grow dearer outweigh that (a CI run's imap of ten
    bytes an item growing to a millisecond ran here to its end, 0.43 s where the pool takes 0.25-0.30 s). Data
    of more bytes is no such estimate: the rest was priced at the bytes of its first item, and records of
    10 KB, then 50 KB, then 6 MB went to processes at 2.5-4.6x the loop's time (hunt 75)."""
    return 0 < probe.item_bytes + probe.result_bytes <= FEW_BYTES


def _each_moved_alone(probe: Probe, est: Estimate, remaining: int) -> str:
    """Items and results of a few bytes each: what costs is moving each one alone, and "send indices instead of
    data" was all 1,000,000 ints of ``abs`` were told (an int is its own index); only more work an item helps."""
    if not _moved_alone(probe) or remaining <= 0:
        return ""
    moved = probe.item_bytes + probe.result_bytes
    return (f" ({EACH_MOVED_ALONE}{moved:,} bytes pickled with its result, at "
            f"{_per_item(est.transfer / remaining)} an item to move)")


def _per_item(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f} ns" if seconds < 1e-6 else f"{seconds * 1e6:,.1f} us"


def _cost_fallback(costs: CostModel, call: Call, strategy: str, workers: int, probe: Probe,
                   remaining: int) -> tuple[Reason, str] | None:
    fallback = _weighed_fallback(costs, call, strategy, workers, probe, remaining)
    return fallback if fallback is None or call.sized else (fallback[0], fallback[1] + STREAM_SAID)


def _weighed_fallback(costs: CostModel, call: Call, strategy: str, workers: int, probe: Probe,
                      remaining: int) -> tuple[Reason, str] | None:
    """Serial when the pool cannot beat the loop on the rest of the items.

    A backend the user named is honoured for all but truly tiny work: its
    start is paid once (and shown as ``pool_start``), so only its warm fixed
    cost per call is weighed. A ``tiny_workload_threshold`` the user set rules
    on the work instead; under auto, data whose moving alone costs more than
    the pool saves still stays here (a threshold of 1 ms sent 290 MB of
    arrays to processes, 40x a loop: advice trial). ``0`` forces parallel.
    Under auto, a cold pool that only its start keeps out is started once the
    calls kept serial have forgone as much as the start costs (the
    ski-rental rule: never more than twice the best choice in hindsight,
    however many calls follow).
    """
    cost = probe.seconds_per_item
    threshold = call.config.tiny_workload_threshold
    if cost is None or threshold == 0 or (threshold is not None and call.requested != "auto"):
        return None
    oh = costs.get(strategy, start_method(call.config.start_method), workers)
    if call.requested != "auto":
        serial, fixed = cost * remaining, oh.per_call + oh.per_chunk
        pays_from = fixed * PAYOFF_MARGIN * workers / max(1, workers - 1)
        if serial > pays_from:
            return None
        return (Reason.TINY_WORKLOAD, f"{_items_of(call.sized, remaining)}{_measured_on(probe)} x "
                f"{_per_item(cost)} = {serial * 1e3:,.3f} ms of work cannot pay for {strategy}'s fixed cost of "
                f"about {fixed * 1e3:,.2f} ms per call (it pays from about {pays_from * 1e3:,.2f} ms of work on "
                f"{workers} worker{'s' * (workers != 1)})")
    est = _estimate(costs, call, strategy, workers, probe, remaining, cost)
    if est.parallel * PAYOFF_MARGIN < est.serial:
        return None
    summary = (f"{_items_of(call.sized, remaining)}{_measured_on(probe)} x {_per_item(cost)} = "
               f"{est.serial * 1e3:,.2f} ms of work; {strategy} would need about {est.parallel * 1e3:,.2f} ms")
    again = est.imports
    if again >= IMPORTS_SAID * est.parallel:
        summary += (f", {again * 1e3:,.0f} ms of it importing in each worker the modules its first items "
                    f"imported here (import them before the pool starts, or in a worker_initializer)")
    if est.warm * PAYOFF_MARGIN < est.serial:  # a warm pool would pay: only its start is in the way
        forgone = probe.forgone.get(strategy, 0.0) + est.serial - est.warm
        thrown = probe.thrown.get(strategy, 0)
        starting = 0.0 if strategy in call.warm else oh.start * rebuy(thrown)
        price = starting + again
        if threshold is not None or forgone >= price:  # a user's threshold rules on the start too
            return None
        started = f", {(est.start - again) * 1e3:,.2f} ms of it starting the pool" if starting else ""
        paid = "a start and the imports cost" if starting and again else "the imports cost" if again \
            else "a start costs"
        return (Reason.POOL_START_COST, f"{summary}{started}; calls kept serial have forgone "
                f"{forgone * 1e3:,.2f} ms of the {price * 1e3:,.2f} ms {paid}"
                + _thrown_said(thrown, strategy, oh.start))
    if est.data_weighs and (est.warm - est.transfer) * PAYOFF_MARGIN < est.serial:
        return Reason.PAYLOAD_TOO_LARGE, f"{summary}, {est.transfer * 1e3:,.2f} ms of it moving pickled data" \
            + _carried(_fn_bytes(call, strategy, probe), probe, est, remaining)
    if threshold is not None:  # the user's threshold rules on how much work a pool is worth, not on moving data
        return None
    if est.parallel < est.serial:  # faster, but by less than a pool must promise
        summary += f", {est.serial / est.parallel:.2f}x faster: short of the {PAYOFF_MARGIN:g}x a pool must promise"
    shared = _parallelism(strategy, workers)
    if shared < min(workers, PAYOFF_MARGIN):  # not tiny work: the CPUs it would run on (advice trial)
        return Reason.SINGLE_WORKER, f"{summary}: its {workers} workers would share {cpus_described()}"
    return Reason.TINY_WORKLOAD, summary


def _items_of(sized: bool, n: int) -> str:
    """The items a plan weighed: a stream of no known end is weighed on its first ones (a 200,000-item ``imap``
    over a generator was "1,024 items ... 6.46 ms of work" in a warning that began "200,000 items": trial 53),
    and its run stays where they were planned unless it outgrows them (``MapRun._lazily_until_outgrown``)."""
    return f"{n:,} items" if sized else f"up to {n:,} items of a stream"


STREAM_SAID = ("; a stream of no known end is planned on its first items, and the rest runs as they do unless "
               "it costs several times as much")


def _thrown_said(thrown: int, strategy: str, start: float) -> str:
    if not thrown:
        return ""
    pools = f"the last {strategy} pool started for it was" if thrown == 1 else \
        f"the last {thrown} {strategy} pools started for it were"
    return (f" ({rebuy(thrown)}x its {start * 1e3:,.2f} ms: {pools} shut down with the executor after the call "
            "that started it; an executor kept open across calls keeps its pool)")


def _measured_on(probe: Probe) -> str:
    """Where the per-item cost in a fallback's detail comes from, when not from this call's first items."""
    if probe.n:
        return f" (after {probe.n:,} probed)"
    return EARLIER_CALLS_COST if probe.known else ""


def _cannot_either(detail: str) -> str:
    """``detail`` saying that cloudpickle cannot send it either (once: pickle's refusal may already say so)."""
    return detail if detail.endswith(CLOUDPICKLE_CANNOT) else detail + CLOUDPICKLE_CANNOT


def _payload_problem(call: Call, strategy: str, probe: Probe) -> tuple[Reason, str] | None:
    """Why ``strategy`` cannot take this call's function, items or results; None when it can."""
    if strategy not in CROSSES_PROCESSES:
        return None
    refused = probe.refused
    if refused and PICKLER[strategy] == "pickle" and not _sent_by_value(call, strategy, probe):
        hint = " (cloudpickle could send it: strategy='joblib')" if _cloudpickle_ok(call, probe) else CLOUDPICKLE_CANNOT
        return Reason.UNPICKLABLE, refused + hint
    if refused and not _cloudpickle_ok(call, probe):
        return Reason.UNPICKLABLE, refused + CLOUDPICKLE_CANNOT
    fn_bytes = _fn_bytes(call, strategy, probe)
    per_task = probe.item_bytes + (fn_bytes if fn_bytes < SHIP_ONCE_BYTES else 0)
    limit = call.config.task_size_hint_bytes
    if max(per_task, probe.result_bytes) > limit:
        return (Reason.PAYLOAD_TOO_LARGE, f"{max(per_task, probe.result_bytes):,} bytes per task "
                f"(function + item, or result) {ABOVE_THE_LIMIT}{limit:,}")
    return None


def _fn_bytes(call: Call, strategy: str, probe: Probe) -> int:
    """What the function weighs as ``strategy`` would send it. One whose pickle names ``__main__`` travels by
    value, with every global it reads, on a cloudpickle backend (joblib, dask) and on a warm process pool whose
    workers forked before it was defined (a notebook's later cell): its pickle by name said a few hundred bytes
    where 400 MB went, for a 200 MB array it read, and auto sent it for 45 ms of work (hunt 66)."""
    if not probe.names_main or strategy not in CROSSES_PROCESSES or probe.pickle_error:
        return probe.fn_bytes
    if PICKLER[strategy] == "pickle" and not _pool_sends_by_value(call, strategy):
        return probe.fn_bytes
    if probe.fn_bytes_by_value is None:
        probe.fn_bytes_by_value = by_value_size(call.fn, probe.fn_bytes)
    return probe.fn_bytes_by_value


def _pool_sends_by_value(call: Call, strategy: str) -> bool:
    """Whether the process pool the call would run on cannot look a ``__main__`` function up by name: its warm
    pool says so; a pool to start does where its workers start from a fresh interpreter with no script to
    import (a notebook, ``python -c`` under ``spawn`` or ``forkserver``)."""
    if strategy in call.warm:
        return call.sends_by_value is not None and call.sends_by_value(strategy)
    from payoff.strategies.main_guard import spawned_workers_import_main

    return start_method(call.config.start_method) != "fork" and not spawned_workers_import_main()


def _sent_by_value(call: Call, strategy: str, probe: Probe) -> bool:
    """A function pickle cannot name (a lambda, a closure, a notebook's local class's method) travels to the
    processes backend by value (cloudpickle), like a ``__main__`` function the workers cannot look up. Under
    auto it went to joblib, whose pool starts in ~0.5 s against a fork's ~6 ms: calls stayed serial as
    ``pool_start_cost`` or ran 1.3x slower than the loop (data-science trial). Items or results that pickle
    refuses still need joblib (``auto_needs_cloudpickle``)."""
    return strategy == "processes" and call.requested in ("processes", "auto") and not probe.unsendable \
        and _cloudpickle_ok(call, probe)


def _cloudpickle_ok(call: Call, probe: Probe) -> bool:
    """Whether cloudpickle (joblib, dask) can send all that pickle refused: the function, and this call's
    sampled items and results. Asked only once pickle refused something, so only then it costs."""
    if probe.pickle_error and probe.cloudpickle_ok is None:
        size, unloaded = cloudpickled_fn(call.fn)
        probe.cloudpickle_ok = size is not None and not unloaded
    if probe.unsendable and probe.payload_cloudpickle_ok is None:
        probe.payload_cloudpickle_ok = all(cloudpickled_size(obj) is not None for _, obj in probe.unsendable)
    return (not probe.pickle_error or bool(probe.cloudpickle_ok)) \
        and (not probe.unsendable or bool(probe.payload_cloudpickle_ok))


def _run_probe(knowledge: Knowledge, call: Call, workers: int, crowded: bool = False,
               costs: CostModel | None = None, others_since: Callable[[int], bool] | None = None,
               open_now: bool = False) -> Probe:
    """Run the first items in the caller, unless they are known or the user fixed every choice.

    A known function runs its first item here only when no earlier call's
    result was seen to pickle: that result is checked (and kept).
    """
    probe = Probe(crashed=knowledge.crash_of(call.fn) or stuck_probes(call))
    known = knowledge.snapshot(call.fn)
    fn_known = known is not None and (known.fn_facts_hold_for(call.fn) or _large_and_measured(known))
    if known is not None:
        _recall(probe, known, fn_known)
    asks = call.decide_after_first is not None  # a library decides after its first item: it always runs here
    needs_cost = call.chunksize is None or call.requested == "auto" \
        or bool(call.config.tiny_workload_threshold) or asks
    sends = call.requested in ("auto", *CROSSES_PROCESSES)
    here = _may_run_items_here(call, _off_the_caller(call, probe)) and not _one_each(call, workers)
    reshare = known is not None and _share_due(call, known)
    recore = known is not None and _cores_due(knowledge, call, known)
    gil = needs_cost and here and _gil_due(call, workers, known, open_now) \
        and not (known is not None and _checked_first(call, known))  # the one item's check first, the GIL next call
    other = needs_cost and here and (asks or known is None or _measures_more(call, workers, known)
                                     or _unsteady(known) or reshare or recore)
    if other or gil:
        probe_cost(call, probe, workers, crowded, others_since,
                   known_waiting=known is not None and known.waited is True, sample_gil=gil)
        probe.known = False
        if gil and known is not None:  # too few wake-ups in the window: no sign the items let the GIL go
            probe.gil_held = GIL_UNREAD if probe.gil_held is None else probe.gil_held
            knowledge.observe_gil(call.fn, probe.gil_held)
            if not other and not _overturned(probe, known.seconds_per_item):  # probed for the GIL alone: the
                # sound cost stands (a head of somewhat cheaper items is no news; one a tenth of it or less is)
                probe.seconds_per_item, probe.cpu_ratio, probe.known = known.seconds_per_item, known.cpu_ratio, True
        _void_verdicts_if_shifted(probe, known)
        if known is not None and probe.cores_read:  # one read beside other calls is a try all the same: a
            # loop's calls are all beside the one before, and each re-read the next (+11% a call, for good)
            knowledge.observe_cores(call.fn, probe.cores, probe.cores >= ITEM_SPREADS_CORES)
        if reshare and probe.seconds_per_item is not None:  # read alone, as a first call's probe is
            knowledge.observe(call.fn, probe.seconds_per_item, probe.cpu_ratio, True, probe.n)
    elif sends and known is not None and ((another := _another_object(call, known, workers))
                                          or _checked_first(call, known)):
        if here and not (costs is not None and _surely_serial(costs, call, probe)):  # one that stays serial sends none
            probe.outcome, seconds = bounded(call, 1, 1)
            shifted = _other_work(call, probe) if another else None
            if shifted:
                knowledge.other_work(call.fn, probe.seconds_per_item or seconds, probe.cpu_ratio)
            elif shifted is not None:
                knowledge.first_item_misled(call.fn)
            _overturn_recall(probe, seconds)
            _void_verdicts_if_shifted(probe, known)
        elif known.result_error:  # cannot be checked again here: what was measured stands
            probe.unsendable.append((known.result_error, None))
            probe.payload_cloudpickle_ok = False
    decide = call.decide_after_first
    if decide is not None and probe.outcome is not None and probe.outcome.n_done and not probe.failed:
        probe.decided = _decided(decide, max(1, probe.outcome.end_ns - probe.outcome.start_ns) / 1e9)
        if probe.decided is not None:
            return probe  # the rest stays here: nothing to pickle or size
    if sends and costs is not None and _surely_serial(costs, call, probe) and not _worth_sizing(call, probe):
        return probe  # nothing pickled, nothing to store: facts without it would price a larger call as moving none
    if sends:
        measure_payload(call, probe)
    if known is None:
        knowledge.remember(call.fn, probe)
    elif sends and (not fn_known or probe.result_error not in (None, known.result_error)
                    or probe.pickling.item_kind != known.pickling.item_kind):
        knowledge.recheck(call.fn, probe, fn_measured=not fn_known)
    return probe


def _gil_due(call: Call, workers: int, known: Facts | None, open_now: bool) -> bool:
    """Whether auto's probe samples the GIL, over a longer budget (``payoff._gil_share``): for a function known
    to be CPU work whose share of the GIL was not read at its cost, in a call whose work is ``GIL_PROBE_WORK``
    times that probe's. Never on a first call (a function that may be trivial pays no thread and no longer
    probe: +110 us a first call of 10 items, trial 48), nor beside other calls still open (``open_now``), whose
    threads hold the GIL too: a call just ended, as a loop's last, holds none. Nor where the probe's items, a
    few of its share or one dear one, would be more than a tenth of the call's (2 items of 0.2 s ran one here,
    the other alone: too few to split).
    """
    if call.requested != "auto" or call.releases_gil is not None or workers < 2 or open_now or known is None:
        return False
    if known.gil_held is not None or known.delegates or known.seconds_per_item < THREADS_MIN_ITEM_SECONDS \
            or known.cpu_ratio < waiting_line(workers):
        return False
    share = len(call.items) // (CHUNKS_PER_WORKER * workers)  # the most items a probe runs (``probe_share``)
    probed = min(share, math.ceil(GIL_PROBE_SECONDS / known.seconds_per_item)) * known.seconds_per_item
    return share > 0 and GIL_PROBE_WORK * probed <= len(call.items) * known.seconds_per_item


def _checked_first(call: Call, known: Facts) -> bool:
    """Whether a known function's call runs one item here first to check its result pickles, or its cost where
    its items are arrays of another size (``_items_resized``)."""
    return known.result_error != "" or _items_resized(call, known)


def _one_each(call: Call, workers: int) -> bool:
    """A named backend with no more items than workers: each item is a worker's, none runs here first. A probe
    of the first ran it alone in the caller, and a call of 2 items of 0.3 s on 2 named threads then ran its
    second alone as well, serially, as "too few to split" (data-science trial: 0.6 s for 0.3 s)."""
    return call.requested != "auto" and call.decide_after_first is None and 0 < len(call.items) <= workers \
        and call.config.tiny_workload_threshold is None  # a threshold asks for small work to be measured here


def _void_verdicts_if_shifted(probe: Probe, known: Facts | None) -> None:
    """Verdicts measured at a cost ``COST_SHIFT`` times off this call's are not this call's (as ``observe`` voids
    them once a call ends): 1,000 items of 10 us measured processes at 0.57x, and 16 items of 20 ms each, their
    cost read by this very probe, were kept serial by it, 1.4x slower than a pool."""
    cost = probe.seconds_per_item
    if known is None or cost is None or probe.known or not probe.verdicts:
        return
    if cost_shifted(cost, known.seconds_per_item):
        probe.verdicts = {}


def _items_resized(call: Call, known: Facts) -> bool:
    """This call's first item is an array (or bytes) ``COST_SHIFT`` times larger or smaller than those the
    function's cost was measured on: its first item runs here to check it (``_overturn_recall``). A helper first
    mapped over 8 MB arrays, then over 1 KB ones, was planned at 25 ms an item and sent to processes at 4-9x the
    loop's time (data-science trial). Sized without pickling: other items are left to the serial run's budget."""
    was = known.item_bytes
    now = first_item_bytes(call.items) if was > 0 else None
    return now is not None and max(now, was) > COST_SHIFT * min(now, was)


def _overturn_recall(probe: Probe, seconds: float) -> None:
    """See RECALL_OVERTURNED."""
    recalled = probe.seconds_per_item
    if probe.outcome is not None and probe.outcome.n_done and recalled is not None \
            and seconds * RECALL_OVERTURNED < recalled:
        probe.seconds_per_item, probe.known = max(seconds, 1e-9), False


def _overturned(probe: Probe, recalled: float) -> bool:
    """Whether the items a probe just ran cost a tenth of the recall or less (``RECALL_OVERTURNED``)."""
    return probe.seconds_per_item is not None and probe.seconds_per_item * RECALL_OVERTURNED < recalled


def _decided(decide: Decide, seconds: float) -> tuple[Reason, str] | None:
    """A library's decision; one that raises is none (the call runs as asked): its item already ran here, and
    the user's map must not fail for how a library weighed it."""
    try:
        return decide(seconds)
    except Exception:
        return None


def _worth_sizing(call: Call, probe: Probe) -> bool:
    """Whether a call kept serial is dear enough to size its payload anyway (at most ~2 ms), so that the next
    call knows its function: two items of 0.47 s ran serially on every call (one probed, one left, too few to
    split), each call a first call, where sized once the next runs both on the pool in half the time."""
    cost = probe.seconds_per_item
    return cost is not None and cost * len(call.items) >= SIZE_SERIAL_CALLS_FROM


def _measures_more(call: Call, workers: int, known: Facts) -> bool:
    """Whether this call's probe can run more items than a cost that is not sound rests on (see ``SOUND_ITEMS``).

    It runs them anyway (its results are kept): measured again, the cost of a few cold items does not decide
    for a call of thousands. Once sound, a cost is not probed again.
    """
    return not known.sound and min(PROBE_MAX_ITEMS, probe_share(call, workers)) > known.measured_items


def _another_object(call: Call, known: Facts, workers: int) -> bool:
    """A callable of the same source as the one measured, but another object (a closure or partial made
    afresh), in a call of ``OTHER_WORK_ITEMS`` items a worker or more: its first item runs here, to check the
    share of CPU it is planned with (``_other_work``).

    It may close over other arguments, and so be other work: a CPU-bound closure made by the factory that had
    made a waiting one ran on 8 threads as waiting work for 7 calls at 0.95x the loop, its records saying
    2.0-2.7x (trial 51). One item, not a probe: a probe of each fresh partial's 2 ms ran 100 items of 50 us
    1.3x slower than with the source's facts, 600 calls of them slower than a loop. Not in a call of few
    items: there the item run here leaves too few to split, and ``map(partial(fit, X, y), grid)`` of two
    items of 0.25 s ran both serially, 0.5 s a call where processes took 0.25 s (review).
    """
    return known.measured_on is not None and not known.fn_facts_hold_for(call.fn) \
        and len(call.items) >= OTHER_WORK_ITEMS * workers and known.misleading_firsts < MISLEADING_FIRSTS


def _other_work(call: Call, probe: Probe) -> bool | None:
    """Whether the first item just run here (``probe.outcome``) and the next one both read a CPU share that is
    not the one recalled: ``SHARE_SHIFT`` times off and ``SHARE_SHIFT_FLOOR`` apart (readings of mostly sleep
    differ by factors). Then it is other work, planned at the second item's share and cost, with none of the
    sides, verdicts or paces the source earned. The first alone does not decide: a closure made per request
    whose first item set up a connection (3 ms of CPU before its 2 ms wait) went to processes on every call,
    0.050 s where threads took 0.009 s (review). None: the first item read the share recalled; False: the
    second did (``MISLEADING_FIRSTS``)."""
    outcome, recalled = probe.outcome, probe.cpu_ratio
    if outcome is None or not outcome.n_done or not _share_shifted(cpu_ratio_of(outcome), recalled):
        return None
    second = next_item_here(call, outcome)
    if second is None or not _share_shifted(share := cpu_ratio_of(second), recalled):
        return False
    probe.cpu_ratio, probe.seconds_per_item = share, max(own_seconds(second), 1e-9)
    probe.known, probe.waited = False, None
    probe.verdicts, probe.paces, probe.factors, probe.forgone = {}, {}, {}, {}
    probe.threads_speedup = probe.gil_threads = probe.gil_held = None
    return True


def _share_shifted(share: float, recalled: float) -> bool:
    return max(share, recalled) > SHARE_SHIFT * min(share, recalled) and abs(share - recalled) >= SHARE_SHIFT_FLOOR


def _share_due(call: Call, known: Facts) -> bool:
    """An auto call of a function that ran ``RESHARE_EVERY`` calls on threads as waiting work: its first items
    run alone to read its CPU share again (the items may have stopped waiting)."""
    return call.requested == "auto" and known.threads_calls >= RESHARE_EVERY


def _cores_due(knowledge: Knowledge, call: Call, known: Facts) -> bool:
    """An auto call of a function kept off threads by the CPUs its items keep busy, every ``VERDICT_RETRY``-th
    (the wait doubling while readings confirm it): its first items run alone to read them again."""
    return call.requested == "auto" and call.timeout is None and known.cores >= ITEM_SPREADS_CORES \
        and not knowledge.hold(call.fn, CORES)  # a probe under a timeout runs on a thread and reads none


def _unsteady(known: Facts) -> bool:
    """Whether the remembered cost keeps shifting, so that no call may be planned on the one before's."""
    return known.shifts.bit_count() >= UNSTEADY_SHIFTS


def _surely_serial(costs: CostModel, call: Call, probe: Probe) -> bool:
    """An auto call whose measured work stays serial whatever its payload: too few items, under the user's
    threshold, or less work than the cheapest pool's fixed cost per call. Its function, items and results
    are then not pickled to size them: a function exec'd per request (no ``__module__``) costs pickle and
    cloudpickle a scan of every module, ~2 ms, for a call whose items take microseconds. Should its run here
    outgrow that estimate, the rest's are pickled then (``Planner.outgrown``)."""
    cost, cfg = probe.seconds_per_item, call.config
    if call.requested != "auto" or cost is None or cfg.tiny_workload_threshold == 0:
        return False
    remaining = len(call.items) - probe.n
    if _floor_fallback(call) or _too_few(call, remaining):
        return True
    if cfg.tiny_workload_threshold is not None:
        return cost * remaining < cfg.tiny_workload_threshold
    method = start_method(cfg.start_method)
    fixed = min(oh.per_call + oh.per_chunk for oh in (costs.get(s, method) for s in ("threads", "processes", "joblib")))
    return fixed * PAYOFF_MARGIN >= cost * remaining  # any pool's estimate: at least this, plus the moving


def _large_and_measured(known: Facts) -> bool:
    """A callable that pickles to a model's size is not pickled again for each new object of the same code
    (a closure or partial made afresh per call): that would cost milliseconds a call. Its first measurement
    stands; small callables are re-checked, which costs microseconds."""
    return known.measured_on is not None and known.fn_bytes >= SHIP_ONCE_BYTES


def _may_run_items_here(call: Call, off_the_caller: bool = False) -> bool:
    """Whether the probe may run an unmeasured function's first items in the caller, as a loop would.

    Never for a function that crashed a worker process, or whose workers run a
    ``worker_initializer`` (see :func:`_off_the_caller`). Not under a backend
    named for its worker processes (an item that crashes there must not take
    the caller down) unless the user asked for small work to be kept in the
    caller (``tiny_workload_threshold``; not under a timeout, where such a call
    stays in the workers: ``_kept_in_workers``) or a library decides after its first
    item (``Call.decide_after_first``: CE runs its items in the caller too). Never on a pool the user handed over:
    they chose it for what its workers are (an initializer ran there, or they
    keep a crashing item away from the caller). Such a call starts on its pool with
    guided chunks, which learn the cost from the first ones back; the next call
    of the function is planned from it. (Under a timeout the probe runs on a
    payoff thread the caller waits for no longer than that.)
    """
    if off_the_caller or call.requested == "custom":
        return False
    measured_here = bool(call.config.tiny_workload_threshold) and not _kept_in_workers(call)
    return call.requested not in CROSSES_PROCESSES or measured_here or call.decide_after_first is not None


def items_may_run_here(config: ParallelConfig) -> bool:
    """Whether a helper may run a function's items in the caller to time them, as the probe runs an unmeasured
    function's (``_may_run_items_here``): not where workers run a ``worker_initializer`` the caller never ran
    (``explain(auto)`` timed its tasks here and failed on the model the initializer loads: hunt 62), not
    under a backend named for its worker processes unless small work is kept here, not on a pool of the
    user's. A config that runs every call here allows it."""
    requested = config.strategy_name
    if not config.enabled or requested == "serial":
        return True
    if requested == "custom" or _initializer_on_workers(config, requested):
        return False
    return requested not in CROSSES_PROCESSES or bool(config.tiny_workload_threshold)


def _has_initializer(call: Call) -> bool:
    """The config names a ``worker_initializer`` for a pool that runs it on its workers.

    ``fn`` may depend on what it set up (a model loaded into a global, a
    connection): an item run in the caller, where it never ran, would fail or,
    worse, return something else. So such a call's items run only on workers.
    """
    return _initializer_on_workers(call.config, call.requested)


def _initializer_on_workers(config: ParallelConfig, requested: str) -> bool:
    return config.worker_initializer is not None and requested in ("auto", "threads", *CROSSES_PROCESSES)


def _off_the_caller(call: Call, probe: Probe) -> bool:
    """No item of this call may run in the caller, whatever the work: a crash or an initializer forbids it."""
    return probe.crashed is not None or _has_initializer(call)


def _stays_in_workers(call: Call, probe: Probe) -> bool:
    """Whether no item of this call may run in the caller, so no serial fallback applies.

    A function that crashed a worker process, under a process backend the
    user named or under auto (which then chooses one); and under a named one,
    a function not measured yet (no probe ran: nothing is known but that the
    user asked for worker processes). A payload too large for the size hint is
    still sent: it is costly, not unsendable. One that no pickler can send is
    the one case left (see ``_refuse_the_caller``).
    """
    if probe.crashed is not None:
        return call.requested == "auto" or call.requested in CROSSES_PROCESSES
    if _has_initializer(call):
        return True
    return call.requested in CROSSES_PROCESSES and probe.seconds_per_item is None


def _isolating_choice(call: Call, probe: Probe) -> tuple[str, Reason, tuple[Reason, str] | None]:
    """Auto for a function that crashed a worker process: a process backend whatever the work."""
    problem = _payload_problem(call, "processes", probe)
    if problem is None or problem[0] is not Reason.UNPICKLABLE:
        return "processes", Reason.AUTO_ISOLATES_CRASHES, None
    if _cloudpickle_ok(call, probe):
        return "joblib", Reason.AUTO_ISOLATES_CRASHES, None
    return "processes", Reason.AUTO_ISOLATES_CRASHES, (Reason.UNPICKLABLE, _cannot_either(problem[1]))


def _refuse_the_caller(call: Call, probe: Probe, strategy: str, why: tuple[Reason, str]) -> None:
    """Raise before any item runs where running this call's items in the caller is not acceptable.

    A function that crashed a worker process and cannot be sent to one: a
    ``pickle.PicklingError`` (the caller is the one process payoff cannot
    restart; ``strategy='serial'`` runs it there when the user says so). Under
    a backend named for its worker processes, a call nothing can send falls back
    to the caller with an ``unpicklable`` warning, which the observers emit once
    the call is done; where a warnings filter makes that warning an error (the
    documented isolation switch), it is raised now, so that nothing runs.
    """
    reason, detail = why
    if reason is not Reason.UNPICKLABLE or call.requested not in ("auto", *CROSSES_PROCESSES):
        return
    if probe.crashed is not None:
        raise pickle.PicklingError(
            f"payoff: this function crashed a worker process or hung before ({probe.crashed}), so its items run "
            f"only in worker processes, never in this one; this call cannot be sent to {strategy}: {detail}. Nothing "
            "ran. Make the function, items and results picklable, or name strategy='serial' to run them in "
            "this process anyway")
    if _has_initializer(call):
        raise pickle.PicklingError(
            f"payoff: this call's workers run worker_initializer {describe_callable(call.config.worker_initializer)},"
            f" so its items run only on them, never in this process, where it never ran; it cannot be sent to "
            f"{strategy}: {detail}. Nothing ran. Make the function, items and results picklable, or use "
            "strategy='threads'")
    if call.requested == "auto":
        return
    from payoff.telemetry.warnings import ParallelFallbackWarning

    site = find_call_site()
    text = (f"payoff: the items of this call would run serially in this process instead of {call.requested} "
            f"({reason.value}): {detail}. Nothing ran: a warnings filter makes ParallelFallbackWarning an error "
            f"here. {reason.advice_sentence}")
    if warning_action(text, ParallelFallbackWarning, site.module, site.lineno) == "error":
        raise ParallelFallbackWarning(text, reason)


def _crash_of(record: MapRecord, error: BaseException | None) -> str | None:
    """How a call's worker process died, in words: the ``WorkerCrashedError`` it raised, or a crash it recovered
    from by rerunning chunks (``map_failure_retry``); None when no worker died."""
    if isinstance(error, WorkerCrashedError):
        where = f"item {error.item_index}" if error.item_index is not None else "a chunk"
        return f"{where} crashed a worker process ({describe_exit(error.exitcode)}) in call {record.call_id}"
    # a cluster's recovered loss is no evidence against the function: a worker killed or retired from outside, a
    # machine gone; an item that kills its dask worker each time ends as KilledWorker, a WorkerCrashedError above
    if record.fallback_reason is Reason.MAP_FAILURE_RETRY and record.selected_strategy != "dask":
        return f"a worker process died in call {record.call_id}; a retry recovered its chunks"
    return None


def _worker_processes(record: MapRecord) -> set[int]:
    """The process ids of the workers that ran the call's chunks (a chunk's ``worker`` is ``pid:thread``)."""
    pids = set()
    for chunk in record.chunks:
        pid = chunk.worker.partition(":")[0] if chunk.where == "pool" else ""
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def _recall(probe: Probe, known: Facts, fn_known: bool) -> None:
    """What earlier calls measured; the function's pickling only if measured on this very object."""
    probe.seconds_per_item, probe.cpu_ratio, probe.known = known.seconds_per_item, known.cpu_ratio, True
    probe.cores = known.cores
    if fn_known:
        probe.fn_bytes, probe.pickle_error, probe.names_main = known.fn_bytes, known.pickle_error, known.names_main
        probe.cloudpickle_ok, probe.fn_checked = known.cloudpickle_ok, True
    probe.threads_speedup = known.threads_speedup
    probe.verdicts = dict(known.verdicts)
    probe.paces = dict(known.paces)
    probe.forgone = dict(known.forgone)
    probe.thrown = dict(known.thrown)
    probe.pickling = known.pickling
    probe.result_bytes = known.result_bytes
    probe.waited = known.waited
    probe.gil_threads = known.gil_threads
    probe.factors = dict(known.side_by_side.factors)
    probe.gil_held = known.gil_held
    probe.import_seconds, probe.imported_on = known.import_seconds, known.imported_on
    if known.import_seconds:  # only then any (``Knowledge`` notes pids only then), read by ``_imports_again``
        probe.imported_in = frozenset(known.imported_in)


def _chunk_size(costs: CostModel, call: Call, strategy: str, workers: int, cost: float | None,
                remaining: int) -> int:
    fixed = _fixed_chunk(call)
    if fixed is not None:
        return max(1, min(fixed, remaining))
    balanced = math.ceil(remaining / (workers * CHUNKS_PER_WORKER))
    if cost is not None and cost > 0:
        floor = _work_floor(costs, strategy, cost)
        even = even_chunks(remaining, workers, floor) if floor >= balanced else None
        if even is not None:  # the floor would set the size: equal chunks, no runt (as the schedule cuts them)
            return math.ceil(remaining / even)
        balanced = max(balanced, floor)
    return max(1, min(balanced, math.ceil(remaining / workers)))


def _fixed_chunk(call: Call) -> int | None:
    if call.chunksize is not None:
        return call.chunksize
    if call.granularity == "instance":
        return call.config.instance_chunk_size
    if call.granularity == "feature":
        return call.config.feature_chunk_size
    return None


def _work_floor(costs: CostModel, strategy: str, cost: float) -> int:
    """Items a chunk needs to amortise its strategy's per-chunk overhead."""
    return math.ceil(_work_floor_seconds(costs, strategy) / cost)


def _work_floor_seconds(costs: CostModel, strategy: str) -> float:
    return min(MIN_CHUNK_SECONDS, CHUNK_OVERHEAD_MULTIPLE * costs.get(strategy).per_chunk)


def _chunk_floor(costs: CostModel, call: Call, strategy: str, cost: float | None, chunk: int) -> int:
    """The smallest chunk the guided schedule may hand out at the tail; the chunk size itself when fixed."""
    if _fixed_chunk(call) is not None or cost is None or cost <= 0:
        return chunk
    return max(1, min(chunk, _work_floor(costs, strategy, cost)))
