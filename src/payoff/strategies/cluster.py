"""What payoff knows about a running dask cluster: asked once, kept, asked again when it may have changed.

To plan for a cluster the planner needs two facts before any pool exists:
how many worker threads it has (a cluster may have 100 while this machine
has 2 cores) and what reaching it costs (a connect, not a LocalCluster
start). Asking is a scheduler round trip and connecting can take seconds, so
the answer is kept per address or ``Client``. It is asked again when it is
older than ``MAX_AGE_SECONDS``, or at once after ``invalidate``: the dask
strategy calls that when a worker is lost or when it sees a number of workers
other than the one kept here. A warm pool about to serve another call counts
again through its own connection (``refresh``, one round trip, ~1 ms on
127.0.0.1) and keeps the answer, so a cluster that scaled or quietly lost a
worker is recorded as it is; a scheduler gone by then is a remembered failure.

A connection opened to ask is not thrown away. It is parked here and the
dask strategy that starts next takes it over (``take_client``), so the first
call to an address connects once, not once to plan and once to run. While
that strategy runs, asking again goes through its connection
(``share_client``) rather than opening a new one.

An address that does not answer within the connect timeout is remembered for
``FAILURE_SECONDS``: the pool start that follows planning fails at once, so
the caller gets its ``init_failure`` fallback after one timeout, not two.

Every wait here (a connect, another thread's question about the same
address) takes the calling map's stop (its cancel token and deadline) and
checks it every ``START_WAIT_SLICE_SECONDS``: a cancel ends it with
``CancelledError``, the call's timeout with ``PoolStartTimeoutError``
(``by_call``), and neither is remembered as the address failing.

``distributed`` is imported on first use only: ``import payoff`` must not pay
for it, and this module may be imported by the planner.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any

from payoff import _forks
from payoff._extras import extra_needed
from payoff.config import ParallelConfig, is_dask_client
from payoff.errors import ClusterUnreachableError as ClusterUnreachableError
from payoff.errors import PoolStartTimeoutError
from payoff.strategies.base import START_WAIT_SLICE_SECONDS, StartStop

CONNECT_TIMEOUT_SECONDS = 5.0
"""How long a connect may take before the address counts as unreachable."""
MAX_AGE_SECONDS = 30.0
"""Kept facts older than this are asked again: clusters scale, and nothing tells the planner."""
FAILURE_SECONDS = 10.0
"""How long an unreachable address fails at once instead of waiting out another connect timeout."""


@dataclass(frozen=True)
class ClusterFacts:
    """What planning needs to know about a running cluster."""

    address: str
    """The address as configured, or for a ``Client`` the scheduler's address as it reports it."""
    worker_threads: int
    """Threads over all workers: how many chunks run at once, so the planner's worker count. May be 0
    (an adaptive cluster scaled to zero)."""
    n_workers: int
    connect_seconds: float
    """What the last connection to this scheduler cost; 0.0 for a user's ``Client``, which is already connected."""
    measured_at: float
    """``time.monotonic()`` when the scheduler answered: how old, and so how trustworthy, the facts are."""


@dataclass(eq=False)
class _Slot:
    """What is kept for one address or Client."""

    asking: threading.Lock = field(default_factory=threading.Lock)
    """Held while one thread asks the scheduler: concurrent callers wait for its answer instead of asking too."""
    facts: ClusterFacts | None = None
    failure: ClusterUnreachableError | None = None
    failed_at: float = 0.0
    failed_for: frozenset[int] = frozenset()
    """``_calls`` of the stop whose attempt failed: those calls are told the failure itself, not a memory of it."""
    connect_seconds: float = 0.0
    generation: int = 0
    """Bumped by ``invalidate``: an answer asked for before the cluster changed is returned but not kept."""
    parked: Any = None
    """A connected Client nobody owns yet (opened to ask); the next dask strategy takes it over."""
    shared: weakref.ref[Any] | None = None
    """A Client someone else owns (the user's, or a running dask strategy's), asked through while it is open."""


_lock = _forks.Lock()
"""Guards ``_slots`` and every slot's fields; never held across network I/O."""
_slots: dict[Hashable, _Slot] = {}
_exit_hook = False


