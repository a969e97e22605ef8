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


def _held_items(run: Callable[[ParallelExecutor, list[bytes]], list[int]], strategy: str, n: int, size: int,
                hint: int) -> float:
    """The caller's peak of traced memory during the call, in items of ``size`` bytes, beside its own items."""
    items = [bytes([i]) * size for i in range(n)]
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            task_size_hint_bytes=hint)
    with ParallelExecutor(config, planner=planning.Planner()) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.map(tasks.square, range(4))  # the pool started and warm: its start allocates nothing of the call's
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            assert run(ex, items) == [size] * n
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        record = ex.last_record
    assert record is not None and record.selected_strategy == strategy and record.n_chunks == n  # one item a chunk
    return peak / size


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_map_of_large_items_holds_a_few_of_their_pickles_not_one_per_chunk_in_flight(strategy: str) -> None:
    """8 items of 100 MB. Before: 6.3 items' worth held (2 x workers + 1 chunks in flight, each pickle kept
    until its result came back). Now 3.3: no more than one chunk a worker once the pickles in flight weigh
    256 MiB (16 x task_size_hint_bytes), each let go once its pool's queue has taken it."""
    held = _held_items(lambda ex, items: ex.map(tasks.nap_len, items), strategy, 8, 100 * MB, 16 * MB)
    assert held <= 5.0, f"{held:.1f} items' worth of pickles held in the caller"


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_imap_under_a_timeout_sends_ahead_of_its_consumer_only_up_to_its_cap(strategy: str) -> None:
    """16 items of 25 MB with task_size_hint_bytes of 4 MiB: its cap ahead is 64 hints, 256 MiB (1 GiB by
    default). Before: every chunk sent, 16 items' worth and more held; 10.3 now. The cap is that high so that
    the workers go on while the consumer holds a result (a 256 MiB cap timed out where the call had run)."""
    def run(ex: ParallelExecutor, items: list[bytes]) -> list[int]:
        return list(ex.imap(tasks.nap_len, items, timeout=600))

    held = _held_items(run, strategy, 16, 25 * MB, 4 * MB)
    assert held <= 12.5, f"{held:.1f} items' worth of pickles held in the caller"
