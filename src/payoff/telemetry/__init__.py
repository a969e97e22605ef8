"""Observers of calls: tracing, Prometheus metrics, the records file, warnings.

Nothing here is imported by the executor except through ``default_observers``.
Without an OpenTelemetry SDK the tracing observer costs next to nothing (the
API is a no-op), and Prometheus metrics live in payoff's own registry until
someone serves or registers it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from payoff import _forks
from payoff.observers import CallInfo, Observer, Observers
from payoff.progress import Progress
from payoff.telemetry.metrics import PrometheusMetrics
from payoff.telemetry.records import RecordsFile, records_path_from_env
from payoff.telemetry.server import MetricsServer, serve_from_env, serve_metrics
from payoff.telemetry.tracing import Tracing
from payoff.telemetry.warnings import FallbackWarnings, ParallelFallbackWarning

if TYPE_CHECKING:
    from payoff.record import ChunkStats, MapRecord
    from payoff.telemetry.otlp import OTLPSetup

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


class _Added(Observer):
    """The observers added with ``add_default_observer``, as they are when each call starts.

    Executors hold this one observer instead of a copy of the list: one made
    before ``configure()`` (the shared executor of ``payoff.map``, say) exports
    through the providers it set up from its next call on, and a call sees the
    same observers from its start to its end. Each is isolated as the
    executor's own are (one that raises is logged once and ignored).
    """

    _key = "payoff.added"

    def __init__(self, own: Sequence[Observer] = ()) -> None:
        self._own = list(own)
        """The executor's own observers: one added too (``configure()``'s OTel metrics of the provider the
        executor was given) is not called twice, which counted every call twice."""
        self._seen: list[Observer] = []
        self._fan = Observers([])

    def _of(self, call: CallInfo) -> Observers:
        fan: Observers | None = call.state.get(self._key)
        if fan is None:
            with _lock:
                if self._seen != _extra:
                    self._seen = list(_extra)
                    self._fan = Observers([o for o in _extra if not any(o is mine for mine in self._own)])
                fan = call.state[self._key] = self._fan
        return fan

    def map_started(self, call: CallInfo) -> None:
        self._of(call).started(call)

    def map_planned(self, call: CallInfo) -> None:
        self._of(call).planned(call)

    @contextlib.contextmanager
    def scope(self, call: CallInfo) -> Iterator[None]:
        with self._of(call).scope(call):
            yield

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        self._of(call).chunk(call, chunk)

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        self._of(call).finished(call, record, error)




class _FromEnvironment(Observer):
    """``PAYOFF_METRICS_PORT`` and ``PAYOFF_RECORDS`` as they are when each call starts, not when its executor
    was made: a notebook sets them in a cell after its first ``payoff.map``, whose shared executor then wrote
    no record and served nothing, without a word. Reading two variables costs a call ~1 us."""

    _key = "payoff.records"

    def __init__(self) -> None:
        self._files: dict[str, RecordsFile] = {}  # one per path: each remembers that it failed, to log it once

    def map_started(self, call: CallInfo) -> None:
        serve_from_env()
        path = records_path_from_env()
        if path:
            sink = self._files.get(path)
            if sink is None:
                with _lock:
                    sink = self._files.setdefault(path, RecordsFile(path))
            call.state[self._key] = sink

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        sink: RecordsFile | None = call.state.get(self._key)
        if sink is not None:
            sink.map_finished(call, record, error)


_FROM_ENVIRONMENT = _FromEnvironment()


def add_default_observer(observer: Observer) -> None:
    """Attach ``observer`` to every executor that uses the default observers, from its next call on."""
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
    tracing = _tracing if tracer_provider is None else Tracing(tracer_provider)  # type: ignore[arg-type]
    observers: list[Observer] = [tracing, metrics_observer(), _PROGRESS]
    if meter_provider is not None:
        observers.append(_otel_metrics_for(meter_provider))
    return [*observers, _FROM_ENVIRONMENT, _Added(observers), FALLBACK_WARNINGS]


_OTEL_BY_PROVIDER: weakref.WeakKeyDictionary[object, Observer] = weakref.WeakKeyDictionary()


def _otel_metrics_for(meter_provider: object) -> Observer:
    """One OTel metrics observer per meter provider, as Prometheus has one per process: the workload cap is
    that observer's, and an executor made per request with the same provider had a cap of its own each time
    (600 requests of their own workload names made 7,215 series on the provider, +18.5 MB per 1,000)."""
    from payoff.telemetry.otel_metrics import OTelMetrics

    with _lock:
        observer = _OTEL_BY_PROVIDER.get(meter_provider)
        if observer is None:
            observer = _OTEL_BY_PROVIDER[meter_provider] = OTelMetrics(meter_provider)  # type: ignore[arg-type]
        return observer


def configure(otlp_endpoint: str | None = None, service_name: str | None = None, *, traces: bool = True,
              metrics_too: bool = True, export_interval_seconds: float = 10.0, timeout_seconds: float | None = None,
              set_global: bool = True) -> OTLPSetup:
    """Set up OpenTelemetry SDK providers with OTLP export; see :func:`payoff.telemetry.otlp.configure`.

    Its parameters spelled out here, not passed on as ``*args, **kwargs``: ``help()`` and an IDE showed none.
    The SDK and exporter are imported only when called."""
    from payoff.telemetry.otlp import configure as _configure

    return _configure(otlp_endpoint, service_name, traces=traces, metrics_too=metrics_too,
                      export_interval_seconds=export_interval_seconds, timeout_seconds=timeout_seconds,
                      set_global=set_global)


__all__ = ["FALLBACK_WARNINGS", "MetricsServer", "ParallelFallbackWarning", "add_default_observer", "configure",
           "default_observers", "metrics_observer", "register_in_default_registry", "remove_default_observer",
           "serve_from_env", "serve_metrics"]
