"""Prometheus metrics scraped over real HTTP after real runs, checked against the records."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from payoff import MapRecord, ParallelConfig, ParallelExecutor, Reason
from payoff.telemetry import serve_metrics
from payoff.telemetry.metrics import (
    METRICS,
    WORKLOAD_CAP,
    PrometheusMetrics,
    pair_series_bound,
    strategy_series_bound,
)
from payoff.telemetry.server import MetricsServer
from payoff.telemetry.tracing import Tracing
from tests import tasks
from tests.conftest import require

FORCE = {"tiny_workload_threshold": 0.0}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def endpoint() -> Iterator[tuple[PrometheusMetrics, MetricsServer]]:
    observer = PrometheusMetrics(CollectorRegistry())
    server = serve_metrics(0, registry=observer.registry)
    assert server.addr == "127.0.0.1"
    yield observer, server
    server.stop()


def scrape(server: MetricsServer, openmetrics: bool = False) -> str:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    with urllib.request.urlopen(urllib.request.Request(server.url, headers=headers), timeout=10) as resp:
        return str(resp.read().decode())


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(values: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in values.items() if n == name and labels.items() <= dict(lab).items())


def test_every_contract_metric_and_label_set_is_exposed_and_consistent(
        endpoint: tuple[PrometheusMetrics, MetricsServer], tmp_path: Path) -> None:
    observer, server = endpoint
    runs = {"threads": 300, "processes": 200}
    records = []
    for strategy, n in runs.items():
        with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE), observers=[observer]) as ex:
            ex.map(tasks.spin, range(n), workload="contract")
            ex.map(tasks.spin, range(n), workload="contract")
            records += list(ex.records)
    tiny = ParallelConfig(strategy="processes", tiny_workload_threshold=1.0)  # measured in the caller, then kept there
    with ParallelExecutor(tiny, observers=[observer]) as ex:
        ex.map(tasks.square, range(3), workload="contract")  # a tiny_workload fallback
        records.append(ex.last_record)
    text = scrape(server)
    values = samples(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for d in METRICS:
        if d.name == "payoff_recoveries_total":
            continue  # needs a crashed worker: checked at the end, after one
        base = d.name.removesuffix("_total")
        assert base in families, f"{d.name} missing from /metrics"
        assert families[base].type == d.kind
        labelled = [s for s in families[base].samples if s.name in (d.name, base, base + "_bucket")]
        assert labelled, d.name
        assert set(d.labels) <= set(labelled[0].labels), (d.name, labelled[0].labels)

    for strategy, n in runs.items():
        assert total(values, "payoff_tasks_total", strategy=strategy, workload="contract") == 2 * n
        busy = total(values, "payoff_busy_seconds_total", strategy=strategy, workload="contract")
        capacity = total(values, "payoff_capacity_seconds_total", strategy=strategy, workload="contract")
        assert 0 < busy <= capacity * 1.0001
        assert total(values, "payoff_speedup_count", strategy=strategy, workload="contract") == 2
        assert total(values, "payoff_map_calls_total", strategy=strategy, mode="parallel", workload="contract") == 2
        assert total(values, "payoff_pool_starts_total", strategy=strategy, outcome="success") == 1
        assert total(values, "payoff_pool_reuses_total", strategy=strategy) == 1
        assert total(values, "payoff_in_flight_tasks", strategy=strategy) == 0
        wall = sum(r.wall_seconds for r in records if r.selected_strategy == strategy)
        assert total(values, "payoff_wall_seconds_total", strategy=strategy, workload="contract") == \
            pytest.approx(wall)
    sent = total(values, "payoff_payload_bytes_total", strategy="processes", direction="sent")
    assert sent == sum(r.bytes_sent for r in records if r.selected_strategy == "processes") > 0
    assert total(values, "payoff_fallbacks_total", reason="tiny_workload", workload="contract") == 1
    assert total(values, "payoff_fallbacks_total", reason="unpicklable", workload="contract") == 0
    assert total(values, "payoff_task_duration_seconds_count", strategy="threads", workload="contract") == 600
    assert total(values, "payoff_queue_wait_seconds_count", strategy="processes", workload="contract") == \
        sum(1 for r in records for c in r.chunks if r.selected_strategy == "processes" and c.where == "pool")

    # A worker dies once and its chunks rerun in fresh workers: the call stays parallel, so it is a recovery,
    # not a fallback to serial (it was counted as one, against the fallbacks' help text).
    items = [(i, os.getpid(), str(tmp_path / "died")) for i in range(24)]
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[observer]) as ex:
        ex.map(tasks.die_once_in_worker, items, chunksize=4, workload="crash")
        crashed = ex.last_record
    assert crashed is not None and crashed.fallback_reason is Reason.MAP_FAILURE_RETRY and crashed.mode == "parallel"
    text = scrape(server)
    values = samples(text)
    family = {f.name: f for f in text_string_to_metric_families(text)}["payoff_recoveries"]
    assert family.type == "counter" and {"reason", "workload"} <= set(family.samples[0].labels)
    assert total(values, "payoff_recoveries_total", reason="map_failure_retry", workload="crash") == 1
    assert total(values, "payoff_fallbacks_total", workload="crash") == 0
    assert total(values, "payoff_map_calls_total", strategy="processes", mode="parallel", workload="crash") == 1


def test_a_call_whose_pool_fails_after_planning_is_counted_where_its_items_ran(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    observer, server = endpoint
    config = ParallelConfig(strategy="processes", worker_initializer=tasks.failing_initializer,
                            worker_init_args=(os.getpid(),), **FORCE)
    with ParallelExecutor(config, observers=[observer]) as ex:
        assert ex.map(tasks.square, range(30), workload="late") == [x * x for x in range(30)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
    values = samples(scrape(server))
    assert total(values, "payoff_tasks_total", workload="late") == 30
    assert total(values, "payoff_tasks_total", strategy="serial", workload="late") == 30 - record.probe_items
    assert total(values, "payoff_task_duration_seconds_count", workload="late") == 30
    assert total(values, "payoff_map_calls_total", strategy="serial", mode="serial", workload="late") == 1
    assert total(values, "payoff_fallbacks_total", reason="init_failure", workload="late") == 1
    assert total(values, "payoff_speedup_count", strategy="serial", workload="late") == 1
    assert total(values, "payoff_wall_seconds_total", strategy="serial", workload="late") == \
        pytest.approx(record.wall_seconds)
    assert total(values, "payoff_in_flight_tasks") == 0
    assert total(values, "payoff_pool_starts_total", strategy="processes", outcome="failure") == 1
    # the failed start's time is the pool's overhead, as its count is (no phase had it: metrics trial)
    assert total(values, "payoff_overhead_seconds_total", strategy="processes", phase="pool_start") == \
        pytest.approx(record.pool_start_seconds) != 0
    assert total(values, "payoff_overhead_seconds_total", strategy="serial", phase="pool_start") == 0


def test_a_serial_call_that_outgrew_its_estimate_counts_its_pool_where_the_pool_ran(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    """A call auto planned serial that moved to a pool once its items cost more (``auto_outgrew_estimate``)
    counted its pool start and its decision under ``serial``, a strategy that never has a pool (observability
    trial). Its items count where they ran: its head here, the rest on the pool."""
    from payoff import planning
    from payoff._knowledge import Facts

    observer, server = endpoint
    planner = planning.Planner()
    planner.knowledge.teach(tasks.grows, Facts(1e-7, 1.0, 40, "", None, result_error=""))  # remembered as trivial
    with warnings.catch_warnings(), ParallelExecutor(ParallelConfig(max_workers=2), planner=planner,
                                                     observers=[observer]) as ex:
        warnings.simplefilter("ignore")
        items = list(range(3000, 3300))
        assert ex.map(tasks.grows, items, workload="grew") == [tasks.grows(x) for x in items]
        record = ex.last_record
    assert record is not None and record.decision_reason is Reason.AUTO_OUTGREW_ESTIMATE, record.summary()
    pool = record.selected_strategy
    assert pool != "serial" and record.pool_started
    values = samples(scrape(server))
    assert total(values, "payoff_pool_starts_total", strategy="serial") == 0
    assert total(values, "payoff_pool_starts_total", strategy=pool, outcome="success") == 1
    assert total(values, "payoff_decisions_total", strategy=pool, reason="auto_outgrew_estimate") == 1
    assert total(values, "payoff_decisions_total", strategy="serial") == 0
    here = sum(c.n_items for c in record.chunks if c.where == "caller")
    assert total(values, "payoff_tasks_total", strategy="serial", workload="grew") == here
    assert total(values, "payoff_tasks_total", strategy=pool, workload="grew") == 300 - here
    assert total(values, "payoff_map_calls_total", strategy=pool, workload="grew") == 1
    assert total(values, "payoff_in_flight_tasks") == 0


def map_concurrently(ex: ParallelExecutor, folder: Path, workload: str) -> list[MapRecord]:
    """Two threads map at once on ``ex`` (a web server's pattern), after a call that starts its pool.

    Each call's first item waits for the other's (``tasks.meet_then_nap``), so both hold the pool together
    on any backend; the records of all three calls are returned.
    """
    ex.map(tasks.sleep_then_square, range(4), workload=workload)  # the pool runs before both: neither pays its start
    start = threading.Barrier(2)

    def call(mine: str, other: str) -> list[int]:
        start.wait()
        return ex.map(tasks.meet_then_nap, [(str(folder), mine, other, i) for i in range(12)], chunksize=1,
                      workload=workload)

    with ThreadPoolExecutor(2) as callers:
        assert list(callers.map(call, "ab", "ba")) == [list(range(12))] * 2
    return list(ex.records)[-3:]


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_utilization_from_the_counters_does_not_read_a_shared_pool_as_idle(
        endpoint: tuple[PrometheusMetrics, MetricsServer], strategy: str, tmp_path: Path) -> None:
    """Two calls keep one pool of two workers full. Their records count the other call's chunks as occupied
    (``shared_seconds``), but ``payoff_capacity_seconds_total`` counts workers x wall per call, so busy /
    capacity read about 50% and PayoffUtilizationLow advised smaller chunks. ``payoff_shared_seconds_total``
    carries the records' shared time: busy / (capacity - shared) is the records' own utilization."""
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE), observers=[observer]) as ex:
        records = map_concurrently(ex, tmp_path, "web")
    assert sum(r.pool_shared for r in records) == 2, [r.summary() for r in records]
    values = samples(scrape(server))
    pair = {"strategy": strategy, "workload": "web"}
    busy = total(values, "payoff_busy_seconds_total", **pair)
    capacity = total(values, "payoff_capacity_seconds_total", **pair)
    shared = total(values, "payoff_shared_seconds_total", **pair)
    assert shared == pytest.approx(sum(r.shared_seconds for r in records)) and shared > 0
    assert capacity == pytest.approx(sum(r.workers * r.wall_seconds for r in records))
    assert busy == pytest.approx(sum(r.busy_seconds for r in records))
    # what utilization reads from the counters is what the records read together
    assert busy / (capacity - shared) == pytest.approx(
        sum(r.busy_seconds for r in records) / sum(r.capacity_seconds for r in records))


def payoff_series(text: str) -> list[str]:
    """Sample lines of payoff metrics in an exposition (every line is one series)."""
    return [line for line in text.splitlines() if line.startswith("payoff_")]


def test_nothing_is_exposed_before_the_first_call(endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    _, server = endpoint
    assert payoff_series(scrape(server)) == []
    assert payoff_series(scrape(server, openmetrics=True)) == []


def test_a_pair_gets_all_its_series_at_its_first_call_and_no_other_strategy_any(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    """The Celery lesson, bounded: zero series exist for what a workload ran, nothing for what it did not."""
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), observers=[observer]) as ex:
        ex.map(tasks.spin, range(100), workload="first")
    values = samples(scrape(server))
    assert ("payoff_task_errors_total", (("strategy", "threads"), ("workload", "first"))) in values
    assert total(values, "payoff_task_errors_total", strategy="threads", workload="first") == 0
    assert ("payoff_pool_starts_total", (("outcome", "failure"), ("strategy", "threads"))) in values
    assert {dict(lab).get("strategy") for (_, lab) in values} - {None} == {"threads"}
    assert not [key for key in values if key[0] == "payoff_fallbacks_total"]


def test_declare_creates_a_pairs_series_before_its_first_call(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    observer, server = endpoint
    observer.declare("nightly")
    assert payoff_series(scrape(server)) == []  # a name alone is only reserved under the cap
    observer.declare("nightly", strategies=["processes"])
    values = samples(scrape(server))
    assert values[("payoff_map_calls_total", (("mode", "parallel"), ("strategy", "processes"),
                                              ("workload", "nightly")))] == 0
    assert values[("payoff_queue_wait_seconds_count", (("strategy", "processes"), ("workload", "nightly")))] == 0
    assert {dict(lab).get("strategy") for (_, lab) in values} - {None} == {"processes"}


@pytest.mark.parametrize(("strategies", "error", "says"), [
    (["proceses"], ValueError, "'proceses' is not a strategy; accepted: serial, threads, processes"),
    ("processes", TypeError, "strategies=['processes'], not the string"),
])
def test_declare_refuses_what_is_not_a_strategy_instead_of_making_custom_series(
        endpoint: tuple[PrometheusMetrics, MetricsServer], strategies: Any, error: type[Exception],
        says: str) -> None:
    observer, server = endpoint
    with pytest.raises(error, match=re.escape(says)):
        observer.declare("nightly", strategies=strategies)
    assert payoff_series(scrape(server)) == []


def test_three_workloads_on_one_strategy_stay_under_150_series(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    """Issue 14's acceptance line, over real HTTP, in both exposition formats: no zero series, no _created."""
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE), observers=[observer]) as ex:
        for workload in ("alpha", "beta", "gamma"):
            ex.map(tasks.spin, range(200), workload=workload)
            ex.map(tasks.spin, range(200), workload=workload)
    assert all(r.selected_strategy == "processes" and r.fallback_reason is None for r in ex.records)
    for openmetrics in (False, True):
        lines = payoff_series(scrape(server, openmetrics=openmetrics))
        assert len(lines) < 150, len(lines)
        assert not [line for line in lines if "_created" in line]
        assert len(lines) <= 3 * pair_series_bound("processes") + strategy_series_bound("processes")
    for workload in ("alpha", "beta", "gamma"):
        mine = [line for line in payoff_series(scrape(server)) if f'workload="{workload}"' in line]
        assert len(mine) <= pair_series_bound("processes")


