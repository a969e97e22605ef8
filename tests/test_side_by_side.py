"""Items slower side by side on a pool than alone: read from a serial call next to a pool call, and taken off
the pool's serial estimate (``payoff._side_by_side``; issue 13, the estimate against the loop).

Before: a pool's estimate of a loop was the sum of its items' own times, whatever running beside each other did
to them. Matrix row W5 (sums of 1 MiB arrays on 2 threads) recorded 1.30x for a call 0.85x the loop's speed
(+52%), and auto kept threads on the strength of it.
"""

from __future__ import annotations

import threading
import time
import warnings
from array import array

import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason, planning
from payoff._knowledge import Facts
from payoff._side_by_side import CHECK_BELOW, CHECK_TRIES, FASTEST, MOST, SHOWS, SMOOTHING, Reading, SideBySide
from payoff.record import MapRecord, RecordBuilder
from payoff.worker import ChunkOutcome
from tests import tasks

REACH = 4


def test_a_factor_is_read_from_a_serial_call_right_after_a_pool_call() -> None:
    s = SideBySide()
    assert s.note_on_pool("threads", 1.5e-4, 500, REACH) is None, "nothing alone to compare with yet"
    assert s.note_alone(1.2e-4, 500, REACH) == {"threads": pytest.approx(1.25)}
    assert s.factor("threads") == pytest.approx(1.25)
    assert s.factor("processes") == 1.0


def test_readings_apart_or_of_unlike_sizes_give_no_factor() -> None:
    apart = SideBySide()
    apart.note_alone(1e-4, 500, REACH)
    apart.note_alone(1e-4, 500, REACH)  # another serial call in between: the data may have moved since
    apart.seq += 1
    assert apart.note_on_pool("processes", 2e-4, 500, REACH) is None
    unlike = SideBySide()
    unlike.note_alone(1e-4, 100, REACH)
    assert unlike.note_on_pool("processes", 2e-4, 500, REACH) is None, "5x the items: not a comparable call"
    other_items = SideBySide()
    other_items.note_alone(1e-4, 500, REACH)
    assert other_items.note_on_pool("processes", MOST * 1.01e-4, 500, REACH) is None, "other items, not slowed ones"
    far_dearer_loop = SideBySide()
    far_dearer_loop.note_on_pool("processes", 1e-4, 500, REACH)
    assert far_dearer_loop.note_alone(FASTEST * 1.01e-4, 500, REACH) == {}, "no cache makes items that much faster"
    assert not (apart.factors or unlike.factors or other_items.factors or far_dearer_loop.factors)


def test_a_factor_within_noise_is_kept_as_none_and_a_known_one_is_smoothed() -> None:
    s = SideBySide()
    s.note_alone(1e-4, 500, REACH)
    s.note_on_pool("processes", 1e-4 * (SHOWS - 0.01), 500, REACH)
    assert s.factors == {"processes": 1.0}, "measured, and no slowdown: it is known, so no check is planned"
    faster = SideBySide()
    faster.note_alone(1e-4, 500, REACH)
    faster.note_on_pool("processes", 0.8e-4, 500, REACH)
    assert faster.factor("processes") == pytest.approx(0.8), "items faster there (in a worker's cache) count too"
    s.note_on_pool("threads", 2e-4, 500, REACH)
    s.note_alone(1e-4, 500, REACH)
    assert s.factor("threads") == pytest.approx(SMOOTHING * 2.0 + (1 - SMOOTHING) * 2.0)
    moved = s.note_on_pool("threads", 1.5e-4, 500, REACH)
    assert s.factor("threads") == pytest.approx(SMOOTHING * 1.5 + (1 - SMOOTHING) * 2.0)
    assert moved == pytest.approx(s.factor("threads") / 2.0)


@pytest.mark.parametrize(("gain", "due"), [(1.3, True), (1.0, True), (CHECK_BELOW, False), (0.9, False),
                                           (None, False)])
def test_a_check_is_due_only_for_a_small_measured_gain(gain: float | None, due: bool) -> None:
    s = SideBySide()
    s.note_on_pool("processes", 1e-3, 1000, REACH)
    assert s.check_due("processes", gain, 1000, REACH) is due
    assert not s.check_due("threads", gain, 1000, REACH), "no reading on that pool"


def test_no_check_once_checked_known_or_too_dear() -> None:
    s = SideBySide()
    s.note_on_pool("processes", 1e-3, 1000, REACH)
    s.checked["processes"] = 1
    assert s.check_due("processes", 1.3, 1000, REACH), "one that read nothing (other programs' load) is tried again"
    s.checked["processes"] = CHECK_TRIES
    assert not s.check_due("processes", 1.3, 1000, REACH)
    dear = SideBySide()
    dear.note_on_pool("processes", 1.0, 100, REACH)  # 100 s of serial work to save 23 s: not worth a check
    assert not dear.check_due("processes", 1.3, 100, REACH)
    known = SideBySide()
    known.note_alone(1e-3, 1000, REACH)
    known.note_on_pool("processes", 1e-3, 1000, REACH)
    assert not known.check_due("processes", 1.3, 1000, REACH)


