"""Items that compute outside their own thread are CPU work, not waiting work (helper 59's finding).

An item calling a scikit-learn ``n_jobs=-1`` model or ``joblib.Parallel`` waits
for loky processes that do its computing; its own thread's clock shows almost
no CPU, and auto ran such items on 24-32 threads (``auto_waiting``) at 2.5x the
time processes took, its record claiming 21-25x for a real 1.2-1.5x. Real child
processes do the computing here; no timing is asserted, only how the probe
classified what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from payoff import ParallelConfig, ParallelExecutor, _delegated_cpu, planning
from payoff import _probe as probe_module
from payoff._probe import Probe, _own_ns, probe_cost, waiting_line
from payoff.planning import Call
from payoff.reasons import Reason
from tests import tasks
from tests.conftest import a_busy_python_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads CPU time in /proc")


def _decision(fn: object, n: int = 8) -> Reason:
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:
        ex.map(fn, range(n))  # type: ignore[arg-type]
        record = ex.last_record
    assert record is not None
    print(record.summary(), record.chunks[:1], planning.PLANNER.knowledge.get(fn))  # type: ignore[arg-type]
    if record.decision_reason is Reason.AUTO_OUTGREW_ESTIMATE and record.selected_strategy == "threads":
        return Reason.AUTO_WAITING  # a loaded host: kept serial first, its rest then sent where the probe said
    return record.decision_reason


def test_items_whose_children_compute_are_cpu_work_not_waiting_work() -> None:
    """The probe counts the children's CPU (80 ms an item, which no load lowers) against the item's own time.

    Which side of the line that lands on is a ratio load moves: children that wait for a CPU make the item
    wait, and a reaped child leaves no count of its waits (bursty load read 0.36-0.49 where a quiet machine
    reads 0.7-1.0: flaky-test hunt). So the count is asserted here, and the decision from it below
    (``test_a_share_read_between_the_line_and_its_band_is_delegated_cpu``) with fixed numbers.
    """
    probe = Probe()
    config = ParallelConfig(max_workers=2)
    call = Call(tasks.spin_in_two_children, list(range(8)), config, "auto", None, None, None, frozenset(), 0)
    probe_cost(call, probe, 2)
    assert probe.outcome is not None and probe.outcome.n_done >= 1
    wall = _own_ns(probe.outcome) / 1e9
    counted = probe.cpu_ratio * wall  # the items' own CPU and their children's, as the share holds it
    assert counted >= 0.9 * min(wall, 0.08 * probe.outcome.n_done), (probe.cpu_ratio, wall, probe.outcome.n_done)
    assert probe.delegates is (probe.cpu_ratio >= waiting_line(2)), probe


@pytest.mark.parametrize(("elsewhere_ms", "wall_ms", "delegates"), [(99, 120, True), (60, 110, True), (20, 110, False)])
def test_a_share_read_between_the_line_and_its_band_is_delegated_cpu(elsewhere_ms: int, wall_ms: int,
                                                                   delegates: bool) -> None:
    """A share of 0.55 (60 ms of children's CPU in 110 ms) is over the planner's line (0.5 on 2 workers), so the
    call goes to processes; it was marked as delegating only over the line's band (0.6), and the processes run's
    record, which sees only its own threads' CPU, then taught 0.01: the next five calls ran on threads as
    waiting work (flaky-test hunt, 2 of 15 beside one busy loop)."""
    probe = Probe()
    probe_module._count_delegated(probe, 700_000, elsewhere_ms * 1_000_000, wall_ms / 1e3, 2)
    assert probe.delegates is delegates, (probe.cpu_ratio, probe.delegates)


def test_a_burst_of_cpu_elsewhere_that_comes_once_does_not_make_waiting_items_cpu_work() -> None:
    """One reading of CPU outside the items' thread can hold CPU that is no item's: a program thread's last
    work before it ends (nothing subtracts the growth of a thread gone by the second reading), a scheduler's
    tick. Here the first item sets such a burst off (~8 ms of CPU hashing in a thread that then ends, with the
    GIL let go) and waits for it; the next items only sleep. The probe read the burst as the items'
    delegated CPU and planned 2 ms sleeps as CPU work (failed before: a CI run read 2 calls of 5 so)."""
    import hashlib

    data = bytes(1 << 20)
    started = time.thread_time()
    hashlib.sha256(data).digest()
    data = bytes(max(1 << 20, int((1 << 20) * 0.008 / max(1e-4, time.thread_time() - started))))  # ~8 ms of CPU
    go = threading.Event()
    stray = threading.Thread(target=lambda: (go.wait(10), hashlib.sha256(data).digest()), daemon=True)
    stray.start()

    def item(x: int) -> int:
        if not go.is_set():
            go.set()
            stray.join()
        time.sleep(0.002)
        return x

    probe = Probe()
    call = Call(item, list(range(8)), ParallelConfig(max_workers=2), "auto", None, None, None, frozenset(), 0)
    probe_cost(call, probe, 2)
    assert probe.outcome is not None and probe.outcome.error is None
    assert not stray.is_alive()
    assert not probe.delegates and probe.cpu_ratio < waiting_line(2), (probe.cpu_ratio, probe.outcome.n_done)


def test_items_waiting_on_a_child_that_sleeps_are_still_waiting_work() -> None:
    assert _decision(tasks.wait_for_a_child) is Reason.AUTO_WAITING


def test_a_busy_python_thread_of_the_program_does_not_make_waiting_items_cpu_work() -> None:
    """The program's own Python threads are not the items' (I/O beside a busy thread is still I/O)."""
    with a_busy_python_thread():
        assert _decision(tasks.sleep_then_square, 8) is Reason.AUTO_WAITING


def _blas_threads() -> int:
    import numpy  # noqa: F401 (loads numpy's BLAS, which threadpoolctl then sees)
    import threadpoolctl

    return max((lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"),
               default=0)


_AFTER_A_PRODUCT = """
import json, warnings
import numpy as np
from payoff import ParallelConfig, ParallelExecutor, planning
from tests import tasks
import sys
a = np.random.default_rng(0).random((400, 400))
readings = []
for _ in range(int(sys.argv[1])):
    planning.PLANNER.reset()
    a @ a  # its threads spin on
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.map(tasks.sleep_then_square, range(8))
    facts = planning.PLANNER.knowledge.get(tasks.sleep_then_square)
    readings.append((ex.last_record.decision_reason.value, facts.cpu_ratio, facts.delegates, facts.cores))
print(json.dumps(readings))
"""


def _after_products(calls: int) -> list[list[object]]:
    """``calls`` readings of ``_AFTER_A_PRODUCT``, in a fresh interpreter: nothing an earlier test left running
    computes beside the probe there."""
    if _blas_threads() < 2:
        message = f"numpy's BLAS runs {_blas_threads()} thread(s) here: no thread is left spinning to test"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([sys.executable, "-c", _AFTER_A_PRODUCT, str(calls)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    readings: list[list[object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return readings


def test_blas_threads_still_spinning_after_the_programs_own_matrix_product_are_not_the_items_work() -> None:
    """OpenBLAS's threads spin for about 0.1 s after each product, waiting for the next: a product of the
    program's own just before a call (a model fitted, then its requests fetched) kept a core busy beside a probe
    of 2 ms sleeps, which read 0.99 of delegated CPU and went to processes, 5 calls of 5 (found as the planning
    tests that follow a product ran it in the suite). One call in five may still meet other load (the suite
    under two workers once read 2 calls of 3 beside such load, with nothing spinning)."""
    readings = _after_products(5)
    assert sum(r[0] == "auto_waiting" for r in readings) >= 4, readings


def test_a_spinning_blas_thread_is_not_the_items_work_when_both_cores_are_busy() -> None:
    """The spinning thread's clock moves on at the scheduler's tick, 4 ms at a time, or when it is taken off its
    core, which load makes often: read just after the process's clock, a tick in between counted 4 ms of its
    spinning as the items' CPU, and 2 ms sleeps read 1.0 of delegated CPU, 10 calls of 40 beside two busy
    programs (2 calls of 5 in a clean-clone CI's suite). Read on the side that can only leave CPU out."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        readings = _after_products(8)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert [r for r in readings if r[0] != "auto_waiting"] == [], readings


def test_only_python_threads_are_counted_as_gil_holders() -> None:
    """A probe beside other calls asks whether the process's other threads held the GIL: an OpenBLAS thread
    spinning on after the program's own product was counted, and every 8th call of 2 ms sleeps (its share read
    again) went to processes at 13x the time of threads (trial 52). Native threads never hold the GIL."""
    before, now = {2: (0, 0), 3: (0, 0)}, {2: (1_000_000, 0), 3: (5_000_000, 0)}
    assert probe_module._gil_holding_ns(before, now, 1, python={1, 2}) == 1_000_000
    assert probe_module._gil_holding_ns(before, now, 1) == 6_000_000


@pytest.mark.parametrize(("share", "counted_ms"), [(0.02, 1), (0.9, 9), (1.0, 9)])
def test_threads_spinning_before_the_probe_come_off_only_for_items_that_wait(share: float,
                                                                             counted_ms: int) -> None:
    """Items that compute run their BLAS work on the very threads a product just before left spinning: taken
    off there too, 600x600 products read one CPU busy and went to two threads of two BLAS threads each, on 2
    CPUs (review; processes before)."""
    line = waiting_line(2) * 1.2
    assert probe_module.items_elsewhere_ns(9_000_000, 8_000_000, share, line) == counted_ms * 1_000_000


def test_a_delegating_functions_cpu_share_is_not_lowered_by_the_records_of_its_runs() -> None:
    """A run's record reads only the threads that ran the items: it cannot see the children's CPU. Once planned
    as CPU work, the function stays so (the first plan rests on a ratio load moves: see above). CPU work may
    run on processes or, its own thread holding the GIL little while the children compute, on as many threads
    as cores (``auto_releases_gil``, the faster of the two kept): never as waiting work on more threads."""
    cpu_work = (Reason.AUTO_CPU_BOUND, Reason.AUTO_RELEASES_GIL)
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:
        decisions = []
        for _ in range(6):
            ex.map(tasks.spin_in_two_children, range(8))
            assert ex.last_record is not None
            decisions.append(ex.last_record.decision_reason)
    first = next((i for i, reason in enumerate(decisions) if reason in cpu_work), None)
    if first is not None:
        assert all(reason in cpu_work for reason in decisions[first:]), decisions


def _zombie_that_computed(seconds: float) -> subprocess.Popen[bytes]:
    """A child that used ``seconds`` of CPU and ended, not yet waited for (a pool's worker that exited)."""
    child = subprocess.Popen([sys.executable, "-c", f"import time\nend = time.process_time() + {seconds}\n"
                              "while time.process_time() < end: pass"])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never ended"
        time.sleep(0.01)
    return child


def test_a_child_that_ended_before_the_probe_and_is_reaped_during_it_is_not_the_items_work() -> None:
    """An earlier executor's worker processes that ended before a probe, reaped while it ran (a pool's shutdown
    finishing in the background): their whole CPU time arrived in the process's count of reaped children
    and was taken for the items', and a probe of 2 ms sleeps read a CPU share of 1.0. In the suite, a test's
    auto calls of a sleeping function went to processes four calls in a row (twice in a full run)."""
    child = _zombie_that_computed(0.3)
    before = _delegated_cpu.snapshot()
    assert before is not None
    child.wait()  # reaped now, as a pool's thread would
    assert _delegated_cpu.since(before).ns < 50_000_000


def test_a_child_the_items_started_and_waited_for_still_counts() -> None:
    before = _delegated_cpu.snapshot()
    assert before is not None
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    assert _delegated_cpu.since(before).ns >= 200_000_000


def test_a_garbage_collection_of_the_programs_heap_in_the_probe_is_not_the_items_cpu() -> None:
    """A collection of the caller's heap that an item (or payoff around it) set off ran on the probe's thread:
    in the suite, a probe of one 2 ms sleep read 1.7-2.9 ms of CPU (a share of 0.8-1.0, CPU-bound) whenever
    the test process's import order put a collection there, and auto sent sleeping items to processes. A
    worker's heap is not the caller's; the probe leaves collections out of the items' CPU. In a fresh
    interpreter: a test process's own threads and children (the other tests') are read as the items' too."""
    script = (
        "from payoff import ParallelConfig, ParallelExecutor\n"
        "from tests import tasks\n"
        "heap = [[i] for i in range(400_000)]  # a program's objects: each collection walks them (several ms)\n"
        "with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:\n"
        "    ex.map(tasks.sleep_then_collect, range(40))\n"
        "    print(ex.last_record.selected_strategy, ex.last_record.decision_reason.value)\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])})
    assert done.returncode == 0, done.stderr[-2000:]
    strategy, decision = done.stdout.split()[-2:]
    # under load the probe's first items may plan the call serial; the rest is then planned again, on threads
    assert strategy == "threads" and decision in (Reason.AUTO_WAITING.value, Reason.AUTO_OUTGREW_ESTIMATE.value), \
        done.stdout


@pytest.mark.parametrize(("name", "own", "counts"), [("payoff-7", True, False), ("Thread-sklearn-predict", False, True),
                                                     ("payoff-calc", False, True)])
def test_a_payoff_pool_thread_started_during_the_probe_is_not_the_items_work(name: str, own: bool,
                                                                            counts: bool) -> None:
    """Another request's first call started payoff's threads while a sleeping function's probe ran: their CPU was
    taken for the items' (as a scikit-learn predict's pool's is), the function for CPU work done elsewhere, and
    99.6% of its calls went to processes at 10x the latency of threads (service trial). A thread the items
    start still counts, whatever its name (a user's pool named "payoff...": review)."""
    from payoff._own_pools import mark_own

    stop, spun = threading.Event(), threading.Event()

    def spin() -> None:
        while not stop.is_set():
            if time.thread_time_ns() >= 300_000_000:
                spun.set()

    before = _delegated_cpu.snapshot()
    assert before is not None
    thread = threading.Thread(target=spin, name=name)
    if own:
        mark_own(thread)
    thread.start()
    # read while it runs (an ended thread leaves the process's count only), once it has used 0.3 s of CPU: a
    # fixed 0.4 s sleep gave it only 0.16 s on a loaded machine (CI, beside other programs)
    assert spun.wait(120), "the spinning thread never got 0.3 s of CPU"
    seen = _delegated_cpu.since(before).ns
    stop.set()
    thread.join()
    # 0.3 s or more of the spin's CPU against the rest of the process's noise (threads of earlier tests' pools
    # ending: up to ~40 ms seen in the suite)
    assert seen >= 250_000_000 if counts else seen < 150_000_000, seen
