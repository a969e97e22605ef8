"""The timer that ends a serial run's large block at its budget (``payoff._budget_cut``), on real threads."""

from __future__ import annotations

import time
from itertools import islice

import pytest

from payoff import _budget_cut
from payoff.worker import run_chunk


def _sleep_then(x: int) -> int:
    time.sleep(0.005)
    return x


@pytest.mark.parametrize("items", [list(range(100)), tuple(range(100)), range(100)], ids=["list", "tuple", "range"])
def test_the_timer_ends_a_map_over_the_items_own_iterator_after_the_item_it_is_in(items: object) -> None:
    source = iter(items)  # type: ignore[call-overload]
    cut = _budget_cut.arm(source, time.perf_counter_ns() + 20_000_000)
    results = list(map(_sleep_then, islice(source, 100)))
    assert cut.end() is True
    assert 0 < len(results) < 100 and results == list(range(len(results))), "the items before it, in order"
    assert next(source, None) is None, "the iterator stays ended"


def test_a_timer_disarmed_in_time_never_touches_the_iterator() -> None:
    source = iter(list(range(10)))
    cut = _budget_cut.arm(source, time.perf_counter_ns() + 50_000_000)
    assert list(islice(source, 5)) == [0, 1, 2, 3, 4]
    assert cut.end() is False
    time.sleep(0.1)  # past the budget: a disarmed timer stays quiet
    assert list(source) == [5, 6, 7, 8, 9]


def test_a_budgeted_serial_run_whose_large_block_turns_dear_hands_back_what_it_did() -> None:
    """Blocks grow on the cheap head until one covers the dear items; the timer ends it at the budget and the
    chunk returns the items before, no error (the run plans the rest again)."""
    items = [0] * 5_000 + [1] * 200

    def cheap_then_sleepy(x: int) -> int:
        if x:
            time.sleep(0.005)
        return x

    outcome = run_chunk(cheap_then_sleepy, items, 0, 0, budget_ns=20_000_000, tail_in_budget=True)
    assert outcome.error is None
    assert 5_000 <= outcome.n_done < len(items), outcome.n_done
    assert outcome.results == items[:outcome.n_done]
    assert sum(outcome.block_sizes) == outcome.n_done
