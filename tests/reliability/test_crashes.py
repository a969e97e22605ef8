"""A crashing item never takes the caller down; its error names it; no worker is left behind (issue 12).

The crashing maps run in a child interpreter: on the old code the item was
rerun in the caller, which would have killed pytest itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from concurrent.futures import BrokenExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import payoff
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason, planning
from payoff.errors import WorkerCrashedError
from payoff.strategies import make_strategy
from payoff.telemetry.metrics import PrometheusMetrics
from payoff.telemetry.records import parse_line, record_line
from tests import tasks
from tests.conftest import alive, until

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}
"""Children import the payoff this test imported (a checkout's src/ or an installed copy) and the tests package."""
FORCE = {"tiny_workload_threshold": 0.0}

CRASH_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.errors import WorkerCrashedError
    from tests import tasks
    from tests.conftest import children_of

    strategy, fn = sys.argv[1], getattr(tasks, sys.argv[2])
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0))
    out = {"caller_survived": True}
    try:
        ex.map(fn, range(24), chunksize=4)
        out["error"] = None
    except WorkerCrashedError as exc:
        out.update(error=type(exc).__name__, item=exc.item_index, chunk=exc.chunk_index, exitcode=exc.exitcode,
                   signal=exc.signal_name, completed=sorted(exc.completed), message=str(exc),
                   results_ok=all(v == k * 10 for k, v in exc.completed.items()), done=ex.last_record.items_done)
    out["after"] = ex.map(tasks.square, range(6), chunksize=1)
    ex.close()
    def workers():  # the resource trackers are one per parent, exit with it, and run no task
        alive = []
        for pid in children_of(os.getpid()):
            try:
                with open(f"/proc/{pid}/cmdline") as fh:
                    if "resource_tracker" not in fh.read():
                        alive.append(pid)
            except OSError:  # it exited between the listing and the read
                pass
        return alive

    deadline = time.monotonic() + 10
    while workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    out["children"] = workers()
    print(json.dumps(out), flush=True)
""")


def run_crash(strategy: str, fn: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, strategy, fn], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=CHILD_ENV)
    assert proc.returncode == 0, f"the caller died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_segfaulting_item_is_named_and_the_caller_survives(strategy: str) -> None:
    out = run_crash(strategy, "segfault_on_five")
    assert out["error"] == "WorkerCrashedError"
    assert out["item"] == 5
    assert out["chunk"] is not None
    assert out["exitcode"] == -11 and out["signal"] == "SIGSEGV"
    assert "item 5" in str(out["message"]) and "SIGSEGV" in str(out["message"])
    assert 5 not in out["completed"]  # type: ignore[operator]
    assert out["results_ok"], "completed results are the right ones"
    # every result the record counts as done, those a map had already put in order too (trial 49, F4: none of
    # those before the crashing item's chunk were there)
    assert len(out["completed"]) == out["done"], out  # type: ignore[arg-type]
    assert out["after"] == [x * x for x in range(6)], "the executor works after the crash"
    assert out["children"] == [], "a worker process outlived the executor"


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_crash_deep_in_a_chunk_is_named_on_its_third_crash_not_after_halving_the_chunk(strategy: str) -> None:
    """The reruns after a crash mark each item in a file that outlives their worker: the item a dead worker
    stood on runs alone next and is named when it crashes that fresh worker too. Found by halving, item 50
    of 200 took eight pool starts (5-6 s on joblib, whose workers are fresh interpreters)."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        with pytest.raises(WorkerCrashedError) as info:
            ex.map(segfault_on_fifty, range(200))
        record = ex.last_record
        assert ex.map(tasks.square, range(4)) == [0, 1, 4, 9], "the executor works after the crash"
    assert info.value.item_index == 50 and info.value.exitcode == -signal.SIGSEGV, info.value
    assert record is not None and record.pool_starts <= 3, f"{record.pool_starts} pool starts to name the item"


def test_an_item_calling_os_exit_is_named_with_its_exit_code() -> None:
    out = run_crash("processes", "exit_on_five")
    assert (out["error"], out["item"], out["exitcode"]) == ("WorkerCrashedError", 5, 7), out
    assert "exit code 7" in str(out["message"]), out


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_item_exiting_cleanly_is_named_with_exit_code_0_not_the_signal_that_stopped_the_others(
        strategy: str) -> None:
    """The pool stops the surviving workers (SIGTERM, SIGKILL): their codes named the crash before."""
    out = run_crash(strategy, "exit_zero_on_five")
    assert (out["error"], out["item"], out["exitcode"]) == ("WorkerCrashedError", 5, 0), out
    assert "exit code 0" in str(out["message"]), out


