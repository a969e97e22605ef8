"""A small request's latency while a long one runs on the same executor, against a loop in each request's thread.

    python benchmarks/bench_small_beside_big.py

A service shares one executor (docs/quickstart.md). The long call (20,000 items) starts in a thread; 0.3 s later
the small one (800 items) runs; each round prints the small call alone and beside the long one, for payoff and
for the plain peer, a loop in each request thread.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from payoff import ParallelExecutor


def work(x: int) -> float:
    return sum(math.sin(x * i) for i in range(2000))


SMALL, LONG = list(range(800)), list(range(20_000))


def timed(run: Callable[[list[int]], Any]) -> tuple[float, float]:
    t = time.perf_counter()
    run(SMALL)
    alone = time.perf_counter() - t
    other = threading.Thread(target=run, args=(LONG,))
    other.start()
    time.sleep(0.3)
    t = time.perf_counter()
    run(SMALL)
    beside = time.perf_counter() - t
    other.join()
    return alone, beside


def main() -> None:
    warnings.simplefilter("ignore")
    with ParallelExecutor() as ex:
        ex.map(work, SMALL)  # a warm pool, the function measured
        for n in range(3):
            ours = timed(lambda items: ex.map(work, items))
            loop = timed(lambda items: [work(x) for x in items])
            print(f"round {n}: payoff small alone {ours[0]:.2f} s, beside the long call {ours[1]:.2f} s | "
                  f"loop per thread {loop[0]:.2f} s, {loop[1]:.2f} s", flush=True)


if __name__ == "__main__":
    main()
