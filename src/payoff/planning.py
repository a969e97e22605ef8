"""From measured facts to a Plan: strategy, workers, chunk size and the reason.

The planner runs the first item(s) in the caller (their results are kept, not
recomputed) to learn what an item costs, checks that function, items and
results can travel to worker processes, and compares the estimated serial
time of the rest against what a pool would need: start-up (unless warm),
per-call and per-chunk overhead, payload transfer. The overhead figures start
as priors and are corrected from every parallel call this process measures.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from payoff.config import ParallelConfig
from payoff.reasons import Reason
from payoff.strategies import CROSSES_PROCESSES, PICKLER, SHIP_ONCE_BYTES
from payoff.worker import ChunkOutcome, in_worker, run_chunk

PROBE_BUDGET_SECONDS = 0.002
PROBE_MAX_ITEMS = 64
MIN_CHUNK_SECONDS = 0.005
"""Chunks need not be larger than this much work to amortise their dispatch."""
CHUNK_OVERHEAD_MULTIPLE = 20
"""A chunk holds at least this many times its strategy's per-chunk overhead of work (overhead <= 5%), so a
small call (a 5 ms map on warm processes) still splits across the workers instead of running as one chunk."""
CHUNKS_PER_WORKER = 4
PAYOFF_MARGIN = 1.2
"""Parallel must be estimated this many times faster before payoff pays for a pool."""
THREADS_KEEP_SPEEDUP = 1.05
"""Threads chosen for payloads too large for processes stay chosen while a run measures this much gain."""
AMORTIZE_CALLS = 100
"""A pool outlives the call that starts it: a workload seen N times before shares the start over N + 1."""


@dataclass
class Overheads:
    """What one backend costs besides the work, in seconds (and seconds per byte)."""

    start: float
    per_call: float
    per_chunk: float
    per_byte: float


_PRIORS: dict[str, Overheads] = {
    "threads": Overheads(start=0.0005, per_call=0.0001, per_chunk=0.00005, per_byte=0.0),
    "processes": Overheads(start=0.03, per_call=0.0005, per_chunk=0.00015, per_byte=1.5e-9),
    "joblib": Overheads(start=0.5, per_call=0.001, per_chunk=0.0003, per_byte=2e-9),
    "dask": Overheads(start=2.0, per_call=0.005, per_chunk=0.002, per_byte=3e-9),
}


class CostModel:
    """Per-process knowledge of backend overheads, corrected by measurement.

    Per-call overhead is the median of the last ``WINDOW`` measurements (the
    prior counts as one until the window fills): a few calls that met a busy
    machine must not make every later small call serial, because a call kept
    serial is never measured again.
    """

    SMOOTHING = 0.3
    WINDOW = 9

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to the priors (tests, or after the machine's load changed a lot)."""
        self._costs = {k: Overheads(**vars(v)) for k, v in _PRIORS.items()}
        self._per_call: dict[str, deque[float]] = {k: deque([v.per_call], maxlen=self.WINDOW)
                                                   for k, v in _PRIORS.items()}

    def get(self, strategy: str) -> Overheads:
        with self._lock:
            return Overheads(**vars(self._costs.get(strategy, _PRIORS["processes"])))

    def learn(self, strategy: str, *, start: float | None = None, per_call: float | None = None) -> None:
        with self._lock:
            costs = self._costs.get(strategy)
            if costs is None:
                return
            if start is not None and start > 0:
                costs.start = (1 - self.SMOOTHING) * costs.start + self.SMOOTHING * start
            if per_call is not None:
                window = self._per_call[strategy]
                window.append(max(0.0, per_call))
                costs.per_call = statistics.median(window)


COSTS = CostModel()


@dataclass
class Facts:
    """What earlier calls measured about one function."""

    seconds_per_item: float
    cpu_ratio: float
    fn_bytes: int
    pickle_error: str
    cloudpickle_ok: bool | None
    threads_speedup: float | None = None
    """Measured speedup of the last threads run chosen for payloads processes could not take."""


