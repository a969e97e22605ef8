"""How far an ``imap`` reads its input ahead of the results handed out: bounded in bytes, not only in work.

Chunks of an ``imap`` hold up to 0.1 s of measured work; a cheap function over large items (one element of
each 4 MB array) made that hundreds of items: 536 of 600 read ahead (2.1 GB held) on threads, 595 on
processes, 69 (the probe) under auto (memory trial). A chunk now holds at most ``task_size_hint_bytes`` of
items (at least one), as does the planner's probe of a stream. Counts are read, no time is asserted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor
from payoff._maprun import HELD_CHUNKS_PER_WORKER, in_flight_limit
from tests import tasks

ITEM_BYTES = 256 * 1024
PER_CHUNK = 2
N = 120


class Counted:
    """A generator of arrays that counts what was read."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(N):
            self.read += 1
            yield np.full(ITEM_BYTES // 8, float(i))


@pytest.mark.parametrize("strategy", ["auto", "serial", "threads", "processes", "joblib"])
def test_an_imap_of_large_cheap_items_reads_ahead_a_bounded_number_of_bytes(strategy: str) -> None:
    source = Counted()
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0,
                            task_size_hint_bytes=PER_CHUNK * ITEM_BYTES + 4096)
    ahead = 0
    with ParallelExecutor(config) as ex:
        for i, value in enumerate(ex.imap(tasks.first_element, source)):
            assert value == float(i)
            ahead = max(ahead, source.read - i)
        record = ex.last_record
    assert record is not None and record.n_items == N
    bound = PER_CHUNK * (in_flight_limit(2) + HELD_CHUNKS_PER_WORKER * 2 + 1)  # sent, held for order, handed out
    assert ahead <= bound, f"{record.selected_strategy} read {ahead} items ahead (of {N}); bound {bound}"
    if strategy not in ("auto", "serial"):
        assert record.selected_strategy == strategy and record.n_chunks >= N // PER_CHUNK


def test_a_chunk_of_a_mapped_list_of_arrays_to_processes_holds_at_most_the_task_bytes() -> None:
    """A chunk to a process pool is one pickle: its items' bytes stay under ``task_size_hint_bytes``."""
    items = [np.full(ITEM_BYTES // 8, float(i)) for i in range(40)]
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0,
                            task_size_hint_bytes=PER_CHUNK * ITEM_BYTES + 4096)
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.first_element, items) == [float(i) for i in range(40)]
        record = ex.last_record
    assert record is not None and record.n_chunks >= 40 // PER_CHUNK
    assert max(c.n_items for c in record.chunks) <= PER_CHUNK


def test_a_chunksize_given_is_kept_whatever_its_bytes() -> None:
    items = [np.full(ITEM_BYTES // 8, float(i)) for i in range(12)]
    config = ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0,
                            task_size_hint_bytes=PER_CHUNK * ITEM_BYTES + 4096)
    with ParallelExecutor(config) as ex:
        assert list(ex.imap(tasks.first_element, iter(items), chunksize=6)) == [float(i) for i in range(12)]
        record = ex.last_record
    assert record is not None and record.n_chunks == 2


def quarter_mib(i: int) -> np.ndarray:
    """A small item whose result is large: an array of ``ITEM_BYTES``."""
    return np.full(ITEM_BYTES // 8, float(i))


@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib"])
def test_a_chunk_of_small_items_with_large_results_holds_at_most_the_task_bytes(strategy: str) -> None:
    """A chunk's results are held as its items are (one pickle back from a process, and an ``imap`` holds them
    until handed out): chunks were bounded by the items' bytes only, so int items with 2 MiB results made
    chunks of about 250 results, 1.5 GiB at the peak against 20 MiB for a loop (memory trial 44, F4)."""
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0,
                            task_size_hint_bytes=PER_CHUNK * ITEM_BYTES + 4096)
    with ParallelExecutor(config) as ex:
        got = [float(a[0]) for a in ex.imap(quarter_mib, iter(range(N)))]
        record = ex.last_record
    assert got == [float(i) for i in range(N)]
    assert record is not None and record.selected_strategy == strategy
    sent = [c.n_items for c in record.chunks if c.where != "caller"]  # a probe here runs for its time, not bytes
    assert len(sent) >= (N - record.probe_items) // PER_CHUNK and max(sent) <= PER_CHUNK, sent


@pytest.mark.parametrize(("strategy", "stream"), [("processes", False), ("processes", True), ("joblib", False)])
def test_a_large_shipped_function_is_not_taken_for_its_items_bytes(strategy: str, stream: bool) -> None:
    """A worker's first chunk loads the function (4 MiB here) and counts it in that chunk's bytes: weighed as
    items and results, it cut every later chunk to one item (a 64 MiB function over 200,000 items: 41 s against
    0.33 s), and a function under 64 KiB, sent in every chunk, cut them too (the review of trial 44's fixes)."""
    fn = functools.partial(tasks.add_to_first, np.zeros(4 << 17))
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    n = 20_000
    with ParallelExecutor(config) as ex:
        out = list(ex.imap(fn, iter(range(n)))) if stream else ex.map(fn, range(n))
        record = ex.last_record
    assert out == [float(i) for i in range(n)]
    assert record is not None and record.selected_strategy == strategy
    sizes = [c.n_items for c in record.chunks if c.where != "caller"]
    assert len(sizes) < n // 50, f"{len(sizes)} chunks, {sizes.count(1)} of one item; the first {sizes[:12]}"
