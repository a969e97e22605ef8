"""Dask: the same chunks on a ``dask.distributed`` cluster.

A user's ``Client``, an address from the config, or (neither) a LocalCluster
bound to 127.0.0.1. Chunks travel pre-pickled, so bytes are counted as for
local pools. Remote clocks are not trusted across machines: a chunk's
duration comes from the worker, but where it sits in time is anchored on the
parent's clock when the result arrives. A function large enough to ship once
is scattered to every worker and cached there by content hash.

For a running cluster (a Client or an address) the worker count is the
cluster's worker threads, taken from :mod:`payoff.strategies.cluster`, which
the planner reads too; a connection opened there to plan is the one this pool
runs on. What this pool sees of the cluster (a lost worker, another number of
workers) is reported back there, so the next plan asks the scheduler again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import signal
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, CancelledError, Future, InvalidStateError
from typing import Any

from payoff import _by_value as by_value
from payoff import _forks
from payoff import _out_of_band as out_of_band
from payoff._exit import QuietAtExit
from payoff._extras import extra_needed
from payoff._import_clock import warmup_since
from payoff.errors import ChunkKilledWorkers, ClusterNotReadyError, PoolStartTimeoutError
from payoff.record import CLUSTER_LOST
from payoff.strategies import SHIP_ONCE_BYTES, cluster
from payoff.strategies.base import ChunkTask, PoolClosedError, Strategy, closed_pool
from payoff.strategies.main_guard import REFUSED, unguarded_main_hint
from payoff.strategies.spawned_main import main_script_version
from payoff.strategies.start_failure import error_chain
from payoff.worker import ChunkOutcome, arrived, deaf_to_the_groups_ctrl_c, received, run_to_bytes

CONNECT_TIMEOUT_SECONDS = cluster.CONNECT_TIMEOUT_SECONDS
_CLIENT_SUBMIT_NAMES = frozenset({"self", "func", "key", "workers", "resources", "retries", "priority",
                                  "fifo_timeout", "allow_other_workers", "actor", "actors", "pure"})
"""``Client.submit``'s own parameters: a submitted call's keyword of one of these names travels bound."""
_cache: dict[str, Callable[[Any], Any]] = {}

FIRST_WORKER_SECONDS = 10.0
"""How long a pool start on a cluster with no workers waits for a first one (less if ``pool_start_timeout`` or the
call's timeout is shorter). A task waits on the scheduler meanwhile, so an adaptive cluster, which starts workers
for queued work, starts one; after that the start fails and the map falls back (``init_failure``)."""
NO_WORKERS_SECONDS = 10.0
"""How long this pool's chunks wait on a cluster that has lost every worker before they count as lost: a
nanny restarts a worker within that, a cluster whose workers all died does not."""
WATCH_SECONDS = 1.0
"""How often, while chunks are out, the scheduler is asked which workers the cluster has."""
FIRST_LOOK_SECONDS = 0.1
"""How soon it is asked again while a call's chunks are out that no ask found on every worker yet (in the call's
first ``WATCH_SECONDS``): the first ask often came before the scheduler had placed them, and a worker killed
0.3 s into the call left no word in its record (1 call in 3 here)."""
DEPARTURES_KEPT = 16


class DaskWorkerLost(BrokenExecutor):
    """A chunk could not finish on the cluster (its workers kept dying, or the scheduler went away)."""


class DaskKilledWorkers(DaskWorkerLost, ChunkKilledWorkers):
    """dask's ``KilledWorker``: the scheduler tried the chunk on ``allowed-failures + 1`` workers and each died."""


_LARGE_GRAPH_MESSAGE = r"Sending large graph of size "
_LARGE_GRAPH_MODULE = r"distributed\.client\Z"


def quiet_large_graph_warning() -> None:
    """Keep dask's "Sending large graph of size ... Consider loading the data with Dask directly" from payoff's users.

    payoff sends each chunk's items pickled inside its task, so large items trip it once per chunk, and its
    advice is for code that builds dask graphs, which theirs does not; the bytes a call moved are in its
    record (``bytes_sent``), and under ``auto`` items too large to ship are payoff's own ``payload_too_large``.
    ``warnings.catch_warnings`` is not thread-safe, so this is one process-wide filter, as precise as a filter
    can be: that message from ``distributed.client`` only. Added again (at a pool start) when a
    ``catch_warnings`` block that was open when it was first added took it away on exit.
    """
    for action, message, category, module, _ in warnings.filters:
        if action == "ignore" and category is UserWarning and getattr(message, "pattern", None) == \
                _LARGE_GRAPH_MESSAGE and getattr(module, "pattern", None) == _LARGE_GRAPH_MODULE:
            return
    warnings.filterwarnings("ignore", message=_LARGE_GRAPH_MESSAGE, category=UserWarning, module=_LARGE_GRAPH_MODULE)