def fn_key(fn: Callable[..., Any]) -> Hashable | None:
    """A key that survives re-creating the same function (a lambda in a loop, a new partial)."""
    if isinstance(fn, functools.partial):
        inner = fn_key(fn.func)
        return None if inner is None else ("partial", inner, len(fn.args), tuple(sorted(fn.keywords)))
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    if code is not None:
        owner = type(fn.__self__).__qualname__ if hasattr(fn, "__self__") else ""
        return ("code", code.co_filename, code.co_firstlineno, code.co_qualname, owner)
    return ("object", type(fn).__module__, type(fn).__qualname__)


class Knowledge:
    """A bounded memory of per-function facts, so a function is probed once, not on every call.

    ``get`` hands out the stored object itself: treat it as read-only.
    """

    LIMIT = 512
    SMOOTHING = 0.3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: OrderedDict[Hashable, Facts] = OrderedDict()

    def get(self, fn: Callable[..., Any]) -> Facts | None:
        key = fn_key(fn)
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is not None:
                self._facts.move_to_end(key)
        return facts

    def remember(self, fn: Callable[..., Any], probe: Probe) -> None:
        key = fn_key(fn)
        if key is None or probe.seconds_per_item is None:
            return
        with self._lock:
            self._facts[key] = Facts(probe.seconds_per_item, probe.cpu_ratio, probe.fn_bytes,
                                     probe.pickle_error, probe.cloudpickle_ok)
            self._facts.move_to_end(key)
            while len(self._facts) > self.LIMIT:
                self._facts.popitem(last=False)

    def observe(self, fn: Callable[..., Any], seconds_per_item: float) -> None:
        """Correct the remembered cost with what a whole call measured."""
        key = fn_key(fn)
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is not None and seconds_per_item > 0:
                a = self.SMOOTHING
                facts.seconds_per_item = (1 - a) * facts.seconds_per_item + a * seconds_per_item

    def observe_threads(self, fn: Callable[..., Any], speedup: float) -> None:
        """What threads really gained for ``fn``: the GIL decides, and only a run can tell."""
        key = fn_key(fn)
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is not None:
                facts.threads_speedup = speedup

    def forget(self) -> None:
        with self._lock:
            self._facts.clear()


KNOWLEDGE = Knowledge()


@dataclass
class Probe:
    """What running the first items in the caller taught us."""

    outcome: ChunkOutcome | None = None
    seconds_per_item: float | None = None
    cpu_ratio: float = 1.0
    item_bytes: int = 0
    result_bytes: int = 0
    fn_bytes: int = 0
    pickle_error: str = ""
    cloudpickle_ok: bool | None = None
    threads_speedup: float | None = None
    known: bool = False
    """True when the cost came from an earlier call instead of running items now."""

    @property
    def n(self) -> int:
        return 0 if self.outcome is None else self.outcome.n_done

    @property
    def failed(self) -> bool:
        return self.outcome is not None and self.outcome.error is not None


@dataclass(frozen=True)
class Plan:
    strategy: str
    workers: int
    chunk_size: int
    decision: Reason
    fallback: Reason | None = None
    detail: str = ""
    probe: Probe = field(default_factory=Probe)


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