def test_a_crash_that_does_not_recur_is_recovered_in_fresh_workers(tmp_path: Path) -> None:
    parent = os.getpid()
    items = [(i, parent, str(tmp_path / "died")) for i in range(40)]
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex, \
            pytest.warns(ParallelFallbackWarning, match="recovered on processes"):
        assert ex.map(tasks.die_once_in_worker, items, chunksize=4) == [i * 10 for i in range(40)]
    record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.MAP_FAILURE_RETRY
    assert record.mode == "parallel"
    rerun = [c for c in record.chunks if c.where == "retry"]
    assert rerun and all(int(c.worker.split(":")[0]) != parent for c in rerun), "reruns ran in workers"


def test_a_restart_after_a_crash_counts_as_a_pool_start(tmp_path: Path) -> None:
    """The call that started the pool restarted it after a worker died: four worker processes, and
    ``payoff_pool_starts_total`` said 1 (the record only said there was a start)."""
    metrics = PrometheusMetrics(CollectorRegistry())
    parent = os.getpid()
    items = [(i, parent, str(tmp_path / "died")) for i in range(40)]
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[metrics]) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        assert ex.map(tasks.die_once_in_worker, items, chunksize=4) == [i * 10 for i in range(40)]
    record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.MAP_FAILURE_RETRY
    assert record.pool_started and record.pool_starts == 2
    assert metrics.registry.get_sample_value("payoff_pool_starts_total",
                                             {"strategy": "processes", "outcome": "success"}) == 2
    assert json.loads(record_line(record))["pool_starts"] == 2
    assert parse_line(record_line(record)).pool_starts == 2


def test_force_serial_on_failure_off_raises_at_the_first_crash(tmp_path: Path) -> None:
    parent = os.getpid()
    items = [(i, parent, str(tmp_path / "died")) for i in range(40)]
    config = ParallelConfig(strategy="processes", max_workers=2, force_serial_on_failure=False, **FORCE)
    with ParallelExecutor(config) as ex, pytest.raises(WorkerCrashedError) as info:
        ex.map(tasks.die_once_in_worker, items, chunksize=4)
    assert info.value.exitcode == 3
    assert info.value.chunk_index is not None


FIRST_ITEM_SCRIPT = textwrap.dedent("""
    import sys
    from payoff import ParallelExecutor
    from payoff.errors import WorkerCrashedError
    from tests import tasks

    with ParallelExecutor(2, sys.argv[1]) as ex:  # every option at its default: no chunksize, no threshold
        try:
            ex.map(tasks.segfault_on_zero, range(300))
            print("no error")
        except WorkerCrashedError as exc:
            print("crashed item", exc.item_index)
        print("after", ex.map(tasks.square, range(4)))
""")


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_named_process_backend_never_runs_an_unmeasured_item_in_the_caller(strategy: str) -> None:
    """The first items of an unknown function used to be probed in the caller: a crash there killed it."""
    proc = subprocess.run([sys.executable, "-c", FIRST_ITEM_SCRIPT, strategy], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=CHILD_ENV)
    assert proc.returncode == 0, f"the caller died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.stdout.splitlines() == ["crashed item 0", "after [0, 1, 4, 9]"]


@pytest.mark.parametrize(("strategy", "codes", "culprit"), [
    ("joblib", [-9, -11], -11),      # loky kills the survivors with SIGKILL; the one that crashed may come second
    ("processes", [-15, -11], -11),  # a process pool terminates the survivors with SIGTERM
    ("joblib", [-9, -15, 7], 7),     # an item called os._exit(7)
    ("processes", [-15, -9], -9),    # the kernel's OOM killer: SIGKILL is all there is to name
    ("joblib", [0, -11], -11),       # a worker that retired idle earlier exited cleanly
    ("processes", [-15, 0], 0),      # an item called os._exit(0): a process pool never retires a worker
    ("joblib", [-9, 0], -9),         # loky does: its clean exits name a crash only when nothing else does
    ("processes", [-15], -15),
    ("joblib", [], None),
])
def test_the_crash_is_named_by_the_worker_that_died_not_by_those_the_pool_killed_after(
        strategy: str, codes: list[int], culprit: int | None) -> None:
    from payoff._maprun import _culprit_code
    from payoff.strategies import strategy_class

    pool = strategy_class(strategy)
    assert _culprit_code(pool.likeliest_first(codes)) == culprit  # type: ignore[attr-defined]