quiet_large_graph_warning()


def _nothing() -> None:
    return None


class ItemExit(Exception):
    """A ``KeyboardInterrupt`` an item raised itself, carried out of a dask worker.

    Every other exception of an item, ``sys.exit()`` included, travels in its chunk's outcome
    (``worker.run_chunk``). Let out of the task, such an exception ended the dask worker: payoff took it for
    a crash, narrowed it down by running its chunk's halves again (~16 worker deaths) and raised
    ``WorkerCrashedError`` ("an unknown cause") after ~37 s (an item's ``sys.exit()``, before it travelled
    in the outcome). Carried as an ``Exception``, it is unwrapped in the caller (``_relay``) and raised there
    as it was.
    """

    def __init__(self, carried: BaseException) -> None:
        super().__init__(carried)
        self.carried = carried


def _submitted_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Worker side of a ``submit``: a ``sys.exit()`` or ``KeyboardInterrupt`` of the call's own travels back as
    ``ItemExit``, as an item's does. Let out, it ended the dask worker, and dask ran the call again on the next
    until four had died (``KilledWorker`` after 8.7-9 s, the cluster's workers restarted) where ``map`` of the
    same function raised ``SystemExit`` at once (interrupts trial)."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        raise
    except BaseException as exc:
        raise ItemExit(exc) from None


def run_dask_chunk(fn_blob: bytes | None, digest: str, payload: bytes) -> bytes:
    """Worker side: resolve a scattered function once per worker, then run the chunk like a process pool."""
    began, modules = time.monotonic_ns(), len(sys.modules)
    try:
        fn, items, first, index, budget_ns = pickle.loads(payload)
        loaded = 0
        if digest:
            if digest not in _cache:
                assert fn_blob is not None
                _cache.clear()
                _cache[digest] = pickle.loads(fn_blob)
                loaded = len(fn_blob)
            fn = _cache[digest]
    except ModuleNotFoundError as exc:
        exc.add_note(unimportable_here(exc))
        raise
    try:
        return run_to_bytes(fn, items, first, index, loaded, budget_ns, pickler="cloudpickle",
                            warmup_ns=warmup_since(began, modules))
    except Exception:
        raise
    except BaseException as exc:  # an item's own Ctrl-C: the caller's to raise, as a process pool's worker sends it
        raise ItemExit(exc) from None


def unimportable_here(exc: ModuleNotFoundError) -> str:
    """What a dask worker that cannot import the function's (or an item's) module says: a bare
    ``ModuleNotFoundError`` read as the user's own code failing (trial 43, dask F4). The ways to send it differ for
    a package someone publishes (install it) and a module of the user's own (upload it, or pickle by value)."""
    top = (exc.name or "").split(".")[0]
    what = repr(exc.name) if exc.name else "a module"
    own = "" if not top else (
        f"; if it is a module of your own, send it: client.upload_file(...) with its .py file (a package as a "
        f".zip of its folder), or cloudpickle.register_pickle_by_value({top}) in this process to ship the functions "
        "you map by value")
    return (f"payoff: raised on the dask worker {_worker_address()} while loading the map's function and items, "
            f"before any item ran: the workers cannot import {what}. Install it where the workers run{own}")


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "(unknown)"


class DaskStrategy(Strategy):
    name = "dask"
    crosses_processes = True
    pickler = "cloudpickle"
    remote = True

    def __init__(self, workers: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), start_method: str | None = None, *,
                 client: Any = None, address: str | None = None) -> None:
        super().__init__(workers, initializer, initargs, start_method)
        self.client = client
        self.address = address
        self._owns_client = client is None
        self._cluster: Any = None
        self._plugin: str | None = None
        """The name of this pool's worker initializer on the cluster (``_initialize_workers``)."""
        self._environ: dict[str, str | None] = {}
        """What the variables a LocalCluster's nannies set were before it started (``_nanny_environ``)."""
        self._scattered: dict[str, Any] = {}
        self._blobs: dict[str, bytes] = {}
        """The pickled function behind ``_scattered``: sent again when the workers lost their copies."""
        self._ship_lock = threading.Lock()
        self._closed = False
        self._remote: dict[Any, Future[Any]] = {}
        """This pool's dask futures not yet done, with the local futures they feed: what ``kill`` cancels on a
        cluster that is not its own, and what fails when the cluster has no workers left."""
        self._remote_lock = threading.Lock()
        self._departed: list[tuple[str, int, frozenset[int]]] = []
        """Workers seen to leave while holding this pool's work: each one's address, its threads, and the calls
        whose work it held when last asked (``_note_departures``)."""
        self._watcher: threading.Thread | None = None
        """Watches for a cluster with no workers while chunks are out (see ``_watch``); None when none runs."""

    @property
    def broken(self) -> bool:
        """Broken as any pool, or given a Client its user has closed since: the next lease starts afresh, and
        that start says the Client was closed (``_start``)."""
        return self._broken or self._given_client_closed()

    @broken.setter
    def broken(self, value: bool) -> None:
        self._broken = value

    _broken = False

    def _given_client_closed(self) -> bool:
        return not self._owns_client and getattr(self.client, "status", None) in ("closing", "closed")

    def _refuse_closed_client(self) -> None:
        """A Client passed as ``strategy`` that its user closed runs nothing again: say so, in payoff's words (the
        raw ``ClosedClientError`` came from every later map and submit, or "IOLoop is closed" from a new start)."""
        if self._given_client_closed():
            raise ClusterNotReadyError(
                f"payoff: the dask Client passed as strategy was closed (its status is {self.client.status!r}): "
                "by its owner, or by dask when it lost its scheduler and could not reconnect (payoff never closes a "
                "Client it is given): pass a Client connected to a running scheduler, or strategy='dask' with "
                "address= to let payoff connect")

    def _start(self) -> None:
        _refuse_forked()
        with extra_needed("dask", "strategy='dask'"):
            from distributed import Client, LocalCluster

        self._refuse_closed_client()
        quiet_large_graph_warning()
        facts: cluster.ClusterFacts | None = None
        if self.client is None and self.address:
            # raises ClusterUnreachableError, at once when planning has just seen the address fail
            facts = cluster.cluster_facts(self.address, self._start_stop)
            self.client = cluster.take_client(self.address) or cluster.connect(self.address, self._start_stop)[0]
            cluster.share_client(self.address, self.client)
        elif self.client is None:
            self._environ = _nanny_environ()
            try:
                self._cluster = self._local_cluster(LocalCluster)
            finally:
                _restore(self._environ)
            self.client = Client(self._cluster, set_as_default=False)
        else:
            facts = cluster.cluster_facts(self.client, self._start_stop)
        threads, seen, _ = cluster.worker_counts(self.client)
        if not seen:  # the scheduler knows no worker: the cluster has none (yet)
            self._await_first_worker()
            threads, seen, _ = cluster.worker_counts(self.client)
        if self._cluster is not None:
            self._deaf_to_the_groups_ctrl_c()
        if self.initializer is not None:
            self._initialize_workers()
        target = self._target()
        if target is not None:
            if facts is None or seen != facts.n_workers:  # the cluster changed since it was last asked
                cluster.invalidate(target)
                facts = cluster.cluster_facts(target)
            threads = facts.worker_threads
        self.workers = max(1, threads)

    def _deaf_to_the_groups_ctrl_c(self) -> None:
        """The LocalCluster payoff started leaves a group's Ctrl-C to the caller, as process workers do: a
        terminal's (or a Jupyter stop button's) SIGINT to the whole group killed its workers, and the
        next map waited 12-13 s for a cluster with none, then reran as ``map_failure_retry`` (interrupts trial).
        A cluster or Client of the user's is left as it is."""
        assert self.client is not None
        with contextlib.suppress(Exception):  # best effort: a cluster that cannot take it still works
            self.client.run(deaf_to_the_groups_ctrl_c)  # its nannies run in this process, on its loop's thread

    def _local_cluster(self, make: Callable[..., Any]) -> Any:
        """A LocalCluster of worker processes its nannies start as ``distributed.worker.multiprocessing-method``
        says (spawn): they import the main script, and one that maps at import, unguarded, failed the start
        as "Nanny failed to start." with nothing about the script. That start fails at once while the script
        stays as it is, as a process pool's does (``main_guard.REFUSED``)."""
        import dask

        method = str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))
        key = (f"dask {method}", *main_script_version())
        if key in REFUSED:
            raise RuntimeError(REFUSED[key])
        try:
            return make(n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=40)
        except RuntimeError as exc:
            hint = unguarded_main_hint(method) if _nanny_failed(exc) else None
            if hint is None:
                raise
            REFUSED[key] = f"payoff: the {self.name} LocalCluster's workers died as they started: {hint}"
            raise RuntimeError(REFUSED[key]) from exc

    def refresh(self, stop: Any = None) -> None:
        """A running cluster's worker threads now (one round trip; it may have scaled or lost a worker).

        A scheduler that is gone makes this pool a closed one (``PoolClosedError``): the call takes a fresh
        pool, whose start fails at once on the failure remembered here, and falls back.
        """
        target = self._target()
        if target is not None and self.client is not None:
            try:
                self.workers = max(1, cluster.refresh(self.client, target, stop))
            except cluster.ClusterUnreachableError as exc:
                raise PoolClosedError(f"the {self.name} pool's scheduler is gone: {exc}") from exc

    def _await_first_worker(self) -> None:
        """Wait, bounded, for a first worker of a cluster that has none; ``ClusterNotReadyError`` if none comes.

        A task waits on the scheduler meanwhile: an adaptive cluster starts workers for queued work, not for
        a client that only waits. Without this the chunks waited there for ever (helper 46, F1). A task that a
        ``client.restart()`` cancelled (its workers all down at once) is sent again: the start failed with
        dask's ``FutureCancelledError`` (review 68).

        The start asks the scheduler for its workers first (``_start``) and waits only when it knows none, not
        for each worker to answer a call: a pool started again while a ``client.restart()`` brought them back
        failed on one still restarting (``CommClosedError``) or waited 30 s to connect to one gone, and the
        call raised that the cluster was gone (hunt 65, F2); nor for a task to run, which on a cluster whose
        every worker was busy for 10 s failed as one with no workers (review 68).
        """
        assert self.client is not None
        stop = self._start_stop
        limit = min(FIRST_WORKER_SECONDS, self.start_timeout)
        began = time.monotonic()
        ping = self.client.submit(_nothing, pure=False)
        try:
            while not _done_within(ping, 0.05):
                if ping.status == "cancelled" and not (stop is not None and stop.is_set()):
                    with contextlib.suppress(Exception):
                        ping.release()
                    ping = self.client.submit(_nothing, pure=False)  # a restart cancelled it: it counts for none
                if stop is not None and stop.expired():
                    raise PoolStartTimeoutError(
                        f"payoff: the {self.name} cluster at {self._where()} had no workers when the call's timeout "
                        f"ran out ({time.monotonic() - began:.1f} s)", by_call=True)
                if stop is not None and stop.is_set():
                    raise CancelledError(f"payoff: the call was cancelled while its {self.name} pool was starting")
                if time.monotonic() - began >= limit:
                    target = self._target()
                    if target is not None:
                        cluster.invalidate(target)
                    raise ClusterNotReadyError(
                        f"payoff: the {self.name} cluster at {self._where()} has no workers: none came up within "
                        f"{limit:g} s of a task waiting for one. Start workers for it; an adaptive cluster, which "
                        "starts them on demand, may need longer than payoff waits: call client.wait_for_workers(1) "
                        "(or scale the cluster) before mapping")
            ping.result()
        finally:
            if not ping.done():
                with contextlib.suppress(Exception):
                    ping.cancel()
            with contextlib.suppress(Exception):
                ping.release()

    def _initialize_workers(self) -> None:
        """The worker initializer, on every worker now and on each that joins later (``_dask_init``): its own
        error on a worker fails the start (``init_failure``); a worker the scheduler could not reach (one
        restarting) gets it when it is back. Taken off the cluster when this pool shuts down."""
        from payoff.strategies._dask_init import InitializerFailed, WorkerInitializer

        assert self.client is not None and self.initializer is not None
        name = f"payoff-initializer-{uuid.uuid4().hex}"
        try:
            self.client.register_plugin(WorkerInitializer(self.initializer, self.initargs), name=name)
        except InitializerFailed as failed:
            self._unregister(self.client, name)
            raise failed.error from None
        except OSError:  # a worker out of reach (CommClosedError): the scheduler keeps the plugin for its return
            pass  # any other error (an initializer no pickler can send) is the start's, as it was
        self._plugin = name

    @staticmethod
    def _unregister(client: Any, name: str | None) -> None:
        if name is not None:
            with contextlib.suppress(Exception):  # a client closing, a scheduler gone: the plugin goes with it
                client.unregister_worker_plugin(name)

    def _where(self) -> str:
        """The scheduler's address, for messages."""
        if self.address:
            return self.address
        scheduler = getattr(self.client, "scheduler", None)
        return str(getattr(scheduler, "address", "") or "?")

    def _target(self) -> Any:
        """What the cluster cache knows this pool's cluster by; None for a LocalCluster of its own."""
        if self._cluster is not None:
            return None
        return self.address if self._owns_client else self.client

    def _lost_worker(self) -> None:
        """A worker died under a chunk: the cluster changed, so the next plan must ask the scheduler again."""
        target = self._target()
        if target is not None:
            cluster.invalidate(target)

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        self._refuse_closed_client()
        dumped = out_of_band.dumps(fn, by_value.dumps)  # a version the workers hold costs no copy of it
        if dumped.size < SHIP_ONCE_BYTES:
            return fn
        digest = dumped.digest()
        with self._ship_lock:
            if digest not in self._blobs:
                self._blobs = {digest: by_value.dumps(fn)}
        self._scattered_fn(digest)
        return ("scattered", digest, dumped.size)

    def _scattered_fn(self, digest: str, lost: Any = None) -> Any:
        """The scattered copy of the function ``digest`` names, scattered (again) when there is none, or when the
        one kept was lost (``lost``, or its status says so): workers that restarted, and the cluster forgot it."""
        with self._ship_lock:
            kept = self._scattered.get(digest)
            if kept is not None and kept is not lost and getattr(kept, "status", "finished") == "finished":
                return kept
            client = self.client
            if client is None:
                raise closed_pool(self.name)
            kept = client.scatter(self._blobs[digest], broadcast=True, hash=False, timeout=NO_WORKERS_SECONDS)
            self._scattered = {digest: kept}
            self.versions_written += 1
            return kept

    def submit(self, fn: Any, task: ChunkTask) -> Future[Any]:
        if self.client is None:
            raise closed_pool(self.name)
        self._refuse_closed_client()
        shipped = isinstance(fn, tuple) and fn[:1] == ("scattered",)
        digest = fn[1] if shipped else ""
        payload = by_value.dumps((None if shipped else fn, task.items, task.first, task.index, task.budget_ns))
        task.bytes_sent = len(payload)
        task.submit_ns = time.monotonic_ns()
        scattered = self._scattered.get(digest) if shipped else None
        remote = self.client.submit(run_dask_chunk, scattered, digest, payload, pure=False)
        return self._track(remote, stamp=True, again=(digest, payload, scattered) if shipped else None)

    def _track(self, remote: Any, stamp: bool, again: tuple[str, bytes, Any] | None = None,
               local: Future[Any] | None = None) -> Future[Any]:
        """A local future for ``remote``, which stays known until it is done.

        ``again``, a chunk's function digest, payload and scattered copy when its function was scattered, sends
        it once more if the cluster lost that copy under it (see ``_send_again``).
        """
        if local is None:
            local = QuietAtExit()
            local.set_running_or_notify_cancel()
        with self._remote_lock:
            self._remote[remote] = local
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="payoff-dask-watch", daemon=True)
                self._watcher.start()

        def done(f: Any) -> None:
            # known until relayed: fetching the result can wait for ever, on a finished chunk whose worker
            # left before its data was gathered (dask waits to recompute it, on a cluster with no worker
            # left), and only ``_watch`` can then fail and cancel it, which ends that wait
            try:
                if local.done():  # failed already by ``_watch``
                    return
                if again is not None and _lost_dependency(f):
                    threading.Thread(target=self._send_again, args=(again, local), name="payoff-dask-resend",
                                     daemon=True).start()
                    return
                _relay(f, local, stamp=stamp, lost=self._lost_worker)
            finally:
                with self._remote_lock:
                    self._remote.pop(f, None)
                with contextlib.suppress(Exception):  # a client closing: its futures go with it
                    f.release()  # relayed: an error's frames hold ``f``, and the scheduler kept the chunk meanwhile

        remote.add_done_callback(done)
        return local

    def _send_again(self, again: tuple[str, bytes, Any], local: Future[Any]) -> None:
        """A chunk dask cancelled because its function's scattered copy was lost: scatter it again and resend.

        That loss is the cluster's (its workers restarted and took their copies with them), not something the
        function did: counted as a lost worker, it was rerun as ``map_failure_retry`` and the function was
        marked as one that crashes workers (helper 46, F6). Resent once; a chunk that loses it again is lost.
        """
        digest, payload, lost = again
        try:
            scattered = self._scattered_fn(digest, lost=lost)
            with self._remote_lock:
                client = None if self._closed else self.client
            if client is None:
                raise closed_pool(self.name)
            remote = client.submit(run_dask_chunk, scattered, digest, payload, pure=False)
        except Exception as exc:
            with contextlib.suppress(InvalidStateError):
                local.set_exception(DaskWorkerLost(f"the {self.name} cluster lost the function's scattered copy, "
                                                   f"and sending it again failed: {exc!r}"))
            return
        self._track(remote, stamp=True, local=local)

    def _watch(self) -> None:
        """While this pool has work out, ask the scheduler every ``WATCH_SECONDS`` whether the cluster still has
        workers; after ``NO_WORKERS_SECONDS`` with none, that work fails as lost (``DaskWorkerLost``).

        dask keeps work for a cluster without workers queued until one comes, so a cluster whose workers all
        died (no nanny to restart them) held a map for ever (helper 46, F1). Lost work is handled as a lost
        worker's: the map reruns it on a fresh pool, whose start waits for a first worker (``_start``), and
        a cluster that has none then ends the call with an error that names no item.
        """
        empty_since: float | None = None
        members, held = self._members(), self._held()
        first_out: dict[int, float] = {}
        while True:
            self._pause(held, first_out, members)
            with self._remote_lock:
                if not self._remote or self.client is None:
                    self._watcher = None
                    return
            now_members = self._members()
            self._note_departures(members, now_members, held)
            if now_members is not None:
                members, held = now_members, self._held()
            workers = None if now_members is None else len(now_members)
            if workers != 0:
                empty_since = None
                continue
            now = time.monotonic()
            empty_since = empty_since if empty_since is not None else now
            if now - empty_since >= NO_WORKERS_SECONDS:
                self._fail_all(f"the {self.name} cluster at {self._where()} has had no workers for "
                               f"{now - empty_since:.0f} s while this work waited for one (its workers died or "
                               "left, and none came back)")
                empty_since = None

    def _pause(self, held: dict[str, frozenset[int]], first_out: dict[int, float],
               members: dict[str, int] | None) -> None:
        """Wait ``WATCH_SECONDS`` for the next ask, or ``FIRST_LOOK_SECONDS`` while a call out for less than
        ``WATCH_SECONDS`` (by ``first_out``, the calls out when last paused, updated here) is not held by every
        worker (``held``, of the ``members`` then): a worker that has none of its chunks yet may get one, and if
        killed before the next ask it would go unseen. One worker holding the call was enough before, and the
        other, given its first chunk just after that ask and killed 0.3 s later, left no word in the record
        (1 call in 12 beside two busy programs)."""
        end = time.monotonic() + WATCH_SECONDS
        holders = Counter(call for calls in held.values() for call in calls)
        while (now := time.monotonic()) < end:
            with self._remote_lock:
                out = Counter(call for local in self._remote.values()
                              if (call := getattr(local, "payoff_call", None)) is not None)
            for call in first_out.keys() - out.keys():
                del first_out[call]
            for call in out.keys() - first_out.keys():
                first_out[call] = now
            if any(now - first_out[call] < WATCH_SECONDS for call in out.keys() - _placed(holders, members, out)):
                time.sleep(FIRST_LOOK_SECONDS)
                return
            time.sleep(min(FIRST_LOOK_SECONDS, end - now))

    def _members(self) -> dict[str, int] | None:
        """The cluster's workers now, each with its threads; None when the scheduler cannot be asked (a client
        closing, a scheduler gone: the work's own futures say so)."""
        client = self.client
        try:
            return {str(k): int(v) for k, v in client.nthreads().items()} if client is not None else None
        except Exception:
            return None

    def _held(self) -> dict[str, frozenset[int]]:
        """Which worker holds work of which calls now (running or queued there): the calls (``payoff_call`` of
        their futures), by worker address; empty when the scheduler cannot be asked."""
        client = self.client
        try:
            processing = client.processing() if client is not None else {}
        except Exception:
            return {}
        with self._remote_lock:
            ours = {str(remote.key): call for remote, local in self._remote.items()
                    if (call := getattr(local, "payoff_call", None)) is not None}
        held = {str(w): frozenset(ours[str(k)] for k in keys if str(k) in ours) for w, keys in processing.items()}
        return {w: calls for w, calls in held.items() if calls}

    def _note_departures(self, before: dict[str, int] | None, now: dict[str, int] | None,
                         held: dict[str, frozenset[int]]) -> None:
        """Workers that left while holding this pool's work (killed, a machine gone, retired): dask reruns that
        work on the others without a word to payoff, so the call's record said nothing of it (trial 43, dask F2).
        Kept with the work each held, so only the calls that work was of are told (``departed_for``): one kept
        by the time it was seen went on a call begun after the loss, and an idle worker retired went on every
        call then running (review)."""
        if before is None or now is None:
            return
        gone = [(w, before[w], held[w]) for w in sorted(before.keys() - now.keys()) if held.get(w)]
        if gone:
            with self._remote_lock:
                self._departed.extend(gone)
                del self._departed[:-DEPARTURES_KEPT]

    def departed_for(self, call: int) -> str | None:
        with self._remote_lock:
            seen = [(w, threads) for w, threads, held in self._departed if call in held]
        if not seen:
            return None
        names = [w for w, _ in seen]
        threads = sum(t for _, t in seen)
        return (f"{len(names)} dask worker(s) ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}; "
                f"{threads} thread(s)) {CLUSTER_LOST[0]} (killed, a machine gone, "
                "or retired): dask reran them on the others. The record's workers and utilization count the "
                "threads the call began with")

    def _fail_all(self, why: str) -> None:
        """Fail every local future of this pool's work still out with ``DaskWorkerLost(why)``, and cancel it."""
        with self._remote_lock:
            pending, self._remote = self._remote, {}
            client = self.client
        for local in pending.values():
            with contextlib.suppress(InvalidStateError):
                local.set_exception(DaskWorkerLost(why))
        if pending and client is not None:
            with contextlib.suppress(Exception):
                client.cancel(list(pending))
        self._lost_worker()

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.client is None:
            raise closed_pool(self.name)
        self._refuse_closed_client()
        if kwargs.keys() & _CLIENT_SUBMIT_NAMES:  # the user's own keywords, not Client.submit's options
            fn, kwargs = functools.partial(fn, **kwargs), {}
        return self._track(self.client.submit(_submitted_call, fn, *args, pure=False, key=_key_of(fn), **kwargs),
                           stamp=False)

    def collect(self, raw: Any, task: ChunkTask) -> ChunkOutcome:
        data, arrived_ns = raw
        outcome = received(data)
        duration = outcome.end_ns - outcome.start_ns
        outcome.end_ns = arrived_ns
        outcome.start_ns = max(task.submit_ns, arrived_ns - duration)
        outcome.bytes_received = len(data)
        outcome.bytes_sent = task.bytes_sent + outcome.fn_bytes_loaded
        return arrived(outcome)

    def process_ids(self) -> list[int]:
        """The worker processes of a LocalCluster of its own (a user's cluster's are not this pool's)."""
        nannies = list(self._cluster.workers.values()) if self._cluster is not None else []
        return [pid for nanny in nannies if (pid := getattr(nanny, "pid", None))]

    def kill(self) -> None:
        """Its own cluster's workers are killed first, as a process pool's are: a polite close waits for busy
        ones (a nanny gives each 5 s). On a user's cluster this pool's work is cancelled: what is queued
        never runs; what runs ends when its item returns (dask cannot stop a running task), and the workers stay."""
        for pid in self.process_ids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with self._remote_lock:
            remote, self._remote = list(self._remote), {}
        if remote and self._cluster is None and self.client is not None:
            with contextlib.suppress(Exception):  # a client already closing: its futures go with it
                self.client.cancel(remote)
        self.shutdown(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        with self._remote_lock:
            self._closed = True
        if self.client is not None and self._cluster is None and self._plugin is not None:
            # a user's cluster keeps no initializer of ours; a timeout's kill does not wait on the scheduler for it
            if wait:
                self._unregister(self.client, self._plugin)
            else:
                threading.Thread(target=self._unregister, args=(self.client, self._plugin),
                                 name="payoff-dask-unregister", daemon=True).start()
        self._plugin = None
        client, local_cluster = self.client, self._cluster
        self._scattered, self._blobs = {}, {}
        if self._owns_client and client is not None:
            self.client = None
        else:
            client = None
        self._cluster = None
        environ, self._environ = self._environ, {}
        if wait:
            _close(client, local_cluster, environ)
        elif client is not None or local_cluster is not None:  # a timeout's kill: its caller returns on time
            threading.Thread(target=_close, args=(client, local_cluster, environ), name="payoff-dask-close",
                             daemon=True).start()


def _close(client: Any, cluster: Any, environ: dict[str, str | None]) -> None:
    """A client and LocalCluster of payoff's own, closed: the cluster's close waits for its scheduler and nannies
    (1-2 s), which a call's timeout must not (``map(timeout=1)`` returned after 2.0-2.9 s in 6 of 14 runs).
    A nanny that restarted a worker meanwhile set its variables again: they go back to ``environ``."""
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()
    _restore(environ)


def _refuse_forked() -> None:
    """A process forked from one that ran ``distributed`` cannot use it: its dask map waited forever
    (interrupts trial: a program that used dask, then forked; 4 of 4). Its start fails at once instead."""
    threads = _forks.distributed_inherited()
    if threads:
        raise RuntimeError(
            f"payoff: this process was forked (os.fork) from one where dask's distributed ran (its threads "
            f"{', '.join(repr(t) for t in threads[:3])}): its event loop and thread pools are copies whose threads "
            "do not exist here, and a dask call would wait forever. Use strategy='processes' or 'threads' here, or "
            "start this process with multiprocessing's 'spawn' or 'forkserver' method instead of fork")


def _nanny_environ() -> dict[str, str | None]:
    """The variables distributed's nannies set in the process that starts them, before each worker they start
    (``distributed.nanny.pre-spawn-environ``, ``PYTHONHASHSEED``), as they are now. distributed leaves them set
    (``os.environ.update``): the program's own subprocesses then ran with one BLAS thread and a fixed hash seed,
    after the cluster was gone too (host trial 44)."""
    import dask

    names = {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), "PYTHONHASHSEED"}
    return {name: os.environ.get(name) for name in names}


