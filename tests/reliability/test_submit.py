"""``submit`` keeps the promises ``map`` keeps: a crash or an odd exception fails its own future only, the
pool is replaced for the next call, functions defined late in ``__main__`` run as they are now, and a
cancelled future counts as done for ``wait`` and ``as_completed``."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import BrokenExecutor, CancelledError, Future, as_completed, wait
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, planning
from payoff.errors import RemoteError, WorkerCrashedError
from tests import tasks
from tests.conftest import until

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}
PROCESS_BACKENDS = ["processes", "joblib"]


def _running(future: Future[Any]) -> bool:
    """Whether the pool took the submitted call (its own future of the call's current run says so)."""
    remote = getattr(future, "_remote", None)
    return remote is not None and remote.running()


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_a_submitted_call_that_kills_its_worker_fails_alone_and_the_next_call_gets_fresh_workers(
        strategy: str) -> None:
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0))
    try:
        with pytest.raises(BrokenExecutor):
            ex.submit(tasks.exit_on_five, 5).result(timeout=60)
        assert [ex.submit(tasks.square, x).result(timeout=60) for x in range(3)] == [0, 1, 4]
        assert ex.map(tasks.square, range(20)) == [x * x for x in range(20)]
        record = ex.last_record
        assert record is not None and record.fallback_reason is None, record.fallback_detail
        assert planning.PLANNER.knowledge.crash_of(tasks.square) is None, "an innocent function was blamed"
    finally:
        ex.shutdown()


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_a_submitted_exception_its_pickle_cannot_rebuild_arrives_as_itself_or_remote_error(strategy: str) -> None:
    """As from ``map``: the exception arrives as its class where a copy can rebuild it, else its class's name
    and message as a ``RemoteError``; the pool is not broken by it."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        error = ex.submit(tasks.raise_two_arg, 3).exception(timeout=60)
        assert isinstance(error, tasks.TwoArgError) and error.code == 42, repr(error)
        error = ex.submit(tasks.raise_two_arg_os_error, 3).exception(timeout=60)
        if isinstance(error, RemoteError):
            assert error.type_name == "tests.tasks.TwoArgOSError" and "the os error's message" in error.message
        else:  # a library in the process (tblib, via dask) can teach pickle to rebuild it faithfully
            assert type(error) is tasks.TwoArgOSError, repr(error)
        pids = ex.worker_pids()
        assert ex.submit(tasks.square, 4).result(timeout=60) == 16
        assert ex.worker_pids() == pids, "the pool was replaced: the exception broke it"


LATE_MAIN = textwrap.dedent("""
    from payoff import ParallelConfig, ParallelExecutor
    SCALE = 10
    def scaled(x):
        return x * SCALE
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0))
    print("before", ex.map(scaled, [1]), ex.submit(scaled, 1).result(timeout=60))
    SCALE = 1000  # a later notebook cell
    def later(x):  # defined after the workers started
        return -x
    print("after", ex.map(scaled, [1]), ex.submit(scaled, 1).result(timeout=60), ex.submit(later, 5).result(timeout=60))
    ex.shutdown()
""")


def test_submit_runs_main_functions_as_they_are_now_like_map() -> None:
    proc = subprocess.run([sys.executable, "-c", LATE_MAIN], cwd=ROOT, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "before [10] 10" in proc.stdout and "after [1000] 1000 -5" in proc.stdout, proc.stdout


@pytest.mark.parametrize("stop", ["cancel", "shutdown(cancel_futures=True)"])
@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib"])
def test_cancelled_submitted_calls_count_as_done_for_wait_and_as_completed(strategy: str, stop: str) -> None:
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    futures = [ex.submit(tasks.sleep_then_square, x, 0.5) for x in range(8)]
    if stop == "cancel":
        ex.cancel()
    else:
        ex.shutdown(wait=False, cancel_futures=True)
    try:
        not_done = wait(futures, timeout=60).not_done
        assert not not_done, f"{len(not_done)} futures never reported done: {[f._state for f in not_done]}"
        assert len(list(as_completed(futures, timeout=60))) == len(futures)
        stopped = [f for f in futures if f.cancelled() or f.exception() is not None]  # a kill may break, not cancel
        assert stopped, "the stop reached no call: the test did not test"
    finally:
        ex.shutdown()


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_an_argument_that_cannot_be_pickled_fails_the_future_as_concurrent_futures_does(strategy: str) -> None:
    """The stdlib pool hands the pickling error to the future, not to ``submit``; the note says which part."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        future = ex.submit(tasks.identity, threading.Lock())
        error = future.exception(timeout=60)
        assert isinstance(error, TypeError) and "lock" in str(error), repr(error)
        assert any("the submitted call's arguments cannot be pickled" in n for n in getattr(error, "__notes__", []))
        assert ex.submit(tasks.square, 5).result(timeout=60) == 25


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_a_large_submitted_function_travels_once_per_worker_and_runs(strategy: str) -> None:
    """A function over the ship-once size goes to the workers in a file, as a map's does."""
    state = bytes(range(256)) * 1024  # 256 KiB of state in the function
    fn = functools.partial(tasks.spin_with, state)
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(fn, x) for x in range(6)]] == [fn(x) for x in range(6)]


