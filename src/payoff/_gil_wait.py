"""How long a thread back from a blocking call waits for the GIL, measured while threads of waiting work run.

Items that mostly wait (a sleep, a socket, a remote call) run on many more
threads than cores, and each item, back from its wait, queues for the GIL
behind the others: 32 threads of a 1 ms sleep timed each item at 1.8 ms where
a loop takes 1.1 ms, and the record claimed 24x for a real 13x. The item's
clock cannot tell its own wait from the GIL's, and its CPU share is too small
and too noisy a reading to price it by (the same items, probed twice, read
0.06 and 0.12, and were priced at 0.5x and 2x their cost).

So a thread of payoff's own does what such an item does: it sleeps a fixed
time, over and over, and reads how much later than alone it came back (less
its waits for a CPU, which a chunk's own time leaves out already), and
how often it gave up its CPU for it (once for the sleep, and once for each
wait for the GIL that blocked). A chunk's items gave up theirs ``blocked``
times: divided by the sampler's count per wake-up, that is how many times
they came back from a wait, each of which cost the sampler's mean lateness.
The sampler runs only while a call watches it (its thread ends a second
after the last): it holds the GIL about 10 us a wake-up, one wake-up a
millisecond or so.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import deque
from dataclasses import dataclass

from payoff._forks import in_child
from payoff.strategies.start_failure import thread_refused_error
from payoff.worker import run_queue_ns

SAMPLE_SLEEP_SECONDS = 0.001
"""The sampler's sleep: short enough for tens of samples in a call of 50 ms, long enough to hold the GIL
about 1% of the time."""
MIN_SAMPLES = 8
"""Fewer wake-ups than this in a call's window tell nothing: its items are priced as before."""
MIN_FREE = 3
"""Wake-ups of a window that found the GIL free, enough to tell the timer's own lateness in it."""
QUIET_SMOOTHING = 0.05
"""Weight of each free wake-up in the lateness kept for windows with too few of their own."""
IDLE_SECONDS = 1.0
"""The sampler ends after this long without a call watching; the next call starts another."""
KEEP_SAMPLES = 4_096
"""Wake-ups kept for the calls that watch (about four seconds of them)."""
_COUNTED = hasattr(resource, "RUSAGE_THREAD")
"""Whether a thread's voluntary waits can be read here (Linux): without them, nothing is sampled."""


@dataclass(frozen=True)
class GilWaits:
    """What the sampler measured in one window."""

    samples: int
    wait_ns: float
    """Mean lateness of a wake-up above that of those that found the GIL free: the GIL's queue, as a thread back
    from a wait meets it. Those (one switch: the sleep's) hold the timer's own lateness, which an item alone
    pays too (70-120 us on this virtual machine, under load more), not only the lowest few."""
    switches_per_wake: float
    """Times the sampler gave up its CPU per wake-up: 1 when the GIL was free, more when it queued for it."""

    def waits_in(self, blocked: int) -> float:
        """Returns from a wait in a chunk whose thread gave up its CPU ``blocked`` times."""
        return blocked / max(1.0, self.switches_per_wake)


class _Sampler:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers = 0
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._samples: deque[tuple[int, int, int]] = deque(maxlen=KEEP_SAMPLES)
        self._quiet_ns: float | None = None
        """The lateness of wake-ups that found the GIL free, smoothed over all windows."""

    def watch(self) -> int | None:
        """Start sampling (if no other call does); the window's start for ``since``, None where nothing can be
        sampled (then there is nothing to ``unwatch``)."""
        if not _COUNTED:
            return None
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name="payoff-gil-sampler", daemon=True)
                try:
                    thread.start()  # counted as watching only once it runs
                except RuntimeError as exc:  # no thread left (ulimit -u): nothing is sampled, the call goes on
                    if thread_refused_error(exc):
                        return None
                    raise
                self._thread = thread
            self._watchers += 1
            self._wake.notify()
        return time.perf_counter_ns()

    def unwatch(self) -> None:
        with self._lock:
            self._watchers = max(0, self._watchers - 1)

    def since(self, start_ns: int, end_ns: int) -> GilWaits | None:
        """What wake-ups that ended between ``start_ns`` and ``end_ns`` measured; None for too few of them."""
        with self._lock:
            window = [(late, switches) for at, late, switches in self._samples if start_ns <= at <= end_ns]
            kept_quiet = self._quiet_ns
        if len(window) < MIN_SAMPLES:
            return None
        n = len(window)
        free = [late for late, switches in window if switches <= 1]
        if len(free) >= MIN_FREE:
            quiet = sum(free) / len(free)
        else:  # the GIL was hardly ever free: the timer's lateness as earlier windows met it, if any did
            quiet = kept_quiet if kept_quiet is not None else min(late for late, _ in window)
        return GilWaits(n, max(0.0, sum(late for late, _ in window) / n - quiet), sum(s for _, s in window) / n)

    def queued_share(self, start_ns: int, end_ns: int, min_samples: int) -> float | None:
        """The share of the wake-ups begun and ended within the window that queued for the GIL (gave up their CPU
        more than once); None for fewer than ``min_samples``. A wake-up begun before the window waited for
        whatever held the GIL then, not for what ran in it."""
        sleep_ns = int(SAMPLE_SLEEP_SECONDS * 1e9)
        if end_ns - start_ns < min_samples * sleep_ns:  # a probe of cheap items: no lock, no walk
            return None
        window: list[int] = []
        with self._lock:
            for at, late, switches in reversed(self._samples):  # newest first: a window is the last few
                if at < start_ns:
                    break
                if at <= end_ns and at - late - sleep_ns >= start_ns:
                    window.append(switches)
        if len(window) < min_samples:
            return None
        return sum(1 for switches in window if switches > 1) / len(window)

    def _run(self) -> None:
        sleep_ns = int(SAMPLE_SLEEP_SECONDS * 1e9)
        while True:
            with self._lock:
                if not self._watchers:
                    self._wake.wait(IDLE_SECONDS)
                    if not self._watchers:  # no thread of payoff's outlives the calls that need it by long
                        self._thread = None
                        return
            before, switches, queued = time.perf_counter_ns(), _switches(), run_queue_ns()
            time.sleep(SAMPLE_SLEEP_SECONDS)
            after = time.perf_counter_ns()
            late = max(0, after - before - sleep_ns - (run_queue_ns() - queued))
            switched = _switches() - switches
            with self._lock:
                self._samples.append((after, late, switched))
                if switched == 1:
                    self._quiet_ns = late if self._quiet_ns is None else (1 - QUIET_SMOOTHING) * self._quiet_ns \
                        + QUIET_SMOOTHING * late


def _switches() -> int:
    """This thread's voluntary context switches so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


_SAMPLER = _Sampler()
watch = _SAMPLER.watch
unwatch = _SAMPLER.unwatch
since = _SAMPLER.since
queued_share = _SAMPLER.queued_share


def _forget_parent_sampler() -> None:
    """A forked child has no sampler thread, and may have a lock its parent's held: it starts afresh."""
    _SAMPLER.__init__()  # type: ignore[misc]


in_child(_forget_parent_sampler)
