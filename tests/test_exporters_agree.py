"""The Prometheus and the OpenTelemetry exporters hold the same values after the same calls.

Both observers watch the same executors, fallbacks included (tiny_workload,
init_failure from a failing worker initializer, map_failure_retry from an item
that kills its worker once, a task that raises). The Prometheus side is scraped
over real HTTP from ``serve_metrics(0)``; the OTel side is read from the SDK with
an ``InMemoryMetricReader``. Every (metric, labels) series must have the same
value on both sides; histograms must have the same buckets, sum and count.

Items here take at least 0.4 ms, so the worker times each one alone: an OTel
histogram cannot take weighted observations, and only for items timed in
blocks does its ``payoff_task_duration_seconds`` differ (by design, see
docs/metrics.md); the last test pins that difference down exactly.
"""

from __future__ import annotations

import math
import os
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from payoff import MapRecord, ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason
from payoff.telemetry import serve_metrics
from payoff.telemetry.metrics import METRIC_BY_NAME, METRICS, WORKLOAD_CAP, PrometheusMetrics
from payoff.telemetry.otel_metrics import OTelMetrics
from payoff.telemetry.server import MetricsServer
from payoff.telemetry.updates import ADD, OBSERVE, OBSERVE_BLOCKS, TOUCH, MetricUpdates
from tests import tasks
from tests.test_metrics import map_concurrently

FORCE = {"tiny_workload_threshold": 0.0}
ITEM_SECONDS = 0.0004
Key = tuple[str, tuple[tuple[str, str], ...]]


def nap(x: int) -> int:
    """An item the worker times on its own (over the ~250 us timing block)."""
    time.sleep(ITEM_SECONDS)
    return x * x


def nap_then_fail_on_seven(x: int) -> int:
    time.sleep(ITEM_SECONDS)
    return tasks.fail_on_seven(x)


def nap_then_die_once(item: tuple[int, int, str]) -> int:
    time.sleep(ITEM_SECONDS)
    return tasks.die_once_in_worker(item)


@dataclass
class Hist:
    buckets: dict[float, float]  # upper bound -> cumulative count
    sum: float
    count: float


@dataclass
class Exported:
    scalars: dict[Key, float]
    histograms: dict[Key, Hist]


@dataclass
class Both:
    prometheus: PrometheusMetrics
    otel: OTelMetrics
    reader: InMemoryMetricReader
    server: MetricsServer

    def executor(self, config: ParallelConfig) -> ParallelExecutor:
        return ParallelExecutor(config, observers=[self.prometheus, self.otel])

    def scrape(self) -> Exported:
        with urllib.request.urlopen(self.server.url, timeout=10) as resp:
            return from_prometheus(resp.read().decode())

    def read_otel(self) -> Exported:
        return from_otel(self.reader)


@pytest.fixture
def both() -> Iterator[Both]:
    prometheus = PrometheusMetrics(CollectorRegistry())
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    server = serve_metrics(0, registry=prometheus.registry)
    try:
        yield Both(prometheus, OTelMetrics(provider), reader, server)
    finally:
        server.stop()
        provider.shutdown()


def _key(name: str, labels: dict[str, Any]) -> Key:
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


def from_prometheus(text: str) -> Exported:
    out = Exported({}, {})
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("payoff_"):
            continue
        if family.type in ("counter", "gauge"):
            for s in family.samples:
                out.scalars[_key(s.name, s.labels)] = s.value
            continue
        assert family.type == "histogram", family
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if k != "le"}
            hist = out.histograms.setdefault(_key(family.name, labels), Hist({}, math.nan, math.nan))
            if s.name.endswith("_bucket"):
                hist.buckets[float(s.labels["le"])] = s.value
            elif s.name.endswith("_sum"):
                hist.sum = s.value
            elif s.name.endswith("_count"):
                hist.count = s.value
    return out


def from_otel(reader: InMemoryMetricReader) -> Exported:
    out = Exported({}, {})
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                name = metric.name + "_total" if metric.name + "_total" in METRIC_BY_NAME else metric.name
                assert name in METRIC_BY_NAME, metric.name
                if isinstance(metric.data, Sum):
                    for point in metric.data.data_points:
                        out.scalars[_key(name, dict(point.attributes or {}))] = float(point.value)
                    continue
                assert isinstance(metric.data, Histogram), metric
                for hp in metric.data.data_points:
                    cumulative, running = {}, 0.0
                    for bound, count in zip((*hp.explicit_bounds, math.inf), hp.bucket_counts, strict=True):
                        running += count
                        cumulative[float(bound)] = running
                    out.histograms[_key(name, dict(hp.attributes or {}))] = Hist(cumulative, hp.sum, hp.count)
    return out


