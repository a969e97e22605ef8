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
The sampler runs only while a call watches it (its threads end a second
after the last): it holds the GIL about 10 us a wake-up, one wake-up a
millisecond or so (its sleep itself costs 30-60 us of CPU a wake-up on this
kind of virtual machine, without the GIL).

A short call needs more than one such thread. Its window holds a wake-up
every 2 ms or so where the queue is long, and the queue's lateness is
heavy-tailed (60 us to 10 ms in one window): 100 items of a 1 ms sleep on 22
threads took 20-25 ms, their window held 5-8 wake-ups, under ``MIN_SAMPLES``
in most calls, and their records priced the items at their own time, 1.8x
the loop's (median est/loop of 11 calls; 1 within 10%). Several threads sample
such a call together (``samplers_for``): with three, the median was 1.05 (6
of 11 within 10%), and 40 items' 1.21 against 1.64.
"""

from __future__ import annotations

import contextlib
import math
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
SAMPLES_WANTED = 24
"""Wake-ups a call's window should hold: enough to average a heavy-tailed queue to within about a tenth."""
WAKE_SECONDS = 2 * SAMPLE_SLEEP_SECONDS
"""A sampler's wake-up every this long where the queue is long (its sleep, then about as long a wait)."""
MAX_SAMPLERS = 4
"""Threads that sample one call at most: each wakes about once a millisecond at a CPU cost of its own."""
OUT_OF_ORDER_NS = 20_000_000
"""Samplers append their wake-ups as each gets the lock: a walk back in time stops this far before a window."""
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


def samplers_for(seconds: float | None) -> int:
    """The sampler threads a call expected to last ``seconds`` needs for SAMPLES_WANTED wake-ups (one where
    its length is unknown)."""
    if seconds is None or seconds <= 0:
        return 1
    return max(1, min(MAX_SAMPLERS, math.ceil(SAMPLES_WANTED * WAKE_SECONDS / seconds)))


class _Sampler:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wants: list[int] = []
        """The sampler threads each watching call asked for: the most of them run."""
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        """The sampler threads, oldest first: one ranked at or past the most asked for waits, then ends."""
        self._samples: deque[tuple[int, int, int]] = deque(maxlen=KEEP_SAMPLES)
        self._quiet_ns: float | None = None
        """The lateness of wake-ups that found the GIL free, smoothed over all windows."""

    def watch(self, samplers: int = 1) -> int | None:
        """Start sampling with at least ``samplers`` threads (other calls' may be sampling already); the
        window's start for ``since``, None where nothing can be sampled (then there is nothing to ``unwatch``)."""
        if not _COUNTED:
            return None
        with self._lock:
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            wanted = max([samplers, *self._wants])
            while len(self._threads) < wanted:
                thread = threading.Thread(target=self._run, name="payoff-gil-sampler", daemon=True)
                try:
                    thread.start()  # counted as watching only once it runs
                except RuntimeError as exc:  # no thread left (ulimit -u): fewer sample, or none and the call goes on
                    if not thread_refused_error(exc):
                        raise
                    if not self._threads:
                        return None
                    break
                self._threads.append(thread)
            self._wants.append(samplers)
            self._wake.notify_all()
        return time.perf_counter_ns()

    def unwatch(self, samplers: int = 1) -> None:
        """One call that watched with ``samplers`` threads stops watching."""
        with self._lock, contextlib.suppress(ValueError):
            self._wants.remove(samplers)

    @property
    def _watchers(self) -> int:
        """The calls watching now."""
        return len(self._wants)

    def _idle(self, me: threading.Thread) -> bool:
        """Whether this sampler thread is past the most any watching call asked for, or no longer counted
        (lock held)."""
        return me not in self._threads or self._threads.index(me) >= max(self._wants, default=0)

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
                if at < start_ns - OUT_OF_ORDER_NS:
                    break
                if start_ns <= at <= end_ns and at - late - sleep_ns >= start_ns:
                    window.append(switches)
        if len(window) < min_samples:
            return None
        return sum(1 for switches in window if switches > 1) / len(window)

    def _run(self) -> None:
        sleep_ns = int(SAMPLE_SLEEP_SECONDS * 1e9)
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._idle(me):
                    self._wake.wait(IDLE_SECONDS)
                    if self._idle(me):  # no thread of payoff's outlives the calls that need it by long
                        if me in self._threads:
                            self._threads.remove(me)
                        return
            # reading the run queue (a file read) lets the GIL go and takes it back, which may queue: read
            # outside the window, it counted waits the lateness left out, and 32 threads of ten 0.2 ms sleeps an
            # item gave up their CPU 3.5 times a return where the sampler read 4.2-5.2 (their returns under-
            # counted by a quarter: +61% to +89% recorded)
            queued = run_queue_ns()
            switches, before = _switches(), time.perf_counter_ns()
            time.sleep(SAMPLE_SLEEP_SECONDS)
            after = time.perf_counter_ns()
            switched = _switches() - switches
            late = max(0, after - before - sleep_ns - (run_queue_ns() - queued))
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
