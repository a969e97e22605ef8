"""The one mapping from a call's events to metric updates, shared by every metrics exporter.

The Prometheus exporter (:mod:`payoff.telemetry.metrics`) and the OpenTelemetry
metrics exporter (:mod:`payoff.telemetry.otel_metrics`) are both
:class:`UpdatesObserver` subclasses: each hook hands the call's event (planned,
chunk finished, finished with its :class:`~payoff.record.MapRecord`) to the
observer's :class:`MetricUpdates`, which returns :class:`Update` tuples, and the
exporter only applies them. Neither exporter chooses a name, a label or a value,
so after the same calls they hold the same series with the same values.

Series exist only for what happened. The first time a ``(strategy, workload)``
pair runs a call, the same batch of updates creates every series of that pair
at zero (``ADD 0`` for counters, ``TOUCH`` for histograms), and the first time a
pool strategy is used, its pool start/failure/reuse counters: from the next
scrape on, ``rate()`` and ``increase()`` see each later increment, including
those of a long first call, whose busy and capacity counters advance as its
chunks finish. Strategies a workload never ran get no series at all.
:meth:`MetricUpdates.declare` creates a pair's series before its first call when
a program knows in advance what it will run.

Every updated value comes from the events, never from a clock read here: the
capacity of a running call advances to the end stamp of each finished chunk (a
monotonic stamp in the caller's clock, also for remote workers), so two
exporters fed the same events agree to the last bit.

Capacity counts workers x wall of every call, also of calls that shared their
pool with other calls: what of a call's workers was the other calls' (their
chunks, their share of idle workers) is known only when its record is built,
and a counter cannot go back down, so it
is a counter of its own (``payoff_shared_seconds_total``), added when the call
ends. Utilization is busy / (capacity - shared), as the record's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from payoff import _forks
from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats, MapRecord, block_times

STRATEGIES: Final = ("serial", "threads", "processes", "joblib", "custom", "dask")
"""The ``strategy`` label's values; any other strategy name is counted as ``custom``."""
UNPOOLED: Final = frozenset({"serial", "custom"})
"""Strategies that never start a pool of their own (``custom`` runs on the user's pool)."""
WORKLOAD_CAP: Final = 50
"""Distinct ``workload`` label values one exporter keeps; later names are counted as ``other``."""
OTHER: Final = "other"

ADD: Final = 0
"""Counter or gauge: add ``value`` (a gauge's value may be negative)."""
OBSERVE: Final = 1
"""Histogram: ``value`` observed ``weight`` times (a timing block of ``weight`` items at their mean)."""
TOUCH: Final = 2
"""Histogram: create the series with no observation (all buckets at zero)."""
OBSERVE_BLOCKS: Final = 3
"""Histogram: each of a chunk's timing blocks observed at its per-item mean, weighted by its items (``value``
is the chunk's :class:`Blocks`, ``weight`` unused)."""


class Blocks(NamedTuple):
    """A chunk's timing blocks as one update, not one tuple per block.

    Tuples kept alive together count towards the garbage collector's next
    young collection, freed ones return to a free list without giving the
    count back: a serial call of 300 items timed alone made ~600 of them,
    tipped a collection on every call, and that collection walked the call's
    300 young results (lists of 25,000 floats: 40-50 ms a call, 1.17x the loop).
    """

    durations_ns: tuple[int, ...]
    sizes: tuple[int, ...]

    def observations(self) -> Iterator[tuple[float, int]]:
        """(seconds per item, items) of each block, made one at a time."""
        return block_times(self.durations_ns, self.sizes)

Labels = tuple[str, ...]

# Metric names, as METRICS in payoff.telemetry.metrics defines them (a test checks every update against it).
MAP_CALLS: Final = "payoff_map_calls_total"
FALLBACKS: Final = "payoff_fallbacks_total"
RECOVERIES: Final = "payoff_recoveries_total"
TASKS: Final = "payoff_tasks_total"
TASK_ERRORS: Final = "payoff_task_errors_total"
MAP_DURATION: Final = "payoff_map_duration_seconds"
TASK_DURATION: Final = "payoff_task_duration_seconds"
QUEUE_WAIT: Final = "payoff_queue_wait_seconds"
WALL: Final = "payoff_wall_seconds_total"
BUSY: Final = "payoff_busy_seconds_total"
CAPACITY: Final = "payoff_capacity_seconds_total"
SHARED: Final = "payoff_shared_seconds_total"
SERIAL_ESTIMATE: Final = "payoff_serial_estimate_seconds_total"
SPEEDUP: Final = "payoff_speedup"
TASK_CPU: Final = "payoff_task_cpu_seconds_total"
OVERHEAD: Final = "payoff_overhead_seconds_total"
PAYLOAD: Final = "payoff_payload_bytes_total"
POOL_STARTS: Final = "payoff_pool_starts_total"
POOL_REUSES: Final = "payoff_pool_reuses_total"
DECISIONS: Final = "payoff_decisions_total"
IN_FLIGHT: Final = "payoff_in_flight_tasks"

