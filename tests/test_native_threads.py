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

from payoff.config import cpu_capacity
from tests.reliability.test_forks_and_exit import CHILD_ENV, GUARD_SECONDS, ROOT, last_json

SCENARIO = """
    import json, os, sys
    import numpy as np  # loaded, with OpenBLAS, before the workers start: forked workers inherit its setting
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.config import cpu_capacity
    from tests import tasks

    strategy, start_method, inner, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    threads_env = lambda: {k: v for k, v in os.environ.items() if "THREADS" in k or k.startswith("LOKY")}  # noqa: E731
    before = threads_env()  # all of them: joblib's import sets KMP_INIT_AT_FORK, as it always did
    config = ParallelConfig(strategy=strategy, max_workers=workers, tiny_workload_threshold=0.0,
                            start_method=None if start_method == "default" else start_method,
                            inner_threads=None if inner == "auto" else int(inner))
    with ParallelExecutor(config=config) as ex:
        seen = ex.map(tasks.native_threads, range(4))
    print(json.dumps({"workers": [{k: v for k, v in s.items() if k != "pid"} for s in seen],
                      "auto": max(1, int(cpu_capacity() // workers)), "caller_env_kept": threads_env() == before,
                      "caller_openblas": tasks.native_threads(0)["libs"].get("openblas"),
                      "caller_joblib_cpus": tasks.native_threads(0)["joblib_cpus"]}))
"""

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "GOTO_NUM_THREADS", "LOKY_MAX_CPU_COUNT")


def scenario(strategy: str, start_method: str, inner: str, workers: int = 2, **user: str) -> dict[str, Any]:
    """The scenario in a child whose environment has none of the thread variables but ``user``'s."""
    env = {k: v for k, v in CHILD_ENV.items() if k not in VARIABLES} | user
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(SCENARIO), strategy, start_method, inner,
                            str(workers)],
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