def _cancel_before_the_pool_submits(ex: ParallelExecutor) -> None:
    """The race of a ``submit`` (or a map's chunk) with ``ex.cancel()`` made deterministic: the next submit
    into the warm stdlib pool first cancels the executor, which kills that very pool, then submits into it."""
    pool = ex._pools.current()[0]._pool
    assert pool is not None
    into = pool.submit

    def racing(*args: object, **kwargs: object) -> object:
        pool.submit = into  # type: ignore[method-assign]
        ex.cancel()
        return into(*args, **kwargs)

    pool.submit = racing  # type: ignore[method-assign]


@pytest.mark.parametrize("strategy", ["processes", "threads"])
def test_a_submit_racing_cancel_never_raises_the_stdlib_after_shutdown_error(strategy: str) -> None:
    """The executor was never shut down: a submit that held the pool ``cancel()`` killed runs on a fresh one
    (it raised ``RuntimeError: cannot schedule new futures after shutdown``)."""
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    try:
        assert ex.submit(tasks.square, 2).result(timeout=60) == 4
        _cancel_before_the_pool_submits(ex)
        future = ex.submit(tasks.square, 3)
        assert future.cancelled() or future.result(timeout=60) == 9
        assert ex.submit(tasks.square, 4).result(timeout=60) == 16
    finally:
        ex.shutdown()


@pytest.mark.parametrize("strategy", ["processes", "threads"])
def test_a_map_racing_cancel_ends_cancelled_not_with_the_stdlib_after_shutdown_error(strategy: str) -> None:
    """A map whose chunk went to the pool ``cancel()`` killed ends cancelled (it raised ``RuntimeError``)."""
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0))
    try:
        assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
        _cancel_before_the_pool_submits(ex)
        with pytest.raises(CancelledError):
            ex.map(tasks.square, range(8))
        assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)]
    finally:
        ex.shutdown()


