"""Uneven item costs: does every worker stay busy to the end, whatever order the items come in?

Five shapes of pure-Python work on 2 workers, each against the plain loop of
the same run: W7's cheap items with a 50x dearer tail, sorted, shuffled and
largest first (the dear items at the head, as for longest-processing-time
scheduling); a short sorted tail (the last 1% of 10,000 items, 50x dearer); and one record
700x dearer early in the input (the chunk holding it is slow, so the chunks
after it finish first and wait to be handed out in order). Peers keep one warm
pool, created before the timing; payoff's pools are started by an untimed call.
A cell is the median of ``--repeat`` calls; beside auto's measured speedup
stands the one its own ``MapRecord`` reported. ``pieces`` counts the chunks that
ran past their time budget and handed back the items they had not started.

    python benchmarks/bench_uneven.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import joblib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads
from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"
WORKERS = 2


def shapes() -> dict[str, tuple[Callable[[int], int], list[int]]]:
    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    return {
        "sorted dear tail (W7)": (workloads.py_uneven, list(range(1000))),
        "shuffled dear tail (W8)": (workloads.py_uneven, shuffled),
        "dear head, largest first": (workloads.py_uneven, list(range(999, -1, -1))),
        "short sorted tail, 100 of 10,000": (workloads.py_needle, list(range(10_000))),
        "one slow record early": (workloads.py_one_slow, list(range(2000))),
    }


def _time(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def measure(fn: Callable[[int], int], items: list[int], repeat: int, ppe: ProcessPoolExecutor,
            jl: joblib.Parallel) -> dict[str, Any]:
    chunksize = math.ceil(len(items) / (4 * WORKERS))
    with ParallelExecutor(ParallelConfig(strategy="auto")) as auto, \
            ParallelExecutor(ParallelConfig(strategy="processes", max_workers=WORKERS)) as procs:
        runs: dict[str, Callable[[], object]] = {
            "loop": lambda: [fn(x) for x in items],
            "payoff auto": lambda: auto.map(fn, items),
            "payoff processes": lambda: procs.map(fn, items),
            "ProcessPoolExecutor chunked": lambda: list(ppe.map(fn, items, chunksize=chunksize)),
            "joblib processes": lambda: jl(joblib.delayed(fn)(x) for x in items),
        }
        payoff = {"payoff auto": auto, "payoff processes": procs}
        for name in payoff:
            runs[name]()  # starts the pool and teaches the planner this function, untimed
        times: dict[str, list[float]] = {name: [] for name in runs}
        pieces: dict[str, list[int]] = {name: [] for name in payoff}
        reported: dict[str, list[float]] = {name: [] for name in payoff}
        for _ in range(repeat):
            for name, run in runs.items():
                times[name].append(_time(run))
                if name in payoff:
                    record = payoff[name].last_record
                    assert record is not None
                    pool = [c.index for c in record.chunks if c.where == "pool"]
                    pieces[name].append(len(pool) - len(set(pool)))
                    reported[name].append(record.speedup)
    loop = statistics.median(times["loop"])
    return {"seconds": {k: statistics.median(v) for k, v in times.items()},
            "vs_loop": {k: loop / statistics.median(v) for k, v in times.items()},
            "pieces": {k: statistics.median(v) for k, v in pieces.items()},
            "reported": {k: statistics.median(v) for k, v in reported.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    result: dict[str, Any] = {"repeat": args.repeat, "workers": WORKERS, "shapes": {}}
    with ProcessPoolExecutor(WORKERS) as ppe, joblib.Parallel(n_jobs=WORKERS, backend="loky") as jl:
        list(ppe.map(workloads.nap, [0.2] * WORKERS))
        jl(joblib.delayed(workloads.nap)(0.2) for _ in range(WORKERS))
        for name, (fn, items) in shapes().items():
            r = result["shapes"][name] = measure(fn, items, args.repeat, ppe, jl)
            cells = ", ".join(f"{k} {v:.2f}x" for k, v in r["vs_loop"].items() if k != "loop")
            print(f"{name}: loop {r['seconds']['loop']:.3f} s; {cells}; auto's MapRecord.speedup "
                  f"{r['reported']['payoff auto']:.2f}x; pieces handed back {r['pieces']['payoff auto']:.0f} (auto)",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "uneven.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
