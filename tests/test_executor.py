"""The executor: results, pool lifetime, failures, cancellation, bad input."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, CancelledError, ThreadPoolExecutor
from pathlib import Path

import pytest

from payoff import MapRecord, Observer, ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason, planning
from payoff.record import own_work_seconds
from tests import tasks
from tests.conftest import alive, children_of

FORCE = {"tiny_workload_threshold": 0.0}
"""Make every call parallel, whatever it costs: tests exercise the machinery, not the planner."""

STRATEGIES = ["serial", "threads", "processes", "joblib", "auto"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_results_equal_a_loop_for_every_strategy(strategy: str) -> None:
    items = list(range(257))
    with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE)) as ex:
        assert ex.map(tasks.spin, items) == [tasks.spin(x) for x in items]
        assert list(ex.imap(tasks.square, items)) == [x * x for x in items]
        record = ex.last_record
    assert record is not None
    assert record.n_items == len(items)
    assert sum(c.n_items for c in record.chunks) == len(items)
    if strategy not in ("serial", "auto"):
        assert record.selected_strategy == strategy
        assert record.mode == "parallel"


def test_a_concurrent_futures_executor_is_a_strategy_object() -> None:
    with ThreadPoolExecutor(2) as pool, ParallelExecutor(ParallelConfig(strategy=pool, **FORCE)) as ex:
        assert ex.map(tasks.square, range(50)) == [x * x for x in range(50)]
        record = ex.last_record
    assert record is not None
    assert record.decision_reason is Reason.EXPLICIT_OBJECT
    assert record.selected_strategy == "custom"
    assert record.workers == 2


def test_generators_and_empty_inputs() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE)) as ex:
        assert ex.map(tasks.square, (x for x in range(30))) == [x * x for x in range(30)]
        assert ex.map(tasks.square, []) == []
        empty = ex.last_record
    assert empty is not None
    assert empty.n_items == 0
    assert empty.fallback_reason is None


@pytest.mark.parametrize("entered", [True, False])
def test_hundred_calls_start_exactly_one_process_pool(entered: bool) -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="processes", **FORCE))
    try:
        if entered:
            ex.__enter__()
        for _ in range(100):
            assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
        records = list(ex.records)[-100:]
        assert [r.selected_strategy for r in records] == ["processes"] * 100
        assert sum(r.pool_started for r in records) == 1
        assert records[0].pool_started
        assert all(r.pool_reused for r in records[1:])
    finally:
        if entered:
            ex.__exit__(None, None, None)
        ex.close()
    assert ex.worker_pids() == []


def test_pool_survives_nested_with_and_closes_at_the_outermost_exit() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="processes", **FORCE))
    with ex:
        with ex:
            ex.map(tasks.square, range(8))
        pids = ex.worker_pids()
        assert len(pids) == 2
        ex.map(tasks.square, range(8))
        assert ex.last_record is not None
        assert ex.last_record.pool_reused
    assert ex.worker_pids() == []
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_worker_death_reruns_unfinished_items_and_next_call_gets_a_fresh_pool(tmp_path: Path) -> None:
    parent = os.getpid()
    items = [(i, parent, str(tmp_path / "died")) for i in range(40)]
    expected = [i * 10 for i in range(40)]
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        with pytest.warns(ParallelFallbackWarning) as caught:
            assert ex.map(tasks.die_once_in_worker, items, chunksize=4) == expected
        broken = ex.last_record
        assert broken is not None
        assert broken.fallback_reason is Reason.MAP_FAILURE_RETRY
        assert any(c.where == "retry" for c in broken.chunks)
        # only payoff's own: Python 3.12 adds a DeprecationWarning when the fresh pool forks beside threads
        assert [w.message.reason for w in caught  # type: ignore[union-attr]
                if isinstance(w.message, ParallelFallbackWarning)] == [Reason.MAP_FAILURE_RETRY]

        assert broken.mode == "parallel", "the lost chunks were rerun in fresh workers, not in the caller"
        assert broken.pool_started

        assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
        fresh = ex.last_record
        assert fresh is not None
        assert fresh.pool_reused, "the fresh pool the recovery started serves the next call"
        assert fresh.fallback_reason is None
        assert fresh.selected_strategy == "processes"


class BreaksOnThirdSubmit(ThreadPoolExecutor):
    """A user strategy whose pool breaks while payoff is still handing out chunks."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submits = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.submits += 1
        if self.submits == 3:
            raise BrokenExecutor("the pool broke between two submits")
        return super().submit(fn, *args, **kwargs)


