"""CPU an item's work used outside the thread that ran it: a native library's threads, processes it started.

An item that calls ``predict`` of a scikit-learn forest fitted with
``n_jobs=-1`` computes in the joblib thread pool the predict starts, one that
calls ``joblib.Parallel`` itself in loky worker processes, while its own
thread waits for them; BLAS on a machine of many cores computes mostly in
OpenBLAS's threads. Read by its own thread's clock such an
item uses almost no CPU, and the probe took it for waiting work: auto ran it on
24-32 threads at 2.5x the time of processes, and the record claimed 21-25x for
a real 1.2-1.5x. Counted here: the process's CPU but that of the thread that
ran the items and of the Python threads that ran before them (a busy thread of
the program's own is not the items'), the processes started meanwhile, and the
children it reaped meanwhile.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from payoff import _procfs
from payoff._outer_pools import _children
from payoff._own_pools import is_own
from payoff._process_tree import descendants

_PROC = Path("/proc")
PROGRAM_BUSY = 0.1
"""The program's own Python threads that used this share of a core meanwhile leave the process's other CPU
unattributed: it cannot be told from their growth between two reads."""


@dataclass(frozen=True)
class Snapshot:
    """CPU nanoseconds used so far: by the whole process, by this thread, by each other thread ``threading``
    knows (the program's own), by each live descendant process, and by the children already reaped."""

    process_ns: int
    own_ns: int
    reaped_ns: int
    clock_ns: int
    python: dict[int, int] = field(default_factory=dict)
    processes: dict[tuple[int, str], int] = field(default_factory=dict)
    children: frozenset[int] = frozenset()
    """Every child process, ended ones not yet waited for and helpers included: one of them reaped later
    brings CPU time this snapshot never measured."""
    ours: frozenset[int] = frozenset()
    """The threads among ``python`` that are payoff's own pools' (``_own_pools.is_own``): another call's."""
    running: dict[int, int] = field(default_factory=dict)
    """The process's other threads that Python did not start and that ran or waited for a CPU when read,
    with their CPU so far: busy before the items began, so busy for the program (see ``_running_native``)."""


def snapshot() -> Snapshot | None:
    """Where CPU is read now; None where ``/proc`` cannot tell (the probe then reads its own thread only).

    The other threads are read first and the process's clock last, so that CPU they use between the reads is in
    the process's start and never taken for the items' (``since`` reads the other way round). A thread running
    on another core has its clock moved on at the scheduler's tick, 4 ms at a time, or when it gives up its
    core: a BLAS thread spinning on after a product, read just after the process's clock, moved 4 ms in between
    and under load a probe of 2 ms sleeps read 1.0 of delegated CPU, 1 call in 4 (clean-clone CI).
    """
    return _read(process_first=False) if (_PROC / "self" / "task").is_dir() else None


def _read(process_first: bool) -> Snapshot:
    """``snapshot``'s reading, or ``since``'s with the process's clock read first and no running threads."""
    clocks = (time.process_time_ns(), time.thread_time_ns()) if process_first else None
    own = threading.get_native_id()
    threads = {t.native_id: t for t in threading.enumerate() if t.native_id is not None and t.native_id != own}
    python = {tid: ns for tid in threads if (ns := _thread_ns(tid)) is not None}
    ours = frozenset(tid for tid, thread in threads.items() if is_own(thread))
    processes = {p: ns for p in descendants([os.getpid()]) if (ns := _process_ns(p[0])) is not None}
    children = frozenset(_children(os.getpid(), _PROC) or ())
    running = {} if process_first else _running_native(own, threads.keys())
    reaped_ns, clock_ns = _reaped_ns(), time.perf_counter_ns()
    own_ns = time.thread_time_ns() if clocks is None else clocks[1]
    process_ns = time.process_time_ns() if clocks is None else clocks[0]
    return Snapshot(process_ns, own_ns, reaped_ns, clock_ns, python, processes, children, ours, running)


class Elsewhere(NamedTuple):
    """CPU nanoseconds used outside the items' thread since a snapshot (``since``), and the part of it the
    native threads already running then used (``spun_ns``)."""

    ns: int
    spun_ns: int


def _spun_ns(before: Snapshot) -> int:
    """CPU nanoseconds the native threads running when ``before`` was taken (``Snapshot.running``) used since.

    Of items that wait, that is the program's (a BLAS pool spinning on after its product); of items that
    compute, it may be theirs: BLAS items run on the very threads a product just before left spinning, and
    taken off there, 600x600 products read one CPU busy and went to two threads of two BLAS threads each
    (review: processes before)."""
    return sum(ns - before.running[tid] for tid in before.running if (ns := _thread_ns(tid)) is not None)


def _running_native(own: int, python: Collection[int]) -> dict[int, int]:
    """The native threads (no Python thread's) running or runnable now, by their CPU time so far.

    OpenBLAS's threads spin for about 0.1 s after each matrix product, waiting for the next (OpenMP runtimes
    do the same): a product of the program's own just before a call kept a core busy beside its probe, and
    4 ms sleeps read 0.99 of delegated CPU and went to processes. An idle pool's threads sleep; the items'
    own native work wakes them after this reading.
    """
    try:
        tids = [int(name) for name in os.listdir(_PROC / "self" / "task")]
    except OSError:
        return {}
    running = {}
    for tid in tids:
        if tid == own or tid in python:
            continue
        try:
            stat = _procfs.read(f"{_PROC}/self/task/{tid}/stat")
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2:][:1] == b"R" and (ns := _thread_ns(tid)) is not None:
            running[tid] = ns
    return running


