"""``timeout=`` ends a call and leaves no worker behind; workers die with their parent (issue 12)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import MapRecord, ParallelConfig, ParallelExecutor, Reason, _probe, planning
from payoff.errors import StuckThreadsWarning
from tests import tasks
from tests.conftest import alive

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}
"""Children import the payoff this test imported (a checkout's src/ or an installed copy) and the tests package."""
FORCE = {"tiny_workload_threshold": 0.0}


def wait_dead(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_timeout_kills_the_workers_and_the_next_map_runs(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        ex.map(tasks.square, range(8), chunksize=1)
        pids = ex.worker_pids()
        with pytest.raises(TimeoutError, match=r"timeout=0\.5"):
            ex.map(tasks.sleep_forever, range(4), chunksize=1, timeout=0.5)
        assert wait_dead(pids), "a worker busy in a timed-out task survived"
        assert ex.map(tasks.square, range(8), chunksize=1) == [x * x for x in range(8)]


def test_timeout_under_threads_warns_honestly_and_keeps_the_executor_usable() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
        with pytest.raises(TimeoutError), pytest.warns(StuckThreadsWarning, match="cannot stop a thread") as seen:
            ex.map(tasks.sleep_forever, range(2), chunksize=1, timeout=0.3)
        assert [Path(w.filename).name for w in seen] == [Path(__file__).name], "it points at the user's line"
        assert ex.map(tasks.square, range(8), chunksize=1) == [x * x for x in range(8)]
        record = ex.last_record
        assert record is not None and record.workers == 2


def test_a_timeout_on_threads_counts_the_items_its_stopped_chunks_ran() -> None:
    """Thread chunks stop at their next item once the call times out; the items they ran are work done (the
    record read "0 of 200 items done" with about 50 run, and utilization and speedup read nothing)."""
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
        with pytest.raises(TimeoutError):
            ex.map(tasks.nap_ms, [20] * 200, chunksize=100, timeout=1.0)
        record = ex.last_record
        assert record is not None and record.outcome == "timeout"
        assert 0 < record.items_done < 200, record.summary()
        assert record.items_done == sum(c.n_items for c in record.chunks)
        assert {c.where for c in record.chunks} == {"pool"}


def test_timeout_in_the_caller_stops_between_items() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex, pytest.raises(TimeoutError):
        ex.map(tasks.sleep_then_square, range(10_000), timeout=0.2)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), "1", True])
def test_bad_timeouts_are_refused(bad: object) -> None:
    with ParallelExecutor() as ex, pytest.raises(ValueError, match="timeout must be"):
        ex.map(abs, [1], timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("spent", [0, 0.0, -1, -0.25])
@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered", "starmap"])
def test_a_timeout_already_run_out_raises_timeout_error_as_concurrent_futures_does(spent: float,
                                                                                    method: str) -> None:
    """``deadline - time.monotonic()`` passed as the timeout reaches 0 or below once the deadline is past:
    ``concurrent.futures`` raises ``TimeoutError`` then, where payoff raised ``ValueError``."""
    ran: list[int] = []
    args = [(1,)] if method == "starmap" else [1]
    with ParallelExecutor() as ex, pytest.raises(TimeoutError, match="had run out before the call started"):
        list(getattr(ex, method)(ran.append, args, timeout=spent))
    assert ran == [], "no item runs on a timeout already spent"


@pytest.mark.parametrize("strategy", ["auto", "serial", "threads", "processes"])
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_an_imaps_timeout_counts_from_the_call_not_from_its_first_next(strategy: str, method: str) -> None:
    """``concurrent.futures``' map and the error's own words ("within timeout= of the call") count from the
    call; the deadline was set at the first ``next()``, so a consumer that came late got its whole timeout
    again (1.8 s after the call for ``timeout=1``, 3 of 3 runs). Asked past its deadline, no item runs."""
    ran: list[int] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex:
        results = getattr(ex, method)(ran.append, range(5), timeout=0.2)
        time.sleep(0.3)  # past the deadline before the first next(): no timing is measured, only the order
        with pytest.raises(TimeoutError):
            next(results)
    assert ran == []


def _slow_first_item() -> Iterator[int]:
    time.sleep(0.3)
    yield from range(5)


def test_an_imap_whose_input_spent_the_timeout_runs_no_item_after_it() -> None:
    """Reading a slow input's first item spent all of ``timeout=0.2``: the probe's thread was still started, with
    no time left, ran the item after the deadline in the background and warned of a stuck thread that was not."""
    ran: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", StuckThreadsWarning)
        with ParallelExecutor() as ex, pytest.raises(TimeoutError, match="no item ran"):
            list(ex.imap(ran.append, _slow_first_item(), timeout=0.2))
    time.sleep(0.2)  # an item started in the background would have run by now
    assert ran == []


STUCK_THREAD_SCRIPT = textwrap.dedent("""
    import sys
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0.0))
    print("ready", flush=True)
    try:
        ex.map(tasks.sleep_forever, range(2), chunksize=1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def test_ctrl_c_ends_a_process_whose_thread_task_is_stuck() -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUCK_THREAD_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=CHILD_ENV)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail("the process did not end after Ctrl-C: a stuck thread kept it alive")
    assert proc.returncode == 130


ORPHAN_SCRIPT = textwrap.dedent("""
    import sys, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    strategy, method, busy = sys.argv[1], sys.argv[2] or None, sys.argv[3] == "busy"
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, start_method=method, max_workers=2,
                                         tiny_workload_threshold=0.0))
    ex.map(tasks.square, range(8), chunksize=1)
    print(" ".join(map(str, ex.worker_pids())), flush=True)
    if busy:
        ex.map(tasks.sleep_forever, range(4), chunksize=1)
    else:
        time.sleep(600)
