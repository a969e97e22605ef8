"""A real Prometheus for tests: started on 127.0.0.1 with a temp config, queried over its HTTP API.

The end-to-end dashboards test and the TLS scrape test both drive one; this
keeps starting, polling and stopping it (by PID, only the process started
here) in one place.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import require_tool

POLL_ERRORS = (OSError, AssertionError, KeyError, IndexError, ValueError)
"""What a poll's predicate may raise while Prometheus is still starting or has not scraped yet."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Poll, do not sleep blindly: the first scrape becomes queryable only after a few seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(*POLL_ERRORS):
            if predicate():
                return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def query(api: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    url = f"{api}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def targets(api: str) -> dict[str, dict[str, Any]]:
    """The active scrape targets by job name."""
    with urllib.request.urlopen(f"{api}/api/v1/targets", timeout=10) as resp:
        active = json.loads(resp.read())["data"]["activeTargets"]
    return {t["labels"]["job"]: t for t in active}


@contextlib.contextmanager
def running_prometheus(work: Path, config: str) -> Iterator[str]:
    """Prometheus with ``config`` (prometheus.yml text) in ``work``, ready; yields its API base URL."""
    binary = require_tool("prometheus")
    (work / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{api}/-/ready", timeout=2).status == 200, "prometheus ready")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
