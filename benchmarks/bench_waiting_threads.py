"""Waiting items on many threads: the speedup measured against the loop, and the one the record reports.

Each item's wall time on N threads is its own work and, after each of its
waits, its wait for the GIL while the other threads' items hold it. Python
3.11 has no clock for that wait; payoff samples it with a thread of its own
(``payoff._gil_wait``) and takes it off the loop's estimate. For four shapes
of waiting work, on warm ``threads`` executors of several sizes and on
``auto`` (its calls after the first, whose thread count follows what the last
call kept busy), each call beside a loop: the item's mean time, the speedup
measured and the one ``MapRecord.speedup`` reports, and
``ThreadPoolExecutor()``'s speed as the reference a user would reach for.

    python benchmarks/bench_waiting_threads.py [--repeat 5] [--items 400]

Short calls (``--items 100``: 20-60 ms on auto) are the sampler's hard case: few of its wake-ups fall in
them, and it runs more threads for them (``payoff._gil_wait.samplers_for``); their results go to a file of
their own (``waiting_threads_100_items.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ITEMS = 400
ITEMS = list(range(DEFAULT_ITEMS))
THREADS = (4, 8, 16, 32)
SHAPES: dict[str, Callable[[int], int]] = {
    "W9: 5 ms sleep, 0.1 ms CPU": workloads.wait_5ms,
    "1 ms sleep": workloads.sleep_1ms,
    "1 ms sleep, 0.1 ms CPU": workloads.sleep_1ms_then_compute,
    "ten 0.2 ms sleeps": workloads.ten_short_waits,
}


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _calls(fn: Callable[[int], int], config: ParallelConfig, repeat: int) -> dict[str, Any]:
    """The median call (by measured speedup) of ``repeat`` on a warm executor, each beside a loop."""
    calls = []
    with ParallelExecutor(config) as ex, ThreadPoolExecutor() as peer:
        ex.map(fn, ITEMS)
        list(peer.map(fn, ITEMS))
        for _ in range(repeat):
            loop = _timed(lambda: [fn(x) for x in ITEMS])
            wall = _timed(lambda: ex.map(fn, ITEMS))
            record = ex.last_record
            assert record is not None
            peer_wall = _timed(lambda: list(peer.map(fn, ITEMS)))
            durations = [d for chunk in record.chunks for d in chunk.durations_ns]
            calls.append({"loop_seconds": loop, "wall_seconds": wall, "measured": loop / wall,
                          "reported": record.speedup, "item_ms": statistics.mean(durations) / 1e6,
                          "loop_item_ms": loop / len(ITEMS) * 1e3, "threads": record.workers,
                          "gil_priced": record.gil_priced, "peer": loop / peer_wall})
    calls.sort(key=lambda c: c["measured"])
    middle = calls[len(calls) // 2]
    middle["off"] = [c["reported"] / c["measured"] - 1 for c in calls]
    return middle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="items a call (default 400)")
    parser.add_argument("--out", type=Path, default=None, help="where the results go")
    args = parser.parse_args()
    ITEMS[:] = range(args.items)
    warnings.simplefilter("ignore", ParallelFallbackWarning)
    shapes: dict[str, Any] = {}
    for shape, fn in SHAPES.items():
        rows = shapes[shape] = {}
        configs = {str(n): ParallelConfig(strategy="threads", max_workers=n) for n in THREADS}
        for name, config in {**configs, "auto": ParallelConfig()}.items():
            row = rows[name] = _calls(fn, config, args.repeat)
            print(f"{shape:26s} {name:>4s} (x{row['threads']:2d}): item {row['item_ms']:.3f} ms (loop's "
                  f"{row['loop_item_ms']:.3f}); measured {row['measured']:.2f}x, MapRecord {row['reported']:.2f}x "
                  f"({row['reported'] / row['measured'] - 1:+.1%}); ThreadPoolExecutor() {row['peer']:.2f}x",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    name = "waiting_threads" if args.items == DEFAULT_ITEMS else f"waiting_threads_{args.items}_items"
    out = args.out or RESULTS / f"{name}.json"
    out.write_text(json.dumps({"repeat": args.repeat, "items": len(ITEMS), "shapes": shapes}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
