"""Real OTLP/HTTP export to an in-test receiver on 127.0.0.1, decoded with opentelemetry-proto."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from payoff import ParallelConfig, ParallelExecutor
from payoff.telemetry import configure
from payoff.telemetry.otlp import OTLPSetup
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, body))
                self.send_response(200)
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