PAIR_COUNTERS: Final = (TASKS, TASK_ERRORS, WALL, BUSY, CAPACITY, SERIAL_ESTIMATE, TASK_CPU)
"""Counters labelled ``(strategy, workload)``, besides ``payoff_map_calls_total`` (which adds ``mode``)."""
PAIR_HISTOGRAMS: Final = (MAP_DURATION, TASK_DURATION, SPEEDUP)
"""Histograms every pair has; ``payoff_queue_wait_seconds`` only pairs whose strategy runs chunks in a pool."""
POOL_PAIR_COUNTERS: Final = (SHARED,)
"""Counters only pairs whose strategy runs chunks in a pool have: a serial call holds no pool to share."""


Update = tuple[str, Labels, int, float | Blocks, int, str | None]
"""One change to one series: ``(metric, label values, kind, value, weight, exemplar)``.

Label values are in the order of the metric's ``labels``; ``kind`` is ``ADD``,
``OBSERVE``, ``OBSERVE_BLOCKS`` (``value`` a :class:`Blocks`) or ``TOUCH``; ``weight`` is how many observations
``value`` stands for (a timing block of that many items at their mean); ``exemplar`` is the trace
id of the call's span (the map duration's observation only). Plain tuples: a
call makes about fifteen, and a named tuple would cost more than applying them.
"""


def strategy_label(name: str) -> str:
    return name if name in STRATEGIES else "custom"


def _mode(strategy: str, workers: int) -> str:
    """``MapRecord.mode``'s rule, for a call still running."""
    return "serial" if strategy == "serial" or workers <= 1 else "parallel"


@dataclass(slots=True)
class _Call:
    """What one exporter's mapping remembers about one running call."""

    planned: str
    """The strategy the plan chose: where the in-flight gauge went up and whose pool was asked for."""
    workload: str
    strategy: str
    """Where the call's items run now (``serial`` after a fallback)."""
    left: int
    """Items counted into the in-flight gauge and not finished yet."""
    mark_ns: int
    """How far the call's capacity counter has advanced (monotonic ns)."""
    read: int = 0
    """A stream's items counted in so far (``CallInfo.read``)."""


