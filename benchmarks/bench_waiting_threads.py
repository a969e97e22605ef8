"""Why W9's estimate misses: an item's own time grows with the number of threads that wait beside it.

W9's items sleep 5 ms and then compute ~0.1 ms of pure Python. Run on N
threads, each item's wall time (``MapRecord.chunks[i].durations_ns``) is its
sleep, its CPU and, after the sleep, the wait for the GIL while the other
threads' items hold it. ``MapRecord.speedup`` sums the items' own times as the
loop's estimate, so whatever the wait for the GIL adds to them, it adds to the
estimate. This measures that, thread count by thread count, against the plain
loop of the same run: the item's mean time, the speedup measured and the one
the record reports. Python 3.11 has no clock for a thread's wait for the GIL,
which is what would take it out.

    python benchmarks/bench_waiting_threads.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning

RESULTS = Path(__file__).resolve().parent / "results"
ITEMS = list(range(400))
THREADS = (2, 4, 8, 16, 32)


def _loop() -> float:
    start = time.perf_counter()
    for x in ITEMS:
        workloads.wait_5ms(x)
    return time.perf_counter() - start


def _on_threads(threads: int, repeat: int) -> dict[str, float]:
    """The median call (by wall time) of ``repeat`` on a warm executor of ``threads`` threads, beside its loop."""
    calls = []
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=threads)) as ex:
        ex.map(workloads.wait_5ms, ITEMS)
        for _ in range(repeat):
            loop = _loop()
            start = time.perf_counter()
            ex.map(workloads.wait_5ms, ITEMS)
            wall = time.perf_counter() - start
            record = ex.last_record
            assert record is not None
            durations = [d for chunk in record.chunks for d in chunk.durations_ns]
            calls.append({"loop_seconds": loop, "wall_seconds": wall, "measured": loop / wall,
                          "reported": record.speedup, "item_ms": statistics.mean(durations) / 1e6,
                          "loop_item_ms": loop / len(ITEMS) * 1e3})
    calls.sort(key=lambda c: c["measured"])
    return calls[len(calls) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ParallelFallbackWarning)
    rows: dict[str, Any] = {}
    for threads in THREADS:
        row = rows[str(threads)] = _on_threads(threads, args.repeat)
        print(f"{threads:2d} threads: item {row['item_ms']:.3f} ms (loop's {row['loop_item_ms']:.3f}); measured "
              f"{row['measured']:.2f}x, MapRecord {row['reported']:.2f}x "
              f"({row['reported'] / row['measured'] - 1:+.1%})")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "waiting_threads.json"
    out.write_text(json.dumps({"repeat": args.repeat, "items": len(ITEMS), "threads": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