def cluster_facts(target: Any, stop: StartStop | None = None) -> ClusterFacts:
    """Worker threads and connect cost of the cluster behind ``target`` (a dask ``Client`` or an address).

    Kept facts younger than ``MAX_AGE_SECONDS`` are returned as they are (a lock and a dict lookup).
    Otherwise the scheduler is asked once, through a connection kept from earlier if there is one, else
    through a new one whose connect time is measured and which is parked for the dask strategy.
    Raises ``ClusterUnreachableError`` within ``CONNECT_TIMEOUT_SECONDS`` for an address that does not
    answer, and at once for ``FAILURE_SECONDS`` after that. ``stop`` (the calling map's cancel token and
    deadline) ends any wait early: ``CancelledError`` or ``PoolStartTimeoutError``.
    """
    key, address, client = _resolve(target)
    if client is not None and getattr(client, "status", None) == "connecting":
        # a user's Client that lost its scheduler, asked, waits out its reconnect (30 s by default), and kept facts
        # would send a pool start to wait in it: a call stalled 30 s where an address's fails at once (trial 43, F1)
        raise ClusterUnreachableError(f"the dask Client passed as strategy lost its scheduler at {address or '?'} "
                                      f"(its status is 'connecting': dask is trying to reconnect); {CHECK_CLIENT}")
    slot = _slot(key, client)
    with _lock:
        known = _known(slot, time.monotonic(), stop)
    if known is not None:
        return known
    _wait_for(lambda seconds: slot.asking.acquire(timeout=seconds), address, stop)
    try:
        with _lock:
            known = _known(slot, time.monotonic(), stop)
        if known is not None:
            return known
        return _ask(slot, address, client, stop)
    finally:
        slot.asking.release()


def planning_facts(config: ParallelConfig, stop: StartStop | None = None,
                   unreachable: list[str] | None = None) -> ClusterFacts | None:
    """The running cluster ``config`` names, for planning before a pool exists; None when there is none.

    None when the strategy is not dask, or is ``"dask"`` without an address (the pool would start a
    LocalCluster, whose start the planner's priors describe), or when the cluster cannot be reached:
    planning never raises for that, the pool start does (at once, the failure is remembered) and the
    executor turns it into an ``init_failure`` fallback. Otherwise ``cluster_facts`` of the user's
    Client or the address, with its cost: a lock and a dict lookup while the facts are fresh. A cancel or
    the call's timeout during the wait (``stop``) is raised: the call ends there. ``unreachable`` gets why a
    named cluster could not be asked.
    """
    if config.strategy_name != "dask":
        return None
    target = config.strategy if not isinstance(config.strategy, str) else config.address
    if target is None:
        return None
    try:
        return cluster_facts(target, stop)
    except (CancelledError, PoolStartTimeoutError):
        raise
    except Exception as exc:  # unreachable, or a user's Client already closed: the pool start reports it
        if unreachable is not None:
            unreachable.append(f"the dask cluster at {_shown_target(target)} could not be asked for its workers "
                               f"while planning: {exc}")
        return None


CHECK_ADDRESS = ("check that its scheduler runs and listens at that address (the `dask scheduler` command prints "
                 "it), or drop address= for a local cluster of this machine's cores")
"""What to do about an address no scheduler answers at (an init_failure's detail promises it says)."""
CHECK_CLIENT = ("check that the Client's scheduler runs (`client.scheduler.address` names it), or pass a Client "
                "connected to a running one")
"""The same for a Client passed as ``strategy``: its user gave no address to check or drop."""


def _check(user_client: Any) -> str:
    return CHECK_ADDRESS if user_client is None else CHECK_CLIENT


def _shown_target(target: Any) -> str:
    return target if isinstance(target, str) else f"the Client's scheduler ({getattr(target, 'scheduler', '?')})"


def invalidate(target: Any) -> None:
    """Forget the facts about ``target``'s cluster, so the next ``cluster_facts`` asks the scheduler.

    Never waits (it is called from dask's callback threads): an answer being asked for right now is
    still returned to whoever asked, but not kept.
    """
    try:
        key, _, client = _resolve(target)
    except TypeError:
        return
    with _lock:
        slot = _slots.get(key)
        if slot is not None and (client is None or _alive(slot.shared) is client):
            slot.facts = slot.failure = None
            slot.generation += 1


