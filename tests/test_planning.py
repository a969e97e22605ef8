"""Planner internals whose mistakes would not show in results, only in wrong decisions."""

from __future__ import annotations

import functools
import gc
import itertools
import json
import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
import warnings
from array import array
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason, _costs, _knowledge, _payload, _probe, planning
from payoff._side_by_side import CHECK_TRIES
from payoff.record import OVERTURNED, OVERTURNED_ADVICE, ChunkStats, MapRecord, RecordBuilder
from payoff.report.text import details
from payoff.telemetry.warnings import ParallelFallbackWarning
from payoff.worker import CancelToken, ChunkOutcome, run_chunk
from tests import tasks
from tests.conftest import a_busy_python_thread


@pytest.mark.parametrize("obj", [np.zeros(0), np.arange(10.0), np.ones((256, 512)), np.ones((300, 300))[::2, ::3],
                                 b"", b"x" * 100_000, bytearray(5000), {"a": [1, 2, 3]}],
                         ids=lambda o: type(o).__name__)
def test_payload_sizes_are_estimated_without_pickling_buffers_within_a_few_hundred_bytes(obj: object) -> None:
    assert abs(_payload.pickled_size(obj) - len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))) <= 200


def test_object_arrays_are_really_pickled() -> None:
    arr = np.array([{"x": "y" * 1000}] * 10, dtype=object)
    assert _payload.pickled_size(arr) == len(pickle.dumps(arr, protocol=pickle.HIGHEST_PROTOCOL))


def test_calls_that_met_a_busy_machine_do_not_keep_small_calls_serial() -> None:
    model = _costs.CostModel()
    prior = model.get("processes").per_call
    model.learn("processes", per_call=0.05)  # one call met a busy machine
    model.learn("processes", per_call=0.0004)
    assert model.get("processes").per_call <= prior  # an average would be ~15 ms and stick
    for _ in range(3):
        model.learn("processes", per_call=0.05)
    for _ in range(6):
        model.learn("processes", per_call=0.0004)
    assert model.get("processes").per_call == 0.0004  # the window forgets
    model.learn("processes", start=0.1)
    assert prior < model.get("processes").start


def _pool_chunk(worker: str, submit_ms: float, start_ms: float, end_ms: float, sent: int = 300) -> ChunkStats:
    ms = 1_000_000
    busy = int((end_ms - start_ms) * ms)
    return ChunkStats(0, 0, 10, worker, int(submit_ms * ms), int(start_ms * ms), int(end_ms * ms), busy, (busy,),
                      (10,), sent, 100, "pool")


def _handed_over(gap_ms: float, *, heavy: bool = False, fresh: bool = False) -> MapRecord:
    """A processes call of six chunks on two workers, all submitted at once: each worker's next chunk starts
    ``gap_ms`` after its last ended (the first chunk a worker runs counts no gap, being the call's reach)."""
    chunks = [_pool_chunk(worker, 0.1, 0.5 + k * (2 + gap_ms), 2.5 + k * (2 + gap_ms),
                          sent=10_000_000 if heavy and k else 300)
              for k in range(3) for worker in ("w1", "w2")]
    built = RecordBuilder(1, "default", "processes", None, 60, time.monotonic_ns(), time.time()).build()
    return replace(built, selected_strategy="processes", workers=2, decision_reason=Reason.EXPLICIT_STRATEGY,
                   chunks=tuple(chunks), pool_started=fresh)


def test_what_a_chunk_costs_the_pool_is_learned_from_the_gaps_between_a_workers_chunks() -> None:
    """Per-chunk overhead was a prior nobody measured (0.15 ms for processes), though on a 2-core machine whose
    workers keep both cores busy a worker stood 0.5-1.3 ms idle between chunks while the next one waited in
    the parent (traced on 100-item calls: payoff's 8 chunks took 8-10 ms where the loop took 7.5). Measured
    gaps replace it as per-call latencies do (the median of a window, the prior one vote)."""
    model = _costs.CostModel()
    prior = model.get("processes").per_chunk
    handover = planning._handover_latency(_handed_over(0.8))
    assert handover == pytest.approx(0.0008)
    for _ in range(2):
        model.learn("processes", per_chunk=handover)
    assert model.get("processes").per_chunk == pytest.approx(0.0008) and prior < 0.0008
    assert planning._work_floor_seconds(model, "processes") > planning._work_floor_seconds(_costs.CostModel(),
                                                                                           "processes")
    # moving a heavy payload is costed per byte; a new pool's workers are still warming up
    assert planning._handover_latency(_handed_over(0.8, heavy=True)) is None
    assert planning._handover_latency(_handed_over(0.8, fresh=True)) is None


def test_a_real_pool_teaches_its_per_chunk_cost() -> None:
    """The same, from real calls one after the other: what their records show is what the planner holds."""
    planner = planning.Planner()
    prior = planner.costs.get("processes").per_chunk
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0),
                          planner=planner) as ex:
        for _ in range(6):
            ex.map(tasks.spin, range(64), chunksize=4)
        records = list(ex.records)
    gaps = [g for r in records if (g := planning._handover_latency(r)) is not None]
    assert gaps, "workers of a real pool stand idle a little between chunks"
    assert records[0].pool_started and planning._handover_latency(records[0]) is None  # its workers were cold
    assert planner.costs.get("processes").per_chunk == statistics.median_low([prior, *gaps])


def sorted_sum(a: np.ndarray) -> float:
    """About 0.1 ms on 4,096 random floats: dear enough for threads to gain (a sum alone, 2 us, is not)."""
    return float(np.sort(a).sum())


def test_a_function_carrying_most_of_the_data_is_told_to_load_it_once_per_worker() -> None:
    """A 40 MB ``partial`` over int items: the fallback told "send indices instead of data" to items that were
    indices already (trial 43, sklearn observation 3). It now names the function's bytes and what to do."""
    from payoff import ParallelExecutor, Reason
    from payoff.record import advice_of

    fn = functools.partial(tasks.spin_beside, np.zeros(5_000_000))
    with ParallelExecutor() as ex:
        ex.map(fn, range(40))
        first = ex.last_record
        for _ in range(4):  # threads measured no gain, call after call (one loss is smoothed with the first
            planning.KNOWLEDGE.observe_threads(fn, 0.9)  # call's gain: 1.22x, then 1.06x, kept threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ex.map(fn, range(40))
        record = ex.last_record
    assert record is not None and first is not None
    said = [str(w.message) for w in caught]
    assert record.fallback_reason is Reason.PAYLOAD_TOO_LARGE, (first.summary(), record.summary(), said)
    assert any("the function carries 40.0 MB" in s for s in said), said
    assert "module-level global the function reads" in advice_of(record)
    assert "send indices" not in advice_of(record)


def test_a_cores_reading_that_keeps_a_function_off_threads_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading of the CPUs an item keeps busy, taken on a busy machine, kept the function off threads for the
    life of the process: no later probe read it again (the review). Every ``VERDICT_RETRY``-th auto call of a
    function kept off threads so now probes it again, and the new reading replaces the old; one taken beside
    another thread's calls (within ``OTHERS_WINDOW_SECONDS``) is not read, and counts as the try: each later
    call re-probed in a loop, +11% a call for good (second review). This thread's own calls before it ran
    before it, not beside it (trial 52)."""
    from payoff._knowledge import VERDICT_RETRY

    fn = functools.partial(tasks.spin_beside, np.zeros(5_000_000))  # 40 MB: too large for processes
    stop = threading.Event()

    def other_requests() -> None:
        with ParallelExecutor(ParallelConfig(strategy="serial")) as other:
            while not stop.is_set():
                other.map(tasks.square, range(10))
                time.sleep(0.005)

    with ParallelExecutor() as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        ex.map(fn, range(40))
        planning.KNOWLEDGE.observe_cores(fn, 2.0, spread=False)  # as a reading beside busy programs could be
        beside = threading.Thread(target=other_requests)
        beside.start()
        try:
            for _ in range(VERDICT_RETRY + 1):
                ex.map(fn, range(40))
        finally:
            stop.set()
            beside.join()
        facts = planning.KNOWLEDGE.get(fn)
        assert facts is not None and facts.cores == 2.0, "read among another thread's calls: not taken"
        probed = [r.probe_items for r in list(ex.records)[-VERDICT_RETRY:]]
        assert sum(1 for n in probed if n) == 1, probed  # one try, not one every call after it
        monkeypatch.setattr(planning, "OTHERS_WINDOW_SECONDS", 0.0)  # the other thread's calls are no longer near
        for _ in range(VERDICT_RETRY):
            ex.map(fn, range(40))
        facts = planning.KNOWLEDGE.get(fn)
    assert facts is not None and facts.cores < planning.ITEM_SPREADS_CORES, facts  # pure Python: one CPU


def test_a_call_right_after_this_threads_last_one_is_not_among_others() -> None:
    """Each call right after another of the same thread read as among other calls: its probe read no CPU an item
    delegates to its own pool, and a forest's ``n_jobs=-1`` predict, read again after its serial check, went to
    15-20 threads as waiting work, 1.3x the loop where processes ran it at 5x (trial 52)."""
    planner = planning.Planner()
    planner._event()
    assert not planner._others_lately(planning.OTHERS_WINDOW_SECONDS)
    other = threading.Thread(target=planner._event)
    other.start()
    other.join()
    assert planner._others_lately(planning.OTHERS_WINDOW_SECONDS)


def test_a_calls_first_sending_of_a_large_function_is_no_verdict_on_its_speed() -> None:
    """The first call of a 20 MB closure on a warm pool sends it to each worker once (40 MB, 150-240 ms); at
    0.88-0.94x the loop, that one-off cost became the function's verdict, and its next calls ran on threads,
    then serially (no_measured_gain), where warm calls ran 1.75x (start-method trial, 4 of 15 runs)."""
    fn = functools.partial(tasks.spin_beside, np.zeros(2_500_000))
    with ParallelExecutor() as ex:
        for _ in range(2):
            ex.map(functools.partial(tasks.spin, n=20_000), range(1000))  # a warm process pool under auto
        assert ex.last_record is not None and ex.last_record.selected_strategy == "processes"
        ex.map(fn, range(1000))
        first = ex.last_record
        assert first is not None and first.selected_strategy == "processes", first.summary()
        assert first.fn_shipped
        facts = planning.KNOWLEDGE.get(fn)
        assert facts is not None and "processes" not in facts.verdicts, facts.verdicts
        ex.map(fn, range(1000))
        second = ex.last_record
    assert second is not None and not second.fn_shipped


def test_items_too_large_for_processes_go_to_threads_until_a_run_shows_no_gain() -> None:
    from payoff import ParallelConfig, ParallelExecutor, Reason

    rng = np.random.default_rng(0)
    items = [rng.random(4096) for _ in range(40)]
    expected = [sorted_sum(a) for a in items]
    config = ParallelConfig(task_size_hint_bytes=1024, tiny_workload_threshold=0.0)
    with ParallelExecutor(config) as ex:
        assert ex.map(sorted_sum, items) == expected
        first = ex.last_record
        assert first is not None and first.selected_strategy == "threads"
        assert first.decision_reason is Reason.AUTO_SHARED_MEMORY and first.fallback_reason is None
        facts = planning.KNOWLEDGE.get(sorted_sum)
        assert facts is not None and facts.threads_speedup == first.speedup  # what the run measured

        losses = 0  # as a GIL-bound function would measure, call by call
        while facts.threads_speedup >= _knowledge.THREADS_KEEP_SPEEDUP:
            planning.KNOWLEDGE.observe_threads(sorted_sum, 0.9)
            losses += 1
            assert losses < 20
        assert losses > 1 or first.speedup < 1.1, "one loss does not outweigh a gain measured before"
        assert ex.map(sorted_sum, items) == expected
        held = ex.last_record
        assert held is not None and held.selected_strategy == "serial"
        assert held.fallback_reason is Reason.PAYLOAD_TOO_LARGE

        planning.KNOWLEDGE.observe_threads(sorted_sum, 1.6)
        assert ex.map(sorted_sum, items) == expected
        assert ex.last_record is not None and ex.last_record.selected_strategy == "threads", ex.last_record.summary()


def test_a_call_that_started_its_pool_leaves_no_verdict() -> None:
    """A new pool's workers are cold (imports, first unpickling): the next call on it is the measurement."""
    from payoff import ParallelConfig, ParallelExecutor

    config = ParallelConfig(max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        ex.map(tasks.spin, range(40))
        first = ex.last_record
        assert first is not None and first.selected_strategy == "processes" and first.pool_started
        facts = planning.KNOWLEDGE.get(tasks.spin)
        assert facts is not None and "processes" not in facts.verdicts
        ex.map(tasks.spin, range(40))
        second = ex.last_record
        assert second is not None and second.selected_strategy == "processes" and not second.pool_started
        if second.speedup < 1.0 and planning._under_outside_load(second):  # a loss beside other programs: none
            assert "processes" not in facts.verdicts, facts.verdicts
        else:
            assert facts.verdicts["processes"] == ((second.speedup, 40),)


def test_a_pool_whose_initializer_failed_is_tried_again_not_replaced_by_the_caller() -> None:
    """The wait that earned a start ends with the attempt, failed or not. With a ``worker_initializer`` the next
    call may not run its items in the caller instead (``fn`` may need what the initializer sets up), so it tries
    a fresh pool again rather than staying serial with ``pool_start_cost``."""
    from payoff import ParallelConfig, ParallelExecutor, Reason

    planning.KNOWLEDGE.teach(tasks.square, _knowledge.Facts(1e-4, 1.0, 40, "", None, forgone={"processes": 10.0},
                                                                    result_error=""))
    config = ParallelConfig(max_workers=2, worker_initializer=tasks.failing_initializer,
                            worker_init_args=(os.getpid(),))
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.square, range(60)) == [x * x for x in range(60)]
        record = ex.last_record
        assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
        facts = planning.KNOWLEDGE.get(tasks.square)
        assert facts is not None and facts.forgone == {}
        ex.map(tasks.square, range(60))
        again = ex.last_record
        assert again is not None and again.fallback_reason is Reason.INIT_FAILURE and again.pool_start_failed


