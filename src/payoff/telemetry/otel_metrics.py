"""The contract's quantities as OpenTelemetry metrics, for OTLP users.

The updates come from :mod:`payoff.telemetry.updates`, the same code that feeds
the Prometheus exporter, so both hold the same series with the same values.
Names are the Prometheus ones without the ``_total`` suffix (OTel exporters
add it), and histograms get the same second-based bucket boundaries: OTel's
default buckets are millisecond-shaped and would put every task in the first
bucket.

Two things the OTel API cannot express: a weighted observation (an OTel
histogram takes one measurement at a time, so a timing block of several cheap
items is recorded once, at their mean, instead of once per item) and an empty
histogram (``TOUCH`` creates nothing; the series appears with its first
observation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from payoff._version import __version__
from payoff.telemetry.metrics import METRICS, MetricDef
from payoff.telemetry.updates import ADD, TOUCH, WORKLOAD_CAP, Blocks, Labels, Update, UpdatesObserver


class OTelMetrics(UpdatesObserver):
    """Records calls through an OTel MeterProvider (the global one unless given)."""

    def __init__(self, meter_provider: MeterProvider | None = None, workload_cap: int = WORKLOAD_CAP) -> None:
        super().__init__(workload_cap)
        meter = metrics.get_meter("payoff", __version__, meter_provider=meter_provider)
        self._i: dict[str, Any] = {d.name: _instrument(meter, d) for d in METRICS}
        self._names = {d.name: d.labels for d in METRICS}
        self._attrs: dict[tuple[str, Labels], dict[str, str]] = {}

    def apply(self, updates: Sequence[Update]) -> None:
        for metric, labels, kind, value, _weight, _exemplar in updates:
            if kind == TOUCH:
                continue  # OTel has no histogram without a measurement
            key = (metric, labels)
            attrs = self._attrs.get(key)
            if attrs is None:  # one dict per series, reused: the SDK only reads it
                attrs = self._attrs[key] = dict(zip(self._names[metric], labels, strict=True))
            if isinstance(value, Blocks):
                record = self._i[metric].record
                for seconds, _count in value.observations():
                    record(seconds, attrs)
            elif kind == ADD:
                self._i[metric].add(value, attrs)
            else:
                self._i[metric].record(value, attrs)


def _instrument(meter: metrics.Meter, d: MetricDef) -> Any:
    name = d.name.removesuffix("_total")
    unit = "s" if "seconds" in d.name else ("By" if "bytes" in d.name else "1")
    if d.kind == "counter":
        return meter.create_counter(name, unit=unit, description=d.help)
    if d.kind == "gauge":
        return meter.create_up_down_counter(name, unit=unit, description=d.help)
    return meter.create_histogram(name, unit=unit, description=d.help,
                                  explicit_bucket_boundaries_advisory=list(d.buckets))
