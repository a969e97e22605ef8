"""Faults in the worker side of a chunk: what travels back, shipped functions, deadlines, odd exceptions."""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, Reason
from payoff._scratch import ScratchDir, sweep
from payoff.errors import RemoteTraceback
from payoff.strategies.base import ChunkTask
from payoff.strategies.processes import ByValue, ProcessStrategy
from payoff.worker import CancelToken, ShippedFn, run_chunk
from tests import tasks

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}
FORCE = {"tiny_workload_threshold": 0.0}
MODEL_BYTES = 100_000
"""Over SHIP_ONCE_BYTES: a function holding this much is left in a file for the workers."""


# -- 1. the cloudpickle backend sends back what only cloudpickle can -------------------------------

MAIN_CLASSES_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    from dataclasses import dataclass
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.errors import RemoteError

    @dataclass
    class Point:
        x: int
        y: int

    class MyError(ValueError):
        pass

    class LockedError(Exception):
        def __init__(self, msg):
            super().__init__(msg)
            self.lock = threading.Lock()

    def fail(x):
        if x == 3:
            raise MyError("bad item 3")
        return x

    def fail_locked(x):
        if x == 3:
            raise LockedError("holds a lock")
        return x

    out = {}
    config = ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0.0)
    with ParallelExecutor(config) as ex:
        try:
            points = ex.map(lambda i: Point(i, i * i), range(40), chunksize=5)
            out["points"] = all(type(p) is Point for p in points) and points == [Point(i, i * i) for i in range(40)]
            out["bytes_received"] = ex.last_record.bytes_received
        except Exception as exc:
            out["points"] = f"{type(exc).__name__}: {exc}"
        try:
            ex.map(fail, range(8), chunksize=2)
        except MyError as exc:
            out["error"] = ["MyError", type(exc) is MyError, str(exc)]
        except Exception as exc:
            out["error"] = [type(exc).__name__, False, str(exc)]
        try:
            ex.map(fail_locked, range(8), chunksize=2)
        except LockedError as exc:
            out["locked"] = ["LockedError", type(exc) is LockedError, str(exc), hasattr(exc, "lock")]
        except Exception as exc:
            out["locked"] = [type(exc).__name__, "", str(exc)]
    print(json.dumps(out), flush=True)
""")


def run_main_classes(strategy: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", MAIN_CLASSES_SCRIPT, strategy], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=CHILD_ENV)
    assert proc.returncode == 0, f"the child failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_joblib_sends_back_results_and_errors_of_classes_defined_in_main() -> None:
    """Old code: the worker pickled outcomes with stdlib pickle, which cannot name a ``__main__`` class there."""
    out = run_main_classes("joblib")
    assert out["points"] is True, out["points"]
    assert out["bytes_received"] > 0
    assert out["error"] == ["MyError", True, "bad item 3"]
    assert out["locked"] == ["LockedError", True, "holds a lock", False]


def test_processes_still_raise_a_main_exception_as_itself() -> None:
    out = run_main_classes("processes")
    assert out["error"] == ["MyError", True, "bad item 3"]
    assert out["locked"] == ["LockedError", True, "holds a lock", False]


# -- 2. a shipped function stays on disk while a chunk needs it ------------------------------------


def read_model(model: bytes, x: int) -> int:
    return model[0] + x


def wait_for_file(model: bytes, path: str, x: int) -> int:
    """Holds its worker until ``path`` exists, so the chunks behind it stay queued."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return model[0] + x


