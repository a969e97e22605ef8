"""Prometheus metrics derived from MapRecords, in payoff's own registry.

``METRICS`` is the one definition of every metric: both exporters build their
instruments from it and ``docs/metrics.md`` is generated from it, so the
reference cannot drift from the code. What a call changes is decided in one
place, :mod:`payoff.telemetry.updates`, for this exporter and the OpenTelemetry
one alike. Counters that measure work (tasks, busy, capacity, CPU, bytes)
advance as chunks finish, so ``rate()`` stays honest during a long map instead
of jumping when it ends. The one exception is the shared time of calls that
shared their pool: it is known only when the call's record is built.
"""

from __future__ import annotations

import bisect
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from payoff import _forks
from payoff.reasons import Reason, recovered_reasons
from payoff.telemetry.updates import (
    ADD,
    OBSERVE,
    OTHER,
    PAIR_COUNTERS,
    PAIR_HISTOGRAMS,
    POOL_PAIR_COUNTERS,
    QUEUE_WAIT,
    STRATEGIES,
    UNPOOLED,
    WORKLOAD_CAP,
    Blocks,
    Labels,
    Update,
    UpdatesObserver,
)

MODES = ("parallel", "serial")
PHASES = ("planning", "pool_start", "serialization", "dispatch", "worker_warmup")
"""``payoff_overhead_seconds_total``'s phases: ``MapRecord.overhead_seconds``'s keys (``worker_warmup`` only
for calls whose workers imported something first: the series bounds left it out, metrics trial)."""
DIRECTIONS = ("sent", "received")
OUTCOMES = ("success", "failure")