def test_cancel_ends_the_submitted_calls_it_stopped_cancelled_not_broken() -> None:
    """Calls running or already in the stdlib's call queue when ``cancel()`` kills the workers end cancelled,
    as the queued ones do: nothing crashed (they ended ``BrokenProcessPool``, "terminated abruptly")."""
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2))
    try:
        futures = [ex.submit(tasks.sleep_then_square, x, 5.0) for x in range(12)]
        until(lambda: sum(_running(f) for f in futures) >= 2, "two running calls")
        ex.cancel()
        not_done = wait(futures, timeout=60).not_done
        assert not not_done
        outcomes = [f.exception() if not f.cancelled() else "cancelled" for f in futures]
        assert outcomes == ["cancelled"] * len(futures), outcomes
        assert ex.submit(tasks.square, 3).result(timeout=60) == 9
    finally:
        ex.shutdown()


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_a_pool_that_breaks_with_a_cancelled_call_queued_ends_every_call_and_cleans_up(
        strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib manager thread failed every queued future of a broken pool with ``set_exception``, and a
    cancelled one raised ``InvalidStateError`` there: the thread died with a traceback on stderr, the futures
    after it never completed, and its queue feeder thread and pipes leaked (a racing ``cancel()`` did that).
    Every call ends: the cancelled one cancelled, the others, the killed worker's included, run again on
    fresh workers (a kill from outside: none of them killed it, and on their next run none does)."""
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    try:
        futures = [ex.submit(tasks.sleep_then_square, x, 3.0 if x < 2 else 0.01) for x in range(10)]
        until(lambda: sum(_running(f) for f in futures) >= 2, "two running calls")
        # the last call: loky marks five of ten running with two workers (its queue holds three more), and a slow
        # machine saw the seventh marked too (CI, twice on 2026-12-02)
        assert futures[-1].cancel(), "a call no worker took is cancelled"
        manager = ex._pools.current()[0]._pool._executor_manager_thread  # type: ignore[union-attr]
        pid = ex.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)  # a crash: the pool breaks with the cancelled call queued
        not_done = wait(futures, timeout=60).not_done
        assert not not_done, f"{len(not_done)} calls never completed"
        assert manager is not None
        manager.join(60)
        assert not manager.is_alive() and not died, died
        assert [f.result() for f in futures[:-1]] == [x * x for x in range(9)]  # none of them killed a worker
    finally:
        ex.cancel()  # a call that never completed would hold its pool's lease: shutdown(wait=True) waited forever
        ex.shutdown(wait=False)


def _threads_and_fds() -> tuple[set[threading.Thread], int]:
    gc.collect()  # a stopped pool's pipes close when its objects go
    return set(threading.enumerate()), len(os.listdir("/proc/self/fd"))


def _leaks(threads: set[threading.Thread], fds: int) -> str:
    """What is open now that was not before (empty: nothing), waiting a while for stopped pools to end."""
    deadline = time.monotonic() + 60
    while True:
        now, open_fds = _threads_and_fds()
        if (now <= threads and open_fds <= fds) or time.monotonic() > deadline:
            return "" if now <= threads and open_fds <= fds else f"threads {now - threads}, fds {open_fds} > {fds}"
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_cancel_racing_a_crash_with_calls_queued_ends_every_call_and_leaks_nothing(
        strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cancel()`` lands as an item's ``os._exit`` breaks the pool, with a cancelled call and others still
    queued: every call ends (the cancelled one cancelled, the others cancelled or failed as a broken pool),
    no pool thread dies of an exception, the next call gets fresh workers, and the pool's threads and pipes
    are gone after shutdown. The processes strategy once lost its manager thread this way (``_PoolFuture``)."""
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as warm:  # the backend's globals
        assert warm.submit(tasks.square, 1).result(timeout=60) == 1
    threads, fds = _threads_and_fds()
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    go = tmp_path / "crash"
    futures: list[Future[int]] = []
    try:
        futures += [ex.submit(tasks.exit_once_file_exists, str(go)),
                    *[ex.submit(tasks.sleep_then_square, x, 5.0) for x in range(8)]]
        until(lambda: sum(_running(f) for f in futures) >= 2, "two running calls")
        # calls marked running with 2 workers: up to 7 under loky (its queue of 5 refills as workers take calls
        # while the test still submits: futures[5] was taken once), 5 under the standard library
        assert futures[-1].cancel(), "a call no worker took is cancelled"
        go.touch()
        ex.cancel()  # races the crash
        not_done = wait(futures, timeout=60).not_done
        assert not not_done, f"{len(not_done)} calls never completed"
        assert futures[-1].cancelled()
        strays = [f.exception() for f in futures if not f.cancelled()
                  and not isinstance(f.exception(), BrokenExecutor)]
        assert not strays, strays
        assert ex.submit(tasks.square, 3).result(timeout=60) == 9
    finally:
        ex.cancel()
        ex.shutdown(wait=True)
    futures.clear()  # a done future keeps its pool's process objects (their pipes) as long as it is held
    leaked = _leaks(threads, fds)
    assert not leaked, leaked
    assert not died, died


_NESTED: dict[str, ParallelExecutor] = {}


def _submit_to_own_executor(x: int) -> int:
    """An item (or submitted task) that submits to the executor running it and waits for the result."""
    return _NESTED["ex"].submit(tasks.square, x).result(timeout=30)


@pytest.mark.parametrize("strategy", ["threads", "auto"])
@pytest.mark.parametrize("outer", ["map", "submit"])
def test_a_submit_from_the_pools_own_work_runs_there_instead_of_waiting_behind_itself(strategy: str,
                                                                                      outer: str) -> None:
    """Every thread of the pool ran an item that submitted to the same pool and waited: each waited for work
    queued behind itself, for ever (a 20 s timeout killed it, 3 of 3 runs). Such a submit runs in the thread
    that asked, as a serial ``submit`` does; the future it returns is done."""
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0)
    with ParallelExecutor(config) as ex:
        _NESTED["ex"] = ex
        if outer == "map":
            got = ex.map(_submit_to_own_executor, range(8), timeout=60)
        else:
            got = [f.result(timeout=60) for f in [ex.submit(_submit_to_own_executor, x) for x in range(8)]]
        assert ex.submit(tasks.square, 9).result(timeout=30) == 81  # from outside: on the pool as before
    _NESTED.clear()
    assert got == [x * x for x in range(8)]


