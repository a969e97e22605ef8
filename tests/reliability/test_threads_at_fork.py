"""A payoff process pool forked while another thread of the caller was importing a module.

Found by an adversarial run: a program whose other thread was running a
module's import (a lazy import in a telemetry or server thread) when payoff
forked its workers left each worker with that module half-made and its import
lock held by a thread the worker does not have. An item importing the module
waited forever: ``timeout=`` was the only way out (``TimeoutError``, every run
with fork; forkserver and spawn workers, and joblib's, start fresh and never
hung). And a lock of the program's own that another thread held at the fork
is held in every forked worker for good: nothing can tell whose it is, so an
item or initializer taking it waits until ``timeout=`` or ``pool_start_timeout``,
whose messages named neither the threads nor the fix (a forkserver start);
they do now. Each scenario runs in a child interpreter under a guard, with a
map timeout below it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.test_forks_and_exit import last_json, run_child

HALF_IMPORTED = """
import builtins, os
gate = getattr(builtins, "_payoff_test_gate", None)
if gate is not None and gate[0] == os.getpid():  # only the caller's thread stops here; workers run straight through
    gate[1].set()
    gate[2].wait(30)
VALUE = 7
"""

ITEMS = """
def item(x):
    import half_imported
    return x + half_imported.VALUE
"""

SCENARIO = """
    import builtins, json, os, sys, threading
    sys.path.insert(0, sys.argv[2])
    from payoff import ParallelConfig, ParallelExecutor
    import items

    entered, release = threading.Event(), threading.Event()
    builtins._payoff_test_gate = (os.getpid(), entered, release)
    importer = threading.Thread(target=lambda: __import__("half_imported"))
    importer.start()
    entered.wait(30)  # the import is under way in that thread: its module lock is held
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0,
                            start_method=sys.argv[1])
    try:
        with ParallelExecutor(config=config) as ex:
            out = ex.map(items.item, range(6), timeout=20)
    finally:
        release.set()
        importer.join()
    print(json.dumps({"out": out, "strategy": ex.last_record.selected_strategy}))
"""


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_workers_import_a_module_another_thread_was_importing_at_the_fork(start_method: str,
                                                                           tmp_path: Path) -> None:
    (tmp_path / "half_imported.py").write_text(HALF_IMPORTED)
    (tmp_path / "items.py").write_text(ITEMS)
    result = last_json(run_child(SCENARIO, start_method, str(tmp_path)))
    assert result == {"out": [x + 7 for x in range(6)], "strategy": "processes"}, json.dumps(result)


HELD_LOCK = """
import threading
LOCK = threading.Lock()

def item(x):
    with LOCK:
        return x

def init():
    with LOCK:
        pass
"""

HELD_SCENARIO = """
    import json, sys, threading
    sys.path.insert(0, sys.argv[2])
    from payoff import ParallelConfig, ParallelExecutor
    import held_lock

    taken, release = threading.Event(), threading.Event()
    def hold():
        with held_lock.LOCK:
            taken.set()
            release.wait(30)
    holder = threading.Thread(target=hold, name="cache-refresher")
    holder.start()
    taken.wait(30)
    init = held_lock.init if sys.argv[1] == "initializer" else None
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0, start_method="fork",
                            worker_initializer=init)
    try:
        with ParallelExecutor(config=config) as ex:
            try:
                ex.map(held_lock.item, range(4), timeout=2)
                said = "returned"
            except TimeoutError as exc:
                said = str(exc)
    finally:
        release.set()
        holder.join()
    print(json.dumps({"said": said}))
"""


@pytest.mark.parametrize("where", ["item", "initializer"])
def test_a_lock_held_at_the_fork_is_named_when_the_workers_do_not_answer(where: str, tmp_path: Path) -> None:
    (tmp_path / "held_lock.py").write_text(HELD_LOCK)
    said = str(last_json(run_child(HELD_SCENARIO, where, str(tmp_path)))["said"])
    assert ("did not finish within timeout=2" if where == "item" else "init had not returned") in said, said
    assert "'cache-refresher'" in said and "start_method='forkserver'" in said, said


SLOW_SCENARIO = """
    import json, threading
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    stop = threading.Event()
    beside = threading.Thread(target=stop.wait, args=(30,), name="IOPub", daemon=True)  # as a kernel runs
    beside.start()
    ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0,
                                         start_method="fork"))
    said = "returned"
    try:
        ex.map(tasks.nap_ms, [300] * 20, chunksize=1, timeout=1.5)
    except TimeoutError as exc:
        said = str(exc)
    ex.shutdown()
    stop.set()
    print(json.dumps({"said": said}))
"""


def test_a_timeout_of_workers_that_were_finishing_chunks_blames_no_lock_held_at_the_fork() -> None:
    """In a notebook the kernel's threads always run beside a fork, and every timeout on a process pool said a
    lock one of them held was the cause, with the items merely slow (15 of 200 done). Workers that brought
    chunks back hold no lost lock: the timeout is the call's own."""
    said = str(last_json(run_child(SLOW_SCENARIO))["said"])
    assert "did not finish within timeout=1.5" in said, said
    assert "forked while other threads" not in said and "'IOPub'" not in said, said