def test_promtool_accepts_the_exposition(endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    require(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), observers=[observer]) as ex:
        ex.map(tasks.spin, range(100))
    result = subprocess.run(["promtool", "check", "metrics"], input=scrape(server), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_openmetrics_exemplars_carry_the_trace_id(endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    observer, server = endpoint
    provider = TracerProvider()
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE),
                          observers=[Tracing(provider), observer]) as ex:
        ex.map(tasks.spin, range(50), workload="traced")
    text = scrape(server, openmetrics=True)
    lines = [line for line in text.splitlines()
             if line.startswith("payoff_map_duration_seconds_bucket") and "traced" in line and "trace_id" in line]
    assert len(lines) == 1
    trace_id = lines[0].split('trace_id="')[1][:32]
    assert int(trace_id, 16) != 0
    assert "trace_id" not in scrape(server)


def test_ten_thousand_workload_names_stay_bounded(endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[observer]) as ex:
        for i in range(10_000):
            ex.map(tasks.square, [i], workload=f"w{i}")
        assert ex.last_record is not None and ex.last_record.workload == "w9999", "records keep the name"
    names = {dict(lab).get("workload") for (n, lab) in samples(scrape(server)) if n == "payoff_map_calls_total"}
    assert len(names) <= WORKLOAD_CAP + 1
    assert "other" in names


