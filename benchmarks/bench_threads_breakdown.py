"""Where a threads call's time goes, against ThreadPoolExecutor: the matrix's W5 (500 sums of 1 MiB arrays).

payoff's threads column misses W5's 1.10x-the-best-peer line in every recorded run. This splits one call's
time into what the caller's thread spends (planning, sending chunks, taking results, the record and its
observers) and what each item costs on the pool's threads, beside ThreadPoolExecutor(2) given the same
number of chunks (the fastest chunking here) and ThreadPoolExecutor() with its default workers, unchunked, as
the matrix runs it. Medians of 15 rounds, every column in each round.

    python benchmarks/bench_threads_breakdown.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import workloads
from payoff import ParallelConfig, ParallelExecutor

ROUNDS = 15
ITEMS = [np.full(131_072, float(i)) for i in range(500)]
fn = workloads.array_sum


def _pool_cpu_per_item(ex: ParallelExecutor) -> float:
    record = ex.last_record
    assert record is not None
    pool = [c for c in record.chunks if c.where == "pool"]
    return sum(c.cpu_ns for c in pool) / max(1, sum(c.n_items for c in pool)) / 1e9


def main() -> None:
    payoff_ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2))
    quiet_ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2), observers=[])
    two, default = ThreadPoolExecutor(2), ThreadPoolExecutor()
    spent: dict[str, list[float]] = {}
    cpu: list[float] = []

    def chunk(c: list[Any]) -> list[float]:
        began = time.thread_time_ns()
        out = [fn(x) for x in c]
        cpu.append((time.thread_time_ns() - began) / 1e9 / len(c))
        return out

    def tpe_chunked() -> None:
        n_chunks = len(payoff_ex.last_record.chunks) if payoff_ex.last_record else 8
        size = -(-len(ITEMS) // n_chunks)
        list(two.map(chunk, [ITEMS[i:i + size] for i in range(0, len(ITEMS), size)]))

    columns: dict[str, Callable[[], object]] = {
        "loop": lambda: [fn(x) for x in ITEMS],
        "payoff threads x2": lambda: payoff_ex.map(fn, ITEMS),
        "payoff threads x2, no observers": lambda: quiet_ex.map(fn, ITEMS),
        "ThreadPoolExecutor(2), as many chunks": tpe_chunked,
        "ThreadPoolExecutor(), unchunked": lambda: list(default.map(fn, ITEMS)),
    }
    for _ in range(ROUNDS):
        for name, run in columns.items():
            cpu.clear()
            main_began, began = time.thread_time_ns(), time.perf_counter()
            run()
            spent.setdefault(name, []).append(time.perf_counter() - began)
            spent.setdefault(f"{name}: caller CPU", []).append((time.thread_time_ns() - main_began) / 1e9)
            if name.startswith("payoff"):
                spent.setdefault(f"{name}: pool CPU an item",
                                 []).append(_pool_cpu_per_item(payoff_ex if "no" not in name else quiet_ex))
            elif cpu:
                spent.setdefault(f"{name}: pool CPU an item", []).append(statistics.median(cpu))
    loop = statistics.median(spent["loop"])
    for name, values in spent.items():
        median = statistics.median(values)
        if ":" in name:
            print(f"    {name:<55} {median * 1e6:9.1f} us")
        else:
            print(f"{name:<59} {median * 1e3:7.1f} ms ({median / loop:.2f}x the loop)")
    for ex in (payoff_ex, quiet_ex):
        ex.shutdown()
    two.shutdown()
    default.shutdown()


if __name__ == "__main__":
    main()