def test_a_user_pool_that_breaks_on_submit_fails_the_call_and_runs_nothing_in_the_caller() -> None:
    """Its chunks not yet sent ran in the caller (``map_failure_retry``) until the pip-user trial: a user's
    process pool broken by a crashing item then ended the caller's process, and a thread pool breaks only when
    its initializer failed, which never ran in the caller. payoff cannot restart a pool it does not own."""
    pool = BreaksOnThirdSubmit()
    try:
        with ParallelExecutor(ParallelConfig(strategy=pool, **FORCE)) as ex:
            with pytest.raises(BrokenExecutor, match="user-supplied pool is broken") as raised:
                ex.map(tasks.square, range(40), chunksize=4)
            record = ex.last_record
        assert isinstance(raised.value.__cause__, BrokenExecutor)
        assert record is not None and record.outcome == "error"
        assert [c for c in record.chunks if c.where != "pool"] == [], "a chunk ran in the caller"
    finally:
        pool.shutdown()


def test_user_exception_propagates_as_itself_with_the_item_index() -> None:
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        with pytest.raises(KeyError, match="bad item 7") as info:
            ex.map(tasks.fail_on_seven, range(20), chunksize=3)
        assert any("item 7" in note for note in info.value.__notes__)
        failed = ex.last_record
        assert failed is not None
        assert failed.n_errors == 1
        assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
        assert ex.last_record is not None
        assert ex.last_record.pool_reused


@pytest.mark.parametrize("strategy", ["serial", "threads"])
def test_user_exception_in_process_strategies_too(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE)) as ex, \
            pytest.raises(KeyError) as info:
        ex.map(tasks.fail_on_seven, range(20), chunksize=3)
    assert any("item 7" in note for note in info.value.__notes__)


def test_a_lambda_under_processes_travels_by_value() -> None:
    """It ran in the caller as ``unpicklable``, though cloudpickle sends it (see test_crashes for the crash)."""
    offset = 3
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        assert ex.map(lambda x: x + offset, range(50)) == [x + 3 for x in range(50)]
        record = ex.last_record
        assert len(ex.worker_pids()) == 2
    assert record is not None
    assert (record.selected_strategy, record.fallback_reason) == ("processes", None)


def test_auto_sends_a_lambda_to_processes_by_value() -> None:
    """Not to joblib, whose pool starts ~80x slower than a fork: calls of lambdas stayed serial or ran slower
    than the loop (data-science trial)."""
    with ParallelExecutor(ParallelConfig(strategy="auto", **FORCE)) as ex:
        assert ex.map(lambda x: tasks.spin(x), range(64)) == [tasks.spin(x) for x in range(64)]
        record = ex.last_record
    assert record is not None
    assert (record.selected_strategy, record.decision_reason) == ("processes", Reason.AUTO_CPU_BOUND)


def test_auto_sends_items_only_cloudpickle_can_send_to_joblib() -> None:
    class Local(int):  # a local class: pickle cannot name it, cloudpickle sends it by value
        pass

    with ParallelExecutor(ParallelConfig(strategy="auto", **FORCE)) as ex:
        assert ex.map(tasks.spin, [Local(x) for x in range(64)]) == [tasks.spin(x) for x in range(64)]
        record = ex.last_record
    assert record is not None
    assert (record.selected_strategy, record.decision_reason) == ("joblib", Reason.AUTO_NEEDS_CLOUDPICKLE)


