"""Real OTLP/HTTP export to an in-test receiver on 127.0.0.1, decoded with opentelemetry-proto."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import payoff
from payoff import ParallelConfig, ParallelExecutor
from payoff.telemetry import configure
from payoff.telemetry.otlp import OTLPSetup
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}


class Receiver:
    """An OTLP/HTTP collector on loopback keeping what it gets; with ``paths``, as an OpenTelemetry Collector
    with pipelines for those signals only, it answers 404 to the others (kept too)."""

    def __init__(self, paths: set[str] | None = None) -> None:
        self.requests: list[tuple[str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, body))
                self.send_response(200 if paths is None or self.path in paths else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def spans(self) -> list[object]:
        out = []
        for path, body in self.requests:
            if path == "/v1/traces":
                req = ExportTraceServiceRequest.FromString(body)
                out += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out

    def metric_names(self) -> set[str]:
        names = set()
        for path, body in self.requests:
            if path == "/v1/metrics":
                req = ExportMetricsServiceRequest.FromString(body)
                names |= {m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        return names

    def points(self, metric: str, workload: str) -> float:
        """The sum of ``metric``'s data points for ``workload`` over every export received."""
        total = 0.0
        for path, body in self.requests:
            if path != "/v1/metrics":
                continue
            req = ExportMetricsServiceRequest.FromString(body)
            for m in (m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
                if m.name == metric:
                    for p in m.sum.data_points:
                        attrs = {a.key: a.value.string_value for a in p.attributes}
                        if attrs.get("workload") == workload:
                            total += p.as_int or p.as_double
        return total

    def metric_senders(self) -> set[str]:
        """The ``service.instance.id`` of every resource that sent metrics (one per exporting process)."""
        ids = set()
        for path, body in self.requests:
            if path == "/v1/metrics":
                req = ExportMetricsServiceRequest.FromString(body)
                ids |= {a.value.string_value for rm in req.resource_metrics for a in rm.resource.attributes
                        if a.key == "service.instance.id"}
        return ids

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_spans_and_metrics_arrive_over_otlp_http(receiver: Receiver) -> None:
    setup: OTLPSetup = configure(otlp_endpoint=receiver.endpoint, service_name="payoff-test",
                                 set_global=False, export_interval_seconds=60)  # type: ignore[assignment]
    try:
        with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE),
                              tracer_provider=setup.tracer_provider, meter_provider=setup.meter_provider) as ex:
            assert ex.map(tasks.spin, range(80), workload="otlp") == [tasks.spin(x) for x in range(80)]
            record = ex.last_record
        assert setup.tracer_provider is not None and setup.meter_provider is not None
        assert setup.tracer_provider.force_flush(10_000)
        assert setup.meter_provider.force_flush(10_000)
    finally:
        setup.shutdown()
    assert record is not None
    spans = receiver.spans()
    maps = [s for s in spans if s.name == "payoff.map"]  # type: ignore[attr-defined]
    chunks = [s for s in spans if s.name == "payoff.chunk"]  # type: ignore[attr-defined]
    assert len(maps) == 1
    assert len(chunks) == record.n_chunks
    attrs = {a.key: a.value for a in maps[0].attributes}  # type: ignore[attr-defined]
    assert attrs["payoff.selected_strategy"].string_value == "processes"
    assert attrs["payoff.items"].int_value == 80
    assert attrs["payoff.workload"].string_value == "otlp"
    assert all(c.parent_span_id == maps[0].span_id for c in chunks)  # type: ignore[attr-defined]
    assert {"payoff_map_calls", "payoff_tasks", "payoff_map_duration_seconds", "payoff_speedup",
            "payoff_task_duration_seconds"} <= receiver.metric_names()


def test_an_unreachable_collector_never_breaks_a_map() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    setup: OTLPSetup = configure(otlp_endpoint=f"http://127.0.0.1:{closed_port}", set_global=False,
                                 timeout_seconds=0.5, export_interval_seconds=0.2)  # type: ignore[assignment]
    try:
        for strategy in ("threads", "processes"):
            with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE),
                                  tracer_provider=setup.tracer_provider,
                                  meter_provider=setup.meter_provider) as ex:
                for _ in range(3):
                    assert ex.map(tasks.spin, range(60)) == [tasks.spin(x) for x in range(60)]
                assert ex.last_record is not None
                assert ex.last_record.fallback_reason is None
    finally:
        setup.shutdown()


ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}

