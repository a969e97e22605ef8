"""OTLP export for applications that have no OpenTelemetry SDK set up yet.

The standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, headers, timeouts) work as everywhere else; arguments
given here win over them, except ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
naming no OTLP exporter (``none``), which leave that signal out. The protocol is HTTP
with protobuf: a ``OTEL_EXPORTER_OTLP_PROTOCOL`` asking for another one is refused,
not ignored, as is an endpoint no export can reach.
Export runs in background threads: an unreachable collector costs log lines,
never a slower or failed map, and at most ``EXIT_FLUSH_SECONDS`` (3 s) at the
program's end, where the SDK's own exit hooks retried it for about 12 s.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from payoff._extras import extra_needed

log = logging.getLogger("payoff")
_lock = threading.Lock()
_global: tuple[tuple[object, ...], OTLPSetup] | None = None
"""The arguments and providers of the ``configure`` call that set the global providers."""


EXIT_FLUSH_SECONDS = 3.0
"""How long the program's end waits for the last export: the SDK's own exit hooks retry an unreachable
collector for about 12 s."""

SHUTDOWN_SECONDS = 5.0
"""How long ``OTLPSetup.shutdown()`` waits for the last export by default: the SDK's providers, one after the
other, took 13 s on a refused collector and 20 s on one that accepted and never answered, in a service's
graceful stop."""


@dataclass
class OTLPSetup:
    """The providers :func:`configure` made; ``shutdown()`` flushes and stops them (once)."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    endpoint: str = ""
    """Where the exporters send, for messages."""
    _stopped: bool = field(default=False, repr=False)
    """``shutdown()`` was called (or the program's end came): a later ``configure()`` would export nothing."""
    _flushing: bool = field(default=False, repr=False)
    _exit_wake: threading.Event = field(default_factory=threading.Event, repr=False)
    _exit_thread: threading.Thread | None = field(default=None, repr=False)

    def shutdown(self, timeout_seconds: float | None = SHUTDOWN_SECONDS) -> None:
        """Flush and stop the providers, waiting at most ``timeout_seconds`` (None: as long as the SDK's
        exporters retry); what a collector did not take by then is dropped, and a warning says so."""
        self._finish(timeout_seconds, "of shutdown()")

    def _at_exit(self) -> None:
        """The last export, given ``EXIT_FLUSH_SECONDS``; a collector that is down costs no more, and says so."""
        if not self._stopped:
            self._finish(EXIT_FLUSH_SECONDS, "of the program's end")

    def _finish(self, timeout_seconds: float | None, when: str) -> None:
        """The export runs on the exit thread started with the setup: Python 3.12 starts no thread once the
        program is ending (``RuntimeError: can't create new thread at interpreter shutdown``), also in an exit
        hook of the application's own that calls ``shutdown()``. A child made by ``os.fork`` has no such thread
        and starts one; where none can start, the providers stop here, unbounded, and nothing is dropped."""
        with _lock:
            self._stopped = True
        stopping = self._exit_thread
        self._exit_wake.set()
        if stopping is None or not stopping.is_alive():
            stopping = threading.Thread(target=self._stop_once, name="payoff-otlp-exit", daemon=True)
            try:
                stopping.start()
            except RuntimeError:
                self._stop_once()
                return
        stopping.join(timeout_seconds)
        if stopping.is_alive():
            log.warning("payoff: the last OTLP export did not reach %s within %g s %s; what was left is dropped",
                        self.endpoint, timeout_seconds, when)

    def _stop_once(self) -> None:
        """Flush and stop the providers, once, whichever thread comes first."""
        with _lock:
            first, self._flushing = not self._flushing, True
        if first:
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown()

    def _ready_for_exit(self) -> None:
        """Start now the thread that makes the last export (see ``_finish``)."""
        thread = threading.Thread(target=self._last_export, name="payoff-otlp-exit", daemon=True)
        thread.start()
        self._exit_thread = thread

    def _last_export(self) -> None:
        self._exit_wake.wait()
        self._stop_once()