def test_a_probe_of_trivial_items_runs_long_enough_to_see_past_its_own_timing() -> None:
    """Timing a block costs a few hundred ns: 64 items of ~40 ns would read as several times dearer."""
    items = list(range(100_000))
    sizes = []
    for _ in range(3):  # a stall of the machine during the probe may end it early once; not three times
        outcome, _per_item = _probe._timed_prefix(tasks.negate, items, 64, 4096)
        assert outcome.results == [-x for x in items[: outcome.n_done]]
        sizes.append(outcome.n_done)
    assert max(sizes) > 64, sizes


def test_dear_items_are_probed_no_further_than_before() -> None:
    outcome, per_item = _probe._timed_prefix(tasks.sleep_then_square, list(range(200)), 64, 4096)
    assert outcome.n_done <= 64
    # each item sleeps 2 ms: its own time is that, less a wait for a CPU after the sleep (read apart, not the
    # item's: 1.98 ms once in a loaded run), never the 80 us or less of a cheap item probed further
    assert per_item >= 0.0015


def test_a_chunks_own_set_up_is_not_counted_as_its_items_work() -> None:
    """A thread's first chunk spends ~150 us of CPU opening its clocks; one probed item of 65 ns read as 164 us."""
    outcome = ChunkOutcome(0, 0, [1], 0, 200_000, 164_000, array("q", [5_000]), array("q", [1]), "t")
    assert _probe._own_ns(outcome) == 5_000
    waited = replace(outcome, cpu_ns=4_000, runq_ns=190_000)  # a wait for a CPU outside the timed block
    assert _probe._own_ns(waited) == 4_000  # the CPU time stays the floor


@pytest.mark.parametrize(("blocked", "ratio"), [(0, 1.0), (2, 0.2), (None, 0.2)])
def test_a_probe_whose_thread_never_gave_up_its_cpu_did_not_wait(blocked: int | None, ratio: float) -> None:
    """Two items of a CPU-bound function read 0.4 ms of CPU in 2 ms of their own wall time: on a virtual machine
    whose host lent the CPU elsewhere (steal time) neither the thread's CPU clock nor its run-queue wait
    moves, and the probe read waiting work (``auto_waiting``: a second pool, of threads, beside the
    processes twelve request handlers shared). A thread that never blocked (no voluntary context switch)
    did not wait; without that count the clocks stand."""
    outcome = ChunkOutcome(0, 0, [1, 2], 0, 2_000_000, 400_000, array("q", [1_000_000, 1_000_000]),
                           array("q", [1, 1]), "t", blocked=blocked)
    assert _probe.cpu_ratio_of(outcome) == pytest.approx(ratio)


def test_a_thread_that_sleeps_counts_its_waits_and_one_that_computes_does_not() -> None:
    """What the probe's reading above rests on, read on this machine (Linux: ``RUSAGE_THREAD``)."""
    slept = run_chunk(time.sleep, [0.001] * 3, 0, 0)
    assert slept.blocked is not None and slept.blocked >= 3
    computed = run_chunk(tasks.spin, range(20), 0, 0)
    assert computed.blocked is not None and computed.blocked <= 1  # at most one: a page of the heap read in


