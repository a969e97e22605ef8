"""Ctrl-C during a long processes map: the caller gets KeyboardInterrupt fast, no worker survives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import alive

if TYPE_CHECKING:
    from payoff import MapRecord, ParallelExecutor

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    ex = ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=0))
    ex.map(tasks.square, range(8))
    print(" ".join(map(str, ex.worker_pids())), flush=True)
    try:
        ex.map(tasks.long_task, range(8), chunksize=1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def test_ctrl_c_returns_within_two_seconds_and_leaves_no_worker() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    assert elapsed < 2.0, f"Ctrl-C took {elapsed:.2f} s"
    _assert_gone(pids, 2.0)



def _assert_gone(pids: list[int], seconds: float) -> None:
    """Every worker of ``pids`` ends within ``seconds`` (ending takes a killed process a moment)."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a worker process outlived Ctrl-C"

GROUP_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    ex = ParallelExecutor(ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0))
    ex.map(tasks.square, range(8))
    before = sorted(ex.worker_pids())
    box = []
    background = threading.Thread(target=lambda: box.append(ex.map(tasks.nap_ms, [50] * 40, chunksize=1)))
    background.start()
    print("ready", flush=True)
    try:
        time.sleep(30)  # a kernel's idle main thread, or another cell's work: the stop button interrupts it
    except KeyboardInterrupt:
        print("main interrupted", flush=True)
    background.join(60)
    print("background", box == [[50] * 40], ex.last_record.outcome, ex.last_record.fallback_reason, flush=True)
    ex.map(tasks.square, range(8))
    print("warm pool kept", sorted(ex.worker_pids()) == before and not ex.last_record.pool_started, flush=True)
    ex.shutdown()
""")


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_ctrl_c_sent_to_the_whole_group_interrupts_the_main_thread_not_a_map_elsewhere(strategy: str) -> None:
    """A terminal's Ctrl-C and a Jupyter kernel's stop button send SIGINT to the whole process group, the
    workers included: a map running in another thread raised KeyboardInterrupt and lost its results, and an idle
    warm pool's workers died, so the next call started a fresh pool (its initializer again), on every stop
    (trial 43, notebook F1 and F2). Only the caller's thread is interrupted; the workers carry on."""
    proc = subprocess.Popen([sys.executable, "-c", GROUP_SCRIPT, strategy], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # the group of the process this test started, as a terminal does
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "main interrupted" in out, out
    assert "background True ok None" in out, out
    assert "warm pool kept True" in out, out
    assert proc.returncode == 0, out


def test_ctrl_c_sent_to_the_whole_group_still_ends_the_callers_map_at_once_and_leaves_no_worker() -> None:
    """Workers carry on through the group's SIGINT; the caller's own map still ends within two seconds and stops
    them, as when only the caller is signalled."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        time.sleep(0.5)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in rest, rest
    assert elapsed < 2.0, f"Ctrl-C took {elapsed:.2f} s"
    _assert_gone(pids, 2.0)


EXIT_WAITS_SCRIPT = textwrap.dedent("""
    import threading, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0))
    ex.map(tasks.square, range(8))
    print(" ".join(map(str, ex.worker_pids())), flush=True)
    threading.Thread(target=lambda: ex.map(tasks.long_task, range(4), chunksize=1)).start()  # the exit waits for it
    time.sleep(60)
