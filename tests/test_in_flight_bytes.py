"""What a call on a process pool holds in the caller beside its input: the pickles of its chunks in flight.

A pool keeps a call's arguments until its result is back, so each chunk's
pickle stayed in the caller while its worker ran it: a call of six 500 MB
arrays held 3 GB beside the input where ``ProcessPoolExecutor`` held one item,
and an ``imap`` under a timeout, which sends ahead of its consumer, pickled
nearly all of its input (hunt 64, F1 and F2). Measured with ``tracemalloc``: the
pickles are Python objects in this process, and their count is what matters,
not how long anything took.
"""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Callable

import pytest

from payoff import ParallelConfig, ParallelExecutor, planning
from tests import tasks

MB = 1 << 20
ITEM = 100 * MB  # over task_size_hint_bytes (16 MiB): one item a chunk, 3 of them over the 256 MiB in flight
N = 8


def _held_items(run: Callable[[ParallelExecutor, list[bytes]], list[int]], strategy: str) -> float:
    """The caller's peak of traced memory during the call, in items of ``ITEM`` bytes, beside its own items."""
    items = [bytes([i]) * ITEM for i in range(N)]
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config, planner=planning.Planner()) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.map(tasks.square, range(4))  # the pool started and warm: its start allocates nothing of the call's
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            assert run(ex, items) == [ITEM] * N
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        record = ex.last_record
    assert record is not None and record.selected_strategy == strategy and record.n_chunks == N
    return peak / ITEM


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
@pytest.mark.parametrize("how", ["map", "imap under a timeout"])
def test_a_call_of_large_items_holds_a_few_of_their_pickles_not_one_per_chunk_in_flight(strategy: str,
                                                                                         how: str) -> None:
    """Before: 6.3 items' worth held by a map (2 x workers + 1 chunks in flight, each pickle kept until its
    result came back), 8.3-9.3 by the imap (every chunk sent ahead). Now 3.3-4.3: no more than one chunk a
    worker once the pickles in flight weigh 256 MiB, each let go once its queue has sent it."""
    def run(ex: ParallelExecutor, items: list[bytes]) -> list[int]:
        if how == "map":
            return ex.map(tasks.nap_len, items)
        return list(ex.imap(tasks.nap_len, items, timeout=600))

    held = _held_items(run, strategy)
    assert held <= 5.0, f"{held:.1f} items' worth of pickles held in the caller"
