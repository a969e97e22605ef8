"""The dask strategy against a real LocalCluster on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason
from payoff.telemetry import FALLBACK_WARNINGS
from payoff.telemetry.metrics import PrometheusMetrics
from tests import tasks
from tests.conftest import require

try:
    from distributed import Client, LocalCluster
except ImportError:  # pragma: no cover - the [dask] extra is part of the test extras
    Client = LocalCluster = None

FORCE = {"tiny_workload_threshold": 0.0}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    require(Client is not None, "dask.distributed (extra [dask])")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=40)
    with Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


def test_results_records_and_metrics_on_a_local_cluster(client: Any) -> None:
    metrics = PrometheusMetrics(CollectorRegistry())
    with ParallelExecutor(ParallelConfig(strategy=client, **FORCE), observers=[metrics]) as ex:
        items = list(range(300))
        assert ex.map(tasks.spin, items, workload="dask") == [tasks.spin(x) for x in items]
        assert ex.map(tasks.spin, items, workload="dask") == [tasks.spin(x) for x in items]
        record = ex.last_record
    assert record is not None
    assert record.selected_strategy == "dask"
    assert record.workers == 2
    assert record.pool_reused
    assert record.n_chunks > 2
    assert record.bytes_sent > 0 and record.bytes_received > 0
    assert record.queue_wait.count == sum(1 for c in record.chunks if c.where == "pool")
    assert all(c.submit_ns <= c.start_ns <= c.end_ns for c in record.chunks if c.where == "pool")
    assert record.busy_seconds <= record.capacity_seconds
    tasks_total = metrics.registry.get_sample_value("payoff_tasks_total", {"strategy": "dask", "workload": "dask"})
    assert tasks_total == 600
    assert metrics.registry.get_sample_value("payoff_map_calls_total",
                                             {"strategy": "dask", "mode": "parallel", "workload": "dask"}) == 2


def test_a_killed_worker_still_completes_the_call(client: Any) -> None:
    pids = list(client.run(os.getpid).values())
    assert len(pids) == 2
    items = list(range(60))
    out: list[Any] = []

    def run() -> None:
        with ParallelExecutor(ParallelConfig(strategy=client, **FORCE)) as ex:
            out.extend(ex.map(tasks.sleep_then_square, items, chunksize=2))
            out.append(ex.last_record)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.6)
    os.kill(pids[0], signal.SIGKILL)  # a worker process of the cluster this test started
    thread.join(120)
    assert not thread.is_alive()
    record = out.pop()
    assert out == [x * x for x in items]
    assert record.fallback_reason in (None, Reason.MAP_FAILURE_RETRY)


def test_an_unreachable_scheduler_falls_back_within_ten_seconds() -> None:
    require(Client is not None, "dask.distributed (extra [dask])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    FALLBACK_WARNINGS.reset()
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ParallelExecutor(ParallelConfig(strategy="dask", address=f"tcp://127.0.0.1:{closed}", **FORCE)) as ex:
            assert ex.map(tasks.square, range(40)) == [x * x for x in range(40)]
            record = ex.last_record
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert record is not None
    assert record.fallback_reason is Reason.INIT_FAILURE
    assert record.pool_start_failed
    reasons = [w.message.reason for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert reasons == [Reason.INIT_FAILURE]  # type: ignore[comparison-overlap]


def test_ce_parallel_selects_dask_with_an_address() -> None:
    cfg = ParallelConfig.from_env({"CE_PARALLEL": "dask,address=tcp://Scheduler.Example:8786"})
    assert cfg.strategy == "dask"
    assert cfg.address == "tcp://Scheduler.Example:8786"
    with pytest.raises(ValueError, match="address"):
        ParallelConfig(strategy="dask", address="scheduler:8786")