def test_cancel_during_a_long_processes_map_returns_fast_and_kills_workers() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="processes", **FORCE))
    ex.map(tasks.square, range(8))
    pids = ex.worker_pids()
    assert len(pids) == 2
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ex.map(tasks.long_task, range(8), chunksize=1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    ex.cancel()
    thread.join(5)
    elapsed = time.monotonic() - t0
    assert not thread.is_alive()
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert len(errors) == 1
    assert isinstance(errors[0], CancelledError)
    assert not any(alive(p) for p in pids)
    assert children_of(os.getpid()) == [] or all(p not in pids for p in children_of(os.getpid()))
    assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
    ex.close()


def test_idle_timeout_releases_the_pool() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="processes", idle_timeout=0.3, **FORCE))
    ex.map(tasks.square, range(8))
    pids = ex.worker_pids()
    assert pids
    deadline = time.monotonic() + 10
    while ex.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ex.worker_pids() == []
    assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
    assert ex.last_record is not None
    assert ex.last_record.pool_started
    ex.close()


def test_records_are_consistent() -> None:
    """Its own planner: once in a full run the process's planner held a CPU share for the sleeping function
    that other tests' calls had left, and the estimate below was priced by it."""
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), planner=planning.Planner()) as ex:
        ex.map(tasks.sleep_then_square, range(60))
        record = ex.last_record
    assert isinstance(record, MapRecord)
    assert record.busy_seconds <= record.capacity_seconds + 1e-9
    assert 0 < record.utilization <= 1
    assert record.workers > 2, "items that sleep get threads for their wait, named threads as auto's"
    assert record.n_chunks == len(record.chunks)
    assert record.task_time.count == 60
    assert record.task_time.p50 >= 0.0015
    assert record.speedup > 0
    assert record.efficiency == pytest.approx(record.speedup / record.workers)
    # sleeping items use almost no CPU, so no CPU-share correction applies: the estimate is the pool chunks'
    # timed items less their waits for a CPU (Linux schedstat; never below their CPU time) and, where the
    # call lasted long enough to sample it, less the GIL's queue their threads met (tests/test_gil_wait.py
    # prices that exactly); a probe run in the caller counts whole, as a loop there would have met the same
    # machine
    own = sum(own_work_seconds(c) if c.where == "pool" else c.busy_seconds for c in record.chunks)
    if record.gil_priced:
        assert record.serial_estimate_seconds <= own + 1e-9
    else:
        assert record.serial_estimate_seconds == pytest.approx(own)
    assert record.cpu_seconds <= record.serial_estimate_seconds <= record.busy_seconds
    assert record.to_dict()["fallback_reason"] is None
    assert f"threads x{record.workers}," in record.summary()
    assert not record.pool_shared and record.shared_seconds == 0  # alone on its pool: all of it was its capacity
    assert record.capacity_seconds == record.workers * record.wall_seconds


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_calls_sharing_a_pool_do_not_read_the_other_calls_chunks_as_idle(strategy: str, tmp_path: Path) -> None:
    """Two threads map at once on one executor (a web server's pattern): the pool's two workers run both calls'
    chunks all along. Each record counted the whole pool (workers x wall) as its own capacity, so each read
    about 50% utilization while the pool was full, and the tuning guide's reading of low utilization (too few
    chunks: a smaller chunksize) was wrong. The other call's worker time is occupied, not idle capacity."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        ex.map(tasks.square, range(4))  # the pool runs before both calls: neither pays for its start
        start = threading.Barrier(2)

        def call(mine: str, other: str) -> list[int]:
            start.wait()
            return ex.map(tasks.meet_then_nap, [(str(tmp_path), mine, other, i) for i in range(12)], chunksize=1)

        with ThreadPoolExecutor(2) as callers:
            results = list(callers.map(call, "ab", "ba"))
        records = list(ex.records)[1:]
    assert results == [list(range(12))] * 2
    assert len(records) == 2 and all(r.completed and r.workers == 2 for r in records)
    for r, other in zip(records, records[::-1], strict=True):
        assert r.pool_shared, r
        assert 0 < r.shared_seconds < r.workers * r.wall_seconds
        assert r.capacity_seconds == pytest.approx(r.workers * r.wall_seconds - r.shared_seconds)
        assert r.to_dict()["pool_shared"] and r.to_dict()["shared_seconds"] == r.shared_seconds
        # each call alone used about half the pool: the other's chunks, run beside it all along, are occupied
        # time (not a utilization bound: the sdist's run of this test, beside the suite, read 66% for one call
        # of 12 naps, its gaps between chunks idle for both calls)
        assert r.shared_seconds >= 0.6 * other.busy_seconds, (r.shared_seconds, other.busy_seconds, r.summary())
        assert r.utilization > 1.3 * r.busy_seconds / (r.workers * r.wall_seconds), r.summary()
        assert "pool shared" in r.summary()


def test_records_are_bounded() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial"), max_records=5) as ex:
        for _ in range(12):
            ex.map(tasks.square, range(3))
    assert len(ex.records) == 5
    assert [r.call_id for r in ex.records] == list(range(8, 13))
    assert [r.call_id for r in ex.records[-2:]] == [11, 12] and ex.records[-1].call_id == 12  # slices, as a list


def test_submit_like_concurrent_futures() -> None:
    with ParallelExecutor(ParallelConfig(strategy="processes")) as ex:
        assert ex.submit(tasks.square, 7).result() == 49
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        future = ex.submit(tasks.fail_on_seven, 7)
        with pytest.raises(KeyError):
            future.result()


@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib"])
def test_a_submitted_call_that_runs_says_it_is_running(strategy: str, tmp_path: Path) -> None:
    """On processes and joblib a call busy in a worker said neither running nor done (``running()`` False, state
    PENDING) while its ``cancel()`` refused as for a running call: ``concurrent.futures`` says running."""
    started, release = tmp_path / "started", tmp_path / "release"
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        future = ex.submit(tasks.square_after_saying_started, (str(started), str(release), 6))
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            assert started.exists(), "the submitted call never started"
            assert future.running() and not future.done()
            assert not future.cancel()
        finally:
            release.touch()
        assert future.result(timeout=60) == 36
        assert not future.running() and future.done()


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_submit_leaves_no_record_and_the_docs_say_so(strategy: str) -> None:
    """``submit`` is a plain future: no record, no span, no metrics, and the README says so.

    The README said payoff "records every call", yet ``last_record`` and ``records`` stay as they were after a
    submit. Recording one costs about 30 us in the caller (record and observers; measured against a 70 us
    thread round trip), and a submit has no chunks to judge against serial, so the docs now say what is recorded.
    """
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        ex.map(tasks.square, range(4))
        before = list(ex.records)
        assert ex.submit(tasks.square, 7).result() == 49
        assert list(ex.records) == before
    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    quickstart = " ".join((root / "docs" / "quickstart.md").read_text(encoding="utf-8").split())
    assert "records every call" not in readme
    for text in (readme, quickstart):
        assert "`submit` is not recorded" in text


def test_a_long_submitted_task_keeps_no_chunks_of_the_maps_beside_it() -> None:
    """A service that keeps a task submitted for hours (a watcher, a queue reader) maps beside it for days.

    The pool kept every chunk that ended while two leases were held, for the oldest lease still held to
    count what others held of its workers; a submit was such a lease though it never asks. Every chunk of
    every later map was kept while the task ran (3 per call here, 15,000 after 5,000 calls), and each call's
    record scanned them all: 4 ms per call became 14 ms. Now a submit's lease keeps nothing for itself.
    """
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=3, **FORCE)) as ex:
        gate = threading.Event()
        running = ex.submit(gate.wait, 60)
        for _ in range(20):
            assert ex.map(tasks.square, range(30), chunksize=10) == [x * x for x in range(30)]
        entry = ex._pools._current["threads"]
        kept = len(entry.spans)
        gate.set()
        assert running.result() is True
    assert kept == 0


def test_module_level_map_uses_one_shared_executor() -> None:
    import payoff

    assert payoff.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]
    assert payoff.default_executor() is payoff.default_executor()
    assert payoff.default_executor().last_record is not None


def test_the_shared_executor_outlives_a_with_block_and_a_shutdown() -> None:
    """``payoff.map`` is the module's convenience: a user who closed the shared executor (a ``with``
    around it, or ``shutdown()``) still gets a working ``payoff.map`` afterwards, on the same object."""
    import payoff

    shared = payoff.default_executor()
    with payoff.default_executor() as ex:
        assert ex.map(tasks.square, range(3)) == [0, 1, 4]
    assert payoff.map(tasks.square, range(4)) == [0, 1, 4, 9]
    payoff.default_executor().shutdown()
    assert payoff.map(tasks.square, range(2)) == [0, 1]
    assert payoff.default_executor() is shared


def test_payoff_map_follows_the_environment_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook sets ``CE_PARALLEL`` in a cell after a first ``payoff.map``: the shared executor kept the
    value it was made with, so ``CE_PARALLEL=off`` went on running on processes without a word, while a new
    ``ParallelExecutor()`` in the same cell saw it. An executor the user holds keeps its own config."""
    import payoff

    monkeypatch.delenv("PAYOFF_PARALLEL", raising=False)
    monkeypatch.setenv("CE_PARALLEL", "processes,tiny=0")
    assert payoff.map(tasks.square, range(40)) == [x * x for x in range(40)]
    held = payoff.default_executor()
    assert held.last_record is not None and held.last_record.selected_strategy == "processes"

    monkeypatch.setenv("CE_PARALLEL", "off")
    assert payoff.map(tasks.square, range(40)) == [x * x for x in range(40)]
    record = payoff.default_executor().last_record
    assert record is not None and record.selected_strategy == "serial"
    assert record.fallback_reason is Reason.DISABLED
    assert held.map(tasks.square, range(40)) == [x * x for x in range(40)]  # still usable, as configured
    assert held.last_record is not None and held.last_record.selected_strategy == "processes"
    held.shutdown()

    monkeypatch.setenv("CE_PARALLEL", "processes,workers=many")
    with pytest.raises(ValueError, match="CE_PARALLEL"):
        payoff.map(tasks.square, range(3))
    monkeypatch.setenv("CE_PARALLEL", "serial")
    assert payoff.map(tasks.square, range(3)) == [0, 1, 4]
    assert payoff.default_executor().config.strategy == "serial"