def test_a_pause_between_probe_steps_does_not_end_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A garbage collection between steps (5 ms in a test process) or a wait for a CPU that other programs
    held spent the probe's wall-clock budget after one item, whose cold cost then stood for all of them:
    a million trivial items were sent to processes, at 2-8x the loop. The budget counts the items' time."""
    real = _probe.run_chunk

    def then_pause(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        time.sleep(0.003)  # longer than the whole budget, and outside every item
        return out

    monkeypatch.setattr(_probe, "run_chunk", then_pause)
    outcome, _per_item = _probe._timed_prefix(tasks.negate, list(range(100_000)), 64, 4096)
    assert outcome.n_done > 64, outcome.n_done
    assert outcome.results == [-x for x in range(outcome.n_done)]


def _stalls_once(at: int, seconds: float) -> Callable[[int], int]:
    """``negate``, with one stall of CPU work inside item ``at``: what a garbage collection (or a hypervisor
    taking the CPU) does to one timing block; no run-queue wait and no voluntary wait shows it."""
    def fn(x: int) -> int:
        if x == at:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return -x
    return fn


@pytest.mark.parametrize("at", [0, 20, 40])
def test_a_stall_inside_one_probe_step_neither_ends_the_probe_nor_prices_the_items(at: int) -> None:
    """A 0.6 ms stall inside one step (a collection of a large heap, in a full test run) put the probe's trivial
    items over the cheap mark (0.2 ms for all of them): it stopped at 64 items, and a stall in its last step
    stood for every item. A stall sits in one step: the typical cost is what the other steps agree on."""
    outcome, per_item = _probe._timed_prefix(_stalls_once(at, 0.0006), list(range(100_000)), 64, 4096)
    assert outcome.n_done > 64, outcome.n_done
    assert outcome.results == [-x for x in range(outcome.n_done)]
    assert per_item < 20e-6, f"{per_item * 1e6:.1f} us an item for items of well under 1 us"


def test_a_garbage_collection_inside_the_first_probed_item_does_not_price_the_items() -> None:
    """A collection of the test process's heap (6.8 ms of CPU, no wait of any kind) inside the probe's first item
    spent the whole budget on that one item, which then stood for all: trivial items priced at 6.8 ms. The
    collector's time is the program's heap's, not the items': the probe takes it off."""
    heap = [[i] for i in range(400_000)]  # objects for the collector to walk

    def collects_on_zero(x: int) -> int:
        if x == 0:
            gc.collect()
        return -x

    outcome, per_item = _probe._timed_prefix(collects_on_zero, list(range(100_000)), 64, 4096)
    assert len(heap) == 400_000
    assert outcome.n_done > 64, outcome.n_done
    assert outcome.results == [-x for x in range(outcome.n_done)]
    assert per_item < 20e-6, f"{per_item * 1e6:.1f} us an item for items of well under 1 us"


def test_a_probe_past_its_calls_deadline_ends() -> None:
    """With the budget on the items' own time, a step that started no item (the deadline had come) spent
    none of it, and the probe stepped again for ever."""
    done: list[int] = []
    expired = planning.CancelToken(time.monotonic() - 1.0)
    worker = threading.Thread(target=lambda: done.append(
        _probe._timed_prefix(tasks.negate, list(range(100_000)), 64, 4096, expired)[0].n_done), daemon=True)
    worker.start()
    worker.join(30)
    assert done == [1], "the probe did not end"  # its first item starts before any deadline is read


def test_trivial_items_stay_off_processes_while_other_programs_load_every_core() -> None:
    """The two tests above under real load: with a CPU-bound program per core beside it, the probe ended after
    one or two items and a million trivial items went to processes (4 runs in 4 after the probe test)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        test_trivial_items_are_not_sent_to_worker_processes()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_trivial_items_are_not_sent_to_worker_processes() -> None:
    """A million ints cost a process pool more to pickle there and back than a loop takes to run them.

    Before: the probe read them as ~0.3 us each (its own timing) and the planner
    chose processes for the first two calls, at 2.5-4x the loop.
    """
    planner = planning.Planner()
    items = list(range(1_000_000))
    with ParallelExecutor(planner=planner, observers=[]) as ex:
        for _ in range(3):
            assert ex.map(tasks.negate, items) == [-x for x in items]
        chosen = [r.selected_strategy for r in ex.records]
    assert "processes" not in chosen, chosen
    assert chosen[1:] == ["serial", "serial"], chosen
    facts = planner.knowledge.get(tasks.negate)
    assert facts is not None and facts.pickling.parent > 0  # measured on the probed items, not assumed


def _cheap_then_sleepy(x: int) -> int:
    if x >= 2048:
        time.sleep(0.001)
    return x


def test_the_probe_stops_at_its_budget_when_items_turn_dear() -> None:
    """The longer probe of cheap items must not run thousands of dear ones in the caller."""
    got = planning.Planner().plan(planning.Call(_cheap_then_sleepy, list(range(40_000)), ParallelConfig(max_workers=2),
                                                "auto", None, None, None, frozenset(), 0))
    assert got.probe.n < 2048 + 64, got.probe.n


def _describe(x: object) -> int:
    return len(x) if isinstance(x, dict) else int(x)  # type: ignore[call-overload]


def test_a_known_function_given_much_smaller_items_times_their_pickling_again() -> None:
    """Facts from a call over big dicts must not price a later call over ints as if it moved dicts."""
    planner = planning.Planner()
    config = ParallelConfig(max_workers=2)
    dicts = [{str(k): k for k in range(300)} for _ in range(400)]
    first = planner.plan(planning.Call(_describe, dicts, replace(config, tiny_workload_threshold=0), "auto", None,
                                       None, None, frozenset(), 0))  # parallel: its payload is measured
    facts = planner.knowledge.get(_describe)
    assert facts is not None
    facts.measured_items = _knowledge.SOUND_ITEMS  # as after a whole call: the cost is not probed again
    later = planner.plan(planning.Call(_describe, list(range(40_000)), config, "auto", None, None, None,
                                       frozenset(), 1))
    assert later.probe.known
    assert later.probe.pickling.item_bytes < first.probe.pickling.item_bytes // 100
    assert later.probe.pickling.items_out < first.probe.pickling.items_out / 10
    assert later.probe.pickling.results_out == first.probe.pickling.results_out  # no result of this call yet


def test_each_builtin_and_ufunc_has_its_own_facts() -> None:
    """Builtins and numpy ufuncs are objects of one type each: keyed by type alone, abs shared len's cost."""
    import numpy as np

    keys = {_knowledge.fn_key(f) for f in (abs, len, str.upper, np.sqrt, np.exp)}
    assert len(keys) == 5
    knowledge = _knowledge.Knowledge()
    knowledge.teach(abs, _knowledge.Facts(1e-8, 1.0, 40, "", None, result_error=""))
    assert knowledge.get(len) is None, "a different builtin is probed, not given abs's cost"


def test_functions_made_by_exec_are_told_apart_by_their_code() -> None:
    """Every exec'd ``def f`` is ``f`` at line 1 of "<string>": a costly one got a cheap one's facts (and
    could get its crash). The same source exec'd again is still the same function to the planner."""
    def made(source: str) -> Any:
        space: dict[str, Any] = {}
        exec(source, space)
        return space["f"]

    cheap, costly = made("def f(x):\n    return x"), made("def f(x):\n    return sum(range(x * 1000))")
    assert _knowledge.fn_key(cheap) != _knowledge.fn_key(costly)
    assert _knowledge.fn_key(cheap) == _knowledge.fn_key(made("def f(x):\n    return x"))
    knowledge = _knowledge.Knowledge()
    knowledge.crashed(cheap, "item 3 crashed a worker process")
    assert knowledge.crash_of(costly) is None


# -- measurements taken among other calls of this process (one executor shared by many threads) -------------------


def _finished(started_ns: int, strategy: str, *, speedup: float = 1.0, cpu_share: float = 1.0,
              per_item: float = 1e-4, n_items: int = 500) -> MapRecord:
    """A record of an auto call of tasks.spin planned at ``started_ns`` that ends now, as the executor hands it to
    ``learn`` (its wall time counts from a millisecond before the plan, spent reading its input; on a pool, at
    least what its items' cost at ``speedup`` takes)."""
    wall = (time.monotonic_ns() - started_ns) / 1e9 + 0.001
    serial = per_item * n_items
    if strategy != "serial":
        wall = max(wall, serial / speedup)
    built = RecordBuilder(1, "default", "auto", None, n_items, started_ns, time.time()).build()
    return replace(built, selected_strategy=strategy, workers=1 if strategy == "serial" else 2,
                   decision_reason=Reason.AUTO_CPU_BOUND, wall_seconds=wall, busy_seconds=serial,
                   cpu_seconds=serial * cpu_share, serial_estimate_seconds=serial)


def _spin_call(planner: planning.Planner, stop: CancelToken | None = None) -> int:
    """Plan a call of tasks.spin (taught: no item runs); the instant it began."""
    started = time.monotonic_ns()
    planner.plan(planning.Call(tasks.spin, list(range(500)), ParallelConfig(max_workers=2), "auto", None, None,
                               None, frozenset({"processes"}), 5, stop=stop))
    return started


def test_a_call_that_began_before_this_one_and_still_runs_is_beside_it() -> None:
    """Twelve request handlers on one executor: a serial call ended while another call, planned before it,
    still ran. No other call started or ended within its run, so the planner took it for a call alone, and
    its items' waits for the GIL the other held were learned as waiting work (``auto_waiting``: a second
    pool, of threads, beside the processes; 1 in ~30 runs of the asyncio handlers test). A call planned and
    not yet learned from runs now; once it has ended, a call alone teaches again."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error=""))
    earlier = CancelToken()
    began = _spin_call(planner, earlier)
    time.sleep(0.01)  # before this call's run, by more than its wall time
    mine = CancelToken()
    planner.learn(_finished(_spin_call(planner, mine), "serial", cpu_share=0.1), tasks.spin, stop=mine)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio == 1.0, "GIL waits beside a running call are not waiting"
    planner.learn(_finished(began, "processes"), tasks.spin, stop=earlier)
    time.sleep(0.01)
    alone = CancelToken()
    planner.learn(_finished(_spin_call(planner, alone), "serial", cpu_share=0.1), tasks.spin, stop=alone)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio < 1.0


def test_a_call_left_open_long_ago_no_longer_counts_as_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """An imap its consumer left (a ``break``, the iterator kept in a notebook) is never learned from until it
    is collected: past the horizon it no longer makes every call that ends look crowded, which would stop the
    planner learning anything (verdicts, latencies, shares) for the rest of the session."""
    monkeypatch.setattr(planning, "OPEN_CALL_HORIZON_SECONDS", 0.05)
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error=""))
    left = CancelToken()
    _spin_call(planner, left)  # planned, never ended
    time.sleep(0.1)
    mine = CancelToken()
    planner.learn(_finished(_spin_call(planner, mine), "serial", cpu_share=0.1), tasks.spin, stop=mine)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio < 1.0, "a call alone teaches its share"
    del left  # held, so still open, until here


@pytest.mark.parametrize("crowded", [False, True], ids=["alone", "among-others"])
def test_what_a_call_measured_among_other_calls_is_not_taken_for_the_function(crowded: bool) -> None:
    """16 threads sharing one executor: each pool call's wall time is shared with the others (0.1x "against
    serial"), and a serial call's items wait for the GIL the other threads hold (a CPU-bound function reads as
    waiting, and dearer). Learned, the first made the function serial (no_measured_gain) and the second sent it
    to threads (auto_waiting). Calls that ran one after the other still teach all of it."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error=""))
    # each call names itself, as the executor's do: told apart by their wall times alone, a stall of a
    # millisecond between a record's making and its learning (CI, once) hid the first call's end from the second
    first, second = CancelToken(), CancelToken()
    pool_call = _spin_call(planner, first)
    serial_call = _spin_call(planner, second) if crowded else None  # the second call starts while the first runs
    planner.learn(_finished(pool_call, "processes", speedup=0.1), tasks.spin, stop=first)
    if serial_call is None:
        time.sleep(0.005)  # the second call starts after the first ended: nothing of the one in the other's run
        serial_call = _spin_call(planner, second)
    # 2.5x dearer: within what the GIL waits of 16 threads explain (a new cost would also void the verdict)
    planner.learn(_finished(serial_call, "serial", cpu_share=0.1, per_item=2.5e-4), tasks.spin, stop=second)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None
    if crowded:
        assert facts.verdicts == {}, "a speedup measured among other calls is no verdict"
        assert facts.cpu_ratio > _probe.waiting_line(2), "GIL waits are not waiting"
        assert facts.seconds_per_item <= 1e-4, "nor do they make an item dearer"
    else:
        assert facts.verdicts["processes"][0].speedup == pytest.approx(0.1)
        assert facts.cpu_ratio < 1.0 and facts.seconds_per_item > 1e-4


def test_a_workers_wait_outside_its_items_is_not_read_as_waiting_items() -> None:
    """A fresh worker's first chunk spent 11 ms blocked around its items (0.25 ms of them, all CPU): counted in
    the items' own time, spin's share read 0.16, and the next call ran threads as for waiting work. The share
    is the items' CPU per second of their own timed work."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error=""))
    ms = 1_000_000
    chunks = [replace(_pool_chunk(w, 0.1, 0.5 + 0.5 * k, 0.8 + 0.5 * k), index=2 * k + j, first_item=10 * (2 * k + j),
                      cpu_ns=int(0.3 * ms), durations_ns=(int(0.25 * ms),))
              for k in range(3) for j, w in enumerate(("w1", "w2"))]
    chunks[0] = replace(chunks[0], end_ns=chunks[0].start_ns + int(11.4 * ms), cpu_ns=int(0.36 * ms))
    began = _spin_call(planner)
    record = replace(_finished(began, "processes", n_items=60, per_item=2.5e-5), chunks=tuple(chunks),
                     busy_seconds=sum(c.busy_seconds for c in chunks), cpu_seconds=sum(c.cpu_seconds for c in chunks))
    planner.learn(record, tasks.spin)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio > 0.9, facts


def test_a_pool_call_whose_head_ran_here_among_other_calls_teaches_no_share() -> None:
    """Twelve handlers on one executor: a call kept serial outgrew its estimate and sent its rest to the process
    pool (``auto_outgrew_estimate``), so its record is a processes run whose first chunk ran in the caller,
    beside the other calls, waiting for the GIL they held. Learned as a process pool's reading, that chunk
    made spin's share 0.32 and the next call went to threads as waiting work: a second pool (CI, 1 in ~20 runs
    of the asyncio handlers test under a loaded machine). Its head is in-process work measured among others."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error=""))
    other = CancelToken()
    _spin_call(planner, other)  # another handler's call, still running
    mine = CancelToken()
    began = _spin_call(planner, mine)
    ms = 1_000_000
    head = ChunkStats(0, 0, 20, "caller", 0, 0, 30 * ms, 3 * ms, (30 * ms,), (20,), 0, 0, "caller")
    rest = tuple(replace(_pool_chunk(w, 31, 31.5, 32.5), index=k + 1, first_item=20 + 10 * k)
                 for k, w in enumerate(("w1", "w2")))
    record = replace(_finished(began, "processes", cpu_share=0.3, n_items=40),
                     decision_reason=Reason.AUTO_OUTGREW_ESTIMATE, chunks=(head, *rest))
    planner.learn(record, tasks.spin, stop=mine)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio == 1.0, "GIL waits of its head beside other calls are not waiting"
    assert facts.seconds_per_item <= 1e-4
    del other

