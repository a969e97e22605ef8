"""``strategy="joblib"`` runs as many workers as a ``joblib.parallel_config(n_jobs=...)`` around the call asks,
as joblib's own ``Parallel`` does; ``max_workers`` still wins. It ran on every CPU inside one (interop trial)."""

from __future__ import annotations

import os

import pytest
from joblib import parallel_config

from payoff import ParallelConfig, ParallelExecutor
from payoff.config import usable_cpus
from payoff.reasons import Reason
from tests import tasks

FORCE = {"tiny_workload_threshold": 0, "min_batch_size": 1}


def _workers(config: ParallelConfig) -> tuple[int, int]:
    """The call's workers, and how many worker processes its pool had."""
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.spin, range(40)) == [tasks.spin(x) for x in range(40)]
        record, pids = ex.last_record, ex.worker_pids()
    assert record is not None and record.selected_strategy == "joblib", record
    return record.workers, len(pids)


@pytest.mark.parametrize(("n_jobs", "expected"), [(3, 3), (-1, usable_cpus()), (-2, max(2, usable_cpus() - 1))])
def test_a_joblib_context_sets_the_joblib_strategys_workers(n_jobs: int, expected: int) -> None:
    if n_jobs == -2 and usable_cpus() < 3:
        n_jobs = -1  # all but one of 2 CPUs is one job: joblib then runs in the caller (the test below)
    with parallel_config(n_jobs=n_jobs):
        assert _workers(ParallelConfig(strategy="joblib", **FORCE)) == (expected, expected)


def test_max_workers_wins_over_a_joblib_context() -> None:
    with parallel_config(n_jobs=3):
        assert _workers(ParallelConfig(strategy="joblib", max_workers=2, **FORCE)) == (2, 2)


def test_without_a_context_the_joblib_strategy_uses_the_usable_cpus() -> None:
    assert _workers(ParallelConfig(strategy="joblib", **FORCE))[0] == usable_cpus()


def test_a_joblib_context_does_not_size_other_strategies() -> None:
    with parallel_config(n_jobs=3), ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        ex.map(tasks.spin, range(40))
        record = ex.last_record
    assert record is not None and record.workers == usable_cpus(), record


def test_a_numpy_integer_n_jobs_counts() -> None:
    import numpy as np

    with parallel_config(n_jobs=np.int64(2)):
        assert _workers(ParallelConfig(strategy="joblib", **FORCE)) == (2, 2)


@pytest.mark.parametrize("n_jobs", [1, -usable_cpus(), "numpy"])
def test_a_joblib_context_of_one_job_runs_in_the_caller_as_joblib_does(n_jobs: int | str) -> None:
    """``parallel_config(n_jobs=1)`` is how a joblib user turns parallelism off (to debug, to profile): joblib's
    ``Parallel`` then runs its calls in the caller. payoff ran them on a pool of one worker process, slower than
    a loop, where a breakpoint or a profiler does not reach, even under thresholds that force parallel."""
    import numpy as np

    asked = np.int64(1) if n_jobs == "numpy" else n_jobs
    with parallel_config(n_jobs=asked), ParallelExecutor(ParallelConfig(strategy="joblib", **FORCE)) as ex:
        pids = ex.map(tasks.pid_of, range(40))
        record, started = ex.last_record, ex.worker_pids()
    assert set(pids) == {os.getpid()}
    assert started == []
    assert record is not None and record.selected_strategy == "serial" and record.workers == 1, record
    assert record.fallback_reason is Reason.SINGLE_WORKER, record
    assert "parallel_config(n_jobs=" in record.fallback_detail and "in the caller" in record.fallback_detail, \
        record.fallback_detail


def test_a_joblib_context_of_one_job_keeps_a_worker_initializers_pool() -> None:
    """Items of workers set up by ``worker_initializer`` never run in the caller, which it did not set up."""
    config = ParallelConfig(strategy="joblib", worker_initializer=tasks.load_model, worker_init_args=(3,), **FORCE)
    with parallel_config(n_jobs=1), ParallelExecutor(config) as ex:
        assert ex.map(tasks.predict, range(10)) == [3 * x for x in range(10)]
        record, started = ex.last_record, ex.worker_pids()
    assert record is not None and record.selected_strategy == "joblib" and record.workers == 1, record
    assert len(started) == 1 and os.getpid() not in started