def test_payoff_map_going_back_to_an_earlier_setting_goes_back_to_its_warm_pool(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A service switching ``CE_PARALLEL`` between two values per request made a new shared executor, and
    started a cold pool, on every switch (300 pool starts in 300 calls; service trial)."""
    import payoff

    monkeypatch.delenv("PAYOFF_PARALLEL", raising=False)
    monkeypatch.setenv("CE_PARALLEL", "processes,workers=2,tiny=0")
    assert payoff.map(tasks.square, range(40)) == [x * x for x in range(40)]
    first = payoff.default_executor()
    monkeypatch.setenv("CE_PARALLEL", "threads,workers=2,tiny=0")
    assert payoff.map(tasks.square, range(40)) == [x * x for x in range(40)]
    assert payoff.default_executor() is not first
    monkeypatch.setenv("CE_PARALLEL", "processes,workers=2,tiny=0")
    assert payoff.map(tasks.square, range(40)) == [x * x for x in range(40)]
    record = payoff.default_executor().last_record
    assert payoff.default_executor() is first
    assert record is not None and record.selected_strategy == "processes"
    assert record.pool_reused and not record.pool_started
    monkeypatch.setenv("CE_PARALLEL", " Processes, workers=2, tiny=0")  # another spelling of the same setting
    assert payoff.default_executor() is first
    for setting in ("threads,workers=2,tiny=0", "processes,workers=2,tiny=0"):  # no warm pools left behind
        monkeypatch.setenv("CE_PARALLEL", setting)
        payoff.default_executor().shutdown()  # (a later payoff.map reopens it)


def test_last_record_is_the_calling_threads_own_call() -> None:
    """A service maps from several request threads on one executor: a request that logged something between
    its ``map`` and reading ``last_record`` got another request's record (2.5% of reads, helper 48). Each
    thread reads its own latest call; a thread that made none reads the executor's latest."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        mapped, other_done = threading.Event(), threading.Event()
        seen: list[str] = []

        def request() -> None:
            ex.map(tasks.square, range(3), workload="mine")
            mapped.set()
            other_done.wait(30)
            record = ex.last_record
            seen.append(record.workload if record is not None else "none")

        thread = threading.Thread(target=request)
        thread.start()
        assert mapped.wait(30)
        ex.map(tasks.square, range(4), workload="other")
        other_done.set()
        thread.join(30)
        assert seen == ["mine"]
        record = ex.last_record
        assert record is not None and record.workload == "other"
        assert [r.workload for r in ex.records] == ["mine", "other"]
        newest: list[str] = []
        reader = threading.Thread(target=lambda: newest.append(getattr(ex.last_record, "workload", "none")))
        reader.start()
        reader.join(30)
        assert newest == ["other"]


def test_bad_call_arguments_name_the_problem() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.map(42, [1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable"):
            ex.map(tasks.square, 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(tasks.square, [1], chunksize=0)
        with pytest.raises(ValueError, match="granularity"):
            ex.map(tasks.square, [1], granularity="rows")
        with pytest.raises(ValueError, match="workload"):
            ex.map(tasks.square, [1], workload="")
        with pytest.raises(ValueError, match="releases_gil"):
            ex.map(tasks.square, [1], releases_gil="yes")  # type: ignore[arg-type]
        assert ex.records == type(ex.records)(maxlen=ex.records.maxlen)
    with pytest.raises(TypeError, match="ParallelConfig"):
        ParallelExecutor({"strategy": "threads"})  # type: ignore[arg-type]


def test_a_large_function_travels_once_per_worker_not_once_per_chunk() -> None:
    import functools

    import numpy as np

    table = np.arange(200_000, dtype=np.float64)  # 1.6 MB inside the function
    fn = functools.partial(np.take, table)
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        assert ex.map(fn, list(range(300)), chunksize=10) == [float(i) for i in range(300)]
        first = ex.last_record
        assert first is not None
        assert first.n_chunks == 30
        assert table.nbytes <= first.bytes_sent <= 2 * table.nbytes + 30 * 4096
        ex.map(fn, list(range(300)), chunksize=10)
        second = ex.last_record
        assert second is not None
        # once per worker over both calls: a worker that ran none of the first call's chunks (one worker can take
        # them all on a loaded machine) loads it in the second
        assert first.bytes_sent + second.bytes_sent <= first.workers * table.nbytes + 60 * 4096


def test_a_failing_observer_is_logged_once_and_never_breaks_a_map(caplog: pytest.LogCaptureFixture) -> None:
    from payoff import Observer

    class Broken(Observer):
        calls = 0

        def map_finished(self, call: object, record: object, error: object) -> None:
            Broken.calls += 1
            raise ConnectionRefusedError("exporter down")

    with caplog.at_level("WARNING", logger="payoff"), \
            ParallelExecutor(ParallelConfig(strategy="threads", **FORCE), observers=[Broken()]) as ex:
        for _ in range(3):
            assert ex.map(tasks.square, range(20)) == [x * x for x in range(20)]
    assert Broken.calls == 3
    complaints = [r for r in caplog.records if "Broken" in r.getMessage()]
    assert len(complaints) == 1
    assert "exporter down" in complaints[0].getMessage()


class _Scoped(Observer):
    """An observer whose scope fails on the way out, or swallows what the items raise inside it."""

    def __init__(self, how: str) -> None:
        self.how = how

    @contextlib.contextmanager
    def scope(self, call: object) -> Iterator[None]:
        if self.how == "swallows":
            with contextlib.suppress(Exception):
                yield
            return
        yield
        raise ConnectionRefusedError("exporter down on the way out")


class _WarnsOnTheWayOut(Observer):
    @contextlib.contextmanager
    def scope(self, call: object) -> Iterator[None]:
        try:
            yield
        finally:
            warnings.warn("the exporter is slow", UserWarning, stacklevel=1)


def test_a_warning_an_observers_scope_makes_an_error_does_not_replace_the_items_error() -> None:
    """Under an "error" filter, a scope warning on its way out replaced the item's ValueError (review 73, R12)."""
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[_WarnsOnTheWayOut()]) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KeyError, match="bad item 7"):
            ex.map(tasks.fail_on_seven, range(20))
        with pytest.raises(UserWarning, match="the exporter is slow"):
            ex.map(tasks.square, range(20))


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_an_observers_scope_that_fails_on_exit_neither_breaks_a_map_nor_hides_its_error(
        strategy: str, caplog: pytest.LogCaptureFixture) -> None:
    """Only entering a scope was guarded: one that raised on the way out made every map raise its error, results
    lost, and one that swallowed an item's error returned 0, 125 or 500 of 1,000 results, no error (hunt 69, F1)."""
    config = ParallelConfig(strategy=strategy, max_workers=2, **FORCE)
    with caplog.at_level("WARNING", logger="payoff"), \
            ParallelExecutor(config, observers=[_Scoped("fails"), _Scoped("swallows")]) as ex:
        for _ in range(2):
            assert ex.map(tasks.square, range(200), chunksize=20) == [x * x for x in range(200)]
        with pytest.raises(KeyError, match="bad item 7"):
            ex.map(tasks.fail_on_seven, range(200), chunksize=20)
    complaints = [r.getMessage() for r in caplog.records if "_Scoped" in r.getMessage()]
    assert len(complaints) == 1 and "exporter down on the way out" in complaints[0], complaints


def test_imap_streams_results_before_the_call_finishes() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE)) as ex:
        stream = ex.imap(tasks.sleep_then_square, range(40), chunksize=2)
        first = next(stream)
        assert first == 0
        assert len(ex.records) == 0  # the call is still running: no record yet
        assert list(stream) == [x * x for x in range(1, 40)]
        assert len(ex.records) == 1


