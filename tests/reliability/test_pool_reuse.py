"""A thread pool lives across calls whose worker counts differ: auto sizes threads for waiting work from each
call's items and wait, and ``submit`` asks for the cores; a larger warm pool serves them all, and runs each
call with the workers it planned. Before, every change of count started a new pool (and its initializer ran
on every new thread)."""

from __future__ import annotations

from payoff import ParallelConfig, ParallelExecutor, planning
from payoff._pools import PoolRegistry, pool_key
from payoff.strategies import make_strategy
from tests import tasks


def _lease(registry: PoolRegistry, config: ParallelConfig, strategy: str, workers: int) -> object:
    lease = registry.lease(pool_key(config, strategy, workers), lambda: make_strategy(strategy, workers, config))
    registry.release(lease)
    return lease.pool


def test_a_warm_thread_pool_serves_calls_that_need_fewer_threads_and_grows_for_more() -> None:
    config, registry = ParallelConfig(), PoolRegistry()
    try:
        eight = _lease(registry, config, "threads", 8)
        assert _lease(registry, config, "threads", 3) is eight
        sixteen = _lease(registry, config, "threads", 16)
        assert sixteen is not eight
        assert _lease(registry, config, "threads", 8) is sixteen
    finally:
        registry.kill_all()


def test_process_pools_still_match_their_worker_count_exactly() -> None:
    """A process is a whole interpreter and a core's worth of work: no call gets more of them than it planned."""
    config, registry = ParallelConfig(), PoolRegistry()
    try:
        assert _lease(registry, config, "processes", 1) is not _lease(registry, config, "processes", 2)
    finally:
        registry.kill_all()


def test_auto_calls_of_changing_sizes_and_submits_share_one_thread_pool() -> None:
    """Waiting work: auto runs as many threads as a call's items and wait need, so each size asked for
    another count; the first pool serves every later call and submit. Its own planner: what the process's
    planner learned from other tests' calls of the function, and their calls that ended just before, are not
    this test's (once in a full run its first call went to processes on them). The small calls have 3 and 2
    items: a noisy CI host read a first call's CPU share as 0.2 (10 threads), as many as a 10-item call got."""
    ex = ParallelExecutor(ParallelConfig(tiny_workload_threshold=0.0), planner=planning.Planner())
    try:
        records = []
        for n in (100, 3, 100, 2):  # waiting work below the threads line wants >= 4 threads for 100 items
            assert ex.map(tasks.sleep_then_square, range(n)) == [x * x for x in range(n)]
            records.append(ex.last_record)
            assert ex.submit(tasks.square, 3).result(timeout=30) == 9
        assert all(r is not None and r.selected_strategy == "threads" for r in records), [
            (r.selected_strategy, r.decision_reason, r.fallback_reason, r.fallback_detail, r.workers) for r in records
            if r is not None]
        workers = [r.workers for r in records]  # type: ignore[union-attr]
        started = [r.pool_started for r in records]  # type: ignore[union-attr]
        assert started[0] and not started[1] and workers[1] < workers[0]
        for i in range(1, len(records)):  # a pool starts only to grow: auto re-reads the wait after each call
            assert started[i] == (workers[i] > max(workers[:i])), (workers, started)
    finally:
        ex.shutdown()
