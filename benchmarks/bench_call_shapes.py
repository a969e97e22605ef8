"""payoff's own path for trivial items, call shape by call shape, against the builtin it stands in for.

With items this cheap (``abs``, ``operator.add``: tens of ns) ``auto`` stays serial, so each row measures
what payoff adds to a loop: the probe, the record and its observers, and the per-item machinery of the shape
(``imap`` hands out each result as it is asked for; several iterables are zipped into argument tuples). Every
cell is the lowest of ``--repeat`` runs, the two columns taking turns; the ratio is payoff's time over the
builtin's in the same run, and beside the speedup measured against the builtin is the one payoff reported
for its last run (``MapRecord.speedup``).

    python benchmarks/bench_call_shapes.py                  # 200,000 items, 9 repeats (~1 minute)
    python benchmarks/bench_call_shapes.py --items 1000000  # the W12 size
"""

from __future__ import annotations

import argparse
import fractions
import functools
import itertools
import json
import operator
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workloads
from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _paired(builtin: Callable[[], object], payoff: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The lowest of ``repeat`` runs of each, the two taking turns."""
    times = [(_timed(builtin), _timed(payoff)) for _ in range(repeat)]
    return min(t[0] for t in times), min(t[1] for t in times)


def _row(ex: ParallelExecutor, builtin_seconds: float, payoff_seconds: float) -> dict[str, Any]:
    """Both times, what auto ran and payoff's own speedup (``MapRecord.speedup``) of its last run."""
    record = ex.last_record
    return {"builtin_seconds": builtin_seconds, "payoff_seconds": payoff_seconds,
            "ran": "-" if record is None else record.selected_strategy,
            "reported_speedup": None if record is None else record.speedup}


def _print(name: str, row: dict[str, Any]) -> None:
    loop, ours, reported = row["builtin_seconds"], row["payoff_seconds"], row["reported_speedup"]
    print(f"| {name} | {loop * 1e3:.2f} | {ours * 1e3:.2f} | {ours / loop:.2f}x | {loop / ours:.2f}x | "
          f"{'-' if reported is None else f'{reported:.2f}x'} | {row['ran']} |", flush=True)


def _shapes(ex: ParallelExecutor, n: int) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    xs, ys = list(range(-n // 2, n - n // 2)), list(range(n))
    pairs = list(zip(xs, ys, strict=True))
    return [
        ("map over a list", lambda: list(map(abs, xs)), lambda: ex.map(abs, xs)),
        ("map over a generator", lambda: list(map(abs, (x for x in xs))), lambda: ex.map(abs, (x for x in xs))),
        ("imap over a list", lambda: sum(1 for _ in map(abs, xs)), lambda: sum(1 for _ in ex.imap(abs, xs))),
        ("imap over an iterator", lambda: sum(1 for _ in map(abs, iter(xs))),
         lambda: sum(1 for _ in ex.imap(abs, iter(xs)))),
        ("imap_unordered over a list", lambda: sum(1 for _ in map(abs, xs)),
         lambda: sum(1 for _ in ex.imap_unordered(abs, xs))),
        ("starmap", lambda: list(itertools.starmap(operator.add, pairs)), lambda: ex.starmap(operator.add, pairs)),
        ("map over two lists", lambda: list(map(operator.add, xs, ys)), lambda: ex.map(operator.add, xs, ys)),
    ]


ITEM_COSTS = (("~1 us", 20), ("~3 us", 60), ("~10 us", 200), ("~30 us", 600))
"""A serial ``imap`` by item cost: ``workloads.xor_sum`` of these many rounds (about 50 ns a round)."""


def _imap_by_cost(repeat: int, items_seconds: float = 0.15) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for name, rounds in ITEM_COSTS:
            fn = functools.partial(workloads.xor_sum, n=rounds)
            n = max(1000, int(items_seconds / (rounds * 50e-9)))
            xs = list(range(n))
            row = _row(ex, *_paired(lambda: sum(1 for _ in map(fn, xs)),  # noqa: B023  # run within the loop
                                    lambda: sum(1 for _ in ex.imap(fn, xs)), repeat))  # noqa: B023
            rows.append({"item": name, "items": n, **row})
            _print(f"serial imap, items of {name} ({n:,})", row)
    return rows


SMALL_CALLS = (20, 100, 500)
"""Calls of this many items of ~20 us (400 rounds of ``xor_sum``): 0.4, 2 and 10 ms of work a call."""


def _small_calls(repeat: int, calls: int = 200) -> list[dict[str, Any]]:
    """What a call costs beyond its items: ``calls`` calls of one size on one warm ``auto`` executor against
    the builtin ``map`` over the same items, with the record's own planning time and serial estimate."""
    fn = functools.partial(workloads.xor_sum, n=400)
    rows: list[dict[str, Any]] = []
    with ParallelExecutor(ParallelConfig(strategy="auto")) as ex:
        for size in SMALL_CALLS:
            xs = list(range(size))
            for _ in range(20):  # measured and warm: what a long-running program's calls meet
                ex.map(fn, xs)
            loop, ours = _paired(lambda: [list(map(fn, xs)) for _ in range(calls)],  # noqa: B023
                                 lambda: [ex.map(fn, xs) for _ in range(calls)], repeat)  # noqa: B023
            record = ex.last_record
            assert record is not None
            row = {"items": size, "calls": calls, **_row(ex, loop, ours),
                   "per_call_us": (ours - loop) / calls * 1e6,
                   "planning_us": record.overhead_seconds.get("planning", 0.0) * 1e6}
            rows.append(row)
            print(f"| {calls} calls of {size} items of ~20 us | {loop * 1e3:.1f} | {ours * 1e3:.1f} | "
                  f"{ours / loop:.2f}x | {row['per_call_us']:.0f} us a call | ran {row['ran']} |", flush=True)
    return rows


def _stdlib_snippet() -> None:
    """The control: a few stdlib calls, about as much code as one payoff call runs, none of it payoff's."""
    text = json.dumps({"a": [1, 2, 3, {"b": "c" * 10}] * 20, "x": 1.5})
    json.loads(text)
    statistics.median([3, 1, 2, 5, 4])
    fractions.Fraction(3, 7) + fractions.Fraction(1, 3)


BETWEEN: tuple[tuple[str, Callable[[], object]], ...] = (
    ("nothing (back to back)", lambda: None),
    ("5 ms of other pure Python", lambda: workloads.xor_sum(0, 100_000)),
    ("a 5 ms sleep", lambda: time.sleep(0.005)),
)
"""What runs between two calls; only the call itself is timed."""


def _cold_calls(calls: int = 150) -> list[dict[str, Any]]:
    """One call's cost by what ran before it: the median of ``calls`` calls, each timed alone.

    A call's bookkeeping (plan, record, observers) runs its code once per call, so unlike the items it is
    never hot in the CPU's caches; the stdlib snippet beside it shows what this machine does to any code
    run after a pause, payoff's or not.
    """
    xs = list(range(100))
    serial, auto = ParallelExecutor(ParallelConfig(strategy="serial")), ParallelExecutor(ParallelConfig())
    subjects: list[tuple[str, Callable[[], object]]] = [
        ("builtin map, 100 items of abs", lambda: list(map(abs, xs))),
        ("stdlib snippet (json, statistics, fractions)", _stdlib_snippet),
        ("payoff serial, 100 items of abs", lambda: serial.map(abs, xs)),
        ("payoff auto, 100 items of abs", lambda: auto.map(abs, xs)),
    ]
    rows: list[dict[str, Any]] = []
    try:
        for _, run in subjects:
            for _ in range(20):
                run()
        for between_name, between in BETWEEN:
            for name, run in subjects:
                times = []
                for _ in range(calls):
                    between()
                    times.append(_timed(run))
                rows.append({"between": between_name, "subject": name, "median_us": statistics.median(times) * 1e6})
                print(f"| {between_name} | {name} | {rows[-1]['median_us']:.0f} us |", flush=True)
    finally:
        serial.shutdown()
        auto.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path, default=RESULTS / "call_shapes.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # auto's fallback warnings: each row is serial on purpose
    rows: list[dict[str, Any]] = []
    print(f"| shape ({args.items:,} trivial items) | builtin (ms) | payoff (ms) | payoff / builtin | "
          "speedup measured | speedup payoff reported | ran |")
    print("|---|---|---|---|---|---|---|")
    with ParallelExecutor(ParallelConfig(strategy="auto")) as ex:
        for name, builtin, payoff in _shapes(ex, args.items):
            row = _row(ex, *_paired(builtin, payoff, args.repeat))
            rows.append({"shape": name, **row})
            _print(name, row)
    by_cost = _imap_by_cost(args.repeat)
    small = _small_calls(max(3, args.repeat // 3))
    cold = _cold_calls()
    args.out.write_text(json.dumps({"items": args.items, "repeat": args.repeat, "python": platform.python_version(),
                                    "rows": rows, "imap_by_cost": by_cost, "small_calls": small,
                                    "cold_calls": cold}, indent=2) + "\n")


if __name__ == "__main__":
    main()