def test_observers_get_the_hooks_they_override_on_the_class_or_the_instance() -> None:
    """Hooks fan out only to observers that override them (half of a call's ~20 were no-ops); a hook set on an
    instance is an override too."""
    from payoff import Observer

    seen: list[str] = []

    class Finishes(Observer):
        def map_finished(self, call: object, record: object, error: object) -> None:
            seen.append("finished")

    plain = Observer()
    plain.map_started = lambda call: seen.append("started")  # type: ignore[method-assign]
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[Finishes(), plain]) as ex:
        ex.map(tasks.square, range(3))
    assert seen == ["started", "finished"]


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_a_slow_chunk_observer_does_not_hold_up_the_next_chunks(strategy: str, tmp_path: Path) -> None:
    """The chunks a finished one frees room for are sent before its observers run: an observer that exports
    over a network, or payoff's own metrics of every timing block, must not leave the workers waiting.

    The first chunk's observer waits for an item past the first batch of chunks sent to start; had it run
    before the refill, no such item could start and it would give up after 20 s.
    """
    from payoff import Observer
    from payoff._maprun import in_flight_limit

    first_batch = in_flight_limit(2)  # chunks of one item: items 0 .. first_batch - 1 are sent at the start
    seen: list[bool] = []

    def later_item_started() -> bool:
        return any(int(p.name) >= first_batch for p in tmp_path.iterdir())

    class Slow(Observer):
        def chunk_finished(self, call: object, chunk: object) -> None:
            if not seen:
                deadline = time.monotonic() + 20
                while not later_item_started() and time.monotonic() < deadline:
                    time.sleep(0.002)
                seen.append(later_item_started())

    items = [(str(tmp_path), x) for x in range(first_batch + 6)]
    config = ParallelConfig(strategy=strategy, max_workers=2, **FORCE)
    with ParallelExecutor(config, observers=[Slow()]) as ex:
        assert ex.map(tasks.mark_started, items, chunksize=1) == list(range(len(items)))
        record = ex.last_record
    assert record is not None and record.selected_strategy == strategy and record.n_chunks == len(items)
    assert seen == [True], "the first chunk's observer ran before the next chunk was sent"


