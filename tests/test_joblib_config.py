"""``strategy="joblib"`` runs as many workers as a ``joblib.parallel_config(n_jobs=...)`` around the call asks,
as joblib's own ``Parallel`` does; ``max_workers`` still wins. It ran on every CPU inside one (interop trial)."""

from __future__ import annotations

import pytest
from joblib import parallel_config

from payoff import ParallelConfig, ParallelExecutor
from payoff.config import usable_cpus
from tests import tasks

FORCE = {"tiny_workload_threshold": 0, "min_batch_size": 1}


def _workers(config: ParallelConfig) -> tuple[int, int]:
    """The call's workers, and how many worker processes its pool had."""
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.spin, range(40)) == [tasks.spin(x) for x in range(40)]
        record, pids = ex.last_record, ex.worker_pids()
    assert record is not None and record.selected_strategy == "joblib", record
    return record.workers, len(pids)


@pytest.mark.parametrize(("n_jobs", "expected"), [(1, 1), (3, 3), (-1, usable_cpus()),
                                                   (-2, max(1, usable_cpus() - 1))])
def test_a_joblib_context_sets_the_joblib_strategys_workers(n_jobs: int, expected: int) -> None:
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

    with parallel_config(n_jobs=np.int64(1)):
        assert _workers(ParallelConfig(strategy="joblib", **FORCE)) == (1, 1)
