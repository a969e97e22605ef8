"""Dask: the same chunks on a ``dask.distributed`` cluster.

A user's ``Client``, an address from the config, or (neither) a LocalCluster
bound to 127.0.0.1. Chunks travel pre-pickled, so bytes are counted as for
local pools. Remote clocks are not trusted across machines: a chunk's
duration comes from the worker, but where it sits in time is anchored on the
parent's clock when the result arrives. A function large enough to ship once
is scattered to every worker and cached there by content hash.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future
from typing import Any

import cloudpickle

from payoff.strategies import SHIP_ONCE_BYTES
from payoff.strategies.base import ChunkTask, Strategy, closed_pool
from payoff.worker import ChunkOutcome, arrived, run_to_bytes

CONNECT_TIMEOUT_SECONDS = 5.0
_cache: dict[str, Callable[[Any], Any]] = {}


class DaskWorkerLost(BrokenExecutor):
    """A chunk could not finish on the cluster (its workers kept dying, or the scheduler went away)."""


def run_dask_chunk(fn_blob: bytes | None, digest: str, payload: bytes) -> bytes:
    """Worker side: resolve a scattered function once per worker, then run the chunk like a process pool."""
    fn, items, first, index = pickle.loads(payload)
    loaded = 0
    if digest:
        if digest not in _cache:
            assert fn_blob is not None
            _cache.clear()
            _cache[digest] = pickle.loads(fn_blob)
            loaded = len(fn_blob)
        fn = _cache[digest]
    return run_to_bytes(fn, items, first, index, loaded)


class DaskStrategy(Strategy):
    name = "dask"
    crosses_processes = True
    pickler = "cloudpickle"

    def __init__(self, workers: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), start_method: str | None = None, *,
                 client: Any = None, address: str | None = None) -> None:
        super().__init__(workers, initializer, initargs, start_method)
        self.client = client
        self.address = address
        self._owns_client = client is None
        self._cluster: Any = None
        self._scattered: dict[str, Any] = {}

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        if self.client is None:
            if self.address:
                self.client = Client(self.address, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
            else:
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             host="127.0.0.1", dashboard_address=None, silence_logs=40)
                self.client = Client(self._cluster, set_as_default=False)
        if self.initializer is not None:
            self.client.run(self.initializer, *self.initargs)
        self.client.run(lambda: None)
        info = self.client.scheduler_info()
        self.workers = max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        blob = bytes(cloudpickle.dumps(fn))
        if len(blob) < SHIP_ONCE_BYTES:
            return fn
        digest = hashlib.sha256(blob).hexdigest()[:32]
        if digest not in self._scattered:
            self._scattered = {digest: self.client.scatter(blob, broadcast=True, hash=False)}
        return ("scattered", digest, len(blob))

    def submit(self, fn: Any, task: ChunkTask) -> Future[Any]:
        if self.client is None:
            raise closed_pool(self.name)
        shipped = isinstance(fn, tuple) and fn[:1] == ("scattered",)
        digest = fn[1] if shipped else ""
        payload = cloudpickle.dumps((None if shipped else fn, task.items, task.first, task.index))
        task.bytes_sent = len(payload)
        task.submit_ns = time.monotonic_ns()
        remote = self.client.submit(run_dask_chunk, self._scattered.get(digest) if shipped else None, digest,
                                    payload, pure=False)
        local: Future[Any] = Future()
        local.set_running_or_notify_cancel()
        remote.add_done_callback(lambda f: _relay(f, local))
        return local

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        local: Future[Any] = Future()
        local.set_running_or_notify_cancel()
        self.client.submit(fn, *args, pure=False, **kwargs).add_done_callback(
            lambda f: _relay(f, local, stamp=False))
        return local

    def collect(self, raw: Any, task: ChunkTask) -> ChunkOutcome:
        data, arrived_ns = raw
        outcome = pickle.loads(data)
        assert isinstance(outcome, ChunkOutcome)
        duration = outcome.end_ns - outcome.start_ns
        outcome.end_ns = arrived_ns
        outcome.start_ns = max(task.submit_ns, arrived_ns - duration)
        outcome.bytes_received = len(data)
        outcome.bytes_sent = task.bytes_sent + outcome.fn_bytes_loaded
        return arrived(outcome)

    def shutdown(self, wait: bool = True) -> None:
        client, cluster = self.client, self._cluster
        self._scattered = {}
        if self._owns_client and client is not None:
            self.client = None
            client.close()
        if cluster is not None:
            self._cluster = None
            cluster.close()


def _relay(remote: Any, local: Future[Any], stamp: bool = True) -> None:
    """Completion callback (a dask thread): pass the result on, stamped with the parent's clock."""
    arrived_ns = time.monotonic_ns()
    try:
        result = remote.result()
        local.set_result((result, arrived_ns) if stamp else result)
    except BaseException as exc:
        error = exc
        if type(exc).__name__ in ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError"):
            error = DaskWorkerLost(f"{type(exc).__name__}: {exc}")
        local.set_exception(error)

