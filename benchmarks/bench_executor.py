"""The executor matrix: payoff against a loop and the usual parallel tools.

Rows (2-core machine): W1 pure Python ~2 us x 20,000; W2 ~50 us x 10,000;
W3 ~5 ms x 400; W4 GIL-releasing numpy ~2 ms x 1,000; W5 1 MiB arrays with a
cheap function x 500; W6 200 calls of 100 items of ~50 us. Every cell is the
median of ``--repeat`` runs and is reported as a ratio to the plain loop of
the same run, so machine noise cancels as far as it can.

    python benchmarks/bench_executor.py            # full matrix, ~10 minutes
    python benchmarks/bench_executor.py --quick    # 3 repeats, smaller W6
    python benchmarks/bench_executor.py --rows W5  # re-measure rows; the others stay as recorded
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads
from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"
PAYOFF_COLUMNS = ("payoff auto", "payoff serial", "payoff threads", "payoff processes", "payoff joblib")
COLUMNS = (*PAYOFF_COLUMNS, "loop", "ThreadPoolExecutor", "ProcessPool chunksize=1 per call", "joblib defaults")


@dataclass
class Row:
    name: str
    fn: Callable[[Any], Any]
    items: list[Any]
    calls: int = 1


def rows(quick: bool) -> list[Row]:
    arrays = [np.full(131_072, float(i)) for i in range(500)]
    return [
        Row("W1 2us x 20000", workloads.py_2us, list(range(20_000))),
        Row("W2 50us x 10000", workloads.py_50us, list(range(10_000))),
        Row("W3 5ms x 400", workloads.py_5ms, list(range(400))),
        Row("W4 numpy 2ms x 1000", workloads.numpy_2ms, list(range(1000))),
        Row("W5 1MiB arrays x 500", workloads.array_sum, arrays),
        Row("W6 200 calls x 100 x 50us", workloads.py_50us, list(range(100)), calls=50 if quick else 200),
    ]


def runner(column: str, row: Row, executors: dict[str, ParallelExecutor]) -> Callable[[], list[Any]]:
    fn, items = row.fn, row.items
    if column.startswith("payoff"):
        ex = executors[column]
        return lambda: ex.map(fn, items, workload=row.name.split()[0])
    if column == "loop":
        return lambda: [fn(x) for x in items]
    if column == "ThreadPoolExecutor":
        def threads() -> list[Any]:
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(fn, items))
        return threads
    if column == "ProcessPool chunksize=1 per call":
        def processes() -> list[Any]:
            with ProcessPoolExecutor(2) as pool:
                return list(pool.map(fn, items))
        return processes
    from joblib import Parallel, delayed

    return lambda: list(Parallel(n_jobs=2)(delayed(fn)(x) for x in items))


def measure(row: Row, repeat: int, columns: tuple[str, ...]) -> dict[str, float]:
    executors = {c: ParallelExecutor(ParallelConfig(strategy=c.split()[1])) for c in PAYOFF_COLUMNS}
    expected = [row.fn(x) for x in row.items]
    times: dict[str, list[float]] = {c: [] for c in columns}
    for _ in range(repeat):
        for column in columns:
            run = runner(column, row, executors)
            t0 = time.perf_counter()
            for _ in range(row.calls):
                out = run()
            times[column].append(time.perf_counter() - t0)
            assert out == expected, f"{column} returned wrong results on {row.name}"
    for ex in executors.values():
        ex.close()
    return {c: statistics.median(v) for c, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--rows", default="", help="comma-separated row prefixes, e.g. W1,W6")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    selected = [r for r in rows(args.quick) if not args.rows or r.name.split()[0] in args.rows.split(",")]
    results: dict[str, dict[str, float]] = {}
    for row in selected:
        results[row.name] = measure(row, repeat, COLUMNS)
        print_row(row.name, results[row.name], header=len(results) == 1)
    path = RESULTS / "executor_matrix.json"
    rerun: dict[str, str] = {}
    if args.rows and path.exists():  # re-measured rows replace theirs in the recorded matrix, the rest stay
        previous = json.loads(path.read_text())
        rerun = {**previous.get("rerun", {}), **{name: time.strftime("%Y-%m-%d %H:%M") for name in results}}
        results = {**previous["seconds"], **results}
    verdict = check_targets(results)
    out = {"machine": machine(), "repeat": repeat, "quick": args.quick, "seconds": results, "targets": verdict,
           "rerun": rerun}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(verdict, indent=2))
    return 0 if all(v["ok"] for v in verdict.values()) else 1


def print_row(name: str, secs: dict[str, float], header: bool) -> None:
    if header:
        print(f"{'row':<28}" + "".join(f"{c[:18]:>20}" for c in COLUMNS))
    loop = secs["loop"]
    print(f"{name:<28}" + "".join(f"{secs[c]:>11.3f}s {secs[c] / loop:>5.2f}x" for c in COLUMNS), flush=True)


def check_targets(results: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    verdict: dict[str, dict[str, Any]] = {}
    for name, secs in results.items():
        best = min(secs.values())
        auto = secs["payoff auto"]
        verdict[name] = {
            "auto_vs_best": auto / best, "auto_vs_loop": auto / secs["loop"],
            "ok": auto <= 1.10 * best and auto <= 1.05 * secs["loop"],
        }
    for name, secs in results.items():
        if name.startswith("W6"):
            ratio = secs["ProcessPool chunksize=1 per call"] / secs["payoff processes"]
            verdict["W6 warm pool vs pool per call"] = {"speedup": ratio, "ok": ratio >= 10}
    return verdict


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


if __name__ == "__main__":
    sys.exit(main())
