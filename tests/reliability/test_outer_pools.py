"""A map inside a task of another library's process pool: that pool has the cores (helper 47's fault).

Each outer worker (a ``ProcessPoolExecutor``'s, joblib's loky, mpire's; none of them
daemonic) started a process pool of its own as if it had the machine: 2 outer
workers on 2 cores ran 4 CPU-bound processes, up to 16 descendants, each inner
record measuring 1.5-1.8x while the outer runs took up to 3.5x a plain loop. A
user's own ``multiprocessing.Process`` is no pool worker and keeps its pool.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import payoff
from payoff._outer_pools import _children, _children_by_scan, count_siblings
from payoff.config import usable_cpus

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {"PYTHONPATH": f"{Path(payoff.__file__).resolve().parents[1]}:{ROOT}", "PATH": "/usr/bin:/bin"}
GUARD_SECONDS = 120.0

SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, sys, warnings
    from concurrent.futures import ProcessPoolExecutor
    import joblib, mpire
    from payoff import ParallelConfig, ParallelExecutor
    from payoff.config import usable_cpus
    from tests.tasks import nap_ms, square

    def inner(strategy, fn=square, n=200, first=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)) as ex:
                out = ex.map(fn, range(first, first + n))
                rec = ex.last_record
        return [out == [fn(x) for x in range(first, first + n)], rec.selected_strategy, str(rec.decision_reason),
                str(rec.fallback_reason), rec.fallback_detail, rec.workers, rec.pool_started]

    def task(_):
        return {"auto": inner("auto"), "processes": inner("processes"), "waiting": inner("auto", nap_ms, 24, first=2)}

    def in_child(queue):  # a named backend in such a child: test_forks_and_exit.py
        queue.put({"auto": inner("auto")})

    def own_process(method):
        ctx = mp.get_context(method)
        queue = ctx.Queue()
        proc = ctx.Process(target=in_child, args=(queue,))
        proc.start()
        got = queue.get(timeout=100)
        proc.join()
        return got

    if __name__ == "__main__":
        cpus = usable_cpus()
        got = {}
        for method in ("fork", "spawn"):
            with ProcessPoolExecutor(cpus, mp_context=mp.get_context(method)) as pool:
                got[f"futures_{method}"] = list(pool.map(task, range(cpus)))
            got[f"process_{method}"] = [own_process(method)]
        with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
            got["futures_one_worker"] = [pool.submit(task, 0).result()]
        got["loky"] = joblib.Parallel(n_jobs=cpus)(joblib.delayed(task)(i) for i in range(cpus))
        with mpire.WorkerPool(cpus, daemon=False, start_method="fork") as pool:
            got["mpire"] = pool.map(task, range(cpus))
        print(json.dumps({"cpus": cpus, "got": got}))
""")

POOLS = {"futures_fork": "a concurrent.futures process pool", "futures_spawn": "a concurrent.futures process pool",
         "loky": "a joblib (loky) process pool", "mpire": "an mpire WorkerPool"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if usable_cpus() < 2:
        pytest.skip("one CPU: no pool of any kind runs in parallel")
    script = tmp_path_factory.mktemp("outer") / "outer_pools.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                          env=CHILD_ENV, timeout=GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_map_in_a_task_of_a_pool_that_fills_the_cpus_runs_serially_as_nested(
        runs: dict[str, object], pool: str) -> None:
    """Auto's and a named process backend's map inside each outer worker: serial, ``nested``, no pool
    started, the detail naming the pool and its workers; their results right."""
    cpus = runs["cpus"]
    tasks = runs["got"][pool]  # type: ignore[index]
    assert len(tasks) == cpus
    for got in tasks:
        for strategy in ("auto", "processes"):
            right, selected, _, reason, detail, workers, started = got[strategy]
            assert right and selected == "serial" and reason == "nested" and not started, got[strategy]
            assert f"inside a worker of {POOLS[pool]} with {cpus} worker processes" in detail, detail
            assert workers == 1


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_waiting_work_in_a_task_of_another_pool_still_gets_threads(runs: dict[str, object], pool: str) -> None:
    """Threads that wait take no core: auto's threads for waiting items are the planner's as anywhere. Each item
    naps 2 ms or more: a first item of a 0 ms nap, descheduled past the probe's 2 ms budget in a loaded CI run,
    was all the probe read, and it read CPU work."""
    for got in runs["got"][pool]:  # type: ignore[index]
        right, selected, decision, reason, _, workers, _ = got["waiting"]
        assert right and selected == "threads" and decision == "auto_waiting" and reason == "None", got["waiting"]
        assert workers >= 2


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_users_own_process_is_no_pool_worker_and_keeps_its_process_pool(
        runs: dict[str, object], method: str) -> None:
    [got] = runs["got"][f"process_{method}"]  # type: ignore[index]
    right, selected, _, reason, _, workers, started = got["auto"]
    assert right and selected == "processes" and reason == "None" and started, got["auto"]
    assert workers == runs["cpus"]


