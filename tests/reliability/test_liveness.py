"""Every map ends: shutdown and cancel from other threads, pools shared by concurrent maps (issue 12).

Each test guards with a join timeout: on the old code these maps hung forever.
"""

from __future__ import annotations

import os
import random
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import CancelledError, wait
from pathlib import Path
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}
GUARD_SECONDS = 10.0


class Outcome:
    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None


def start(fn: Callable[[], Any]) -> tuple[threading.Thread, Outcome]:
    out = Outcome()

    def body() -> None:
        try:
            out.result = fn()
        except BaseException as exc:
            out.error = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def test_shutdown_without_wait_from_another_thread_never_hangs_a_running_map() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    long, long_out = start(lambda: ex.map(tasks.sleep_then_square, range(400), chunksize=100))
    time.sleep(0.2)
    short, short_out = start(lambda: ex.map(tasks.square, range(30), chunksize=5))
    time.sleep(0.2)
    ex.shutdown(wait=False)
    short.join(GUARD_SECONDS)
    long.join(GUARD_SECONDS)
    assert not short.is_alive() and not long.is_alive(), "a map hung after shutdown(wait=False)"
    assert short_out.error is None and short_out.result == [x * x for x in range(30)]
    assert long_out.error is None and long_out.result == [x * x for x in range(400)]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(tasks.square, range(10), chunksize=2)
    with ex:
        assert ex.map(tasks.square, range(10), chunksize=2) == [x * x for x in range(10)], "entered again, it runs"


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_cancel_ends_every_running_map_with_cancelled_error(strategy: str) -> None:
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE))
    runs = [start(lambda: ex.map(tasks.sleep_then_square, range(2000), chunksize=10)) for _ in range(4)]
    time.sleep(0.5)
    ex.cancel()
    for thread, _ in runs:
        thread.join(GUARD_SECONDS)
    assert not any(t.is_alive() for t, _ in runs), "a map hung after cancel()"
    for _, out in runs:
        assert isinstance(out.error, CancelledError) or out.result == [x * x for x in range(2000)]
    assert any(isinstance(out.error, CancelledError) for _, out in runs)
    assert ex.map(tasks.square, range(20), chunksize=2) == [x * x for x in range(20)], "a map after cancel runs"
    ex.close()


@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib"])
def test_cancel_while_the_pool_starts_ends_the_call_cancelled_not_as_a_failed_start(strategy: str) -> None:
    """The cancel's CancelledError out of the start was taken for a failed start: the call fell back as
    init_failure (a warning, the fallback and pool-failure metrics, the knowledge that the pool fails to start),
    ran the initializer and an item in the caller after the cancel, then raised CancelledError."""
    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.slow_load_model,
                            worker_init_args=(3, 3.0), **FORCE)
    ex = ParallelExecutor(config)
    threading.Timer(0.5, ex.cancel).start()  # the workers sleep 3 s in the initializer
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CancelledError):
            ex.map(tasks.predict, range(40))
    record = ex.last_record
    assert record is not None and record.outcome == "cancelled", record
    assert (record.fallback_reason, record.pool_start_failed, record.pool_started) == (None, False, False), record
    assert record.items_done == 0, "no item ran in the caller after the cancel"
    assert not [w for w in seen if issubclass(w.category, ParallelFallbackWarning)], [str(w.message) for w in seen]
    ex.close()


def test_cancel_while_the_pool_restarts_after_a_crash_ends_the_call_cancelled(tmp_path: Path) -> None:
    """A worker dies, the call starts a fresh pool to rerun its lost chunks, and is cancelled during that start:
    the start's CancelledError was taken for a pool that could not restart, and the call raised
    WorkerCrashedError (blaming an item) instead of CancelledError."""
    marker, starting = tmp_path / "died", tmp_path / "restarting"
    config = ParallelConfig(strategy="processes", max_workers=2, worker_initializer=tasks.stall_after_crash,
                            worker_init_args=(str(marker), str(starting)), **FORCE)
    ex = ParallelExecutor(config)

    def cancel_once_restarting() -> None:
        while not starting.exists():
            time.sleep(0.01)
        ex.cancel()

    canceller = threading.Thread(target=cancel_once_restarting, daemon=True)
    canceller.start()
    items = [(i, os.getpid(), str(marker)) for i in range(24)]
    with pytest.raises(CancelledError):
        ex.map(tasks.die_once_in_worker, items, chunksize=4)
    canceller.join(GUARD_SECONDS)
    record = ex.last_record
    assert record is not None and record.outcome == "cancelled", record
    ex.close()


def test_a_timeout_while_the_pool_restarts_after_a_crash_is_a_timeout(tmp_path: Path) -> None:
    """The restart stalls (see above) until the call's timeout runs out: a TimeoutError, not a crash of the
    lost chunk's items (it raised WorkerCrashedError)."""
    marker, starting = tmp_path / "died", tmp_path / "restarting"
    config = ParallelConfig(strategy="processes", max_workers=2, worker_initializer=tasks.stall_after_crash,
                            worker_init_args=(str(marker), str(starting)), **FORCE)
    with ParallelExecutor(config) as ex:
        items = [(i, os.getpid(), str(marker)) for i in range(24)]
        with pytest.raises(TimeoutError):
            ex.map(tasks.die_once_in_worker, items, chunksize=4, timeout=5)
        record = ex.last_record
    assert record is not None and record.outcome == "timeout", record


