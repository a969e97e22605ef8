"""The benchmark rows' item functions (top level, so every backend can import them)."""

from __future__ import annotations

import time

import numpy as np


def py_2us(x: int) -> int:
    total = 0
    for i in range(38):
        total += i * x
    return total


def xor_sum(x: int, n: int) -> int:
    """The pure-Python rows' work (all but W1): ``n`` rounds of xor, ~50 ns each, holding the GIL."""
    total = 0
    for i in range(n):
        total += i ^ x
    return total


def py_50us(x: int) -> int:
    return xor_sum(x, 1000)


def py_5ms(x: int) -> int:
    return xor_sum(x, 100_000)


_MATS: dict[int, np.ndarray] = {}


def numpy_2ms(x: int) -> float:
    """A GIL-releasing matrix product (BLAS pinned to one thread by the runner)."""
    a = _MATS.get(0)
    if a is None:
        a = _MATS[0] = np.random.default_rng(0).standard_normal((260, 260))
    return float((a @ (a + x)).trace())


def array_sum(a: np.ndarray) -> float:
    return float(a.sum())


# -- rows W7-W12 ----------------------------------------------------------------

UNEVEN_CHEAP_ITEMS = 950
"""Items ``0..949`` of the uneven rows cost ~0.2 ms, items ``950..999`` ~10 ms (50x dearer)."""


def py_uneven(x: int) -> int:
    """~0.2 ms of pure Python for the cheap items, ~10 ms for the dear tail (by item value, so any order works)."""
    n = 200_000 if x >= UNEVEN_CHEAP_ITEMS else 4000
    return xor_sum(x, n)


def wait_5ms(x: int) -> int:
    """Mostly waiting: a 5 ms sleep (I/O, a remote call) and ~0.1 ms of CPU."""
    time.sleep(0.005)
    return xor_sum(x, 2000)


def sleep_1ms(x: int) -> int:
    """Only waiting, and briefly: the GIL's queue behind 30 threads is the size of the wait itself."""
    time.sleep(0.001)
    return x


def sleep_1ms_then_compute(x: int) -> int:
    """A 1 ms wait and ~0.1 ms of pure Python: a share near 0.1, where a few items' CPU reads noisily."""
    time.sleep(0.001)
    return xor_sum(x, 2000)


def ten_short_waits(x: int) -> int:
    """Ten 0.2 ms waits (a chatty protocol): ten returns an item, each queueing for the GIL."""
    for _ in range(10):
        time.sleep(0.0002)
    return x


def mixed_1ms_2ms(x: int) -> int:
    """Half-waiting: ~1 ms of pure Python, then a 2 ms sleep (a remote call that also parses its answer).

    Its CPU share (~0.35) is below 1/cores on 2 cores: threads, more than cores, beat one process per core.
    """
    total = xor_sum(x, 20_000)
    time.sleep(0.002)
    return total


class LargeState:
    """A callable carrying ~5 MiB of state (a lookup table), ~1 ms of pure Python per item.

    Top level and plain-picklable, so every backend can ship it; what each one
    pays to ship it (once per worker, per chunk, per item) is what the row shows.
    """

    def __init__(self, n_bytes: int = 5 * 1024 * 1024) -> None:
        self.table = np.arange(n_bytes // 8, dtype=np.float64)

    def __call__(self, x: int) -> float:
        return xor_sum(x, 20_000) + float(self.table[x % self.table.size])


def abs_like(x: int) -> int:
    """A trivial item: far cheaper than any way of timing it one by one."""
    return x if x >= 0 else -x


def nap(seconds: float) -> float:
    """Warms a pool: sleeping tasks make every worker start before the timing does."""
    time.sleep(seconds)
    return seconds


NEEDLE_FROM = 9_900
"""Items ``0..9899`` of the needle shape cost ~50 us, the last 100 ~2.5 ms (50x dearer): a short sorted tail."""


def py_needle(x: int) -> int:
    n = 50_000 if x >= NEEDLE_FROM else 1000
    return xor_sum(x, n)


def py_one_slow(x: int) -> int:
    """~0.2 ms of pure Python, except item 30: ~150 ms (one slow record early in the input)."""
    n = 3_000_000 if x == 30 else 4000
    return xor_sum(x, n)
