"""payoff's own exceptions and warnings survive pickling with their fields: they cross processes (a test
runner's workers, a multiprocessing result, a logging queue) like any exception a user catches. A warning a
``-W error`` filter raised in a task of the user's own pool that did not unpickle killed that pool's result
thread (``multiprocessing.Pool.map`` hung) or broke the pool for every task (interop trial)."""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import pkgutil
import warnings
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, Reason, errors
from payoff._probe import ProbeOutlivedTimeout
from payoff.cli import UsageError
from payoff.report.cli import ReportError
from payoff.stack import FilesExist, StackError
from payoff.stack._wheel import NoWheel
from payoff.strategies._dask_init import InitializerFailed
from payoff.strategies.base import PoolClosedError
from payoff.strategies.cluster import ClusterUnreachableError
from payoff.strategies.dask import DaskKilledWorkers, DaskWorkerLost, ItemExit
from payoff.strategies.main_guard import ImportingMainError
from payoff.strategies.start_failure import ProcessesRefused
from payoff.telemetry.records import InvalidRecord, LineProblem, RecordsFileError
from payoff.telemetry.server import MetricsConfigError, MetricsExposureWarning
from payoff.telemetry.warnings import ParallelFallbackWarning, fallback_message
from tests import tasks


def _record() -> payoff.MapRecord:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(abs, range(5))
        assert ex.last_record is not None
        return ex.last_record


@pytest.mark.parametrize("detail", [
    "1 dask worker(s) (tcp://127.0.0.1:1; 1 thread(s)) left the cluster while running this call's chunks (killed, "
    "a machine gone, or retired): dask reran them on the others",
    "the dask pool broke (FutureCancelledError: run_dask_chunk-1 cancelled for reason: scheduler-restart.); "
    "lost chunks were rerun in fresh workers"])
def test_a_dask_worker_the_cluster_let_go_is_not_told_as_a_crash(detail: str) -> None:
    """A worker retired by a scale-down, or restarted by ``client.restart()``, under a call: its warning said "a
    worker died (out of memory, os._exit, a crash in native code)" (hunt 65)."""
    from payoff.record import CLUSTER_LOST_ADVICE

    record = dataclasses.replace(_record(), selected_strategy="dask", fallback_reason=Reason.MAP_FAILURE_RETRY,
                                 fallback_detail=detail)
    message = fallback_message(record)
    assert CLUSTER_LOST_ADVICE[1:] in message and "os._exit" not in message, message


CASES: list[BaseException] = [
    errors.WorkerCrashedError("item 3 crashed", item_index=3, chunk_index=1, exitcode=-11, completed={0: 1}),
    errors.ChunkKilledWorkers("chunk 2 killed its workers"),
    errors.ClusterNotReadyError("the dask cluster at tcp://127.0.0.1:8786 has no workers"),
    errors.PoolStoppedError("stopped by another call", stopped_by="call 7 (timeout=2.0)"),
    errors.PoolStartTimeoutError("start took too long", by_call=True),
    errors.WorkerInitError("initializer raised", pid=1234),
    errors.RemoteError("LocalOnlyError", "boom", "Traceback (most recent call last): ..."),
    errors.RemoteTraceback("Traceback (most recent call last): ..."),
    errors.StuckThreadsWarning("2 thread tasks still run"),
    errors.ModuleReloadedWarning("mymodule was reloaded"),
    errors.EventLoopBlockedWarning("the loop was held 0.4 s"),
    ParallelFallbackWarning("payoff: 5 items ran serially", Reason.TINY_WORKLOAD, _record()),
    ParallelFallbackWarning("payoff: an explain ran serially", Reason.UNPICKLABLE),
    ProbeOutlivedTimeout("payoff: the call did not finish within timeout=1 s", detail="its first items still ran",
                         hung=True, running=lambda: True),
    InvalidRecord("n_items", "n_items must be an int >= 0, got 'x'"),
    RecordsFileError(LineProblem("records.jsonl", 3, "n_items must be an int >= 0, got 'x'", "n_items")),
    MetricsExposureWarning("/metrics listens on 0.0.0.0 without TLS"),
    MetricsConfigError("the certificate file is missing"),
    UsageError("unknown command 'x'"),
    ReportError("no records in records.jsonl"),
    StackError("the folder is not a stack"),
    FilesExist(Path("/tmp/stack"), ["docker-compose.yml", "prometheus.yml"]),
    NoWheel("no wheel of payoff to copy"),
    PoolClosedError("the processes pool is closed"),
    ClusterUnreachableError("tcp://127.0.0.1:1 did not answer within 10 s"),
    ImportingMainError("a pool asked for while importing the main script"),
    DaskWorkerLost("the scheduler went away"),
    DaskKilledWorkers("chunk 1 killed 4 workers"),
    ItemExit(SystemExit(4)),
    InitializerFailed(ValueError("no model file")),
    ProcessesRefused("the processes pool could not start: the OS refused a new process", 10.0),
]


