"""How much work one chunk of a pool call may hold: bounded, and less while another call shares the pool.

A pool takes chunks first come, first served, and each call keeps ``2 x workers + 1`` of them queued. A long
call's guided chunks held 0.7 s of work each, so a small request on the same executor waited 3.6 s behind
them for 0.09 s of its own work (library trial). Sizes here are read from the records; no time is asserted.
"""

from __future__ import annotations

import threading
from typing import Any

from payoff import ParallelConfig, ParallelExecutor
from payoff.scheduling import POOL_CHUNK_SECONDS, SHARED_CHUNK_SECONDS
from tests import tasks

NAP_MS = 2
SLACK = 1.3
"""Chunk sizes follow the measured cost of an item, which a nap of 2 ms only ever exceeds: sizes only shrink."""


def test_a_long_calls_chunks_hold_a_bounded_amount_and_shrink_while_another_call_shares_the_pool() -> None:
    config = ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=0)
    with ParallelExecutor(config) as ex:
        ex.map(tasks.nap_ms, [NAP_MS] * 40)  # the function's cost is known: chunks are cut from it at once
        records: dict[str, Any] = {}
        started = threading.Event()

        def long_call() -> None:
            started.set()
            ex.map(tasks.nap_ms, [NAP_MS] * 1500)
            records["long"] = ex.last_record

        thread = threading.Thread(target=long_call)
        thread.start()
        started.wait()
        while not ex._pools.warm():  # the long call holds the pool
            threading.Event().wait(0.01)
        threading.Event().wait(0.3)
        ex.map(tasks.nap_ms, [NAP_MS] * 60)
        small = ex.last_record
        thread.join()
    long = records["long"]
    assert small is not None and long.selected_strategy == "threads"
    most = POOL_CHUNK_SECONDS / (NAP_MS / 1000) * SLACK
    assert max(c.n_items for c in long.chunks) <= most, [c.n_items for c in long.chunks]
    began, ended = small.chunks[0].submit_ns, max(c.end_ns for c in small.chunks)
    beside = [c.n_items for c in long.chunks if began < c.submit_ns < ended]
    assert beside, "the long call cut no chunk while the small one ran: the test says nothing"
    assert max(beside) <= SHARED_CHUNK_SECONDS / (NAP_MS / 1000) * SLACK, beside