def big(k: int) -> bytes:
    return bytes([k]) * MODEL_BYTES


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_many_threads_with_their_own_large_functions_all_get_right_results(strategy: str) -> None:
    """Old code kept the 8 newest shipped files and deleted ones queued chunks still had to load."""
    users, rounds = 12, 4
    failures: list[str] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:

        def user(k: int) -> None:
            fn = functools.partial(read_model, big(k))
            for _ in range(rounds):
                try:
                    if ex.map(fn, range(60), chunksize=3) != [k + x for x in range(60)]:
                        failures.append(f"user {k}: wrong results")
                except Exception as exc:
                    failures.append(f"user {k}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a user thread hung"
    assert failures == []


def by_name(model: bytes) -> Any:
    return functools.partial(read_model, model)


def by_value(model: bytes) -> Any:
    return lambda x: read_model(model, x)  # a closure has no name: it travels by value (cloudpickle)


@pytest.mark.parametrize("make", [by_name, by_value])
def test_a_queued_chunk_keeps_its_shipped_file_after_newer_ones_are_shipped(
        tmp_path: Path, make: Callable[[bytes], Any]) -> None:
    release = str(tmp_path / "go")
    pool = ProcessStrategy(1)
    pool.start()
    try:
        blocker = pool.ship(functools.partial(wait_for_file, big(1), release))
        queued = pool.ship(make(big(2)))
        shipped = queued.fn if isinstance(queued, ByValue) else queued
        assert isinstance(shipped, ShippedFn)
        assert isinstance(queued, ByValue) == (make is by_value)
        running = pool.submit(blocker, ChunkTask(0, 0, [0]))
        tasks = [ChunkTask(1, 0, [5])]
        waiting = pool.submit(queued, tasks[0])
        path = shipped.path
        del shipped
        del queued, blocker  # the call is over: only the chunk in flight still needs the file
        gc.collect()
        for k in range(3, 14):
            pool.ship(functools.partial(read_model, big(k)))
        assert os.path.exists(path), "a queued chunk's shipped function was deleted"
        Path(release).touch()
        assert pool.collect(running.result(60), ChunkTask(0, 0, [0])).results == [1]
        outcome = pool.collect(waiting.result(60), tasks[0])
        assert outcome.error is None, outcome.error
        assert outcome.results == [7]
    finally:
        Path(release).touch()
        pool.shutdown()


# -- 3. a deadline stops a chunk in the caller before the next item, not after a block ------------


class SteppedClock(CancelToken):
    """A token whose clock stands still until the test moves it past the deadline."""

    def __init__(self) -> None:
        self.now = time.monotonic()
        super().__init__(deadline=self.now + 3600)

    def clock(self) -> float:
        return self.now


def test_a_chunk_starts_no_item_after_its_deadline() -> None:
    """Old code checked only between blocks, grown 8-fold on cheap items: a block ran on past the deadline."""
    token = SteppedClock()
    started: list[int] = []
    k = 20

    def item(i: int) -> int:
        started.append(i)
        if i == k:
            token.now += 7200  # the deadline passes while this item runs
        return i * 2

    outcome = run_chunk(item, list(range(500)), 0, 0, token)
    after = [i for i in started if i > k]
    assert len(after) <= 1, f"{len(after)} items started after the deadline"
    assert outcome.error is None
    assert outcome.results == [i * 2 for i in range(outcome.n_done)]
    assert sum(outcome.block_sizes) == outcome.n_done == len(started)
    assert len(outcome.durations_ns) == len(outcome.block_sizes)


def test_a_chunk_past_its_deadline_before_it_starts_runs_nothing() -> None:
    token = SteppedClock()
    token.now += 7200
    outcome = run_chunk(lambda i: i, list(range(50)), 0, 0, token)
    assert outcome.results == [] and sum(outcome.block_sizes) == 0 and outcome.error is None


def test_a_chunk_without_a_deadline_runs_every_item() -> None:
    outcome = run_chunk(lambda i: i + 1, list(range(5000)), 0, 0, CancelToken())
    assert outcome.results == [i + 1 for i in range(5000)]
    assert sum(outcome.block_sizes) == 5000


@pytest.mark.parametrize("strategy", ["serial", "threads", "auto"])
def test_a_timeout_in_the_caller_or_threads_runs_at_most_one_item_past_it(strategy: str) -> None:
    """Cheap items grow the blocks, then one item outlasts the timeout: no item may start after it ends."""
    timeout, workers, slow = 0.5, 2, 300
    ended: list[float] = []
    starts: list[float] = []

    def item(i: int) -> int:
        starts.append(time.monotonic())
        if i == slow:
            time.sleep(timeout + 0.5)
            ended.append(time.monotonic())
        return i

    with warnings.catch_warnings(), ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=workers)) as ex:
        warnings.simplefilter("ignore")  # a stuck thread warns; that is test_timeouts' business
        with pytest.raises(TimeoutError):
            ex.map(item, range(5000), timeout=timeout)
    _settle(starts, ended)
    assert ended, "the slow item never ran"
    late = sum(1 for s in starts if s > ended[0])
    assert late <= workers, f"{late} items started after the deadline had passed"