class MetricUpdates:
    """Maps the hooks of calls to :class:`Update` lists.

    One instance per exporter: it remembers which series it has created, the
    workload names under the cap, and per running call (in ``call.state``) where
    its gauge went up and how far its capacity has advanced. It is thread-safe.
    """

    def __init__(self, workload_cap: int = WORKLOAD_CAP) -> None:
        self._cap = workload_cap
        self._lock = _forks.Lock()
        self._workloads: set[str] = set()
        self._pairs: set[tuple[str, str]] = set()
        self._strategies: set[str] = set()
        self._key = f"payoff.metrics:{id(self):x}"

    # -- labels and first use ----------------------------------------------------

    def workload(self, name: str) -> str:
        """The label value for ``name``: itself while fewer than the cap were seen, else ``other``."""
        if name in self._workloads:
            return name
        with self._lock:
            if name in self._workloads:
                return name
            if len(self._workloads) >= self._cap:
                self._workloads.add(OTHER)
                return OTHER
            self._workloads.add(name)
            return name

    def _first_use(self, out: list[Update], strategy: str, workload: str, workers: int) -> None:
        """Create the series of a pair (and of its strategy) at zero, once, before their first increment."""
        pair = (strategy, workload)
        if pair in self._pairs:
            return
        with self._lock:
            if pair in self._pairs:
                return
            self._pairs.add(pair)
            new_strategy = strategy not in self._strategies
            self._strategies.add(strategy)
        if new_strategy and strategy not in UNPOOLED:
            out.append((POOL_STARTS, (strategy, "success"), ADD, 0.0, 1, None))
            out.append((POOL_STARTS, (strategy, "failure"), ADD, 0.0, 1, None))
        if new_strategy and strategy != "serial":
            out.append((POOL_REUSES, (strategy,), ADD, 0.0, 1, None))
        out.append((MAP_CALLS, (strategy, _mode(strategy, workers), workload), ADD, 0.0, 1, None))
        for name in PAIR_COUNTERS:
            out.append((name, pair, ADD, 0.0, 1, None))
        for name in PAIR_HISTOGRAMS:
            out.append((name, pair, TOUCH, 0.0, 0, None))
        if strategy != "serial":
            out.append((QUEUE_WAIT, pair, TOUCH, 0.0, 0, None))
            for name in POOL_PAIR_COUNTERS:
                out.append((name, pair, ADD, 0.0, 1, None))

    def declare(self, workloads: Iterable[str], strategies: Iterable[str] = ()) -> list[Update]:
        """Reserve workload names under the cap and, per strategy named, create the pair's series now."""
        out: list[Update] = []
        names = [self.workload(w) for w in workloads]
        for strategy in strategies:
            label = strategy_label(strategy)
            for name in names:
                self._first_use(out, label, name, 1 if label == "serial" else 2)
        return out

    # -- the hooks -------------------------------------------------------------------

    def planned(self, call: CallInfo) -> list[Update]:
        strategy = strategy_label(call.selected_strategy)
        workload = self.workload(call.workload)
        out: list[Update] = []
        self._first_use(out, strategy, workload, call.workers)
        out.append((IN_FLIGHT, (strategy,), ADD, float(call.n_items), 1, None))
        call.state[self._key] = _Call(strategy, workload, strategy, call.n_items, call.started_ns)
        return out

    def chunk(self, call: CallInfo, chunk: ChunkStats) -> list[Update]:
        st: _Call | None = call.state.get(self._key)
        if st is None:  # not planned by this mapping (attached mid-call): its end is counted, not its parts
            return []
        out: list[Update] = []
        self._follow(out, st, strategy_label(call.selected_strategy), call.workers)
        pair = (st.strategy, st.workload)
        if call.read is not None:  # a stream: its items count in as they are read (it read 0 while it ran)
            grew = call.read() - st.read
            if grew > 0:
                st.read += grew
                st.left += grew
                out.append((IN_FLIGHT, (st.planned,), ADD, float(grew), 1, None))
        done = min(st.left, chunk.n_items)
        if done:
            st.left -= done
            out.append((IN_FLIGHT, (st.planned,), ADD, float(-done), 1, None))
        out.append((TASKS, pair, ADD, float(chunk.n_items + chunk.n_errors), 1, None))  # one that raised ran too
        out.append((BUSY, pair, ADD, chunk.busy_seconds, 1, None))
        out.append((TASK_CPU, pair, ADD, chunk.cpu_seconds, 1, None))
        if chunk.n_errors:
            out.append((TASK_ERRORS, pair, ADD, float(chunk.n_errors), 1, None))
        if chunk.where == "pool":
            out.append((QUEUE_WAIT, pair, OBSERVE, chunk.queue_wait_seconds, 1, None))
        if chunk.block_sizes:
            out.append((TASK_DURATION, pair, OBSERVE_BLOCKS, Blocks(chunk.durations_ns, chunk.block_sizes), 1, None))
        if chunk.bytes_sent or chunk.bytes_received:
            out.append((PAYLOAD, (st.strategy, "sent"), ADD, float(chunk.bytes_sent), 1, None))
            out.append((PAYLOAD, (st.strategy, "received"), ADD, float(chunk.bytes_received), 1, None))
        self._advance(out, st, call.workers, chunk.end_ns)
        return out

    def finished(self, call: CallInfo, record: MapRecord) -> list[Update]:
        out: list[Update] = []
        strategy = strategy_label(record.selected_strategy)
        st: _Call | None = call.state.pop(self._key, None)
        if st is None:  # the call never reached planning (or a library recorded work it did itself)
            workload = self.workload(record.workload)
            self._first_use(out, strategy, workload, record.workers)
            st = _Call(strategy, workload, strategy, 0, call.started_ns)
        else:
            self._follow(out, st, strategy, record.workers)
        if st.left:
            out.append((IN_FLIGHT, (st.planned,), ADD, float(-st.left), 1, None))
            st.left = 0
        self._advance(out, st, record.workers, call.started_ns + int(record.wall_seconds * 1e9))
        pair = (strategy, st.workload)
        self._shared(out, pair, record)
        out.append((MAP_CALLS, (strategy, record.mode, st.workload), ADD, 1.0, 1, None))
        if record.fallback_reason is not None:
            # A call that reran lost chunks in fresh workers stayed where it ran: a recovery, not a fallback.
            fallbacks = RECOVERIES if record.fallback_reason.recovered else FALLBACKS
            out.append((fallbacks, (record.fallback_reason.value, st.workload), ADD, 1.0, 1, None))
        # The decision names the strategy the call asked for; under auto, the one the plan chose.
        requested = record.requested_strategy
        pooled = strategy_label(call.pool) if call.pool else st.planned  # a serial call's moves, a failed start
        decided = requested if requested in STRATEGIES else pooled
        out.append((DECISIONS, (decided, record.decision_reason.value), ADD, 1.0, 1, None))
        out.append((WALL, pair, ADD, record.wall_seconds, 1, None))
        out.append((SERIAL_ESTIMATE, pair, ADD, record.serial_estimate_seconds, 1, None))
        out.append((MAP_DURATION, pair, OBSERVE, record.wall_seconds, 1, call.state.get("trace_id")))
        if record.completed and record.n_items:  # one that timed out, was cancelled, failed or had no items: no verdict
            out.append((SPEEDUP, pair, OBSERVE, record.speedup, 1, None))
        for phase, seconds in record.overhead_seconds.items():
            if seconds:  # a start, failed ones too, is the pool's, as its count is
                out.append((OVERHEAD, (pooled if phase == "pool_start" else strategy, phase), ADD, seconds, 1, None))
        # Pool starts and reuses belong to the pool the call asked for, also when it failed to start.
        starts = max(record.pool_starts, int(record.pool_started))  # a restart after a crash starts another
        failed = int(record.pool_start_failed)
        if starts > failed:
            out.append((POOL_STARTS, (pooled, "success"), ADD, float(starts - failed), 1, None))
        if failed:
            out.append((POOL_STARTS, (pooled, "failure"), ADD, 1.0, 1, None))
        if record.pool_reused:
            out.append((POOL_REUSES, (pooled,), ADD, 1.0, 1, None))
        return out

    # -- helpers -------------------------------------------------------------------------

    def _follow(self, out: list[Update], st: _Call, strategy: str, workers: int) -> None:
        """A fallback after planning, or an outgrown serial estimate, moved the call: later parts count where
        its items now run."""
        if strategy != st.strategy:
            self._first_use(out, strategy, st.workload, workers)
            st.strategy = strategy

    @staticmethod
    def _shared(out: list[Update], pair: Labels, record: MapRecord) -> None:
        """What of the call's workers was other calls' (``MapRecord.shared_seconds``): capacity it had counted
        but did not have.

        At most its workers x wall, the capacity counted for it, so capacity - shared never goes below
        zero; nothing for a call that ended serial (no pool, no such series).
        """
        if record.shared_seconds > 0 and pair[0] != "serial":
            held = min(record.shared_seconds, record.workers * record.wall_seconds)
            out.append((SHARED, pair, ADD, held, 1, None))

    @staticmethod
    def _advance(out: list[Update], st: _Call, workers: int, now_ns: int) -> None:
        """Capacity (workers x wall) grows as the call goes on, so utilization is right while it runs."""
        if now_ns <= st.mark_ns:
            return
        elapsed = (now_ns - st.mark_ns) / 1e9
        st.mark_ns = now_ns
        out.append((CAPACITY, (st.strategy, st.workload), ADD, workers * elapsed, 1, None))