# -- a named process backend keeps an unmeasured function out of the caller, whatever would make it serial ------


def segfault_always(item: object) -> int:
    """Crashes the interpreter running it, whatever the item (a large payload, say)."""
    import ctypes

    ctypes.string_at(0)
    return 0


def segfault_on_fifty(x: int) -> int:
    """Crashes the interpreter running it on item 50: past what a probe measures, in a map of 200."""
    if x == 50:
        import ctypes

        ctypes.string_at(0)
    return x * 10


UNMEASURED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.errors import WorkerCrashedError
    from tests import tasks
    from tests.reliability.test_crashes import segfault_always

    strategy, scenario = sys.argv[1], sys.argv[2]
    fn, items, options, config = tasks.segfault_on_five, list(range(10)), {}, {"max_workers": 2}
    if scenario == "large_item":  # above the 16 MiB task_size_hint_bytes: costly to send, still sendable
        fn, items = segfault_always, [b"x" * (17 << 20)] * 2
    elif scenario == "one_worker":
        config = {"max_workers": 1}
    elif scenario == "one_cpu":  # no max_workers: the CPUs this process may use decide
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        config = {}
    out = {}
    with ParallelExecutor(ParallelConfig(strategy=strategy, **config)) as ex:
        try:
            ex.map(fn, items, **options)
            out["error"] = None
        except WorkerCrashedError as exc:
            out.update(error=type(exc).__name__, item=exc.item_index, signal=exc.signal_name)
        out["after"] = ex.map(tasks.square, range(4), **options)
        record = ex.last_record
        fallback = record.fallback_reason
        out["record"] = [record.selected_strategy, record.workers, fallback and fallback.value]
    print(json.dumps(out), flush=True)
""")


STACKS_ON_SIGUSR1 = "import faulthandler, signal; faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
"""Put before a child's script: a child that outlives its timeout prints every thread's stack before it is killed
(one hung once in CI, killed with no word of where it waited)."""


def run_child(script: str, *args: str) -> dict[str, object]:
    child = subprocess.Popen([sys.executable, "-c", STACKS_ON_SIGUSR1 + script, *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV)
    try:
        stdout, stderr = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGUSR1)
        time.sleep(2)
        child.kill()
        _, stderr = child.communicate()
        pytest.fail(f"the caller did not finish within 120 s; its threads then:\n{stderr[-6000:]}")
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    assert proc.returncode == 0, f"the caller died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
@pytest.mark.parametrize("scenario", ["large_item", "one_worker", "one_cpu"])
def test_an_unmeasured_function_runs_in_a_worker_whatever_would_keep_a_measured_one_serial(
        strategy: str, scenario: str) -> None:
    """Each of these ran the first call's items in the caller (payload_too_large, single_worker,
    tiny_workload), so a segfaulting item killed it: the user named a process backend, so it runs there."""
    out = run_child(UNMEASURED_SCRIPT, strategy, scenario)
    assert out["error"] == "WorkerCrashedError", out
    # the signal is named when the dead worker's exit code is still known; a pool of one may have reaped it first
    assert out["signal"] in ("SIGSEGV", None), out
    assert out["after"] == [0, 1, 4, 9], out
    if scenario in ("one_worker", "one_cpu"):  # a pool of one worker process, and the record says so
        assert out["record"] == [strategy, 1, None], out


# -- a function that crashed a worker never runs in the caller again ---------------------------------------------

AGAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.errors import WorkerCrashedError
    from tests.reliability.test_crashes import segfault_on_fifty

    first, second = sys.argv[1], sys.argv[2]
    out = []
    for strategy in (first, second):  # two executors: what a crash taught is the process's, like every fact
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
            try:
                ex.map(segfault_on_fifty, range(200))
                out.append(None)
            except WorkerCrashedError as exc:
                out.append(exc.item_index)
            record = ex.last_record
            out.append([record.selected_strategy, record.decision_reason.value,
                        record.fallback_reason and record.fallback_reason.value, record.probe_items])
    print(json.dumps({"calls": out}), flush=True)
""")