def _late_call_race_exists() -> bool:
    """Python 3.11's ``terminate_broken`` marks the pool broken without ``submit``'s lock; from 3.12 it holds that
    lock (``with self.shutdown_lock: self._terminate_broken(cause)``): no call passes the check late, and a
    ``submit`` held inside the lock, as ``_LateItems`` holds it, would keep the pool from ever breaking."""
    import concurrent.futures.process as stdlib_process

    return not hasattr(stdlib_process._ExecutorManagerThread, "_terminate_broken")


needs_late_call_race = pytest.mark.skipif(not _late_call_race_exists(),
                                          reason="the pool marks itself broken under submit's lock (Python 3.12+)")


class _LateItems:
    """Python 3.11's pool marks itself broken outside the lock its ``submit`` holds: a call that passed the
    "broken?" check just before a worker died is put among the pending calls after the pool failed and cleared
    them. Armed, this holds the next ``submit`` between that check and its entry until then, as the race lets
    it be."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import concurrent.futures.process as stdlib_process

        self.armed = threading.Event()
        self.held = threading.Event()
        self.manager_may_end = threading.Event()
        """Set by default; cleared, the pool's manager thread waits for it before its last clean-up."""
        self.manager_may_end.set()
        self.pools: list[weakref.ref[Any]] = []  # weakly: the pool's end is part of what is tested
        real_item, late = stdlib_process._WorkItem, self

        class LateItem(real_item):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                if late.armed.is_set():
                    late.armed.clear()
                    late.held.set()
                    late.wait_for_the_break()
                super().__init__(*args)

        monkeypatch.setattr(stdlib_process, "_WorkItem", LateItem)
        real_join = stdlib_process._ExecutorManagerThread.join_executor_internals

        def join_later(manager: Any) -> None:
            assert late.manager_may_end.wait(60)
            real_join(manager)

        monkeypatch.setattr(stdlib_process._ExecutorManagerThread, "join_executor_internals", join_later)

    def watch(self, ex: ParallelExecutor) -> None:
        self.pools.append(weakref.ref(ex._pools.current()[0]._pool))  # type: ignore[union-attr]

    def pending(self) -> int:
        pool = self.pools[0]()
        return 0 if pool is None else len(pool._pending_work_items)

    def wait_for_the_break(self) -> None:
        def failed_its_calls() -> bool:
            pool = self.pools[0]()
            return pool is None or (bool(pool._broken) and not pool._pending_work_items)
        until(failed_its_calls, "the pool failed its calls")


def _a_late_call_as_the_pool_breaks(ex: ParallelExecutor, late_items: _LateItems,
                                    go: Path) -> tuple[Future[int], Future[int]]:
    """A call that kills its worker once ``go`` exists, and a call held past the pool's "broken?" check until
    that crash has made the pool fail its calls (``_LateItems``): their futures, once the late submit returned."""
    assert ex.submit(tasks.square, 2).result(timeout=60) == 4
    late_items.watch(ex)
    crash = ex.submit(tasks.exit_once_file_exists, str(go))
    late_items.armed.set()
    late: list[Future[int]] = []
    racer = threading.Thread(target=lambda: late.append(ex.submit(tasks.square, 3)))
    racer.start()
    until(late_items.held.is_set, "the late call past the pool's check")
    go.touch()
    racer.join(60)
    assert not racer.is_alive() and late, "the late submit itself never returned"
    return crash, late[0]


