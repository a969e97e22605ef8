"""How long a loop in this process waits for a CPU now, measured where loops run: in the caller.

A pool's record prices the serial run it stands against, and on a loaded
machine that loop would have waited for a CPU too. How long depends on where
the other load sits: Linux shares CPUs fairly between scheduling groups (a
session's autogroup, a cgroup) before threads. Programs in the caller's group
(started from the same shell session) take a share from a loop as from each
worker; programs of other sessions and services take only their group's share,
and a single loop may not wait at all while two workers wait half the time.
The pool's waits cannot tell the two apart; a probe or a serial call, run in
the caller, is a loop and measures it. Samples fade with a half-life, since
load comes and goes; when none is newer than 3 s, the caller is a loop for
12 ms of CPU time (only when a pool's workers waited for a CPU).
"""

from __future__ import annotations

import math
import time

from payoff import _forks
from payoff.worker import run_queue_ns, run_queue_readable

HALF_LIFE_SECONDS = 10.0
MIN_CPU_SECONDS = 0.005
"""Less CPU time than this in the recent samples is a few scheduler slices: no measurement."""
SPIN_CPU_SECONDS = 0.012
SPIN_WALL_SECONDS = 0.03
"""A spin stops here however little CPU it got: under 3 busy programs on 2 cores 12 ms of CPU took 32-97 ms,
all of it the caller's latency (the record's wall time is taken before)."""
REFRESH_SECONDS = 3.0

_lock = _forks.Lock()
_cpu = 0.0
_runq = 0.0
_at = 0.0


def note(cpu_ns: int, runq_ns: int, now: float | None = None) -> None:
    """A stretch of items run in the caller alone: its CPU time and its waits for a CPU."""
    global _cpu, _runq, _at
    if cpu_ns <= 0:
        return
    now = time.monotonic() if now is None else now
    with _lock:
        kept = _kept(now)
        _cpu, _runq, _at = _cpu * kept + cpu_ns / 1e9, _runq * kept + max(0, runq_ns) / 1e9, now


def per_cpu_second(now: float | None = None) -> float | None:
    """Seconds a loop here has recently waited for a CPU per second of its CPU time; None when too little ran."""
    now = time.monotonic() if now is None else now
    with _lock:
        kept = _kept(now)
        cpu, runq = _cpu * kept, _runq * kept
    return runq / cpu if cpu >= MIN_CPU_SECONDS else None


def recent_or_measured() -> float | None:
    """:func:`per_cpu_second`, with a sample taken now by spinning here as a loop would when the latest is
    older than ``REFRESH_SECONDS`` or too little is left: one spin reads a few scheduler slices, and
    load comes and goes (one 12 ms spin read 4.2 s of waits per CPU second where loops of the next 10 s
    waited 0.9-2.2), so the estimate rests on several, the latest weighing most."""
    now = time.monotonic()
    recent = per_cpu_second(now)
    if (recent is not None and now - _at < REFRESH_SECONDS) or not run_queue_readable():
        return recent
    cpu0, runq0, wall0 = time.thread_time_ns(), run_queue_ns(), time.monotonic()
    end, wall_end = cpu0 + int(SPIN_CPU_SECONDS * 1e9), wall0 + SPIN_WALL_SECONDS
    while time.thread_time_ns() < end and time.monotonic() < wall_end:
        pass
    note(time.thread_time_ns() - cpu0, run_queue_ns() - runq0)
    return per_cpu_second()


def forget() -> None:
    global _cpu, _runq, _at
    with _lock:
        _cpu = _runq = _at = 0.0


def _kept(now: float) -> float:
    return math.pow(0.5, max(0.0, now - _at) / HALF_LIFE_SECONDS)
