"""Native thread pools (OpenBLAS, OpenMP, ...) in payoff's process workers.

Found by an adversarial run: every process worker kept OpenBLAS at one thread
per core, so two workers on two cores ran four busy threads and a BLAS-heavy
map took 3.4 s where a loop took 0.32 s and joblib 0.31 s; the record still
claimed a 1.4-1.9x gain. Workers now run ``capacity // workers`` native
threads (``ParallelConfig.inner_threads``), leaving the user's own variables
alone. Each scenario runs in a child interpreter, whose environment the test
chooses, under a guard.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.reliability.test_forks_and_exit import CHILD_ENV, GUARD_SECONDS, ROOT, last_json

SCENARIO = """
    import json, os, sys
    import numpy as np  # loaded, with OpenBLAS, before the workers start: forked workers inherit its setting
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.config import cpu_capacity
    from tests import tasks

    strategy, start_method, inner = sys.argv[1:4]
    threads_env = lambda: {k: v for k, v in os.environ.items() if "THREADS" in k}  # noqa: E731
    before = threads_env()  # all of them: joblib's import sets KMP_INIT_AT_FORK, as it always did
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                            start_method=None if start_method == "default" else start_method,
                            inner_threads=None if inner == "auto" else int(inner))
    with ParallelExecutor(config=config) as ex:
        seen = ex.map(tasks.native_threads, range(4))
    print(json.dumps({"workers": [{k: v for k, v in s.items() if k != "pid"} for s in seen],
                      "auto": max(1, int(cpu_capacity() // 2)), "caller_env_kept": threads_env() == before,
                      "caller_openblas": tasks.native_threads(0)["libs"].get("openblas")}))
"""

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "GOTO_NUM_THREADS")


def scenario(strategy: str, start_method: str, inner: str, **user: str) -> dict[str, Any]:
    """The scenario in a child whose environment has none of the thread variables but ``user``'s."""
    env = {k: v for k, v in CHILD_ENV.items() if k not in VARIABLES} | user
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(SCENARIO), strategy, start_method, inner],
                           capture_output=True, text=True, timeout=GUARD_SECONDS, cwd=ROOT, env=env)
    return last_json(child)


@pytest.mark.parametrize(("strategy", "start_method"), [
    ("processes", "default"), ("processes", "spawn"), ("joblib", "default")])
def test_workers_run_capacity_over_workers_native_threads(strategy: str, start_method: str) -> None:
    got = scenario(strategy, start_method, "auto")
    assert got["caller_env_kept"]
    for worker in got["workers"]:
        assert worker["libs"]["openblas"] == got["auto"], worker
        assert set(worker["env"].values()) == {str(got["auto"])}, worker


def test_the_users_variable_wins_and_the_callers_environment_is_kept() -> None:
    got = scenario("processes", "default", "auto", OPENBLAS_NUM_THREADS="2")
    assert got["caller_env_kept"] and got["caller_openblas"] == 2
    for worker in got["workers"]:
        assert worker["libs"]["openblas"] == 2, worker  # OpenBLAS left at the user's setting
        assert worker["env"]["OPENBLAS_NUM_THREADS"] == "2"
        assert worker["env"]["OMP_NUM_THREADS"] == str(got["auto"])  # the others limited
    omp = scenario("processes", "default", "auto", OMP_NUM_THREADS="2")  # OpenBLAS falls back to it
    for worker in omp["workers"]:
        assert worker["libs"]["openblas"] == 2 and worker["env"]["OPENBLAS_NUM_THREADS"] is None, worker


def test_inner_threads_names_the_number_or_turns_the_limit_off() -> None:
    got = scenario("processes", "default", "2", OPENBLAS_NUM_THREADS="1")
    assert got["caller_env_kept"]
    for worker in got["workers"]:
        assert worker["libs"]["openblas"] == 2 and set(worker["env"].values()) == {"2"}, worker
    off = scenario("processes", "default", "0")
    for worker in off["workers"]:
        assert worker["libs"]["openblas"] == off["caller_openblas"], worker
        assert set(worker["env"].values()) == {None}, worker


def test_inner_threads_is_part_of_the_pools_identity() -> None:
    from payoff import ParallelConfig
    from payoff._pools import pool_key

    limited, free = ParallelConfig(inner_threads=1), ParallelConfig(inner_threads=0)
    assert not pool_key(limited, "processes", 2).serves(pool_key(free, "processes", 2))
    assert pool_key(limited, "threads", 2).serves(pool_key(free, "threads", 2))  # threads are not limited