""")


def test_a_second_ctrl_c_to_the_group_still_ends_a_program_whose_exit_waits_for_its_workers() -> None:
    """Workers take no action on one Ctrl-C to the group; a second one within seconds is meant for them: a
    program whose exit waited for a map in a thread (Python's rule for non-daemon threads) hung for good on the
    second press, its workers carrying on (second review)."""
    proc = subprocess.Popen([sys.executable, "-c", EXIT_WAITS_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # the group of the process this test started, as a terminal does
        time.sleep(1.0)
        assert proc.poll() is None, "one Ctrl-C waits for the thread's map, as Python does"
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _assert_gone(pids, 5.0)


def _ctrl_c_at_five(x: int) -> int:
    if x == 5:
        raise KeyboardInterrupt  # what Ctrl-C raises inside the item running in the caller
    return x


def test_ctrl_c_in_a_serial_imap_is_recorded_as_cancelled_not_as_an_item_error() -> None:
    """As for map and on threads: an interrupt stops the call; no item raised an error of its own."""
    import pytest

    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        with pytest.raises(KeyboardInterrupt):
            list(ex.imap(_ctrl_c_at_five, range(20)))
        record = ex.last_record
    assert record is not None and record.outcome == "cancelled" and record.n_errors == 0, record


RAISED: list[BaseException] = []


def _ctrl_c_object_at_five(x: int) -> int:
    if x == 5:
        RAISED.append(KeyboardInterrupt())
        raise RAISED[-1]
    return x


def test_ctrl_c_in_a_serial_map_records_the_items_that_ran() -> None:
    """The chunk in the caller was recorded only when it ended normally or an item raised an Exception: Ctrl-C
    (a KeyboardInterrupt, no Exception) lost it, so the record said 0 items done, 0 chunks and 0 s busy
    after five items had run, while cancel() in the same place counted them."""
    import pytest

    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        with pytest.raises(KeyboardInterrupt) as info:
            ex.map(_ctrl_c_object_at_five, range(20))
        record = ex.last_record
    assert info.value is RAISED[-1] and not getattr(info.value, "__notes__", None), "it reaches the caller unchanged"
    assert record is not None and record.outcome == "cancelled" and record.n_errors == 0, record
    assert (record.items_done, record.n_chunks) == (5, 1), record


PROBE_THREADS: list[bool] = []


def _ctrl_c_at_three_in_the_probe(x: int) -> int:
    if x == 3:
        import threading

        PROBE_THREADS.append(threading.current_thread() is threading.main_thread())
        raise KeyboardInterrupt
    return x


def test_ctrl_c_during_the_probe_records_the_items_it_ran() -> None:
    """The planner's probe runs a new function's first items in the caller (here 0, 1, 2, then 3 raises Ctrl-C):
    the probe's outcome reached the record only through a finished plan, so the record said 0 items done."""
    import pytest

    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2)) as ex:
        with pytest.raises(KeyboardInterrupt):
            ex.map(_ctrl_c_at_three_in_the_probe, range(2000))
        record = ex.last_record
    assert PROBE_THREADS == [True], "item 3 ran in the caller, in the probe"
    assert record is not None and record.outcome == "cancelled" and record.n_errors == 0, record
    assert (record.items_done, record.n_chunks) == (3, 1), record
    assert record.chunks[0].where == "caller", record.chunks


CALLER_INTERRUPTED = threading.Event()


def _ctrl_c_to_the_caller_at_three(x: int) -> int:
    """Item 3, run by the probe's thread under ``timeout=``, sends SIGINT to the main thread (the caller) and
    returns only once the caller has it, so Ctrl-C lands while the probe still runs."""
    if x == 3:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        CALLER_INTERRUPTED.wait(30)
    return x


def _note_then_interrupt(signum: int, frame: object) -> None:
    CALLER_INTERRUPTED.set()
    raise KeyboardInterrupt


def test_ctrl_c_during_a_probe_under_a_timeout_records_the_items_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``timeout=`` the probe runs on a payoff thread and Ctrl-C lands in the caller's ``join``: the record
    said 0 items done, losing the items the probe had run."""
    from payoff import ParallelConfig, ParallelExecutor

    CALLER_INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, _note_then_interrupt)
    try:
        with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2)) as ex:
            with pytest.raises(KeyboardInterrupt):
                ex.map(_ctrl_c_to_the_caller_at_three, range(2000), timeout=60)
            record = ex.last_record
    finally:
        signal.signal(signal.SIGINT, previous)
    assert record is not None and record.outcome == "cancelled" and record.n_errors == 0, record
    assert record.items_done >= 4 and record.n_chunks == 1, record  # items 0-3 at least; the thread stops soon
    assert record.chunks[0].where == "caller", record.chunks


STARTED_AFTER: list[int] = []
CALL_STOPPED = threading.Event()
"""Set once the caller, handling its Ctrl-C, has told the call's thread to stop (``CancelToken.set``)."""


def _ctrl_c_to_the_caller_at_eight_then_spin(x: int, spin: float = 0.3) -> int:
    """Items before 8 are trivial (the probe's timing blocks grow on them); item 8 sends the caller Ctrl-C,
    waits until the caller has stopped the call, then works on for ``spin`` seconds; every later item notes
    that it started. Item 8 once waited only for the signal and then 20 ms: the clean-clone CI, under the
    suite's load, took longer than that to reach the stop, and items 9-15 rightly ran before it."""
    if x > 8:
        STARTED_AFTER.append(x)
    elif x == 8:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        CALLER_INTERRUPTED.wait(30)
        CALL_STOPPED.wait(30)
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            pass
    return x