def _restore(environ: dict[str, str | None]) -> None:
    for name, value in environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _key_of(fn: Any) -> str:
    """A submitted call's task key as dask names its own (``score-<uuid>``): the wrapper payoff puts around a
    call was named ``<payoff.worker.Submitted object at 0x...>`` on the dashboard and in the logs."""
    inner = getattr(fn, "fn", fn)
    inner = getattr(inner, "func", inner)  # a functools.partial
    return f"{getattr(inner, '__name__', type(inner).__name__)}-{uuid.uuid4().hex}"


def _lost_dependency(remote: Any) -> bool:
    """Whether dask cancelled ``remote`` because something it depends on (the scattered function) was lost."""
    if getattr(remote, "status", None) != "cancelled":
        return False
    try:
        remote.result()  # cancelled: at once
    except Exception as exc:
        return "lost dependencies" in str(exc)
    return False


def _relay(remote: Any, local: Future[Any], stamp: bool = True,
           lost: Callable[[], None] | None = None) -> None:
    """Completion callback (a dask thread): pass the result on, stamped with the parent's clock."""
    arrived_ns = time.monotonic_ns()
    try:
        result = remote.result()
    except BaseException as exc:
        error = exc.carried if isinstance(exc, ItemExit) else exc
        if type(exc).__name__ in ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError"):
            lost_as = DaskKilledWorkers if type(exc).__name__ == "KilledWorker" else DaskWorkerLost
            error = lost_as(f"{type(exc).__name__}: {exc}")
            if lost is not None and type(exc).__name__ in ("KilledWorker", "CommClosedError"):
                lost()
        with contextlib.suppress(InvalidStateError):  # failed already: the cluster had no workers
            local.set_exception(error)
        return
    with contextlib.suppress(InvalidStateError):
        local.set_result((result, arrived_ns) if stamp else result)


def _placed(holders: Counter[int], members: dict[str, int] | None, out: Counter[int]) -> set[int]:
    """The calls held (``holders``: by how many workers) by as many workers as they could be: every worker in
    ``members``, or one per chunk the call has ``out`` where that is fewer (a call of one chunk on a cluster of
    two was watched closely for a whole second, review 68); with no members known, by one."""
    return {call for call, n in out.items() if holders[call] >= (min(len(members), n) if members else 1)}


def _done_within(remote: Any, seconds: float) -> bool:
    """Whether ``remote`` is done, waiting for it at most ``seconds`` (its error, if it failed, is raised)."""
    with contextlib.suppress(TimeoutError):
        remote.result(timeout=seconds)
    return bool(remote.done())


def _nanny_failed(exc: BaseException) -> bool:
    """Whether a LocalCluster's start failed because a nanny's worker died starting ("Nanny failed to start."),
    as one importing an unguarded script does. distributed wraps every start failure in a RuntimeError ("Cluster
    failed to start: Scheduler failed to start." for a port in use): only the nanny's is the script's."""
    return any("Nanny failed to start" in str(e) for e in error_chain(exc))
