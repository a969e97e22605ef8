"""Prometheus metrics derived from MapRecords, in payoff's own registry.

``METRICS`` is the one definition of every metric: the observer builds its
instruments from it and ``docs/metrics.md`` is generated from it, so the
reference cannot drift from the code. Counters that measure work (tasks,
busy, capacity, CPU, bytes) advance as chunks finish, so ``rate()`` stays
honest during a long map instead of jumping when it ends.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from payoff.observers import CallInfo, Observer
from payoff.reasons import Reason
from payoff.record import ChunkStats, MapRecord

STRATEGIES = ("serial", "threads", "processes", "joblib", "custom", "dask")
MODES = ("parallel", "serial")
PHASES = ("planning", "pool_start", "serialization", "dispatch")
DIRECTIONS = ("sent", "received")
OUTCOMES = ("success", "failure")
WORKLOAD_CAP = 50
OTHER = "other"

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0)
TASK_BUCKETS = (1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 5.0, 10.0)
WAIT_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SPEEDUP_BUCKETS = (0.25, 0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    question: str
    buckets: tuple[float, ...] = field(default=())


METRICS: tuple[MetricDef, ...] = (
    MetricDef("payoff_map_calls_total", "counter", ("strategy", "mode", "workload"),
              "Map calls by the strategy that ran them and whether they ran in parallel.",
              "How many calls, and how many really ran in parallel?"),
    MetricDef("payoff_fallbacks_total", "counter", ("reason", "workload"),
              "Calls that were allowed to run in parallel but ran serially, by reason code.",
              "Why did parallel runs become serial?"),
    MetricDef("payoff_tasks_total", "counter", ("strategy", "workload"),
              "Items processed; advances as chunks finish.", "How much work went through?"),
    MetricDef("payoff_task_errors_total", "counter", ("strategy", "workload"),
              "Items whose function raised.", "Are tasks failing?"),
    MetricDef("payoff_map_duration_seconds", "histogram", ("strategy", "workload"),
              "Wall time of a map call; exemplars carry the trace id of the call's span.",
              "How long do calls take, and which trace shows a slow one?", DURATION_BUCKETS),
    MetricDef("payoff_task_duration_seconds", "histogram", ("strategy", "workload"),
              "Time per item, measured in the worker (items cheaper than ~250 us are timed in blocks "
              "and counted at the block's mean).", "How expensive is one item?", TASK_BUCKETS),
    MetricDef("payoff_queue_wait_seconds", "histogram", ("strategy", "workload"),
              "Wait from submitting a chunk to a worker starting it.",
              "Are workers starved or is work queuing?", WAIT_BUCKETS),
    MetricDef("payoff_wall_seconds_total", "counter", ("strategy", "workload"),
              "Sum of map wall times.", "Denominator of the speedup ratio."),
    MetricDef("payoff_busy_seconds_total", "counter", ("strategy", "workload"),
              "Time workers spent inside chunks; advances as chunks finish.",
              "Numerator of utilization (busy / capacity)."),
    MetricDef("payoff_capacity_seconds_total", "counter", ("strategy", "workload"),
              "Workers x wall time; advances as chunks finish.", "Denominator of utilization."),
    MetricDef("payoff_serial_estimate_seconds_total", "counter", ("strategy", "workload"),
              "Estimated serial time of the same work (busy time, contention removed with CPU time).",
              "Numerator of speedup (serial estimate / wall)."),
    MetricDef("payoff_speedup", "histogram", ("strategy", "workload"),
              "Estimated speedup of each call against serial; buckets are placed around 1.",
              "Did parallel pay off, call by call?", SPEEDUP_BUCKETS),
    MetricDef("payoff_task_cpu_seconds_total", "counter", ("strategy", "workload"),
              "CPU time of the threads running items; cpu / busy well below 1 under threads means "
              "GIL contention or waiting.", "Is the GIL in the way?"),
    MetricDef("payoff_overhead_seconds_total", "counter", ("strategy", "phase"),
              "Time spent outside user code: planning, pool start, (de)serialization, dispatch.",
              "Where does the parallel overhead go?"),
    MetricDef("payoff_payload_bytes_total", "counter", ("strategy", "direction"),
              "Pickled bytes crossing process boundaries.", "Is data movement eating the gain?"),
    MetricDef("payoff_pool_starts_total", "counter", ("strategy", "outcome"),
              "Pool starts and start failures.", "Are pools reused, or started again and again?"),
    MetricDef("payoff_pool_reuses_total", "counter", ("strategy",),
              "Calls served by an already running pool.", "Is the warm pool doing its job?"),
    MetricDef("payoff_decisions_total", "counter", ("strategy", "reason"),
              "What the planner chose and why (decision reason codes).", "What did auto decide, and why?"),
    MetricDef("payoff_in_flight_tasks", "gauge", ("strategy",),
              "Items of running calls not finished yet.", "Is anything running right now?"),
)

METRIC_BY_NAME = {m.name: m for m in METRICS}


class _WeightedHistogram(Collector):
    """A histogram fed with (value, count) pairs: one update per timing block, not per item."""

    def __init__(self, definition: MetricDef) -> None:
        self.definition = definition
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe_many(self, labels: tuple[str, ...], pairs: Iterable[tuple[float, int]]) -> None:
        bounds = self.definition.buckets
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(bounds) + 3))
            for value, count in pairs:
                series[bisect.bisect_left(bounds, value)] += count
                series[-2] += value * count
                series[-1] += count

    def touch(self, labels: tuple[str, ...]) -> None:
        if labels in self._series:
            return
        with self._lock:
            self._series.setdefault(labels, [0.0] * (len(self.definition.buckets) + 3))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        d = self.definition
        family = HistogramMetricFamily(d.name, d.help, labels=list(d.labels))
        with self._lock:
            items = [(k, list(v)) for k, v in self._series.items()]
        for labels, series in items:
            cumulative, running = [], 0.0
            for bound, count in zip((*d.buckets, float("inf")), series, strict=False):
                running += count
                cumulative.append((_le(bound), running))
            family.add_metric(list(labels), cumulative, sum_value=series[-2])
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class PrometheusMetrics(Observer):
    """Turns calls into the contract's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._workloads: set[str] = set()
        self._m: dict[str, Any] = {}
        for d in METRICS:
            self._m[d.name] = self._make(d)
        self._task_time = self._m["payoff_task_duration_seconds"]
        self._children: dict[tuple[str, ...], Any] = {}
        self._init_fixed_labels()

    def _c(self, name: str, *labels: str) -> Any:
        """A labelled child, cached: ``labels()`` takes a lock and validates on every call."""
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._m[name].labels(*labels)
        return child

    def _make(self, d: MetricDef) -> Any:
        if d.name == "payoff_task_duration_seconds":
            collector = _WeightedHistogram(d)
            self.registry.register(collector)
            return collector
        if d.kind == "counter":
            return Counter(d.name.removesuffix("_total"), d.help, d.labels, registry=self.registry)
        if d.kind == "gauge":
            return Gauge(d.name, d.help, d.labels, registry=self.registry, multiprocess_mode="livesum")
        return Histogram(d.name, d.help, d.labels, registry=self.registry, buckets=d.buckets)

    def _init_fixed_labels(self) -> None:
        """Pre-create label sets so ``rate()`` works from the first scrape."""
        for s in STRATEGIES:
            self._m["payoff_pool_reuses_total"].labels(s)
            self._m["payoff_in_flight_tasks"].labels(s)
            for phase in PHASES:
                self._m["payoff_overhead_seconds_total"].labels(s, phase)
            for direction in DIRECTIONS:
                self._m["payoff_payload_bytes_total"].labels(s, direction)
            for outcome in OUTCOMES:
                self._m["payoff_pool_starts_total"].labels(s, outcome)
        for reason in Reason:
            if not reason.is_fallback:
                for s in STRATEGIES:
                    self._m["payoff_decisions_total"].labels(s, reason.value)
        self._workload("default")

    def declare(self, *workloads: str) -> None:
        """Create a workload's series at zero now, so its very first call is not lost to ``rate()``."""
        for name in workloads:
            self._workload(name)

    def _workload(self, name: str) -> str:
        """The capped label value, pre-creating its counter series the first time it is seen."""
        with self._lock:
            if name in self._workloads:
                return name
            if len(self._workloads) >= WORKLOAD_CAP:
                name = OTHER
                if name in self._workloads:
                    return name
            self._workloads.add(name)
        for reason in Reason:
            if reason.is_fallback:
                self._m["payoff_fallbacks_total"].labels(reason.value, name)
        for s in STRATEGIES:
            for mode in MODES:
                self._m["payoff_map_calls_total"].labels(s, mode, name)
            for d in METRICS:
                if d.labels == ("strategy", "workload") and d.kind == "counter":
                    self._m[d.name].labels(s, name)
        return name

    def _touch_histograms(self, strategy: str, workload: str) -> None:
        """Histogram series appear when a call is planned, before its first observation."""
        if ("touched", strategy, workload) in self._children:
            return
        self._children[("touched", strategy, workload)] = True
        for d in METRICS:
            if d.kind == "histogram":
                if d.name == "payoff_task_duration_seconds":
                    self._task_time.touch((strategy, workload))
                else:
                    self._m[d.name].labels(strategy, workload)

    def _series(self, strategy: str, workload: str) -> _Series:
        """The children one call updates, looked up once per (strategy, workload), not once per update."""
        key = ("series", strategy, workload)
        series = self._children.get(key)
        if series is None:
            self._touch_histograms(strategy, workload)
            children = (self._c(name, strategy, workload) for name in _SERIES_METRICS)
            series = self._children[key] = _Series(strategy, workload, *children)
        return series

    def _follow(self, st: _CallState, strategy: str) -> _Series:
        """The call's series, moved to ``strategy`` when a fallback after planning changed where it runs."""
        if st.series.strategy != strategy:
            st.series = self._series(strategy, st.series.workload)
        return st.series

    # -- hooks ---------------------------------------------------------------

    def map_planned(self, call: CallInfo) -> None:
        strategy = _strategy(call.selected_strategy)
        gauge = self._c("payoff_in_flight_tasks", strategy)
        gauge.inc(call.n_items)
        call.state["metrics"] = _CallState(self._series(strategy, self._workload(call.workload)), gauge,
                                           call.n_items, call.started_ns)

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        st: _CallState | None = call.state.get("metrics")
        if st is None:
            return
        series = self._follow(st, _strategy(call.selected_strategy))
        done = min(st.left, chunk.n_items)  # a stream's length is unknown: it was never counted in
        st.gauge.dec(done)
        st.left -= done
        series.tasks.inc(chunk.n_items)
        series.busy.inc(chunk.busy_seconds)
        series.cpu.inc(chunk.cpu_seconds)
        if chunk.n_errors:
            series.errors.inc(chunk.n_errors)
        if chunk.where == "pool":
            series.queue_wait.observe(chunk.queue_wait_seconds)
        self._task_time.observe_many((series.strategy, series.workload), chunk.item_times())
        if chunk.bytes_sent or chunk.bytes_received:
            self._c("payoff_payload_bytes_total", series.strategy, "sent").inc(chunk.bytes_sent)
            self._c("payoff_payload_bytes_total", series.strategy, "received").inc(chunk.bytes_received)
        st.advance_capacity(call.workers, time.monotonic_ns())

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        st: _CallState | None = call.state.get("metrics")
        strategy = _strategy(record.selected_strategy)
        if st is None:  # the call never reached planning
            st = _CallState(self._series(strategy, self._workload(record.workload)),
                            self._c("payoff_in_flight_tasks", strategy), 0, call.started_ns)
        series = self._follow(st, strategy)
        workload = series.workload
        if st.left:
            st.gauge.dec(st.left)
        st.advance_capacity(record.workers, call.started_ns + int(record.wall_seconds * 1e9))
        self._c("payoff_map_calls_total", strategy, record.mode, workload).inc()
        if record.fallback_reason is not None:
            self._c("payoff_fallbacks_total", record.fallback_reason.value, workload).inc()
        self._c("payoff_decisions_total", _strategy(record.requested_strategy if record.fallback_reason
                                                     else record.selected_strategy),
                                           record.decision_reason.value).inc()
        series.wall.inc(record.wall_seconds)
        series.serial_estimate.inc(record.serial_estimate_seconds)
        trace_id = call.state.get("trace_id")
        series.duration.observe(record.wall_seconds, {"trace_id": trace_id} if trace_id else None)
        series.speedup.observe(record.speedup)
        for phase, seconds in record.overhead_seconds.items():
            if seconds:
                self._c("payoff_overhead_seconds_total", strategy, phase).inc(seconds)
        if record.pool_started:
            outcome = "failure" if record.pool_start_failed else "success"
            self._c("payoff_pool_starts_total", _strategy(record.requested_strategy if record.pool_start_failed
                                                           else record.selected_strategy), outcome).inc()
        if record.pool_reused:
            self._c("payoff_pool_reuses_total", strategy).inc()


