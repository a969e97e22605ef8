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
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor
from payoff.observers import CallInfo, Observer
from tests import tasks
from tests.conftest import alive

GUARD_SECONDS = 60.0
ROOT = Path(__file__).resolve().parents[2]


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    """A scenario that may hang runs in its own process, stopped by the guard instead of hanging the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=GUARD_SECONDS, cwd=ROOT)


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


def consume_slowly(ex: ParallelExecutor, got: list[int], errors: list[BaseException], first: threading.Event) -> None:
    try:
        for value in ex.imap(tasks.sleep_then_square, range(40), chunksize=2):
            got.append(value)
            first.set()
            threading.Event().wait(0.01)  # the caller is busy with each result: the imap is paused meanwhile
    except BaseException as exc:
        errors.append(exc)
        first.set()


@pytest.mark.parametrize("wait", [True, False])
def test_an_imap_another_thread_is_reading_finishes_through_shutdown(wait: bool) -> None:
    """Only an imap paused in the shutting-down thread's own hands is detached: another thread's is running."""
    ex = ParallelExecutor(config=ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0.0))
    got: list[int] = []
    errors: list[BaseException] = []
    first = threading.Event()
    reader = threading.Thread(target=consume_slowly, args=(ex, got, errors, first), daemon=True)
    reader.start()
    assert first.wait(GUARD_SECONDS)
    ex.shutdown(wait=wait)
    reader.join(GUARD_SECONDS)
    assert not reader.is_alive()
    assert errors == [] and got == [x * x for x in range(40)]


def test_shutdown_from_a_submitted_task_does_not_wait_for_itself() -> None:
    ex = ParallelExecutor(config=ParallelConfig(strategy="threads", max_workers=2))
    future = ex.submit(ex.shutdown)
    assert future.exception(timeout=GUARD_SECONDS) is None
    assert ex.worker_pids() == []


class ShutsDownWhenFinished(Observer):
    def __init__(self) -> None:
        self.ex: ParallelExecutor | None = None

    def map_finished(self, call: CallInfo, record: object, error: BaseException | None) -> None:
        assert self.ex is not None
        self.ex.shutdown(wait=True)


@pytest.mark.parametrize("strategy", ["serial", "threads"])
def test_shutdown_from_an_observer_of_the_call_does_not_wait_for_that_call(strategy: str) -> None:
    hook = ShutsDownWhenFinished()
    ex = ParallelExecutor(config=ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0),
                          observers=[hook])
    hook.ex = ex
    done: list[list[int]] = []
    thread = threading.Thread(target=lambda: done.append(ex.map(tasks.square, range(20), chunksize=5)), daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert not thread.is_alive(), "shutdown waited for the call it was called from"
    assert done == [[x * x for x in range(20)]]


class WarnsOnStart(Observer):
    def map_started(self, call: CallInfo) -> None:
        warnings.warn("an observer that warns as the call starts", UserWarning, stacklevel=2)


def test_a_call_whose_observer_raises_at_its_start_is_not_waited_for_by_shutdown() -> None:
    """Observers' warnings reach the caller (so warnings-as-errors works): raised there, the call has ended."""
    ex = ParallelExecutor(config=ParallelConfig(strategy="threads", max_workers=2), observers=[WarnsOnStart()])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning, match="warns as the call starts"):
            ex.map(tasks.square, range(10))
    thread = threading.Thread(target=ex.shutdown, daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert not thread.is_alive(), "shutdown waited for a call that had already failed"


def test_shutdown_with_wait_joins_the_workers_of_a_pool_that_was_busy() -> None:
    ex = ParallelExecutor(config=ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0))
    started = threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), ex.map(tasks.sleep_then_square, range(60),
                                                                     chunksize=2)), daemon=True)
    ex.map(tasks.square, range(4), chunksize=1)
    pids = ex.worker_pids()
    thread.start()
    started.wait(GUARD_SECONDS)
    ex.shutdown(wait=True)
    assert pids and not any(alive(pid) for pid in pids), "a worker of the busy pool outlived shutdown(wait=True)"
    thread.join(GUARD_SECONDS)


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_shutdown_does_not_wait_for_an_imap_whose_thread_has_ended(strategy: str) -> None:
    """A thread took part of an imap and ended, its generator kept: nobody can read it, so nothing to wait for."""
    child = run_child(f"""
        import threading
        from payoff import ParallelExecutor, ParallelConfig
        from tests import tasks
        ex = ParallelExecutor(config=ParallelConfig(strategy={strategy!r}, max_workers=2))
        kept = []
        def helper():
            it = ex.imap(tasks.sleep_then_square, range(1000), chunksize=4)
            print("first", next(it), flush=True)
            kept.append(it)
        t = threading.Thread(target=helper)
        t.start(); t.join()
        ex.shutdown(wait=True)
        print("shutdown returned", flush=True)
        try:
            list(kept[0])
        except RuntimeError as exc:
            print("resumed:", "shut down" in str(exc))
        print("pids", ex.worker_pids())
    """)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["first 0", "shutdown returned", "resumed: True", "pids []"]


