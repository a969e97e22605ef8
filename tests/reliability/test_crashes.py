"""A crashing item never takes the caller down; its error names it; no worker is left behind (issue 12).

The crashing maps run in a child interpreter: on the old code the item was
rerun in the caller, which would have killed pytest itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason
from payoff.errors import WorkerCrashedError
from tests import tasks

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
                   results_ok=all(v == k * 10 for k, v in exc.completed.items()))
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
    assert out["after"] == [x * x for x in range(6)], "the executor works after the crash"
    assert out["children"] == [], "a worker process outlived the executor"


def test_an_item_calling_os_exit_is_named_with_its_exit_code() -> None:
    out = run_crash("processes", "exit_on_five")
    assert (out["error"], out["item"], out["exitcode"]) == ("WorkerCrashedError", 5, 7), out
    assert "exit code 7" in str(out["message"]), out


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


@pytest.mark.parametrize(("codes", "culprit"), [
    ([-9, -11], -11),    # loky kills the survivors with SIGKILL; the one that crashed may come second
    ([-15, -11], -11),   # a process pool terminates the survivors with SIGTERM
    ([-9, -15, 7], 7),   # an item called os._exit(7)
    ([-15, -9], -9),     # the kernel's OOM killer: SIGKILL is all there is to name
    ([0, -11], -11),     # a worker that retired idle earlier exited cleanly
    ([-15], -15),
    ([], None),
])
def test_the_crash_is_named_by_the_worker_that_died_not_by_those_the_pool_killed_after(
        codes: list[int], culprit: int | None) -> None:
    from payoff._maprun import _culprit_code
    assert _culprit_code(codes) == culprit