def test_a_second_executor_cannot_exceed_the_cap_either() -> None:
    observer = PrometheusMetrics(CollectorRegistry())
    for batch in range(3):
        with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[observer]) as ex:
            for i in range(40):
                ex.map(tasks.square, [i], workload=f"b{batch}-{i}")
    seen = {s.labels["workload"] for f in observer.registry.collect() if f.name == "payoff_map_calls"
            for s in f.samples}
    assert len(seen) <= WORKLOAD_CAP + 1


def test_serve_metrics_rejects_a_bad_port() -> None:
    with pytest.raises(ValueError, match="port"):
        serve_metrics(70000)


def test_payoff_metrics_port_starts_the_endpoint_by_itself(tmp_path: object) -> None:
    import os
    import sys

    port = socket_free_port()
    script = (
        "import urllib.request, payoff\n"
        "from tests import tasks\n"
        "payoff.map(tasks.square, range(5), workload='env')\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).read().decode()\n"
        "print([l for l in text.splitlines() if l.startswith('payoff_map_calls_total') and 'env' in l"
        " and not l.endswith(' 0.0')])\n"
    )
    env = {**os.environ, "PAYOFF_METRICS_PORT": str(port)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    assert 'payoff_map_calls_total{mode="serial",strategy="serial",workload="env"} 1.0' in out.stdout


def test_payoff_metrics_port_zero_says_which_port_it_took() -> None:
    """``PAYOFF_METRICS_PORT=0`` served on a free port and said nothing, so no scraper could find it."""
    import os
    import sys

    script = ("import sys, time, payoff\n"
              "payoff.map(abs, range(5), workload='zero')\n"
              "print('mapped', flush=True)\n"
              "sys.stdin.read()\n")  # serves until the test has scraped
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "PAYOFF_METRICS_PORT": "0"},
                          cwd=str(Path(__file__).resolve().parents[1])) as child:
        try:
            assert child.stdout is not None and child.stderr is not None
            assert child.stdout.readline().strip() == "mapped"
            said = child.stderr.readline()
            url = re.search(r"serving /metrics at (http://127\.0\.0\.1:\d+/metrics)", said)
            assert url is not None, said
            with urllib.request.urlopen(url[1], timeout=10) as resp:
                assert 'workload="zero"' in resp.read().decode()
        finally:
            child.kill()


