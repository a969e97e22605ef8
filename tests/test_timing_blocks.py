"""How a chunk's items are grouped into timing blocks: cheap to measure, honest to read."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Sequence
from typing import overload

import pytest

from payoff import ParallelConfig, ParallelExecutor, worker
from payoff.worker import (
    BLOCK_GROWTH,
    BLOCK_TARGET_NS,
    FREE_BLOCK_TARGET_NS,
    MAX_BLOCK,
    CancelToken,
    ChunkOutcome,
    ListTail,
    run_chunk,
)
from tests import tasks


def _cheap(x: int) -> int:
    return -x


def _nap(x: int) -> int:
    time.sleep(0.002)
    return x


def test_trivial_items_run_their_rest_as_one_unbounded_block() -> None:
    """A bounded block costs cheap items an extra iterator layer each; the rest of such a chunk runs in one.

    The tail starts once the rest is at most 8x the items done and fits in
    50 ms at their measured cost, so the last block holds most of the items
    even where a busy machine makes them 10x slower than the usual ~40 ns.
    """
    items = list(range(100_000))
    outcome = run_chunk(_cheap, items, 0, 0)
    assert outcome.results == [-x for x in items]
    assert sum(outcome.block_sizes) == len(items)
    assert outcome.block_sizes[-1] > len(items) // 2, list(outcome.block_sizes)


def test_no_block_outgrows_the_items_measured_before_it() -> None:
    """Items that turn dear can only stretch a block as far as BLOCK_GROWTH times what was already measured."""
    outcome = run_chunk(_cheap, list(range(1_000_000)), 0, 0)
    done = 0
    for size in outcome.block_sizes:
        assert size <= BLOCK_GROWTH * max(1, done), list(outcome.block_sizes)
        done += size
    assert done == 1_000_000


def test_items_dearer_than_a_microsecond_keep_short_blocks() -> None:
    """Each block of 2 ms items holds one item, so per-item percentiles and cancel checks stay fine-grained."""
    outcome = run_chunk(_nap, list(range(12)), 0, 0)
    assert list(outcome.block_sizes) == [1] * 12


class _ItemClock:
    """``perf_counter_ns`` for the worker that moves only when an item runs, by that item's cost: block sizes
    then follow from the rules alone, with no real timing in the test."""

    def __init__(self) -> None:
        self.now = 0

    def item(self, cost_ns: int) -> types.FunctionType:
        def run(x: int) -> int:
            self.now += cost_ns
            return x
        return run  # type: ignore[return-value]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
        fake.perf_counter_ns = lambda: self.now
        monkeypatch.setattr(worker, "time", fake)


@pytest.mark.parametrize("budget_ns", [None, 10**12])
def test_a_run_without_a_budget_times_cheap_items_in_longer_blocks(monkeypatch: pytest.MonkeyPatch,
                                                                   budget_ns: int | None) -> None:
    """A serial run's bookkeeping runs cold after its items' work: it reads the clock per ~1 ms of them. A
    chunk with a budget stops at the first block past it, so it keeps blocks of ~250 us."""
    clock = _ItemClock()
    clock.install(monkeypatch)
    cost = 50_000
    outcome = run_chunk(clock.item(cost), list(range(400)), 0, 0, budget_ns=budget_ns)
    assert outcome.results == list(range(400))
    target = FREE_BLOCK_TARGET_NS if budget_ns is None else BLOCK_TARGET_NS
    assert max(outcome.block_sizes) == target // cost, list(outcome.block_sizes)


@pytest.mark.parametrize("budget_ns", [None, 10**12])
def test_items_dearer_than_the_short_target_are_timed_alone_either_way(monkeypatch: pytest.MonkeyPatch,
                                                                      budget_ns: int | None) -> None:
    """Per-item histograms of both exporters agree on such items only when each is its own block."""
    clock = _ItemClock()
    clock.install(monkeypatch)
    outcome = run_chunk(clock.item(BLOCK_TARGET_NS + 1), list(range(30)), 0, 0, budget_ns=budget_ns)
    assert list(outcome.block_sizes) == [1] * 30


def test_a_cancelled_chunk_of_cheap_items_stops_at_its_next_block() -> None:
    token = CancelToken()
    token.set()
    outcome = run_chunk(_cheap, list(range(1_000_000)), 0, 0, token)
    assert 0 < outcome.n_done < 1_000_000  # the first block ran, then the token was seen


def test_an_error_in_the_tail_block_keeps_the_items_before_it() -> None:
    def fail_late(x: int) -> int:
        if x == 150_000:
            raise ValueError("late")
        return x

    outcome = run_chunk(fail_late, list(range(200_000)), 0, 0)
    assert isinstance(outcome.error, ValueError)
    assert outcome.error_index == 150_000
    assert outcome.results == list(range(150_000))
    assert sum(outcome.block_sizes) == 150_000



def test_a_list_that_fn_grows_is_mapped_over_its_length_at_the_call() -> None:
    """The tail runs the list's own iterator, which would go on into items appended while it runs."""
    items = list(range(20))

    def visit(x: int) -> int:
        if len(items) < 1000:
            items.append(x)
        return x

    outcome = run_chunk(visit, items, 0, 0)
    assert outcome.results == list(range(20))
    assert sum(outcome.block_sizes) == 20


