"""A map inside an item of a call asked to run serially is a map inside a loop: it may use a pool (hunt 76).

Under ``strategy="serial"`` or ``enabled=False`` the outer call's items run one after the other in the caller,
as a loop's, and the cores are free; the maps inside them still fell back to serial as ``nested``, and three
experiments of 300 items each ran at the loop's speed, half of what each got alone on 2 cores. Inside an item
that a pool runs (a worker thread, a worker process) a map stays ``nested``: pools never nest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason
from tests import tasks

_FORCED = {"max_workers": 2, "tiny_workload_threshold": 0, "min_batch_size": 1}


@pytest.fixture(scope="module")
def inner() -> Iterator[ParallelExecutor]:
    with ParallelExecutor(ParallelConfig(strategy="processes", **_FORCED)) as ex:
        yield ex


def _inner_map(ex: ParallelExecutor) -> Any:
    def item(x: int) -> tuple[str, Reason | None, int]:
        out = ex.map(tasks.square, range(x, x + 6))
        record = ex.last_record
        assert record is not None
        return record.selected_strategy, record.fallback_reason, sum(out)
    return item


@pytest.mark.parametrize("config", [ParallelConfig(strategy="serial"), ParallelConfig(enabled=False)],
                         ids=["serial", "disabled"])
def test_a_map_inside_an_item_of_a_call_asked_to_run_serially_uses_its_pool(
        inner: ParallelExecutor, config: ParallelConfig) -> None:
    with ParallelExecutor(config) as outer:
        seen = outer.map(_inner_map(inner), range(3))
        assert outer.last_record is not None and outer.last_record.selected_strategy == "serial"
    expected = [sum(i * i for i in range(x, x + 6)) for x in range(3)]
    assert seen == [("processes", None, total) for total in expected], seen


def test_a_map_inside_an_item_a_pools_thread_runs_stays_nested(inner: ParallelExecutor) -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", **_FORCED)) as outer:
        seen = outer.map(_inner_map(inner), range(4))
        assert outer.last_record is not None and outer.last_record.selected_strategy == "threads"
    assert {(strategy, reason) for strategy, reason, _ in seen} == {("serial", Reason.NESTED)}, seen


def test_three_levels_under_a_serial_call_use_one_pool(inner: ParallelExecutor) -> None:
    """The serial call's item maps on threads; a map in one of those threads' items is nested again."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as outer, \
            ParallelExecutor(ParallelConfig(strategy="threads", **_FORCED)) as middle:
        def item(x: int) -> list[tuple[str, Reason | None, int]]:
            return middle.map(_inner_map(inner), range(x, x + 3))

        seen = outer.map(item, range(2))
    assert {(strategy, reason) for row in seen for strategy, reason, _ in row} == {("serial", Reason.NESTED)}, seen


def test_a_serial_call_inside_a_pools_item_keeps_the_maps_inside_it_nested(inner: ParallelExecutor) -> None:
    """A pool's item that runs a serial call: its items are a loop's inside a pool's worker, whose cores the
    pool shares out already; the maps inside them used a pool of their own (review 83)."""
    with ParallelExecutor(ParallelConfig(strategy="threads", **_FORCED)) as outer, \
            ParallelExecutor(ParallelConfig(strategy="serial")) as middle:
        def item(x: int) -> list[tuple[str, Reason | None, int]]:
            return middle.map(_inner_map(inner), range(x, x + 2))

        seen = outer.map(item, range(4))
    assert {(strategy, reason) for row in seen for strategy, reason, _ in row} == {("serial", Reason.NESTED)}, seen