@pytest.mark.parametrize(("taught", "per_item"), [(1e-6, 1e-3), (1e-3, 1e-6)], ids=["dearer", "cheaper"])
def test_a_cost_far_beyond_what_crowding_explains_is_learned_among_other_calls(taught: float,
                                                                              per_item: float) -> None:
    """A service's function learned alone at 1.1 us an item whose items became ~1 ms while other request threads
    kept mapping: every call of it ran among others, so none taught its cost, and it stayed serial
    (tiny_workload, '40 items x 1.1 us = 0.04 ms of work' for a 50 ms call) for the whole run. Sharing the GIL
    inflates an item's wall time a few times, never its CPU time, and never makes it cheaper."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(taught, 1.0, 40, "", None, result_error=""))
    token = CancelToken()
    call = _spin_call(planner, token)
    _spin_call(planner)  # another call starts while it runs
    record = _finished(call, "serial", per_item=per_item, n_items=40)
    time.sleep(0.01)  # its observers, or a busy machine, hold the thread between its record and what is learned
    planner.learn(record, tasks.spin, stop=token)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.seconds_per_item == pytest.approx(per_item, rel=0.05)


def _learn_alone(planner: planning.Planner, fn: Callable[[int], Any], strategy: str, per_item: float,
                 **fields: Any) -> None:
    """``learn`` a call of ``fn`` that ran with no other call of the planner's process around it."""
    time.sleep(0.005)
    record = _finished(time.monotonic_ns(), strategy, per_item=per_item, n_items=40)
    planner.learn(replace(record, **fields), fn)


def test_a_verdict_measured_at_another_item_cost_no_longer_applies() -> None:
    """300 calls of 50 items x 50 us measured a real loss on processes (0.7x, confirmed five times); then the
    items became ~1 ms. The cost was re-learned at once, but the next 59 calls stayed serial (no_measured_gain,
    citing the 0.7x of the cheap items) where a fresh function ran 1.2x faster on processes."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(5e-5, 1.0, 40, "", None, result_error="",
                                                       verdicts={"processes": (_knowledge.Verdict(0.7, 50),)},
                                                       retries={"processes@50": 5}))
    _learn_alone(planner, tasks.spin, "serial", 1e-3, fallback_reason=Reason.NO_MEASURED_GAIN)
    plan = planner.plan(planning.Call(tasks.spin, list(range(40)), ParallelConfig(max_workers=2), "auto", None,
                                      None, None, frozenset({"processes"}), 5))
    assert plan.fallback is not Reason.NO_MEASURED_GAIN, plan.detail
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and not facts.verdicts and not facts.retries and not facts.held


def _work(x: int, n: int) -> int:
    return tasks.spin(x, n)


def test_a_workload_whose_cost_keeps_flipping_is_probed_on_each_call() -> None:
    """Requests alternating partial(work, n=20) and partial(work, n=20000) share one key (the code location):
    each call was planned at the previous one's cost, so the dear calls ran serially (57 of 60) and the cheap
    ones went to a pool (48x slower than a loop). Once a key's cost has shifted twice, a call runs its first
    items in the caller again (cheap when the items are cheap; one dear item tells the rest)."""
    import functools

    planner = planning.Planner()
    cheap, dear = functools.partial(_work, n=20), functools.partial(_work, n=20_000)
    planner.knowledge.teach(cheap, _knowledge.Facts(1e-6, 1.0, 40, "", None, result_error=""))

    def planned(fn: Callable[[int], Any]) -> planning.Plan:
        return planner.plan(planning.Call(fn, list(range(40)), ParallelConfig(max_workers=2), "auto", None, None,
                                          None, frozenset({"processes"}), 5))

    _learn_alone(planner, cheap, "serial", 1e-6)
    assert planned(dear).probe.n == 0, "one steady cost is trusted"
    _learn_alone(planner, dear, "serial", 1e-3)
    _learn_alone(planner, cheap, "serial", 1e-6)
    for fn in (dear, cheap):
        plan = planned(fn)
        assert plan.probe.n >= 1, (plan.strategy, plan.fallback, plan.detail)
    assert planned(cheap).fallback is Reason.TINY_WORKLOAD


def test_a_losing_waiting_verdict_whose_items_ran_on_a_cpu_is_not_repeated_among_other_calls() -> None:
    """A probe that met GIL or CPU waits read CPU work as waiting: auto_waiting put it on threads, which ran at
    0.2x with the items on a CPU all their busy time. Measured among other calls, nothing was learned and
    every later call went to threads again; now the next call is not auto_waiting."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(5e-3, 0.1, 40, "", None, result_error=""))

    def call() -> tuple[int, planning.Plan]:
        started = time.monotonic_ns()
        return started, planner.plan(planning.Call(tasks.spin, list(range(400)), ParallelConfig(max_workers=2),
                                                   "auto", None, None, None, frozenset({"threads"}), 5))

    started, first = call()
    call()  # another call of the process starts meanwhile: the first's measurement is crowded
    assert first.decision is Reason.AUTO_WAITING
    record = replace(_finished(started, "threads", speedup=0.2, cpu_share=1.0), decision_reason=Reason.AUTO_WAITING)
    planner.learn(record, tasks.spin)
    _, later = call()
    assert later.decision is not Reason.AUTO_WAITING, (later.strategy, later.probe.cpu_ratio)


def test_a_shared_executor_keeps_cpu_bound_work_on_processes_under_many_threads() -> None:
    """One auto executor shared by 8 threads, each mapping a CPU-bound function: no call may be sent to threads
    as waiting work or kept serial by a verdict formed while the calls shared the pool (r19)."""
    from concurrent.futures import ThreadPoolExecutor

    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex:
        ex.map(tasks.spin, range(1000))  # measured alone first: CPU-bound, processes
        barrier = threading.Barrier(8)

        def job(k: int) -> bool:
            barrier.wait()
            return all(ex.map(tasks.spin, range(k, k + 300 + 20 * i)) == [tasks.spin(x) for x in
                                                                         range(k, k + 300 + 20 * i)]
                       for i in range(3))

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(job, range(8)))
        records = list(ex.records)[1:]
    decisions = {(r.selected_strategy, (r.fallback_reason or r.decision_reason).value) for r in records}
    assert ("threads", "auto_waiting") not in decisions, decisions
    # no_measured_gain may still come from a call whose overlap the planner cannot see (one that started before
    # another and ended after it, nothing else starting or ending between: the documented approximation)
    facts = planning.KNOWLEDGE.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio > _probe.waiting_line(2)


def _spin_dear(x: int) -> int:
    return tasks.spin(x, 20_000)


def _probe_beside_hogs(planner: planning.Planner, fn: Callable[[int], Any], hog: Callable[[], None]) -> planning.Plan:
    """Plan ``fn`` under auto while 7 threads run ``hog`` in a loop, the GIL changing hands every 10 us."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            hog()

    interval = sys.getswitchinterval()
    hogs = [threading.Thread(target=loop, daemon=True) for _ in range(7)]
    sys.setswitchinterval(1e-5)  # so that even a 2 ms probe meets the others
    try:
        for thread in hogs:
            thread.start()
        time.sleep(0.05)
        return planner.plan(planning.Call(fn, list(range(400)), ParallelConfig(max_workers=2), "auto", None, None,
                                          None, frozenset(), 0))
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        for thread in hogs:
            thread.join()


def test_a_probe_that_waited_for_the_gil_other_payoff_calls_held_is_not_waiting_work() -> None:
    """The probe's thread got a share of the GIL only, because other payoff calls of this process kept a core
    busy: a low CPU share per second of wall time is not I/O there, and threads would only add to the contention."""
    shared = ParallelExecutor(ParallelConfig(strategy="serial"))  # plans with the process's planner, as below

    def other_call() -> None:
        shared.map(tasks.spin, range(20))

    got = _probe_beside_hogs(planning.PLANNER, _spin_dear, other_call)
    shared.shutdown()
    assert got.probe.n >= 1
    assert got.decision is not Reason.AUTO_WAITING, (got.probe.cpu_ratio, got.detail)
    assert got.probe.cpu_ratio > _probe.waiting_line(2)


_PROBE_STARTED = threading.Event()
_JOINED = threading.Event()


def _spin_dear_then_say_so(x: int) -> int:
    """A probe item that tells the others to join, and computes until one of their items ran: their calls came
    while it ran, however long a loaded machine kept their threads from starting (clean-clone CI once read
    the probe alone, its share 0.49 with no call around it)."""
    _PROBE_STARTED.set()
    deadline = time.monotonic() + 10
    while not _JOINED.is_set() and time.monotonic() < deadline:
        tasks.spin(x, 100)
    return _spin_dear(x)


def _spin_and_say_joined(x: int) -> int:
    _JOINED.set()
    return tasks.spin(x)


def test_a_probe_that_other_payoff_calls_joined_while_it_ran_is_not_waiting_work() -> None:
    """Twelve request handlers mapping one CPU-bound function at once: the first to plan began its probe with
    no other call around, the others' calls came while it ran and held the GIL, and its low CPU share per
    second of wall time read as waiting work (``auto_waiting``: a second pool, of threads, beside the
    processes; 1 in ~15 runs of the asyncio handlers test, and in CI). Calls that join during the probe
    count as calls around it."""
    shared = ParallelExecutor(ParallelConfig(strategy="serial"))
    stop, interval = threading.Event(), sys.getswitchinterval()

    def other_calls() -> None:
        _PROBE_STARTED.wait(30)
        while not stop.is_set():
            shared.map(_spin_and_say_joined, range(20))

    _PROBE_STARTED.clear()
    _JOINED.clear()
    joiners = [threading.Thread(target=other_calls, daemon=True) for _ in range(7)]
    sys.setswitchinterval(1e-5)  # so that even a short probe meets the others
    try:
        for thread in joiners:
            thread.start()
        got = planning.PLANNER.plan(planning.Call(_spin_dear_then_say_so, list(range(400)),
                                                  ParallelConfig(max_workers=2), "auto", None, None, None,
                                                  frozenset(), 0))
    finally:
        stop.set()
        _PROBE_STARTED.set()
        sys.setswitchinterval(interval)
        for thread in joiners:
            thread.join()
        shared.shutdown()
    assert _JOINED.is_set(), "the other calls never came: nothing was tested"
    assert got.probe.n >= 1
    assert got.decision is not Reason.AUTO_WAITING, (got.probe.cpu_ratio, got.detail)
    assert got.probe.cpu_ratio > _probe.waiting_line(2)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_probe_that_waited_for_the_gil_is_not_waiting_work_when_the_process_gets_less_than_a_core() -> None:
    """The test above with this process and four busy programs on one CPU: the process gets about a fifth of
    a core, so it never kept 0.8 of one busy, and CPU-bound items probed beside other calls read as waiting
    work (threads, 5-32 of them, at 0.1x the loop: 58 of 8,767 calls of a loaded soak). The other threads'
    waits for the CPU, while they held the GIL, are what kept the probe's thread off it."""
    cpu = min(os.sched_getaffinity(0))
    pin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    burners = [subprocess.Popen([sys.executable, "-c", pin]) for _ in range(4)]
    before = os.sched_getaffinity(0)
    shared = ParallelExecutor(ParallelConfig(strategy="serial"))

    def other_call() -> None:
        shared.map(tasks.spin, range(20))

    try:
        os.sched_setaffinity(0, {cpu})  # this thread, and the threads it starts
        plans = []
        for _ in range(6):  # a probe that met no GIL wait reads right either way: one in three did not, before
            planning.PLANNER.knowledge.forget()
            plans.append(_probe_beside_hogs(planning.PLANNER, _spin_dear, other_call))
    finally:
        os.sched_setaffinity(0, before)
        for burner in burners:
            burner.kill()
            burner.wait()
        shared.shutdown()
    assert all(got.probe.n >= 1 for got in plans)
    assert [(got.decision, got.probe.cpu_ratio) for got in plans if got.decision is Reason.AUTO_WAITING] == []


