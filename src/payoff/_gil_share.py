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
come, all queued); beside numpy work most find it free. Steady readings of
30 ms: 0.03-0.17 on large-array numpy, FFTs and tree fits, 0.72-0.77 on a
bootstrap of 500 points (Python between short numpy calls), 5 wake-ups, most
queued, on a Python loop.

It is read on a function's second call, once its cost says the items are CPU
work worth it, in a probe of ``GIL_PROBE_SECONDS`` (an ordinary probe's 2 ms
holds two or three wake-ups, too few: such readings sent a GIL-bound
bootstrap to threads in 3 of 8 runs), and again once its cost shifts. A
window of too few wake-ups reads as held. A reading only opens a try: threads
and processes each run a call, and the faster by the wall clock keeps the work
(``planning.Planner._gil_free``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from payoff import _gil_wait

GIL_DEMAND_FOR_THREADS = 0.6
"""Threads are tried when the workers together would want the GIL at most this share of the time (the queued
share times the workers): beyond it items queue for it behind each other, and processes are the surer gain.
A numpy bootstrap that 2 threads ran 1.85x faster than one read 0.0-0.27 in sampled probes (trial 48)."""
GIL_PROBE_SECONDS = 0.012
"""The budget of a probe that samples the GIL (the items' own time; an ordinary probe's is 2 ms): about ten of
the sampler's wake-ups where the GIL is mostly free."""
GIL_UNREAD = 1.0
"""What a sampled probe of too few wake-ups stores: no sign the items let the GIL go (beside pure Python the
sampler wakes once in 5 ms), and no reason to read it again at that cost."""
MIN_SAMPLES = 8
"""Wake-ups a reading needs: items that hold the GIL let the sampler wake once in 5 ms, so eight that mostly
found it free do not come beside them. Readings of three or four (a 2 ms probe's) sent a 2,000-point bootstrap,
GIL-bound, to threads in 3 of 8 runs (trial 48)."""


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
