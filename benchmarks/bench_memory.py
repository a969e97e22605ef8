"""Peak memory of ``imap`` over a generator, against a plain loop over the same generator.

``imap`` reads an iterator input only as far as the work has got, so streaming
millions of items should cost about what a loop costs, not what a list of
them costs. Each row runs 5,000,000 items of ``(i for i in range(N))`` through
a cheap top-level function and consumes the results as a running sum:

- loop: ``for x in gen: f(x)``, the reference;
- imap auto: ``ParallelExecutor().imap(f, gen)``, default config;
- imap processes / imap threads: ``strategy=...``, ``tiny_workload_threshold=0``
  and ``chunksize=10_000`` so the work really crosses to the pool;
- map auto: ``ParallelExecutor().map(f, gen)`` for contrast (it returns a list,
  so it holds every result, and reads its whole input first).

Peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark that never
goes down, so every run is its own fresh interpreter (this script with
``--child ROW``). Each child imports payoff first, so import cost is the same in
every row, reads the post-import baseline, runs the workload and prints JSON.
Process workers' memory is not in the caller's ru_maxrss: rows that ran on a
process pool also report each live worker's own peak (``VmHWM`` from
``/proc/PID/status``, read before the pool shuts down; it counts the caller's
pages a forked worker touched), the largest one and their sum. Rows take turns
within each repeat; every figure is the median of ``--repeat`` fresh runs. The
target: every imap row's peak RSS at most 2x the loop's.

    python benchmarks/bench_memory.py            # 5,000,000 items, 3 repeats, under a minute
    python benchmarks/bench_memory.py --quick    # 500,000 items, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import payoff
from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"
N_FULL = 5_000_000
N_QUICK = 500_000
TARGET_RATIO = 2.0
POOL = {"tiny_workload_threshold": 0}
POOL_CHUNKSIZE = 10_000


def f(x: int) -> int:
    return x + 1


def _executor(**config: Any) -> ParallelExecutor:
    return ParallelExecutor(ParallelConfig(**config)) if config else ParallelExecutor()


def _loop(gen: Iterator[int]) -> tuple[int, ParallelExecutor | None]:
    total = 0
    for x in gen:
        total += f(x)
    return total, None


def _imap(config: dict[str, Any], chunksize: int | None) -> Callable[[Iterator[int]], tuple[int, ParallelExecutor]]:
    def run(gen: Iterator[int]) -> tuple[int, ParallelExecutor]:
        ex = _executor(**config)
        total = 0
        for r in ex.imap(f, gen, chunksize=chunksize):
            total += r
        return total, ex
    return run


def _map(gen: Iterator[int]) -> tuple[int, ParallelExecutor]:
    ex = ParallelExecutor()
    total = 0
    for r in ex.map(f, gen):
        total += r
    return total, ex


ROWS: dict[str, Callable[[Iterator[int]], tuple[int, ParallelExecutor | None]]] = {
    "loop": _loop,
    "imap auto": _imap({}, None),
    "imap processes": _imap({"strategy": "processes", **POOL}, POOL_CHUNKSIZE),
    "imap threads": _imap({"strategy": "threads", **POOL}, POOL_CHUNKSIZE),
    "map auto": _map,
}


def _record_bytes(ex: ParallelExecutor) -> int:
    """About what the kept records' per-chunk stats hold: each ChunkStats, its dict, fields and timing tuples.

    Small ints are shared and counted anyway, so this errs high by a little; it
    shows how much of a row's increase is the record rather than items in flight.
    """
    total = 0
    for record in ex.records:
        for c in record.chunks:
            total += sys.getsizeof(c) + sys.getsizeof(c.__dict__)
            total += sum(sys.getsizeof(v) for v in c.__dict__.values())
            total += sum(sys.getsizeof(v) for v in (*c.durations_ns, *c.block_sizes))
    return total


def child(row: str, n: int) -> dict[str, Any]:
    """One row in this interpreter: baseline after imports, the workload, then the high-water marks."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    total, ex = ROWS[row](i for i in range(n))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if total != n * (n + 1) // 2:
        raise SystemExit(f"{row}: wrong sum {total}")
    out: dict[str, Any] = {"row": row, "baseline_kib": baseline, "peak_kib": peak, "seconds": seconds}
    if ex is not None:
        record = ex.last_record
        assert record is not None
        out.update(strategy=record.selected_strategy, workers=record.workers, chunks=record.n_chunks,
                   chunk_size=record.chunk_size, record_kib=_record_bytes(ex) / 1024)
        workers = [_peak_kib(pid) for pid in ex.worker_pids()]
        if workers:
            out["workers_peak_kib"], out["workers_peak_sum_kib"] = max(workers), sum(workers)
        ex.shutdown(wait=True)
    return out