@needs_late_call_race
def test_a_call_sent_as_the_pool_broke_ends_instead_of_waiting_for_ever(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The late call's future was never completed (see ``_LateItems``): it must end. Lost with the pool before
    it ran, it runs again on fresh workers (``payoff._rescue``)."""
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2))
    try:
        crash, late = _a_late_call_as_the_pool_breaks(ex, _LateItems(monkeypatch), tmp_path / "crash")
        assert not wait([crash, late], timeout=60).not_done, "a call the broken pool took was never completed"
        assert isinstance(crash.exception(), WorkerCrashedError)  # it broke the pool it ran on again
        assert late.result() == 9  # lost with the pool before it ran: it ran again
        assert ex.submit(tasks.square, 4).result(timeout=60) == 16
    finally:
        ex.cancel()
        ex.shutdown(wait=False)


@needs_late_call_race
def test_a_map_whose_chunk_was_sent_as_the_pool_broke_recovers_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI on 2026-12-02: a map's recovery waited for every chunk in flight on the broken pool to end, and the
    chunk sent as the pool broke (see ``_LateItems``) never did; the map hung for good."""
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0,
                                         min_batch_size=1))
    go = tmp_path / "crash"
    outcome: list[BaseException | list[int]] = []
    try:
        assert ex.map(tasks.square, range(4)) == [0, 1, 4, 9]
        late_items = _LateItems(monkeypatch)
        late_items.watch(ex)

        def run() -> None:
            try:
                outcome.append(ex.map(functools.partial(tasks.first_exits_once_file_exists, path=str(go)),
                                      range(400), chunksize=1))
            except BaseException as exc:
                outcome.append(exc)

        mapper = threading.Thread(target=run)
        mapper.start()
        until(lambda: late_items.pending() > 2, "the map under way")
        late_items.armed.set()
        until(late_items.held.is_set, "a chunk sent past the pool's check")
        go.touch()
        mapper.join(120)
        assert not mapper.is_alive(), "the map never ended"
        error = outcome[0]
        assert isinstance(error, WorkerCrashedError) and error.item_index == 0, error
    finally:
        ex.cancel()
        ex.shutdown(wait=False)


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_calls_lost_with_a_pool_another_call_broke_run_again_and_only_that_call_fails(strategy: str) -> None:
    """Ten calls, the fourth killing its worker: in ``concurrent.futures`` the six after it fail too and nothing
    names the fourth. Here the fourth fails as the crash, naming its exit, and the nine others return; leaving
    ``with`` waits for the calls that run again, as for any submitted call."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        futures = [ex.submit(tasks.crash_or_square, x, 3, 0.05) for x in range(10)]
    assert all(f.done() for f in futures), "shutdown(wait=True) left calls running again behind"
    errors = {x: f.exception() for x, f in enumerate(futures) if f.exception() is not None}
    assert list(errors) == [3], errors
    crash = errors[3]
    assert isinstance(crash, WorkerCrashedError) and isinstance(crash, BrokenExecutor)
    assert crash.exitcode == 7 and "exit code 7" in str(crash), str(crash)
    assert "on its run 3" in str(crash), str(crash)  # a first run is unmarked, and a dead worker stands on it twice
    assert [f.result() for x, f in enumerate(futures) if x != 3] == [x * x for x in range(10) if x != 3]


@needs_late_call_race
def test_a_call_sent_as_the_pool_broke_ends_when_the_pool_is_let_go_before_its_manager_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The late call of ``_LateItems``, and the broken pool let go (``cancel()`` here; a map's recovery does it
    too) before its manager thread ended: the pool was freed and what it left pending was never looked at."""
    import gc

    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2))
    late_items = _LateItems(monkeypatch)
    late_items.manager_may_end.clear()
    try:
        crash, late = _a_late_call_as_the_pool_breaks(ex, late_items, tmp_path / "crash")
        ex.cancel()  # lets go of the broken pool before its manager thread ends
        gc.collect()
        assert late_items.pools[0]() is None, "the test holds the pool: it cannot tell"
        late_items.manager_may_end.set()
        assert not wait([crash, late], timeout=60).not_done, "a call the broken pool took was never completed"
        assert late.cancelled() or isinstance(late.exception(), BrokenExecutor)
    finally:
        late_items.manager_may_end.set()
        ex.cancel()
        ex.shutdown(wait=False)


def test_a_submitted_call_ending_in_system_exit_runs_once(tmp_path: Path) -> None:
    """``sys.exit`` in a submitted call reaches the pool's own future (the worker passes on what is no
    ``Exception``): the call failed with it, and was not taken for one a broken pool lost (it ran three times
    on three fresh pools before)."""
    runs = tmp_path / "runs"
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2)) as ex:
        future = ex.submit(tasks.count_then_exit, str(runs))
        assert not wait([future], timeout=60).not_done
        assert isinstance(future.exception(), SystemExit)
        assert ex.submit(tasks.square, 5).result(timeout=60) == 25
    assert runs.read_text().count("run") == 1


