"""The benchmark rows' item functions (top level, so every backend can import them)."""

from __future__ import annotations

import numpy as np


def py_2us(x: int) -> int:
    total = 0
    for i in range(38):
        total += i * x
    return total


def py_50us(x: int) -> int:
    total = 0
    for i in range(1000):
        total += i ^ x
    return total


def py_5ms(x: int) -> int:
    total = 0
    for i in range(100_000):
        total += i ^ x
    return total


_MATS: dict[int, np.ndarray] = {}


def numpy_2ms(x: int) -> float:
    """A GIL-releasing matrix product (BLAS pinned to one thread by the runner)."""
    a = _MATS.get(0)
    if a is None:
        a = _MATS[0] = np.random.default_rng(0).standard_normal((260, 260))
    return float((a @ (a + x)).trace())


def array_sum(a: np.ndarray) -> float:
    return float(a.sum())
