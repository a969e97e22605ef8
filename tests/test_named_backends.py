"""A backend the user names is the backend that runs, cold and warm, for all but truly tiny work (issue 13)."""

from __future__ import annotations

import os

import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason
from payoff.planning import Planner
from tests import tasks


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_a_named_backend_runs_cold_and_warm(strategy: str) -> None:
    items = list(range(120))  # ~0.1-0.3 s of work: far above any backend's warm fixed cost
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        for temperature in ("cold", "warm"):
            assert ex.map(tasks.spin, items) == [tasks.spin(x) for x in items]
            record = ex.last_record
            assert record is not None
            assert record.selected_strategy == strategy, f"{temperature}: {record.summary()}"
            assert record.fallback_reason is None
            assert record.decision_reason is Reason.EXPLICIT_STRATEGY
            assert record.pool_started == (temperature == "cold")
            if temperature == "cold":
                assert record.overhead_seconds["pool_start"] > 0, "the start is paid once and shown"


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_named_process_backend_with_one_worker_is_a_pool_of_one_on_every_call(strategy: str) -> None:
    """``ProcessPoolExecutor(1)``'s promise: the items run in a worker process, not in the caller, on the first
    call and on those after it. Users name a process backend with one worker to keep a crashing or leaking
    library out of their process; a measured function ran in the caller from its second call on."""
    planner = Planner()
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=1), planner=planner) as ex:
        for call in ("first", "second", "third"):
            pids = set(ex.map(tasks.pid_after_spin, range(150)))
            record = ex.last_record
            assert record is not None
            assert os.getpid() not in pids, f"{call} call ran items in the caller: {record.summary()}"
            assert len(pids) == 1
            assert record.selected_strategy == strategy and record.workers == 1, f"{call}: {record.summary()}"
            assert record.fallback_reason is None and record.decision_reason is Reason.EXPLICIT_STRATEGY


def test_a_named_backend_still_skips_truly_tiny_work() -> None:
    """Once measured: the first call of a function never runs its items in the caller under a process backend
    (a crash there would take the caller down), so it runs on the pool the user named and measures them.

    Its own planner: the process-wide one carries what earlier tests taught it about joblib's fixed cost per
    call. The first call measures 200 items: three items in cold workers (a first call's imports) were once
    measured dear enough that three more outweighed joblib's fixed cost (1 run in 8, twice)."""
    planner = Planner()
    with ParallelExecutor(ParallelConfig(strategy="joblib", max_workers=2), planner=planner) as ex:
        assert ex.map(tasks.negate, range(200)) == [-x for x in range(200)]
        first = ex.last_record
        assert ex.map(tasks.negate, [4, 5, 6]) == [-4, -5, -6]
        record = ex.last_record
    assert first is not None and first.selected_strategy == "joblib" and first.probe_items == 0
    known = planner.knowledge.get(tasks.negate)
    assert record is not None and record.fallback_reason is Reason.TINY_WORKLOAD, (
        record.decision_reason, first.chunks, known)
    assert "fixed cost" in record.fallback_detail


@pytest.mark.parametrize("strategy", ["processes", "threads"])
def test_a_map_queued_behind_submitted_work_teaches_no_per_call_cost(strategy: str) -> None:
    """A map that waited behind ``submit`` work on its pool learned that wait as the backend's fixed cost per
    call: ~300 ms against a prior under 1 ms, for the whole process. Every later call of any function on that
    backend then ran serially as tiny work, 0.3 s of it included, and a call kept serial is never measured
    again (helper 27, fault 1)."""
    planner = Planner()
    prior = planner.costs.get(strategy).per_call
    config = ParallelConfig(strategy=strategy, max_workers=2)
    with ParallelExecutor(config, planner=planner, observers=[]) as ex:
        busy = [ex.submit(tasks.sleep_then_square, i, 0.3) for i in range(2)]  # both workers, 0.3 s
        assert ex.map(tasks.square, range(2000), chunksize=250) == [x * x for x in range(2000)]
        assert [f.result() for f in busy] == [0, 1]
        assert planner.costs.get(strategy).per_call < 10 * prior + 0.005
        items = list(range(40))
        assert ex.map(tasks.spin, items, chunksize=5) == [tasks.spin(x) for x in items]  # measured once
        assert ex.map(tasks.spin, items) == [tasks.spin(x) for x in items]
        record = ex.last_record
    assert record is not None and record.selected_strategy == strategy, record.summary()


@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("strategy", ["processes", "joblib"])
@pytest.mark.parametrize("n", [4, 1])
def test_a_named_process_backend_under_a_timeout_runs_small_calls_in_its_workers(
        strategy: str, n: int, threshold: float | None) -> None:
    """Under ``timeout=`` the items payoff runs outside a pool run on a payoff thread (the caller can leave a hung
    one behind). For a call too small for the backend the user named for its processes that was the wrong
    place: a function calling ``signal.signal`` (main thread only) raised ``ValueError`` from the second call
    on, where ``ProcessPoolExecutor`` ran it in a worker's main thread every time (hunt 58, F1), and a hung
    item left a thread stuck for good, where a worker is stopped. Such calls run in the workers, the first too:
    a ``tiny_workload_threshold`` ran its first item here to measure it (review)."""
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=threshold)
    with ParallelExecutor(config) as ex:
        for call in ("first", "second", "third"):
            where = ex.map(tasks.pid_and_main_thread, range(n), timeout=60)
            record = ex.last_record
            assert record is not None
            assert all(pid != os.getpid() and main for pid, main in where), f"{call}: {where} {record.summary()}"
            assert record.selected_strategy == strategy and record.fallback_reason is None, record.summary()