@pytest.mark.parametrize(("before", "now", "held_us"), [
    ({2: (100, 1_000)}, {1: (0, 9_000_000), 2: (40_100, 2_001_000)}, 40 + 320),  # woke from a wait, under load
    ({2: (0, 0)}, {2: (1_600_000, 6_400_000)}, 8_000),  # a GIL holder given a fifth of a core: all of it
    ({2: (0, 0)}, {2: (1_000_000, 20_000_000)}, 1_000 + 8_000),  # a ninth of a core at most
    ({}, {3: (500_000, 0)}, 500),  # a thread that began meanwhile: its whole life
    ({1: (0, 0)}, {1: (5_000_000, 9_000_000)}, 0),  # the caller's own thread (1) is never another
])
def test_the_gil_others_held_counts_a_threads_wait_for_a_cpu_only_beside_its_cpu_time(
        before: dict[int, tuple[int, int]], now: dict[int, tuple[int, int]], held_us: int) -> None:
    """Two busy programs on a 2-core machine, auto over 2 ms sleeps right after a call of 32 threads: the pool's
    idle threads woke and waited for a CPU 20-60x as long as they ran, without the GIL; summed whole, their
    waits read the sleeping item's probe as a GIL wait, and the call ran on processes as CPU work (1 in 5
    runs of test_auto_calls_of_changing_sizes_and_submits_share_one_thread_pool beside two busy programs)."""
    assert _probe._gil_holding_ns(before, now, me=1) == held_us * 1_000


_SLEEPS_BESIDE_BUSY_PROGRAMS = """
import json, warnings
from payoff import ParallelConfig, ParallelExecutor, planning
from tests import tasks
probes, chosen, readings = [], [], []
run_probe = planning._run_probe
def _run_probe(*args, **kwargs):  # what each probe read, for a call that misreads (clean-clone CI, 2 of 10 runs)
    probe = run_probe(*args, **kwargs)
    o = probe.outcome
    probes.append(dict(known=probe.known, n=probe.n, ratio=probe.cpu_ratio, cores=probe.cores,
                       delegates=probe.delegates, waited=probe.waited, crowded=args[3] if len(args) > 3 else None,
                       outcome=None if o is None else (o.cpu_ns, o.runq_ns, o.blocked, sum(o.durations_ns),
                                                       o.end_ns - o.start_ns)))
    return probe
planning._run_probe = _run_probe
for _ in range(4):
    planning.PLANNER.reset()
    with ParallelExecutor(ParallelConfig(tiny_workload_threshold=0.0)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in (100, 10, 100, 7):
            probes.clear()
            ex.map(tasks.sleep_then_square, range(n))
            r = ex.last_record
            chosen.append((r.selected_strategy, r.decision_reason.value, n))
            facts = planning.PLANNER.knowledge.get(tasks.sleep_then_square)
            readings.append(dict(probes=list(probes), cpu=r.cpu_seconds, busy=r.busy_seconds, wall=r.wall_seconds,
                                 workers=r.workers, facts=None if facts is None else (facts.cpu_ratio, facts.waited)))
            ex.submit(tasks.square, 3).result(timeout=30)
print(json.dumps(readings))
print(json.dumps(chosen))
"""


def test_sleeping_items_after_a_call_of_many_threads_stay_waiting_work_beside_busy_programs() -> None:
    """The scenario above, for real: both cores busy with other programs, calls of a 2 ms sleep on one executor.

    In a fresh interpreter: the premise is that no other payoff call runs in the process, and a thread an
    earlier test left running (a hung item it gave up on) is one (the suite's run once read a call CPU-bound)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        done = subprocess.run([sys.executable, "-c", _SLEEPS_BESIDE_BUSY_PROGRAMS], capture_output=True, text=True,
                              timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert done.returncode == 0, done.stderr
    *_, readings, chosen = (json.loads(line) for line in done.stdout.strip().splitlines())
    assert len(chosen) == 16, chosen
    assert [c for c in chosen if c[0] != "threads"] == [], (chosen, readings)  # each call's readings, to tell why


def test_waiting_items_beside_a_busy_thread_of_the_program_are_still_waiting_work() -> None:
    """A busy thread that is not payoff's says nothing about the items: sleeping items stay waiting work
    (threads), not CPU work priced at their tiny CPU time and kept serial."""
    got = _probe_beside_hogs(planning.Planner(), _sleep_briefly, lambda: tasks.spin(1, 200))
    assert got.probe.n >= 1
    outcome = got.probe.outcome
    assert outcome is not None
    assert got.decision is Reason.AUTO_WAITING, (  # failed once in a full run (-n 2), not in 18 alone or loaded
        got.probe.cpu_ratio, got.strategy, got.probe.delegates, got.probe.cores, outcome.blocked, outcome.cpu_ns,
        outcome.runq_ns, outcome.end_ns - outcome.start_ns, outcome.n_done)


def _sleep_briefly(x: int) -> int:
    time.sleep(0.002)
    return x


def _nap(x: int) -> int:
    time.sleep(0.01)
    return x


def _no_setup() -> None:
    """An initializer: a named pool with one runs the function with no probe in the caller."""


def test_a_function_first_measured_on_named_threads_keeps_its_waiting_share() -> None:
    """Named threads with an initializer (no probe) taught a sleeping function a CPU share of 1.0: the next
    call's estimate was its CPU time (0.006x for a 2x call) and auto then sent the function to processes."""
    config = ParallelConfig(strategy="threads", max_workers=2, worker_initializer=_no_setup)
    with ParallelExecutor(config) as ex:
        for _ in range(2):
            ex.map(_nap, range(20))
            record = ex.last_record
            assert record is not None and record.mode == "parallel"
    facts = planning.PLANNER.knowledge.get(_nap)
    assert facts is not None and facts.cpu_ratio < 0.5, facts
    assert record.serial_estimate_seconds > 0.5 * record.busy_seconds, (record.serial_estimate_seconds, record)
    with ParallelExecutor() as ex:
        ex.map(_nap, range(40))
        auto = ex.last_record
    assert auto is not None and auto.selected_strategy == "threads", auto.summary()


def _big_result(k: int) -> np.ndarray:
    return np.full(500_000, k, dtype=np.float64)  # 4 MB to send back from a worker process


def test_a_known_function_keeps_its_large_results_in_the_plan() -> None:
    """A call that recalls the function runs no probe, so its results were taken as 0 bytes: the second call
    of a function returning 4 MB arrays went to processes as 'auto_cpu_bound ... small payloads' (160 MB back)."""
    with ParallelExecutor() as ex:
        plans = []
        for _ in range(3):
            ex.map(_big_result, range(40))
            record = ex.last_record
            assert record is not None
            plans.append((record.selected_strategy, record.decision_reason, record.bytes_received))
    facts = planning.PLANNER.knowledge.get(_big_result)
    assert facts is not None and facts.result_bytes >= 4_000_000, facts
    # beside other programs' load (CI, two test workers on two cores) a threads run can read slow, and the
    # planner then tried processes once, seen twice in 4 CI runs of 2026-12-05: never on the first call, whose
    # probe priced the results, and never kept, since its 160 MB back were measured
    strategies = [strategy for strategy, _, _ in plans]
    assert strategies[0] != "processes", plans
    assert not any(a == b == "processes" for a, b in itertools.pairwise(strategies)), plans


def _loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def test_a_cost_far_from_the_remembered_one_replaces_it() -> None:
    """The cost a function had on earlier items was taken for this call's and corrected by smoothing: after
    40 items of ~1 ms fell back as '40 items x 0.5 us', the next calls crept up on the real cost and stayed
    serial. The fallback's detail now says its cost is remembered, and one call's measurement replaces it."""
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2)) as ex:
        for _ in range(4):
            ex.map(_loop, [10] * 200)  # cheap items teach a cost
        cheap = planning.PLANNER.knowledge.get(_loop)
        assert cheap is not None
        taught = cheap.seconds_per_item
        ex.map(_loop, [30_000] * 40)  # each item about 1,000x dearer, planned on the remembered cost
        first = ex.last_record
        assert first is not None
        if first.fallback_reason is not None:
            assert "at the cost earlier calls measured" in first.fallback_detail, first.fallback_detail
        facts = planning.PLANNER.knowledge.get(_loop)
        assert facts is not None and facts.seconds_per_item > 100 * taught, (taught, facts.seconds_per_item)
        ex.map(_loop, [30_000] * 40)
        record = ex.last_record
        assert record is not None and record.selected_strategy == "processes", record.summary()


# -- work that mixes CPU with waiting: one reading of its share must not flip it between backends --------------


def _saturated_threads_record(share_taught: float, n_items: int = 300) -> MapRecord:
    """A threads call planned as waiting work whose threads together kept a core busy: GIL-bound, whether the
    items are CPU-bound or mix CPU with waiting (six threads of 1 ms CPU and 2 ms sleep do that too)."""
    built = RecordBuilder(1, "default", "auto", None, n_items, time.monotonic_ns(), time.time()).build()
    wall = n_items * 1e-3
    return replace(built, selected_strategy="threads", workers=6, decision_reason=Reason.AUTO_WAITING,
                   wall_seconds=wall, busy_seconds=6 * wall, cpu_seconds=0.95 * wall,
                   serial_estimate_seconds=n_items * 1e-3 / share_taught)


@pytest.mark.parametrize("measured_on", ["probe", "processes"])
def test_a_share_measured_in_worker_processes_outlives_a_gil_bound_threads_run(measured_on: str) -> None:
    """Items of 1 ms CPU and 2 ms sleep flipped between threads and processes on every other call (1.3-1.5x
    slower than ThreadPoolExecutor()): a threads run that kept a core busy re-taught them a CPU share of 1.0,
    and the next run on processes taught 0.33 again. A GIL-bound threads run cannot tell CPU-bound items from
    mixed ones, so it only corrects a share a probe read (a slow first item can make CPU-bound work look
    waiting); a share measured in worker processes, where nothing holds an item back, stands."""
    planner = planning.Planner()
    planner.knowledge.teach(_nap, _knowledge.Facts(3e-3, 0.33, 40, "", None, result_error=""))
    if measured_on == "processes":
        built = RecordBuilder(1, "default", "auto", None, 300, time.monotonic_ns(), time.time()).build()
        on_processes = replace(built, selected_strategy="processes", workers=2, decision_reason=Reason.AUTO_CPU_BOUND,
                               wall_seconds=0.45, busy_seconds=0.9, cpu_seconds=0.3, serial_estimate_seconds=0.9)
        planner.learn(on_processes, _nap)
    for _ in range(3):
        planner.learn(_saturated_threads_record(0.33), _nap)
    facts = planner.knowledge.get(_nap)
    assert facts is not None
    if measured_on == "processes":
        assert facts.cpu_ratio == pytest.approx(0.33, abs=0.02), facts
    else:
        assert facts.cpu_ratio > _probe.waiting_line(2), facts


