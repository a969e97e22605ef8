"""The ``/metrics`` endpoint.

prometheus_client's own server does the HTTP and the content negotiation:
a scraper that asks for OpenMetrics gets exemplars (the trace id of a call on
the map-duration histogram), a plain scraper gets the classic text format.
It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger("payoff")

PORT_ENV = "PAYOFF_METRICS_PORT"
ADDR_ENV = "PAYOFF_METRICS_ADDR"
DEFAULT_PORT = 9464


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``stop()`` closes the socket and joins the thread."""

    server: WSGIServer
    thread: threading.Thread
    addr: str

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(port: int = DEFAULT_PORT, addr: str = "127.0.0.1",
                  registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve payoff's metrics over HTTP; ``port=0`` picks a free port."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    if registry is None:
        from payoff.telemetry import metrics_observer

        registry = metrics_observer().registry
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread, addr)


_auto: MetricsServer | None = None
_auto_lock = threading.Lock()


def serve_from_env() -> MetricsServer | None:
    """Start the endpoint once per process when ``PAYOFF_METRICS_PORT`` is set."""
    global _auto
    raw = os.environ.get(PORT_ENV)
    if not raw:
        return None
    with _auto_lock:
        if _auto is None:
            try:
                _auto = serve_metrics(int(raw), os.environ.get(ADDR_ENV, "127.0.0.1"))
            except (OSError, ValueError) as exc:
                log.warning("payoff: cannot serve /metrics on %s=%r: %s", PORT_ENV, raw, exc)
                return None
        return _auto