def test_a_call_waiting_to_run_again_is_cancelled_once_however_often_it_is_asked() -> None:
    """A call a broken pool lost waits for its next run with no pool future; ``cancel()`` there is the
    stdlib's: True every time once cancelled (a second cancel raised "Future in unexpected state")."""
    from payoff.strategies.processes import _Relayed

    waiting = _Relayed(Future())
    waiting._remote = None
    assert waiting.cancel() and waiting.cancel() and waiting.cancelled()
    assert not wait([waiting], timeout=0).not_done


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_submitted_calls_and_a_map_sharing_a_pool_a_map_item_broke_all_end_right(strategy: str,
                                                                                 tmp_path: Path) -> None:
    """A map item kills its worker while submitted calls wait on the same pool: the map reruns its lost
    chunks, the submitted calls lost with the pool run again (none of them killed it, so none is named), and
    every result is right; the map's recovery kills the survivors, and those are blamed on nobody (a call
    blamed for them would raise here). How many submitted calls the crash caught depends on timing (most
    runs: 6-8 of 8, `/tmp/share.py` counted); the results must be right however many."""
    marker = tmp_path / "died"
    items = [(i, str(marker)) for i in range(40)]
    outcome: list[Any] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                                         min_batch_size=1)) as ex:
        assert ex.submit(tasks.square, 1).result(timeout=60) == 1
        mapper = threading.Thread(target=lambda: outcome.append(ex.map(tasks.nap_then_die_once, items, chunksize=1)))
        mapper.start()
        until(lambda: bool(ex.records) or any(r.thread == mapper.ident for r in ex._runs), "the map under way")
        futures = [ex.submit(tasks.sleep_then_square, x, 0.1) for x in range(8)]
        mapper.join(120)
        assert not mapper.is_alive() and outcome == [[i * 10 for i in range(40)]]
        assert not wait(futures, timeout=120).not_done
        assert [f.result() for f in futures] == [x * x for x in range(8)]
    assert marker.exists(), "no worker died: the test did not test"


# -- done-callbacks: they run on a pool's own thread -----------------------------------------------------

CALLBACKS = textwrap.dedent("""
    import atexit, json, os, shutil, sys, tempfile, threading
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    strategy, case = sys.argv[1], sys.argv[2]
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0))
    out, done = {}, threading.Event()
    if case == "chain":  # concurrent.futures' "chain tasks with callbacks": each step submits the next
        steps = []

        def step(future):
            steps.append(future.result())
            if steps[-1] < 600:
                ex.submit(tasks.identity, steps[-1] + 1).add_done_callback(step)
            else:
                done.set()

        ex.submit(tasks.identity, 0).add_done_callback(step)
        out["done"] = done.wait(60)
        out["steps"] = steps == list(range(601))
    elif case == "shutdown":  # "stop once the first answer is in"
        futures = [ex.submit(tasks.sleep_then_square, x, 0.1) for x in range(4)]
        futures[0].add_done_callback(lambda f: ex.shutdown())
        out["results"] = [f.result(timeout=30) for f in futures]
    else:  # a map in a done-callback
        def mapped(future):
            out["map"] = ex.map(tasks.square, range(6))
            out["reason"] = str(ex.last_record.fallback_reason)
            done.set()

        folder = tempfile.mkdtemp()
        atexit.register(shutil.rmtree, folder, True)
        release = os.path.join(folder, "release")  # done only after the callback is added: else the
        ex.submit(tasks.square_once_file_exists, (release, 1)).add_done_callback(mapped)  # caller runs it
        open(release, "w").close()
        out["done"] = done.wait(60)
    ex.shutdown()
    print(json.dumps(out))
""")


