"""Random draws in items: each worker process has its own stream, as each process of a loop or of joblib does.

A forked worker starts with a copy of the parent's numpy generator: with nothing done, every worker drew the
same numbers, so half the resamples of a bootstrap were repeats (data-science trial: 115 distinct means of 200,
10,523 of 20,000 under ``auto``), silently shrinking its variance.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks


@pytest.fixture
def seeded() -> Iterator[None]:
    """The parent's generator seeded, as a user's script does, and put back afterwards for the other tests."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_every_worker_draws_its_own_numbers(strategy: str, seeded: None) -> None:
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        draws = ex.map(tasks.draw_after_spin, range(60), chunksize=1)
        again = ex.map(tasks.draw_after_spin, range(60), chunksize=1)  # the same warm workers
        workers = {c.worker for c in ex.last_record.chunks if c.where == "pool"}
    assert len(workers) == 2, f"both workers must draw for the test to tell anything: {workers}"
    assert len(set(draws)) == len(draws), "two workers drew the same numbers"
    assert not set(draws) & set(again), "a warm worker repeated an earlier call's draws"


def test_a_user_initializer_that_seeds_still_decides() -> None:
    """Reseeding happens before the user's initializer, so a worker seeded on purpose draws what it was told."""
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            worker_initializer=np.random.seed, worker_init_args=(7,))
    with ParallelExecutor(config) as ex:
        draws = ex.map(tasks.draw_after_spin, range(8), chunksize=1)
        assert any(c.where == "pool" for c in ex.last_record.chunks)
    first = int(np.random.RandomState(7).randint(0, 2**62))
    assert first in draws, (first, draws)