def test_shutdown_waiting_for_an_imap_stops_waiting_when_its_thread_ends() -> None:
    """The reader was alive when shutdown began, so shutdown waited; then it ended without finishing."""
    child = run_child("""
        import threading, time
        from payoff import ParallelExecutor, ParallelConfig
        from tests import tasks
        ex = ParallelExecutor(config=ParallelConfig(strategy="threads", max_workers=2))
        kept, go = [], threading.Event()
        def reader():
            it = ex.imap(tasks.sleep_then_square, range(1000), chunksize=4)
            next(it)
            kept.append(it)
            go.wait()
        t = threading.Thread(target=reader)
        t.start()
        while not kept:
            time.sleep(0.01)
        stopper = threading.Thread(target=ex.shutdown, kwargs={"wait": True})
        stopper.start()
        time.sleep(0.5)
        print("waiting while the reader lives:", stopper.is_alive(), flush=True)
        go.set()
        t.join()
        stopper.join(20)
        print("returned after it ended:", not stopper.is_alive(), flush=True)
    """)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["waiting while the reader lives: True", "returned after it ended: True"]


@pytest.mark.parametrize("filters", ["always", "error"])
@pytest.mark.parametrize("strategy", ["threads", "processes", "auto"])
def test_shutdown_waiting_for_an_imap_another_live_thread_keeps_paused_says_so_and_loses_nothing(
        strategy: str, filters: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A server's request thread keeps a generator paused and lives on: shutdown waited for it as long as the
    thread lived, saying nothing (soak trial, fault 3: 30 s and still waiting). Letting it go instead lost the
    results of a reader that is only slow (the review: an upload per result got 1 of 4). Shutdown still waits,
    and after ``READER_GRACE_SECONDS`` a warning names the thread; the reader then gets every result. Under
    ``-W error`` the warning, raised out of the wait, cut the shutdown short and left its pools for good (the
    second review): it is logged there instead."""
    from payoff import _maprun

    monkeypatch.setattr(_maprun, "READER_GRACE_SECONDS", 0.5, raising=False)
    ex = ParallelExecutor(config=ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0))
    got: list[int] = []
    go, took = threading.Event(), threading.Event()

    def request_thread() -> None:
        it = ex.imap(tasks.square, range(2_000), chunksize=100)
        got.append(next(it))
        took.set()
        go.wait(GUARD_SECONDS)
        got.extend(it)

    thread = threading.Thread(target=request_thread, name="request-7", daemon=True)
    thread.start()
    assert took.wait(GUARD_SECONDS)
    said: list[str] = []

    def stop() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(filters)  # type: ignore[arg-type]
            ex.shutdown(wait=True)
        said.extend(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
        said.extend(r.getMessage() for r in caplog.records if r.name == "payoff")

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    stopper.join(3.0)
    waited = stopper.is_alive()
    go.set()
    thread.join(GUARD_SECONDS)
    stopper.join(GUARD_SECONDS)
    assert waited and not stopper.is_alive(), "shutdown let go of a live reader's imap, or never returned"
    assert got == [x * x for x in range(2_000)], "the reader lost results"
    assert any("request-7" in text and "wait=False" in text for text in said), said
    assert ex._pools.current() == [] and ex.worker_pids() == [], "a pool outlived the shutdown"


REOPENED_SCRIPT = textwrap.dedent("""
    import threading, time, warnings
    warnings.simplefilter("ignore")
    import payoff
    from tests.tasks import sleep_then_square

    left = threading.Event()
    guard = time.monotonic() + 30

    def request_thread():  # a server's request handlers, mapping on the shared executor all along
        while not left.is_set() and time.monotonic() < guard:
            payoff.map(sleep_then_square, range(4))

    others = [threading.Thread(target=request_thread) for _ in range(3)]
    for t in others:
        t.start()
    time.sleep(0.3)
    with payoff.default_executor():
        payoff.map(sleep_then_square, range(4))
    left.set()
    for t in others:
        t.join()
    print("left before the guard" if time.monotonic() < guard else "left only once the others stopped")
""")


def test_leaving_with_on_the_shared_executor_waits_only_for_the_calls_running_then() -> None:
    """``payoff.default_executor()`` reopens for the next ``payoff.map``: shutdown waited for every call,
    including those other threads started after it began, so while they kept mapping it never returned.
    As in ``concurrent.futures``, it waits for the work running when it was called."""
    done = run_child(REOPENED_SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "left before the guard", done.stdout


def _new_serial_threads(before: set[int]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "payoff-serial" and t.ident not in before]


def test_the_threads_kept_to_run_items_under_a_timeout_end_with_the_executor() -> None:
    """Items payoff runs serially under a ``timeout=`` run on kept threads; 16 threads mapping at once left 16
    of them alive after ``with`` for the life of the process, where ``concurrent.futures`` leaves none."""
    from tests import tasks
    from tests.conftest import until

    before = {t.ident for t in threading.enumerate()}
    callers, peak = 6, []
    with ParallelExecutor() as ex:
        start = threading.Barrier(callers)

        def caller() -> None:
            start.wait()
            assert ex.map(tasks.sleep_then_square, range(10), timeout=30) == [x * x for x in range(10)]

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak.append(len(_new_serial_threads(before)))
    assert peak[0] >= 1, "the calls ran no item on a kept thread: nothing was tested"
    until(lambda: not _new_serial_threads(before), "the kept threads to end after shutdown", 10)


class _MapsItsOwnMethod:
    """An object that owns its executor and maps its own method, whose items map again on the same executor."""

    def __init__(self, strategy: str) -> None:
        self.ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0))
        self.inner_started = threading.Event()
        self.shut = threading.Event()

    def score_one(self, i: int) -> int:
        self.inner_started.set()
        self.shut.wait(30)  # every item maps after shutdown() was called, the first (a probe's, in the caller) too
        return sum(self.ex.map(tasks.square, range(5)))


@pytest.mark.parametrize("strategy", ["threads", "auto", "serial"])
@pytest.mark.parametrize("wait", [True, False])
@pytest.mark.parametrize("chunksize", [1, None])
def test_shutdown_lets_a_running_calls_nested_maps_finish(strategy: str, wait: bool, chunksize: int | None) -> None:
    """``shutdown()`` from another thread while a call ran whose items map on the same executor: the items' maps
    raised "cannot schedule new work after shutdown()" and the running call failed, though shutdown lets running
    calls finish (interrupts trial: 12 of 12 on threads and auto). A map from an item of a running call is part of
    that call; a new call, and a map from another thread, are still refused. With no chunk size the first items
    run in the caller's thread, as the probe (review: those still failed)."""
    model = _MapsItsOwnMethod(strategy)
    results: list[Any] = []
    outer = threading.Thread(target=lambda: results.append(model.ex.map(model.score_one, range(6),
                                                                        chunksize=chunksize)))
    outer.start()
    assert model.inner_started.wait(30)
    stopper = threading.Thread(target=model.ex.shutdown, kwargs={"wait": wait})
    stopper.start()
    try:
        deadline = time.monotonic() + 30
        while not model.ex._closed and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match="after shutdown"):
            model.ex.map(tasks.square, range(3))  # not part of the running call
    finally:
        model.shut.set()
        outer.join(60)
        stopper.join(60)
    assert results == [[30] * 6]