""")


@pytest.mark.parametrize(("strategy", "method", "state"), [
    ("processes", "", "busy"), ("joblib", "", "busy"),
    # forkserver workers are the forkserver's children, and every one of them keeps it alive: the parent's
    # death changed neither's parent id, so they outlived it, idle or busy
    ("processes", "forkserver", "busy"), ("processes", "forkserver", "idle"),
])
def test_workers_die_with_a_sigkilled_parent(strategy: str, method: str, state: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, strategy, method, state], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)
        proc.kill()
        proc.wait(timeout=10)
        survived = not wait_dead(pids, 15.0)
    finally:
        if proc.poll() is None:
            proc.kill()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not survived, "worker processes outlived their SIGKILLed parent"


@pytest.mark.parametrize("strategy", ["auto", "threads", "processes", "joblib"])
def test_timeout_holds_when_the_first_item_hangs(strategy: str) -> None:
    """A call with a timeout never runs unmeasured items in the caller, where nothing could stop them."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StuckThreadsWarning)
            with pytest.raises(TimeoutError):
                ex.map(tasks.sleep_long_on_zero, range(20), timeout=1.0)
        assert time.monotonic() - started < 15, "the call waited for the 30 s item"


def _isolated_while_the_slow_item_runs(ex: ParallelExecutor) -> tuple[MapRecord | None, MapRecord | None]:
    """The records of a call made while ``tasks.slow_once``'s item -1 still runs past its call's timeout, and of
    the first made once it ended (or after 30 s) that is not isolated."""
    tasks.SLOW_RELEASE.clear()
    tasks.SLOW_DONE.clear()
    try:
        with pytest.raises(TimeoutError):
            ex.map(tasks.slow_once, [-1, *range(19)], timeout=0.5)
        assert ex.map(tasks.slow_once, range(20), timeout=5.0) == [2 * x for x in range(20)]
        while_running = ex.last_record
    finally:
        tasks.SLOW_RELEASE.set()
    assert tasks.SLOW_DONE.wait(30)
    deadline = time.monotonic() + 30  # its thread ends just after it (the rest of its run: items of 0.1 us)
    while True:
        assert ex.map(tasks.slow_once, range(20), timeout=5.0) == [2 * x for x in range(20)]
        after = ex.last_record
        if after is None or after.decision_reason is not Reason.AUTO_ISOLATES_CRASHES or time.monotonic() > deadline:
            return while_running, after
        time.sleep(0.05)