def assert_same(prom: Exported, otel: Exported, skip: frozenset[str] = frozenset()) -> None:
    p_scalars = {k: v for k, v in prom.scalars.items() if k[0] not in skip}
    o_scalars = {k: v for k, v in otel.scalars.items() if k[0] not in skip}
    assert sorted(p_scalars) == sorted(o_scalars), set(p_scalars) ^ set(o_scalars)
    for key, value in p_scalars.items():
        assert o_scalars[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    o_hists = {k: v for k, v in otel.histograms.items() if k[0] not in skip}
    p_hists = {k: v for k, v in prom.histograms.items() if k[0] not in skip}
    # OTel cannot create an empty histogram: a series Prometheus created at zero may be missing there.
    missing = {k for k in set(p_hists) - set(o_hists) if p_hists[k].count == 0}
    assert set(p_hists) - missing == set(o_hists), set(p_hists) ^ set(o_hists)
    for key, hist in o_hists.items():
        mine = p_hists[key]
        assert mine.buckets == hist.buckets, key
        assert mine.count == hist.count, key
        assert mine.sum == pytest.approx(hist.sum, rel=1e-9, abs=1e-12), key


def run_every_path(both: Both, tmp_path: Path) -> list[MapRecord]:
    """Plain parallel calls, auto, and each fallback path, on executors both exporters watch."""
    records: list[MapRecord] = []
    parent = os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        for strategy in ("threads", "processes"):
            with both.executor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
                ex.map(nap, range(40), workload="plain")
                ex.map(nap, range(40), workload="plain")  # a warm pool: a reuse
                records += ex.records
        with both.executor(ParallelConfig(max_workers=2)) as ex:  # auto
            ex.map(tasks.sleep_then_square, range(40), workload="auto")
            records += ex.records
        with both.executor(ParallelConfig(strategy="processes", tiny_workload_threshold=1.0)) as ex:
            ex.map(nap, range(3), workload="fallbacks")
            records += ex.records
        config = ParallelConfig(strategy="processes", max_workers=2,
                                worker_initializer=tasks.failing_initializer, worker_init_args=(os.getpid(),),
                                **FORCE)
        with both.executor(config) as ex:
            ex.map(nap, range(30), workload="fallbacks")
            records += ex.records
        items = [(i, parent, str(tmp_path / "died")) for i in range(24)]
        with both.executor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
            assert ex.map(nap_then_die_once, items, chunksize=4) == [i * 10 for i in range(24)]
            records += ex.records
        with both.executor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
            records += map_concurrently(ex, tmp_path, "shared")  # two calls on one pool: shared seconds
        with both.executor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex, \
                pytest.raises(KeyError):
            ex.map(nap_then_fail_on_seven, range(20), workload="errors", chunksize=2)
        records += ex.records
    return records


def test_both_exporters_hold_the_same_values_after_the_same_calls(both: Both, tmp_path: Path) -> None:
    records = run_every_path(both, tmp_path)
    reasons = {r.fallback_reason for r in records}
    assert {Reason.TINY_WORKLOAD, Reason.INIT_FAILURE, Reason.MAP_FAILURE_RETRY} <= reasons, reasons
    assert all(c.block_sizes == (1,) * len(c.block_sizes) for r in records for c in r.chunks), \
        "every item must be timed alone here (see the module docstring)"
    prom, otel = both.scrape(), both.read_otel()
    assert_same(prom, otel)

    # The two disagreements of the hand-written mappings, checked by name on both sides.
    for side in (prom, otel):
        s = side.scalars
        # after a fallback, the decision is the named strategy's and the failed start the planned pool's
        named = sum(1 for r in records if r.requested_strategy == "processes")
        assert s[_key("payoff_decisions_total", {"strategy": "processes", "reason": "explicit_strategy"})] == named
        assert s[_key("payoff_pool_starts_total", {"strategy": "processes", "outcome": "failure"})] == 1
        assert s[_key("payoff_map_calls_total", {"strategy": "serial", "mode": "serial", "workload": "fallbacks"})] == 2
        assert s[_key("payoff_fallbacks_total", {"reason": "init_failure", "workload": "fallbacks"})] == 1
        # a call that recovered from a dead worker stayed parallel: a recovery, not a fallback to serial
        assert s.get(_key("payoff_fallbacks_total", {"reason": "map_failure_retry", "workload": "default"}), 0) == 0
        assert s[_key("payoff_recoveries_total", {"reason": "map_failure_retry", "workload": "default"})] == 1
        parallel = {"strategy": "processes", "mode": "parallel", "workload": "default"}
        assert s[_key("payoff_map_calls_total", parallel)] == 1
        assert s[_key("payoff_task_errors_total", {"strategy": "threads", "workload": "errors"})] == 1
        # concurrent calls on one pool: the worker time the other call held, as the records have it
        shared = sum(r.shared_seconds for r in records if r.workload == "shared")
        assert shared > 0
        assert s[_key("payoff_shared_seconds_total", {"strategy": "threads", "workload": "shared"})] == \
            pytest.approx(shared)
        # the in-flight gauge went up and came down on both sides
        for strategy in ("threads", "processes"):
            assert s[_key("payoff_in_flight_tasks", {"strategy": strategy})] == 0
    items = sum(r.n_items for r in records if r.n_errors == 0)
    assert sum(v for k, v in prom.scalars.items() if k[0] == "payoff_tasks_total") >= items
    # the numbers are the records' numbers
    wall = sum(r.wall_seconds for r in records if r.workload == "plain")
    assert sum(v for k, v in otel.scalars.items()
               if k[0] == "payoff_wall_seconds_total" and ("workload", "plain") in k[1]) == pytest.approx(wall)


def test_items_timed_in_blocks_differ_only_in_the_otel_task_histogram_count(both: Both) -> None:
    """An OTel histogram takes one measurement per timing block; Prometheus weighs it by its items."""
    with both.executor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.square, range(20_000), workload="cheap")
        record = ex.last_record
    assert record is not None
    blocks = sum(len(c.block_sizes) for c in record.chunks)
    assert blocks < record.n_items, "cheap items are timed in blocks"
    prom, otel = both.scrape(), both.read_otel()
    assert_same(prom, otel, skip=frozenset({"payoff_task_duration_seconds"}))
    key = _key("payoff_task_duration_seconds", {"strategy": "threads", "workload": "cheap"})
    pairs = [p for c in record.chunks for p in c.item_times()]
    assert len(pairs) == blocks
    assert prom.histograms[key].count == record.n_items == sum(k for _, k in pairs)
    assert prom.histograms[key].sum == pytest.approx(sum(v * k for v, k in pairs))
    assert otel.histograms[key].count == blocks
    assert otel.histograms[key].sum == pytest.approx(sum(v for v, _ in pairs))


