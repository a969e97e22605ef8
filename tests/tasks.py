"""Top-level task functions the tests send to worker processes."""

from __future__ import annotations

import os
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def spin(x: int, n: int = 2000) -> int:
    total = 0
    for i in range(n):
        total += i ^ x
    return total


def sleep_then_square(x: int, seconds: float = 0.002) -> int:
    time.sleep(seconds)
    return x * x


def long_task(x: int) -> int:
    time.sleep(30)
    return x


def die_in_worker(item: tuple[int, int]) -> int:
    """Kills the worker process on item 5, but only in a child, never in the parent."""
    i, parent = item
    if i == 5 and os.getpid() != parent:
        os._exit(3)
    return i * 10


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise KeyError(f"bad item {x}")
    return x


def failing_initializer() -> None:
    raise RuntimeError("initializer refuses to start")


def identity(x: Any) -> Any:
    return x


def pid_of(_: Any) -> int:
    return os.getpid()