@pytest.mark.parametrize(("first", "second", "decision"), [
    ("processes", "processes", "explicit_strategy"),  # planned tiny_workload, serial, the second time
    ("joblib", "joblib", "explicit_strategy"),
    ("processes", "auto", "auto_isolates_crashes"),  # auto would measure it in the caller, then stay serial
])
def test_a_function_that_crashed_a_worker_never_runs_in_the_caller_again(first: str, second: str,
                                                                        decision: str) -> None:
    out = run_child(AGAIN_SCRIPT, first, second)
    calls = out["calls"]
    assert isinstance(calls, list)
    assert calls[0] == 50, out
    assert calls[2] == 50, f"the second call did not crash a worker again: {out}"
    strategy, reason, _, probed = calls[3]
    assert strategy in ("processes", "joblib") and reason == decision and probed == 0, out


def test_a_crash_that_was_recovered_keeps_the_function_out_of_the_caller(tmp_path: Path) -> None:
    """A worker died once (map_failure_retry): small calls of that function, which a measured function would
    run in the caller (tiny_workload, or a probe under auto), stay in worker processes."""
    parent = os.getpid()
    items = [(i, parent, str(tmp_path / "died")) for i in range(40)]
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex, \
            pytest.warns(ParallelFallbackWarning, match="recovered on processes"):
        ex.map(tasks.die_once_in_worker, items, chunksize=4)
    assert ex.last_record is not None and ex.last_record.fallback_reason is Reason.MAP_FAILURE_RETRY
    for config in (ParallelConfig(strategy="processes", max_workers=2), ParallelConfig(max_workers=2),
                   ParallelConfig(strategy="processes", max_workers=2, min_batch_size=100)):
        with ParallelExecutor(config) as ex:
            assert ex.map(tasks.die_once_in_worker, items[:3]) == [0, 10, 20]
        record = ex.last_record
        assert record is not None
        assert record.selected_strategy == "processes", record.summary()
        assert record.fallback_reason is None
        assert not [c for c in record.chunks if c.where == "caller"], "an item ran in the caller"
        if config.strategy_name == "auto":
            assert record.decision_reason is Reason.AUTO_ISOLATES_CRASHES


@pytest.mark.parametrize("strategy", ["processes", "joblib", "auto"])
def test_a_function_that_crashed_a_worker_and_cannot_be_sent_is_not_run_in_the_caller(strategy: str) -> None:
    """Nothing can take its items to a worker process, and the caller is no place for them: a clear error,
    before any item runs. Naming strategy='serial' runs them in the caller, as asked."""
    import pickle
    import threading

    ran: list[object] = []

    def note(item: object) -> int:
        ran.append(item)
        return 1

    planning.KNOWLEDGE.crashed(note, "item 3 crashed a worker process (killed by SIGSEGV)")
    config = ParallelConfig(max_workers=2) if strategy == "auto" else ParallelConfig(strategy=strategy, max_workers=2)
    with ParallelExecutor(config) as ex, pytest.raises(pickle.PicklingError, match="crashed a worker process"):
        ex.map(note, [threading.Lock() for _ in range(3)])
    assert ran == [], "an item ran in the caller"
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        assert ex.map(note, [threading.Lock() for _ in range(3)]) == [1, 1, 1]


# -- the isolation switch: an "error" filter on the fallback warning stops the call before any item runs ---------


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_error_filter_stops_an_unpicklable_call_before_any_item_runs(strategy: str) -> None:
    import threading

    ran: list[object] = []

    def note(item: object) -> int:
        ran.append(item)
        return 1

    items = [threading.Lock() for _ in range(3)]  # no pickler can send a lock
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            with pytest.raises(ParallelFallbackWarning, match=r"\(unpicklable\)") as info:
                ex.map(note, items)
        assert ran == [], "items ran in the caller before the error"
        assert info.value.reason is Reason.UNPICKLABLE
        assert "Nothing ran" in str(info.value)
        with warnings.catch_warnings(record=True) as caught:  # without the error filter: a warning, after
            warnings.simplefilter("always", ParallelFallbackWarning)
            assert ex.map(note, items) == [1, 1, 1]
    assert len(ran) == 3
    fallbacks = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert len(fallbacks) == 1, "warned once, with the record"
    assert fallbacks[0].message.record is not None  # type: ignore[union-attr]


# -- a function only cloudpickle can send, under named processes -------------------------------------------------

