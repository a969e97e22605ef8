"""What ``shutdown`` owes work it did not start itself: a paused ``imap``, ``submit`` futures, a pool mid-start.

Found by an adversarial run of the public API: leaving ``with`` after taking
part of an ``imap`` hung forever, leaving ``with`` cancelled submitted work,
the idle timer killed it, and a shutdown during a pool's start left that pool
running. Each test guards with a join timeout or a child process: on the old
code they hung or lost work.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from payoff import ParallelConfig, ParallelExecutor
from payoff.observers import CallInfo, Observer
from tests import tasks

GUARD_SECONDS = 60.0


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    """A scenario that may hang runs in its own process, stopped by the guard instead of hanging the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=GUARD_SECONDS, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_leaving_with_after_part_of_an_imap_neither_hangs_nor_lets_it_go_on(strategy: str) -> None:
    child = run_child(f"""
        import time
        from payoff import ParallelExecutor, ParallelConfig
        from tests import tasks
        with ParallelExecutor(config=ParallelConfig(strategy={strategy!r}, max_workers=2)) as ex:
            it = ex.imap(tasks.sleep_then_square, range(100), chunksize=4)
            print("first", next(it), flush=True)
        print("left with", flush=True)
        more = []
        try:
            for x in it:
                more.append(x)
        except RuntimeError as exc:
            print("resumed:", len(more), "more results, then", exc)
        print("pools", len(ex._pools.current()), "pids", ex.worker_pids())
    """)
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines[:2] == ["first 0", "left with"]
    assert lines[2].startswith("resumed:") and "shut down" in lines[2], lines
    assert int(lines[2].split()[1]) <= 3, "only the rest of the chunk already in the caller's hands"
    assert lines[3] == "pools 0 pids []"


@pytest.mark.parametrize("strategy", ["auto", "threads", "processes", "joblib"])
def test_leaving_with_waits_for_submitted_work_like_concurrent_futures(strategy: str) -> None:
    with ParallelExecutor(config=ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        futures = [ex.submit(tasks.sleep_then_square, i, 0.2) for i in range(6)]
    assert [f.result(timeout=GUARD_SECONDS) for f in futures] == [i * i for i in range(6)]
    assert ex.worker_pids() == []


@pytest.mark.parametrize("strategy", ["threads", "joblib"])
def test_the_idle_timer_never_stops_submitted_work(strategy: str) -> None:
    ex = ParallelExecutor(config=ParallelConfig(strategy=strategy, max_workers=2, idle_timeout=0.5))
    try:
        future = ex.submit(tasks.sleep_then_square, 3, 2.0)
        assert future.result(timeout=GUARD_SECONDS) == 9
    finally:
        ex.shutdown()


class Started(Observer, threading.Event):
    def map_started(self, call: CallInfo) -> None:
        self.set()


@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib"])
def test_shutdown_during_a_pool_start_waits_for_the_map_and_leaves_no_pool(strategy: str) -> None:
    started = Started()
    ex = ParallelExecutor(config=ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0),
                          observers=[started])
    results: list[list[int]] = []
    thread = threading.Thread(target=lambda: results.append(
        ex.map(tasks.sleep_then_square, range(60), chunksize=5)), daemon=True)
    thread.start()
    assert started.wait(GUARD_SECONDS)  # the map has begun: it plans, then starts its pool
    ex.shutdown(wait=True)
    record = ex.last_record
    assert record is not None and record.n_items == 60, "shutdown(wait=True) returned before the map ended"
    thread.join(GUARD_SECONDS)
    assert results == [[x * x for x in range(60)]]
    assert ex._pools.current() == [] and ex.worker_pids() == [], "a pool outlived the shutdown"
