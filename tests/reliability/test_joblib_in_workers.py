"""``joblib.Parallel`` inside a payoff process worker, after the caller used joblib itself.

Found by an adversarial run: a forked worker inherits loky's reusable executor
(module globals) without its manager thread and worker processes, so joblib in
an item queued its tasks on that copy and the map never returned (timeout=60
ran out; 1 s when the caller had not used joblib). And the loky workers joblib
started in a payoff worker kept it from exiting for joblib's idle timeout
(300 s), so the pool's ``shutdown`` (a ``with`` block's end) waited that long.
Each scenario runs in a child interpreter under a guard, with a map timeout
below it.
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