def since(before: Snapshot) -> Elsewhere:
    """CPU nanoseconds used since ``before`` outside this thread and the program's other Python threads.

    In the process: its CPU time less this thread's and the growth of the Python threads that ran before
    (threads started meanwhile are the items', such as a scikit-learn predict's pool; those that also ended
    are still in the process's time), unless those Python threads were busy themselves: the files are read
    one by one, and busy threads grow between the reads by more than the items' share could be told from
    (native threads busy before: ``Elsewhere.spun_ns``). Outside
    it: the descendants started meanwhile, and the children reaped meanwhile (less what they had used before).
    Descendants that ran before are the program's as likely as the items' (a busy subprocess of its own, a
    dask cluster, or the loky workers of an earlier ``n_jobs=-1`` fit): they are not counted. Nor are the
    children reaped meanwhile when one of them had ended before, or was a helper: the count of reaped CPU
    cannot be split, and an earlier pool's workers, reaped while a probe of 2 ms sleeps ran, made it read 1.0.
    """
    if not (_PROC / "self" / "task").is_dir():
        return Elsewhere(0, 0)
    after = _read(process_first=True)
    spun = _spun_ns(before)  # after the process's clock: see ``snapshot``
    program = sum(after.python[tid] - ns for tid, ns in before.python.items() if tid in after.python)
    # payoff's own threads started meanwhile are another call's pool, not the items' (service trial: a sleeping
    # function probed while another request's first call started its threads read as CPU work, for good)
    pools = sum(after.python[tid] for tid in after.ours - before.python.keys() if tid in after.python)
    in_process = after.process_ns - before.process_ns - (after.own_ns - before.own_ns) - program - pools
    if program > PROGRAM_BUSY * (after.clock_ns - before.clock_ns):
        in_process = 0
    outside = sum(ns for p, ns in after.processes.items() if p not in before.processes)
    gone = sum(ns for p, ns in before.processes.items() if p not in after.processes)
    measured = {pid for pid, _ in before.processes}
    if before.children - after.children <= measured:  # else a child that ended before, reaped meanwhile
        outside += max(0, after.reaped_ns - before.reaped_ns - gone)
    return Elsewhere(max(0, in_process) + max(0, outside), spun)


def _thread_ns(tid: int) -> int | None:
    times = _schedstat(f"{_PROC}/self/task/{tid}")
    return None if times is None else times[0]


def _process_ns(pid: int) -> int | None:
    """CPU time of all the process's threads, in ns (``schedstat``: ``stat``'s clock ticks of 10 ms cannot tell
    the 12 ms an item's loky workers computed from nothing)."""
    times = thread_times(pid)
    return None if times is None else sum(on_cpu for on_cpu, _ in times.values())


def thread_times(pid: int | str = "self") -> dict[int, tuple[int, int]] | None:
    """Each thread of process ``pid``: its CPU time and its waits for a CPU so far (Linux schedstat), in ns;
    None where ``/proc`` cannot tell. A thread that ends while it is read is left out."""
    try:
        tids = os.listdir(f"{_PROC}/{pid}/task")
    except OSError:
        return None
    return {int(tid): t for tid in tids if (t := _schedstat(f"{_PROC}/{pid}/task/{tid}")) is not None}


def _schedstat(task: str) -> tuple[int, int] | None:
    try:
        on_cpu, waited = _procfs.read(f"{task}/schedstat").split()[:2]
        return int(on_cpu), int(waited)
    except (OSError, ValueError):
        return None


def _reaped_ns() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)