def _ctrl_c_to_the_caller_at_eight(x: int) -> int:
    """As above, item 8 ending within the grace a Ctrl-C gives the thread (``PROBE_STOP_GRACE_SECONDS``)."""
    return _ctrl_c_to_the_caller_at_eight_then_spin(x, 0.02)


def _ctrl_c_during_a_map_under_a_timeout(fn: Callable[[int], int], monkeypatch: pytest.MonkeyPatch,
                                        linger: float = 0.0) -> MapRecord | None:
    """``fn`` over 16 items with ``timeout=``, kept serial (so on a payoff thread) whatever the machine's load
    makes of their cost, Ctrl-C reaching the caller from item 8; waits ``linger`` seconds after, and returns
    the call's record (the assertion on what it recorded says which path the call took)."""
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.worker import CancelToken

    def stop(token: CancelToken, stop_call: Callable[[CancelToken], None] = CancelToken.set) -> None:
        stop_call(token)
        CALL_STOPPED.set()

    monkeypatch.setattr(CancelToken, "set", stop)
    CALLER_INTERRUPTED.clear()
    CALL_STOPPED.clear()
    STARTED_AFTER.clear()
    previous = signal.signal(signal.SIGINT, _note_then_interrupt)
    try:
        with ParallelExecutor(ParallelConfig(max_workers=2, tiny_workload_threshold=10.0)) as ex:
            with pytest.raises(KeyboardInterrupt):
                ex.map(fn, range(16), timeout=60)
            time.sleep(linger)
            return ex.last_record
    finally:
        signal.signal(signal.SIGINT, previous)


def test_no_item_starts_on_a_payoff_thread_after_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``timeout=`` the call's first items run on a payoff thread, which the caller's Ctrl-C only tells
    to stop: the deadline was checked before each item, the stop only between timing blocks, and a block grown
    on cheap items ran its dear items after the interrupt (in a notebook, item 9 started a second after it and
    ran its full 2 s in the background, notebook trial)."""
    record = _ctrl_c_during_a_map_under_a_timeout(_ctrl_c_to_the_caller_at_eight_then_spin, monkeypatch, 0.8)
    assert STARTED_AFTER == [], f"items started after Ctrl-C: {STARTED_AFTER}"
    assert record is not None and record.selected_strategy == "serial", record


def test_ctrl_c_in_a_serial_run_on_a_payoff_thread_records_the_items_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call kept serial under ``timeout=`` runs its items on a payoff thread; the caller's Ctrl-C recorded
    only the probe's items (2 of the 9 that had run; the notebook trial's record said "1 of 12" for 8)."""
    record = _ctrl_c_during_a_map_under_a_timeout(_ctrl_c_to_the_caller_at_eight, monkeypatch)
    assert record is not None and record.outcome == "cancelled" and record.n_errors == 0, record
    assert record.items_done == 9, (record.items_done, [(c.n_items, c.where) for c in record.chunks])


def _locks_free(futures: list[Future[int]]) -> list[int]:
    """The positions of ``futures`` whose lock another thread cannot take (within a second)."""
    taken: list[int] = []

    def check() -> None:
        for i, future in enumerate(futures):
            if future._condition.acquire(timeout=1.0):  # type: ignore[attr-defined]
                future._condition.release()  # type: ignore[attr-defined]
            else:
                taken.append(i)

    checker = threading.Thread(target=check)
    checker.start()
    checker.join()
    return taken


def _ctrl_c_while_one_future_is_busy(wait: Callable[[list[Future[int]]], object]) -> list[int]:
    """``wait`` on 50 futures in the main thread while another thread holds the lock of the one
    ``concurrent.futures.wait`` takes last (as a pool's thread does while it settles a future); Ctrl-C lands
    while the wait blocks on it. The positions of the futures whose lock was left taken."""
    futures: list[Future[int]] = [Future() for _ in range(50)]
    busy = max(futures, key=id)  # concurrent.futures.wait takes them in order of id: all the others first
    holding, release = threading.Event(), threading.Event()

    def settle() -> None:
        with busy._condition:  # type: ignore[attr-defined]
            holding.set()
            release.wait(30)

    def ctrl_c() -> None:
        time.sleep(0.3)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.2)
        release.set()

    settler = threading.Thread(target=settle)
    settler.start()
    holding.wait(30)
    threading.Thread(target=ctrl_c, daemon=True).start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            wait(futures)
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        settler.join()
    return _locks_free(futures)


