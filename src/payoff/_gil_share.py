"""How much of their time CPU-bound items hold the GIL, read while the probe runs them in the caller.

Items that compute in a C library that lets the GIL go (numpy on large
arrays, a scikit-learn tree's fit, an FFT) run side by side on threads as
well as on processes, and threads send nothing: a numpy bootstrap (20
resamples of 20,000 points an item) ran in 81 ms on 2 threads, 184 ms on 2
worker processes and 307 ms in a loop (trial 47, F3; a loop in the main
thread also paid glibc's fresh pages for each large temporary, which a
thread's arena keeps). The item's own clocks cannot tell such work from pure
Python: both keep a core busy.

The GIL sampler (``payoff._gil_wait``) can. Its thread wakes every
millisecond and queues for the GIL when another thread holds it: beside pure
Python it waits the switch interval at each wake-up (5 ms, so few wake-ups
come, all queued); beside numpy work most find it free. A probe of 30 ms read
queued shares of 0.03-0.17 on large-array numpy, FFT and tree fits, 0.72-0.77
on a bootstrap of 500 points (Python between short numpy calls), and 5 wake-ups
in 30 ms, 3-4 of them queued, on a Python loop. Only a window of enough
wake-ups is a reading: a short probe, or one whose items hold the GIL, reads
none, and those items go to processes as before.

A reading only opens a try: the planner keeps threads while their measured
gain stands beside the processes' (``planning.Planner._gil_free``), and the
GIL's share is read again whenever a probe runs long enough.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from payoff import _gil_wait

GIL_DEMAND_FOR_THREADS = 0.4
"""Threads are tried when the workers together would want the GIL at most this share of the time (the queued
share times the workers): beyond it items queue for it behind each other, and processes are the surer gain.
Readings are of a few wake-ups: one queued of four (0.25 on 2 workers) tried threads on items that ran there
at 1.21x the loop against 1.8x on processes (trial 48), where work that threads sped up read 0.0-0.15."""
MIN_SAMPLES = 3
"""Wake-ups a reading needs. A probe is short (3-10 ms for numpy items on a first call), and items that hold
the GIL let the sampler wake once in 5 ms, so three wake-ups that mostly found it free are already rare
beside them; a wrong try costs a call or two, which the measured gains then correct."""
MIN_PROBE_SECONDS = 0.005
"""A probe expected to last less than this is not sampled: too few wake-ups, for a thread started each time."""


class Reading:
    """The share of a window's wake-ups that queued for the GIL; ``share`` stays None without enough of them.

    The window is the block's unless ``around`` marks the items' own part of it: payoff's own Python around
    them (reading ``/proc``, sizing pickles) holds the GIL too, and read with them made a bootstrap whose items
    let it go 85% of their time look as if they held it 56% of it.
    """

    __slots__ = ("end_ns", "share", "start_ns")

    def __init__(self, start_ns: int) -> None:
        self.share: float | None = None
        self.start_ns, self.end_ns = start_ns, 0

    @contextmanager
    def around(self) -> Iterator[None]:
        self.start_ns = time.perf_counter_ns()
        try:
            yield
        finally:
            self.end_ns = time.perf_counter_ns()


@contextmanager
def reading(wanted: bool) -> Iterator[Reading]:
    """Sample the GIL while the block runs (when ``wanted``, and where the sampler can count its switches)."""
    start = None
    if wanted:
        with contextlib.suppress(RuntimeError):  # no thread left to sample with: the probe runs unread
            start = _gil_wait.watch()
    got = Reading(start or 0)
    if start is None:
        yield got
        return
    try:
        yield got
    finally:
        _gil_wait.unwatch()
        got.share = _gil_wait.queued_share(got.start_ns, got.end_ns or time.perf_counter_ns(), MIN_SAMPLES)


def threads_may_beat_processes(held: float | None, workers: int) -> bool:
    """Whether ``workers`` threads of items that held the GIL a ``held`` share of their time can keep as many
    CPUs busy as worker processes would, the GIL their only queue."""
    return held is not None and held * workers <= GIL_DEMAND_FOR_THREADS
