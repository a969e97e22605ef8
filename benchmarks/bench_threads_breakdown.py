"""Where a threads call's time goes, against ThreadPoolExecutor: the matrix's W5 (500 sums of 1 MiB arrays).

payoff's threads column misses W5's 1.10x-the-best-peer line in every recorded run. This splits one call's
time into what the caller's thread spends (planning, sending chunks, taking results, the record and its
observers) and what each item costs on the pool's threads, beside ThreadPoolExecutor(2) given the same
number of chunks (the fastest chunking here) and ThreadPoolExecutor() with its default workers, unchunked, as
the matrix runs it. Medians of 15 rounds, every column in each round, each round in another order (the
column run right after the loop met caches the loop had cooled, 5 ms of 36 here).

    python benchmarks/bench_threads_breakdown.py    # then: python benchmarks/report.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import workloads
from payoff import ParallelConfig, ParallelExecutor

ROUNDS = 15
RESULTS = Path(__file__).resolve().parent / "results"
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
    order = list(columns.items())
    for round_ in range(ROUNDS):
        for name, run in order[round_ % len(order):] + order[:round_ % len(order)]:  # none always runs first
            cpu.clear()
            main_began, began = time.thread_time_ns(), time.perf_counter()
            run()
            spent.setdefault(name, []).append(time.perf_counter() - began)
            spent.setdefault(f"{name}: caller CPU", []).append((time.thread_time_ns() - main_began) / 1e9)
            ex = payoff_ex if name == "payoff threads x2" else quiet_ex if name.startswith("payoff") else None
            if ex is not None and ex.last_record is not None:
                spent.setdefault(f"{name}: pool CPU an item", []).append(_pool_cpu_per_item(ex))
                spent.setdefault(f"{name}: recorded speedup", []).append(ex.last_record.speedup)
            elif cpu:
                spent.setdefault(f"{name}: pool CPU an item", []).append(statistics.median(cpu))
    loop = statistics.median(spent["loop"])
    columns_out: dict[str, dict[str, float]] = {}
    for name, values in spent.items():
        median = statistics.median(values)
        column, _, part = name.partition(": ")
        columns_out.setdefault(column, {})[part or "seconds"] = median
        if part == "recorded speedup":  # payoff's own estimate, beside the speedup measured against the loop
            print(f"    {name:<55} {median:9.2f}x (measured {loop / statistics.median(spent[column]):.2f}x)")
        elif part:
            print(f"    {name:<55} {median * 1e6:9.1f} us")
        else:
            print(f"{name:<59} {median * 1e3:7.1f} ms ({median / loop:.2f}x the loop)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads_breakdown.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "commit": commit, "chunks": payoff_ex.last_record.chunks_cut
         if payoff_ex.last_record else None, "columns": columns_out}, indent=2) + "\n")
    for ex in (payoff_ex, quiet_ex):
        ex.shutdown()
    two.shutdown()
    default.shutdown()


if __name__ == "__main__":
    main()
