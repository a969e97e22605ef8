"""payoff's own path for trivial items, call shape by call shape, against the builtin it stands in for.

With items this cheap (``abs``, ``operator.add``: tens of ns) ``auto`` stays serial, so each row measures
what payoff adds to a loop: the probe, the record and its observers, and the per-item machinery of the shape
(``imap`` hands out each result as it is asked for; several iterables are zipped into argument tuples). Every
cell is the lowest of ``--repeat`` runs, the two columns taking turns; the ratio is payoff's time over the
builtin's in the same run.

    python benchmarks/bench_call_shapes.py                  # 200,000 items, 9 repeats (~20 s)
    python benchmarks/bench_call_shapes.py --items 1000000  # the W12 size
"""

from __future__ import annotations

import argparse
import itertools
import operator
import time
import warnings
from collections.abc import Callable

from payoff import ParallelConfig, ParallelExecutor


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # auto's fallback warnings: each row is serial on purpose
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
            print(f"| {name} | {loop * 1e3:.2f} | {ours * 1e3:.2f} | {ours / loop:.2f}x | {ran} |", flush=True)


if __name__ == "__main__":
    main()