@pytest.mark.parametrize("observers", [5, "abc", [5], [object()], "the class itself"])
def test_a_wrong_observers_argument_says_what_it_takes(observers: object) -> None:
    """``observers=5`` raised ``'int' object is not iterable`` and ``[5]`` ``type object 'int' has no attribute
    'scope'``: neither named the argument nor what it accepts, as every other argument's error does."""
    from payoff import Observer as Base

    if observers == "the class itself":
        observers = Base  # not an instance
    with pytest.raises(TypeError, match=r"observers= takes a list of payoff\.Observer instances") as raised:
        ParallelExecutor(ParallelConfig(strategy="serial"), observers=observers)  # type: ignore[arg-type]
    assert repr(observers if not isinstance(observers, list) else observers[0]) in str(raised.value)
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=(o for o in [Base()])) as ex:
        assert ex.map(tasks.square, range(3)) == [0, 1, 4]  # any iterable of observers will do


@pytest.mark.parametrize("strategy", ["processes", "joblib", "auto"])
def test_an_object_that_holds_its_executor_maps_its_own_method_in_worker_processes(strategy: str) -> None:
    """``self.ex.map(self.score, xs)`` sends the instance with its executor; the executor did not pickle (its
    locks), so every call of the pattern ran serially as ``unpicklable``, blaming a '_thread.lock'."""
    holder = tasks.HoldsItsExecutor(strategy)
    with holder.ex:  # work enough for auto to start a pool a process of the test suite's imports starts slowly
        for _ in range(2):
            out = holder.ex.map(holder.score, range(1000))
            record = holder.ex.last_record
            assert record is not None and record.fallback_reason is None, record.summary()
            assert [v for v, _ in out] == [3 * x for x in range(1000)]
            assert os.getpid() not in {pid for _, pid in out[record.probe_items:]}, record.summary()


