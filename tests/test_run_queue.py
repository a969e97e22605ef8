"""``run_queue_ns``: how long this thread waited, runnable, for a CPU (Linux schedstat).

Two busy processes pinned to one CPU must take turns, so the one measuring
waited; nothing here asserts how long.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest

from payoff.worker import run_chunk, run_queue_ns

HAS_SCHEDSTAT = os.path.exists("/proc/thread-self/schedstat")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _pinned_hog(cpu: int, seconds: float) -> None:
    os.sched_setaffinity(0, {cpu})
    _spin(seconds)


@pytest.fixture
def one_cpu() -> int:
    if not HAS_SCHEDSTAT:
        if os.environ.get("CI") == "true":
            pytest.fail("/proc/thread-self/schedstat is missing: payoff cannot see waits for a CPU here")
        pytest.skip("no /proc/thread-self/schedstat on this system")
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, before)


def test_a_thread_sharing_its_cpu_with_a_busy_process_has_waited(one_cpu: int) -> None:
    hog = multiprocessing.get_context("fork").Process(target=_pinned_hog, args=(one_cpu, 1.0))
    hog.start()
    try:
        time.sleep(0.05)
        before = run_queue_ns()
        _spin(0.3)
        waited = run_queue_ns() - before
    finally:
        hog.join(10)
    assert waited > 0


def test_a_chunk_reports_its_waits_and_a_forked_child_reads_its_own_thread(one_cpu: int) -> None:
    run_queue_ns()  # the parent's thread's file is now open; a forked child must not read it
    hog = multiprocessing.get_context("fork").Process(target=_pinned_hog, args=(one_cpu, 1.0))
    hog.start()
    try:
        time.sleep(0.05)
        outcome = run_chunk(_spin, [0.1, 0.1, 0.1], 0, 0)
    finally:
        hog.join(10)
    assert outcome.error is None and outcome.runq_ns > 0
    assert outcome.runq_ns <= outcome.end_ns - outcome.start_ns

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own main thread, which has waited for nothing yet as far as its file says
        os.close(reader)
        os.write(writer, str(run_queue_ns()).encode())
        os._exit(0)
    os.close(writer)
    child = int(os.read(reader, 64) or b"-1")
    os.close(reader)
    os.waitpid(pid, 0)
    parent = run_queue_ns()
    assert 0 <= child < parent, (child, parent)


def _spin_own(seconds: float) -> None:
    """Spin for ``seconds`` of this thread's CPU time, however long others hold the CPU meanwhile."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_an_imap_consumers_waits_for_a_cpu_are_not_counted_as_its_time(one_cpu: int) -> None:
    """A loop's consumer has the machine to itself; an ``imap``'s shares it with the pool (here with a busy
    process on its one CPU): its waits for a CPU are not its own time, which the record adds to the loop's
    estimate (a consumer sharing 2 cores with 2 busy workers was counted 316-484 ms for the 190-270 ms it took
    in the loop). It still counts what it ran."""
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    hog = multiprocessing.get_context("fork").Process(target=_pinned_hog, args=(one_cpu, 5.0))
    hog.start()
    own = waited = 0
    try:
        time.sleep(0.05)
        config = ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0)
        with ParallelExecutor(config) as ex:
            for _ in ex.imap(tasks.square, range(300)):
                t0, q0 = time.monotonic_ns(), run_queue_ns()
                _spin_own(0.002)
                own, waited = own + time.monotonic_ns() - t0, waited + run_queue_ns() - q0
            record = ex.last_record
    finally:
        hog.terminate()
        hog.join(10)
    assert record is not None and record.selected_strategy == "threads"
    assert waited > own / 5, (own, waited)  # the busy process made the consumer wait
    counted = record.consumer_seconds * 1e9
    assert counted < own - waited / 2, (counted, own, waited)  # its waits are not its time
    assert counted > (own - waited) * 0.8, (counted, own, waited)  # what it ran is


def test_a_chunks_waits_for_a_cpu_are_those_of_the_time_its_items_are_timed_in(
        one_cpu: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's items are timed from its first block to its last; what its thread does before (reading its
    items' deadline, and on threads, taking the GIL back from a thread that asked for it while this one waited
    for a CPU) is no part of them. Its waits for a CPU there were taken off the items' time: an imap of 40 items
    that each sleep 2 ms, on threads beside a loaded CI machine, was priced at 61 ms of work. Here 20 ms of CPU
    before the first item, on a CPU shared with a busy process, stand for that wait; the items sleep 90 ms."""
    from payoff import worker

    real_source = worker._source

    def late_source(*args: Any, **kwargs: Any) -> Any:
        _spin_own(0.02)
        return real_source(*args, **kwargs)

    monkeypatch.setattr(worker, "_source", late_source)
    hog = multiprocessing.get_context("fork").Process(target=_pinned_hog, args=(one_cpu, 5.0))
    hog.start()
    try:
        time.sleep(0.05)
        before = run_queue_ns()
        outcome = run_chunk(time.sleep, [0.03, 0.03, 0.03], 0, 0)
        waited = run_queue_ns() - before
    finally:
        hog.terminate()
        hog.join(10)
    # the thread waited for the CPU in the chunk (the spin beside the busy process), the items' sleeps woke to
    # hardly any wait (a clean-clone CI run read none): the chunk counts the one, not the other
    assert outcome.error is None and waited > outcome.runq_ns, (waited, outcome)
    timed = sum(outcome.durations_ns)
    assert timed - outcome.runq_ns >= 0.09e9, (timed, outcome.runq_ns)  # the sleeps, at least