def _fields(error: BaseException) -> dict[str, Any]:
    """What must come back equal: the attributes but a probe's liveness check, which is of its own process."""
    return {k: (repr(v) if isinstance(v, BaseException) else v) for k, v in vars(error).items() if k != "running"}


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_an_error_round_trips_through_pickle_with_its_fields(error: BaseException) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert _fields(back) == _fields(error)


def test_a_probe_timeout_in_another_process_says_its_item_no_longer_runs_there() -> None:
    back = pickle.loads(pickle.dumps(CASES[13]))
    assert isinstance(back, ProbeOutlivedTimeout) and isinstance(back, TimeoutError) and back.running() is False


def test_a_fallback_warning_raised_in_a_task_of_the_users_own_pool_reaches_them() -> None:
    """Under ``-W error`` every payoff map inside a task of a ``ProcessPoolExecutor`` raises its fallback
    warning (such a map is nested, so serial): it did not unpickle, and the pool broke for every task."""
    import concurrent.futures
    import multiprocessing

    from tests import tasks

    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(tasks.tiny_map_under_error_filter, n) for n in (5, 6)]
        errors_seen = [f.exception(timeout=60) for f in futures]
    assert all(isinstance(e, ParallelFallbackWarning) and e.reason is Reason.NESTED for e in errors_seen), errors_seen
    assert [e.record.n_items for e in errors_seen if isinstance(e, ParallelFallbackWarning) and e.record] == [5, 6]


def test_every_exception_and_warning_payoff_defines_is_covered() -> None:
    """Every public class of the package's modules (private ones never leave payoff's own code)."""
    defined: set[type[BaseException]] = set()
    for module in pkgutil.walk_packages(payoff.__path__, "payoff."):
        if module.name.startswith(("payoff.demo", "payoff.__main__")):
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__.startswith("payoff") \
                    and not value.__name__.startswith("_"):
                defined.add(value)
    assert {c.__qualname__ for c in defined} <= {type(e).__qualname__ for e in CASES}
    assert "PoolStoppedError" in errors.__all__


@pytest.mark.parametrize(("fn", "items", "timeout", "ended"),
                         [(tasks.raise_on_three, list(range(50)), None, "it failed"),
                          (tasks.sleep_then_square, list(range(10)), 0.005, "it timed out")],
                         ids=["raised", "timed out"])
def test_a_fallback_warning_of_a_call_that_did_not_finish_says_how_many_items_ran(fn: Any, items: list[int],
                                                                              timeout: float | None,
                                                                              ended: str) -> None:
    """A call kept serial that raised (or timed out) after a few items was told as "50 items ... ran serially"
    (hunt 56, F3; failed before): it says they were planned so, and how many ran before it ended."""
    with ParallelExecutor(ParallelConfig(max_workers=1)) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises((ValueError, TimeoutError)):
            ex.map(fn, items, timeout=timeout)
        record = ex.last_record
    assert record is not None and record.fell_back and record.items_done < len(items), record.summary()
    (message,) = [str(w.message) for w in caught if issubclass(w.category, payoff.ParallelFallbackWarning)]
    assert f"were planned to run serially instead of auto, and {record.items_done:,} ran before {ended}" \
        in message, message