def test_an_item_that_outlived_its_timeout_isolates_its_function_only_while_it_runs() -> None:
    """One slow request (an item that ended after its call's timeout) moved every later call of a service's
    function to worker processes for the life of the process (``auto_isolates_crashes``: 1,000 of 1,000
    calls, 3x their latency; service trial). While the item runs, later calls run where an item can be
    stopped; once it ended, they are planned as before."""
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ex.map(tasks.slow_once, range(20), timeout=5.0) == [2 * x for x in range(20)]
        assert ex.last_record is not None and ex.last_record.selected_strategy == "serial"
        while_running, after = _isolated_while_the_slow_item_runs(ex)
    assert while_running is not None and while_running.decision_reason is Reason.AUTO_ISOLATES_CRASHES
    assert after is not None and after.decision_reason is not Reason.AUTO_ISOLATES_CRASHES, after.summary()
    assert after.selected_strategy == "serial"


def test_a_first_item_that_outlived_its_timeout_while_measured_isolates_only_while_it_runs() -> None:
    """The same for a function never measured, whose first item is measured on a probe thread: the mark lasts
    while that thread runs the item (review of the session's diff: only the serial run's path was tested)."""
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planning.Planner()) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while_running, after = _isolated_while_the_slow_item_runs(ex)  # the probe's first item is the slow one
    assert while_running is not None and while_running.decision_reason is Reason.AUTO_ISOLATES_CRASHES
    assert after is not None and after.decision_reason is not Reason.AUTO_ISOLATES_CRASHES, after.summary()


def test_a_call_with_a_timeout_still_measures_its_first_items_and_keeps_tiny_work_serial() -> None:
    """The probe runs on a payoff thread bounded by the timeout, so small work does not start a pool for nothing."""
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ex.map(tasks.square, range(50), timeout=5.0) == [x * x for x in range(50)]
        record = ex.last_record
        assert ex.worker_pids() == []
    assert record is not None and record.probe_items > 0 and record.selected_strategy == "serial"
    assert not record.pool_started


@pytest.mark.parametrize("strategy", ["serial", "threads", "auto"])
@pytest.mark.parametrize("method", ["map", "imap"])
def test_a_timeout_bounds_the_reading_of_a_slow_input(strategy: str, method: str) -> None:
    """``map`` read a whole generator before its deadline was set: one yielding an item every 0.3 s ran on
    past timeout=0.5 to its end and returned, with no TimeoutError."""
    read: list[int] = []

    def slow_input() -> Iterator[int]:
        for i in range(10):
            read.append(i)
            time.sleep(0.3)
            yield i

    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        with pytest.raises(TimeoutError):
            list(getattr(ex, method)(abs, slow_input(), timeout=0.5))
        record = ex.last_record
    assert len(read) < 10, "the input was read to its end past the deadline"
    # a map that timed out reading its input raised before its record began: none was kept (trial 49, F5)
    assert record is not None and record.outcome == "timeout" and record.n_items == len(read), record


STOPPED_SCRIPT = textwrap.dedent("""
    import json, os, signal, time, warnings
    warnings.simplefilter("ignore")
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    def stop_myself(x):
        os.kill(os.getpid(), signal.SIGSTOP)  # a debugger, or an operator's kill -STOP
        return x

    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0))
    ex.map(tasks.square, range(4), chunksize=1)
    [pool] = [p for p in ex._pools.current()]
    try:
        ex.map(stop_myself, range(2), chunksize=1, timeout=1)
    except TimeoutError:
        pass
    guard = time.monotonic() + 10  # the pool's own thread may be reaping them: their codes land a moment later
    while any(p.exitcode is None for p in pool._seen.values()) and time.monotonic() < guard:
        time.sleep(0.01)
    print(json.dumps(sorted(p.exitcode or 0 for p in pool._seen.values())))
""")


