"""The contract's quantities as OpenTelemetry metrics, for OTLP users.

Same names (without Prometheus' ``_total`` suffix, which OTel exporters add)
and the same second-based bucket boundaries: OTel's default buckets are
millisecond-shaped and would put every task in the first bucket.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from payoff._version import __version__
from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats, MapRecord
from payoff.telemetry.metrics import METRICS, MetricDef


class OTelMetrics(Observer):
    """Records calls through an OTel MeterProvider (the global one unless given)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter("payoff", __version__, meter_provider=meter_provider)
        self._i: dict[str, Any] = {d.name: _instrument(meter, d) for d in METRICS}

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        attrs = {"strategy": call.selected_strategy, "workload": call.workload}
        self._i["payoff_tasks_total"].add(chunk.n_items, attrs)
        self._i["payoff_busy_seconds_total"].add(chunk.busy_seconds, attrs)
        self._i["payoff_task_cpu_seconds_total"].add(chunk.cpu_seconds, attrs)
        if chunk.n_errors:
            self._i["payoff_task_errors_total"].add(chunk.n_errors, attrs)
        if chunk.where == "pool":
            self._i["payoff_queue_wait_seconds"].record(chunk.queue_wait_seconds, attrs)
        # OTel histograms have no weighted record: one observation per timing block (exact per item
        # for items above ~250 us, the block mean for cheaper ones), which keeps this observer cheap.
        for value, _count in chunk.item_times():
            self._i["payoff_task_duration_seconds"].record(value, attrs)

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        s = record.selected_strategy
        attrs = {"strategy": s, "workload": record.workload}
        i = self._i
        i["payoff_map_calls_total"].add(1, {**attrs, "mode": record.mode})
        if record.fallback_reason is not None:
            i["payoff_fallbacks_total"].add(1, {"reason": record.fallback_reason.value,
                                                "workload": record.workload})
        i["payoff_decisions_total"].add(1, {"strategy": s, "reason": record.decision_reason.value})
        i["payoff_wall_seconds_total"].add(record.wall_seconds, attrs)
        i["payoff_capacity_seconds_total"].add(record.capacity_seconds, attrs)
        i["payoff_serial_estimate_seconds_total"].add(record.serial_estimate_seconds, attrs)
        i["payoff_map_duration_seconds"].record(record.wall_seconds, attrs)
        i["payoff_speedup"].record(record.speedup, attrs)
        for phase, seconds in record.overhead_seconds.items():
            if seconds:
                i["payoff_overhead_seconds_total"].add(seconds, {"strategy": s, "phase": phase})
        if record.bytes_sent or record.bytes_received:
            i["payoff_payload_bytes_total"].add(record.bytes_sent, {"strategy": s, "direction": "sent"})
            i["payoff_payload_bytes_total"].add(record.bytes_received, {"strategy": s, "direction": "received"})
        if record.pool_started:
            outcome = "failure" if record.pool_start_failed else "success"
            i["payoff_pool_starts_total"].add(1, {"strategy": s, "outcome": outcome})
        if record.pool_reused:
            i["payoff_pool_reuses_total"].add(1, {"strategy": s})


def _instrument(meter: metrics.Meter, d: MetricDef) -> Any:
    name = d.name.removesuffix("_total")
    unit = "s" if "seconds" in d.name else ("By" if "bytes" in d.name else "1")
    if d.kind == "counter":
        return meter.create_counter(name, unit=unit, description=d.help)
    if d.kind == "gauge":
        return meter.create_up_down_counter(name, unit=unit, description=d.help)
    return meter.create_histogram(name, unit=unit, description=d.help,
                                  explicit_bucket_boundaries_advisory=list(d.buckets))