def _settle(starts: list[float], ended: list[float]) -> None:
    """A thread the timeout left behind may still be running items: wait until it has stopped starting them."""
    limit = time.monotonic() + 30
    while not ended and time.monotonic() < limit:
        time.sleep(0.05)
    seen = -1
    while seen != len(starts) and time.monotonic() < limit:
        seen = len(starts)
        time.sleep(0.3)


# -- 4. the user's exception always arrives, however odd ------------------------------------------


class NotesTupleError(Exception):
    pass


class StrBrokenUnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def __str__(self) -> str:
        raise RuntimeError("str broken")


def raise_notes_tuple(x: int) -> int:
    if x == 3:
        error = NotesTupleError("n")
        error.__notes__ = ("the user's own note",)  # type: ignore[assignment]
        raise error
    return x


def raise_str_broken(x: int) -> int:
    if x == 3:
        raise StrBrokenUnpicklableError()
    return x


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes", "joblib"])
def test_an_exception_whose_notes_are_a_tuple_arrives_as_itself(strategy: str) -> None:
    """Old code: ``TypeError: Cannot add note: __notes__ is not a list`` replaced it."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(NotesTupleError) as info:
        ex.map(raise_notes_tuple, range(8), chunksize=2)
    assert "the user's own note" in info.value.__notes__
    assert str(info.value) == "n"


@pytest.mark.parametrize("strategy", ["serial", "threads"])
def test_an_exception_whose_str_raises_arrives_as_itself_in_process(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(StrBrokenUnpicklableError):
        ex.map(raise_str_broken, range(8), chunksize=2)


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_unpicklable_exception_whose_str_raises_arrives_as_itself_naming_what_it_left(strategy: str) -> None:
    """Old code: ``RuntimeError: str broken`` from building the RemoteError replaced it; then a RemoteError
    naming it, which ``except StrBrokenUnpicklableError`` missed."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(StrBrokenUnpicklableError) as info:
        ex.map(raise_str_broken, range(8), chunksize=2)
    err = info.value
    assert not hasattr(err, "lock")
    notes = " ".join(getattr(err, "__notes__", []))
    assert "item 3 of the map" in notes and "attribute(s) lock could not travel" in notes, notes
    assert isinstance(err.__cause__, RemoteTraceback) and "raise_str_broken" in err.__cause__.text


def lock_then_fail(x: int) -> object:
    """Items 0-2 return what pickle refuses, item 3 raises; the chunk after it is plain."""
    if x == 3:
        raise ValueError(f"the user's error on {x}")
    return threading.Lock() if x < 3 else x


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_the_users_error_arrives_when_the_results_before_it_cannot_travel(strategy: str) -> None:
    """Old code: ``RuntimeError: ... results cannot be pickled back`` replaced the error the call was raising."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(ValueError, match="the user's error on 3"):
        ex.map(lock_then_fail, range(8), chunksize=4)


def test_a_worker_whose_parent_died_before_it_started_exits_at_once() -> None:
    """Its watcher took the parent id at start; a parent already gone left id 1 there, which never changes.

    Found when a forked child ran a joblib map and ended with ``os._exit``: a loky
    worker still starting was orphaned and polled its queue forever.
    """
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_parent = int(gone.stdout)
    code = f"from payoff.worker import init_process; init_process(None, (), {dead_parent}); import time; " \
           "time.sleep(30); print('still running')"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                           env=CHILD_ENV)
    assert child.returncode == 70 and "still running" not in child.stdout, (child.returncode, child.stderr[-800:])


# -- 9. a killed owner's folders do not stay in the temp folder forever ---------------------------

SHIPPING_SCRIPT = textwrap.dedent("""
    import functools, glob, json, os, sys, tempfile, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests.reliability.test_worker_faults import big, read_model

    ex = ParallelExecutor(ParallelConfig(strategy=sys.argv[1], tiny_workload_threshold=0.0,
                                         worker_initializer=int))
    assert ex.map(functools.partial(read_model, big(7)), range(8)) == [7 + x for x in range(8)]
    print(json.dumps(sorted(glob.glob(os.path.join(tempfile.gettempdir(), "payoff-*")))), flush=True)
    if sys.argv[2] == "stay":
        time.sleep(600)
