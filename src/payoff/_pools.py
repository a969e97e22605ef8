"""The executor's pools, keyed by everything that defines one, and leased by the calls using them.

A pool is rebuilt when what defines it changes (strategy, workers,
initializer and its arguments, start method, cluster address or client), as
loky's reusable executor does, so a changed config never runs on a pool built
for another. Calls hold a lease while they use a pool: ``shutdown`` retires a
pool and closes it when its last call is done, and only the call that saw a
pool break discards it; the others retry on a fresh one.

A pool is stopped only by the process that started it: a child made by
``os.fork`` inherits the registry, but the pool's workers are its parent's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any, Protocol

from payoff import _exit, _forks
from payoff._extras import imports_undone_if_cut
from payoff.config import ParallelConfig
from payoff.errors import ModuleReloadedWarning, PoolStartTimeoutError
from payoff.observers import warn_at_call_site
from payoff.strategies import Strategy
from payoff.strategies.base import CANCEL_ALL, START_WAIT_SLICE_SECONDS, StartStop
from payoff.strategies.reloads import first_told
from payoff.strategies.start_failure import (
    REFUSED_RETRY_MAX_SECONDS,
    REFUSED_RETRY_SECONDS,
    ProcessesRefused,
    processes_refused,
    start_failure_detail,
)


class CallStop(StartStop, Protocol):
    """A start's bound as the executor hands it over: the calling thread's calls, told when it timed out."""

    def start_failed(self, error: PoolStartTimeoutError) -> None: ...


def _same(a: object, b: object) -> bool:
    """Equality that survives values whose ``==`` is not a bool (arrays) or raises."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


@dataclass(frozen=True, eq=False)
class PoolKey:
    """What defines a pool; a pool serves the calls whose keys it ``serves``."""

    strategy: str
    workers: int
    initializer: Any = None
    initargs: tuple[Any, ...] = ()
    start_method: str | None = None
    address: str | None = None
    target: Any = None
    """A user's executor or dask Client, compared by identity."""
    inner_threads: int | None = None
    """``ParallelConfig.inner_threads`` of a process pool: its workers applied it when they started."""

    def serves(self, other: PoolKey) -> bool:
        """Whether this pool can run a call that asks for ``other``: the same one, or a thread pool with at least
        the threads it asks for (auto sizes threads per call for waiting work; ``submit`` asks for the cores).
        The call then keeps to the workers it planned; a process pool matches its count exactly."""
        enough = self.workers == other.workers or (self.strategy == "threads" and self.workers > other.workers)
        return (self.strategy == other.strategy and enough
                and self.target is other.target and self.start_method == other.start_method
                and self.address == other.address and self.inner_threads == other.inner_threads
                and _same(self.initializer, other.initializer)
                and len(self.initargs) == len(other.initargs)
                and all(_same(a, b) for a, b in zip(self.initargs, other.initargs, strict=True)))


def pool_key(config: ParallelConfig, strategy: str, workers: int) -> PoolKey:
    """The key of the pool ``config`` describes for ``strategy`` with ``workers``."""
    target = config.strategy if not isinstance(config.strategy, str) else None
    return PoolKey(strategy, workers, config.worker_initializer, config.worker_init_args, config.start_method,
                   config.address if strategy == "dask" else None, target,
                   config.inner_threads if strategy in ("processes", "joblib") else None)