def test_a_worker_of_a_pool_smaller_than_the_cpus_takes_its_share(runs: dict[str, object]) -> None:
    """A pool of one worker on 2 or more CPUs leaves that worker all of them: its map starts a pool."""
    [got] = runs["got"]["futures_one_worker"]  # type: ignore[index]
    for strategy in ("auto", "processes"):
        right, selected, _, reason, _, workers, started = got[strategy]
        assert right and selected == "processes" and reason == "None" and started, got[strategy]
        assert workers == runs["cpus"]


def test_a_parents_children_read_from_its_threads_and_from_every_process_agree() -> None:
    """The pool's workers as ``/proc`` lists them (each thread's ``children``, or on a kernel without those,
    every process's parent), and the count of those running this program: the test's own children."""
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    kids = [ctx.Process(target=done.wait, args=(30,)) for _ in range(2)]
    for kid in kids:
        kid.start()
    try:
        proc = Path("/proc")
        if not (proc / str(os.getpid()) / "task").is_dir():
            pytest.skip("no /proc")
        mine = {kid.pid for kid in kids}
        by_threads, by_scan = _children(os.getpid(), proc), _children_by_scan(os.getpid(), proc)
        assert by_threads is not None and by_scan is not None
        assert mine <= by_threads and mine <= by_scan
        count = count_siblings(kids[0].pid, os.getpid())  # type: ignore[arg-type]
        assert count is not None and count >= 2  # both, and any other worker of this program the test made
        assert count_siblings(os.getpid(), 1 if os.getppid() != 1 else 2) is None  # not a child of that one
    finally:
        done.set()
        for kid in kids:
            kid.join()


FRAMES_UNDER_COLLECTION = textwrap.dedent("""
    import concurrent.futures.process, gc, threading  # a pool module imported: the planner walks the main stack
    from payoff._outer_pools import outer_pool

    class Holder:
        pass

    def request() -> None:
        gc.set_threshold(1)  # a collection at every allocation: what the run met by chance, every time
        for _ in range(200):
            h = Holder(); h.local = threading.local(); h.me = h; del h  # garbage only a collection frees
            assert outer_pool() is None  # what the planner asks before a call starts processes
        gc.set_threshold(700, 10, 10)

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    print("done", flush=True)
""")


def test_a_map_on_a_request_thread_never_hangs_in_a_collection() -> None:
    """A map on a thread other than the main one reads the main thread's stack (``sys._current_frames``) to
    see whether this process is a pool's worker. Before Python 3.12 a garbage collection inside that read
    that frees a ``threading.local`` takes the same lock again: the whole process hung for good (a full test
    run froze in a test of many threads mapping)."""
    try:
        done = subprocess.run([sys.executable, "-c", FRAMES_UNDER_COLLECTION], cwd=ROOT, env=CHILD_ENV, timeout=60,
                              capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the map on a request thread hung in a garbage collection")
    assert done.returncode == 0 and done.stdout.split() == ["done"], done.stderr[-2000:]


def test_a_stack_read_from_another_thread_that_breaks_mid_walk_reads_as_no_pool(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread's frames are read as it runs, and before Python 3.12 a frame it popped meanwhile may hand
    back any object as its ``f_back``: a map planned on a thread in the suite raised ``AttributeError: 'bool'
    object has no attribute 'f_code'`` from ``outer_pool`` (which reads the main thread's stack). What such a
    walk meets that is no frame ends it (what it read so far named no pool's loop)."""
    import concurrent.futures.process  # noqa: F401  # a pool module imported: its worker loop is looked for

    from payoff import _outer_pools

    assert _outer_pools._loop_codes(), "the premise: a pool's worker loop to look for"
    monkeypatch.setattr(_outer_pools, "_main_thread_frame", lambda: True)
    assert _outer_pools.outer_pool() is None
