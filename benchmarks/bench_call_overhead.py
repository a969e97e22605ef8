"""What one ``map`` call costs payoff beyond its items, warm and right after another thread ran.

A call of a few milliseconds (W6: 100 items of ~40 us) pays payoff's fixed cost per call: the plan, the
record, its observers (span, metrics, warnings). Measured two ways:

* warm: ``abs`` over 1 and 100 items, the same call again and again (the CPU's caches hold payoff's code);
* after another thread: 100 items of ~40 us, each call (payoff's and a loop's) right after a thread that
  starts, runs and is joined, as in the matrix's W6, whose columns take turns call by call. The loop pays that
  too; the difference is what payoff's own code pays for running cold. Beside each, payoff's speedup measured
  against the loop and the one its records reported (medians of 3 rounds).

    python benchmarks/bench_call_overhead.py        # ~1 minute
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings
from collections.abc import Callable

import workloads
from payoff import ParallelConfig, ParallelExecutor


def _per_call(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls


def warm(strategy: str, n_items: int, calls: int = 2000) -> float:
    """Seconds a call of ``abs`` over ``n_items`` costs, after 200 calls that warmed the same path."""
    items = list(range(n_items))
    with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex:
        _per_call(lambda: ex.map(abs, items), 200)
        return _per_call(lambda: ex.map(abs, items), calls)


class Rows:
    """One condition's rounds: payoff's extra seconds per call over the loop, its speedup measured against the
    loop, and the one it reported (``sum(serial_estimate_seconds) / sum(wall_seconds)`` over its calls)."""

    def __init__(self) -> None:
        self.extra: list[float] = []
        self.measured: list[float] = []
        self.reported: list[float] = []
        self.planning: list[float] = []


def after_a_thread(strategy: str, calls: int = 150, rounds: int = 3) -> tuple[Rows, Rows]:
    """Payoff against a loop of the same items, call by call: quiet (nothing between calls), and when a thread
    started and was joined just before each call."""
    fn, items = workloads.py_50us, list(range(100))

    def measure(between: Callable[[], object], rows: Rows) -> None:
        with ParallelExecutor(ParallelConfig(strategy=strategy)) as ex:
            for _ in range(20):
                ex.map(fn, items)
            loop = payoff = estimate = wall = planning = 0.0
            for _ in range(calls):
                between()
                started = time.perf_counter()
                list(map(fn, items))
                loop += time.perf_counter() - started
                between()
                started = time.perf_counter()
                ex.map(fn, items)
                payoff += time.perf_counter() - started
                record = ex.last_record
                assert record is not None
                estimate, wall = estimate + record.serial_estimate_seconds, wall + record.wall_seconds
                planning += record.overhead_seconds.get("planning", 0.0)
            rows.extra.append((payoff - loop) / calls)
            rows.measured.append(loop / payoff)
            rows.reported.append(estimate / wall)
            rows.planning.append(planning / calls)

    def a_thread() -> None:
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()

    quiet, cold = Rows(), Rows()
    for _ in range(rounds):
        measure(lambda: None, quiet)
        measure(a_thread, cold)
    return quiet, cold


def main() -> None:
    warnings.simplefilter("ignore")
    for strategy in ("serial", "auto"):
        for n in (1, 100):
            print(f"{strategy:6s} abs x {n:<3d}  warm: {warm(strategy, n) * 1e6:7.1f} us a call")
    for strategy in ("serial", "auto"):
        for said, rows in zip(("quiet", "right after another thread ran"), after_a_thread(strategy), strict=True):
            median = statistics.median
            print(f"{strategy:6s} 100 x ~40 us, {said}: {median(rows.extra) * 1e3:.2f} ms a call over the loop "
                  f"(planning {median(rows.planning) * 1e6:.0f} us of it, as the records say); "
                  f"speedup measured {median(rows.measured):.2f}x, MapRecord {median(rows.reported):.2f}x")


if __name__ == "__main__":
    main()