def take_client(address: str) -> Any | None:
    """The connection parked by asking about ``address``, now owned (and closed) by the caller; or None."""
    with _lock:
        slot = _slots.get(address)
        client = slot.parked if slot is not None else None
        if slot is not None:
            slot.parked = None
    if client is not None and not _running(client):
        _close(client)
        return None
    return client


def share_client(address: str, client: Any) -> None:
    """Ask about ``address`` through ``client`` (owned by the caller) while it stays open."""
    with _lock:
        _slot_locked(address).shared = weakref.ref(client)


HANDSHAKE_GRACE_SECONDS = 3.0
"""Beyond the connect timeout, how long a connection that opened may take to answer as a scheduler."""


def connect(address: str, stop: StartStop | None = None) -> tuple[Any, float]:
    """A new ``Client`` for ``address`` and the seconds connecting took; ``ClusterUnreachableError`` if none.

    ``Client``'s own timeout bounds opening the connection, not the handshake after it: a port that accepts
    and never answers (or speaks HTTP, as the dashboard's does) held it for ever. So it connects on a
    thread of its own that the caller waits for no longer than both; a client that comes later is closed.
    The wait checks ``stop`` every ``START_WAIT_SLICE_SECONDS`` (see ``_wait_for``).
    """
    t0 = time.perf_counter()
    attempt = _Attempt(address)
    thread = threading.Thread(target=attempt.run, name="payoff-dask-connect", daemon=True)
    thread.start()
    try:
        _wait_for(_joined(thread, CONNECT_TIMEOUT_SECONDS + HANDSHAKE_GRACE_SECONDS), address, stop)
    except BaseException:
        attempt.outcome()  # abandoned: a client that comes later is closed
        raise
    client, error = attempt.outcome()
    if isinstance(error, _NotAScheduler) and error.answer:
        raise ClusterUnreachableError(f"cannot reach the dask scheduler at {address}: it {error.answer}")
    if client is None and (error is None or isinstance(error, _NotAScheduler)):
        answer = f"did not answer as a dask scheduler within {CONNECT_TIMEOUT_SECONDS + HANDSHAKE_GRACE_SECONDS:g} s" \
            if error is None or error.timed_out else "answered as something else than a dask scheduler"
        raise ClusterUnreachableError(f"cannot reach the dask scheduler at {address}: it accepted the connection "
                                      f"but {answer} (the dashboard's port, or another service?)")
    if error is not None:
        waited = f" within {CONNECT_TIMEOUT_SECONDS:g} s" if "timed out" in str(error).lower() \
            or isinstance(error, TimeoutError) else ""  # a refusal or an unknown host is told at once
        raise ClusterUnreachableError(
            f"cannot reach the dask scheduler at {address}{waited}: {type(error).__name__}: {error}; {CHECK_ADDRESS}"
        ) from error
    return client, time.perf_counter() - t0


class _Attempt:
    """One ``Client`` being made on its own thread; if its caller has stopped waiting, it closes what it made."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._client: Any = None
        self._error: Exception | None = None
        self._abandoned = False

    def run(self) -> None:
        with extra_needed("dask", "a dask cluster"):
            from distributed import Client

        try:
            _listening(self.address)
            _answers(self.address)
            client = Client(self.address, timeout=CONNECT_TIMEOUT_SECONDS,  # type: ignore[no-untyped-call]
                            set_as_default=False)
        except Exception as exc:
            with self._lock:
                self._error = exc
            return
        with self._lock:
            late, self._client = self._abandoned, client
        if late:
            _close(client)

    def outcome(self) -> tuple[Any, Exception | None]:
        """The client or the error, if the attempt ended; (None, None) if not, and then it is abandoned."""
        with self._lock:
            if self._client is None and self._error is None:
                self._abandoned = True
            return self._client, self._error


def _listening(address: str) -> None:
    """Raise ``OSError`` at once when nothing listens at a ``tcp://`` address (refused, no such host).

    dask's own connect tries a refused port again until its timeout: the call waited 5 s for an answer it
    already had. A bare socket fails at once and leaves nothing.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme != "tcp":
        return
    host, port = parse_host_port(location)
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
        pass