def _spin_then_sleep(x: int) -> int:
    tasks.spin(x, 20_000)  # about 1 ms of CPU
    time.sleep(0.002)
    return x


def test_mixed_cpu_and_waiting_items_settle_on_one_backend() -> None:
    """The same call repeated on one executor: once measured, a function that mixes CPU with waiting keeps one
    backend, instead of alternating between threads and processes as each run re-taught its CPU share.

    Threads runs that kept a core busy may move a share only a probe read over the line once (under outside
    load they do: CI read threads x3, processes, threads x3); the share the processes run then measures
    stands, so there is at most one such call and every call after it is on one backend."""
    with ParallelExecutor() as ex:
        for _ in range(8):
            assert ex.map(_spin_then_sleep, range(80)) == list(range(80))
        records = list(ex.records)
    # a serial check times the items alone on purpose, a pool's gain under 1.6x (at most two a pool): no backend
    # of its own (under load a threads gain of 1.2-1.5x had one, between threads calls)
    chosen = [r.selected_strategy for r in records if r.decision_reason is not Reason.AUTO_SERIAL_CHECK]
    shown = [(r.selected_strategy, r.decision_reason.value, round(r.cpu_seconds / max(r.busy_seconds, 1e-9), 2))
             for r in records]
    assert len(records) - len(chosen) <= 2 * CHECK_TRIES, shown  # two tries for each of the two pools at most
    assert set(chosen) <= {"threads", "processes"}, shown
    first_on_processes = chosen.index("processes") if "processes" in chosen else len(chosen)
    assert len(set(chosen[first_on_processes + 1:])) <= 1, shown
    assert sum(a != b for a, b in itertools.pairwise(chosen)) <= 2, shown


def test_threads_of_mixed_items_are_estimated_from_their_cpu_share_not_their_gil_waits() -> None:
    """Six threads of items with 1 ms CPU and 2 ms sleep: each item's own time (6 ms) holds the waits for the
    GIL the other threads held; a loop would take 3 ms an item, which its CPU over the share measured alone
    (1 ms / 0.33) tells. The estimate counted the 6 ms: 5.4x recorded for a 2.8x call."""
    builder = RecordBuilder(1, "default", "auto", None, 100, time.monotonic_ns(), time.time())
    builder.selected, builder.workers, builder.cpu_ratio = "threads", 6, 1 / 3
    ms = 1_000_000
    for k in range(10):
        outcome = ChunkOutcome(k, 10 * k, [None] * 10, k * 60 * ms, (k + 1) * 60 * ms, 10 * ms,
                               array("q", [6 * ms] * 10), array("q", [1] * 10), "worker-1")
        builder.add(outcome, "pool", k * 60 * ms)
    assert builder.build().serial_estimate_seconds == pytest.approx(0.3, rel=0.01)


# -- a cost a few items measured, and a cost that changed under the same function ------------------------------


def test_a_quick_call_of_a_few_items_does_not_decide_for_a_large_one() -> None:
    """``payoff.map(f, range(10))`` probed one cold item (1.4 us for items of 150 ns) and its whole call read 7 us
    an item (the set-up of its chunks counted as the items' work); the next call, 5,000 items, believed it and
    went to worker processes: 30-120 ms against 0.35 ms for a loop, 9 of 9 fresh processes."""
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        ex.map(tasks.identity_of_one_test, range(10))
        assert ex.map(tasks.identity_of_one_test, range(5000)) == list(range(5000))
        record = ex.last_record
    assert record is not None
    assert record.probe_items > 1, "a cost resting on a few items is measured again by a call that can probe more"
    assert record.selected_strategy == "serial", (record.summary(), record.planned_cost, record.chunks[0])


def _caller_record(n_items: int, busy_ns: int, timed_ns: int) -> MapRecord:
    """A serial call of ``n_items`` run in the caller as one chunk: busy for ``busy_ns``, its items timed at
    ``timed_ns`` (the rest is the chunk's own set-up)."""
    builder = RecordBuilder(1, "default", "auto", None, n_items, time.monotonic_ns(), time.time())
    outcome = ChunkOutcome(0, 0, [None] * n_items, 0, busy_ns, busy_ns, array("q", [timed_ns]),
                           array("q", [n_items]), "caller")
    builder.add(outcome, "caller", 0)
    builder.fall_back(Reason.TINY_WORKLOAD, "too little work")
    return builder.build()


def test_the_set_up_of_a_chunk_run_here_is_not_learned_as_the_items_cost() -> None:
    planner = planning.Planner()
    planner.knowledge.teach(tasks.identity, _knowledge.Facts(1.4e-6, 1.0, 40, "", None, result_error="",
                                                           measured_items=1))
    planner.learn(_caller_record(10, 70_000, 1_500), tasks.identity)  # 70 us busy, 1.5 us of items
    facts = planner.knowledge.get(tasks.identity)
    assert facts is not None and facts.seconds_per_item == pytest.approx(1.5e-7), facts


def test_a_reading_of_a_few_items_nudges_a_sound_cost_but_never_replaces_it() -> None:
    knowledge = _knowledge.Knowledge()
    knowledge.teach(tasks.identity, _knowledge.Facts(1.5e-7, 1.0, 40, "", None, measured_items=5000))
    knowledge.observe(tasks.identity, 7e-6, 1.0, n_items=10)  # 47x off, but 70 us of 10 items
    facts = knowledge.get(tasks.identity)
    assert facts is not None and facts.seconds_per_item < 2 * 1.5e-7 and facts.sound, facts
    knowledge.observe(tasks.identity, 7e-6, 1.0, n_items=100)  # 0.7 ms of 100 items: the cost changed
    assert facts.seconds_per_item == 7e-6 and facts.measured_items == 100, facts


def test_a_cost_a_few_items_measured_gives_way_to_one_measured_on_more() -> None:
    knowledge = _knowledge.Knowledge()
    knowledge.teach(tasks.identity, _knowledge.Facts(1.4e-6, 1.0, 40, "", None, measured_items=1))
    knowledge.observe(tasks.identity, 1.6e-7, 1.0, n_items=9)  # 2.6x: smoothed in were both sound
    facts = knowledge.get(tasks.identity)
    assert facts is not None and facts.seconds_per_item == 1.6e-7 and facts.measured_items == 9, facts


def test_an_estimate_a_calls_own_first_items_made_is_not_blamed_on_earlier_calls() -> None:
    """The first call of a function, its first 400 items trivial and its last 30 of ~1 ms, kept serial (a
    ``timeout=`` keeps a serial run whole): its advice said the cost "came from earlier calls" where there were
    none (hunt 55, F2; failed before). It names the call's own first items."""
    from payoff.record import OVERTURNED_HEAD_ADVICE, advice_of

    items = [1] * 400 + [20_000] * 30
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planning.Planner()) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ex.map(tasks.spin_rounds, items, timeout=60) == [tasks.spin_rounds(x) for x in items]
        record = ex.last_record
    assert record is not None and len(ex.records) == 1
    assert record.fallback_detail.startswith(OVERTURNED), record.summary()
    assert advice_of(record) == OVERTURNED_HEAD_ADVICE, advice_of(record)
    assert "earlier calls" not in advice_of(record)