def test_an_executor_in_another_process_is_a_fresh_one_of_the_same_config() -> None:
    """Pickled, it carries its config and nothing of its pools, records or telemetry; a map on that copy inside
    an item is a nested map (serial). Copied in this process it is itself, as a logger is: the pool lives on
    across calls, and a library that deep-copies its parameters (scikit-learn's ``clone``) starts no pools."""
    import copy
    import pickle

    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, min_batch_size=3)) as ex:
        ex.map(tasks.square, range(10))
        again = pickle.loads(pickle.dumps(ex))
        assert isinstance(again, ParallelExecutor) and again is not ex
        assert again.config == ex.config and not again.records
        assert copy.copy(ex) is ex and copy.deepcopy({"ex": ex})["ex"] is ex
        holder = tasks.HoldsItsExecutor("processes")
        with holder.ex:
            out = holder.ex.map(holder.nested, [1, 5, 9], chunksize=1)
            assert holder.ex.last_record is not None and holder.ex.last_record.selected_strategy == "processes"
    again.shutdown()
    assert out == [([x * x, (x + 1) * (x + 1)], "serial", Reason.NESTED.value) for x in (1, 5, 9)]


def test_the_executor_an_item_carries_runs_its_work_in_that_worker(tmp_path: Path) -> None:
    """In a worker, the carried executor's ``submit`` started a process pool of its own in every worker (4
    grandchildren under 2 workers), where its ``map`` runs nested, in place; and a map over nothing ran the
    worker_initializer there a second time (review of the carried executor)."""
    holder = tasks.HoldsItsInitializedExecutor(str(tmp_path))
    with holder.ex:
        out = holder.ex.map(holder.nested_empty_then_submitted, range(6), chunksize=1)
    assert all(pid == submitted and nothing == [] and children == 0 for pid, submitted, nothing, children in out), out
    runs = [p.name.split("-")[0] for p in tmp_path.iterdir()]
    assert len(runs) == len(set(runs)), f"the initializer ran more than once in a worker: {runs}"
    assert set(runs) >= {str(pid) for pid, *_ in out}


