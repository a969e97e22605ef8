"""payoff's own path for trivial items, call shape by call shape, against the builtin it stands in for.

With items this cheap (``abs``, ``operator.add``: tens of ns) ``auto`` stays serial, so each row measures
what payoff adds to a loop: the probe, the record and its observers, and the per-item machinery of the shape
(``imap`` hands out each result as it is asked for; several iterables are zipped into argument tuples). Every
cell is the lowest of ``--repeat`` runs, the two columns taking turns; the ratio is payoff's time over the
builtin's in the same run.

    python benchmarks/bench_call_shapes.py                  # 200,000 items, 9 repeats (~40 s)
    python benchmarks/bench_call_shapes.py --items 1000000  # the W12 size
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payoff import ParallelConfig, ParallelExecutor

RESULTS = Path(__file__).resolve().parent / "results"


def _best(run: Callable[[], object], times: list[float]) -> None:
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)


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


def _python_work(loops: int) -> Callable[[int], int]:
    def work(x: int) -> int:
        total = 0
        for i in range(loops):
            total += i ^ x
        return total
    return work


ITEM_COSTS = (("~1 us", 25), ("~3 us", 80), ("~10 us", 280), ("~30 us", 900))
"""A serial ``imap`` by item cost: pure Python loops of these many steps (about 40 ns a step here)."""


def _imap_by_cost(repeat: int, items_seconds: float = 0.15) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for name, loops in ITEM_COSTS:
            fn = _python_work(loops)
            n = max(1000, int(items_seconds / (loops * 40e-9)))
            xs = list(range(n))
            loop_times: list[float] = []
            payoff_times: list[float] = []
            for _ in range(repeat):
                _best(lambda: sum(1 for _ in map(fn, xs)), loop_times)  # noqa: B023  # run within the loop
                _best(lambda: sum(1 for _ in ex.imap(fn, xs)), payoff_times)  # noqa: B023
            loop, ours = min(loop_times), min(payoff_times)
            rows.append({"item": name, "items": n, "builtin_seconds": loop, "payoff_seconds": ours})
            print(f"| serial imap, items of {name} ({n:,}) | {loop * 1e3:.2f} | {ours * 1e3:.2f} | "
                  f"{ours / loop:.2f}x | serial |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path, default=RESULTS / "call_shapes.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # auto's fallback warnings: each row is serial on purpose
    rows: list[dict[str, Any]] = []
    print(f"| shape ({args.items:,} trivial items) | builtin (ms) | payoff auto (ms) | ratio | auto ran |")
    print("|---|---|---|---|---|")
    with ParallelExecutor(ParallelConfig(strategy="auto")) as ex:
        for name, builtin, payoff in _shapes(ex, args.items):
            loop_times: list[float] = []
            payoff_times: list[float] = []
            for _ in range(args.repeat):
                _best(builtin, loop_times)
                _best(payoff, payoff_times)
            record = ex.last_record
            ran = "-" if record is None else record.selected_strategy
            loop, ours = min(loop_times), min(payoff_times)
            rows.append({"shape": name, "builtin_seconds": loop, "payoff_seconds": ours, "ran": ran})
            print(f"| {name} | {loop * 1e3:.2f} | {ours * 1e3:.2f} | {ours / loop:.2f}x | {ran} |", flush=True)
    by_cost = _imap_by_cost(args.repeat)
    args.out.write_text(json.dumps({"items": args.items, "repeat": args.repeat, "python": platform.python_version(),
                                    "rows": rows, "imap_by_cost": by_cost}, indent=2) + "\n")


if __name__ == "__main__":
    main()