def test_a_factor_corrects_the_verdicts_measured_without_it_and_a_new_cost_forgets_it() -> None:
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, Facts(1e-4, 1.0, 40, "", None, verdicts={"threads": (1.5, 500)},
                                                threads_speedup=1.5))
    planner.knowledge.observe_on_pool(tasks.square, "threads", 1.5e-4, 500)
    planner.knowledge.observe_alone(tasks.square, 1e-4, 500)
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None
    assert facts.verdicts["threads"][0] == pytest.approx(1.0)
    assert facts.threads_speedup == pytest.approx(1.0)
    planner.knowledge.observe(tasks.square, 1e-2, n_items=500)  # 100x dearer: other items
    assert facts.side_by_side == SideBySide()


def test_the_record_takes_the_factor_off_its_pool_items_only() -> None:
    def estimate(contention: float) -> float:
        rec = RecordBuilder(1, "w", "auto", None, 30, 0, 0.0)
        rec.selected, rec.workers, rec.contention = "processes", 2, contention
        for i, where in enumerate(("caller", "pool", "pool")):
            rec.add(ChunkOutcome(i, i * 10, [0] * 10, 1_000, 1_000 + 10_000_000, 10_000_000,
                                 array("q", [10_000_000]), array("q", [10]), f"w{i}"), where, 0)
        return rec.build().serial_estimate_seconds

    # the caller's chunk (its items ran before the pool's, alone) stays whole
    assert estimate(1.25) == pytest.approx(0.01 + 0.02 / 1.25)
    assert estimate(1.0) == pytest.approx(0.03)


def test_a_serial_call_next_to_a_pool_call_gives_the_factor_later_records_carry() -> None:
    planner = planning.Planner()
    cfg = ParallelConfig(strategy="auto", max_workers=2)
    items = list(range(400))
    with ParallelExecutor(ParallelConfig(strategy="serial"), planner=planner, observers=[]) as loop, \
            ParallelExecutor(cfg, planner=planner, observers=[]) as ex:
        loop.map(tasks.spin, items)
        ex.map(tasks.spin, items)
        pooled = ex.last_record
        facts = planner.knowledge.snapshot(tasks.spin)
        ex.map(tasks.spin, items)
        later = ex.last_record
    assert facts is not None and pooled is not None and later is not None
    assert pooled.selected_strategy == "processes", pooled.fallback_detail
    readings = facts.side_by_side
    if planning._met_outside_load(pooled):  # beside other programs (the suite's other worker): no reading
        assert "processes" not in readings.on_pool and not readings.factors
        return
    assert readings.alone is not None and "processes" in readings.on_pool
    ratio = readings.on_pool["processes"].seconds_per_item / readings.alone.seconds_per_item
    if not 1 / FASTEST <= ratio <= MOST:
        pytest.fail(f"a loop and a pool of the same items read {ratio:.1f}x apart")
    assert readings.factor("processes") == pytest.approx(1.0 if 1 / SHOWS < ratio < SHOWS else ratio)
    assert pooled.contention == 1.0, "the call that read it was planned before"
    if later.selected_strategy == "processes":
        assert later.contention == readings.factor("processes")


def test_a_small_gain_is_checked_once_serially_without_a_fallback_warning() -> None:
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin, Facts(7e-5, 1.0, 40, "", None, verdicts={"processes": (1.3, 400)},
                                              result_error="", side_by_side=SideBySide(
                                                  on_pool={"processes": Reading(8e-5, 400, 1)}, seq=1)))
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planner, observers=[]) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("error")  # a check is a decision, not a fallback: no warning
        assert ex.map(tasks.spin, range(400)) == [tasks.spin(x) for x in range(400)]
        checked = ex.last_record
        facts = planner.knowledge.snapshot(tasks.spin)
    assert checked is not None and facts is not None
    assert (checked.selected_strategy, checked.decision_reason) == ("serial", Reason.AUTO_SERIAL_CHECK)
    assert not checked.fell_back and checked.fallback_reason is None
    assert "to time its items alone" in checked.summary()
    readings = facts.side_by_side
    if planning._met_outside_load(checked) or not readings.on_pool:  # beside other programs: it read nothing
        assert readings.alone is None and not readings.factors
        return
    assert readings.alone is not None and readings.checked == {"processes": 1}
    ratio = 8e-5 / readings.alone.seconds_per_item
    if 1 / FASTEST <= ratio <= MOST:
        assert readings.factors["processes"] == pytest.approx(1.0 if 1 / SHOWS < ratio < SHOWS else ratio)
        verdict = facts.verdicts["processes"][0]
        assert verdict == pytest.approx(1.3 / readings.factors["processes"])
        assert not readings.check_due("processes", verdict, 400, REACH), "the factor is known: no more checks"