def _refused_n_workers(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("status") == "uncaught-error" and "n_workers" in str(answer)


NOT_SCHEDULERS = frozenset({"Worker", "Nanny"})
"""What a dask server's identity says it is, when it is no scheduler; a subclass of ``Scheduler`` (a company's own,
a ``SpecCluster``'s) names its own class and is one (review)."""


class _NotAScheduler(Exception):
    """A port that accepted the connection did not answer dask's handshake in time, or answered otherwise."""

    def __init__(self, timed_out: bool, answer: str = "") -> None:
        super().__init__("no answer in time" if timed_out else answer or "not dask's answer")
        self.timed_out = timed_out
        self.answer = answer
        """What it answered as, when it spoke dask: a worker's port is a likely mix-up (workers print theirs too)."""


def _answers(address: str) -> None:
    """Raise ``_NotAScheduler`` unless ``address`` completes dask's handshake within the connect timeout and grace.

    A ``Client`` cannot be stopped during its handshake: against a port that accepts and never answers (or
    speaks HTTP) its thread, its IO loop thread and the socket stayed for ever, one set each time the failure
    memory ran out. A bare dask comm, on an event loop of this thread, ends with its deadline and closes.
    """
    import asyncio

    from distributed.comm.core import connect as comm_connect

    async def handshake() -> Any:
        comm = await comm_connect(address, timeout=CONNECT_TIMEOUT_SECONDS)  # type: ignore[no-untyped-call]
        try:  # n_workers=0: a scheduler's identity lists every worker otherwise (megabytes on a large cluster)
            await comm.write({"op": "identity", "n_workers": 0, "reply": True})
            answer = await comm.read()
            if _refused_n_workers(answer):  # a worker's or an older scheduler's identity takes no arguments
                await comm.write({"op": "identity", "reply": True})
                answer = await comm.read()
            return answer
        finally:
            await comm.close()

    try:
        identity = asyncio.run(asyncio.wait_for(handshake(), CONNECT_TIMEOUT_SECONDS + HANDSHAKE_GRACE_SECONDS))
    except TimeoutError as exc:  # the deadline here (an OSError too, from Python 3.11 on)
        raise _NotAScheduler(True) from exc
    except OSError as exc:  # refused or unreachable: told as it is; dask's own handshake deadline is no answer
        if "handshake" in str(exc).lower():
            raise _NotAScheduler(True) from exc
        raise
    except Exception as exc:  # a dask comm reads an HTTP reply as a frame of exabytes: a MemoryError
        raise _NotAScheduler("timed out" in str(exc).lower()) from exc
    kind = identity.get("type") if isinstance(identity, dict) else None
    # a Client made here would fail (a worker's identity() takes no n_workers) and leave its IO loop thread
    # behind (trial 43, F3); a server that names its scheduler and lists no workers is a worker of a class of its own
    if kind in NOT_SCHEDULERS or (isinstance(identity, dict) and isinstance(identity.get("scheduler"), str)
                                  and "n_workers" not in identity and "workers" not in identity):
        scheduler = identity.get("scheduler")
        where = f": its scheduler is at {scheduler}, pass that address" if isinstance(scheduler, str) else ""
        raise _NotAScheduler(False, f"answered as a dask {kind}, not a scheduler{where}")


def worker_counts(client: Any) -> tuple[int, int, str]:
    """Worker threads, workers and scheduler address, in one round trip to the scheduler.

    Asks for every worker: since 2025 ``scheduler_info()`` may list only the first few, so the
    cluster-wide totals are preferred when the scheduler sends them.
    """
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before the n_workers argument
        info = client.scheduler_info()
    workers = info.get("workers") or {}
    n_workers = info.get("n_workers")
    threads = info.get("total_threads")
    if not isinstance(n_workers, int) or n_workers < 0:
        n_workers = len(workers)
    if not isinstance(threads, int) or threads < 0:
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
    return threads, n_workers, str(info.get("address") or "")


def refresh(client: Any, target: Any, stop: StartStop | None = None) -> int:
    """Worker threads of the cluster ``client`` (a running pool's) is connected to now, kept as ``target``'s facts.

    One round trip (about a millisecond on a LAN; measured ~1-3 ms on 127.0.0.1), on each call a warm pool
    serves: a cluster that scaled, or lost a worker dask rescheduled around without telling payoff, is counted
    as it is, not as it was up to ``MAX_AGE_SECONDS`` ago. A client that is no longer running, or a scheduler
    that does not answer within ``CONNECT_TIMEOUT_SECONDS``, raises ``ClusterUnreachableError``, remembered as
    a failed connect is, so the pool start that follows fails at once.
    """
    key, address, user_client = _resolve(target)
    slot = _slot(key, user_client)
    box: list[Any] = []

    def ask() -> None:
        try:
            box.append(worker_counts(client))
        except Exception as exc:
            box.append(exc)

    try:
        if not _running(client):
            raise ClusterUnreachableError(f"the dask scheduler at {address or 'the Client'} is gone: the "
                                          f"connection is {getattr(client, 'status', None)!r}; {_check(user_client)}")
        thread = threading.Thread(target=ask, name="payoff-dask-refresh", daemon=True)
        thread.start()
        _wait_for(_joined(thread, CONNECT_TIMEOUT_SECONDS), address, stop)
        answer = box[0] if box else TimeoutError(f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s")
        if isinstance(answer, Exception) or not _running(client):
            raise ClusterUnreachableError(f"the dask scheduler at {address or 'the Client'} did not answer: "
                                          f"{answer if isinstance(answer, Exception) else 'connection lost'}; "
                                          f"{_check(user_client)}")
    except ClusterUnreachableError as exc:
        with _lock:
            slot.facts, slot.failure, slot.failed_at = None, exc, time.monotonic()
            slot.failed_for = _calls(stop)
        raise
    threads, n_workers, reported = answer
    with _lock:
        seconds = slot.connect_seconds
        slot.failure = None
        slot.facts = ClusterFacts(reported if user_client is not None and reported else address, threads,
                                  n_workers, seconds, time.monotonic())
    return int(threads)


def clear() -> None:
    """Forget every cluster and close the connections parked here (tests; interpreter exit)."""
    with _lock:
        parked = [s.parked for s in _slots.values() if s.parked is not None]
        _slots.clear()
    for client in parked:
        _close(client)


def _resolve(target: Any) -> tuple[Hashable, str, Any]:
    """The cache key, the address and the user's Client (None for an address) of ``target``."""
    if isinstance(target, str):
        return target, target, None
    if is_dask_client(target):
        scheduler = getattr(target, "scheduler", None)
        return ("client", id(target)), str(getattr(scheduler, "address", "") or ""), target
    raise TypeError(f"expected a dask Client or a scheduler address, got {type(target).__name__}")


def _slot(key: Hashable, client: Any) -> _Slot:
    with _lock:
        slot = _slot_locked(key)
        if client is not None and _alive(slot.shared) is not client:  # a new Client, or an id reused
            slot = _slots[key] = _Slot(shared=weakref.ref(client))
        return slot


def _slot_locked(key: Hashable) -> _Slot:
    slot = _slots.get(key)
    if slot is None:
        for stale in [k for k, s in _slots.items() if isinstance(k, tuple) and _alive(s.shared) is None]:
            del _slots[stale]  # Clients that are gone: their ids may be reused
        slot = _slots[key] = _Slot()
    return slot


def _wait_for(done: Callable[[float], bool], address: str, stop: StartStop | None) -> None:
    """Call ``done(timeout)`` in slices of at most ``START_WAIT_SLICE_SECONDS`` until it returns True, checking
    ``stop`` between them: the calling map's cancel or timeout ends the wait, as it ends a pool start's."""
    if stop is None:
        while not done(3600.0):
            pass
        return
    began = time.monotonic()
    while True:
        left = stop.seconds_left()
        if done(START_WAIT_SLICE_SECONDS if left is None else max(0.0, min(START_WAIT_SLICE_SECONDS, left))):
            return
        if stop.expired():
            raise PoolStartTimeoutError(
                f"payoff: the call's timeout ran out after {time.monotonic() - began:.1f} s of waiting for the "
                f"dask scheduler at {address or 'the Client'} to answer", by_call=True)
        if stop.is_set():
            raise CancelledError(f"payoff: the call was cancelled while it waited for the dask scheduler at "
                                 f"{address or 'the Client'}")


def _joined(thread: threading.Thread, seconds: float) -> Callable[[float], bool]:
    """A ``done`` for :func:`_wait_for`: ``thread`` ended, or ``seconds`` from now have passed."""
    limit = time.monotonic() + seconds

    def ended(timeout: float) -> bool:
        thread.join(min(timeout, max(0.0, limit - time.monotonic())))
        return not thread.is_alive() or time.monotonic() >= limit

    return ended


def _calls(stop: StartStop | None) -> frozenset[int]:
    """Identities of the calls ``stop`` stands for: itself (a call's token), and the tokens a pool start's stop
    gathers for its calls (``tokens``)."""
    if stop is None:
        return frozenset()
    return frozenset({id(stop), *(id(token) for token in getattr(stop, "tokens", ()))})


def _known(slot: _Slot, now: float, stop: StartStop | None = None) -> ClusterFacts | None:
    """Fresh facts, or the remembered failure raised again; None when the scheduler must be asked.

    The call whose own attempt failed (its pool start after its planning) gets that failure as it was: it is
    no memory to that call."""
    if slot.facts is not None and now - slot.facts.measured_at < MAX_AGE_SECONDS:
        return slot.facts
    if slot.failure is not None and now - slot.failed_at < FAILURE_SECONDS:
        if _calls(stop) & slot.failed_for:
            raise slot.failure
        raise ClusterUnreachableError(
            f"{slot.failure} (remembered from {now - slot.failed_at:.1f} s ago; not retried for "
            f"{FAILURE_SECONDS:g} s)") from slot.failure
    return None


def _ask(slot: _Slot, address: str, client: Any, stop: StartStop | None = None) -> ClusterFacts:
    """Ask the scheduler (the caller holds ``slot.asking``) and keep the answer."""
    with _lock:
        generation = slot.generation
    try:
        if client is not None:
            threads, n_workers, reported = _counts_or_unreachable(client, address, CHECK_CLIENT)
            seconds = 0.0
        else:
            threads, n_workers, reported, seconds = _ask_address(slot, address, stop)
    except ClusterUnreachableError as exc:
        with _lock:
            slot.facts, slot.failure, slot.failed_at = None, exc, time.monotonic()
            slot.failed_for = _calls(stop)
        raise
    facts = ClusterFacts(reported if client is not None and reported else address, threads, n_workers, seconds,
                         time.monotonic())
    with _lock:
        slot.failure = None
        if slot.generation == generation:
            slot.facts = facts
    return facts


def _ask_address(slot: _Slot, address: str, stop: StartStop | None = None) -> tuple[int, int, str, float]:
    """Through a kept connection if one is open and answers; else through a new one, parked afterwards."""
    with _lock:
        kept = [c for c in (slot.parked, _alive(slot.shared)) if c is not None]
        seconds = slot.connect_seconds
    for client in kept:
        if _running(client):
            try:
                return (*worker_counts(client), seconds)
            except Exception:  # the connection went bad (scheduler restarted?): connect afresh
                pass
    client, seconds = connect(address, stop)
    try:
        threads, n_workers, reported = _counts_or_unreachable(client, address, CHECK_ADDRESS)
    except BaseException:
        _close(client)
        raise
    with _lock:
        old, slot.parked, slot.connect_seconds = slot.parked, client, seconds
    if old is not None:
        _close(old)
    _close_at_exit()
    return threads, n_workers, reported, seconds


def _counts_or_unreachable(client: Any, address: str, advice: str) -> tuple[int, int, str]:
    try:
        return worker_counts(client)
    except Exception as exc:
        raise ClusterUnreachableError(f"the dask scheduler at {address or 'the Client'} did not answer: "
                                      f"{type(exc).__name__}: {exc}; {advice}") from exc


def _alive(ref: weakref.ref[Any] | None) -> Any:
    return ref() if ref is not None else None


def _running(client: Any) -> bool:
    return getattr(client, "status", None) == "running"


def _close(client: Any) -> None:
    with contextlib.suppress(Exception):  # a connection whose scheduler is gone may complain; it is closed anyway
        client.close()


def _close_at_exit() -> None:
    """Close parked connections before distributed's own exit hooks (registered earlier, so run later)."""
    global _exit_hook
    with _lock:
        if _exit_hook:
            return
        _exit_hook = True
    atexit.register(clear)
