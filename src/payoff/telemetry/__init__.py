"""Observers of calls: tracing, Prometheus metrics, the records file, warnings.

Nothing here is imported by the executor except through ``default_observers``.
Without an OpenTelemetry SDK the tracing observer costs next to nothing (the
API is a no-op), and Prometheus metrics live in payoff's own registry until
someone serves or registers it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from payoff import _forks
from payoff.observers import Observer
from payoff.progress import Progress
from payoff.telemetry.metrics import PrometheusMetrics
from payoff.telemetry.records import records_observer_from_env
from payoff.telemetry.server import MetricsServer, serve_from_env, serve_metrics
from payoff.telemetry.tracing import Tracing
from payoff.telemetry.warnings import FallbackWarnings, ParallelFallbackWarning

_lock = _forks.Lock(reentrant=True)
_extra: list[Observer] = []
_metrics: PrometheusMetrics | None = None
_tracing = Tracing()
_PROGRESS = Progress()
FALLBACK_WARNINGS = FallbackWarnings()
"""The process-wide warnings observer: one memory of "already shown" call sites for all executors."""


def metrics_observer() -> PrometheusMetrics:
    """The process-wide Prometheus observer and its registry (``.registry``)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = PrometheusMetrics()
        return _metrics


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


_forwarded = False


def register_in_default_registry() -> None:
    """Also expose payoff's metrics through prometheus_client's global REGISTRY (idempotent)."""
    global _forwarded
    with _lock:
        if not _forwarded:
            REGISTRY.register(_Forward(metrics_observer().registry))
            _forwarded = True


def add_default_observer(observer: Observer) -> None:
    """Attach ``observer`` to every executor created from now on."""
    with _lock:
        if observer not in _extra:
            _extra.append(observer)


def remove_default_observer(observer: Observer) -> None:
    with _lock:
        if observer in _extra:
            _extra.remove(observer)


def default_observers(tracer_provider: object | None = None, meter_provider: object | None = None) -> list[Observer]:
    """Tracing first (its trace id feeds exemplars), warnings last (an "error" filter raises after telemetry).

    ``tracer_provider`` replaces the global OpenTelemetry one for this executor;
    ``meter_provider`` adds OTel metrics next to the Prometheus ones.
    """
    serve_from_env()
    tracing = _tracing if tracer_provider is None else Tracing(tracer_provider)  # type: ignore[arg-type]
    observers: list[Observer] = [tracing, metrics_observer(), _PROGRESS]
    if meter_provider is not None:
        from payoff.telemetry.otel_metrics import OTelMetrics

        observers.append(OTelMetrics(meter_provider))  # type: ignore[arg-type]
    records = records_observer_from_env()
    if records is not None:
        observers.append(records)
    with _lock:
        return [*observers, *_extra, FALLBACK_WARNINGS]


def configure(*args: object, **kwargs: object) -> object:
    """Set up OpenTelemetry SDK providers with OTLP export; see :func:`payoff.telemetry.otlp.configure`."""
    from payoff.telemetry.otlp import configure as _configure

    return _configure(*args, **kwargs)  # type: ignore[arg-type]


__all__ = ["FALLBACK_WARNINGS", "MetricsServer", "ParallelFallbackWarning", "add_default_observer", "configure",
           "default_observers", "metrics_observer", "register_in_default_registry", "remove_default_observer",
           "serve_metrics"]
