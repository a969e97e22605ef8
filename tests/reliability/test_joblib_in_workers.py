"""``joblib.Parallel`` inside a payoff process worker, after the caller used joblib itself.

Found by an adversarial run: a forked worker inherits loky's reusable executor
(module globals) without its manager thread and worker processes, so joblib in
an item queued its tasks on that copy and the map never returned (timeout=60
ran out; 1 s when the caller had not used joblib). And the loky workers joblib
started in a payoff worker kept it from exiting for joblib's idle timeout
(300 s), so the pool's ``shutdown`` (a ``with`` block's end) waited that long.
And a worker stopped in the middle of an item (a cancel, a call's timeout) left
the loky workers its items' ``joblib.Parallel`` had started running without it,
adopted by init, for joblib's idle timeout. Each scenario runs in a child
interpreter under a guard, with a map timeout below it.
"""

from __future__ import annotations

import json

import pytest

from tests.reliability.test_forks_and_exit import last_json, run_child

SCENARIO = """
    import json, sys
    import joblib
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    strategy, start_method, inner, warm = sys.argv[1:5]
    if warm == "warm":  # the caller used joblib (and, for payoff_inside, a payoff process pool) first
        joblib.Parallel(n_jobs=2)(joblib.delayed(tasks.square)(i) for i in range(4))
        ParallelExecutor(strategy="processes").map(tasks.square, range(4))
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                            start_method=None if start_method == "default" else start_method)
    fn = getattr(tasks, inner)
    with ParallelExecutor(config=config) as ex:
        out = ex.map(fn, range(4), timeout=40)
        print(json.dumps({"out": out, "strategy": ex.last_record.selected_strategy}))
"""

WANT = [x + sum(i * i for i in range(8)) for x in range(4)]


@pytest.mark.parametrize(("strategy", "start_method", "inner", "warm"), [
    ("processes", "fork", "joblib_inside", "warm"),  # the map hung before
    ("processes", "default", "joblib_inside", "warm"),  # payoff's default on Linux: fork
    ("processes", "fork", "joblib_inside", "cold"),  # the map returned, the pool's shutdown waited 300 s
    ("processes", "forkserver", "joblib_inside", "warm"),
    ("joblib", "default", "joblib_inside", "warm"),  # loky starts its workers by fork+exec: nothing inherited
    ("processes", "fork", "payoff_inside", "warm"),  # payoff's own pools: its fork hooks reset them
])
def test_joblib_or_payoff_inside_a_worker_after_the_caller_used_them(strategy: str, start_method: str,
                                                                     inner: str, warm: str) -> None:
    result = last_json(run_child(SCENARIO, strategy, start_method, inner, warm))
    assert result == {"out": WANT, "strategy": strategy}, json.dumps(result)


STOPPED_MID_ITEM = """
    import atexit, json, os, shutil, sys, tempfile, threading, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    strategy, start_method = sys.argv[1:3]
    folder = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, folder, True)
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                            start_method=None if start_method == "default" else start_method)
    ex = ParallelExecutor(config=config)

    def cancel_once_joblib_ran():
        deadline = time.monotonic() + 40
        while not os.listdir(folder) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the other worker's item too, most often
        ex.cancel()

    threading.Thread(target=cancel_once_joblib_ran, daemon=True).start()
    try:
        ex.map(tasks.joblib_then_sleep, [folder] * 2, chunksize=1, timeout=45)
        raised = None
    except BaseException as exc:
        raised = type(exc).__name__
    inner = [int(p) for name in os.listdir(folder) if not name.endswith(".tmp")
             for p in open(os.path.join(folder, name)).read().split()]

    def running(pid):  # a zombie adopted by an init that does not reap counts as ended
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while any(running(p) for p in inner) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in inner if running(p)]
    for pid in left:  # not to leave them to the rest of the suite
        os.kill(pid, 9)
    ex.shutdown()
    print(json.dumps({"raised": raised, "inner": len(inner) > 0, "left": left}))
"""


@pytest.mark.parametrize(("strategy", "start_method"), [
    ("processes", "fork"),
    ("processes", "forkserver"),
    ("joblib", "default"),
])
def test_a_worker_stopped_mid_item_takes_the_loky_workers_of_its_items_with_it(strategy: str,
                                                                               start_method: str) -> None:
    result = last_json(run_child(STOPPED_MID_ITEM, strategy, start_method))
    assert result == {"raised": "CancelledError", "inner": True, "left": []}, json.dumps(result)
