"""The 5 ms row (400 pure-Python items of ~5 ms) on a dask LocalCluster against local processes.

Both use two workers on this machine and warm pools (the first call, which
starts the pool or cluster, is not timed). Per-task overhead is what each
item costs beyond its own compute: (wall - serial estimate / workers) / items.

    python benchmarks/bench_dask.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads
from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"


def measure(strategy: str, items: list[int], repeat: int) -> dict[str, Any]:
    with ParallelExecutor(ParallelConfig(strategy=strategy, tiny_workload_threshold=0.0)) as ex:
        ex.map(workloads.py_5ms, items[:20])
        walls, overheads = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            ex.map(workloads.py_5ms, items)
            wall = time.perf_counter() - t0
            record = ex.last_record
            assert record is not None and record.selected_strategy == strategy, record
            walls.append(wall)
            overheads.append((wall - record.serial_estimate_seconds / record.workers) / len(items) * 1e6)
        return {"wall_seconds": statistics.median(walls), "per_task_overhead_us": statistics.median(overheads),
                "chunks": record.n_chunks, "queue_wait_p50_ms": record.queue_wait.p50 * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    items = list(range(400))
    t0 = time.perf_counter()
    [workloads.py_5ms(x) for x in items]
    loop = time.perf_counter() - t0
    result: dict[str, Any] = {"loop_seconds": loop}
    for strategy in ("processes", "dask"):
        result[strategy] = measure(strategy, items, args.repeat)
        r = result[strategy]
        print(f"{strategy:<10} {r['wall_seconds']:.3f}s ({loop / r['wall_seconds']:.2f}x vs loop {loop:.3f}s), "
              f"per-task overhead {r['per_task_overhead_us']:.0f} us, {r['chunks']} chunks, "
              f"queue wait p50 {r['queue_wait_p50_ms']:.1f} ms", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