def _run_with_port(script: str, port: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter from the checkout, with PAYOFF_METRICS_PORT set to ``port``; it must
    exit 0."""
    import os
    import sys

    env = {**os.environ, "PAYOFF_METRICS_PORT": port}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_a_payoff_metrics_port_in_use_is_served_once_its_holder_lets_it_go() -> None:
    """A port held at the first map (a restarted service's predecessor still stopping) was never tried again:
    the target stayed down for the process's life, and the log advised the Python API's "pass port=0" (hunt 69,
    F5). Maps try it again now, and the advice names the variable."""
    port = socket_free_port()
    script = (
        "import socket, time, urllib.request, payoff\n"
        "import payoff.telemetry.server as server\n"
        "server.PORT_RETRY_SECONDS = 0.05\n"
        "holder = socket.socket()\n"
        f"holder.bind(('127.0.0.1', {port})); holder.listen()\n"
        "payoff.map(abs, range(5), workload='busy')\n"
        "holder.close(); time.sleep(0.2)\n"
        "payoff.map(abs, range(5), workload='busy')\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).read().decode()\n"
        "print('served', 'workload=\"busy\"' in text)\n"
    )
    out = _run_with_port(script, str(port))
    assert "served True" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "the port is in use" in out.stderr and "PAYOFF_METRICS_PORT=0" in out.stderr, out.stderr[-2000:]
    assert "pass port=0" not in out.stderr and "now that the port is free" in out.stderr, out.stderr[-2000:]


_FORKED_RANGE = """
import os, socket, sys, time, payoff
import payoff.telemetry.server as server
server.PORT_RETRY_SECONDS = 0.05
first = int(sys.argv[1])
held = []
for port in (first, first + 1):
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(); held.append(s)
payoff.map(abs, range(5))  # both ports busy: not served
done_r, done_w = os.pipe()
pid = os.fork()
for s in held:
    s.close()
deadline = time.monotonic() + 20
while server.serve_from_env() is None and time.monotonic() < deadline:
    payoff.map(abs, range(5)); time.sleep(0.05)
got = server.serve_from_env()
print("child" if pid == 0 else "parent", "served", got.port if got else None, flush=True)
if pid == 0:
    os.read(done_r, 1)  # serving until the parent has served too
    os._exit(0)
os.write(done_w, b"x")
os.waitpid(pid, 0)
"""


def _two_free_ports() -> int:
    """A port whose next one is free too (a range of two)."""
    for _ in range(50):
        first = socket_free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", first + 1))
            return first
    raise AssertionError("no two free ports in a row")


def test_a_forked_child_of_a_range_serves_its_own_port_once_free_though_the_parents_try_met_it_busy() -> None:
    """A child forked after its parent found the range busy inherited the failure and never tried (review 73,
    R8): with a range each process serves a port of its own."""
    import os
    import sys

    first = _two_free_ports()
    out = subprocess.run([sys.executable, "-c", _FORKED_RANGE, str(first)], capture_output=True, text=True,
                         env={**os.environ, "PAYOFF_METRICS_PORT": f"{first}-{first + 1}"}, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-3000:]
    served = dict(line.split(" served ") for line in out.stdout.split("\n") if " served " in line)
    assert sorted(served) == ["child", "parent"], out.stdout + out.stderr[-2000:]
    assert sorted(served.values()) == [str(first), str(first + 1)], out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("strategy", ["joblib", "dask"])
def test_worker_processes_that_inherit_payoff_metrics_port_leave_the_endpoint_to_their_parent(strategy: str) -> None:
    """Workers started afresh (joblib's, a dask cluster's) inherit the variable; a nested map in each logged
    "not serving /metrics ... the port is in use" (observability trial, and the review for dask). The parent
    serves it, and the processes it started stay quiet."""

    port = socket_free_port()
    script = (
        "import urllib.request, payoff\n"
        "from payoff import ParallelConfig, ParallelExecutor\n"
        "from tests import tasks\n"
        f"with ParallelExecutor(ParallelConfig(strategy='{strategy}', max_workers=2, tiny_workload_threshold=0))"
        " as ex:\n"
        "    print('sums', ex.map(tasks.nested_sum, [5] * 16, chunksize=2, workload='outer')[:2])\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).read().decode()\n"
        "print('served', 'workload=\"outer\"' in text)\n"
    )
    out = _run_with_port(script, str(port))
    assert "sums [15, 15]" in out.stdout and "served True" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "not serving /metrics" not in out.stderr, out.stderr[-3000:]


def test_a_program_started_with_a_port_of_its_own_serves_it() -> None:
    """The serving process marks its environment so the processes it starts, which inherit its port, stay
    quiet; a separate payoff program a host launched with a port of its own inherited the mark too, and served
    nothing, without a word (host trial 44, F3). Inheriting the same settings is what marks a process."""

    parent_port, child_port = socket_free_port(), socket_free_port()
    child = (
        "import urllib.request, payoff\n"
        "from tests import tasks\n"
        "payoff.map(tasks.square, range(5), workload='child')\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{child_port}/metrics', timeout=10).read().decode()\n"
        "print('child served', 'workload=\"child\"' in text)\n"
    )
    script = (
        "import os, subprocess, sys, payoff\n"
        "from tests import tasks\n"
        "payoff.map(tasks.square, range(5))\n"
        f"env = {{**os.environ, 'PAYOFF_METRICS_PORT': '{child_port}'}}\n"
        f"done = subprocess.run([sys.executable, '-c', {child!r}], env=env, capture_output=True, text=True)\n"
        "print(done.stdout, done.stderr[-2000:])\n"
    )
    out = _run_with_port(script, str(parent_port))
    assert "child served True" in out.stdout, out.stdout + out.stderr[-2000:]


def test_the_workers_of_a_pre_fork_server_each_serve_a_port_of_a_range() -> None:
    """Under gunicorn every worker inherits one PAYOFF_METRICS_PORT: the first to map took it, the others logged
    "port in use" and served nothing (a third of the traffic scraped); with preload_app the master took it and
    every worker stayed quiet for good (pre-fork trial 44, F1, F2). A range gives each process the first port
    of it no other holds: the parent, and the children it forks, each serve their own calls."""

    first = socket_free_port()
    span = f"{first}-{first + 7}"
    script = (
        "import os, sys, urllib.request, payoff\n"
        "from tests import tasks\n"
        "payoff.map(tasks.square, range(5), workload='master')\n"  # preload_app: the master maps first
        "children = []\n"
        "for k in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        payoff.map(tasks.square, range(5), workload=f'worker{k}')\n"
        "        import time; time.sleep(3)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "import time; time.sleep(1.5)\n"
        "seen = {}\n"
        f"for port in range({first}, {first + 8}):\n"
        "    try:\n"
        "        text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode()\n"
        "    except OSError:\n"
        "        continue\n"
        "    names = ('master', 'worker0', 'worker1', 'worker2')\n"
        "    seen[port] = sorted(w for w in names if f'workload=\"{w}\"' in text)\n"
        "print('seen', sorted(seen.values()))\n"
        "for pid in children: os.waitpid(pid, 0)\n"
    )
    out = _run_with_port(script, span)
    assert "seen [['master'], ['worker0'], ['worker1'], ['worker2']]" in out.stdout, out.stdout + out.stderr[-3000:]


def test_telemetry_variables_set_after_the_first_map_are_followed(tmp_path: Path) -> None:
    """A notebook sets PAYOFF_METRICS_PORT and PAYOFF_RECORDS in a cell after its first ``payoff.map``: the
    shared executor, made before, served nothing and wrote no record, without a word (read when it was made).
    Unset again, the records stop."""
    import os
    import sys

    port, records = socket_free_port(), tmp_path / "calls.jsonl"
    script = (
        "import os, urllib.request, payoff\n"
        "from tests import tasks\n"
        "payoff.map(tasks.square, range(5), workload='before')\n"
        f"os.environ['PAYOFF_METRICS_PORT'] = '{port}'\n"
        f"os.environ['PAYOFF_RECORDS'] = {str(records)!r}\n"
        "payoff.map(tasks.square, range(5), workload='after')\n"
        "ex = payoff.ParallelExecutor(strategy='serial')\n"  # any executor follows, not only the shared one
        "ex.map(tasks.square, range(3), workload='own')\n"
        "del os.environ['PAYOFF_RECORDS']\n"
        "payoff.map(tasks.square, range(5), workload='unset')\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10).read().decode()\n"
        "print([l for l in text.splitlines() if l.startswith('payoff_map_calls_total') and 'after' in l])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PAYOFF_METRICS_PORT", "PAYOFF_RECORDS")}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, env=env,
                         timeout=120, cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    assert 'workload="after"} 1.0' in out.stdout
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [line["workload"] for line in lines] == ["after", "own"]


def socket_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nap_300us(x: int) -> int:
    """Dearer than BLOCK_TARGET_NS: each item is its own timing block."""
    import time

    time.sleep(0.0003)
    return x


def test_a_call_of_many_timing_blocks_leaves_the_garbage_collector_no_debt() -> None:
    """Observing each timing block as its own update tuple kept ~2 tuples per block alive at once; freed to a
    free list they never gave the collector's count back, so a serial call of 300 items timed alone tipped a
    young collection on every call, which walked the call's young results (300 lists of 25,000 floats: 40-50 ms,
    the call 1.17x the loop). The count a call adds must not grow with its blocks."""
    counts = []
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for n in (100, 400):
            ex.map(_nap_300us, range(n))  # first calls of a size: lazily made series and caches
            enabled = gc.isenabled()
            gc.disable()
            try:
                gc.collect()
                before = gc.get_count()[0]
                out = ex.map(_nap_300us, range(n))
                counts.append(gc.get_count()[0] - before)
            finally:
                if enabled:
                    gc.enable()
            assert out == list(range(n))
            assert len(ex.last_record.chunks[0].block_sizes) >= n // 2  # timed (mostly) item by item
    assert counts[1] - counts[0] < 50, counts  # before: 4x the blocks added ~600 more


def test_items_that_raised_count_among_the_items_processed(endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    """``payoff_task_errors_total / payoff_tasks_total`` is the share of items that raised (the dashboard's panel,
    the PayoffTaskErrorRatioHigh alert): items that raised were left out of the items processed, so a call whose
    chunks each failed at their first item read 400% (4 errors, 1 item), or +Inf% with none."""
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE), observers=[observer]) as ex:
        with pytest.raises(KeyError):
            ex.map(tasks.fail_on_seven, [7] * 8, chunksize=1, workload="failing")
        record = ex.last_record
    assert record is not None
    values = samples(scrape(server))
    errors = total(values, "payoff_task_errors_total", strategy="threads", workload="failing")
    processed = total(values, "payoff_tasks_total", strategy="threads", workload="failing")
    assert 1 <= errors <= processed, (errors, processed)
    assert processed == sum(c.n_items + c.n_errors for c in record.chunks)


def test_a_failed_start_of_the_pool_an_outgrown_serial_call_moved_to_counts_under_that_pool() -> None:
    """Planned serial, outgrew its estimate, moved to processes, whose start then failed (back to serial): no
    chunk ran on processes, so the failed start and the decision counted under ``serial`` (review of the
    session's diff). The call names the pool it was to run on (``CallInfo.pool``, set where it moves)."""
    from payoff.observers import CallInfo, CallSite
    from payoff.telemetry.updates import DECISIONS, POOL_STARTS, MetricUpdates

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(abs, range(40))
        ran = ex.last_record
    assert ran is not None
    updates = MetricUpdates()
    call = CallInfo(1, "w", "auto", None, 40, CallSite("x.py", 1, "m", {}), selected_strategy="serial")
    updates.planned(call)
    for chunk in ran.chunks:
        updates.chunk(call, chunk)
    call.pool = "processes"  # where("processes"), then where("serial") when its start failed
    record = replace(ran, requested_strategy="auto", selected_strategy="serial", pool_started=True,
                     decision_reason=Reason.AUTO_OUTGREW_ESTIMATE, fallback_reason=Reason.INIT_FAILURE,
                     pool_start_failed=True, pool_starts=1)
    counted = {(u[0], u[1]) for u in updates.finished(call, record) if u[0] in (POOL_STARTS, DECISIONS)}
    assert counted == {(POOL_STARTS, ("processes", "failure")), (DECISIONS, ("processes", "auto_outgrew_estimate"))}


def test_an_imap_over_a_generator_counts_its_items_in_flight_as_it_reads_them(
        endpoint: tuple[PrometheusMetrics, MetricsServer]) -> None:
    """A stream's length is unknown when it is planned, so its items were never counted in: the gauge read 0
    while an imap over a generator ran (metrics trial: 38 for the same items as a list)."""
    observer, server = endpoint
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE), observers=[observer]) as ex:
        results = ex.imap(tasks.sleep_then_square, (i for i in range(60)), [0.02] * 60)
        got = [next(results) for _ in range(10)]
        running = total(samples(scrape(server)), "payoff_in_flight_tasks", strategy="threads")
        got += list(results)
    assert got == [x * x for x in range(60)]
    assert running > 0, "items read and not finished are in flight"
    assert total(samples(scrape(server)), "payoff_in_flight_tasks") == 0
