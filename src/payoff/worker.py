"""The chunk runner: the only payoff code that runs inside workers.

It is a top-level function so every backend can import it by reference. It
times items with the monotonic clock, measures the chunk's CPU time and hands
back results plus :class:`ChunkStats` material, so the parent never has to
guess what happened in a worker. Timing every single item costs about 80 ns;
for items of a few microseconds that is several percent, so the runner sizes
its timing blocks as it goes: one clock read per ~250 us of work, and the
record keeps each block's size so per-item figures stay honest averages.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_local = threading.local()
_in_worker_process = False


def in_worker() -> bool:
    """True inside a payoff chunk (any backend) or a payoff worker process."""
    return _in_worker_process or getattr(_local, "depth", 0) > 0


@dataclass
class ChunkOutcome:
    """What a worker sends back for one chunk.

    Stamps are ``time.monotonic_ns()``, which on Linux and macOS is one
    system-wide clock, so parent and worker stamps can be subtracted.
    """

    index: int
    first: int
    results: list[Any]
    start_ns: int
    end_ns: int
    cpu_ns: int
    durations_ns: array[int]
    block_sizes: array[int]
    worker: str
    error: BaseException | None = None
    error_index: int | None = None
    bytes_received: int = 0
    bytes_sent: int = field(default=0)
    fn_bytes_loaded: int = 0
    """Bytes of a shipped function this worker loaded for this chunk (0 when cached)."""

    @property
    def n_done(self) -> int:
        return len(self.results)


class CancelToken:
    """A flag checked between timing blocks so thread chunks stop early on cancel."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


BLOCK_TARGET_NS = 250_000
"""One clock read (and one block of bookkeeping) per this much work keeps overhead near 1%."""
MAX_BLOCK = 4096


def run_chunk(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    first: int,
    index: int,
    cancel: CancelToken | None = None,
) -> ChunkOutcome:
    """Run ``fn`` over ``items``; never raises for a user error (it is returned)."""
    _local.depth = getattr(_local, "depth", 0) + 1
    results: list[Any] = []
    durations: array[int] = array("q")
    sizes: array[int] = array("q")
    start_ns = time.monotonic_ns()
    cpu0 = time.thread_time_ns()
    error: BaseException | None = None
    try:
        _run_blocks(fn, items, results, durations, sizes, cancel)
    except Exception as exc:
        error = exc
        if len(results) > sum(sizes):  # the failing block's finished items still count as work done
            sizes.append(len(results) - sum(sizes))
            durations.append(0)
    finally:
        _local.depth -= 1
    end_ns = time.monotonic_ns()
    outcome = ChunkOutcome(index, first, results, start_ns, end_ns, time.thread_time_ns() - cpu0,
                           durations, sizes, _worker_name())
    if error is not None:
        outcome.error_index = first + len(results)
        error.add_note(f"payoff: raised by item {outcome.error_index} of the map "
                       f"(chunk {index}, worker {outcome.worker})")
        outcome.error = error
    return outcome


def _run_blocks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    results: list[Any],
    durations: array[int],
    sizes: array[int],
    cancel: CancelToken | None,
) -> None:
    """Blocks grow while items are cheaper than the target and shrink when they get dearer."""
    clock = time.perf_counter_ns
    append = results.append
    n = len(items)
    lo, block = 0, 1
    last = clock()
    while lo < n:
        hi = min(n, lo + block)
        if block == 1:
            append(fn(items[lo]))
        else:
            for item in items[lo:hi]:
                append(fn(item))
        now = clock()
        took = now - last
        durations.append(took)
        sizes.append(hi - lo)
        last = now
        per_item = took // (hi - lo) or 1
        block = max(1, min(MAX_BLOCK, BLOCK_TARGET_NS // per_item))
        lo = hi
        if cancel is not None and cancel.is_set():
            return


def _worker_name() -> str:
    return f"{os.getpid()}:{threading.get_ident()}"


# -- process side -----------------------------------------------------------


@dataclass(frozen=True)
class ShippedFn:
    """A large function (model, explainer, data inside) left in a file for workers to load once.

    Sending a 3 MB explainer with every chunk is what makes naive process
    pools slower than a loop; by content hash, each worker unpickles it once
    per distinct version, however many chunks and calls use it.
    """

    digest: str
    path: str
    size: int


_FN_CACHE_SIZE = 4
_fn_cache: dict[str, Callable[[Any], Any]] = {}


def _resolve(fn: Any) -> tuple[Callable[[Any], Any], int]:
    """The callable itself, and how many bytes this worker had to load for it."""
    if not isinstance(fn, ShippedFn):
        return fn, 0
    cached = _fn_cache.get(fn.digest)
    if cached is not None:
        return cached, 0
    with open(fn.path, "rb") as fh:
        blob = fh.read()
    loaded: Callable[[Any], Any] = pickle.loads(blob)
    if len(_fn_cache) >= _FN_CACHE_SIZE:
        _fn_cache.pop(next(iter(_fn_cache)))
    _fn_cache[fn.digest] = loaded
    return loaded, len(blob)


def run_pickled_chunk(payload: bytes) -> bytes:
    """Process entry point: the parent pre-pickles so it can count the bytes exactly."""
    shipped, items, first, index = pickle.loads(payload)
    fn, loaded = _resolve(shipped)
    return run_to_bytes(fn, items, first, index, loaded)


def run_to_bytes(fn: Callable[[Any], Any], items: Sequence[Any], first: int, index: int, loaded: int = 0) -> bytes:
    """Run a chunk and pickle its outcome, replacing what cannot be pickled with a clear error."""
    outcome = run_chunk(fn, items, first, index)
    outcome.fn_bytes_loaded = loaded
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an unpicklable result or exception
        outcome.results = []
        outcome.error = RuntimeError(
            f"payoff: chunk {index} finished but its results or exception cannot be pickled "
            f"back to the parent: {exc!r}"
        )
        outcome.error_index = first
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)


def init_process(user_init: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
    """Runs once per worker process: marks it as a worker, then the user's initializer."""
    global _in_worker_process
    _in_worker_process = True
    if user_init is not None:
        user_init(*args)


def ping() -> int:
    """Round trip used to prove a pool is alive and its initializer succeeded."""
    return os.getpid()
