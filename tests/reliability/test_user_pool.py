"""A pool the user hands over (``strategy=my_pool``) runs every item: payoff measures nothing in the caller.

The user chose that pool for what it is: its workers ran an ``initializer`` (a
model loaded into a global), or they isolate the caller from items that may
crash. A first item run in the caller to learn its cost would see neither: it
failed where the workers' state was missing, or took the caller down with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import payoff
from payoff import ParallelExecutor, planning
from tests import tasks

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}


@pytest.mark.parametrize("workers", [1, 2])
def test_items_run_where_the_pools_initializer_ran(workers: int) -> None:
    """A fresh function (its own planner: nothing measured) on a pool whose initializer loaded the model."""
    with ProcessPoolExecutor(workers, initializer=tasks.load_model, initargs=(3,)) as pool, \
            ParallelExecutor(strategy=pool, planner=planning.Planner()) as ex:
        assert ex.map(tasks.predict, range(20)) == [3 * x for x in range(20)]
        pids = ex.map(tasks.pid_of, range(20))
        record = ex.last_record
    assert os.getpid() not in pids
    assert record is not None and record.selected_strategy == "custom" and record.probe_items == 0


def test_a_thread_pool_the_user_hands_over_runs_every_item_on_its_threads() -> None:
    """Thread-local state set up by the pool's initializer is the same case as a process's global."""
    with ThreadPoolExecutor(2, thread_name_prefix="users-pool") as pool, \
            ParallelExecutor(strategy=pool, planner=planning.Planner()) as ex:
        names = ex.map(tasks.thread_name, range(20))
    assert all(name.startswith("users-pool") for name in names), set(names)


CRASH_SCRIPT = textwrap.dedent("""
    from concurrent.futures import ProcessPoolExecutor
    from payoff import ParallelExecutor
    from tests import tasks

    if __name__ == "__main__":
        with ProcessPoolExecutor(2) as pool, ParallelExecutor(strategy=pool) as ex:
            try:
                ex.map(tasks.exit_on_five, range(5, 25))  # the first item kills its process
            except Exception as exc:
                print("raised", type(exc).__name__)
        print("caller survived")
""")


def test_an_item_that_kills_its_process_kills_a_worker_of_the_users_pool_not_the_caller() -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT], cwd=ROOT, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "caller survived" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    assert "raised" in proc.stdout, proc.stdout


AGAIN_SCRIPT = textwrap.dedent("""
    import functools
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from payoff import ParallelExecutor
    from concurrent.futures import BrokenExecutor
    from payoff import planning
    from tests import tasks

    if __name__ == "__main__":
        with ProcessPoolExecutor(2) as pool, ParallelExecutor(strategy=pool) as ex:
            # the second call wraps the function (a key of its own: nothing learned of the first holds for it)
            for attempt, fn in ((1, tasks.exit_on_five), (2, functools.partial(tasks.exit_on_five))):
                try:
                    ex.map(fn, range(5, 25), chunksize=5)
                except BrokenExecutor as exc:
                    print("attempt", attempt, "raised:", exc)
                    print("cause", type(exc.__cause__).__name__)
                sys.stdout.flush()
            try:
                ex.map(tasks.square, range(4))
            except BrokenExecutor:
                pass
        print("square marked:", planning.PLANNER.knowledge.crash_of(tasks.square) is not None)
        print("caller survived")
""")


def test_a_function_that_broke_the_users_pool_never_runs_in_the_caller_on_its_next_call() -> None:
    """The pip-user trial's fault: the pool the first call broke raised at the second call's first submit, and
    payoff ran that call's chunks in the caller, where item 5 ended the caller's process (rc=3) after the first
    call's error said the caller never runs such an item; a ``partial`` of it, a function of its own to the
    planner, did the same after a first fix keyed on the function (the review). A user's process pool cannot be
    restarted: a call on it once broken raises, whatever its function."""
    proc = subprocess.run([sys.executable, "-c", AGAIN_SCRIPT], cwd=ROOT, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "caller survived" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    second = [line for line in proc.stdout.splitlines() if line.startswith("attempt 2 raised:")]
    assert second and "is broken" in second[0] and "fresh pool" in second[0], proc.stdout
    assert "cause BrokenProcessPool" in proc.stdout, proc.stdout
    assert "square marked: False" in proc.stdout, "an innocent call on the broken pool was marked as a crasher"


def _refuse() -> None:
    raise RuntimeError("this pool's initializer fails")


def test_a_users_thread_pool_that_broke_raises_and_never_runs_the_call_where_its_initializer_never_ran() -> None:
    """A thread pool breaks only when its initializer failed: its next call's chunks then ran in the caller,
    where that initializer never ran (the second review: "NO MODEL" results, one fallback warning)."""
    with ThreadPoolExecutor(2, initializer=_refuse) as pool, \
            ParallelExecutor(strategy=pool, planner=planning.Planner()) as ex:
        for _ in range(2):
            with pytest.raises(BrokenExecutor):
                ex.map(tasks.square, range(20))