def available_workers(config: ParallelConfig) -> int:
    if config.max_workers is not None:
        return config.max_workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan(call: Call) -> Plan:
    """Decide how to run ``call``; may run its first items (the probe)."""
    cfg = call.config
    workers = available_workers(cfg)
    decision = Reason.EXPLICIT_OBJECT if call.requested == "custom" else Reason.EXPLICIT_STRATEGY
    if not call.items:
        return Plan("serial", 1, 1, Reason.EMPTY_INPUT)
    early = _early_fallback(call, workers)
    if early is not None:
        return _serial(call, early[0], early[1], decision)
    if call.requested == "serial":
        return _serial(call, None, "", decision)
    probe = _run_probe(call, workers)
    if probe.failed:
        return _serial(call, None, "the probe item raised", decision, probe)
    remaining = len(call.items) - probe.n
    if call.requested == "custom":
        return _chunked(call, "custom", workers, probe, remaining, decision)
    strategy, decision, why = _choose(call, probe)
    if why is not None:
        return _serial(call, why[0], why[1], decision, probe)
    fallback = _threshold_fallback(call, probe, remaining)
    if fallback is None:
        fallback = _cost_fallback(call, strategy, workers, probe, remaining)
    if fallback is not None and fallback[0] is Reason.PAYLOAD_TOO_LARGE and _threads_may_pay(call, probe) \
            and _cost_fallback(call, "threads", workers, probe, remaining) is None:
        return _chunked(call, "threads", workers, probe, remaining, Reason.AUTO_SHARED_MEMORY)
    if fallback is not None:
        return _serial(call, fallback[0], fallback[1], decision, probe)
    return _chunked(call, strategy, workers, probe, remaining, decision)


def _threads_may_pay(call: Call, probe: Probe) -> bool:
    """Under auto, threads for data processes cannot take: unless a run showed the GIL holds them back."""
    speedup = probe.threads_speedup
    return call.requested == "auto" and (speedup is None or speedup >= THREADS_KEEP_SPEEDUP)


def _serial(call: Call, reason: Reason | None, detail: str, decision: Reason,
            probe: Probe | None = None) -> Plan:
    probe = probe or Probe()
    n = len(call.items) - probe.n
    return Plan("serial", 1, max(1, n), decision, reason, detail, probe)


def _early_fallback(call: Call, workers: int) -> tuple[Reason, str] | None:
    cfg = call.config
    if not cfg.enabled:
        return Reason.DISABLED, "enabled=False"
    if in_worker():
        return Reason.NESTED, "map called from inside a payoff worker"
    if call.granularity is not None and cfg.granularity not in ("auto", call.granularity):
        return (Reason.GRANULARITY_MISMATCH,
                f"the call splits on {call.granularity!r}, the config allows only {cfg.granularity!r}")
    if call.requested == "serial" or len(call.items) == 0:
        return None
    if workers < 2:
        return Reason.SINGLE_WORKER, f"{workers} worker available"
    return None


def _threshold_fallback(call: Call, probe: Probe, remaining: int) -> tuple[Reason, str] | None:
    cfg = call.config
    n = len(call.items)
    floor = cfg.min_batch_size
    if call.granularity == "instance" and cfg.min_instances_for_parallel is not None:
        floor = max(floor or 0, cfg.min_instances_for_parallel)
    if floor is not None and n < floor:
        return Reason.TINY_WORKLOAD, f"{n} items is below the minimum of {floor} for parallel"
    if remaining < 2 and cfg.tiny_workload_threshold != 0:
        return Reason.TINY_WORKLOAD, f"{n} item{'s' if n != 1 else ''} is too few to split across workers"
    cost = probe.seconds_per_item
    if cfg.tiny_workload_threshold is not None and cost is not None:
        work = cost * remaining
        if work < cfg.tiny_workload_threshold:
            return (Reason.TINY_WORKLOAD, f"{work * 1e3:.2f} ms of estimated work is below "
                    f"tiny_workload_threshold={cfg.tiny_workload_threshold}")
    return None


def _cost_fallback(call: Call, strategy: str, workers: int, probe: Probe,
                   remaining: int) -> tuple[Reason, str] | None:
    """Serial when the pool cannot beat the loop on the rest of the items."""
    cost = probe.seconds_per_item
    if cost is None or call.config.tiny_workload_threshold is not None:
        return None
    serial = cost * remaining
    oh = COSTS.get(strategy)
    chunk = _chunk_size(call, strategy, workers, cost, remaining)
    chunks = math.ceil(remaining / chunk)
    start = 0.0 if strategy in call.warm else oh.start / (1 + min(call.prior_calls, AMORTIZE_CALLS))
    fn_copies = workers if probe.fn_bytes >= SHIP_ONCE_BYTES else chunks
    transfer = oh.per_byte * (remaining * (probe.item_bytes + probe.result_bytes) + fn_copies * probe.fn_bytes)
    compute = max(serial / workers, cost * chunk)
    parallel = start + oh.per_call + compute + oh.per_chunk * math.ceil(chunks / workers) + transfer
    if parallel * PAYOFF_MARGIN < serial:
        return None
    probed = f" (after {probe.n:,} probed)" if probe.n else ""
    summary = (f"{remaining:,} items{probed} x {cost * 1e6:,.1f} us = {serial * 1e3:,.2f} ms of work; "
               f"{strategy} would need about {parallel * 1e3:,.2f} ms")
    if transfer > compute:
        return Reason.PAYLOAD_TOO_LARGE, f"{summary}, {transfer * 1e3:,.2f} ms of it moving pickled data"
    return Reason.TINY_WORKLOAD, summary


