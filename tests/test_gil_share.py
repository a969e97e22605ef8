"""CPU-bound items that let the GIL go are tried on threads, read by the GIL sampler while the probe runs them.

A numpy bootstrap ran at 179-223 ms on auto's processes where ``ThreadPoolExecutor()`` took 88-114 ms
(trial 47, F3): auto never tried threads for picklable CPU-bound work, whatever the items did with the GIL.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from payoff import ParallelExecutor, Reason, _gil_share, _gil_wait, planning
from payoff._gil_wait import SAMPLE_SLEEP_SECONDS
from payoff._knowledge import PACES_KEPT, Facts, Knowledge, pace_for
from tests import tasks
from tests.reliability.test_forks_and_exit import _in_a_forked_child

pytestmark = pytest.mark.skipif(not _gil_wait._COUNTED, reason="no per-thread voluntary waits on this platform")

_SIGNAL = np.random.default_rng(2).standard_normal(2 ** 19)


def spectrum_peak(seed: int) -> float:
    """numpy's FFT of half a million points: a few ms with the GIL let go nearly all of it."""
    return float(np.abs(np.fft.rfft(_SIGNAL * (1 + seed))).max())


def python_sum(seed: int) -> int:
    """Pure Python: it holds the GIL but for the switch interval's handovers."""
    total = 0
    for i in range(60_000):
        total += i * seed
    return total


def _sampler_with(samples: list[tuple[int, int, int]]) -> _gil_wait._Sampler:
    sampler = _gil_wait._Sampler()
    sampler._samples.extend(samples)
    return sampler


MS = 1_000_000
SLEEP = int(SAMPLE_SLEEP_SECONDS * 1e9)