""")


def _child_making_folders(tmp: Path, strategy: str, stay: bool) -> tuple[subprocess.Popen[str], list[str]]:
    """A child with a pool that shipped a large function and has an initializer: it has all three folders (the
    shipped function's, the initializer's, and the crash marks' that holds its file of stopped calls)."""
    child = subprocess.Popen([sys.executable, "-c", SHIPPING_SCRIPT, strategy, "stay" if stay else "leave"],
                             env={**CHILD_ENV, "TMPDIR": str(tmp)}, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"the child printed no folders: {child.stderr.read()}")
    if not stay:
        child.wait(60)
    return child, json.loads(line)


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_the_folders_of_a_killed_owner_are_removed_by_the_next_process_that_makes_one(
        tmp_path: Path, strategy: str) -> None:
    """SIGKILL (a restarted notebook kernel, the OOM killer) skips every clean-up: a shipped model stayed in
    the temp folder for good. The next payoff process that makes such a folder removes the dead owner's,
    never a live owner's (a live one's forked workers, or the owner itself, hold its lock)."""
    killed, killed_folders = _child_making_folders(tmp_path, strategy, stay=True)
    alive, both = _child_making_folders(tmp_path, strategy, stay=True)
    try:
        alive_folders = sorted(set(both) - set(killed_folders))
        assert len(killed_folders) == 3 and len(alive_folders) == 3, (killed_folders, both)
        os.kill(killed.pid, 9)
        killed.wait(10)
        deadline = time.monotonic() + 15  # until the killed pool's workers see their parent is gone
        while True:
            _, after = _child_making_folders(tmp_path, strategy, stay=False)
            left = [f for f in killed_folders if f in after]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not left, f"the killed owner's folders stayed: {left}"
        assert all(os.path.isdir(f) for f in alive_folders), "a live owner's folder was removed"
    finally:
        for child in (killed, alive):
            if child.poll() is None:
                child.kill()
            child.wait(10)


def test_a_sweep_removes_only_payoff_folders_whose_lock_is_free(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = ScratchDir("payoff-ship-")  # locked by this live process
    (tmp_path / "payoff-init-abandoned").mkdir()
    (tmp_path / "payoff-init-abandoned" / ".owner").touch()  # a lock file nobody holds
    (tmp_path / "payoff-ship-unlocked").mkdir()  # no lock file: being made, or made by an older payoff
    (tmp_path / "someone-elses").mkdir()
    (tmp_path / "someone-elses" / ".owner").touch()
    try:
        removed = sweep(str(tmp_path))
        assert removed == [str(tmp_path / "payoff-init-abandoned")]
        assert mine.exists() and (tmp_path / "payoff-ship-unlocked").is_dir() and (tmp_path / "someone-elses").is_dir()
    finally:
        mine.remove()
    assert not mine.exists()
    with pytest.raises(ValueError, match="payoff-ship-"):
        ScratchDir("other-")


def test_a_dead_worker_the_kernel_reaped_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SIGCHLD ignored (common in daemons) the kernel reaps children itself and no exit code ever lands:
    each dead worker was polled for 1 s, several times per crash, and a crashing map took 13-17 s instead of
    none (helper 28, fault 5). The poll is for a code the pool's own thread is about to read; here none is."""
    import multiprocessing.connection

    from payoff.strategies import processes

    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        proc = multiprocessing.get_context("fork").Process(target=os._exit, args=(3,))
        proc.start()
        multiprocessing.connection.wait([proc.sentinel], 10)
        polls: list[float] = []
        monkeypatch.setattr(processes.time, "sleep", polls.append)
        assert processes._exit_codes([proc]) == [None]
        assert polls == [], "waited for a code the kernel had already discarded"
    finally:
        signal.signal(signal.SIGCHLD, previous)


def _exit_once_set(go: Any, code: int) -> None:
    go.wait(10)
    os._exit(code)


def test_dead_workers_whose_codes_never_land_share_one_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's own SIGCHLD handler (or any ``waitpid(-1)``) reaps the pool's workers: their codes never land
    on the process objects. Reading the codes of a broken pool waited out the reaping grace once per dead
    worker (3 workers: 3 s); all of them now share one. The clock is a fake one that only sleeping moves."""
    import multiprocessing.connection

    from payoff.strategies import processes

    context = multiprocessing.get_context("fork")
    go = context.Event()
    procs = [context.Process(target=_exit_once_set, args=(go, 3)) for _ in range(3)]
    for proc in procs:  # none ends before the last starts: a start reaps the ended ones (multiprocessing)
        proc.start()
    go.set()
    for proc in procs:
        multiprocessing.connection.wait([proc.sentinel], 10)
        os.waitpid(proc.pid, 0)  # reaped by someone else: the object never learns the code
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(processes.time, "sleep", sleep)
    monkeypatch.setattr(processes.time, "monotonic", lambda: now[0])
    pool = processes.ProcessStrategy(3)
    pool._seen = {proc.pid: proc for proc in procs if proc.pid is not None}  # the workers it saw start
    assert pool.exit_codes() == []
    assert slept, "ended workers were not given the grace to be reaped"
    assert sum(slept) <= processes._REAPED_WAIT_SECONDS + 0.01, sum(slept)


def _manager_class(strategy: str) -> type:
    if strategy == "processes":
        from concurrent.futures import process

        return process._ExecutorManagerThread
    from joblib.externals.loky import process_executor

    return process_executor._ExecutorManagerThread


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_pool_whose_manager_thread_died_at_start_fails_at_once_saying_why(monkeypatch: pytest.MonkeyPatch,
                                                                           strategy: str) -> None:
    """Under a tight ``ulimit -u`` (which counts threads) the pool's manager thread died ("can't start new
    thread") and the start waited out pool_start_timeout (300 s) for pings nobody would answer, then advised
    raising the timeout: the stdlib pool's (hostile trial 44, F1), and loky's under joblib on each call that met
    the limit (constrained trial: 5 runs of 10 at ``ulimit -u 7``). The dead thread is seen at once."""
    def cannot_start(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_manager_class(strategy), "run", cannot_start)
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, pool_start_timeout=20)
    with ParallelExecutor(config) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ex.map(tasks.square, range(10)) == [x * x for x in range(10)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE, record.summary()
    assert "manager thread" in record.fallback_detail and "ulimit -u" in record.fallback_detail, \
        record.fallback_detail
    assert "raise pool_start_timeout" not in record.fallback_detail


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_manager_thread_the_os_refused_to_start_is_the_error_a_submit_raises(
        monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """The pool's manager thread never started ("can't start new thread", ``ulimit -u 3``): stopping the pool
    joined it, and a submit raised ``RuntimeError: cannot join thread before it is started``, which reads as a
    payoff bug (constrained trial, 2 of 2); on joblib, payoff's ``payoff-unstick`` thread died of the same. A
    submit raises the OS's refusal with payoff's note, as documented; a map falls back saying so."""
    def refused(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_manager_class(strategy), "start", refused)
    died: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, pool_start_timeout=20)
    with ParallelExecutor(config) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="can't start new thread") as info:
            ex.submit(tasks.square, 3).result(timeout=60)
        assert any("ulimit -u" in note for note in getattr(info.value, "__notes__", ())), info.value
        assert ex.map(tasks.square, range(10)) == [x * x for x in range(10)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE, record.summary()
    assert "ulimit -u" in record.fallback_detail, record.fallback_detail
    assert not died, died


def test_a_kill_from_the_pools_own_manager_thread_with_no_thread_to_spare_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ending loky's result pipe runs inline when no thread can start; a kill from the manager's own callback
    (a done-callback cancelling the call) then joined the thread it ran on: 'cannot join current thread' (review)."""
    from payoff.strategies import processes

    def refused(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    processes._unstick_later(threading.current_thread(), None)  # the manager is this thread


def test_a_threads_pool_the_os_refused_is_not_sent_to_threads() -> None:
    """The advice names the limits in force and, for a threads pool, the alternative that needs no thread."""
    from payoff.strategies.start_failure import os_refusal

    told = os_refusal("threads", RuntimeError("can't start new thread"))
    assert told is not None and "strategy='serial'" in told and "strategy='threads'" not in told, told


def test_a_thread_that_could_not_start_is_told_as_the_process_limit() -> None:
    """The same limit, met where the pool's start raises it itself."""
    from payoff.strategies.start_failure import os_refusal

    told = os_refusal("processes", RuntimeError("can't start new thread"))
    assert told is not None and "ulimit -u" in told and "counts threads" in told


def test_a_file_size_limit_is_told_as_such_not_as_a_missing_dev_shm() -> None:
    """Under ``ulimit -f 0`` making the pool's semaphores fails with EFBIG, which was told as /dev/shm missing
    or read-only (hostile trial 44, F6)."""
    import errno

    from payoff.strategies.start_failure import os_refusal

    told = os_refusal("processes", OSError(errno.EFBIG, "File too large"))
    assert told is not None and "ulimit -f" in told and "/dev/shm" not in told


def test_a_worker_that_cannot_start_its_parent_watch_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a tight ``ulimit -u`` a worker's initializer could not start the thread that watches its parent, the
    worker died, and the pool broke mid-call: the call raised WorkerCrashedError naming an innocent item, and the
    function was held for a crasher for the life of the process (hostile trial 44, F2). It runs unwatched."""
    import os
    import threading

    from payoff import worker

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    worker._watch_parent(os.getppid())  # returns: nothing to watch with, nothing to die of


def test_a_forked_child_sweeps_the_folders_left_since_its_parents_sweep(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With gunicorn's preload_app every worker was forked with the master's sweep behind it, so the folders of
    a worker killed mid-map (its shipped function, 4 MB) stayed for good (pre-fork trial 44, F6)."""
    import os
    import tempfile

    from payoff import _scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_scratch, "_swept", False)  # put back as it was after the test
    _scratch._sweep_once()  # the parent's sweep
    assert _scratch._swept
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not _scratch._swept else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child had its parent's sweep behind it"


HALF_WRITTEN = textwrap.dedent("""
    import os, sys, time
    from payoff.strategies.joblib import JoblibStrategy
    from payoff.strategies.processes import ProcessStrategy

    pool = (JoblibStrategy if sys.argv[1] == "joblib" else ProcessStrategy)(2)
    pool.start()
    manager = pool._pool._executor_manager_thread
    writer = pool._pool._result_queue._writer
    os.write(writer.fileno(), (1 << 20).to_bytes(4, "big", signed=True) + b"half")  # a 1 MiB message, begun
    time.sleep(0.2)  # the manager reads it now
    reading = manager.is_alive()
    pool.kill()
    manager.join(20)
    print(reading, manager.is_alive(), flush=True)
""")


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_pool_killed_while_a_worker_wrote_a_result_lets_its_manager_thread_end(strategy: str) -> None:
    """A worker killed halfway through writing a result (a Ctrl-C or ``timeout=`` killing a pool of short items)
    leaves half a message in the pool's result pipe: loky's manager thread then read it forever, and loky's exit
    hook joined that thread, so the program never exited after ``main`` returned (3 of 6 runs of a joblib map
    interrupted by Ctrl-C: interrupts trial). Half a message is written here as such a worker leaves it."""
    try:
        done = subprocess.run([sys.executable, "-c", HALF_WRITTEN, strategy], capture_output=True, text=True,
                              cwd=ROOT, env=CHILD_ENV, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the program never exited: its exit waited for the pool's manager thread")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "False"], (done.stdout, done.stderr[-3000:])


def test_a_chunk_sent_to_a_stopped_process_pool_leaves_no_folder_behind() -> None:
    """A call that shared a pool another call's timeout had just stopped sent its next chunk after the stop: the
    pool's folder for its workers' marks was made again (a held lock, a mapped file), and nothing removed it
    until the next process swept (review). The send fails as before, and makes nothing."""
    from payoff.strategies.base import ChunkTask
    from payoff.strategies.processes import ProcessStrategy
    from payoff.worker import CancelToken

    pool = ProcessStrategy(2)
    pool.start()
    assert pool.submit(tasks.square, ChunkTask(0, 0, [1, 2], CancelToken())).result(60) is not None
    pool.shutdown(wait=True)
    with pytest.raises(Exception, match=r"shut down|closed|stopped"):
        pool.submit(tasks.square, ChunkTask(1, 2, [3], CancelToken()))
    assert pool._marks is None, pool._marks.path