def test_ctrl_c_during_the_exits_wait_for_submitted_calls_leaves_no_futures_lock_taken() -> None:
    """The program's end waited for submitted calls with ``concurrent.futures.wait``, which takes each future's
    lock outside a ``with``: a Ctrl-C landing while it blocked on one the pool's thread held left the others
    taken, that thread waited on one forever, and so did the exit, joining it (5 of 40 interrupted exits
    beside three busy loops; test_ctrl_c_during_the_wait_for_submitted_work_ends_the_program_and_says_so hung
    in the suite)."""
    from payoff.executor import _finish_submitted

    assert _ctrl_c_while_one_future_is_busy(_finish_submitted) == []


def test_ctrl_c_during_a_pools_start_leaves_no_pings_lock_taken() -> None:
    """The same wait, for the workers' first answers while a pool starts: a Ctrl-C then is a user's."""
    from payoff._waiting import woken_by

    assert _ctrl_c_while_one_future_is_busy(lambda futures: woken_by(futures).wait(5.0)) == []


CUT_IMPORT = textwrap.dedent("""
    import importlib.abc
    import sys

    class CtrlCWhile(importlib.abc.MetaPathFinder):
        fired = False

        def find_spec(self, name, path, target=None):
            if name == sys.argv[2] and not CtrlCWhile.fired:
                CtrlCWhile.fired = True
                raise KeyboardInterrupt(name)
            return None

    sys.meta_path.insert(0, CtrlCWhile())
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    ex = ParallelExecutor(ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0))
    try:
        ex.map(tasks.square, range(10))
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
    try:
        print("submit", ex.submit(tasks.square, 7).result())
    except Exception as exc:
        print("submit", type(exc).__name__, exc)
    print("map", ex.map(tasks.square, range(4)) == [0, 1, 4, 9], ex.last_record.selected_strategy)
    ex.shutdown()
""")


@pytest.mark.parametrize(("strategy", "cut"), [
    ("joblib", "joblib.externals.loky.backend.stdlib_py314_resource_tracker"),
    ("joblib", "joblib.externals.loky.backend.spawn"),
    ("processes", "concurrent.futures.process"),
])
def test_a_ctrl_c_while_a_backend_imports_leaves_no_half_made_module_behind(strategy: str, cut: str) -> None:
    """A Ctrl-C while loky imported, early in a first joblib map: a module that had bound the half-made
    ``resource_tracker`` (a circular import) kept it, and the next ``submit`` raised "partially initialized
    module ... has no attribute '_CLEANUP_FUNCS'" (a map fell back with ``init_failure``; loky alone does the
    same: hunt 58, F2). The modules an interrupted start imported that hold such a module are dropped too."""
    done = subprocess.run([sys.executable, "-c", CUT_IMPORT, strategy, cut], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"})
    assert done.stdout.splitlines() == ["interrupted", "submit 49", f"map True {strategy}"], \
        (done.stdout, done.stderr[-2000:])


def _shutdown_ends(ex: ParallelExecutor) -> None:
    """``ex.shutdown()`` returns: run on a thread of its own, so that one waiting forever fails the test."""
    ended = threading.Thread(target=ex.shutdown, daemon=True)
    ended.start()
    ended.join(60)
    assert not ended.is_alive(), "shutdown() waited for a lease no call held"


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_ctrl_c_just_after_a_call_leased_its_pool_lets_shutdown_end(strategy: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Between leasing its pool and holding the lease the call did its bookkeeping (where it runs, the GIL's
    sampler started): anything raised there, a Ctrl-C the likeliest, left the pool leased by no call, and
    ``shutdown()`` (a ``with`` block's end) waited for it forever."""
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.record import RecordBuilder
    from tests import tasks

    def interrupted(self: RecordBuilder) -> None:
        raise KeyboardInterrupt

    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0))
    monkeypatch.setattr(RecordBuilder, "pool_leased", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.map(tasks.square, range(8))
    monkeypatch.undo()
    assert ex.map(tasks.square, range(8)) == [x * x for x in range(8)], "the pool serves the next call"
    _shutdown_ends(ex)


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_ctrl_c_between_a_submits_lease_and_its_send_lets_shutdown_end(strategy: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit()`` leases its pool, then sends the call: a Ctrl-C in between left the pool leased by nothing,
    and ``shutdown()`` waited for it forever."""
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    assert ex.submit(tasks.square, 3).result(timeout=60) == 9  # a warm pool
    monkeypatch.setattr(ParallelExecutor, "_send_submitted", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.submit(tasks.square, 4)
    monkeypatch.undo()
    assert ex.submit(tasks.square, 5).result(timeout=60) == 25, "the pool serves the next call"
    _shutdown_ends(ex)