def _parent_only(exporter: type[Any]) -> type[Any]:
    """``exporter``, silent in payoff's worker processes. The SDK starts its metric reader again in a forked
    child, under a new ``service.instance.id``: each worker of a ``processes`` pool exported the parent's counts
    as they were at the fork, every interval, as one more instance of the service (6 calls summed as 16:
    pre-fork trial 44). Workers record no metrics of their own; their parent exports what they did."""

    class ParentOnly(exporter):  # type: ignore[misc]
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            from payoff.worker import in_worker_process

            if in_worker_process():
                return MetricExportResult.SUCCESS
            return super().export(metrics_data, timeout_millis, **kwargs)

    return ParentOnly


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
    """Create SDK providers exporting OTLP/HTTP to ``otlp_endpoint`` (e.g. ``http://127.0.0.1:4318``).

    With ``set_global`` (the default) they become OpenTelemetry's global providers and every executor using
    the default observers exports through them from its next call on. OpenTelemetry sets those once per
    process: calling this again with the same arguments (a re-run notebook cell) returns the same setup;
    with others it raises ``RuntimeError`` instead of exporting twice or to the first endpoint only.
    """
    global _global
    _check_protocol(traces, metrics_too)
    traces = traces and exports_otlp("OTEL_TRACES_EXPORTER")
    metrics_too = metrics_too and exports_otlp("OTEL_METRICS_EXPORTER")
    _check_endpoints(otlp_endpoint, traces, metrics_too)
    endpoint = otlp_endpoint.rstrip("/") if otlp_endpoint else otlp_endpoint  # "http://h:4318/" is that one too
    given = (endpoint, service_name, traces, metrics_too, export_interval_seconds, timeout_seconds)
    if set_global:
        with _lock:
            if _global is None:
                _refuse_a_set_provider(traces, metrics_too)
                _global = given, _create(*given, set_global=True)
            elif _global[0] != given:
                raise RuntimeError(
                    f"payoff.telemetry.configure() already set this process's OpenTelemetry providers "
                    f"({_shown(_global[0])}); OpenTelemetry sets them once per process, so {_shown(given)} "
                    f"cannot apply. Restart the process (or kernel) to change them, or pass set_global=False "
                    f"and give the providers to ParallelExecutor(tracer_provider=..., meter_provider=...)")
            elif _global[1]._stopped:
                raise RuntimeError(
                    "payoff.telemetry.configure() set this process's OpenTelemetry providers and they were shut "
                    "down since, so nothing would be exported; OpenTelemetry sets them once per process. Restart "
                    "the process (or kernel), or pass set_global=False and give the new providers to "
                    "ParallelExecutor(tracer_provider=..., meter_provider=...)")
            return _global[1]
    return _create(*given, set_global=False)


def _refuse_a_set_provider(traces: bool, metrics_too: bool) -> None:
    """OpenTelemetry keeps the first global provider and only logs at a second: set over an application's own,
    payoff's metrics went to configure()'s endpoint and its spans to the application's provider, split without
    a word, and the returned ``tracer_provider`` never saw a span."""
    taken = []
    if traces and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        taken.append(f"TracerProvider ({type(trace.get_tracer_provider()).__name__})")
    if metrics_too and type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider":
        taken.append(f"MeterProvider ({type(metrics.get_meter_provider()).__name__})")
    if taken:
        raise RuntimeError(
            f"payoff.telemetry.configure() sets OpenTelemetry's global providers, but this process already has "
            f"a global {' and a global '.join(taken)}, set by the application or a library, and OpenTelemetry "
            f"keeps the first. payoff's spans already go to the global TracerProvider: add your OTLP exporter "
            f"to it. For payoff's OTel metrics pass meter_provider= to ParallelExecutor, or call "
            f"configure(..., set_global=False) and give its providers to ParallelExecutor(tracer_provider=..., "
            f"meter_provider=...)")


def _check_protocol(traces: bool, metrics_too: bool) -> None:
    """The exporters here speak OTLP/HTTP with protobuf: a variable asking for another protocol is refused."""
    names = ["OTEL_EXPORTER_OTLP_PROTOCOL"]
    names += ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] if traces else []
    names += ["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] if metrics_too else []
    for name in names:
        value = os.environ.get(name, "").strip()
        if value and value != "http/protobuf":
            raise ValueError(
                f"payoff.telemetry.configure() exports OTLP over HTTP with protobuf (http/protobuf), but "
                f"{name}={value!r} asks for another protocol. Unset it and point the endpoint at the "
                f"collector's HTTP port (4318), or set up OpenTelemetry's providers yourself with the exporter "
                f"you need: payoff's spans and metrics go through whatever providers are set")


SIGNAL_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")
_SIGNALS = {"traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "metrics": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"}


def _check_endpoints(otlp_endpoint: str | None, traces: bool, metrics_too: bool) -> None:
    """Every URL the exporters will send to, refused when it can never work: with no ``http://`` the SDK
    failed every export with "No connection adapters were found" (the cause unnamed), and a signal's own URL
    given as the base sent to ``/v1/traces/v1/traces`` (hunt 69). The argument, else each signal's own variable
    (used as it is), else the base variable for the signals that read it: one the exporters never read is
    left alone (review 73)."""
    if otlp_endpoint:
        _check_url("otlp_endpoint", otlp_endpoint, base=True)
        return
    reads_base = False
    for signal, name in _SIGNALS.items():
        if not (traces if signal == "traces" else metrics_too):
            continue
        own = os.environ.get(name, "").strip()
        if own:
            _check_url(name, own, base=False)
        else:
            reads_base = True
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if reads_base and base:
        _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base, base=True)