def test_every_update_names_a_contract_metric_with_its_labels(tmp_path: Path) -> None:
    """The mapping speaks METRICS' language: known names, the right number of labels, the right kinds."""
    seen: list[tuple[str, tuple[str, ...], int]] = []

    class Recorder(PrometheusMetrics):
        def apply(self, updates: Any) -> None:
            seen.extend((m, labels, kind) for m, labels, kind, *_ in updates)
            super().apply(updates)

    recorder = Recorder(CollectorRegistry())
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), observers=[recorder]) as ex:
        ex.map(nap, range(20))
    seen.extend((m, labels, kind) for m, labels, kind, *_ in MetricUpdates().declare(["w"], ["processes"]))
    assert {m for m, _, _ in seen} >= {d.name for d in METRICS} - {"payoff_fallbacks_total", "payoff_recoveries_total",
                                                                    "payoff_payload_bytes_total"}
    for metric, labels, kind in seen:
        d = METRIC_BY_NAME[metric]
        assert len(labels) == len(d.labels), (metric, labels)
        assert (kind == ADD) == (d.kind != "histogram"), (metric, kind)
        assert kind in (ADD, OBSERVE, OBSERVE_BLOCKS, TOUCH)


def test_executors_made_per_request_with_one_meter_provider_share_its_workload_cap() -> None:
    """The cap held per executor: a service making an executor per request, each with its own workload name,
    added series on the provider without bound (7,215 data points after 600 requests; service trial)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        for i in range(WORKLOAD_CAP + 20):
            with ParallelExecutor(ParallelConfig(strategy="serial"), meter_provider=provider) as ex:
                ex.map(abs, [i], workload=f"request-{i}")
        names = {labels.get("workload") for (metric, pairs) in from_otel(reader).scalars
                 if metric == "payoff_map_calls_total" for labels in [dict(pairs)]}
    finally:
        provider.shutdown()
    assert len(names) == WORKLOAD_CAP + 1 and "other" in names, len(names)


def test_an_executor_given_the_provider_configure_added_counts_each_call_once() -> None:
    """``configure()`` adds its provider's OTel metrics to every executor; one also given that provider (the
    docs' ``set_global=False`` advice invites it) called a second observer on it, and every call counted twice
    (review of the session's diff)."""
    from payoff import telemetry

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    added = telemetry._otel_metrics_for(provider)  # what configure(set_global=True) adds
    telemetry.add_default_observer(added)
    try:
        with ParallelExecutor(ParallelConfig(strategy="serial"), meter_provider=provider) as ex:
            ex.map(abs, range(4), workload="once")
        calls = {dict(pairs).get("workload"): value for (metric, pairs), value in from_otel(reader).scalars.items()
                 if metric == "payoff_map_calls_total"}
    finally:
        telemetry.remove_default_observer(added)
        provider.shutdown()
    assert calls.get("once") == 1, calls