@pytest.mark.parametrize("runq_share", [0.0, 0.5])
def test_a_call_that_waited_for_a_cpu_teaches_no_reading(runq_share: float) -> None:
    """A loop's items are read without their waits for a CPU, a pool's estimate adds what other programs took:
    beside other programs' load the two readings are not of the same thing."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, Facts(1e-3, 1.0, 40, "", None))
    rec = RecordBuilder(1, "w", "auto", None, 100, 0, 0.0)
    outcome = ChunkOutcome(0, 0, [0] * 100, 1_000, 1_000 + 100_000_000, 100_000_000, array("q", [100_000_000]),
                           array("q", [100]), "w0")
    outcome.runq_ns = int(runq_share * 100_000_000)
    rec.add(outcome, "caller", 0)
    planner.learn(rec.build(), tasks.square)
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None
    assert (facts.side_by_side.alone is None) is bool(runq_share)


MS = 1_000_000


def _loop_record() -> MapRecord:
    """100 items of 1 ms run in the caller."""
    now = time.monotonic_ns()
    rec = RecordBuilder(1, "w", "auto", None, 100, now - 101 * MS, 0.0)
    rec.add(ChunkOutcome(0, 0, [0] * 100, now - 100 * MS, now, 100 * MS, array("q", [100 * MS]),
                         array("q", [100]), "caller"), "caller", 0)
    return rec.build()


def _pool_record(decision: Reason = Reason.AUTO_CPU_BOUND) -> MapRecord:
    """The same 100 items at 1.25 ms each side by side on 2 worker processes, in 96 ms: it reads 1.30x."""
    now = time.monotonic_ns()
    rec = RecordBuilder(2, "w", "auto", None, 100, now - 96 * MS, 0.0)
    rec.selected, rec.workers, rec.decision = "processes", 2, decision
    for i in range(2):
        rec.add(ChunkOutcome(i, i * 50, [0] * 50, now - 95 * MS, now - 95 * MS + 62_500_000, 62_500_000,
                             array("q", [62_500_000]), array("q", [50]), f"w{i}"), "pool", now - 96 * MS)
    return rec.build()


@pytest.mark.parametrize("order", [("loop", "pool"), ("pool", "loop")])
def test_the_verdict_is_corrected_whichever_call_came_first(order: tuple[str, str]) -> None:
    """The review's finding 4: with the loop first, the pool call's own verdict was stored at its raw 1.30x after
    the factor it completed had corrected the older ones; the other order stored 1.04x."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, Facts(1e-3, 1.0, 40, "", None, result_error=""))
    for what in order:
        planner.learn(_loop_record() if what == "loop" else _pool_record(), tasks.square)
        time.sleep(0.05)  # the second call ends after the first: not beside it
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None
    assert facts.side_by_side.factor("processes") == pytest.approx(1.25)
    assert facts.verdicts["processes"][0] == pytest.approx(1.3 / 1.25, rel=0.01)


def test_a_call_whose_head_ran_here_before_it_outgrew_its_estimate_is_no_pool_reading() -> None:
    """Finding 5: its items were read over the head run alone and the rest run side by side."""
    planner = planning.Planner()
    planner.knowledge.teach(tasks.square, Facts(1e-3, 1.0, 40, "", None, result_error=""))
    planner.learn(_loop_record(), tasks.square)
    time.sleep(0.05)
    planner.learn(_pool_record(Reason.AUTO_OUTGREW_ESTIMATE), tasks.square)
    facts = planner.knowledge.get(tasks.square)
    assert facts is not None and not facts.side_by_side.on_pool and not facts.side_by_side.factors


def _taught_small_gain(planner: planning.Planner, n: int = 400) -> None:
    planner.knowledge.teach(tasks.spin, Facts(7e-5, 1.0, 40, "", None, verdicts={"processes": (1.3, n)},
                                              result_error="", side_by_side=SideBySide(
                                                  on_pool={"processes": Reading(8e-5, n, 1)}, seq=1)))


def test_a_stream_of_no_known_end_is_never_the_check() -> None:
    """Finding 1: an imap over a generator planned as the check ran all its 20,000 items here (an endless one
    would never have left the caller)."""
    planner = planning.Planner()
    _taught_small_gain(planner, 1000)
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planner, observers=[]) as ex:
        assert list(ex.imap(tasks.spin, (i for i in range(3000)))) == [tasks.spin(i) for i in range(3000)]
        record = ex.last_record
    assert record is not None and record.decision_reason is not Reason.AUTO_SERIAL_CHECK


def test_calls_beside_each_other_are_not_checked_and_spend_no_try() -> None:
    """Finding 2: two calls at once were both planned as the check, both read nothing (crowded), and the two
    tries were spent: the function was never checked."""
    planner = planning.Planner()
    _taught_small_gain(planner)
    decisions: list[Reason] = []
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planner, observers=[]) as ex:
        together = threading.Barrier(2)

        def call() -> None:
            together.wait()
            record = ex.map(tasks.spin, range(400)) and ex.last_record
            assert record
            decisions.append(record.decision_reason)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    facts = planner.knowledge.get(tasks.spin)
    assert facts is not None
    assert decisions.count(Reason.AUTO_SERIAL_CHECK) <= 1
    assert facts.side_by_side.checked.get("processes", 0) < CHECK_TRIES