@dataclass(eq=False)
class _Entry:
    pool: Strategy
    key: PoolKey
    leases: int = 0
    taken: int = 0
    """Leases ever given on this pool: one taken while a call held its own says the call shared the pool."""
    retired: bool = False
    closed: bool = False
    pid: int = field(default_factory=os.getpid)
    """The process that started the pool: the only one that may stop it."""
    holders: dict[int, int] = field(default_factory=dict, repr=False)
    """The leases held now, by number: when each was taken (monotonic ns)."""
    spans: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    """Chunks that ended while two or more leases were held: (start ns, end ns, lease number)."""
    held: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    """Leases given back while others were held: (taken ns, given back ns, lease number)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Guards ``holders``, ``spans`` and ``held``, which chunks and calls update from their own threads."""

    @property
    def ours(self) -> bool:
        return self.pid == os.getpid()

    def hold(self, number: int, pool: Strategy, started: bool = False, seconds: float = 0.0,
             watch: bool = True) -> Lease:
        """Lease number ``number`` on this pool; one that ``watch``es (a map's) is noted as held: while another
        is held too, chunks are kept for it. A ``submit`` watches nothing: it never asks what others held, and
        kept in ``holders`` for its whole run (a task that runs for hours) it kept every later chunk."""
        lease = Lease(pool, started, seconds, self, _shared=self.leases > 1, _taken=number)
        if watch:
            with self.lock:
                self.holders[number] = lease.since_ns
        return lease

    def let_go(self, number: int) -> None:
        """A lease ends, kept in ``held`` while another is held (whose idle workers it shared); spans and leases
        that ended before every lease still held began are no one's concern now."""
        with self.lock:
            since = self.holders.pop(number, None)
            if since is not None and self.holders:
                self.held.append((since, time.monotonic_ns(), number))
            oldest = min(self.holders.values(), default=None)
            self.spans = [] if oldest is None else [s for s in self.spans if s[1] > oldest]
            self.held = [] if oldest is None else [h for h in self.held[-HELD_KEPT:] if h[1] > oldest]


@dataclass
class Lease:
    """A call's hold on a pool; ``started`` is set when this call paid for starting it."""

    pool: Strategy
    started: bool = False
    start_seconds: float = 0.0
    _entry: _Entry | None = field(default=None, repr=False)
    _shared: bool = field(default=False, repr=False)
    _taken: int = field(default=0, repr=False)
    since_ns: int = field(default_factory=time.monotonic_ns)
    """When the lease was taken (monotonic ns, the clock of chunk stamps)."""

    def shared(self) -> bool:
        """Whether other work (a ``submit``, another call) held the pool at any time during this lease: its
        queue and workers were not this call's alone, so its waits say nothing of the pool's own costs."""
        entry = self._entry
        return self._shared or (entry is not None and entry.taken != self._taken)

    def crowded(self) -> bool:
        """Whether another call holds a lease on this pool now (its chunks queue with this call's)."""
        entry = self._entry
        return entry is not None and len(entry.holders) > 1

    def ran(self, start_ns: int, end_ns: int) -> None:
        """A chunk of this lease's call ran on the pool: kept while another lease is held, which may need it."""
        entry = self._entry
        if entry is None:
            return
        with entry.lock:
            if len(entry.holders) > 1:
                entry.spans.append((start_ns, end_ns, self._taken))

    def held_by_others_ns(self, workers: int, own: Sequence[tuple[int, int]] = ()) -> int:
        """Worker time of the call's ``workers`` that was not the call's since the lease was taken: what other
        calls' chunks held, and on a pool of just the call's workers, of the time they sat idle, the share of
        the other calls holding the pool then (each of ``n`` calls open at once is given ``1/n`` of it). Each
        call counted all the idle time as its own, so six calls sharing a pool 84-88% busy summed to 40-46%
        utilization, under the alert's line (hunt 69). ``own``: the call's own chunks' (start, end) stamps.

        Counted from the chunks that ended by now: another call's chunk still running is not known to
        have started (a process worker stamps it when it ends), so that part is left out, never guessed.
        """
        entry = self._entry
        if entry is None:
            return 0
        until = time.monotonic_ns()
        with entry.lock:
            others = [(start, end) for start, end, number in entry.spans if number != self._taken]
            leases = [(since, until) for number, since in entry.holders.items() if number != self._taken]
            leases += [(since, end) for since, end, number in entry.held if number != self._taken]
        room = max(0, self.pool.workers - workers)
        held = held_ns(others, self.since_ns, until, workers, room)
        if not leases:
            return held
        return held + idle_share_ns(own, others, leases, self.since_ns, until, workers, room)