def test_a_serial_fallback_whose_items_overturned_the_estimate_says_what_they_measured() -> None:
    """The function kept its planning key but its items became 1,000x dearer (a wrapper whose inner function
    was redefined, a global it reads, a callable instance or partial with other arguments): the first call
    after ran serially as ``tiny_workload`` and its warning said "300 items ... = 0.19 ms of work" for a call
    that ran 250 ms. The record and the warning now say what the call measured, and no "usually right"."""
    planning.PLANNER.knowledge.teach(tasks.spin, _knowledge.Facts(1e-8, 1.0, 40, "", None, result_error=""))
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ex.map(tasks.spin, range(30)) == [tasks.spin(x) for x in range(30)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.TINY_WORKLOAD, record
    detail = record.fallback_detail
    assert detail.startswith(OVERTURNED) and "This call measured" in detail and "30 items (" in detail, detail
    (message,) = [str(w.message) for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert detail in message and "usually right" not in message and OVERTURNED_ADVICE[1:] in message, message
    assert OVERTURNED_ADVICE in record.summary() and OVERTURNED_ADVICE in "\n".join(details(record))
    facts = planning.PLANNER.knowledge.get(tasks.spin)
    assert facts is not None and facts.seconds_per_item > 100 * 1e-8, "the next call is planned from that"


def test_an_estimate_the_items_confirmed_is_left_as_it_was_planned() -> None:
    planning.PLANNER.knowledge.teach(tasks.identity, _knowledge.Facts(1e-3, 1.0, 40, "", None, result_error=""))
    builder = RecordBuilder(1, "default", "auto", None, 10, time.monotonic_ns(), time.time())
    builder.planned_cost = 1e-3
    ms = 1_000_000
    builder.add(ChunkOutcome(0, 0, [None] * 10, 0, 11 * ms, 11 * ms, array("q", [10 * ms]), array("q", [10]),
                             "caller"), "caller", 0)
    builder.fall_back(Reason.TINY_WORKLOAD, "10 items x 1.0 ms = 10 ms of work")
    assert builder.build().fallback_detail == "10 items x 1.0 ms = 10 ms of work"
    builder.planned_cost = 1e-5  # the same items planned at 100x less
    assert builder.build().fallback_detail.startswith(OVERTURNED)


def test_threads_that_saturate_the_gil_by_their_number_do_not_make_waiting_items_cpu_bound() -> None:
    """400 items of a 5 ms sleep (0.1 ms of CPU) on 32 threads, while other programs loaded both cores: the
    threads' CPU time together reached 0.8 of the call's wall time, which reads as GIL-bound (share 1.0).
    Blended into the remembered share of 0.02, the next call ran 7 threads instead of 32 (9.5x the loop
    instead of 22x) and recorded 1.0x. Items that hold the GIL for a few percent of their time do not become
    CPU-bound; 32 of them at once only keep the GIL busy."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(5.2e-3, 0.02, 40, "", None, result_error=""))
    config = ParallelConfig()

    def planned() -> planning.Plan:
        return planner.plan(planning.Call(tasks.spin, list(range(400)), config, "auto", None, None, None,
                                          frozenset({"threads"}), 5))

    started, first = time.monotonic_ns(), planned()
    assert first.decision is Reason.AUTO_WAITING and first.workers == config.max_waiting_workers
    time.sleep(0.005)
    busy = 400 * 6.5e-3
    record = replace(_finished(started, "threads", speedup=26.0, per_item=6.5e-3, n_items=400),
                     decision_reason=Reason.AUTO_WAITING, workers=first.workers)
    record = replace(record, cpu_seconds=0.85 * record.wall_seconds, busy_seconds=busy)
    assert record.cpu_seconds >= _probe.GIL_BOUND_CORES * record.wall_seconds
    planner.learn(record, tasks.spin)
    later = planned()
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio < _probe.waiting_line(2) / 4, facts.cpu_ratio
    assert later.decision is Reason.AUTO_WAITING and later.workers == config.max_waiting_workers, later.workers


def test_threads_runs_of_items_that_mostly_wait_do_not_lower_their_cpu_share() -> None:
    """400 items of 0.5 ms CPU and a 5 ms sleep on 22-32 threads: each item's own time holds its waits for the
    GIL the other threads held, so a run read a CPU share of 0.04 for items of 0.09. Smoothed in call after
    call, the share fell from the probe's 0.08 to 0.04, the cost per item (CPU over that share) rose from 6.7
    to 13.4 ms, and the records read 18-24x for calls 9.6x the loop. A GIL-bound run's reading only says the
    share is at least that much."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(5.5e-3, 0.08, 40, "", None, result_error=""))
    for _ in range(6):
        started = time.monotonic_ns()
        record = replace(_finished(started, "threads", speedup=9.0, per_item=5.5e-3, n_items=400),
                         decision_reason=Reason.AUTO_WAITING, workers=32)
        record = replace(record, cpu_seconds=400 * 0.45e-3, busy_seconds=400 * 11e-3)  # own share 0.04
        assert record.cpu_seconds < _probe.GIL_BOUND_CORES * record.wall_seconds
        planner.learn(record, tasks.spin)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.cpu_ratio == pytest.approx(0.08, abs=0.005), facts.cpu_ratio
    assert facts.seconds_per_item < 7e-3, facts.seconds_per_item


def test_a_share_read_without_the_gil_far_from_the_remembered_one_replaces_it() -> None:
    """Items of 1 ms of CPU whose service got slower (0 -> 5 ms of sleep): processes read 0.17, and smoothed
    from 0.76 the share took four calls at 2.6x ``ThreadPoolExecutor()``'s time to reach threads (helper run,
    shift.py 1 200 0,5). A reading near the remembered share is still smoothed in."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-3, 0.76, 40, "", None, result_error="",
                                                       share_without_gil=True))
    planner.learn(_finished(time.monotonic_ns(), "processes", speedup=1.9, cpu_share=0.6, per_item=1e-3), tasks.spin)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and 0.6 < facts.cpu_ratio < 0.76, facts.cpu_ratio  # noise: smoothed
    planner.learn(_finished(time.monotonic_ns(), "processes", speedup=1.9, cpu_share=0.17, per_item=6e-3),
                  tasks.spin)
    assert facts.cpu_ratio == pytest.approx(0.17), facts.cpu_ratio


def _spin_briefly(x: int) -> int:
    return tasks.spin(x, 4000)


def test_a_function_on_threads_as_waiting_work_has_its_share_read_alone_again() -> None:
    """A function measured as waiting work (share 0.2, read on processes) whose sleep went away: on threads, the
    GIL paces CPU-bound items as it paces waiting ones, so no run could tell, and it stayed on threads at a
    loop's speed while its records read 2-3x (helper run, shift.py 1 200 5,0 10). Every RESHARE_EVERY calls
    on threads its first items run alone, read the share again, and the call is planned on that."""
    planner = planning.Planner()
    planner.knowledge.teach(_spin_briefly, _knowledge.Facts(1e-3, 0.2, 40, "", None, result_error="",
                                                         share_without_gil=True, waited=True))
    config = ParallelConfig(max_workers=2)

    def planned() -> planning.Plan:
        return planner.plan(planning.Call(_spin_briefly, list(range(400)), config, "auto", None, None, None,
                                          frozenset({"threads", "processes"}), 5))

    for _ in range(_knowledge.RESHARE_EVERY):
        started, plan = time.monotonic_ns(), planned()
        assert plan.strategy == "threads" and plan.probe.n == 0, plan
        time.sleep(0.002)
        record = replace(_finished(started, "threads", speedup=2.5, cpu_share=0.4, per_item=1e-3, n_items=400),
                         decision_reason=Reason.AUTO_WAITING, workers=plan.workers)
        planner.learn(record, _spin_briefly)
    again = planned()
    assert again.probe.n > 0, "the share was not read again"
    assert again.strategy == "processes" and again.decision is Reason.AUTO_CPU_BOUND, again
    facts = planner.knowledge.get(_spin_briefly)
    assert facts is not None and facts.cpu_ratio > 0.8 and facts.threads_calls == 0, facts


def _nap_briefly(x: int) -> int:
    time.sleep(0.002)
    return x


def test_threads_that_fill_the_gil_send_the_next_call_to_read_the_share_alone_not_to_processes() -> None:
    """Waiting items on enough threads keep the GIL busy, which reads like CPU-bound items: blended in as a
    share of 1.0, the next call went to processes at 2-5x the threads' time before a run there read the share
    again (helper runs: t10 t5 p2 t12 ...). The next call now runs its first items alone and plans on that."""
    planner = planning.Planner()
    planner.knowledge.teach(_nap_briefly, _knowledge.Facts(2.1e-3, 0.3, 40, "", None, result_error=""))
    config = ParallelConfig(max_workers=2)

    def planned() -> planning.Plan:
        return planner.plan(planning.Call(_nap_briefly, list(range(400)), config, "auto", None, None, None,
                                          frozenset({"threads", "processes"}), 5))

    started, first = time.monotonic_ns(), planned()
    assert first.strategy == "threads" and first.probe.n == 0, first
    time.sleep(0.002)
    record = replace(_finished(started, "threads", speedup=5.0, per_item=2.1e-3, n_items=400),
                     decision_reason=Reason.AUTO_WAITING, workers=first.workers)
    record = replace(record, cpu_seconds=0.9 * record.wall_seconds, busy_seconds=400 * 4e-3)
    planner.learn(record, _nap_briefly)
    time.sleep(planning.OTHERS_WINDOW_SECONDS)  # a call right after another's end reads other threads' CPU as GIL
    again = planned()
    assert again.probe.n > 0 and again.strategy == "threads", (again.probe.cpu_ratio, again.probe.outcome)
    facts = planner.knowledge.get(_nap_briefly)
    assert facts is not None and facts.share_without_gil and facts.cpu_ratio < _probe.waiting_line(2), facts


@pytest.mark.parametrize(("fn", "backend"), [(tasks.dear_nap, "threads"), (tasks.dear_spin, "processes")])
def test_a_call_of_two_dear_items_runs_both_on_a_pool_from_its_second_call(fn: Callable[[int], int],
                                                                             backend: str) -> None:
    """The first call probes one item here and keeps the other (one item is too few to split). Nothing was
    remembered of a call kept serial, so every later call was a first call and ran serially too: two items of
    0.47 s took 0.95 s on every call where a pool of two takes half. Measured once, the next call sends both."""
    with ParallelExecutor() as ex:
        serially = ex.map(fn, [1, 2])
        first = ex.last_record
        assert first is not None and first.selected_strategy == "serial", first.summary()
        assert first.fallback_reason is Reason.TOO_FEW_ITEMS and first.probe_items == 1, first.summary()
        assert ex.map(fn, [1, 2]) == serially
        second = ex.last_record
    assert second is not None and second.selected_strategy == backend, second.summary()
    assert second.probe_items == 0 and second.n_chunks == 2 and second.workers >= 2, second.summary()


def test_a_crash_mark_outlives_any_timeout_mark_and_a_hung_item_outlives_a_slow_one() -> None:
    """One mark a function and the latest won: a worker crash was replaced by a concurrent request's timeout
    mark and forgotten when that slow item ended; an item hanging for good was replaced by one only slow, and
    the function went back to threads while a thread still hung (review of the session's diff)."""
    crashes = _knowledge.Knowledge()
    crashes.crashed(tasks.square, "a worker process died (SIGSEGV) running item 3")
    crashes.crashed(tasks.square, "its items still ran after timeout=1 s", lambda: False)  # slow, and ended
    assert crashes.crash_of(tasks.square) == "a worker process died (SIGSEGV) running item 3"

    hangs = _knowledge.Knowledge()
    slow_ended = threading.Event()
    hangs.crashed(tasks.square, "item hung", lambda: True)
    hangs.crashed(tasks.square, "item slow", lambda: not slow_ended.is_set())
    slow_ended.set()
    assert hangs.crash_of(tasks.square) is not None  # the hung one still runs
    hangs.crashed(tasks.grows, "item slow", lambda: not slow_ended.is_set())
    assert hangs.crash_of(tasks.grows) is None  # every item that outlived a timeout ended: planned as before


def test_cached_functions_of_one_name_in_two_places_are_remembered_apart() -> None:
    """A ``functools.cache`` wrapper has no code of its own: every cached ``score`` of every module shared one
    key, so one's cost and crashes were taken for the other's (review of the session's diff)."""
    import functools

    def cached_in(filename: str) -> Callable[[int], int]:
        space: dict[str, Any] = {"functools": functools}
        exec(compile("@functools.cache\ndef score(x):\n    return x\n", filename, "exec"), space)
        return space["score"]  # type: ignore[no-any-return]

    here, there = cached_in("/srv/app/features.py"), cached_in("/srv/app/labels.py")
    assert _knowledge.fn_key(here) != _knowledge.fn_key(there)
    assert _knowledge.fn_key(here) == _knowledge.fn_key(cached_in("/srv/app/features.py"))  # a cell run again
    assert _knowledge.fn_key(here) != _knowledge.fn_key(here.__wrapped__)  # cached items cost otherwise


def test_a_share_read_again_beside_other_calls_does_not_turn_waiting_items_into_cpu_work() -> None:
    """Every ``RESHARE_EVERY`` calls on threads the first items run alone again; beside a service's other
    requests (a thread holding the GIL, another call open) their sleep read as waits for the GIL, the share as
    1.0 and the cost as the items' CPU time (microseconds): planned serial, then moved to processes, 15% of a
    sleeping endpoint's calls at 5-10x the latency of threads (service trial). A function known to wait keeps
    its share against such an ambiguous reading."""

    planner = planning.Planner()
    planner.knowledge.teach(_nap_briefly, _knowledge.Facts(2.1e-3, 0.02, 40, "", None, result_error="",
                                                           share_without_gil=True, waited=True,
                                                           threads_calls=_knowledge.RESHARE_EVERY))
    other = CancelToken()
    planner._event(other)  # another request's call, open
    with a_busy_python_thread():
        got = planner.plan(planning.Call(_nap_briefly, list(range(400)), ParallelConfig(max_workers=2), "auto",
                                         None, None, None, frozenset({"threads", "processes"}), 5))
    assert got.probe.n > 0, "the share was read again"
    assert got.strategy == "threads" and got.decision is Reason.AUTO_WAITING, (got.strategy, got.detail)
    facts = planner.knowledge.get(_nap_briefly)
    assert facts is not None and facts.cpu_ratio < _probe.waiting_line(2), facts


def test_the_function_carries_as_many_copies_as_the_estimate_moves() -> None:
    """A function under ``SHIP_ONCE_BYTES`` goes with every chunk, and the estimate costs it so; the detail that
    names the function as most of the data counted one copy, so a 60 KB ``partial`` over 8 chunks of 1 KB items
    was told "send indices" while its 480 KB outweighed the items' 400 KB (review 43, D5)."""
    from payoff._probe import Probe
    from payoff.planning import SHIP_ONCE_BYTES, Estimate

    probe = Probe(seconds_per_item=1e-4, item_bytes=1024, fn_bytes=60_000)
    assert probe.fn_bytes < SHIP_ONCE_BYTES
    chunked = Estimate(0.04, 0.0, 0.05, 0.03, 0.02, fn_copies=8)
    assert "the function carries 0.1 MB pickled, the most" in planning._carried(probe.fn_bytes, probe, chunked, 400)
    assert planning._carried(probe.fn_bytes, probe, chunked._replace(fn_copies=1), 400) == ""


def _crowded_serial_record(n_items: int, per_item: float) -> MapRecord:
    """A serial call of ``n_items`` whose items took ``per_item`` of CPU and wall time each."""
    built = RecordBuilder(1, "default", "auto", None, n_items, time.monotonic_ns(), time.time()).build()
    total = n_items * per_item
    return replace(built, selected_strategy="serial", workers=1, decision_reason=Reason.AUTO_CPU_BOUND,
                   fallback_reason=Reason.TINY_WORKLOAD, wall_seconds=total, busy_seconds=total, cpu_seconds=total,
                   serial_estimate_seconds=total)


def test_a_crowded_call_of_trivial_items_teaches_no_new_cost_from_a_few_microseconds() -> None:
    """Beside another call still open (an imap its consumer left), a 200-item map of 80 ns items read 3-25x its
    cost: a few GIL handovers, some microseconds of CPU in all, are 3x of 16 us of items. Each such reading
    counted as the cost shifting, and a function that keeps shifting is probed on every call: 7-50x slower calls
    in a threaded service, each probe reading /proc for its ~200 threads (soak trial 44, F1). A shift read among
    other calls must be dear in absolute terms too; an item turned 1,000x dearer still is."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, _knowledge.Facts(8e-8, 1.0, 40, "", None, result_error="",
                                                          measured_items=200))
    open_call = CancelToken()  # another call planned and not ended: every call now is crowded
    with planner._events_lock:
        planner._open[open_call] = time.monotonic_ns()
    for _ in range(4):
        planner.learn(_crowded_serial_record(200, 8e-7), tasks.square)  # 10x, 144 us more in all
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None and facts.seconds_per_item == pytest.approx(8e-8) and not planning._unsteady(facts)
    planner.learn(_crowded_serial_record(200, 8e-5), tasks.square)  # 1,000x: 16 ms of items
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None and facts.seconds_per_item == pytest.approx(8e-5)


@pytest.mark.parametrize(("made_by", "kind"), [("closure", "cpu"), ("partial", "cpu"), ("closure", "small_cpu")])
def test_a_cpu_bound_callable_made_where_a_waiting_one_was_is_planned_as_cpu_work(made_by: str, kind: str) -> None:
    """Callables of one source line share what was learned (a closure made afresh per call is one workload), but
    one closing over other arguments may be other work: a CPU-bound closure made by the factory that had made a
    waiting one ran on 8 threads as waiting work for 7 calls, 0.95x the loop, its records saying 2.0-2.7x
    with ``pays_off`` (trial 51). Items 20x cheaper than the waiting ones too: the check of the cost came first
    and hid the share's (review: 32 threads as waiting work)."""
    def make(kind: str) -> Callable[[int], int]:
        if made_by == "closure":
            return tasks.closure_of_kind(kind)
        return functools.partial(tasks.work_of_kind, kind=kind)
    seen = []
    for _ in range(3):  # a probe descheduled by the suite's own load can read CPU work as waiting (a clean-clone
        planning.PLANNER.reset()  # CI run: "threads x4 ... utilization 20%"); the fault it guards held every call
        with ParallelExecutor(ParallelConfig(tiny_workload_threshold=0.0)) as ex, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            waiting = make("wait")
            for _ in range(2):
                ex.map(waiting, range(40))
                assert ex.last_record is not None and ex.last_record.decision_reason is Reason.AUTO_WAITING
            ex.map(make(kind), range(40))
            record = ex.last_record
        assert record is not None
        if record.selected_strategy != "threads" and record.decision_reason is not Reason.AUTO_WAITING:
            return
        seen.append(record.summary())
    pytest.fail(f"planned as waiting work three times: {seen}")


def test_closures_whose_first_item_sets_up_before_waiting_stay_waiting_work() -> None:
    """A closure made per request whose first item opens a connection (3 ms of CPU before its 2 ms wait) is the
    source's work all the same: read on its first item alone, each call went to processes, 0.050 s where
    threads took 0.009 s (review). The second item decides, and a source whose first items keep misleading is
    no longer checked."""
    planning.PLANNER.reset()
    with ParallelExecutor(ParallelConfig(tiny_workload_threshold=0.0)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.map(tasks.closure_of_kind("wait"), range(40))
        chosen = []
        for _ in range(5):
            ex.map(tasks.closure_of_kind("set_up_first"), range(40))
            record = ex.last_record
            assert record is not None
            chosen.append((record.selected_strategy, record.chunks[0].where, record.chunks[0].n_items))
    assert [c[0] for c in chosen] == ["threads"] * 5, chosen
    assert [c for c in chosen[planning.MISLEADING_FIRSTS:] if c[1] == "caller" and c[2] > 1] == [], chosen


def test_a_fresh_partial_over_a_few_dear_items_is_not_checked_ahead_of_the_pool() -> None:
    """``map(partial(fit, X, y), grid)`` of two items of 0.25 s ran its first item here to check it, and the one
    left ran serially as too few to split: 0.5 s a call where processes took 0.25 s (review)."""
    planning.PLANNER.reset()
    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            ex.map(functools.partial(tasks.burn_cpu, 0.1), range(2))
        record = ex.last_record
    assert record is not None and record.fallback_reason is not Reason.TOO_FEW_ITEMS, record.summary()
    assert all(c.where != "caller" for c in record.chunks), record.chunks


def test_a_callable_made_where_a_waiting_one_was_learns_its_own_cpu_share() -> None:
    """Both wait, so both run on threads, but the first one's share priced the second's serial time from its CPU
    time: closures of 1 ms of CPU and 3 ms of sleep, after closures of a 4 ms sleep, recorded 5.1-7.0x for a
    measured 3.3-4.0x (trial 51)."""
    planning.PLANNER.reset()
    with ParallelExecutor(ParallelConfig(tiny_workload_threshold=0.0)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            ex.map(tasks.closure_of_kind("wait"), range(40))
        waited = planning.PLANNER.knowledge.get(tasks.closure_of_kind("wait"))
        assert waited is not None and waited.cpu_ratio < 0.1, waited
        share = waited.cpu_ratio  # the facts are the source's: the next call updates this very object
        ex.map(tasks.closure_of_kind("mixed"), range(40))
    facts = planning.PLANNER.knowledge.get(tasks.closure_of_kind("mixed"))
    assert facts is not None and facts.cpu_ratio > 2 * share, (facts.cpu_ratio, share)


def _raises_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("item 2")
    return x


@pytest.mark.parametrize("strategy", ["serial", "processes"])
def test_a_call_that_failed_with_nothing_left_running_here_is_no_other_call(strategy: str) -> None:
    """Review: the mark was set after any call that raised, a serial one's too, and for a second it made every
    thread's probe crowded (no reading of the CPUs an item spreads over) in a service whose requests fail."""
    planner = planning.Planner()
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0)
    with ParallelExecutor(config, planner=planner, observers=[]) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="item 2"):
            ex.map(_raises_on_two, range(8))
        assert not planner._others_lately(planning.OTHERS_WINDOW_SECONDS)


@pytest.mark.parametrize("left_running", [True, False])
def test_a_call_of_this_thread_that_left_items_running_is_another_call_to_its_next_probe(left_running: bool) -> None:
    """Review: a probe is among other calls only for another thread's calls (trial 52), but a call this thread
    ended with items still running did not end before the next one: a pure-Python function probed right after a
    timed-out map on threads read a share of 0.35-0.40 and went to 5-6 threads as waiting work (7 of 15 runs)."""
    planner = planning.Planner()
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2), planner=planner, observers=[]) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the threads left running are warned of
        if left_running:
            with pytest.raises(TimeoutError):
                ex.map(tasks.nap_ms, [400, 400], timeout=0.05)
        else:
            ex.map(tasks.nap_ms, [1, 1])
        assert planner._others_lately(planning.OTHERS_WINDOW_SECONDS) is left_running


def test_every_warm_auto_call_on_threads_is_what_threads_gain_for_data_processes_cannot_take() -> None:
    """Trial 53 #3: SHA-256 of 200 blobs of 1 MiB. A first, cold call on threads for data processes cannot take
    (``auto_shared_memory``) read 0.99x; five threads calls after it (``auto_releases_gil``) read 1.26-1.39x,
    yet the 0.99x alone was what threads gained, and the next 7 calls ran serially (``payload_too_large``,
    its warning quoting 0.99x) while thread pools ran 1.3-1.9x the loop."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, _knowledge.Facts(1e-4, 1.0, 40, "", None, result_error="",
                                                         threads_speedup=0.99))
    record = replace(_finished(time.monotonic_ns(), "threads", speedup=1.3), decision_reason=Reason.AUTO_RELEASES_GIL)
    assert record.speedup == pytest.approx(1.3)
    planner.learn(record, tasks.spin)
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None and facts.threads_speedup == pytest.approx(record.speedup)
    assert facts.verdicts["threads"][0].speedup == pytest.approx(record.speedup)
    # review: waiting work on many threads gains otherwise, and a loss is counted once, by its verdict
    waiting = replace(_finished(time.monotonic_ns(), "threads", speedup=8.0), decision_reason=Reason.AUTO_WAITING)
    planner.learn(waiting, tasks.spin)
    assert facts.threads_speedup == pytest.approx(record.speedup)
    loss = replace(_finished(time.monotonic_ns(), "threads", speedup=0.9), decision_reason=Reason.AUTO_RELEASES_GIL)
    planner.learn(loss, tasks.spin)
    assert facts.retries.get("threads", 0) <= 1, facts.retries


def test_a_stream_kept_serial_says_it_was_weighed_on_its_first_items() -> None:
    """Trial 53 #4: a 200,000-item ``imap`` over a generator warned "200,000 items ... ran serially ... 1,024
    items x 6.3 us = 6.46 ms of work": its plan weighed the first items of a stream of no known end, and said
    so nowhere."""
    from payoff import ParallelExecutor

    with ParallelExecutor(ParallelConfig(max_workers=2)) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert list(ex.imap(tasks.square, (i for i in range(5_000)))) == [i * i for i in range(5_000)]
        streamed = ex.last_record
        assert ex.map(tasks.square, list(range(5_000))) == [i * i for i in range(5_000)]
        listed = ex.last_record
    assert streamed is not None and listed is not None
    assert streamed.fallback_reason is not None and streamed.n_items == 5_000, streamed.summary()
    assert "items of a stream" in streamed.fallback_detail and "a stream of no known end" in streamed.fallback_detail
    assert listed.fallback_reason is not None and "stream" not in listed.fallback_detail, listed.summary()
    # a stream's held verdict still says what the earlier call measured (review: the stream's words replaced it)
    probe = _probe.Probe(verdicts={"processes": (_knowledge.Verdict(0.8, 1_000),)})
    said = planning._verdict_fallback("processes", (0.8, 1_000), probe, 1_000, sized=False)
    assert said is not None and "measured 0.80x against serial" in said[1] and "a stream of no known end" in said[1]