def _peak_kib(pid: int) -> int:
    """A live worker's own high-water mark (VmHWM), which includes the caller's pages it shares since fork."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_child(row: str, n: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", row, "--n", str(n)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{row} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def summarise(runs: list[dict[str, Any]], loop_peak: float) -> dict[str, Any]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("baseline_kib", "peak_kib", "seconds")}
    out: dict[str, Any] = {
        **med,
        "increase_kib": statistics.median(r["peak_kib"] - r["baseline_kib"] for r in runs),
        "ratio_to_loop": med["peak_kib"] / loop_peak,
        "runs_peak_kib": [r["peak_kib"] for r in runs],
    }
    for key in ("strategy", "workers", "chunks", "chunk_size"):
        if key in runs[0]:
            out[key] = runs[0][key]
    if "record_kib" in runs[0]:
        out["record_kib"] = statistics.median(r["record_kib"] for r in runs)
    if all("workers_peak_kib" in r for r in runs):
        out["workers_peak_kib"] = statistics.median(r["workers_peak_kib"] for r in runs)
        out["workers_peak_sum_kib"] = statistics.median(r["workers_peak_sum_kib"] for r in runs)
    return out


def verdict(name: str, row: dict[str, Any]) -> str:
    if name == "loop":
        return "reference"
    ok = row["ratio_to_loop"] <= TARGET_RATIO
    if name.startswith("map"):
        return "contrast: " + ("within 2x" if ok else "over 2x (map holds its input and results)")
    return "met" if ok else "MISSED"


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    print(f"{'row':<16}{'peak MiB':>10}{'baseline':>10}{'increase':>10}{'vs loop':>9}{'seconds':>9}"
          f"{'workers MiB max/sum':>20}  verdict")
    for name, r in rows.items():
        workers = "-"
        if "workers_peak_kib" in r:
            workers = f"{r['workers_peak_kib'] / 1024:.1f}/{r['workers_peak_sum_kib'] / 1024:.1f}"
        print(f"{name:<16}{r['peak_kib'] / 1024:>10.1f}{r['baseline_kib'] / 1024:>10.1f}"
              f"{r['increase_kib'] / 1024:>10.1f}{r['ratio_to_loop']:>8.2f}x{r['seconds']:>9.2f}{workers:>20}"
              f"  {verdict(name, r)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (N_QUICK if args.quick else N_FULL)
    if args.child:
        print(json.dumps(child(args.child, n)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ROWS}
    for i in range(args.repeat):
        for name in ROWS:  # rows take turns, so a slow spell of the machine hits them all alike
            runs[name].append(run_child(name, n))
            print(f"repeat {i + 1}/{args.repeat} {name}: {runs[name][-1]['peak_kib'] / 1024:.1f} MiB", flush=True)
    loop_peak = statistics.median(r["peak_kib"] for r in runs["loop"])
    rows = {name: summarise(r, loop_peak) for name, r in runs.items()}
    print_table(rows)
    targets = {name: {"ratio_to_loop": row["ratio_to_loop"], "ok": row["ratio_to_loop"] <= TARGET_RATIO}
               for name, row in rows.items() if name.startswith("imap")}
    out = {"machine": machine(), "payoff": payoff.__version__, "items": n, "repeat": args.repeat,
           "quick": args.quick, "target_ratio": TARGET_RATIO, "pool_chunksize": POOL_CHUNKSIZE, "rows": rows,
           "targets": targets}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: "met" if v["ok"] else "MISSED" for k, v in targets.items()}))
    return 0 if all(v["ok"] for v in targets.values()) else 1


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


if __name__ == "__main__":
    sys.exit(main())