def test_the_users_variable_holds_up_to_a_workers_share_and_the_callers_environment_is_kept() -> None:
    """A user's number is kept where it asks for no more than a worker's share of the CPUs, and lowered to it
    where it asks for more: ``OMP_NUM_THREADS=2`` on 2 cores gave two workers two spinning OpenBLAS threads
    each, 3.5-20x slower than the loop, and the record said 1.2-1.4x faster (environments trial)."""
    got = scenario("processes", "default", "auto", workers=1, OPENBLAS_NUM_THREADS="1")  # a share above 1
    if got["auto"] < 2:
        pytest.skip("one CPU: a worker's share is 1, so a kept 1 cannot be told from a lowered one")
    assert got["caller_env_kept"] and got["caller_openblas"] == 1
    for worker in got["workers"]:
        assert worker["libs"]["openblas"] == 1, worker  # the user's smaller setting is theirs
        assert worker["env"]["OPENBLAS_NUM_THREADS"] == "1"
        assert worker["env"]["OMP_NUM_THREADS"] == str(got["auto"])  # the others limited
    many = str(2 * max(1, int(cpu_capacity() // 2)))  # more than a worker's share of two workers
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # OpenBLAS falls back to OMP_NUM_THREADS
        over = scenario("processes", "default", "auto", **{variable: many})
        assert over["caller_env_kept"] and over["caller_openblas"] == int(many), "the caller keeps the user's"
        for worker in over["workers"]:
            assert worker["libs"]["openblas"] == over["auto"], worker
            assert worker["env"]["OPENBLAS_NUM_THREADS"] == str(over["auto"]), worker


def test_inner_threads_names_the_number_or_turns_the_limit_off() -> None:
    got = scenario("processes", "default", "2", OPENBLAS_NUM_THREADS="1")
    assert got["caller_env_kept"]
    for worker in got["workers"]:
        assert worker["libs"]["openblas"] == 2 and set(worker["env"].values()) == {"2"}, worker
    off = scenario("processes", "default", "0")
    for worker in off["workers"]:
        assert worker["libs"]["openblas"] == off["caller_openblas"], worker
        assert set(worker["env"].values()) == {None}, worker


@pytest.mark.parametrize(("strategy", "start_method"), [("processes", "default"), ("joblib", "default")])
def test_joblib_n_jobs_minus_one_in_a_worker_takes_its_share_of_the_cpus(strategy: str, start_method: str) -> None:
    """``joblib.Parallel(n_jobs=-1)`` in an item (a scikit-learn ``n_jobs=-1`` predict) started a loky pool of
    one process per core in every worker (4 CPU-bound processes for 2 workers on 2 cores, a pool start each):
    a forest's predict ran 2.9x, small joblib tasks 37x slower than with the worker's share (``LOKY_MAX_CPU_COUNT``,
    which loky reads at every call, as the libraries above read theirs)."""
    got = scenario(strategy, start_method, "auto")
    assert got["caller_env_kept"]
    for worker in got["workers"]:
        assert worker["joblib_cpus"] == got["auto"], worker
    many = scenario("processes", "default", "auto", LOKY_MAX_CPU_COUNT=str(2 * got["auto"]))  # above the share
    assert all(worker["joblib_cpus"] == got["auto"] for worker in many["workers"]), many
    one = scenario("processes", "default", "auto", LOKY_MAX_CPU_COUNT="1")  # within it: the user's stays
    assert all(worker["env"]["LOKY_MAX_CPU_COUNT"] == "1" for worker in one["workers"]), one
    forced = scenario("processes", "default", "1", LOKY_MAX_CPU_COUNT="2")
    assert all(worker["joblib_cpus"] == 1 for worker in forced["workers"]), forced


def test_inner_threads_is_part_of_the_pools_identity() -> None:
    from payoff import ParallelConfig
    from payoff._pools import pool_key

    limited, free = ParallelConfig(inner_threads=1), ParallelConfig(inner_threads=0)
    assert not pool_key(limited, "processes", 2).serves(pool_key(free, "processes", 2))
    assert pool_key(limited, "threads", 2).serves(pool_key(free, "threads", 2))  # threads are not limited


IDLE = """
    import json, sys
    import numpy as np  # OpenBLAS loaded with 2 threads: the parent's thread server is running
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    np.ones((256, 256)) @ np.ones((256, 256))
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0,
                            inner_threads=int(sys.argv[1]))
    with ParallelExecutor(config=config) as ex:
        outside = ex.map(tasks.threads_outside_python, range(4))
        limits = ex.map(tasks.native_threads, range(4))
    from threadpoolctl import ThreadpoolController
    from payoff._native_threads import _OPENBLAS_AFFIXES
    stoppable = any(hasattr(lib.dynlib, f"{p}blas_thread_shutdown_{s}") for p, s in _OPENBLAS_AFFIXES
                    for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas")
    print(json.dumps({"outside": outside, "openblas": [s["libs"].get("openblas") for s in limits],
                      "stoppable": stoppable}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts a process's threads in /proc")
@pytest.mark.parametrize("inner", [1, 2])
def test_limiting_openblas_in_a_worker_starts_no_thread_server_until_a_blas_call_needs_it(inner: int) -> None:
    """Setting a forked worker's OpenBLAS threads started its thread server (the fork had stopped it), whose
    thread then spun for ~0.1 s of a core waiting for work: 120 ms of CPU per worker after every pool start,
    which slowed the calls right after it (a 5 ms call took 12-20 ms, and the planner learned a loss from it).
    The limit now leaves the server stopped, as the fork left it; OpenBLAS starts it at a call that uses it."""
    env = {k: v for k, v in CHILD_ENV.items() if k not in VARIABLES} | {"OPENBLAS_NUM_THREADS": "2"}
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(IDLE), str(inner)], capture_output=True,
                           text=True, timeout=GUARD_SECONDS, cwd=ROOT, env=env)
    got = last_json(child)
    assert got["openblas"] == [inner] * 4, got  # the limit holds
    if inner < 2 and not got["stoppable"]:  # below the parent's 2, only that symbol stops the server the set started
        pytest.skip("this OpenBLAS exports no blas_thread_shutdown_ (numpy 2.5's scipy-openblas 0.3.34 hides it)")
    assert got["outside"] == [0, 0, 0, 0], got  # no native thread in a worker that made no BLAS call