def _choose(call: Call, probe: Probe) -> tuple[str, Reason, tuple[Reason, str] | None]:
    """Pick the backend; the third element is a reason to stay serial instead."""
    requested = call.requested
    if requested != "auto":
        return requested, Reason.EXPLICIT_STRATEGY, _payload_problem(call, requested, probe)
    if call.releases_gil:
        return "threads", Reason.AUTO_RELEASES_GIL, None
    problem = _payload_problem(call, "processes", probe)
    if problem is None:
        return "processes", Reason.AUTO_CPU_BOUND, None
    if problem[0] is Reason.UNPICKLABLE and _cloudpickle_ok(call, probe):
        return "joblib", Reason.AUTO_NEEDS_CLOUDPICKLE, _payload_problem(call, "joblib", probe)
    if problem[0] is Reason.PAYLOAD_TOO_LARGE and _threads_may_pay(call, probe):
        return "threads", Reason.AUTO_SHARED_MEMORY, None
    return "processes", Reason.AUTO_CPU_BOUND, problem


def _payload_problem(call: Call, strategy: str, probe: Probe) -> tuple[Reason, str] | None:
    if strategy not in CROSSES_PROCESSES:
        return None
    if probe.pickle_error and PICKLER[strategy] == "pickle":
        hint = " (cloudpickle could send it: strategy='joblib')" if _cloudpickle_ok(call, probe) else ""
        return Reason.UNPICKLABLE, probe.pickle_error + hint
    if PICKLER[strategy] == "cloudpickle" and probe.pickle_error and not _cloudpickle_ok(call, probe):
        return Reason.UNPICKLABLE, probe.pickle_error + " (cloudpickle cannot send it either)"
    per_task = probe.item_bytes + (probe.fn_bytes if probe.fn_bytes < SHIP_ONCE_BYTES else 0)
    limit = call.config.task_size_hint_bytes
    if max(per_task, probe.result_bytes) > limit:
        return (Reason.PAYLOAD_TOO_LARGE, f"{max(per_task, probe.result_bytes):,} bytes per task "
                f"(function + item, or result) is above task_size_hint_bytes={limit:,}")
    return None


def _cloudpickle_ok(call: Call, probe: Probe) -> bool:
    if probe.cloudpickle_ok is None:
        import cloudpickle

        try:
            cloudpickle.dumps(call.fn)
            probe.cloudpickle_ok = True
        except Exception:
            probe.cloudpickle_ok = False
    return probe.cloudpickle_ok