_SERIES_METRICS = ("payoff_tasks_total", "payoff_busy_seconds_total", "payoff_task_cpu_seconds_total",
                   "payoff_task_errors_total", "payoff_capacity_seconds_total", "payoff_wall_seconds_total",
                   "payoff_serial_estimate_seconds_total", "payoff_queue_wait_seconds",
                   "payoff_map_duration_seconds", "payoff_speedup")


@dataclass
class _Series:
    """The (strategy, workload) children of one call, in ``_SERIES_METRICS`` order."""

    strategy: str
    workload: str
    tasks: Any
    busy: Any
    cpu: Any
    errors: Any
    capacity: Any
    wall: Any
    serial_estimate: Any
    queue_wait: Any
    duration: Any
    speedup: Any


@dataclass
class _CallState:
    """One call's metric bookkeeping: its series, its in-flight gauge and how far capacity has advanced."""

    series: _Series
    gauge: Any
    left: int
    mark_ns: int

    def advance_capacity(self, workers: int, now_ns: int) -> None:
        """Capacity grows with wall time as chunks finish, so utilization is right while a call runs."""
        elapsed = max(0, now_ns - self.mark_ns) / 1e9
        self.mark_ns = max(self.mark_ns, now_ns)
        self.series.capacity.inc(workers * elapsed)


