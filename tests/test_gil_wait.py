"""Threads of waiting work priced without the GIL's queue: the sampler that measures it, and the pricing.

32 threads of a 1 ms sleep timed each item at 1.8 ms where a loop takes 1.1 ms, and the record claimed 24x
for a real 13x; items of ten 0.2 ms sleeps, their CPU share read at 0.12 by the probe, were priced by it at
half their cost (2.0x recorded for 3.8x).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason, _gil_wait, planning
from payoff._gil_wait import GilWaits
from payoff._knowledge import Facts
from payoff.record import ChunkStats, RecordBuilder, own_work_seconds
from tests import tasks

pytestmark = pytest.mark.skipif(not _gil_wait._COUNTED, reason="no per-thread voluntary waits on this platform")


def _hold_the_gil(seconds: float) -> None:
    """Pure Python: the GIL changes hands only when the switch interval asks another thread's turn."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def test_the_sampler_reads_the_queue_a_thread_holding_the_gil_makes() -> None:
    start = _gil_wait.watch()
    assert start is not None
    try:
        time.sleep(0.06)  # this thread waits: the GIL is free at the sampler's wake-ups
        middle = time.perf_counter_ns()
        quiet = _gil_wait.since(start, middle)
        _hold_the_gil(0.2)
        held = _gil_wait.since(middle, time.perf_counter_ns())
    finally:
        _gil_wait.unwatch()
    assert quiet is not None and held is not None, (quiet, held)
    assert held.switches_per_wake > quiet.switches_per_wake, (quiet, held)  # it queued for the GIL, blocking
    assert held.wait_ns > quiet.wait_ns, (quiet, held)


def test_the_samplers_thread_ends_when_no_call_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gil_wait, "IDLE_SECONDS", 0.05)
    assert _gil_wait.watch() is not None
    thread = _gil_wait._SAMPLER._threads[0]
    assert thread.is_alive()
    _gil_wait.unwatch()
    thread.join(timeout=30)
    assert not thread.is_alive()
    count = len(_gil_wait._SAMPLER._samples)  # nothing samples now
    time.sleep(0.02)
    assert len(_gil_wait._SAMPLER._samples) == count
    assert _gil_wait.watch() is not None  # the next call starts another
    try:
        again = _gil_wait._SAMPLER._threads[0]
        assert again is not thread and again.is_alive()
    finally:
        _gil_wait.unwatch()


def _threads_builder(cpu_ratio: float | None, waits: GilWaits | None) -> RecordBuilder:
    """A threads call begun as long ago as its chunks ran (30 ms): begun now, whether its pool kept a core busy
    (``_gil_filled``, which prices unmeasured threads as CPU-bound) turned on the clock between making and
    building it, and a CI run built one record past 1.25 ms and its twin within it (0.03 s against 0.001 s)."""
    rec = RecordBuilder(1, "w", "threads", None, 20, time.monotonic_ns() - 30_000_000, time.time())
    rec.selected, rec.workers, rec.cpu_ratio, rec.gil_waits = "threads", 16, cpu_ratio, waits
    return rec


def _sleeping_chunk(index: int, blocked: int | None, busy_ns: int = 30_000_000, cpu_ns: int = 1_000_000) -> ChunkStats:
    return ChunkStats(index, 10 * index, 10, f"w{index}", 0, 1_000, 1_000 + busy_ns, cpu_ns, (busy_ns,), (10,),
                      0, 0, "pool", blocked=blocked)