def _check_url(name: str, value: str, *, base: bool) -> None:
    why = _unusable(value, base)
    if why is not None:
        signal = "metrics" if "METRICS" in name else "traces"
        example = "base URL, as http://127.0.0.1:4318" if base else \
            f"URL for that signal, as http://127.0.0.1:4318/v1/{signal}"
        raise ValueError(f"payoff.telemetry.configure(): {name}={value!r} cannot be exported to: {why}. Give the "
                         f"collector's {example}")


def _unusable(value: str, base: bool) -> str | None:
    """Why the exporters can never send to ``value``; None when they can."""
    try:
        url = urllib.parse.urlsplit(value)
        host, _ = url.hostname, url.port
    except ValueError as exc:  # a bracket left open, a port that is no number or out of range
        return f"it is not a URL ({exc})"
    if url.scheme.lower() not in ("http", "https"):
        return "it has no http:// or https:// scheme"
    if not host:
        return "it names no host"
    if base and (url.query or url.fragment):
        return "it has a query or fragment, after which the exporters would add /v1/traces and /v1/metrics"
    path = url.path.rstrip("/")
    if base and path.endswith(SIGNAL_PATHS):
        return (f"it ends in {path[path.rindex('/v1/'):]}, a signal's own path, to which the exporters add "
                "/v1/traces and /v1/metrics again (a signal's own URL goes in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT "
                "or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)")
    return None


_said: set[tuple[str, str]] = set()

OTLP_EXPORTERS = frozenset({"otlp", "otlp_proto_http"})
"""The ``OTEL_*_EXPORTER`` names that mean this module's exporters: OTLP over HTTP with protobuf."""


def exporter_names(variable: str) -> set[str]:
    """The exporters OpenTelemetry's ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` name, lower case
    (unset or empty: ``otlp``, OpenTelemetry's default)."""
    raw = os.environ.get(variable, "")
    return {name.strip().lower() for name in raw.split(",") if name.strip()} or {"otlp"}


def exports_otlp(variable: str) -> bool:
    """Whether OpenTelemetry's ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` leaves that signal to OTLP
    (unset: yes; ``otlp`` and the HTTP exporter's own name, ``otlp_proto_http``; gRPC's is refused, as a gRPC
    protocol is). The compose stack's
    collector takes spans only, and its image says ``OTEL_METRICS_EXPORTER=none``: an application's
    ``configure()`` there sent metrics all the same, a 404 every export (hunt 69). A signal left out is said
    once a process."""
    raw, names = os.environ.get(variable, ""), exporter_names(variable)
    if names & OTLP_EXPORTERS:
        return True
    if "otlp_proto_grpc" in names:
        raise ValueError(f"payoff.telemetry.configure() exports OTLP over HTTP with protobuf, but {variable}="
                         f"{raw!r} asks for gRPC. Name otlp_proto_http (or otlp) and point the endpoint at the "
                         "collector's HTTP port (4318), or set up OpenTelemetry's providers yourself with the "
                         "exporter you need")
    if (variable, raw) not in _said:
        _said.add((variable, raw))
        log.warning("payoff.telemetry.configure(): %s=%r: that signal is not exported over OTLP", variable, raw)
    return False


def _shown(given: tuple[object, ...]) -> str:
    names = ("otlp_endpoint", "service_name", "traces", "metrics_too", "export_interval_seconds", "timeout_seconds")
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, given, strict=True))


def _create(otlp_endpoint: str | None, service_name: str | None, traces: bool, metrics_too: bool,
            export_interval_seconds: float, timeout_seconds: float | None, *, set_global: bool) -> OTLPSetup:
    with extra_needed("otlp", "payoff.telemetry.configure() (OTLP export)"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "payoff"
    resource = Resource.create({"service.name": name})
    base = otlp_endpoint.rstrip("/") if otlp_endpoint else None
    tracer_provider = meter_provider = None
    if traces:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, timeout=timeout_seconds)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        if set_global:
            trace.set_tracer_provider(tracer_provider)
    if metrics_too:
        metric_exporter = _parent_only(OTLPMetricExporter)(endpoint=f"{base}/v1/metrics" if base else None,
                                                           timeout=timeout_seconds)
        reader = PeriodicExportingMetricReader(metric_exporter,
                                               export_interval_millis=export_interval_seconds * 1000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        if set_global:
            metrics.set_meter_provider(meter_provider)
            from payoff.telemetry import _otel_metrics_for, add_default_observer

            add_default_observer(_otel_metrics_for(meter_provider))
    where = base or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    setup = OTLPSetup(tracer_provider, meter_provider, where)
    setup._ready_for_exit()
    atexit.register(setup._at_exit)
    return setup