class _Squares(Sequence[int]):
    """A sequence whose ``__getitem__`` never raises IndexError: its iterator never ends, only ``len`` does."""

    def __len__(self) -> int:
        return 20

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return [x * x for x in range(20)[i]]
        return i * i


def test_a_sequence_is_mapped_over_its_length_not_its_iterator() -> None:
    done: list[ChunkOutcome] = []
    thread = threading.Thread(target=lambda: done.append(run_chunk(_cheap, _Squares(), 0, 0)), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "run_chunk followed the iterator past len()"
    assert done[0].results == [-(x * x) for x in range(20)]


def _cheap_then_dear(x: int) -> int:
    if x < 70_000:
        return -x
    total = 0
    for i in range(400):
        total += i
    return total


def test_a_deadline_is_checked_in_bounded_blocks_when_cheap_items_turn_dear() -> None:
    """With a deadline there is no unbounded tail: ~3 s of dear items after 70,000 cheap ones stop early."""
    outcome = run_chunk(_cheap_then_dear, list(range(500_000)), 0, 0, CancelToken(time.monotonic() + 0.3))
    assert outcome.n_done < 500_000
    assert max(outcome.block_sizes) <= MAX_BLOCK


def test_the_rest_of_a_list_after_its_probe_runs_without_a_copy() -> None:
    """A serial call's items after the probe are a view of the caller's list, run like the list itself."""
    items = list(range(100_000))
    rest = ListTail(items, 4096)
    assert len(rest) == 100_000 - 4096 and rest[0] == 4096 and rest[-1] == 99_999
    assert list(rest[10:13]) == [4106, 4107, 4108]
    outcome = run_chunk(abs, rest, 4096, 1)
    assert outcome.results == items[4096:]
    assert outcome.block_sizes[-1] > len(rest) // 2, "trivial items still run their rest as one plain map"


def test_the_rest_of_a_list_is_read_by_the_lists_own_iterator() -> None:
    """No layer between ``map`` and the list: an ``islice`` skipping the probed items added ~3 ns to each of
    a million trivial items (7% of the loop they stood in for)."""
    items = list(range(10))
    for lo in (0, 4, 10, 12):
        it = iter(ListTail(items, lo))
        assert type(it) is type(iter(items)) and list(it) == items[lo:]


def test_an_error_after_the_probe_names_its_position_in_the_call() -> None:
    outcome = run_chunk(tasks.fail_on_seven, ListTail(list(range(20)), 4), 4, 1)
    assert outcome.error is not None and outcome.error_index == 7 and outcome.results == [4, 5, 6]


def test_a_serial_call_after_its_probe_gives_every_result_in_order() -> None:
    # a threshold far above this work keeps the call serial after its probe however slow the machine is today
    with ParallelExecutor(ParallelConfig(tiny_workload_threshold=10.0)) as ex:
        out = ex.map(tasks.negate, list(range(20_000)))
        record = ex.last_record
    assert out == [-x for x in range(20_000)]
    assert record is not None and record.selected_strategy == "serial" and record.probe_items > 0


def test_an_outcome_travels_whole_with_its_timing_blocks_and_its_error() -> None:
    """What a worker sends back for a chunk is rebuilt field for field, the timing arrays as arrays, a streamed
    chunk's count too: the parent records and plans from every one of them."""
    import pickle
    from array import array
    from dataclasses import fields

    from payoff.worker import StreamedOutcome

    def boom(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        return tasks.spin(x, n=50)

    sent = run_chunk(boom, list(range(10)), 100, 3)
    sent.error_traceback, sent.fn_bytes_loaded, sent.bytes_sent = "Traceback ...", 12, 34
    got = pickle.loads(pickle.dumps(sent))
    assert type(got) is ChunkOutcome and type(got.durations_ns) is array and type(got.block_sizes) is array
    for f in fields(ChunkOutcome):
        if f.name != "error":
            assert getattr(got, f.name) == getattr(sent, f.name), f.name
    assert got.results == [tasks.spin(x, n=50) for x in range(7)] and sum(got.block_sizes) == 7
    assert isinstance(got.error, ValueError) and got.error.args == ("seven",) and got.error_index == 107
    streamed = StreamedOutcome(**{f.name: getattr(sent, f.name) for f in fields(ChunkOutcome)}, count=7)
    again = pickle.loads(pickle.dumps(streamed))
    assert type(again) is StreamedOutcome and again.count == 7 and again.durations_ns == sent.durations_ns


@pytest.mark.parametrize("tail_in_budget", [False, True])
def test_a_serial_run_that_may_outgrow_keeps_trivial_items_unbounded_rest(tail_in_budget: bool) -> None:
    """A budget bounds every block (each through ``islice``); a serial run that may outgrow its estimate still
    runs trivial items' rest as one block when, at their measured cost, it ends well within the budget."""
    items = list(range(100_000))
    outcome = run_chunk(_cheap, items, 0, 0, budget_ns=10**12, tail_in_budget=tail_in_budget)
    assert outcome.results == [-x for x in items]
    assert (outcome.block_sizes[-1] > len(items) // 2) is tail_in_budget, list(outcome.block_sizes)


def test_a_rest_that_would_overrun_the_budget_stays_in_bounded_blocks() -> None:
    outcome = run_chunk(_cheap, list(range(100_000)), 0, 0, budget_ns=1, tail_in_budget=True)
    assert outcome.n_done < 100_000  # the first block ended past a budget of 1 ns: the chunk handed back the rest