def test_only_wake_ups_begun_in_the_window_are_read() -> None:
    """One begun before the window waited for whatever held the GIL then (payoff's own Python before the
    probe's items), not for the items: it is left out."""
    sampler = _sampler_with([
        (100 * MS + SLEEP // 2, 0, 9),  # begun half a sleep before the window
        (102 * MS, 0, 1), (104 * MS, 0, 2), (106 * MS, 0, 1), (108 * MS, 0, 1),
        (200 * MS, 0, 5),  # after it
    ])
    assert sampler.queued_share(100 * MS, 110 * MS, 3) == pytest.approx(0.25)


def test_a_window_of_too_few_wake_ups_reads_nothing() -> None:
    sampler = _sampler_with([(102 * MS, 0, 1), (104 * MS, 0, 1)])
    assert sampler.queued_share(100 * MS, 110 * MS, 3) is None
    assert sampler.queued_share(100 * MS, 110 * MS, 2) == 0.0


def test_threads_are_tried_while_the_workers_together_want_the_gil_three_fifths_of_the_time_at_most() -> None:
    assert _gil_share.threads_may_beat_processes(0.3, 2)
    assert not _gil_share.threads_may_beat_processes(0.35, 2)
    assert not _gil_share.threads_may_beat_processes(0.1, 8)
    assert not _gil_share.threads_may_beat_processes(None, 2)


def test_a_reading_holds_only_the_items_window() -> None:
    """Python held the GIL before the marked part, none in it: the reading is of the marked part."""
    with _gil_share.reading(True) as got:
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            sum(range(200))
        with got.around():
            time.sleep(0.03)
    assert got.share is not None and got.share <= 0.25, got.share


def test_no_reading_is_taken_unless_wanted() -> None:
    with _gil_share.reading(False) as got:
        time.sleep(0.01)
    assert got.share is None


def test_numpy_work_that_lets_the_gil_go_runs_on_threads_from_its_second_call() -> None:
    """The first call runs as before (processes); the second samples the GIL in a longer probe and runs on
    threads; threads' and processes' paces then decide. In a forked child, with a planner of its own: in the
    suite's process, a call another test left open keeps the probe from sampling (``_gil_due``'s ``open_now``),
    and its threads hold the GIL (a full run read no share: 1 of 4 runs)."""
    assert _in_a_forked_child(_numpy_work_runs_on_threads_from_its_second_call) == "ok"


def _numpy_work_runs_on_threads_from_its_second_call() -> str:
    items = list(range(48))
    planner = planning.Planner()
    with ParallelExecutor(planner=planner) as ex:
        assert ex.map(spectrum_peak, items) == [spectrum_peak(i) for i in items]
        first = ex.last_record
        facts = planner.knowledge.get(spectrum_peak)
        assert facts is not None and facts.gil_held is None, "a first call samples nothing"
        assert ex.map(spectrum_peak, items) == [spectrum_peak(i) for i in items]
        second = ex.last_record
    assert first is not None and second is not None
    assert first.decision_reason is not Reason.AUTO_RELEASES_GIL, first.summary()
    facts = planner.knowledge.get(spectrum_peak)
    assert facts is not None and facts.gil_held is not None and facts.gil_held <= 0.3, facts
    assert (second.selected_strategy, second.decision_reason) == ("threads", Reason.AUTO_RELEASES_GIL), \
        second.summary()
    return "ok"


def test_a_first_call_starts_no_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that may be trivial pays no sampler thread and no longer probe on its first call (+110 us a
    first call of 10 items, trial 48)."""
    watched: list[int | None] = []
    real_watch = _gil_wait.watch

    def counted() -> int | None:
        watched.append(real_watch())
        return watched[-1]

    monkeypatch.setattr(_gil_wait, "watch", counted)
    with ParallelExecutor() as ex:
        ex.map(python_sum, range(24))
    assert not watched


def test_pure_python_items_are_never_read_as_letting_the_gil_go() -> None:
    with ParallelExecutor() as ex:
        for _ in range(2):
            ex.map(python_sum, range(96))  # 0.2 s: work enough for a sampled probe
            rec = ex.last_record
            assert rec.decision_reason is not Reason.AUTO_RELEASES_GIL, rec.summary()
    facts = planning.PLANNER.knowledge.get(python_sum)
    assert facts is not None and facts.gil_held is not None and facts.gil_held > 0.3, facts


@pytest.mark.usefixtures("sampler_cannot_start")
def test_a_sampler_that_cannot_start_leaves_the_probe_unread_not_failed() -> None:
    """A process out of threads still plans and runs the call (as before the GIL was read there)."""
    planner = planning.Planner()
    with ParallelExecutor(planner=planner) as ex:
        for _ in range(2):
            assert ex.map(spectrum_peak, range(48)) == [spectrum_peak(i) for i in range(48)]
            assert ex.last_record.decision_reason is not Reason.AUTO_RELEASES_GIL
    facts = planner.knowledge.get(spectrum_peak)
    assert facts is not None and facts.gil_held == _gil_share.GIL_UNREAD, facts
    assert not _gil_wait._SAMPLER._watchers


def test_paces_of_comparable_calls_are_smoothed_and_others_kept_beside_them() -> None:
    """One noisy call does not hand the work to the other side; a call of another cost or size keeps its own
    pace (a cost moving 10x every call cleared them, and processes were never measured beside threads)."""
    knowledge = Knowledge()
    knowledge.teach(tasks.square, Facts(1e-3, 1.0, 40, "", None))
    knowledge.observe_pace(tasks.square, "threads", 4e-4, 1000)
    knowledge.observe_pace(tasks.square, "threads", 6e-4, 1200)  # comparable: averaged
    facts = knowledge.get(tasks.square)
    assert facts is not None
    assert pace_for(facts.paces["threads"], 1000, 1e-3) == pytest.approx(5e-4)
    facts.seconds_per_item = 1e-2  # the items' cost moved 10x: a pace of its own
    knowledge.observe_pace(tasks.square, "threads", 5e-3, 1000)
    assert pace_for(facts.paces["threads"], 1000, 1e-3) == pytest.approx(5e-4)
    assert pace_for(facts.paces["threads"], 1000, 1e-2) == pytest.approx(5e-3)
    assert pace_for(facts.paces["threads"], 100_000, 1e-3) is None  # no call of that size
    for n in (10, 100, 10_000, 100_000, 1_000_000):
        knowledge.observe_pace(tasks.square, "threads", 1e-3, n)
    assert len(facts.paces["threads"]) == PACES_KEPT
