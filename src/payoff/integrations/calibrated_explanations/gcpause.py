"""Pausing the garbage collector around a CE explain, nested and across threads, restored exactly once.

Why: a CE explain allocates hundreds of thousands of small container objects
(each explanation is ~200 of them). Every 700 allocations the collector runs,
and every few runs it scans an older generation, which holds the user's whole
heap. In worker processes that cost ~10% of a chunk; in the caller's process
it competes with both workers for a core and grows with what the user's
process already holds. The objects an explain creates are not garbage (they
are the explanations), so the collections find nothing to free.

The collector's switch is one per process, so pauses are counted: the first
pause records whether it was enabled, the last resume restores that, and a
collector the user had disabled stays disabled.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from payoff import _forks

_lock = _forks.Lock()
_depth = 0
_was_enabled = False


def pause() -> None:
    """Disable the collector until the matching :func:`resume`."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1


def resume() -> None:
    """End one :func:`pause`; the last one re-enables the collector if it was enabled before the first."""
    global _depth
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector paused for the block, restored even when it raises (``KeyboardInterrupt`` included)."""
    pause()
    try:
        yield
    finally:
        resume()