def idle_share_ns(own: Sequence[tuple[int, int]], others: Sequence[tuple[int, int]],
                  leases: Sequence[tuple[int, int]], since_ns: int, until_ns: int, workers: int,
                  room: int = 0) -> int:
    """Of the idle time of a call's ``workers`` from ``since_ns`` to ``until_ns``, the part that was the other
    calls': ``k/(k+1)`` of it while ``k`` others held the pool (their ``leases``), each of which could have run a
    chunk there as well as this one. On a pool ``room`` workers larger than the call's, only while the others'
    chunks took all of those: until then they had spare workers of their own (auto's 32-thread pools read 0.65-
    0.82 for calls 50% busy when all idle time was shared; 0.74 for a full 4-thread pool when none was, review
    75). The workers are idle where neither the call's chunks (``own``) nor the others' beyond ``room`` ran."""
    events: list[tuple[int, int, int]] = []
    for kind, spans in ((_OWN, own), (_OTHERS, others), (_OPEN, leases)):
        for start, end in spans:
            start, end = max(start, since_ns), min(end, until_ns)
            if start < end:
                events += [(start, kind, 1), (end, kind, -1)]
    events.sort()
    running = {_OWN: 0, _OTHERS: 0, _OPEN: 0}
    share, last = 0.0, since_ns
    for at, kind, step in events:
        if running[_OPEN] and running[_OTHERS] >= room:
            idle = workers - min(workers, running[_OWN] + running[_OTHERS] - room)
            share += idle * (at - last) * running[_OPEN] / (running[_OPEN] + 1)
        running[kind] += step
        last = at
    return int(share)


_OWN, _OTHERS, _OPEN = 0, 1, 2
HELD_KEPT = 1_000
"""The leases given back a pool keeps while another is held: a long ``imap`` beside thousands of short calls kept
one each, and each call's release read them all (review 73)."""


def held_ns(spans: Sequence[tuple[int, int]], since_ns: int, until_ns: int, workers: int, room: int) -> int:
    """Worker time of a call's ``workers`` that ``spans`` (other work's chunks) held from ``since_ns`` to ``until_ns``.

    A pool with ``room`` workers beyond the call's (a larger warm thread pool)
    runs that much other work beside the call without taking any of its workers.
    """
    inside = [(max(start, since_ns), min(end, until_ns)) for start, end in spans
              if start < until_ns and end > since_ns]
    events = sorted([(start, 1) for start, _ in inside] + [(end, -1) for _, end in inside])
    held, running, last = 0, 0, since_ns
    for at, step in events:
        held += max(0, min(workers, running - room)) * (at - last)
        running, last = running + step, at
    return held


