"""A numpy array as the input: its rows (or elements) are the items, as ``map`` over it reads them.

Read as a list, a 2-D array became one view object per row (2 M rows: +270 MB
over a loop), and chunks of those views pickled row by row: 100,000 rows of
20 floats took 2.9 s to pickle against 0.05 s as one array, so a named
``processes`` map ran 6-13x slower than the loop. The array is now sliced as
given (``payoff.worker.ArrayRows``): a chunk travels as one array.
"""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}
STRATEGIES = ["serial", "threads", "processes", "joblib", "auto"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", [(601,), (601, 7), (301, 3, 2)])
def test_an_arrays_items_give_a_loops_results(strategy: str, shape: tuple[int, ...]) -> None:
    arr = np.arange(int(np.prod(shape)), dtype=float).reshape(shape)
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        assert ex.map(tasks.row_score, arr) == list(map(tasks.row_score, arr))
        assert list(ex.imap(tasks.row_score, arr)) == list(map(tasks.row_score, arr))
        assert ex.map(tasks.row_kind, arr)[:1] == [tasks.row_kind(arr[0])] or strategy in ("processes", "joblib")
        record = ex.last_record
    assert record is not None and record.n_items == shape[0]


def test_several_iterables_with_arrays_zip_up_to_the_shortest() -> None:
    xs, ys = np.arange(50.0), list(range(40))
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        assert ex.map(pow, xs, ys) == list(map(pow, xs, ys))


@pytest.mark.parametrize("arr", [np.zeros((0, 3)), np.zeros(0)])
def test_an_empty_array_is_an_empty_input(arr: np.ndarray) -> None:
    with ParallelExecutor(ParallelConfig(strategy="processes", **FORCE)) as ex:
        assert ex.map(tasks.row_score, arr) == []


def test_a_zero_dimensional_array_is_refused_as_the_builtin_refuses_it() -> None:
    with pytest.raises(TypeError) as loop:
        list(map(abs, np.array(3.0)))
    with ParallelExecutor() as ex, pytest.raises(TypeError) as ours:
        ex.map(abs, np.array(3.0))
    assert "0-d" in str(loop.value) and "0-d" in str(ours.value)


def test_chunks_of_rows_travel_as_arrays() -> None:
    """The bytes sent for a processes map of 20,000 rows of 20 floats are the array's own (3.2 MB), not a pickle
    per row: each row pickled as its own view added ~25 bytes to its 160 (+16%, 3.70 MB), and took the caller
    0.20-0.28 s of serialization against 0.006-0.008 s for the same call's chunks as arrays."""
    arr = np.random.default_rng(1).random((20_000, 20))
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        out = ex.map(tasks.row_score, arr)
        record = ex.last_record
    assert out == list(map(tasks.row_score, arr))
    assert record is not None and record.selected_strategy == "processes"
    assert arr.nbytes <= record.bytes_sent < 1.05 * arr.nbytes, record.bytes_sent


def test_a_serial_map_of_rows_makes_no_view_per_row_up_front() -> None:
    """Python memory at the peak of a serial map over 200,000 rows: the results (a list of floats, ~6.4 MB) and
    a row at a time, as in a loop, not a list of 200,000 views first (+~22 MB)."""
    arr = np.random.default_rng(2).random((200_000, 4))
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.row_kind, arr[:10])  # warm: imports and the planner's first look
        tracemalloc.start()
        try:
            out = ex.map(float.__abs__, arr[:, 0])
            base = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            loop = list(map(np.sum, arr))
            looped = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            del loop
            ours = ex.map(np.sum, arr)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(out) == len(ours) == 200_000 and base > 0
    assert peak < 1.5 * looped, (peak, looped)


def test_several_arrays_zipped_are_priced_as_they_travel(monkeypatch: pytest.MonkeyPatch) -> None:
    """``map(fn, X, Y)`` over two arrays sends a chunk as the two arrays' slices, but the planner priced it as a
    list of row-view tuples: 474 bytes an item for 320 (two rows of 20 floats), and pickling timed 20x dearer
    (3.9 us an item for 0.19 us)."""
    from payoff import _payload
    from payoff._item_size import first_item_bytes
    from payoff.worker import ArrayRows, Zipped

    rng = np.random.default_rng(3)
    xs, ys = rng.random((2_000, 20)), rng.random((2_000, 20))
    zipped = Zipped([ArrayRows(xs), ArrayRows(ys)])
    assert first_item_bytes(zipped) == 2 * 20 * 8
    assert first_item_bytes(Zipped([ArrayRows(xs), list(range(2_000))])) is None  # a list column: pickling tells
    timed: list[type] = []
    real = _payload._dumps_loads
    monkeypatch.setattr(_payload, "_dumps_loads", lambda obj: (timed.append(type(obj)), real(obj))[1])
    _payload._time_pickling(zipped[:100], [1.0] * 100)
    assert timed[1] is Zipped, timed  # [0] is the empty list taken off
    sent = len(pickle.dumps(zipped[:1_000], protocol=pickle.HIGHEST_PROTOCOL))
    assert 1_000 * 320 <= sent < 1_000 * 330


def test_a_map_over_two_arrays_sends_the_arrays_bytes() -> None:
    rng = np.random.default_rng(4)
    xs, ys = rng.random((10_000, 20)), rng.random((10_000, 20))
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        out = ex.map(tasks.rows_dot, xs, ys)
        record = ex.last_record
    assert out == list(map(tasks.rows_dot, xs, ys))
    assert record is not None and record.selected_strategy == "processes"
    assert xs.nbytes + ys.nbytes <= record.bytes_sent < 1.05 * (xs.nbytes + ys.nbytes), record.bytes_sent


def test_an_item_holding_a_large_array_is_weighed_without_copying_it() -> None:
    """``(array, i)`` items: the planner pickled the first one whole to weigh it, 80 MB copied on every call
    (42-72 ms of planning for a call kept serial; data-science trial). The array's buffer is sized where it lies."""
    from payoff._payload import pickled_size

    big = np.zeros((1_000, 1_000))  # 8 MB
    tracemalloc.start()
    try:
        size = pickled_size((big, 7))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert big.nbytes <= size < big.nbytes + 1_000
    assert peak < big.nbytes // 10, peak


def test_items_of_another_kind_are_timed_again_at_a_like_size() -> None:
    """Rows as lists of numpy scalars, then as an array: alike in pickled size, 600x apart in pickling time. The
    array call was priced at the lists' cost and kept serial as ``payload_too_large`` on every later call (advice
    trial: "batch tiny items into larger ones (arrays)" then did nothing in that process)."""
    from payoff import planning

    planner = planning.Planner()
    rows = np.random.default_rng(0).random((20_000, 20))
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planner) as ex:
        ex.map(tasks.row_score, [list(r) for r in rows])
        as_lists = planner.knowledge.snapshot(tasks.row_score)
        ex.map(tasks.row_score, rows)
        as_array = planner.knowledge.snapshot(tasks.row_score)
    assert as_lists is not None and as_lists.pickling.item_kind == "list[float64]", as_lists
    assert as_array is not None and as_array.pickling.item_kind == "ndarray", as_array