class UpdatesObserver(Observer):
    """An exporter: its hooks go through its own :class:`MetricUpdates`; subclasses implement :meth:`apply`."""

    def __init__(self, workload_cap: int = WORKLOAD_CAP) -> None:
        self.updates = MetricUpdates(workload_cap)

    def apply(self, updates: Sequence[Update]) -> None:
        raise NotImplementedError

    def declare(self, *workloads: str, strategies: Iterable[str] = ()) -> None:
        """Keep these workload names under the cap and create their series with ``strategies`` now.

        Without strategies only the names are reserved: series appear with a
        workload's first call on a strategy, all of that pair's at once. A name
        that is not a strategy label is refused: it would create ``custom`` series.
        """
        self.apply(self.updates.declare(workloads, _strategy_labels(strategies)))

    def map_planned(self, call: CallInfo) -> None:
        self.apply(self.updates.planned(call))

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        self.apply(self.updates.chunk(call, chunk))

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        self.apply(self.updates.finished(call, record))


def _strategy_labels(strategies: Iterable[str]) -> list[str]:
    if isinstance(strategies, str):
        raise TypeError(f"declare(strategies=...) takes a list of strategy names, e.g. strategies=[{strategies!r}], "
                        f"not the string {strategies!r}")
    names = list(strategies)
    wrong = [s for s in names if s not in STRATEGIES]
    if wrong:
        raise ValueError(f"declare(strategies=...): {', '.join(map(repr, wrong))} "
                         f"{'is not a strategy' if len(wrong) == 1 else 'are not strategies'}; "
                         f"accepted: {', '.join(STRATEGIES)}")
    return names