def test_threads_of_waiting_items_are_priced_without_the_gil_queue_they_met(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    waits = GilWaits(samples=40, wait_ns=200_000, switches_per_wake=2.0)
    rec = _threads_builder(0.05, waits)
    # 40 waits given up each: over the sampler's 2 a wake-up, 20 returns from a wait, 0.2 ms of queue each
    rec.chunks = [_sleeping_chunk(0, 40), _sleeping_chunk(1, 40)]
    record = rec.build()
    assert record.gil_priced
    assert record.serial_estimate_seconds == pytest.approx(2 * (0.030 - 20 * 0.0002))
    # where a thread's count is unknown: one return an item
    rec.chunks = [_sleeping_chunk(0, None)]
    assert rec.build().serial_estimate_seconds == pytest.approx(0.030 - 10 * 0.0002)
    # never below the chunk's CPU time
    rec.chunks = [_sleeping_chunk(0, 4_000)]
    assert rec.build().serial_estimate_seconds == pytest.approx(0.001)


@pytest.mark.parametrize(("cpu_ratio", "waits"), [
    (0.35, GilWaits(40, 200_000, 2.0)),  # a third of CPU: priced by its share, as the GIL holds it back anywhere
    (None, GilWaits(40, 200_000, 2.0)),  # a share never measured alone: CPU-bound items would read as waiting
    (0.05, None),  # nothing sampled (a call too short for it)
])
def test_other_threads_runs_keep_their_pricing(cpu_ratio: float | None, waits: GilWaits | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    rec, unsampled = _threads_builder(cpu_ratio, waits), _threads_builder(cpu_ratio, None)
    rec.chunks = unsampled.chunks = [_sleeping_chunk(0, 40)]
    record = rec.build()
    assert not record.gil_priced
    assert record.serial_estimate_seconds == unsampled.build().serial_estimate_seconds


def test_a_map_of_waiting_items_on_many_threads_samples_the_gil_and_records_each_chunks_waits() -> None:
    with ParallelExecutor(planner=planning.Planner()) as ex:
        ex.map(functools.partial(tasks.sleep_then_square, seconds=0.005), range(600))  # a share far under 0.2
        record = ex.last_record
    assert record is not None and record.selected_strategy == "threads", record
    assert record.workers > 2 and record.decision_reason is Reason.AUTO_WAITING, record
    pool = [c for c in record.chunks if c.where == "pool"]
    assert pool and all(c.blocked is not None and c.blocked >= c.n_items for c in pool), pool  # a sleep an item
    assert record.gil_priced, record  # 3 s of sleeps on at most 32 threads: tens of the sampler's wake-ups
    assert record.serial_estimate_seconds <= sum(own_work_seconds(c) for c in record.chunks) + 1e-9
    assert not _gil_wait._SAMPLER._watchers, "the call stopped watching"


@pytest.mark.usefixtures("sampler_cannot_start")
def test_a_sampler_that_cannot_start_leaves_the_call_as_it_was() -> None:
    """Sampling is optional: a process out of threads still runs the call, priced as before, and lets its pool
    go; the sampler's count of watchers stays balanced."""
    with ParallelExecutor(planner=planning.Planner()) as ex:
        results = ex.map(functools.partial(tasks.sleep_then_square, seconds=0.002), range(200))
        record = ex.last_record
        assert results == [x * x for x in range(200)]
        assert record is not None and record.selected_strategy == "threads" and not record.gil_priced, record
        assert not ex._pools.busy(), "the call let its pool go"
    assert not _gil_wait._SAMPLER._watchers


def test_a_call_whose_pool_release_raises_still_stops_watching(monkeypatch: pytest.MonkeyPatch) -> None:
    from payoff import _maprun

    real_release = _maprun.MapRun._release

    def broken(self: _maprun.MapRun, lease: Any) -> None:
        real_release(self, lease)  # the pool is let go (the executor's shutdown waits for it), then it raises
        raise RuntimeError("a release that failed")

    monkeypatch.setattr(_maprun.MapRun, "_release", broken)
    with ParallelExecutor(planner=planning.Planner()) as ex, pytest.raises(RuntimeError, match="release"):
        ex.map(functools.partial(tasks.sleep_then_square, seconds=0.002), range(200))
    assert not _gil_wait._SAMPLER._watchers


@pytest.mark.parametrize(("config", "workers", "teaches"), [
    (ParallelConfig(), 16, True),
    (ParallelConfig(), 2, True),  # on just the cores: a count learned low grows back
    (ParallelConfig(max_workers=16), 16, False),  # the user's count: its speedup cannot pass it
])
def test_which_threads_runs_teach_the_thread_count(config: ParallelConfig, workers: int, teaches: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    rec = _threads_builder(0.05, GilWaits(samples=40, wait_ns=100_000, switches_per_wake=2.0))
    rec.workers = workers
    rec.chunks = [_sleeping_chunk(0, 20), _sleeping_chunk(1, 20)]
    built = rec.build()
    record = dataclasses.replace(built, wall_seconds=built.serial_estimate_seconds / 1.8,
                                 decision_reason=Reason.AUTO_WAITING, requested_strategy="auto")
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, Facts(built.serial_estimate_seconds / 20, 0.05, 40, "", None))
    planner.learn(record, tasks.square, config)
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None
    assert (facts.gil_threads is not None) is teaches, facts
    if teaches:
        assert facts.gil_threads == pytest.approx(1.5 * 1.8)


def test_samplers_for_a_call_grow_as_its_expected_length_shrinks() -> None:
    assert _gil_wait.samplers_for(None) == 1  # a length not known: one, as before
    assert _gil_wait.samplers_for(10.0) == 1
    assert _gil_wait.samplers_for(0.001) == _gil_wait.MAX_SAMPLERS
    lengths = [0.002, 0.01, 0.02, 0.04, 0.08, 1.0]
    counts = [_gil_wait.samplers_for(s) for s in lengths]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1], counts


def test_the_most_samplers_a_watching_call_asked_for_run_and_the_rest_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gil_wait, "IDLE_SECONDS", 0.05)
    sampler = _gil_wait._SAMPLER

    def live() -> list[threading.Thread]:
        with sampler._lock:
            return [t for t in sampler._threads if t.is_alive()]

    def joined_down_to(n: int) -> list[threading.Thread]:
        deadline = time.monotonic() + 30
        while len(live()) > n and time.monotonic() < deadline:
            time.sleep(0.01)
        return live()

    assert _gil_wait.watch(3) is not None
    try:
        assert len(live()) >= 3
        assert _gil_wait.watch(1) is not None
        try:
            time.sleep(0.1)  # past the idle time: none ends while a call asks for three
            assert len(live()) >= 3
        finally:
            _gil_wait.unwatch(3)
        assert len(joined_down_to(1)) == 1, "the call that asked for three left: one call asks for one"
        newest = sampler._samples[-1][0] if sampler._samples else 0  # the kept samples may be full: by time
        time.sleep(0.02)
        assert sampler._samples and sampler._samples[-1][0] > newest, "the one left samples"
    finally:
        _gil_wait.unwatch(1)
    assert joined_down_to(0) == [], "no call watches: no sampler thread is left"