class PoolRegistry:
    """At most one current pool per strategy name, plus retired pools still finishing their calls."""

    def __init__(self) -> None:
        self._lock = _forks.Lock()  # counted: a collection may close a call inside it (_forks.holding_a_lock)
        self._idle = threading.Condition(self._lock)  # type: ignore[arg-type]
        self._start_lock = _forks.Lock()
        self._refused: dict[str, tuple[float, float, str]] = {}
        """Per strategy, a start the OS refused a process: when to try again, the wait, and what it said."""
        self._current: dict[str, _Entry] = {}
        self._retired: list[_Entry] = []
        self._starting: PoolKey | None = None
        self._starting_retired = False
        """A retirement that rejected the pool being started: it serves its call only."""
        self._joining = 0
        """Shutdowns waiting to join the retired pools: a pool whose last call ends is left for them to close."""
        self.closed = False
        """Set by the executor's shutdown: a pool whose start was already under way serves its call only."""
        self.gentle = False
        """Set by ``shutdown(cancel_futures=True)`` until the executor reopens: a pool a call discards then
        (the call was cancelled) keeps its running work, as ``concurrent.futures`` does; its queued work is
        cancelled and it closes once its last lease is given back."""
        self.stop_for_caller: Callable[[], CallStop | None] | None = None
        """What bounds a start for the calling thread (its calls' cancel tokens and deadlines), if anything."""

    def lease(self, key: PoolKey, make: Callable[[], Strategy], stop: CallStop | None = None, *,
              watch: bool = True) -> Lease:
        """The current pool for ``key``, started now if there is none; raises what a failed start raised.

        ``watch=False`` for a lease that never asks ``held_by_others_ns`` (a ``submit``): no chunks are kept
        for it.

        ``stop`` (by default what ``stop_for_caller`` finds for the calling thread) bounds the wait for
        another call's start and this start itself: when it expires a ``PoolStartTimeoutError`` is raised,
        when it is set a ``CancelledError``, and the half-started pool is killed.
        """
        self._retire_outdated(key.strategy)
        self._retire_lost(key.strategy)
        lease = self._take(key, watch)
        if lease is not None:
            return lease
        if stop is None and self.stop_for_caller is not None:
            stop = self.stop_for_caller()
        self._enter_start(key, stop)  # one start at a time: two first calls must not both start a pool
        try:
            lease = self._take(key, watch)
            if lease is not None:
                return lease
            self._not_refused_lately(key.strategy)
            with self._lock:
                self._starting, self._starting_retired = key, False
            with imports_undone_if_cut():  # a Ctrl-C while the backend imports leaves no half-made module
                pool = make()
            t0 = time.perf_counter()
            try:
                with imports_undone_if_cut():
                    pool.start(stop)
            except BaseException as exc:
                with self._lock:
                    self._starting = None
                pool.kill()
                if isinstance(exc, PoolStartTimeoutError) and stop is not None:
                    stop.start_failed(exc)
                self._note_refusal(key.strategy, exc)
                raise
            self._refused.pop(key.strategy, None)
            seconds = time.perf_counter() - t0
            _exit.stay_first()  # a backend's own exit hook may have been registered by this start
            entry = _Entry(pool, key, leases=1, taken=1)
            with self._lock:
                self._starting = None
                if self._starting_retired or self.closed:  # shut down (or reconfigured) while starting
                    entry.retired = True
                    self._retired.append(entry)
                    to_close = []
                else:
                    old = self._current.get(key.strategy)
                    self._current[key.strategy] = entry
                    to_close = self._retire(old) if old is not None else []
        finally:
            self._start_lock.release()
        _close(to_close)
        return entry.hold(1, pool, True, seconds, watch)

    def _not_refused_lately(self, strategy: str) -> None:
        """Raises ``ProcessesRefused`` while a start of ``strategy`` the OS refused a process is recent."""
        refused = self._refused.get(strategy)
        if refused is not None and time.monotonic() < refused[0]:
            raise ProcessesRefused(refused[2], refused[1])

    def _note_refusal(self, strategy: str, exc: BaseException) -> None:
        if not processes_refused(exc):
            return
        last = self._refused.get(strategy)
        wait = REFUSED_RETRY_SECONDS if last is None else min(REFUSED_RETRY_MAX_SECONDS, 2 * last[1])
        self._refused[strategy] = (time.monotonic() + wait, wait, start_failure_detail(strategy, exc))

    def _retire_outdated(self, strategy: str) -> None:
        """Retire the current ``strategy`` pool if a module of the user's was reloaded since its workers
        started: they hold the old code, and a function of it (or calling into it) travels by name, so the
        call would return the old code's results. Its calls under way finish on it; the next start is this
        call's, and its record shows it as ``pool_start`` overhead."""
        with self._lock:
            entry = self._current.get(strategy)
            if entry is None or not entry.ours or entry.pool.broken:
                return
            reloads = entry.pool.outdated()
            if not reloads:
                return
            del self._current[strategy]
            to_close = self._retire(entry)
        _close(to_close)  # first: a warnings filter set to "error" raises from the warning
        for module in first_told(reloads):
            warn_at_call_site(ModuleReloadedWarning(
                f"payoff: {module} was reloaded after the pool's workers started: starting fresh workers so "
                "they run the new code"))

    def _retire_lost(self, strategy: str) -> None:
        """Retire the current ``strategy`` pool if it lost a worker while no call held it (the OOM killer, an
        operator): no call's item did it, so none is blamed. Leased as it was, the next call found it broken
        and its function was marked as one that crashes workers, for good."""
        with self._lock:
            entry = self._current.get(strategy)
            if entry is None or not entry.ours or entry.pool.broken or entry.leases \
                    or not entry.pool.lost_a_worker():
                return
            entry.pool.broken = True
            del self._current[strategy]
            to_close = self._retire(entry)
        _close(to_close)

    def _enter_start(self, key: PoolKey, stop: CallStop | None) -> None:
        """Take the start lock, waiting no longer than the call may (another call's start may be stalled)."""
        if stop is None:
            self._start_lock.acquire()  # that start is bounded itself, by its pool_start_timeout at most
            return
        began = time.monotonic()
        while True:
            left = stop.seconds_left()
            slice_ = START_WAIT_SLICE_SECONDS if left is None else max(0.0, min(START_WAIT_SLICE_SECONDS, left))
            if self._start_lock.acquire(timeout=slice_):
                return
            if stop.expired():
                error = PoolStartTimeoutError(
                    f"payoff: the call's timeout ran out while it waited {time.monotonic() - began:.1f} s for "
                    f"another call's {key.strategy} pool start, which was still starting{self._starting_guess()}",
                    by_call=True)
                stop.start_failed(error)
                raise error
            if stop.is_set():
                raise CancelledError(f"payoff: the call was cancelled while it waited for a {key.strategy} "
                                     "pool start")

    def _starting_guess(self) -> str:
        """Why another call's start may be slow: its initializer, if it has one; a guess names nothing else."""
        starting = self._starting
        return " (a slow or stalled worker_initializer?)" if starting is not None and starting.initializer \
            is not None else ""

    def _take(self, key: PoolKey, watch: bool = True) -> Lease | None:
        with self._lock:
            entry = self._current.get(key.strategy)
            if entry is None or entry.pool.broken or not entry.key.serves(key):
                return None
            entry.leases += 1
            entry.taken += 1
            return entry.hold(entry.taken, entry.pool, watch=watch)

    def release(self, lease: Lease, *, in_callback: bool = False) -> None:
        """Give a lease back (once; later calls do nothing). The last lease on a retired pool closes it.

        ``in_callback``: called from a future's done-callback, which runs on the
        pool's own thread; closing the pool from there is left to another thread.
        """
        with self._lock:
            entry, lease._entry = lease._entry, None
            if entry is None:
                return
            entry.leases -= 1
            entry.let_go(lease._taken)
            to_close = [entry] if entry.retired and entry.leases == 0 and not entry.closed \
                and not self._joining else []
            for e in to_close:
                e.closed = True
            self._retired = [e for e in self._retired if not e.closed]
            self._idle.notify_all()
        if to_close and in_callback:
            threading.Thread(target=_close, args=(to_close,), name="payoff-close", daemon=True).start()
        else:
            _close(to_close)

    def discard(self, pool: Strategy) -> None:
        """The caller saw ``pool`` break (or must stop it now): nobody gets it again, and it is killed.

        While ``gentle`` (a ``shutdown(cancel_futures=True)``), it is retired instead: its queued work is
        cancelled and its running work finishes.
        """
        pool.broken = True
        with self._lock:
            gentle = self.gentle
            entry = self._current.get(pool.name)
            if entry is not None and entry.pool is pool:
                del self._current[pool.name]
                if gentle:
                    entry.retired = True
                    self._retired.append(entry)
                else:
                    entry.retired = entry.closed = True
            foreign = (entry is not None and entry.pool is pool and not entry.ours) \
                or any(e.pool is pool and not e.ours for e in self._retired)
        if foreign:
            return
        if gentle:
            pool.cancel_queued()
        else:
            pool.kill()

    def cancel_queued(self) -> None:
        """Cancel the work no worker has taken yet, on every pool of ours; running work goes on."""
        with self._lock:
            entries = [e for e in (*self._current.values(), *self._retired) if e.ours and not e.closed]
        for e in entries:
            e.pool.cancel_queued()

    def retire(self, keep: Callable[[PoolKey], bool] = lambda key: False, *, close_idle: bool = True) -> None:
        """Take every current pool whose key ``keep`` rejects out of service; idle ones close now without
        waiting, unless ``close_idle`` is False: then the caller must call :meth:`wait_closed`, which closes
        every retired pool, busy ones too once their calls end, and joins their workers."""
        with self._lock:
            if self._starting is not None and not keep(self._starting):
                self._starting_retired = True
            if not close_idle:
                self._joining += 1
            names = [n for n, e in self._current.items() if not keep(e.key)]
            to_close = [c for n in names for c in self._retire(self._current.pop(n), close_idle)]
        _close(to_close)

    def _retire(self, entry: _Entry, close_idle: bool = True) -> list[_Entry]:
        entry.retired = True
        if close_idle and entry.leases == 0 and not entry.closed:
            entry.closed = True
            return [entry]
        self._retired.append(entry)
        return []

    def wait_closed(self) -> None:
        """Block until a start under way is over and every retired pool's calls are done; close them politely.

        A pool started while this waits was begun before the retirement, so it
        is retired on arrival and waited for too.
        """
        with self._start_lock:
            pass
        with self._lock:
            try:
                while any(e.leases for e in self._retired):
                    self._idle.wait(0.2)
            finally:
                self._joining = max(0, self._joining - 1)
            todo = [e for e in self._retired if not e.closed]
            for e in todo:
                e.closed = True
            self._retired = [e for e in self._retired if not e.closed]
        for e in todo:
            if e.ours:
                e.pool.shutdown(wait=True)

    def kill_all(self) -> None:
        """Every pool, current and retired, stopped now (cancel, interpreter exit)."""
        with self._lock:
            entries = [*self._current.values(), *self._retired]
            self._current.clear()
            self._retired = []
            for e in entries:
                e.retired = e.closed = True
        for e in entries:
            if e.ours:
                e.pool.broken = True
                e.pool.stopped_by = e.pool.stopped_by or CANCEL_ALL  # a call racing it reruns, blames no item
                e.pool.kill()

    def current(self) -> list[Strategy]:
        with self._lock:
            return [e.pool for e in self._current.values()]

    def calls_served(self) -> dict[str, int]:
        """The calls (maps, submits) each current pool of this process has served, by strategy."""
        with self._lock:
            return {n: e.taken for n, e in self._current.items() if e.ours}

    def warm(self) -> frozenset[str]:
        with self._lock:
            return frozenset(n for n, e in self._current.items() if not e.pool.broken)

    def sends_by_value(self, strategy: str, fn: Callable[[Any], Any]) -> bool:
        """Whether the warm pool of ``strategy`` would send ``fn`` by value (``Strategy.sends_by_value``)."""
        with self._lock:
            entry = self._current.get(strategy)
        return entry is not None and not entry.pool.broken and entry.pool.sends_by_value(fn)

    def warm_processes(self) -> dict[str, frozenset[int]]:
        """The worker process ids of each warm pool that has any (``planning.Call.warm_processes``)."""
        with self._lock:
            pools = [(n, e.pool) for n, e in self._current.items() if not e.pool.broken]
        return {n: frozenset(pids) for n, pool in pools if (pids := pool.process_ids())}

    def busy(self) -> bool:
        with self._lock:
            return any(e.leases for e in (*self._current.values(), *self._retired))


def _close(entries: list[_Entry]) -> None:
    for e in entries:
        if e.ours:
            e.pool.shutdown(wait=False)