def _strategy(name: str) -> str:
    return name if name in STRATEGIES else "custom"


def metrics_reference_markdown() -> str:
    """docs/metrics.md, generated from ``METRICS`` (a test fails when the file drifts)."""
    lines = [
        "# Metrics reference",
        "",
        "<!-- Generated from payoff.telemetry.metrics.METRICS by `payoff metrics-doc`; do not edit. -->",
        "",
        "Every metric is derived from the `MapRecord` of a call, so metrics, spans, warnings and reports",
        "agree. Labels are bounded: `strategy` is one of " + ", ".join(f"`{s}`" for s in STRATEGIES)
        + f"; `workload` is the name given to `map(..., workload=...)`, capped at {WORKLOAD_CAP} distinct "
        f"values (then `{OTHER}`); `reason` is a reason code (below).",
        "",
        "| metric | type | labels | what it answers | help |",
        "|---|---|---|---|---|",
    ]
    for d in METRICS:
        lines.append(f"| `{d.name}` | {d.kind} | {', '.join(d.labels)} | {d.question} | {d.help} |")
    lines += ["", "## Histogram buckets", ""]
    for d in METRICS:
        if d.buckets:
            lines.append(f"- `{d.name}`: " + ", ".join(f"{b:g}" for b in d.buckets))
    lines += ["", "## Reason codes", "", "| code | kind | meaning | what to do |", "|---|---|---|---|"]
    for r in Reason:
        lines.append(f"| `{r.value}` | {r.kind} | {r.meaning} | {r.advice or '-'} |")
    lines += ["", "## Derived ratios", "",
              "- speedup = `rate(payoff_serial_estimate_seconds_total)` / `rate(payoff_wall_seconds_total)`",
              "- utilization = `rate(payoff_busy_seconds_total)` / `rate(payoff_capacity_seconds_total)`",
              "- efficiency = `rate(payoff_serial_estimate_seconds_total)` / "
              "`rate(payoff_capacity_seconds_total)`",
              "- GIL contention (threads) = `rate(payoff_task_cpu_seconds_total)` / "
              "`rate(payoff_busy_seconds_total)`", ""]
    return "\n".join(lines)