def test_stopped_workers_are_woken_to_die_by_sigterm_after_a_timeout() -> None:
    """A SIGSTOPped worker cannot act on SIGTERM: the timeout waited out the 1 s grace and then SIGKILLed it,
    raising a second late. Woken with SIGCONT, it ends by the SIGTERM at once (its exit code says which)."""
    proc = subprocess.run([sys.executable, "-c", STOPPED_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          env=CHILD_ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [-int(signal.SIGTERM)] * 2, proc.stdout


def _probe_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "payoff-probe" and t.is_alive())


@pytest.fixture
def _release_hung_items() -> Iterator[None]:
    tasks.HANG_RELEASE.clear()
    try:
        yield
    finally:
        tasks.HANG_RELEASE.set()


@pytest.mark.usefixtures("_release_hung_items")
def test_a_workload_whose_probe_hung_past_its_timeout_leaves_no_more_threads() -> None:
    """A request that makes its function afresh (a partial, a lambda) and whose first item hangs: each call
    probed on a new payoff thread again and left it stuck (14 -> 44 threads over 40 requests). Once a probe
    outlived its call's timeout, the workload's next calls run in worker processes, which a timeout stops."""
    before = _probe_threads()
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(4):
            with pytest.raises(TimeoutError):
                ex.map(functools.partial(tasks.hang_on_zero), range(10), timeout=0.3)
        record = ex.last_record
    assert _probe_threads() - before == 1
    assert sum(isinstance(w.message, StuckThreadsWarning) for w in seen) == 1
    assert record is not None and record.selected_strategy == "processes", record.summary()
    assert record.decision_reason is Reason.AUTO_ISOLATES_CRASHES


@pytest.mark.usefixtures("_release_hung_items")
def test_stuck_probe_threads_are_bounded_across_functions() -> None:
    """Each function's first hung probe is one stuck thread; past STUCK_PROBES_LIMIT of them no call with a
    timeout probes on a thread, whatever its function."""
    before = _probe_threads()
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(_probe.STUCK_PROBES_LIMIT + 2):  # each partial's keyword makes another function
            with pytest.raises(TimeoutError):
                ex.map(functools.partial(tasks.hang_on_zero, **{f"option{i}": i}), range(10), timeout=0.3)
    assert _probe_threads() - before <= _probe.STUCK_PROBES_LIMIT


@pytest.mark.usefixtures("_release_hung_items")
def test_a_probe_started_late_in_its_calls_timeout_ends_with_the_call_and_is_not_taken_for_a_hang() -> None:
    """The caller waited for its probe's thread the whole ``timeout`` from the probe's start, not what was left
    of the call's: over an input whose first read took 0.8 of timeout=1.0, item 0 (still running at the
    deadline, ending 0.4 s past it) held the call until it ended, and its result was handed out after the
    deadline. And an item that had only what the read left of the timeout is not one known to hang: its
    function's next call is planned as any other, not sent to worker processes to isolate a hang."""
    def slow_first_read() -> Iterator[int]:
        time.sleep(0.8)
        yield from range(6)

    got: list[int] = []
    release = threading.Timer(1.4, tasks.HANG_RELEASE.set)
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:
        release.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", StuckThreadsWarning)
                results = ex.imap(tasks.hang_on_zero, slow_first_read(), timeout=1.0)
                with pytest.raises(TimeoutError):
                    got.extend(results)  # keeps what came before the raise
            raised_while_item_0_ran = not tasks.HANG_RELEASE.is_set()
        finally:
            release.cancel()
            tasks.HANG_RELEASE.set()
        assert got == [] and raised_while_item_0_ran, "the call ended when its probe's item did, past its deadline"
        assert ex.map(tasks.hang_on_zero, range(1, 200)) == list(range(1, 200))
        record = ex.last_record
    assert record is not None and record.decision_reason is not Reason.AUTO_ISOLATES_CRASHES, record.summary()


@pytest.mark.usefixtures("_release_hung_items")
@pytest.mark.parametrize("strategy", ["auto", "threads", "processes"])
def test_an_item_hung_in_a_serial_fallback_does_not_hold_the_caller_past_the_timeout(strategy: str) -> None:
    """A call measured too small for a pool ran its items in the caller, where the deadline is only checked
    between items: one that hung held ``map(..., timeout=1)`` until it returned (4 s, or for ever), where
    ``ThreadPoolExecutor.map`` raises at 1 s. Under a timeout those items run on a payoff thread the caller
    waits for no longer than the time left; under a named process backend, in its workers (a worker is stopped,
    where a payoff thread stays stuck)."""
    release = threading.Timer(8.0, tasks.HANG_RELEASE.set)
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        ex.map(tasks.hang_on_zero, range(1, 4))  # measured: the next call is planned from its cost, unprobed
        release.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(TimeoutError):
                    ex.map(tasks.hang_on_zero, range(8), timeout=1.0)
            raised_while_the_item_hung = not tasks.HANG_RELEASE.is_set()
        finally:
            release.cancel()
            tasks.HANG_RELEASE.set()
        record = ex.last_record
    ran_on = "processes" if strategy == "processes" else "serial"
    assert record is not None and record.selected_strategy == ran_on, record.summary()
    assert raised_while_the_item_hung, "the caller waited for the hung item"


def _exits_on_three(x: int) -> int:
    if x == 3:
        raise SystemExit(f"item {x} asked the program to exit")
    return x


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_an_item_raising_system_exit_in_a_serial_fallback_raises_it_in_the_caller(timeout: float | None) -> None:
    """Under a timeout the serial items run on a payoff thread, where a SystemExit only ends the thread: the
    caller must get it as it does when the items run in it (it got an IndexError: no outcome came back)."""
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2)) as ex:
        ex.map(_exits_on_three, range(3))  # measured: the next call is small enough to run serially
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(SystemExit, match="item 3 asked"):
                ex.map(_exits_on_three, range(8), timeout=timeout)
        record = ex.last_record
    assert record is not None and record.selected_strategy == "serial", record.summary()