GLOBAL_SCRIPT = textwrap.dedent("""
    import sys
    import payoff
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.telemetry import configure
    from tests import tasks

    endpoint = sys.argv[1]
    payoff.map(abs, range(3))  # the shared executor exists before configure, as after any early call
    early = ParallelExecutor(ParallelConfig(strategy="threads", tiny_workload_threshold=0.0))
    setup = configure(otlp_endpoint=endpoint, service_name="order", export_interval_seconds=60)
    assert configure(otlp_endpoint=endpoint, service_name="order", export_interval_seconds=60) is setup
    try:
        configure(otlp_endpoint="http://127.0.0.1:9", service_name="order")
    except RuntimeError as exc:
        print("refused:", exc)
    early.map(tasks.spin, range(40), workload="early-executor")
    payoff.map(tasks.spin, range(40), workload="shared-executor")
    late = ParallelExecutor(ParallelConfig(strategy="threads", tiny_workload_threshold=0.0))
    late.map(tasks.spin, range(40), workload="late-executor")
""")


def test_configure_reaches_executors_made_before_it_once_and_refuses_a_second_endpoint(receiver: Receiver) -> None:
    """Metrics follow configure() into executors that already exist (the shared one of payoff.map above
    all); a re-run configure cell is harmless, and one for another endpoint says why it cannot apply."""
    proc = subprocess.run([sys.executable, "-c", GLOBAL_SCRIPT, receiver.endpoint], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "http://127.0.0.1:9" in proc.stdout, proc.stdout
    for workload in ("early-executor", "shared-executor", "late-executor"):
        assert receiver.points("payoff_map_calls", workload) == 1, workload  # once: one meter provider exports
    names = {a.value.string_value for s in receiver.spans() for a in s.attributes  # type: ignore[attr-defined]
             if a.key == "payoff.workload"}
    assert {"early-executor", "shared-executor", "late-executor"} <= names


OWN_PROVIDER_SCRIPT = textwrap.dedent("""
    import sys, threading
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from payoff.telemetry import configure

    if sys.argv[1] == "traces":
        trace.set_tracer_provider(TracerProvider())
    else:
        metrics.set_meter_provider(MeterProvider())
    threads = threading.active_count()
    try:
        configure(otlp_endpoint="http://127.0.0.1:9", traces=sys.argv[1] == "traces")
    except RuntimeError as exc:
        print("refused:", exc)
    assert threading.active_count() == threads, "configure started exporters it then could not use"
    configure(otlp_endpoint="http://127.0.0.1:9", set_global=False).shutdown()  # providers of its own: fine
""")


@pytest.mark.parametrize("provider", ["traces", "metrics"])
def test_configure_refuses_to_set_providers_over_the_applications_own(provider: str) -> None:
    """OpenTelemetry keeps the first global provider and only logs at a second: configure() over an app's own
    TracerProvider sent payoff's metrics to its endpoint and payoff's spans to the app's provider, silently."""
    proc = subprocess.run([sys.executable, "-c", OWN_PROVIDER_SCRIPT, provider], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind = "TracerProvider" if provider == "traces" else "MeterProvider"
    assert f"refused: payoff.telemetry.configure() sets OpenTelemetry's global providers, but this process " \
           f"already has a global {kind}" in proc.stdout, proc.stdout
    assert "set_global=False" in proc.stdout


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"])
def test_a_protocol_other_than_http_protobuf_is_refused_not_ignored(variable: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "grpc")
    with pytest.raises(ValueError, match=rf"http/protobuf.*{variable}='grpc'"):
        configure(otlp_endpoint="http://127.0.0.1:4318", set_global=False)


@pytest.mark.parametrize(("endpoint", "says"), [
    ("127.0.0.1:4318", "no http:// or https:// scheme"),
    ("http://127.0.0.1:4318/v1/traces", "ends in /v1/traces"),
    ("https://collector.example:4318/v1/metrics/", "ends in /v1/metrics"),
    ("http://", "names no host"),
])
@pytest.mark.parametrize("given", ["argument", "variable"])
def test_an_endpoint_no_export_can_reach_is_refused_saying_why(endpoint: str, says: str, given: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted before, then every export failed with the SDK's "No connection adapters were found", or went to
    /v1/traces/v1/traces (hunt 69, F3)."""
    name = "otlp_endpoint" if given == "argument" else "OTEL_EXPORTER_OTLP_ENDPOINT"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint if given == "variable" else "")
    with pytest.raises(ValueError, match=rf"{name}={re.escape(repr(endpoint))} cannot be exported to: .*{says}"):
        configure(otlp_endpoint=endpoint if given == "argument" else None, set_global=False)


@pytest.mark.parametrize(("variables", "refused"), [
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "127.0.0.1:9/v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318?x=1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:abc"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://h:99999/v1/metrics"}, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/t",
      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/m"}, None),
])
def test_each_url_the_exporters_send_to_is_checked_and_only_those(variables: dict[str, str], refused: str | None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal's own variable went unchecked (the same "No connection adapters" at every export), and a base
    variable both signals' own variables override was refused (review 73, R7)."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.setenv(name, variables.get(name, ""))
    if refused is None:
        configure(set_global=False, timeout_seconds=0.1).shutdown()
        return
    with pytest.raises(ValueError, match=rf"{refused}=.* cannot be exported to"):
        configure(set_global=False)


def test_the_exporters_own_names_are_otlp_and_a_signal_left_out_is_said_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``otlp_proto_http``, the name the installed exporter registers, turned traces off; the line saying a
    signal is left out came again at every configure() (review 73, R6 and R9)."""
    from payoff.telemetry import otlp

    monkeypatch.setattr(otlp, "_said", set())  # said once a process: this test's own process-wide start
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp_proto_http")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    with caplog.at_level("WARNING", logger="payoff"):
        for _ in range(2):
            setup = configure(otlp_endpoint="http://127.0.0.1:9", set_global=False, timeout_seconds=0.1)
            assert setup.tracer_provider is not None and setup.meter_provider is None
            setup.shutdown()
    said = [r.getMessage() for r in caplog.records if "OTEL_" in r.getMessage()]
    assert len(said) == 1 and "OTEL_METRICS_EXPORTER" in said[0], said


def test_the_grpc_exporters_name_is_refused_as_the_grpc_protocol_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """``otlp_proto_grpc`` counted as OTLP and payoff exported over HTTP (review 75, F7)."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp_proto_grpc")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='otlp_proto_grpc' asks for gRPC"):
        configure(otlp_endpoint="http://127.0.0.1:9", set_global=False)


@pytest.mark.parametrize("variable", ["OTEL_METRICS_EXPORTER", "OTEL_TRACES_EXPORTER"])
def test_a_signal_the_environment_exports_elsewhere_is_left_out(variable: str, receiver: Receiver,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The compose stack's image says OTEL_METRICS_EXPORTER=none (its collector takes spans only); configure()
    sent metrics all the same, a 404 every export (hunt 69, F4)."""
    from payoff.telemetry import otlp

    monkeypatch.setattr(otlp, "_said", set())
    monkeypatch.setenv(variable, "none")
    with caplog.at_level("WARNING", logger="payoff"):
        setup = configure(otlp_endpoint=receiver.endpoint, set_global=False, export_interval_seconds=0.2)
    try:
        left_out = setup.meter_provider if variable == "OTEL_METRICS_EXPORTER" else setup.tracer_provider
        kept = setup.tracer_provider if variable == "OTEL_METRICS_EXPORTER" else setup.meter_provider
        assert left_out is None and kept is not None
        assert any(variable in r.getMessage() for r in caplog.records)
    finally:
        setup.shutdown()


EXIT_SCRIPT = textwrap.dedent("""
    import sys
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.telemetry import configure
    configure(otlp_endpoint=sys.argv[1], service_name="exit")
    with ParallelExecutor(ParallelConfig(strategy="threads", tiny_workload_threshold=0.0)) as ex:
        ex.map(abs, range(100), workload="at-exit")
    print("work done", flush=True)
""")


def test_the_last_export_at_exit_is_bounded_and_says_what_it_dropped() -> None:
    """Nothing listening: the SDK's own exit hooks retried for about 12 s; payoff's give the last export
    EXIT_FLUSH_SECONDS and then say on stderr that what was left was dropped, and where it was going."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, closed], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "work done" in proc.stdout, proc.stderr[-3000:]
    assert f"did not reach {closed}" in proc.stderr and "dropped" in proc.stderr, proc.stderr[-3000:]


def test_the_last_export_at_exit_still_arrives(receiver: Receiver) -> None:
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, receiver.endpoint], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert receiver.points("payoff_map_calls", "at-exit") == 1
    assert any(a.value.string_value == "at-exit" for s in receiver.spans()  # type: ignore[attr-defined]
               for a in s.attributes)


def test_shutdown_waits_no_longer_than_asked_for_a_collector_that_never_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    """A collector that accepts and never answers: ``shutdown()`` stopped the providers one after the other on
    the caller's thread, each retrying for the SDK's 10 s (20 s in a service's graceful stop; observability
    trial). It waits as long as it is given, then says what it dropped."""
    with socket.socket() as silent:  # listens, never accepts or answers: each request waits its whole timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        setup: OTLPSetup = configure(otlp_endpoint=endpoint, set_global=False,
                                     export_interval_seconds=60)  # type: ignore[assignment]
        with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE),
                              tracer_provider=setup.tracer_provider, meter_provider=setup.meter_provider) as ex:
            ex.map(abs, range(50), workload="silent")
        stopping = threading.Thread(target=setup.shutdown, kwargs={"timeout_seconds": 0.5})
        stopping.start()
        stopping.join(8.0)  # a bound for a hang, far above what was asked: no speed is measured
        alive = stopping.is_alive()
        stopping.join()  # before the socket closes under it
    assert not alive, "shutdown(timeout_seconds=0.5) was still flushing after 8 s"
    assert any(f"did not reach {endpoint}" in r.getMessage() and "dropped" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


AFTER_SHUTDOWN_SCRIPT = textwrap.dedent("""
    import sys
    from payoff.telemetry import configure
    setup = configure(otlp_endpoint=sys.argv[1], export_interval_seconds=60)
    print("trailing slash, same setup:", configure(otlp_endpoint=sys.argv[1] + "/", export_interval_seconds=60)
          is setup, flush=True)
    setup.shutdown()
    try:
        configure(otlp_endpoint=sys.argv[1], export_interval_seconds=60)
        print("configured again: nothing would be exported", flush=True)
    except RuntimeError as exc:
        print("refused:", exc, flush=True)
""")


def test_configure_after_its_providers_were_shut_down_says_nothing_would_be_exported(receiver: Receiver) -> None:
    """A re-run cell after ``shutdown()`` got the stopped setup back, and nothing was exported from then on
    without a word; an endpoint given with a trailing slash was refused as another endpoint."""
    proc = subprocess.run([sys.executable, "-c", AFTER_SHUTDOWN_SCRIPT, receiver.endpoint], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trailing slash, same setup: True" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "shut down" in proc.stdout, proc.stdout


def test_shutdown_where_no_thread_may_start_still_makes_the_last_export(receiver: Receiver,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """From Python 3.12 an exit hook cannot start a thread. ``shutdown()`` started one for its bounded wait, so
    an application's ``atexit.register(setup.shutdown)`` raised after taking the claim, and neither it nor
    payoff's own hook flushed: the last export was lost (review of the session's diff). It runs on the exit
    thread the setup started with. Here ``Thread.start`` refuses as 3.12's does at interpreter shutdown."""
    setup: OTLPSetup = configure(otlp_endpoint=receiver.endpoint, set_global=False,
                                 export_interval_seconds=60)  # type: ignore[assignment]
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), tracer_provider=setup.tracer_provider,
                          meter_provider=setup.meter_provider) as ex:
        ex.map(abs, range(50), workload="last-export")

    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:  # payoff's threads only: the receiver here serves on threads
        if self.name.startswith("payoff-"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with contextlib.suppress(RuntimeError):  # it raised, the claim taken: then nothing was flushed
        setup.shutdown()
    setup._at_exit()  # payoff's own exit hook, run after the application's
    monkeypatch.undo()
    assert receiver.points("payoff_map_calls", "last-export") == 1
    assert any(a.value.string_value == "last-export" for s in receiver.spans()  # type: ignore[attr-defined]
               for a in s.attributes)


def test_the_lazy_configure_shows_the_parameters_of_the_one_it_calls() -> None:
    """``help(payoff.telemetry.configure)`` showed ``(*args, **kwargs)`` (pip-user trial): the lazy wrapper
    spells out the parameters of ``payoff.telemetry.otlp.configure``, in order, with their defaults."""
    import inspect

    import payoff.telemetry
    from payoff.telemetry import otlp

    def shown(fn: object) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]

    assert shown(payoff.telemetry.configure) == shown(otlp.configure)


FORKED_POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.telemetry import configure
    from tests import tasks

    setup = configure(otlp_endpoint=sys.argv[1], service_name="payoff-fork-test", export_interval_seconds=0.5)
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, start_method="fork",
                                         tiny_workload_threshold=0.0)) as ex:
        for _ in range(3):
            ex.map(tasks.square, range(20), workload="forked")
        time.sleep(2.5)  # the workers live on: several export intervals pass
    setup.shutdown()
""")


def test_forked_pool_workers_export_no_copies_of_the_parents_metrics(receiver: Receiver) -> None:
    """The SDK restarts its metric reader in a forked child with a new ``service.instance.id``: each worker of a
    ``processes`` pool exported the parent's counts as they were at the fork, every interval, as one more
    instance of the service (6 calls summed as 16; host/pre-fork trial 44, F5). Workers record nothing of their
    own: only the process that configured exports."""
    proc = subprocess.run([sys.executable, "-c", FORKED_POOL_SCRIPT, receiver.endpoint], cwd=ROOT,
                          env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(receiver.metric_senders()) == 1, receiver.metric_senders()