def test_an_imap_another_thread_dropped_in_a_cycle_is_not_the_last_record_of_the_thread_that_collected_it() -> None:
    """Thread A takes one result of an imap and drops it inside a reference cycle; thread B maps, then a garbage
    collection in B closes A's imap. B's ``last_record`` was A's imap (hunt 56, F2; failed before): B now reads
    its own call. A had ended, so a new thread could even have A's ident: the call's own thread object decides."""
    import gc
    import warnings

    seen: dict[str, object] = {}
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def thread_a() -> None:
            results = ex.imap(tasks.square, range(1000), workload="A-imap")
            next(results)
            holder: dict[str, object] = {"it": results}
            holder["self"] = holder  # a request's locals in a cycle
            del results, holder

        def thread_b() -> None:
            ex.map(tasks.square, range(50), workload="B-map")
            gc.collect()
            record = ex.last_record
            seen["B"] = None if record is None else (record.workload, record.n_items)

        enabled = gc.isenabled()
        gc.disable()
        try:
            for target in (thread_a, thread_b):
                thread = threading.Thread(target=target)
                thread.start()
                thread.join()
        finally:
            if enabled:
                gc.enable()
        assert [r.workload for r in ex.records] == ["B-map", "A-imap"], "the imap was closed in B, after B's map"
    assert seen["B"] == ("B-map", 50)