WARNINGS_AS_ERRORS_CASES = {
    "threads pool": (ParallelConfig(strategy="threads", max_workers=2), [5] * 4 + [1500] + [5] * 4),
    "auto's probe": (ParallelConfig(strategy="auto"), [1500] + [5] * 8),
    "one item, too few for the pool named": (ParallelConfig(strategy="threads"), [1500]),
}


@pytest.mark.parametrize("case", WARNINGS_AS_ERRORS_CASES)
def test_a_timeout_stays_a_timeout_error_when_warnings_are_errors(case: str) -> None:
    """Under ``python -W error`` (pytest's ``filterwarnings = error``) the StuckThreadsWarning said about the
    items left running replaced the call's TimeoutError, and ``except TimeoutError`` missed it (pip-user trial,
    fault 2). The call raises its TimeoutError; the warning's text is a note on it."""
    config, items = WARNINGS_AS_ERRORS_CASES[case]
    with ParallelExecutor(config, planner=planning.Planner()) as ex, warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TimeoutError) as raised:
            ex.map(tasks.nap_ms, items, timeout=0.4)
    assert any("StuckThreadsWarning" in note for note in getattr(raised.value, "__notes__", [])), raised.value


def test_a_cancel_stays_a_cancelled_error_when_warnings_are_errors() -> None:
    from concurrent.futures import CancelledError

    got: list[BaseException] = []
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2)) as ex:
        ex.map(tasks.nap_ms, [1] * 4)  # a pool already there: a cancel during its start finds no task running

        def call() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    ex.map(tasks.nap_ms, [3000] * 4)
                except BaseException as exc:
                    got.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.3)
        ex.cancel()
        caller.join(30)
    assert len(got) == 1 and isinstance(got[0], CancelledError), got
    assert any("StuckThreadsWarning" in note for note in getattr(got[0], "__notes__", [])), got[0]


@pytest.mark.parametrize("strategy", ["processes", "threads"])
def test_a_timeouts_traceback_is_not_chained_onto_payoffs_own_queue_empty(strategy: str) -> None:
    """The user read "_queue.Empty ... During handling of the above exception, another exception occurred"
    above every pool call's TimeoutError (pip-user trial, finding 5): payoff's wait for the next chunk, not theirs."""
    import queue

    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", StuckThreadsWarning)
        with pytest.raises(TimeoutError) as raised:
            ex.map(tasks.nap_ms, [1500] * 4, timeout=0.3)
    assert not isinstance(raised.value.__context__, queue.Empty), repr(raised.value.__context__)


CLOSED_EARLY_SCRIPT = textwrap.dedent("""
    import warnings
    from payoff import ParallelConfig, ParallelExecutor, planning
    from tests import tasks

    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=1), planner=planning.Planner()) as ex:
        warnings.simplefilter("error")
        it = ex.imap(tasks.square, range(3))  # one worker: single_worker, a fallback warning at the call's end
        next(it)
        it.close()
""")