def test_a_map_started_after_cancel_keeps_its_pool() -> None:
    """Old code: the cancelled map discarded the shared pool the later map was using."""
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    early, early_out = start(lambda: ex.map(tasks.sleep_then_square, range(3000), chunksize=5))
    time.sleep(0.4)
    ex.cancel()
    late, late_out = start(lambda: ex.map(tasks.sleep_then_square, range(300), chunksize=5))
    early.join(GUARD_SECONDS)
    late.join(GUARD_SECONDS)
    assert not early.is_alive() and not late.is_alive()
    assert isinstance(early_out.error, CancelledError)
    assert late_out.error is None, repr(late_out.error)
    assert late_out.result == [x * x for x in range(300)]
    ex.close()


def test_live_config_change_gets_a_pool_of_the_new_size() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    ex.map(tasks.sleep_then_square, range(40), chunksize=1)
    ex.config = ex.config.with_changes(max_workers=4)
    ex.map(tasks.sleep_then_square, range(80), chunksize=1)
    record = ex.last_record
    assert record is not None and record.workers == 4
    assert len({c.worker for c in record.chunks if c.where == "pool"}) > 2, "4 threads really ran the work"
    ex.close()


def test_changed_initializer_args_and_strategy_release_the_old_pool() -> None:
    from tests.conftest import alive

    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    ex.map(tasks.square, range(20), chunksize=2)
    old = ex.worker_pids()
    assert len(old) == 2
    ex.config = ex.config.with_changes(worker_initializer=tasks.identity, worker_init_args=(1,))
    ex.map(tasks.square, range(20), chunksize=2)
    assert set(ex.worker_pids()).isdisjoint(old), "a changed initializer gets new workers"
    second = ex.worker_pids()
    ex.config = ex.config.with_changes(strategy="threads")
    assert ex.worker_pids() == [], "switching strategy releases the process pool"
    deadline = time.monotonic() + GUARD_SECONDS
    while any(alive(p) for p in [*old, *second]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in [*old, *second]), "old workers outlived the config change"
    ex.close()


def test_idle_timeout_change_applies_to_running_pools() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, idle_timeout=3600, **FORCE))
    ex.map(tasks.square, range(20), chunksize=2)
    ex.config = ex.config.with_changes(idle_timeout=0.2)
    ex.map(tasks.square, range(20), chunksize=2)
    deadline = time.monotonic() + GUARD_SECONDS
    while ex._pools.current() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ex._pools.current(), "the shorter idle timeout closed the pool"


@pytest.mark.timeout(240)
def test_stress_eight_mappers_and_a_ninth_thread_cancelling() -> None:
    """200 rounds: 8 threads share an executor while a 9th cancels or shuts down at random."""
    from payoff.telemetry import metrics_observer

    rng = random.Random(12)
    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    finished = cancelled = 0
    for _ in range(200):
        sizes = [rng.randrange(1, 60) for _ in range(8)]
        runs = [start(lambda n=n: (n, ex.map(tasks.square, range(n), chunksize=rng.randrange(1, 6))))
                for n in sizes]
        time.sleep(rng.random() * 0.004)
        action = rng.choice(["cancel", "shutdown", "shutdown_nowait", "none"])
        if action == "cancel":
            ex.cancel()
        elif action == "shutdown":
            ex.shutdown(wait=True)
        elif action == "shutdown_nowait":
            ex.shutdown(wait=False)
        for thread, _ in runs:
            thread.join(GUARD_SECONDS)
        assert not any(t.is_alive() for t, _ in runs), f"a map hung after {action}"
        if action.startswith("shutdown"):
            ex.__enter__()  # reopen for the next round, as `with ex:` would
        for _, out in runs:
            if out.error is not None:  # cancelled, or started after the shutdown closed the executor
                assert isinstance(out.error, CancelledError) or "after shutdown" in str(out.error), repr(out.error)
                cancelled += 1
                continue
            n, result = out.result
            assert result == [x * x for x in range(n)]
            finished += 1
    assert finished > 0
    assert len(ex.records) > 0 and all(r.n_items >= 0 for r in ex.records)
    registry = metrics_observer().registry
    in_flight = registry.get_sample_value("payoff_in_flight_tasks", {"strategy": "threads"})
    assert in_flight in (None, 0.0), f"in-flight gauge left at {in_flight}"
    ex.close()


def test_a_map_inside_tasks_submitted_to_its_own_threads_pool_ends() -> None:
    """Each submitted task waited for a map whose chunks queued behind those very tasks, for ever (helper 27,
    fault 3). A map inside a task submitted to the pool it would run on runs in that task, as ``nested``;
    on another pool (processes here) it runs there."""
    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    other = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE))

    def task(executor: ParallelExecutor) -> int:
        return sum(executor.map(tasks.square, range(100), chunksize=10))

    futures = [ex.submit(task, ex) for _ in range(2)]
    done, _ = wait(futures, timeout=GUARD_SECONDS)
    assert len(done) == 2, "a map inside a task submitted to its own pool hung"
    assert [f.result() for f in futures] == [sum(x * x for x in range(100))] * 2
    assert [(r.selected_strategy, r.fallback_reason) for r in ex.records] == [("serial", Reason.NESTED)] * 2
    assert ex.submit(task, other).result(timeout=GUARD_SECONDS) == sum(x * x for x in range(100))
    assert other.last_record is not None and other.last_record.selected_strategy == "processes"
    ex.shutdown()
    other.shutdown()