# Every bucket is a series per (strategy, workload): decades, which answer the dashboard's questions (is an
# item microseconds or milliseconds, does a chunk wait over a second), keep a workload near 40 series. Exact
# per-call quantiles of task time and queue wait are on the call's span and in its record.
DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0)
TASK_BUCKETS = (1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0)
WAIT_BUCKETS = (1e-4, 1e-3, 0.01, 0.1, 1.0, 5.0)
SPEEDUP_BUCKETS = (0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    question: str
    buckets: tuple[float, ...] = field(default=())
    exemplars: bool = False
    """Observations carry the trace id of the call's span (OpenMetrics exemplars)."""


METRICS: tuple[MetricDef, ...] = (
    MetricDef("payoff_map_calls_total", "counter", ("strategy", "mode", "workload"),
              "Map calls by the strategy that ran them and whether they ran in parallel.",
              "How many calls, and how many really ran in parallel?"),
    MetricDef("payoff_fallbacks_total", "counter", ("reason", "workload"),
              "Calls that were allowed to run in parallel but ran serially, by reason code.",
              "Why did parallel runs become serial?"),
    MetricDef("payoff_recoveries_total", "counter", ("reason", "workload"),
              "Calls that lost chunks (a dead worker: map_failure_retry; a pool another call stopped: "
              "pool_stopped) and reran them in fresh workers, or ran again in the caller the items whose results "
              "could not travel back (unpicklable_result_rerun), staying where they ran, by reason code.",
              "Did calls survive crashed workers, stopped pools or results that could not travel?"),
    MetricDef("payoff_tasks_total", "counter", ("strategy", "workload"),
              "Items processed, those whose function raised included (so errors over this is their share); "
              "advances as chunks finish.", "How much work went through?"),
    MetricDef("payoff_task_errors_total", "counter", ("strategy", "workload"),
              "Items whose function raised.", "Are tasks failing?"),
    MetricDef("payoff_map_duration_seconds", "histogram", ("strategy", "workload"),
              "Wall time of a map call; exemplars carry the trace id of the call's span.",
              "How long do calls take, and which trace shows a slow one?", DURATION_BUCKETS, exemplars=True),
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
              "Numerator of utilization (busy / (capacity - shared))."),
    MetricDef("payoff_capacity_seconds_total", "counter", ("strategy", "workload"),
              "Workers x wall time of each call; advances as chunks finish. Calls sharing one pool each count "
              "all of it: payoff_shared_seconds_total is the part that was the other calls'.",
              "Denominator of efficiency; of utilization, less the shared time."),
    MetricDef("payoff_shared_seconds_total", "counter", ("strategy", "workload"),
              "Worker time of a call's workers that was other calls' (threads mapping at once on one "
              "executor): what their chunks held, and their share of the time the workers sat idle (1/n each of "
              "n calls holding the pool then); in its capacity, but not its own. Added when the call ends "
              "(MapRecord.shared_seconds); only pool strategies have it.",
              "Was the pool shared by concurrent calls? Subtracted from capacity for utilization."),
    MetricDef("payoff_serial_estimate_seconds_total", "counter", ("strategy", "workload"),
              "Estimated serial time of the same work (busy time, contention removed with CPU time, and the "
              "items' measured slowdown side by side on the pool, MapRecord.contention).",
              "Numerator of speedup (serial estimate / wall)."),
    MetricDef("payoff_speedup", "histogram", ("strategy", "workload"),
              "Estimated speedup against serial of each call that completed (one that timed out, was "
              "cancelled or failed is not observed); buckets are placed around 1.",
              "Did parallel pay off, call by call?", SPEEDUP_BUCKETS),
    MetricDef("payoff_task_cpu_seconds_total", "counter", ("strategy", "workload"),
              "CPU time of the threads running items; cpu / busy well below 1 under threads means "
              "GIL contention or waiting.", "Is the GIL in the way?"),
    MetricDef("payoff_overhead_seconds_total", "counter", ("strategy", "phase"),
              "Time spent outside user code: planning, pool start, (de)serialization, dispatch, and "
              "workers' one-time imports (worker_warmup).",
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


class _Store(Collector):
    """Every payoff series of one exporter, as plain numbers behind one lock, collected into families.

    Applying a batch of updates takes the lock once. Histograms take weighted
    observations (one per timing block, not per item). No ``_created`` samples
    are produced: see "Series and cardinality" in docs/metrics.md.
    """

    def __init__(self) -> None:
        self._lock = _forks.Lock()
        self._values: dict[str, dict[Labels, float]] = {d.name: {} for d in METRICS if d.kind != "histogram"}
        self._hists: dict[str, dict[Labels, list[float]]] = {d.name: {} for d in METRICS if d.kind == "histogram"}
        self._bounds: dict[str, tuple[float, ...]] = {d.name: d.buckets for d in METRICS if d.kind == "histogram"}
        self._exemplars: dict[tuple[str, Labels, int], Exemplar] = {}
        _STORES.add(self)

    def _forget_parent_counts(self) -> None:
        """In a child made by ``os.fork``: a process's counters start at zero. With the parent's kept, a child
        serving its own /metrics reported the parent's calls before the fork as its own, and summing the two
        targets counted them twice."""
        for values in self._values.values():
            values.clear()
        for hists in self._hists.values():
            hists.clear()
        self._exemplars.clear()

    def apply(self, updates: Sequence[Update]) -> None:
        values, bounds = self._values, self._bounds
        with self._lock:
            for metric, labels, kind, value, weight, exemplar in updates:
                if isinstance(value, Blocks):
                    self._observe_blocks(self._series(metric, labels), bounds[metric], value)
                    continue
                if kind == ADD:
                    series = values[metric]
                    series[labels] = series.get(labels, 0.0) + value
                    continue
                found = self._series(metric, labels)
                if kind == OBSERVE:
                    index = bisect.bisect_left(bounds[metric], value)  # le is inclusive
                    found[index] += weight
                    found[-2] += value * weight
                    found[-1] += weight
                    if exemplar is not None:
                        self._exemplars[(metric, labels, index)] = Exemplar({"trace_id": exemplar}, value, time.time())

    def _series(self, metric: str, labels: Labels) -> list[float]:
        """A histogram series: bucket counts (the last one is +Inf), then sum and count."""
        found = self._hists[metric].get(labels)
        if found is None:
            found = self._hists[metric][labels] = [0.0] * (len(self._bounds[metric]) + 3)
        return found

    @staticmethod
    def _observe_blocks(found: list[float], bounds: tuple[float, ...], blocks: Blocks) -> None:
        for seconds, count in blocks.observations():
            found[bisect.bisect_left(bounds, seconds)] += count
            found[-2] += seconds * count
            found[-1] += count

    def describe(self) -> Iterator[Metric]:
        for d in METRICS:
            yield _family(d)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = {name: dict(series) for name, series in self._values.items()}
            hists = {name: {k: list(v) for k, v in series.items()} for name, series in self._hists.items()}
            exemplars = dict(self._exemplars)
        for d in METRICS:
            family = _family(d)
            if d.kind == "histogram":
                for labels, series in hists[d.name].items():
                    buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
                    running = 0.0
                    for index, bound in enumerate((*d.buckets, float("inf"))):
                        running += series[index]
                        found = exemplars.get((d.name, labels, index))
                        buckets.append((_le(bound), running) if found is None else (_le(bound), running, found))
                    family.add_metric(list(labels), buckets, sum_value=series[-2])  # type: ignore[attr-defined]
            else:
                for labels, value in values[d.name].items():
                    family.add_metric(list(labels), value)  # type: ignore[attr-defined]
            yield family


_STORES: weakref.WeakSet[_Store] = weakref.WeakSet()


def _forget_parent_counts() -> None:
    for store in list(_STORES):
        store._forget_parent_counts()


_forks.in_child(_forget_parent_counts)


def _family(d: MetricDef) -> Metric:
    if d.kind == "counter":
        return CounterMetricFamily(d.name.removesuffix("_total"), d.help, labels=list(d.labels))
    if d.kind == "gauge":
        return GaugeMetricFamily(d.name, d.help, labels=list(d.labels))
    return HistogramMetricFamily(d.name, d.help, labels=list(d.labels))


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class PrometheusMetrics(UpdatesObserver):
    """The contract's Prometheus metrics, in ``registry`` (payoff's own unless given).

    The hooks and the mapping to updates are :class:`~payoff.telemetry.updates.UpdatesObserver`'s,
    shared with the OpenTelemetry exporter; this class only keeps the numbers and exposes them.
    """

    def __init__(self, registry: CollectorRegistry | None = None, workload_cap: int = WORKLOAD_CAP) -> None:
        super().__init__(workload_cap)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._store = _Store()
        self.registry.register(self._store)

    def apply(self, updates: Sequence[Update]) -> None:
        if updates:
            self._store.apply(updates)


def _histogram_series(name: str) -> int:
    """Series of one labelled histogram: its buckets, ``+Inf``, ``_sum`` and ``_count``."""
    return len(METRIC_BY_NAME[name].buckets) + 3


def pair_series_bound(strategy: str) -> int:
    """At most this many series per (strategy, workload) pair that ran a call (fallback counters aside)."""
    modes = 1 if strategy == "serial" else len(MODES)
    histograms = sum(_histogram_series(h) for h in PAIR_HISTOGRAMS)
    counters = len(PAIR_COUNTERS)
    if strategy != "serial":
        histograms += _histogram_series(QUEUE_WAIT)
        counters += len(POOL_PAIR_COUNTERS)
    return modes + counters + histograms


def strategy_series_bound(strategy: str) -> int:
    """At most this many series per strategy used, whatever the workloads."""
    pooled = strategy not in UNPOOLED
    decisions = sum(1 for r in Reason if not r.is_fallback)
    return (1 + (len(OUTCOMES) if pooled else 0) + (0 if strategy == "serial" else 1) + len(PHASES)
            + (0 if strategy == "serial" else len(DIRECTIONS)) + decisions)


def _exposition_bound() -> int:
    per_workload = sum(pair_series_bound(s) for s in STRATEGIES) + sum(1 for r in Reason if r.is_fallback)
    return (WORKLOAD_CAP + 1) * per_workload + sum(strategy_series_bound(s) for s in STRATEGIES)


def metrics_reference_markdown() -> str:
    """docs/metrics.md, generated from ``METRICS`` (a test fails when the file drifts)."""
    fallback_codes = sum(1 for r in Reason if r.is_fallback and not r.recovered)
    recovered_codes = len(recovered_reasons())
    serial, pooled = pair_series_bound("serial"), pair_series_bound("processes")
    histogram_cells = ", ".join(f"`{h}` {_histogram_series(h)}" for h in PAIR_HISTOGRAMS)
    lines = [
        "# Metrics reference",
        "",
        "<!-- Generated from payoff.telemetry.metrics.METRICS by `payoff metrics-doc`; do not edit. -->",
        "",
        "Every metric is derived from the `MapRecord` of a call, so metrics, spans, warnings and reports",
        "agree. Labels are bounded: `strategy` is one of " + ", ".join(f"`{s}`" for s in STRATEGIES)
        + f"; `workload` is the name given to `map(..., workload=...)`, capped at {WORKLOAD_CAP} distinct "
        f"values (then `{OTHER}`; records, spans and the records file keep every name); `reason` is a reason "
        "code (below).",
        "",
        "A call that moved after planning (a pool that failed to start, a serial run that outgrew its estimate)",
        "counts its tasks, busy, CPU and capacity where each part ran, and its call, wall time, serial estimate",
        "and speedup once, under the strategy it ended on; its decision counts under the strategy it named (under",
        "auto, the last pool it was to run on), and so do pool starts, failed ones too, their time (the",
        "`pool_start` overhead phase), and reuses. Per strategy,",
        "such a call's tasks differ from its record's, which names one strategy; the totals agree.",
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
    lines += [
        "",
        "Buckets are decades: every bucket is a series per strategy and workload, and the dashboard's",
        "questions (microseconds or milliseconds per item, a chunk waiting over a second, a call faster than",
        "serial) need no finer steps. Exact per-call quantiles of task time and queue wait are attributes of",
        "the call's `payoff.map` span and fields of its record.",
        "",
        "## Series and cardinality",
        "",
        "Series exist only for what happened. The first call of a workload on a strategy creates all series",
        "of that `(strategy, workload)` pair at once, at zero, before its first increment: from the next",
        "scrape on, `rate()` and `increase()` count every increment, including those of a long first call,",
        "whose busy and capacity counters advance as its chunks finish. A strategy a workload never ran on",
        "has no series for it. A program that knows what it will run can create a pair's series before its",
        "first call: `payoff.telemetry.metrics_observer().declare(\"nightly\", strategies=[\"processes\"])`.",
        "No `_created` series are exposed (they would double the count, and no panel or alert reads them).",
        "",
        "The counters labelled by what happened (a fallback or recovery reason, a decision, an overhead",
        "phase, a payload direction) appear with their first increment, not at zero: `rate()` and",
        "`increase()` cannot count that first step, so a workload's first recovery of a kind (one worker",
        "crash) shows in the counter's value, `payoff_recoveries_total`, and in that call's record and span,",
        "but not in a rate panel; every later one counts. Made at zero for every reason, they would add about",
        "30 series per workload and strategy (three workloads on one strategy: over 200 series, where 150",
        "is the bound kept). The pool start alert counts a first failure with `unless ... offset`.",
        "",
        "| per | series | at most |",
        "|---|---|---|",
        f"| workload and strategy `serial` | `payoff_map_calls_total` 1, {len(PAIR_COUNTERS)} counters, "
        f"{histogram_cells} | {serial} |",
        f"| workload and a pool strategy | `payoff_map_calls_total` {len(MODES)} (one per mode), "
        f"{len(PAIR_COUNTERS)} counters, {histogram_cells}, `{QUEUE_WAIT}` {_histogram_series(QUEUE_WAIT)}, "
        + ", ".join(f"`{c}` 1" for c in POOL_PAIR_COUNTERS) + f" | {pooled} |",
        f"| workload | `payoff_fallbacks_total`: one per fallback reason it hit | {fallback_codes} |",
        f"| workload | `payoff_recoveries_total`: one per recovery reason it hit | {recovered_codes} |",
        "| strategy used | in-flight gauge 1, pool starts (success, failure) and reuses, overhead per phase, "
        "payload bytes per direction, decisions per decision reason "
        f"| {strategy_series_bound('serial')} (`serial`) to {strategy_series_bound('processes')} |",
        "",
        f"So a workload has at most {pooled} series per pool strategy it ran on ({serial} on `serial`), plus",
        "one per fallback or recovery reason it hit: three workloads on one pool strategy have at most "
        f"{3 * pooled + strategy_series_bound('processes')} series",
        "(about 150 when their calls ran in one mode after one kind of decision). With the workload cap the",
        f"whole exposition has at most {_exposition_bound():,} series however many names callers use.",
        "",
        "## The OpenTelemetry exporter",
        "",
        "`OTelMetrics` (for a `meter_provider`) applies the same updates, computed by the same code",
        "(`payoff.telemetry.updates`), under the same names without Prometheus' `_total` suffix; after the",
        "same calls both hold the same values per metric and label set. Two differences come from the OTel",
        "API: a histogram takes one measurement at a time, so `payoff_task_duration_seconds` there counts",
        "timing blocks at their per-item mean (items of over ~250 us are timed one by one and agree",
        "exactly), and there is no empty histogram, so a histogram appears with its first observation.",
    ]
    recovered = ", ".join(f"`{r.value}`" for r in recovered_reasons())
    lines += ["", "## Reason codes", "",
              f"A record's `fallback_reason` holds a fallback code. {len(recovered_reasons())} of them,",
              f"{recovered}, name a failure the call survived where it ran: by rerunning the chunks it lost in",
              "fresh workers (or, for a pool stopped as the program ends, in the calling thread), or the items",
              "whose results could not come back from a worker in the caller: such a call",
              "did not fail and was not planned serial",
              "(`MapRecord.fell_back` is False), so it counts in `payoff_recoveries_total`, not in",
              "`payoff_fallbacks_total`, and the reports say it recovered; it still warns",
              "(`ParallelFallbackWarning`). On its `payoff.map` span the code is the attribute",
              "`payoff.recovery_reason` (and a `payoff.recovery` event), and `payoff.fallback_reason` is `none`.",
              "", "| code | kind | meaning | what to do |", "|---|---|---|---|"]
    for r in Reason:
        kind = "fallback, recovered" if r.recovered else r.kind
        lines.append(f"| `{r.value}` | {kind} | {r.meaning} | {r.advice or '-'} |")
    lines += ["", "## Derived ratios", "",
              "- speedup = `rate(payoff_serial_estimate_seconds_total)` / `rate(payoff_wall_seconds_total)`",
              "- utilization = `rate(payoff_busy_seconds_total)` / (`rate(payoff_capacity_seconds_total)` - "
              "`rate(payoff_shared_seconds_total)`): the worker time the calls had, less what was other calls' "
              "(their chunks, and their share of idle workers), as `MapRecord.utilization`; calls sharing a pool "
              "read its occupancy together",
              "- efficiency = `rate(payoff_serial_estimate_seconds_total)` / "
              "`rate(payoff_capacity_seconds_total)`: speedup per worker, as `MapRecord.efficiency` "
              "(speedup / workers); calls sharing a pool each read lower, as each one's speedup does",
              "- GIL contention (threads) = `rate(payoff_task_cpu_seconds_total)` / "
              "`rate(payoff_busy_seconds_total)`", ""]
    return "\n".join(lines)