def test_an_imap_closed_early_under_warnings_as_errors_still_shows_its_fallback_warning() -> None:
    """The consumer's close is no error of the call's: a fallback warning made an error became a note on its
    GeneratorExit, which nobody reads, where the default filter shows it (the review of abf52a7). It is raised
    there, as before, and Python reports it as ignored in the generator."""
    done = subprocess.run([sys.executable, "-c", CLOSED_EARLY_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ParallelFallbackWarning" in done.stderr and "single_worker" in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("strategy", ["auto", "serial", "threads"])
@pytest.mark.parametrize("make", [list, iter, lambda xs: (x for x in xs)], ids=["list", "iterator", "generator"])
def test_a_spent_timeout_on_empty_input_returns_nothing_whatever_the_iterable(strategy: str, make: Any) -> None:
    """An empty list with ``timeout=0`` returned ``[]`` (nothing to wait for, as ``Executor.map`` does), while an
    empty iterator or generator raised ``TimeoutError`` "no item ran": the check ran before the input was read.
    Non-empty input with a spent timeout still raises, and nothing past its first item is taken from it."""
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex:
        assert ex.map(tasks.square, make([]), timeout=0) == []
        assert ex.map(tasks.square, make([]), timeout=-1.0) == []
        rest = iter(range(5))
        with pytest.raises(TimeoutError, match="no item ran"):
            ex.map(tasks.square, rest if make is iter else make(range(5)), timeout=0)
        if make is iter:
            assert list(rest) == [1, 2, 3, 4]


@pytest.mark.parametrize("strategy", ["threads", "processes", "auto"])
def test_an_imaps_work_goes_on_while_its_slow_consumer_works_on_each_result(strategy: str) -> None:
    """``concurrent.futures``' map submits every item at once, so its work ends long before a deadline its consumer
    alone outlasts; payoff's imap sent chunks only as its consumer asked, and raised after 179-197 of 200 results
    whose work took 0.2 s under timeout=1 (trial 49, F2). 100 items of 2 ms, a consumer of 20 ms a result, and a
    timeout of 1 s: the work is a tenth of it, the consumer twice."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        ex.map(tasks.square, range(8), chunksize=1)  # a warm pool: its start is no part of the deadline
        got = []
        for result in ex.imap(functools.partial(tasks.sleep_then_square, seconds=0.002), range(100), timeout=1.0):
            time.sleep(0.02)
            got.append(result)
        record = ex.last_record
    assert got == [x * x for x in range(100)]
    assert record is not None and record.outcome == "ok" and record.consumer_seconds >= 1.0, record


@pytest.mark.parametrize("strategy", ["auto", "threads"])
def test_a_map_under_a_timeout_with_no_thread_left_runs_in_the_caller(strategy: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """At the process limit (``ulimit -u``, a container's pids limit) the OS gives no thread: without a
    timeout the map fell back, with one it raised "can't start new thread" from the thread its probe or
    serial run waits on (hunt 60). It runs in the caller, its items starting only before the deadline. (Root
    is not held to the limit, so the refusal is made here: every new payoff thread is refused.)"""
    from payoff import _spare_threads

    for thread in _spare_threads.release_idle():
        thread.join(5)
    real = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        if self.name.startswith("payoff"):
            raise RuntimeError("can't start new thread")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    for _ in range(3):  # the suite's own load once read 300 squares as dear work, and auto sent them to a pool
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2), planner=planning.Planner()) as ex:
            assert ex.map(tasks.square, range(300), timeout=60) == [x * x for x in range(300)]
            record = ex.last_record
        if record is not None and record.selected_strategy == "serial":
            break
    slow = functools.partial(tasks.sleep_then_square, seconds=0.5)
    for items in ([1], [1, 2]):  # returned late (reviews 61, 62: a probe that ran every item here)
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex, \
                pytest.raises(TimeoutError, match="did not finish within timeout"):
            ex.map(slow, items, timeout=0.3)
    assert record is not None and record.selected_strategy == "serial", record
    assert all(c.worker.split(":")[1] == str(threading.get_ident()) for c in record.chunks), "ran in the caller"
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        ex.map(tasks.square, range(20), timeout=60)  # measured: the next call runs serially, not to measure
        with pytest.raises(KeyboardInterrupt):
            ex.map(_interrupted_at_seven, range(20), timeout=60)
        cut = ex.last_record
    assert cut is not None and cut.items_done == 7, "the items a Ctrl-C cut short are the record's (review 62)"


def _interrupted_at_seven(x: int) -> int:
    """``tasks.square``'s twin whose item 7 meets a Ctrl-C."""
    if x == 7:
        raise KeyboardInterrupt
    return x * x