def _run_probe(call: Call, workers: int) -> Probe:
    """Run the first items in the caller, unless they are known or the user fixed every choice."""
    probe = Probe()
    known = KNOWLEDGE.get(call.fn)
    if known is not None:
        probe.seconds_per_item, probe.cpu_ratio = known.seconds_per_item, known.cpu_ratio
        probe.fn_bytes, probe.pickle_error = known.fn_bytes, known.pickle_error
        probe.cloudpickle_ok, probe.known = known.cloudpickle_ok, True
        probe.threads_speedup = known.threads_speedup
    needs_cost = call.chunksize is None or call.requested == "auto" \
        or bool(call.config.tiny_workload_threshold)
    if needs_cost and known is None:
        limit = max(1, min(PROBE_MAX_ITEMS, len(call.items) // (CHUNKS_PER_WORKER * workers) or 1))
        probe.outcome = _timed_prefix(call.fn, call.items, limit)
        done = probe.outcome.n_done
        if done:
            wall = sum(probe.outcome.durations_ns) / 1e9
            probe.seconds_per_item = max(wall / done, 1e-9)
            probe.cpu_ratio = min(1.0, max(0.05, probe.outcome.cpu_ns / 1e9 / wall)) if wall > 0 else 1.0
    if call.requested in ("auto", *CROSSES_PROCESSES):
        _measure_payload(call, probe)
    if known is None:
        KNOWLEDGE.remember(call.fn, probe)
    return probe


def _timed_prefix(fn: Callable[[Any], Any], items: Sequence[Any], limit: int) -> ChunkOutcome:
    """Run items one by one until the budget is spent; a single chunk of real work."""
    deadline = time.perf_counter() + PROBE_BUDGET_SECONDS
    outcome = run_chunk(fn, items[:1], 0, 0)
    taken = 1
    while outcome.error is None and taken < limit and time.perf_counter() < deadline:
        step = min(taken, limit - taken)
        more = run_chunk(fn, items[taken:taken + step], taken, 0)
        outcome.results.extend(more.results)
        outcome.durations_ns.extend(more.durations_ns)
        outcome.block_sizes.extend(more.block_sizes)
        outcome.cpu_ns += more.cpu_ns
        outcome.end_ns = more.end_ns
        outcome.error, outcome.error_index = more.error, more.error_index
        taken += step
    return outcome


_ARRAY_PICKLE_HEADER = 160
_BYTES_PICKLE_HEADER = 16


def _measure_payload(call: Call, probe: Probe) -> None:
    """Pickled sizes of the function (unless known), one item and one result, with stdlib pickle."""
    sample_item = call.items[min(probe.n, len(call.items) - 1)]
    try:
        if not probe.known:
            probe.fn_bytes = len(pickle.dumps(call.fn, protocol=pickle.HIGHEST_PROTOCOL))
        elif probe.pickle_error:
            return
        probe.item_bytes = _pickled_size(sample_item)
        if probe.outcome is not None and probe.outcome.results:
            probe.result_bytes = _pickled_size(probe.outcome.results[0])
    except Exception as exc:
        probe.pickle_error = f"cannot pickle for worker processes: {type(exc).__name__}: {exc}"


def _pickled_size(obj: Any) -> int:
    """Bytes ``obj`` pickles to; buffers are sized without copying them (a 1 MiB array pickles in ~1 ms)."""
    if type(obj) is np.ndarray and not obj.dtype.hasobject:
        return int(obj.nbytes) + _ARRAY_PICKLE_HEADER
    if type(obj) in (bytes, bytearray):
        return len(obj) + _BYTES_PICKLE_HEADER
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _chunk_size(call: Call, strategy: str, workers: int, cost: float | None, remaining: int) -> int:
    fixed = call.chunksize
    if fixed is None and call.granularity == "instance":
        fixed = call.config.instance_chunk_size
    if fixed is None and call.granularity == "feature":
        fixed = call.config.feature_chunk_size
    if fixed is not None:
        return max(1, min(fixed, remaining))
    balanced = math.ceil(remaining / (workers * CHUNKS_PER_WORKER))
    if cost is not None and cost > 0:
        per_chunk = COSTS.get(strategy).per_chunk
        balanced = max(balanced, math.ceil(min(MIN_CHUNK_SECONDS, CHUNK_OVERHEAD_MULTIPLE * per_chunk) / cost))
    return max(1, min(balanced, math.ceil(remaining / workers)))


def _chunked(call: Call, strategy: str, workers: int, probe: Probe, remaining: int,
             decision: Reason) -> Plan:
    cost = probe.seconds_per_item
    chunk = _chunk_size(call, strategy, workers, cost, remaining)
    return Plan(strategy, workers, chunk, decision, None, "", probe)
