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


def test_threads_are_tried_while_the_workers_together_want_the_gil_two_fifths_of_the_time_at_most() -> None:
    assert _gil_share.threads_may_beat_processes(0.2, 2)
    assert not _gil_share.threads_may_beat_processes(0.25, 2)  # one queued wake-up of four: 1.21x on threads
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


def test_numpy_work_that_lets_the_gil_go_runs_on_threads_under_auto() -> None:
    items = list(range(24))
    with ParallelExecutor() as ex:
        got = ex.map(spectrum_peak, items)
        rec = ex.last_record
    assert got == [spectrum_peak(i) for i in items]
    facts = planning.PLANNER.knowledge.get(spectrum_peak)
    assert facts is not None and facts.gil_held is not None and facts.gil_held <= 0.25, facts
    assert (rec.selected_strategy, rec.decision_reason) == ("threads", Reason.AUTO_RELEASES_GIL), rec.summary()


def test_pure_python_items_are_never_read_as_letting_the_gil_go() -> None:
    with ParallelExecutor() as ex:
        ex.map(python_sum, range(24))
        rec = ex.last_record
    facts = planning.PLANNER.knowledge.get(python_sum)
    held = None if facts is None else facts.gil_held
    assert held is None or held > 0.25, held
    assert rec.decision_reason is not Reason.AUTO_RELEASES_GIL, rec.summary()


@pytest.mark.usefixtures("sampler_cannot_start")
def test_a_sampler_that_cannot_start_leaves_the_probe_unread_not_failed() -> None:
    """A process out of threads still plans and runs the call (as before the GIL was read there)."""
    planner = planning.Planner()
    with ParallelExecutor(planner=planner) as ex:
        assert ex.map(spectrum_peak, range(8)) == [spectrum_peak(i) for i in range(8)]
    facts = planner.knowledge.get(spectrum_peak)
    assert facts is None or facts.gil_held is None, facts
    assert not _gil_wait._SAMPLER._watchers
