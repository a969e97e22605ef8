"""OTLP export for applications that have no OpenTelemetry SDK set up yet.

The standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, headers, timeouts) work as everywhere else; arguments
given here win over them. Export runs in background threads: an unreachable
collector costs log lines, never a slower or failed map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


@dataclass
class OTLPSetup:
    """The providers :func:`configure` made; ``shutdown()`` flushes and stops them."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def configure(
    otlp_endpoint: str | None = None,
    service_name: str | None = None,
    *,
    traces: bool = True,
    metrics_too: bool = True,
    export_interval_seconds: float = 10.0,
    timeout_seconds: float | None = None,
    set_global: bool = True,
) -> OTLPSetup:
    """Create SDK providers exporting OTLP/HTTP to ``otlp_endpoint`` (e.g. ``http://127.0.0.1:4318``)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "payoff"
    resource = Resource.create({"service.name": name})
    base = otlp_endpoint.rstrip("/") if otlp_endpoint else None
    tracer_provider = meter_provider = None
    if traces:
        tracer_provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, timeout=timeout_seconds)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        if set_global:
            trace.set_tracer_provider(tracer_provider)
    if metrics_too:
        metric_exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None,
                                             timeout=timeout_seconds)
        reader = PeriodicExportingMetricReader(metric_exporter,
                                               export_interval_millis=export_interval_seconds * 1000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        if set_global:
            metrics.set_meter_provider(meter_provider)
            from payoff.telemetry import add_default_observer
            from payoff.telemetry.otel_metrics import OTelMetrics

            add_default_observer(OTelMetrics(meter_provider))
    return OTLPSetup(tracer_provider, meter_provider)