def test_a_short_map_of_waiting_items_on_many_threads_is_sampled_by_several_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """100 items of a 1 ms sleep on ~20 threads end in 20-25 ms: one sampler woke 5-8 times in them, too few
    to price the GIL's queue by (``MIN_SAMPLES``), and the record priced the items at their own time (1.8x a
    loop's). The call asks for as many samplers as its expected length needs."""
    asked: list[int] = []
    real_watch = _gil_wait.watch

    def counted(samplers: int = 1) -> int | None:
        asked.append(samplers)
        return real_watch(samplers)

    monkeypatch.setattr(_gil_wait, "watch", counted)
    fn = functools.partial(tasks.sleep_then_square, seconds=0.001)
    with ParallelExecutor(planner=planning.Planner()) as ex:
        for _ in range(3):
            assert ex.map(fn, range(100)) == [x * x for x in range(100)]
            record = ex.last_record
            assert record is not None
            if record.selected_strategy == "threads":
                break
    assert record.selected_strategy == "threads" and record.workers > 4, record
    assert asked and asked[-1] > 1, asked
    assert record.gil_priced, record


def test_a_wake_up_counts_only_the_waits_of_the_window_it_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler reads its run-queue wait from a file, and the read lets the GIL go; where another thread
    took it meanwhile, the read waits for it back. Counted in the wake-up's switches but not in its lateness,
    those waits made the sampler's switches per wake-up 4.2-5.2 where 32 threads of ten 0.2 ms sleeps an item
    gave up their CPU 3.5 times a return, and the record counted a quarter too few returns (+61% to +89%).
    Here each read gives up the CPU once, on a machine with nothing else waiting for the GIL."""
    real = _gil_wait.run_queue_ns

    def read_that_waits() -> int:
        time.sleep(0.0001)
        return real()

    monkeypatch.setattr(_gil_wait, "run_queue_ns", read_that_waits)
    start = _gil_wait.watch()
    assert start is not None
    try:
        time.sleep(0.08)
        waits = _gil_wait.since(start, time.perf_counter_ns())
    finally:
        _gil_wait.unwatch()
    assert waits is not None
    assert waits.switches_per_wake < 1.5, waits  # the sleep alone: the reads' waits are outside the window