def _callbacks(strategy: str, case: str) -> dict[str, Any]:
    import json

    proc = subprocess.run([sys.executable, "-c", CALLBACKS, strategy, case], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("strategy", ["threads", "auto", "processes"])
def test_a_chain_of_done_callbacks_each_submitting_the_next_step_runs_to_its_end(strategy: str) -> None:
    """A done-callback runs on the pool's own thread, where a submit ran inline (to spare a task that waits for
    its own submit a wait behind itself): each step ran inside the one before, RecursionError after ~490, and
    the executor's shutdown then hung for good. A callback is no task: its submit queues."""
    assert _callbacks(strategy, "chain") == {"done": True, "steps": True}


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_a_shutdown_from_a_done_callback_returns_and_every_call_completes(strategy: str) -> None:
    """On a process pool a done-callback runs on its result thread: a shutdown there waited for that very
    thread, the other calls never completed, and the program never ended (2 of 2 runs)."""
    assert _callbacks(strategy, "shutdown") == {"results": [0, 1, 4, 9]}


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_a_map_in_a_done_callback_runs_where_it_was_called(strategy: str) -> None:
    """A map in a done-callback of a process pool waited for results only the thread it ran on could bring
    (it hung for good, as concurrent.futures' process pool does): it runs there, said as nested."""
    assert _callbacks(strategy, "map") == {"done": True, "map": [x * x for x in range(6)],
                                           "reason": "nested"}


def _kill_a_worker(ex: ParallelExecutor, k: int) -> None:
    """SIGKILL one of the pool's live workers; on a loaded machine the pool the last kill broke may still be
    replacing its workers (none listed yet, or one listed that died with it: the suite at load 5)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = ex.worker_pids()
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[k % len(pids)], signal.SIGKILL)
                return
        time.sleep(0.05)
    raise AssertionError("no live worker to kill within 60 s")


@pytest.mark.parametrize("strategy", PROCESS_BACKENDS)
def test_submitted_calls_survive_two_workers_killed_from_outside(strategy: str) -> None:
    """Two workers killed from outside (the OOM killer, an operator), 0.6 s apart, while 100 harmless calls run:
    the first kill's lost calls ran again marked, and the one the second kill hit failed as the crash, named
    "this submitted call killed the worker process running it" (soak trial, fault 4: 4 of 4). A call is blamed
    only when a dead worker stood on it twice."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        assert ex.submit(tasks.nap_ms, 0).result(timeout=120) == 0
        futures = [ex.submit(tasks.nap_ms, 50) for _ in range(100)]
        for k in range(2):
            time.sleep(0.6)
            _kill_a_worker(ex, k)
        errors = [f.exception(timeout=120) for f in futures]
    assert [e for e in errors if e is not None] == [], errors
    assert [f.result() for f in futures] == [50] * 100


def _submit_in_a_daemon(strategy: str, out: Any) -> None:
    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.load_model,
                            worker_init_args=(1,))  # the caller runs it as the worker, as a map there does
    with ParallelExecutor(config) as ex:
        try:
            submitted: object = ex.submit(tasks.predict, 49).result(timeout=60)
        except BaseException as exc:  # what reached the caller is the finding
            submitted = repr(exc)
        mapped = ex.map(tasks.square, range(4))
        record = ex.last_record
        out.put((submitted, mapped, None if record is None else record.fallback_reason))


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_submit_in_a_daemonic_process_runs_in_it_as_a_map_there_does(strategy: str) -> None:
    """In a daemonic process (a ``multiprocessing.Pool``'s worker), which may start no processes, a ``map``
    ran serially (``nested``) and ``submit`` raised a bare AssertionError from multiprocessing (hunt 60)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_submit_in_a_daemon, args=(strategy, out), daemon=True)
    child.start()
    try:
        submitted, mapped, reason = out.get(timeout=90)
    finally:
        child.join(30)
    assert submitted == 49, submitted
    assert mapped == [0, 1, 4, 9] and reason is payoff.Reason.NESTED, (mapped, reason)


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_map_in_a_submitted_task_on_worker_processes_is_not_told_as_inside_an_item(strategy: str) -> None:
    """It runs serially as nested, rightly, but its record said "called from inside an item of another payoff
    map" where no map ran (hunt 63, F3); under threads it named the submitted task."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        reason, detail = ex.submit(tasks.detail_of_a_map_here, "processes").result(timeout=120)
    assert reason == "nested" and "submit()" in detail, detail
    assert not detail.startswith("map called from inside an item"), detail


def test_a_map_in_a_thread_an_item_started_in_a_worker_process_is_not_told_as_a_submitted_task() -> None:
    """The thread inherits no mark of the item it came from: its map was told as "by a task given to submit()"
    (review 67). Where payoff cannot tell which, the detail names every case, that thread's included."""
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        details = ex.map(tasks.detail_of_a_map_in_a_thread_here, range(2))
    assert all(reason == "nested" and "a thread one of them started" in detail for reason, detail in details), \
        details
