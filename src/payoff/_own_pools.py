"""What of this process's work is payoff's own pools': another call's pool is no item's work (``_delegated_cpu``).

Its threads are marked on the thread object, not read from a name (a user's pool named "payoff..." is the
items': review), and its process-pool starts are counted: a probe that ran while one started cannot tell those
new workers' CPU from processes its items started.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_OWN = "_payoff_pool_thread"
_PROCESS_STARTS = [0, 0]
"""Starts of payoff's process pools begun and ended in this process."""


def mark_own(thread: threading.Thread) -> threading.Thread:
    setattr(thread, _OWN, True)
    return thread


def is_own(thread: threading.Thread) -> bool:
    return getattr(thread, _OWN, False) is True


@contextlib.contextmanager
def starting(processes: bool) -> Iterator[None]:
    """A pool start, counted when it starts ``processes``."""
    _PROCESS_STARTS[0] += processes
    try:
        yield
    finally:
        _PROCESS_STARTS[1] += processes


def process_starts() -> tuple[int, int]:
    """Starts of payoff's own process pools begun and ended so far."""
    return _PROCESS_STARTS[0], _PROCESS_STARTS[1]


def none_started_since(starts: tuple[int, int]) -> bool:
    """Whether no payoff process pool was starting at ``starts`` (a ``process_starts()``) nor began since."""
    return starts[0] == starts[1] and process_starts() == starts
