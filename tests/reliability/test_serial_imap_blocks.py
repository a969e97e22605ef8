"""A serial ``imap`` times one item of each block and runs the rest through ``map`` untimed.

Timing every item of a stream (two clock reads, ~100 ns each on this VM, and its bookkeeping) made a
serial ``imap`` of trivial items 15 times as slow as the builtin ``map``. The rest of a block runs with no
clock read, each item still read only when its result is asked for; what raised inside such a block
(``fn``, ``fn``'s StopIteration, the input) and where the consumer left must come out exactly as with
items timed one by one. No assertion here is on a duration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor
from payoff.worker import RAISED_BY, STOP_ITERATION_MESSAGE
from tests.tasks import stream_breaking_at

N = 1000
POSITIONS = [0, 1, 2, 40, 700]
"""The timed first item, the first untimed ones, and items deep in later blocks."""


def test_a_serial_imap_of_trivial_items_reads_the_clock_for_few_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = 0
    real = time.perf_counter_ns

    def counted() -> int:
        nonlocal reads
        reads += 1
        return real()

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        monkeypatch.setattr(time, "perf_counter_ns", counted)
        got = list(ex.imap(abs, stream_breaking_at(20_000)))
        monkeypatch.undo()
        record = ex.last_record
    assert got == list(range(20_000))
    assert reads < 20_000 // 4, f"{reads} clock reads for 20,000 items"
    assert record is not None and sum(c.n_items for c in record.chunks) == 20_000
    assert all(sum(c.block_sizes) == c.n_items and all(d > 0 for d in c.durations_ns) for c in record.chunks)


def _fails_at(p: int) -> Any:
    def fn(x: int) -> int:
        if x == p:
            raise ValueError(f"item {x} broke")
        return x * 2
    return fn


def _stops_at(p: int) -> Any:
    def fn(x: int) -> int:
        if x == p:
            raise StopIteration
        return x * 2
    return fn


def _doubled(x: int) -> int:
    return x * 2


def _taken_until_it_raises(results: Iterator[int], got: list[int]) -> Exception:
    try:
        for result in results:
            got.append(result)
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


@pytest.mark.parametrize("p", POSITIONS)
@pytest.mark.parametrize("kind", ["fn_raises", "fn_stops", "input_raises"])
def test_what_raised_inside_a_block_comes_out_after_the_results_before_it(kind: str, p: int) -> None:
    fn = {"fn_raises": _fails_at(p), "fn_stops": _stops_at(p), "input_raises": _doubled}[kind]
    got: list[int] = []
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        error = _taken_until_it_raises(ex.imap(fn, stream_breaking_at(N, p if kind == "input_raises" else None)), got)
        record = ex.last_record
    assert got == [x * 2 for x in range(p)], "every result before the error, and none after"
    if kind == "input_raises":
        assert isinstance(error, LookupError) and str(error) == f"the input broke at {p}"
    else:
        assert isinstance(error, ValueError if kind == "fn_raises" else RuntimeError)
        assert kind == "fn_raises" or str(error) == STOP_ITERATION_MESSAGE
        assert any(note.startswith(f"{RAISED_BY}{p} of the map") for note in error.__notes__)
    assert record is not None and sum(c.n_items for c in record.chunks) == p


@pytest.mark.parametrize("p", [1, 2, 3, 41, 701])
def test_a_consumer_that_leaves_inside_a_block_has_the_items_it_took_recorded(p: int) -> None:
    stream = stream_breaking_at(N)
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        it = ex.imap(_doubled, stream)
        got = [next(it) for _ in range(p)]
        it.close()
        record = ex.last_record
    assert got == [x * 2 for x in range(p)]
    assert next(stream) == p, "nothing was read past the last result taken"
    assert record is not None and sum(c.n_items for c in record.chunks) == p
    assert sum(sum(c.block_sizes) for c in record.chunks) == p


@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 257, 5000])
def test_a_stream_that_ends_anywhere_in_a_block_gives_all_its_results(n: int) -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        got = list(ex.imap(_doubled, stream_breaking_at(n)))
        record = ex.last_record
    assert got == [x * 2 for x in range(n)]
    assert record is not None and sum(c.n_items for c in record.chunks) == n and record.outcome == "ok"


@pytest.mark.parametrize("p", [1, 3, 41])
def test_an_exception_thrown_into_the_results_inside_a_block_is_the_consumers_not_the_inputs(p: int) -> None:
    """``throw()`` into an imap's results (a consumer giving up with an error of its own) inside an untimed
    block was taken for an error of the input: the record read ``error`` instead of the consumer's leaving."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        it = ex.imap(_doubled, stream_breaking_at(N))
        got = [next(it) for _ in range(p)]
        with pytest.raises(KeyError, match="the consumer's own"):
            it.throw(KeyError("the consumer's own"))
        record = ex.last_record
    assert got == [x * 2 for x in range(p)]
    assert record is not None and record.outcome == "cancelled", record.outcome
    assert sum(c.n_items for c in record.chunks) == p