LAMBDA_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.errors import WorkerCrashedError

    scale = 3
    crash = lambda x: os._exit(7) if x == 5 else x  # noqa: E731 - what pickle cannot name
    out = {}
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2)) as ex:
        out["closure"] = ex.map(lambda x: x * scale, range(6))
        record = ex.last_record
        out["record"] = [record.selected_strategy, record.fallback_reason and record.fallback_reason.value]
        try:
            ex.map(crash, range(50))
            out["error"] = None
        except WorkerCrashedError as exc:
            out.update(error=type(exc).__name__, item=exc.item_index)
    print(json.dumps(out), flush=True)
""")


def test_a_lambda_under_named_processes_runs_in_the_workers_by_value() -> None:
    """A lambda or closure ran in the caller (``unpicklable``) though cloudpickle could send it, so an item that
    crashed killed the caller, under a backend named for its worker processes (helper 27, fault 2)."""
    out = run_child(LAMBDA_SCRIPT)
    assert out["closure"] == [0, 3, 6, 9, 12, 15], out
    assert out["record"] == ["processes", None], out
    assert out["error"] == "WorkerCrashedError" and out["item"] == 5, out


# -- a function too large to send with every chunk, where no file can be written -----------------------------------

NO_ROOM_SCRIPT = textwrap.dedent("""
    import functools, json, resource, signal, sys
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    big = functools.partial(tasks.spin_with, b"x" * (200 << 10))  # ships once, as a file, above 64 KiB
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))
    out = {}
    with ParallelExecutor(ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0.0)) as ex:
        out["result"] = ex.map(big, range(20)) == [tasks.spin(x) for x in range(20)]
        record = ex.last_record
        out["record"] = [record.selected_strategy, record.fallback_reason and record.fallback_reason.value]
    print(json.dumps(out), flush=True)
""")


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_large_function_travels_with_its_chunks_when_no_file_can_be_written(strategy: str) -> None:
    """A function pickling above 64 KiB is written to a file once for the workers; in a full TMPDIR that
    write raised OSError (ENOSPC) out of the map, where ProcessPoolExecutor runs it (helper 28, fault 2)."""
    out = run_child(NO_ROOM_SCRIPT, strategy)
    assert out == {"result": True, "record": [strategy, None]}, out


def test_loky_names_the_code_it_saw_at_the_crash_not_the_kills_that_followed() -> None:
    """loky kills the surviving workers (SIGKILL) as soon as one dies, often before payoff looks: by then
    both codes are there, and a clean exit ranks below a kill on a pool that retires idle workers. The
    error loky raised lists only the code it saw at the crash, so that is the code named."""
    pool = make_strategy("joblib", 2, ParallelConfig(strategy="joblib", max_workers=2))
    pool.start()
    try:
        crashing = pool.submit_call(tasks.exit_zero_on_five, 5)
        with pytest.raises(BrokenExecutor) as info:
            crashing.result(timeout=60)
        deadline = time.monotonic() + 30
        while len(pool.exit_codes()) < 2 and time.monotonic() < deadline:  # the survivor killed and reaped
            time.sleep(0.05)
        assert sorted(pool.exit_codes()) == [-int(signal.SIGKILL), 0], "the race's setting: both codes known"
        assert pool.exit_codes(info.value)[0] == 0
    finally:
        pool.kill()


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_worker_killed_while_its_pool_is_idle_is_no_crash_of_the_next_call(strategy: str) -> None:
    """A worker killed from outside between calls (the OOM killer, an operator): the next call found the pool
    broken, recorded ``map_failure_retry`` and marked its function as one that crashes workers, so every later
    call of it, however small, went to worker processes (``auto_isolates_crashes``: 2-3x slower, for the life of
    the process; a service trial, 5 of 5). A pool that lost a worker while no call held it is replaced at the
    next lease, and nobody is blamed."""
    planner = planning.Planner()
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0,
                                         min_batch_size=1), planner=planner) as ex:
        assert ex.map(tasks.pid_of, range(8), chunksize=1)
        victim = next(p for p in set(ex.map(tasks.pid_of, range(8), chunksize=1)) if p != os.getpid())
        os.kill(victim, signal.SIGKILL)
        until(lambda: not alive(victim), "the killed worker to end")
        pool = ex._pools._current[strategy].pool  # as the next call finds it, once it saw its worker go
        until(pool.lost_a_worker, "the pool to see its worker gone")
        assert ex.map(tasks.square, range(40), chunksize=4) == [x * x for x in range(40)]
        record = ex.last_record
    assert record is not None
    assert record.fallback_reason is not Reason.MAP_FAILURE_RETRY, record.fallback_detail
    assert planner.knowledge.crash_of(tasks.square) is None
