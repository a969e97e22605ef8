"""MapRecord: everything measured about one ``map`` call.

The executor builds exactly one record per call. Metrics, spans, warnings and
reports are all derived from it, so they cannot disagree with each other.
"""

from __future__ import annotations

import math
import os
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, overload

from payoff import _loop_waits
from payoff.config import cpu_capacity
from payoff.reasons import Reason, initial_decision
from payoff.worker import run_queue_readable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from payoff._gil_wait import GilWaits

GIL_BOUND_CORES = 0.8
"""Threads that together kept this much of a core busy were paced by the GIL, not by waiting."""


def gil_bound(cpu_seconds: float, wall_seconds: float) -> bool:
    """Whether threads that used ``cpu_seconds`` in ``wall_seconds`` were paced by the GIL (``GIL_BOUND_CORES``)."""
    return cpu_seconds >= GIL_BOUND_CORES * wall_seconds


CPU_BOUND_RATIO = 0.5
"""Work whose probe used at least this much CPU per second of wall time gets its contention removed."""
GIL_FREE_RATIO = 0.9
"""Pool threads that spent less of their own time than this on a CPU waited for something, I/O or the GIL:
their waits for a CPU come at each wake-up, the pool's own doing, and tell nothing of the load a loop would
meet. Two threads of pure-Python work beside one busy program read 1.17-1.25x for calls 0.88-0.95x the loop:
at each hand-over of the GIL the woken thread queued for a CPU behind the program and the other thread, and
those waits were added to the loop's estimate as other programs' load. Threads of work free of the GIL (numpy)
keep about all their own time on a CPU, and the load they meet is the loop's."""
WAITING_PRICED_RATIO = 0.2
"""On threads, work with at least this CPU share is priced by its CPU; below it, at its own time less the GIL's
queue sampled meanwhile (``payoff._gil_wait``), or at its own time where none was. Below it an item's CPU is
too small a part of its time, and too noisy a reading, to stand for the whole item: a share read from a few
items of a 1 ms or 2 ms sleep spread 0.06-0.12 and up to 0.2, and priced by it, 60 items of a 2 ms sleep
read 0.05 s for 0.15 s of work (test_records_are_consistent, 1 run in 8)."""
GIL_PRICED_RATIO = 0.1
"""Items known to hold the GIL under this share of their time: a threads run that kept the GIL busy only
raises their share, never lowers it (``planning._cpu_share``)."""
PAYS_OFF_MARGIN = 1.05
"""A call "pays off" when its estimated speedup beats serial by at least 5%."""
WARMUP_SAID = 0.05
"""The summary names the workers' one-time imports once they took this share of the call's wall time."""
OUTCOMES = ("ok", "error", "timeout", "cancelled")
"""How a call ended (``MapRecord.outcome``): it returned its results, an item or payoff raised,
its ``timeout=`` struck, or it was stopped (``cancel()``, Ctrl-C, ``shutdown``)."""
_ENDED = {"error": "failed", "timeout": "timed out", "cancelled": "cancelled"}


def outcome_of(error: BaseException | None, n_errors: int = 0, input_failed: bool = False) -> str:
    """The ``outcome`` of a call that ended with ``error`` (None: it completed).

    An item that raised makes the call an ``error`` whatever the exception's
    type: ``fn`` raising ``TimeoutError`` itself is not the call's ``timeout=``;
    nor is an input raising its own (``input_failed``: a socket read that timed out).
    """
    if error is None:
        return "ok"
    if n_errors or input_failed:
        return "error"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return "cancelled"
    return "error"


_T = TypeVar("_T")


class _memo(Generic[_T]):
    """``functools.cached_property`` without the class-wide lock Python 3.11 takes on first access.

    Two derived summaries per traced call made that lock a measurable part of a
    tiny call's telemetry cost. Two threads racing compute equal values, so no lock is needed.
    """

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self._fn = fn
        self._name = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _memo[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _memo[_T] | _T:
        if obj is None:
            return self
        value = obj.__dict__[self._name] = self._fn(obj)
        return value


ESTIMATE_OVERTURNED = 3.0
"""Items measured this many times off the cost a plan estimated them at overturn the estimate: a fallback's detail
then says what the call measured, and the planner takes the measured cost as a new one."""
OVERTURN_MIN_SECONDS = 0.0002
"""...and only when the work measured and the work estimated differ by this much: below it, the timing of a few
items is not precise enough to overturn anything."""


@dataclass(frozen=True)
class ChunkStats:
    """One chunk as the worker saw it; stamps are monotonic nanoseconds."""

    index: int
    first_item: int
    n_items: int
    worker: str
    submit_ns: int
    start_ns: int
    end_ns: int
    cpu_ns: int
    durations_ns: tuple[int, ...]
    """Timing blocks: one clock read per block of ``block_sizes[i]`` items."""
    block_sizes: tuple[int, ...]
    bytes_sent: int
    bytes_received: int
    where: str
    """``pool``, ``caller`` (probe or serial run) or ``retry`` (serial rerun after a failure)."""
    n_errors: int = 0
    runq_ns: int = 0
    """Of the chunk's busy time, how long its thread waited for a CPU (Linux; 0 where unknown)."""
    blocked: int | None = None
    """How often the chunk's thread gave up its CPU to wait (voluntary context switches); None where unknown."""
    pieces: int = 1
    """How many chunk pieces (``MapRecord.n_chunks`` counts them) this stands for: past ``FOLD_AT`` of them, a
    call's older pieces are folded together (see ``RecordBuilder``). A folded one keeps the sums (items, busy,
    CPU, bytes, errors, waits) and its first piece's submit and start; its timing blocks are coarser."""
    warmup_ns: int = 0
    """Of the chunk's queue wait, how long its worker spent importing what the function or items needed, the
    first time it met them: a cost the next call on warm workers does not pay (``worker_warmup``)."""
    imports_ns: int = 0
    """Of its items' timed work, what the imports they made afresh took (items run in the caller to measure
    them): a loop pays it once, and it is no item's cost (``items_seconds``)."""

    @property
    def queue_wait_seconds(self) -> float:
        return max(0, self.start_ns - self.submit_ns) / 1e9

    @property
    def busy_seconds(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ns / 1e9

    @property
    def own_seconds(self) -> float:
        """Busy time without the waits for a CPU: what the items took when they had one (at least their CPU)."""
        busy_ns = max(0, self.end_ns - self.start_ns)
        return min(busy_ns, max(self.cpu_ns, busy_ns - self.runq_ns)) / 1e9

    def item_times(self) -> list[tuple[float, int]]:
        """(seconds per item, how many items) for each timing block."""
        return list(block_times(self.durations_ns, self.block_sizes))


def block_times(durations_ns: Sequence[int], sizes: Sequence[int]) -> Iterator[tuple[float, int]]:
    """(seconds per item, items) of each timing block, empty blocks dropped, made one at a time (a consumer
    that drops each pair before the next keeps no tuples alive: see ``telemetry.updates.Blocks``)."""
    for ns, k in zip(durations_ns, sizes, strict=True):
        if k:
            yield ns / 1e9 / k, k


def block_items(durations_ns: Sequence[int] | npt.NDArray[np.int64],
                sizes: Sequence[int] | npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per-item seconds and item counts of timing blocks, empty blocks dropped."""
    import numpy as np  # only for records of many timing blocks: a worker or a small script never loads it

    weights = np.asarray(sizes, dtype=np.int64)
    keep = weights > 0
    return np.asarray(durations_ns, dtype=np.float64)[keep] / 1e9 / weights[keep], weights[keep]


@dataclass(frozen=True)
class Summary:
    """Order statistics of a list of durations, in seconds."""

    count: int
    mean: float
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls.weighted([(v, 1) for v in values])

    @classmethod
    def weighted(cls, pairs: Sequence[tuple[float, int]]) -> Summary:
        """Summary of values that each stand for ``weight`` equal observations."""
        ordered = sorted([p for p in pairs if p[1] > 0])
        if not ordered:
            return _EMPTY
        if len(ordered) == 1:  # a call run as one timed block: no sorting or ranking to do
            ((value, weight),) = ordered
            return cls(weight, value, value, value, value)
        total = sum(w for _, w in ordered)
        mean = sum(v * w for v, w in ordered) / total
        return cls(total, mean, _quantile(ordered, total, 0.5), _quantile(ordered, total, 0.95), ordered[-1][0])

    @classmethod
    def of_timing(cls, chunks: Sequence[ChunkStats]) -> Summary:
        """``weighted`` over the chunks' timing blocks, made without a Python object per block: the values in
        arrays, their order one list of indices. A record read after the call (an older one kept lean, a
        report) left the garbage collector a tuple per block, and a serial call of 400 items timed one by one
        then tipped a young collection over its young results on every call."""
        per, weights = array("d"), array("q")
        for chunk in chunks:
            for ns, k in zip(chunk.durations_ns, chunk.block_sizes, strict=True):
                if k:
                    per.append(ns / 1e9 / k)
                    weights.append(k)
        if len(per) < 2:
            return cls(weights[0], per[0], per[0], per[0], per[0]) if per else _EMPTY
        order = sorted(range(len(per)), key=per.__getitem__)
        total = sum(weights)
        mean = sum(per[i] * weights[i] for i in order) / total  # in weighted's order: its float sum

        def quantile(q: float) -> float:
            rank, seen = max(1, math.ceil(q * total)), 0
            for i in order:
                seen += weights[i]
                if seen >= rank:
                    return per[i]
            return per[order[-1]]

        return cls(total, mean, quantile(0.5), quantile(0.95), per[order[-1]])

    @classmethod
    def of_blocks(cls, values: npt.NDArray[np.float64], weights: npt.NDArray[np.int64]) -> Summary:
        """``weighted`` for many blocks at once: equal results, without a Python loop per block."""
        import numpy as np

        if not values.size:
            return _EMPTY
        order = np.lexsort((weights, values))
        values, weights = values[order], weights[order]
        cumulative = np.cumsum(weights)
        total = int(cumulative[-1])

        def quantile(q: float) -> float:
            return float(values[np.searchsorted(cumulative, max(1, math.ceil(q * total)))])

        return cls(total, float(np.dot(values, weights)) / total, quantile(0.5), quantile(0.95), float(values[-1]))


_EMPTY = Summary(0, 0.0, 0.0, 0.0, 0.0)
VECTORISE_FROM = 64
"""From this many timing blocks on, ``MapRecord.task_time`` uses ``of_blocks``; below, plain Python is faster."""
IMPORT_NUMPY_FROM = 20_000
"""From this many timing blocks on, ``task_time`` imports numpy if the program has not: below, plain Python
(~15 ms for 20,000 blocks) beats the import (100-150 ms), which a traced program's first record paid after
its call was timed, unseen by its span and its record."""


def _quantile(ordered: Sequence[tuple[float, int]], total: int, q: float) -> float:
    """Nearest-rank quantile over weighted values."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, weight in ordered:
        seen += weight
        if seen >= rank:
            return value
    return ordered[-1][0]


@dataclass(frozen=True)
class MapRecord:
    """The facts of one call and the verdict derived from them."""

    def __hash__(self) -> int:
        """By the call it records (equal records are of one call): the generated hash read every field, and its
        ``overhead_seconds`` dict made ``hash(record)`` and a set of records raise ``TypeError``."""
        return hash((self.call_id, self.workload, self.started_at, self.n_items))

    call_id: int
    workload: str
    requested_strategy: str
    selected_strategy: str
    decision_reason: Reason
    fallback_reason: Reason | None
    fallback_detail: str
    granularity: str | None
    n_items: int
    n_chunks: int
    chunk_size: int
    workers: int
    pool_started: bool
    pool_start_failed: bool
    pool_start_seconds: float
    pool_reused: bool
    probe_items: int
    wall_seconds: float
    """From the call's entry (argument checks and reading its input included) until its record was built: what
    follows, the planner's learning and the observers, is outside it (tens of microseconds a call; 1-2 ms on a
    process's first, whose observers and planner meet their first use)."""
    busy_seconds: float
    cpu_seconds: float
    serial_estimate_seconds: float
    """What a loop would take: the items' work, contention removed, and an ``imap`` consumer's own time."""
    overhead_seconds: dict[str, float]
    bytes_sent: int
    bytes_received: int
    n_errors: int
    started_at: float
    """Unix time of the call's start, for reports and logs."""
    chunks: tuple[ChunkStats, ...] = field(repr=False)
    outcome: str = "ok"
    """How the call ended, one of ``OUTCOMES``; a call that is not ``ok`` is never judged against serial."""
    input_seconds: float = 0.0
    """The time reading the input took, where it was read outside the items' own time (a generator a ``map``
    read before its items ran, a stream's chunks read for a pool): a loop waits for its input too, so the
    serial estimate counts it; the items' own cost leaves it out. A slow generator's map read 0.52-0.62x serial
    when it ran 0.91-1.04x the loop, and the next calls ran serially on that word (hunt 76)."""
    consumer_seconds: float = 0.0
    """The time an ``imap``'s caller spent between taking results, on its own work: a loop with the same
    consumer spends it too, so the serial estimate counts it; the items' own cost leaves it out. Where Linux
    tells them, the caller's waits for a CPU meanwhile are not counted: a loop's consumer would not share the
    cores with the pool."""
    pool_shared: bool = False
    """Other work (another call, a ``submit``) held the call's pool while the call did: its workers and queue
    were not the call's alone."""
    shared_seconds: float = 0.0
    """Worker time of the call's workers that was other calls' while the call held the pool: what their chunks
    held, and their share of the time the workers sat idle (of ``n`` calls holding the pool then, each is given
    ``1/n`` of it): not capacity the call left idle, so ``capacity_seconds`` leaves it out, and concurrent
    calls' utilizations sum to the pool's (a ``submit`` is not timed, so only ``pool_shared`` says it was
    there). The metrics add it to ``payoff_shared_seconds_total`` when the call ends, for the same reason: their
    capacity counter advanced as workers x wall while the call ran."""
    gil_priced: bool = False
    """Its items, waiting work on threads, were priced without the waits for the GIL a thread of payoff's own
    met beside them (``payoff._gil_wait``): the serial estimate is their work, not the queue more threads make."""
    pool_starts: int = 0
    """Pools the call started, a failed start included: a restart after a worker died counts again, where
    ``pool_started`` only says there was one."""
    items_said: str = ""
    """The items in the words of a library that split its work into them ("50 instances in 2 tasks"): its
    items (``n_items``) are its own units, some of which it may have emptied. "": the caller's items."""
    fn_shipped: bool = False
    """The call sent its pool's workers a version of a large function they did not have (written once for them
    to load; ``docs/tuning.md``, "Large shared state"): a cost its next calls on that pool do not pay, so, as
    a pool's start, it judges nothing of the function's speed there."""
    contention: float = 1.0
    """How many times longer the function's items took side by side on this pool than alone, as three of auto's
    calls in a row of comparable sizes measured (pool, serial, pool, or the other way; 1.0: none did, or within
    3% of 1; below 1: they took less). Sharing memory bandwidth, a cache or a CPU's boost slows items that the
    pool's own timing cannot tell from dearer ones (data unpickled afresh in a worker's cache speeds them): the
    serial estimate divides the pool's items' time by it (``payoff._side_by_side``)."""

    @property
    def items_text(self) -> str:
        """How many items the call had, in its caller's words: ``7 items``, or a library's own."""
        if self.items_said:
            return self.items_said
        return "1 item" if self.n_items == 1 else f"{self.n_items:,} items"

    @property
    def work_seconds(self) -> float:
        """The serial estimate of the items alone, without reading the input or an ``imap`` consumer's time."""
        return max(0.0, self.serial_estimate_seconds - self.consumer_seconds - self.input_seconds)

    @_memo
    def queue_wait(self) -> Summary:
        """Submit-to-start wait of the chunks that went through a pool."""
        return Summary.of([c.queue_wait_seconds for c in self.chunks if c.where == "pool"])

    @_memo
    def task_time(self) -> Summary:
        """Per-item time (block averages where items were timed in blocks)."""
        blocks = sum(len(c.block_sizes) for c in self.chunks)
        if blocks < VECTORISE_FROM or (blocks < IMPORT_NUMPY_FROM and "numpy" not in sys.modules):
            return Summary.of_timing(self.chunks)
        import numpy as np

        durations = np.concatenate([np.asarray(c.durations_ns, dtype=np.int64) for c in self.chunks])
        sizes = np.concatenate([np.asarray(c.block_sizes, dtype=np.int64) for c in self.chunks])
        return Summary.of_blocks(*block_items(durations, sizes))

    # -- derived --------------------------------------------------------
    @property
    def capacity_seconds(self) -> float:
        """Worker time the call had: its workers x its wall time, less what was other calls' (``shared_seconds``).

        Two calls sharing a pool each see it full, half with the other's chunks;
        counting that half as this call's idle capacity would read a busy pool
        as half idle and advise smaller chunks, which would only add overhead.
        """
        return max(0.0, self.workers * self.wall_seconds - self.shared_seconds)

    @property
    def completed(self) -> bool:
        """Whether the call returned its results (``outcome == "ok"``)."""
        return self.outcome == "ok"

    @property
    def items_done(self) -> int:
        """Items whose chunks came back: all of them when the call completed, fewer when it did not."""
        return min(self.n_items, sum(c.n_items for c in self.chunks))

    @property
    def speedup(self) -> float:
        """Estimated serial time of the same work over the measured wall time; always finite.

        1.0 (no evidence either way) when no item ran (an empty input), the wall time is zero or the ratio is
        not a finite number (a record built or read with extreme values).
        """
        if not self.wall_seconds > 0 or not self.n_items:
            return 1.0
        ratio = self.serial_estimate_seconds / self.wall_seconds
        return ratio if math.isfinite(ratio) else 1.0

    @property
    def efficiency(self) -> float:
        return self.speedup / self.workers if self.workers else 0.0

    @property
    def utilization(self) -> float:
        cap = self.capacity_seconds
        return min(1.0, self.busy_seconds / cap) if cap > 0 else 0.0

    @property
    def mode(self) -> str:
        return "serial" if self.selected_strategy == "serial" or self.workers <= 1 else "parallel"

    @property
    def fell_back(self) -> bool:
        """Whether the call was allowed to run in parallel but ran serially (its fallback reason says why).

        False for a call that only :attr:`~payoff.reasons.Reason.recovered` (a dead
        worker's or a stopped pool's chunks rerun in fresh workers): it stayed where
        it ran, and is counted as a recovery, not as a fallback to serial.
        """
        return self.fallback_reason is not None and not self.fallback_reason.recovered

    @property
    def pays_off(self) -> bool:
        """Did running this call in parallel beat serial by a real margin? Never for a call that did not complete."""
        return self.mode == "parallel" and self.completed and self.speedup >= PAYS_OFF_MARGIN

    @property
    def chunks_cut(self) -> int:
        """Chunks the call was cut into; ``n_chunks`` counts the pieces they came back in (a chunk past its budget
        hands back the items it did not start). Past ``FOLD_AT`` the pieces are folded: then they are all it knows."""
        if any(c.pieces > 1 for c in self.chunks):
            return self.n_chunks
        return len({c.index for c in self.chunks})

    def summary(self) -> str:
        """One line a person can read: what ran, how fast against serial, and why."""
        items = self.items_text
        cut = self.chunks_cut
        chunks = "1 chunk" if cut == 1 else f"{cut:,} chunks"
        if cut < self.n_chunks:  # chunks that ran past their budget, or were split to find a crash, came back in pieces
            chunks += f" ({self.n_chunks:,} pieces)"
        head = f"{self.selected_strategy} x{self.workers}, " + (
            items if not self.n_chunks else f"{items} ({chunks})" if self.items_said else f"{items} in {chunks}")
        if not self.completed:
            return f"{head}: {self._ending()}"
        if self.fell_back and self.fallback_reason is not None:
            return (f"{head}: ran serially ({self.fallback_reason.value}), "
                    f"{self.wall_seconds * 1e3:,.1f} ms; {advice_of(self)}")
        recovered = f" after {self.fallback_reason.value}" if self.fallback_reason is not None else ""
        if self.selected_strategy == "serial":
            why = " to time its items alone (auto_serial_check)" if self.decision_reason is Reason.AUTO_SERIAL_CHECK \
                else ""
            return f"{head}: ran serially{why}, {self.wall_seconds * 1e3:,.1f} ms{recovered}"
        if self.speedup <= 0:  # no chunk measured any work: nothing to compare with serial
            return f"{head}: no work measured, so no speedup against serial{recovered}"
        verdict = "faster" if self.speedup >= 1 else "slower"
        factor = self.speedup if self.speedup >= 1 else 1 / self.speedup
        shared = " (pool shared with other work)" if self.pool_shared else ""
        slower = "" if self.contention == 1 else \
            f", its items {self.contention:.2f}x their time alone side by side (a serial call timed them)"
        return (f"{head}: {factor:.2f}x {verdict} than serial{recovered}, utilization {self.utilization:.0%}"
                f"{shared}, queue wait p50 {self.queue_wait.p50 * 1e3:.1f} ms{slower}{self._warmup_said()}")

    def _warmup_said(self) -> str:
        """The workers' one-time imports, when they took a noticeable part of the call (a slow first call after
        ``import sklearn`` is not what the next ones will be)."""
        warmup = self.overhead_seconds.get("worker_warmup", 0.0)
        if warmup < WARMUP_SAID * self.wall_seconds:
            return ""
        return (f"; its workers first imported what the function needed (about {warmup:,.2f} s each), "
                "which warm workers do not again")

    def _ending(self) -> str:
        """How a call that did not complete ended: ``timed out after 0.20 s, 1 of 4 items done``."""
        ended = _ENDED.get(self.outcome, f"ended ({self.outcome})")
        text = f"{ended} after {self.wall_seconds:,.2f} s, {self.items_done:,} of {self.n_items:,} items done"
        if self.n_errors:
            text += ", 1 item raised" if self.n_errors == 1 else f", {self.n_errors:,} items raised"
        if self.fell_back and self.fallback_reason is not None:
            text += f"; ran serially ({self.fallback_reason.value})"
        return text

    def _repr_html_(self) -> str:
        """Notebooks show the verdict, the numbers and the task timeline."""
        from payoff.report import record_html

        return record_html(self)

    def kept(self) -> MapRecord:
        """This record as an executor keeps it once a newer one came: past ``KEPT_WHOLE_BLOCKS`` timing blocks,
        each chunk's summed in runs of neighbours down to ``KEPT_BLOCKS``, with the percentiles and waits read
        from all of them.

        Items of 0.3 ms or more are timed one by one, and 256 kept records of calls of 2,000 such items held
        36 MiB (20,000 items a call: 355 MiB); the records file already folds its lines so.
        """
        if sum(len(c.block_sizes) for c in self.chunks) <= KEPT_WHOLE_BLOCKS \
                or all(len(c.block_sizes) <= KEPT_BLOCKS for c in self.chunks):
            return self
        lean = replace(self, chunks=tuple(_lean(c) for c in self.chunks))
        lean.__dict__.update(task_time=self.task_time, queue_wait=self.queue_wait)  # as read from every block
        return lean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (reason codes as strings, derived values included)."""
        data = asdict(self)
        data["decision_reason"] = self.decision_reason.value
        data["fallback_reason"] = self.fallback_reason.value if self.fallback_reason else None
        for name in ("capacity_seconds", "speedup", "efficiency", "utilization", "mode", "fell_back", "pays_off",
                     "completed", "items_done"):
            data[name] = getattr(self, name)
        data["queue_wait"], data["task_time"] = asdict(self.queue_wait), asdict(self.task_time)
        return data


OVERTURNED = "planned on an estimate this call's items overturned: "
"""How a fallback's detail begins when the call's items measured far off the estimate it was planned on: its
reason's advice (tiny work "is usually right") is then not the call's."""
OVERTURNED_ADVICE = ("nothing to do: the cost it was planned at came from earlier calls of a function whose items now "
                     "cost otherwise (other arguments, or a function or global it calls redefined)")
EARLIER_CALLS_COST = " (at the cost earlier calls measured)"
"""How a fallback's detail says its items were priced at what earlier calls measured, not at this call's first."""
OVERTURNED_HEAD_ADVICE = ("nothing to do: this call's first items, run to measure the function, cost far less than "
                          "its later ones (an input sorted by size, a cache warm for the first); the next call is "
                          "planned on what all of them cost, and a shuffled input lets its first items stand for "
                          "the rest")
"""Where the overturned estimate was this call's own: told it came from earlier calls when there were none (hunt
55, F2)."""


RUN_INLINE = "run inline by its library: "
"""How a fallback's detail begins when the library the executor serves ran the work itself without a map (one
instance, which calibrated-explanations explains in the caller): no setting of payoff's makes it parallel."""
RUN_INLINE_ADVICE = "nothing to do for one instance: give the library several in one call to run them in parallel"
RERUN_BY_LIBRARY = "re-run serially by its library: "
"""How a recovery's detail begins when the library re-ran the whole call itself after payoff's map failed
(calibrated-explanations does): its warning came as the map failed, naming what failed."""
RERUN_ADVICE = "see the warning given as its map failed: it names what failed there and what to do"
CLUSTER_LOST = ("left the cluster while running this call's chunks", "scheduler-restart")
"""In a dask call's ``map_failure_retry`` detail: a worker left under it (``DaskStrategy.departed_for``), or the
user's ``client.restart()`` cancelled its chunks."""
CLUSTER_LOST_ADVICE = ("nothing to do if the cluster changed (scaled down, restarted, a machine gone): its work was "
                       "rerun on the workers it has; a worker that died of an item (out of memory, a crash in native "
                       "code) does so again, and then the WorkerCrashedError names the item")
"""A retired or restarted dask worker was told as a crash: "a worker died (out of memory, os._exit, a crash in
native code)" (hunt 65)."""


ABOVE_THE_LIMIT = "is above task_size_hint_bytes="
"""In a ``payload_too_large`` detail: a task over the size limit, a measured size, not an estimate of cost."""
MOVING_ADVICE = ("send indices instead of data and load shared state once per worker (worker_initializer), or batch "
                 "tiny items into larger ones (arrays)")
"""``payload_too_large``'s advice when moving the data costs too much, not a task above ``task_size_hint_bytes``."""
FUNCTION_CARRIES = "the function carries "
"""In a ``payload_too_large`` detail: the function (a ``partial``'s, closure's or bound method's data), not the
items, is most of what would move."""
EACH_MOVED_ALONE = "each item is "
"""In a ``payload_too_large`` detail: items and results of at most FEW_BYTES each, moved one by one."""
FEW_BYTES = 256
"""An item and its result pickled in at most this many bytes: nothing in it to send as an index instead."""
MANY_ALONE_ADVICE = ("give each item more work: map a function that handles a block of items (a slice, or a "
                     "numpy array of them) over the blocks, or vectorize it; a loop or numpy runs items this "
                     "cheap best here")
CARRIED_ADVICE = ("load the data the function carries once per worker instead: a worker_initializer that sets a "
                  "module-level global the function reads (the items stay as they are)")


CLOUDPICKLE_CANNOT = " (cloudpickle cannot send it either)"
"""How an unpicklable fallback's detail ends when no pickler payoff has can send it: then joblib is no advice."""
UNSENDABLE_ADVICE = ("keep locks, open files, connections and executors out of what the function carries (a bound "
                     "method carries its instance), its items and its results: create them in each worker "
                     "(worker_initializer), or use strategy='threads', which sends nothing")


def advice_of(record: MapRecord) -> str:
    """What to do about a call's fallback: its reason's advice, unless the call's items overturned the estimate
    or no pickler can send what refused (cloudpickle, joblib's, was tried)."""
    if record.fallback_reason is None:
        return ""
    if record.fallback_detail.startswith(OVERTURNED):
        return OVERTURNED_ADVICE if EARLIER_CALLS_COST in record.fallback_detail else OVERTURNED_HEAD_ADVICE
    if record.fallback_detail.startswith(RUN_INLINE):
        return RUN_INLINE_ADVICE
    if record.fallback_detail.startswith(RERUN_BY_LIBRARY):
        return RERUN_ADVICE
    if record.fallback_reason is Reason.MAP_FAILURE_RETRY and record.selected_strategy == "dask" \
            and any(said in record.fallback_detail for said in CLUSTER_LOST):
        return CLUSTER_LOST_ADVICE
    if record.fallback_reason is Reason.UNPICKLABLE and CLOUDPICKLE_CANNOT in record.fallback_detail:
        return UNSENDABLE_ADVICE
    if record.fallback_reason is Reason.PAYLOAD_TOO_LARGE and FUNCTION_CARRIES in record.fallback_detail:
        return CARRIED_ADVICE
    if record.fallback_reason is Reason.PAYLOAD_TOO_LARGE and EACH_MOVED_ALONE in record.fallback_detail:
        return MANY_ALONE_ADVICE
    if record.fallback_reason is Reason.PAYLOAD_TOO_LARGE and ABOVE_THE_LIMIT not in record.fallback_detail:
        return MOVING_ADVICE  # the size limit played no part: raising it changes nothing (advice trial)
    return record.fallback_reason.advice


ESTIMATED = frozenset({Reason.TINY_WORKLOAD, Reason.POOL_START_COST, Reason.PAYLOAD_TOO_LARGE})
"""Fallbacks a plan decides from the estimated cost of the items (their details state it)."""


def _each(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:,.0f} ns"
    return f"{seconds * 1e6:,.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def shared_within(shared: float, capacity: float, busy: float) -> float:
    """``shared`` at most ``capacity - busy``, in floats too: the subtraction rounds, and a call of 2.0 s of
    worker time, 0.002 s of it busy and the rest shared, read a capacity of 0.0019999999999997797 (a CI run)."""
    shared = min(shared, max(0.0, capacity - busy))
    while shared > 0.0 and capacity - shared < busy:
        shared = max(0.0, shared - math.ulp(capacity))
    return shared


def items_seconds(record: MapRecord) -> float:
    """What the items cost themselves: the serial estimate, with each chunk run in the caller taken at its items'
    timed work less their waits for a CPU (as the probe reads it), not at its busy time.

    A chunk's busy time holds reading its thread's CPU time and run-queue wait
    (20-50 us for the first chunk of a process), which a loop never pays: a call
    of 10 items of 150 ns read as 7 us an item. The estimate prices a pool's
    chunks at their timed items already (``_serial_estimate``). Imports the items made here (``imports_ns``)
    are taken off too: its first probe read 1 s of sklearn's import as an item's cost, and the call taught 3.5 ms
    an item for 0.7 (hunt 59, F1).
    """
    here = [c for c in record.chunks if c.where == "caller"]
    imports = sum(c.imports_ns for c in here) / 1e9  # a module's, once: a function importing in its body
    return max(0.0, record.work_seconds - sum(c.busy_seconds - own_work_seconds(c) for c in here) - imports)


KEPT_WHOLE_BLOCKS = 256
"""An older kept record of at most this many timing blocks stays whole (about 18 KiB): only larger ones are
made lean, so a small call's record reads the same however many calls came after it."""
KEPT_BLOCKS = 16
"""Timing blocks a chunk of an executor's older kept records holds (``MapRecord.kept``): with their percentiles
read from every block, a 2,000-item call of 19 chunks keeps about 20 KiB, not 142."""
FOLD_AT = 1_024
"""Chunk stats a call's record keeps before it folds the older half of them in pairs: an endless ``imap`` cuts a
chunk every few milliseconds, and its record (kept for the whole call, then with the executor's records) grew by
0.2-0.6 MB a second. The newer half stays whole, for what is read from single chunks (hand-over gaps)."""
FOLDED_BLOCKS = 16
"""Timing blocks a folded chunk keeps: pairs of neighbouring blocks are summed until no more are left."""


def fold_older_half(chunks: list[ChunkStats]) -> list[ChunkStats]:
    """The older half of ``chunks`` (in the order they came) folded in pairs that ran in the same place on the
    same worker, then the newer half as it was."""
    older, newer = chunks[:len(chunks) // 2], chunks[len(chunks) // 2:]
    waiting: dict[tuple[str, str], ChunkStats] = {}
    folded: list[ChunkStats] = []
    for c in older:
        key = (c.where, c.worker)
        first = waiting.pop(key, None)
        if first is None:
            waiting[key] = c
        else:
            folded.append(_folded(first, c))
    folded.extend(waiting.values())
    folded.sort(key=lambda c: c.start_ns)
    return folded + newer


def _folded(a: ChunkStats, b: ChunkStats) -> ChunkStats:
    """``a`` and ``b`` (same worker and place) as one: busy time is their sum, counted from ``a``'s start."""
    busy_ns = max(0, a.end_ns - a.start_ns) + max(0, b.end_ns - b.start_ns)
    durations, sizes = coarser_blocks(a.durations_ns + b.durations_ns, a.block_sizes + b.block_sizes)
    return ChunkStats(
        index=min(a.index, b.index), first_item=min(a.first_item, b.first_item), n_items=a.n_items + b.n_items,
        worker=a.worker, submit_ns=a.submit_ns, start_ns=a.start_ns, end_ns=a.start_ns + busy_ns,
        cpu_ns=a.cpu_ns + b.cpu_ns, durations_ns=durations, block_sizes=sizes,
        bytes_sent=a.bytes_sent + b.bytes_sent, bytes_received=a.bytes_received + b.bytes_received, where=a.where,
        n_errors=a.n_errors + b.n_errors, runq_ns=a.runq_ns + b.runq_ns, pieces=a.pieces + b.pieces,
        blocked=None if a.blocked is None or b.blocked is None else a.blocked + b.blocked,
        warmup_ns=min(a.warmup_ns + b.warmup_ns, max(0, a.start_ns - a.submit_ns)),  # part of its wait: a's
        imports_ns=a.imports_ns + b.imports_ns)


def _lean(chunk: ChunkStats) -> ChunkStats:
    if len(chunk.block_sizes) <= KEPT_BLOCKS:
        return chunk
    durations, sizes = coarser_blocks(chunk.durations_ns, chunk.block_sizes, KEPT_BLOCKS)
    return replace(chunk, durations_ns=durations, block_sizes=sizes)


def coarser_blocks(durations: Sequence[int], sizes: Sequence[int],
                   most: int = FOLDED_BLOCKS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Neighbouring timing blocks summed in runs until at most ``most`` are left: every item and ns kept. One
    slice a run, so a record made lean adds no object per block for the garbage collector to count (summing a
    pair at a time made ~300 for 400 blocks on the next call)."""
    n = len(durations)
    if n <= most:
        return tuple(durations), tuple(sizes)
    step = -(-n // most)
    return (tuple(sum(durations[i:i + step]) for i in range(0, n, step)),
            tuple(sum(sizes[i:i + step]) for i in range(0, n, step)))


def waits_mostly(cpu_ratio: float | None) -> bool:
    """Whether items of this measured CPU share (alone: the probe, or earlier calls) mostly wait: on threads,
    their returns from a wait, each queueing for the GIL, are what holds them back."""
    return cpu_ratio is not None and cpu_ratio < WAITING_PRICED_RATIO


def _without_gil_waits(chunk: ChunkStats, waits: GilWaits) -> float:
    """A chunk's own work less its returns from a wait times the GIL queue each met (at least its CPU time).

    Its returns are its voluntary waits over the sampler's per wake-up; where a thread's count cannot be read,
    one per item (the shape of such work: one call that waits).
    """
    if chunk.where != "pool":
        return chunk.busy_seconds
    own = own_work_seconds(chunk)
    returns = chunk.n_items if chunk.blocked is None else waits.waits_in(chunk.blocked)
    return max(min(own, chunk.cpu_seconds), own - returns * waits.wait_ns / 1e9)


def own_work_seconds(chunk: ChunkStats) -> float:
    """The chunk's timed items less their waits for a CPU, at least their CPU time (up to the timed work)."""
    timed = sum(chunk.durations_ns)
    return min(chunk.busy_seconds, max(timed - chunk.runq_ns, min(chunk.cpu_ns, timed)) / 1e9)


def stolen_seconds(chunk: ChunkStats) -> float:
    """Of the chunk's own work (``own_work_seconds``), the time its thread's CPU clock lacked though the thread
    never gave up its CPU to wait (``blocked`` 0): the machine's, not the items' (a hypervisor's steal). 7 of
    600 serial calls of 100 CPU-bound items on this kind of VM read a CPU share of 0.43-0.70 so, each with no
    wait at all, and one such reading sent the function to threads as waiting work (hunt 72, F2). 0 where the
    waits are unknown."""
    if chunk.blocked != 0:
        return 0.0
    return max(0.0, own_work_seconds(chunk) - chunk.cpu_ns / 1e9)


HIDDEN_DEAR_FACTOR = 20
"""A block of items this many times dearer an item than the call's typical item holds dear items among cheap."""
HIDDEN_DEAR_SECONDS = 0.01
"""...if it also ran at least this long (a chunk's least budget): shorter ones cost a worker too little to see."""


DEAR_TOGETHER = 0.25
"""Dear items within this share of a call's input sit together (a sorted input's head or tail)."""


class DearItems(NamedTuple):
    """What a call's timing blocks tell of items dear against its typical item."""

    seconds: float
    """Seconds pool chunks spent on timing blocks of such items."""
    typical: float
    """The typical item's seconds where those items sat together; 0.0 where they were scattered (or none)."""


def dear_items(chunks: Sequence[ChunkStats], n_items: int) -> DearItems:
    """The dear items among a call's cheap ones, read from its pool chunks' timing blocks.

    A chunk checks its budget between timing blocks, and blocks grow while items are cheap: a sorted input's
    dear tail (10 items of 18 ms after 1,990 of 0.3 us) ran as one block, 208 ms on one worker while the other
    sat idle. Dear items that were cut apart count too (a call that checked each item still had them). A
    chunk whose waits for a CPU explain the block is no such case. They sit together within
    ``DEAR_TOGETHER`` of the input: then a chunk cut for the mean item meets them all at once, where scattered
    ones spread over chunks much as the mean assumes. One dear block is evidence of that only if it held two
    dear items' time (one dear item says nothing of where the others are).
    """
    pool = [c for c in chunks if c.where != "caller"]
    least = HIDDEN_DEAR_SECONDS * 1e9
    if not any(max(c.durations_ns, default=0) >= least for c in pool):  # the common case: no block that long
        return DearItems(0.0, 0.0)
    per_item = sorted(d / n for c in pool for d, n in zip(c.durations_ns, c.block_sizes, strict=False) if n)
    typical = per_item[len(per_item) // 2]
    if typical <= 0:
        return DearItems(0.0, 0.0)
    blocks = []  # (first item, nanoseconds, items)
    for c in pool:
        at = c.first_item
        for d, n in zip(c.durations_ns, c.block_sizes, strict=False):
            if n and d >= least and d > HIDDEN_DEAR_FACTOR * typical * n and 2 * c.runq_ns < d:
                blocks.append((at, d, n))
            at += n
    if not blocks:
        return DearItems(0.0, 0.0)
    if len(blocks) == 1:
        together = blocks[0][1] >= 2 * least and blocks[0][2] > 1
    else:
        where = [at for at, _, _ in blocks]
        together = n_items > 0 and max(where) - min(where) <= DEAR_TOGETHER * n_items
    return DearItems(sum(d for _, d, _ in blocks) / 1e9, typical / 1e9 if together else 0.0)


LOOP_WAIT_WORTH_MEASURING = 0.05
"""A loop's estimated wait per CPU second above which what loops here meet is measured (``_others_load``)."""
LOCAL_PROCESS_POOLS = frozenset({"processes", "joblib"})
"""Strategies whose workers are processes of this machine, each with its own CPU time and run-queue wait."""


def shares_the_gil(selected: str, chunks: Sequence[ChunkStats]) -> bool:
    """Whether the call's pool chunks ran on threads of this process, holding the GIL in turn: ``threads``, or a
    pool of the user's (``strategy=ThreadPoolExecutor(...)``) whose chunks all ran here. Such a pool's own time
    holds its waits for the GIL: 200 GIL-bound items on a user's ``ThreadPoolExecutor(3)`` took as long as a
    loop, and the record priced them at their own time, 1.9-2.3x the loop's (hunt 56, F1)."""
    if selected == "threads":
        return True
    here = str(os.getpid())
    return selected == "custom" and all(c.worker.split(":", 1)[0] == here for c in chunks if c.where == "pool") \
        and any(c.where == "pool" for c in chunks)


SerialPrice = Callable[[Sequence[ChunkStats], float], float]
"""A library's own estimate of what one loop over a call's work takes, given its chunks and the record's estimate
from their busy time: a library's items (CE's tasks) may each repeat a setup a loop does once, and it may have
timed its items alone. The record keeps the lower of the two, never below the dearest chunk's work (threads of
items that mostly wait are priced by the GIL queue instead)."""


def _most_at_once(chunks: Sequence[ChunkStats]) -> int:
    """The most workers (by name) that were running the call at one moment, each from its first chunk's start to
    its last chunk's end. Counted by name alone, a worker restarted under a new name counted twice (``dask x3``
    on a cluster of 2, and utilization on 3); chunk by chunk, the cluster's stamps (taken as results arrive)
    overlap a worker's consecutive chunks."""
    spans: dict[str, tuple[int, int]] = {}
    for c in chunks:
        lo, hi = spans.get(c.worker, (c.start_ns, c.end_ns))
        spans[c.worker] = (min(lo, c.start_ns), max(hi, c.end_ns))
    edges = sorted([(lo, 1) for lo, _ in spans.values()] + [(hi, -1) for _, hi in spans.values()])  # ends first
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _library_price(price: SerialPrice, chunks: Sequence[ChunkStats], busy: float, dearest: float) -> float:
    """The lower of the busy time and the library's price, never below the dearest chunk's work (a loop does it
    too); a price that raises is none: the record must never be lost to a library's hook."""
    try:
        return max(dearest, min(busy, price(chunks, busy)))
    except Exception:
        return busy


class RecordBuilder:
    """Accumulates one call's measurements while it runs; ``build`` freezes them."""

    def __init__(self, call_id: int, workload: str, requested: str, granularity: str | None,
                 n_items: int, started_ns: int, started_at: float) -> None:
        self.call_id, self.workload, self.requested = call_id, workload, requested
        self.granularity, self.n_items = granularity, n_items
        self.started_ns, self.started_at = started_ns, started_at
        self.selected = "serial"
        self.decision: Reason = initial_decision(requested)
        self.fallback_reason: Reason | None = None
        self.fallback_detail = ""
        self.input_failed = False
        """The call raised what its input raised while it was read."""
        self.workers = 1
        self.consumer_ns = 0
        self.input_ns = 0
        """Reading the input outside the items' time (``MapRecord.input_seconds``), set as the call ends."""
        self._process_cpu_ns = time.process_time_ns()
        self._pool_cpu_ns: int | None = None
        """The process's CPU time when the call's pool was leased: what its threads ran beside starts there."""
        self.chunk_size = max(1, n_items)
        self.contention = 1.0
        """The plan's slowdown side by side for its pool (``MapRecord.contention``), taken off its items' time."""
        self.gil_waits: GilWaits | None = None
        """The GIL queue a thread back from a wait met while the call ran, where it was sampled."""
        self.cpu_ratio: float | None = None
        """CPU per second of wall time of an item run alone (the probe, or what earlier calls measured)."""
        self.chunks: list[ChunkStats] = []
        self.pool_started = False
        self.pool_starts = 0
        self.pool_start_failed = False
        self.pool_start_seconds = 0.0
        self.pool_reused = False
        self.fn_shipped = False
        self.probe_items = 0
        self.overhead_ns: dict[str, int] = {"planning": 0, "serialization": 0, "dispatch": 0}
        self.serial_price: SerialPrice | None = None
        """A library's own estimate of the loop (see ``SerialPrice``)."""
        self.items_said: Callable[[], str] | None = None
        """A library's words for the items (``MapRecord.items_said``), asked when the record is built."""
        self.pool_shared = False
        self.shared_ns = 0
        self.planned_cost: float | None = None
        """Seconds per item the plan estimated the items after the probe at (None: no cost was known)."""
        self.workers_cap: int | None = None
        """The most chunks the call kept out at once on a cluster (``max_workers``): no more ran at once."""

    def share(self, shared: bool, held_ns: int) -> None:
        """A lease given back: whether other work held its pool meanwhile, and the call's worker time it took."""
        self.pool_shared = self.pool_shared or shared
        self.shared_ns += held_ns

    def pool_leased(self) -> None:
        """The call's pool is ready: from here the process's other CPU time can hold its threads back."""
        self._pool_cpu_ns = time.process_time_ns()

    def fall_back(self, reason: Reason, detail: str) -> None:
        self.fallback_reason, self.fallback_detail = reason, detail
        self.selected, self.workers = "serial", 1

    def recover(self, reason: Reason, detail: str) -> None:
        """A failure the call survived where it runs (fresh workers): the reason is kept, the mode is not changed."""
        self.fallback_reason, self.fallback_detail = reason, detail

    def add(self, outcome: Any, where: str, submit_ns: int) -> ChunkStats:
        """Turn a worker's ChunkOutcome into stats (``Any`` keeps record free of worker imports)."""
        stats = ChunkStats(
            index=outcome.index, first_item=outcome.first, n_items=outcome.n_done, worker=outcome.worker,
            submit_ns=submit_ns, start_ns=outcome.start_ns, end_ns=outcome.end_ns, cpu_ns=outcome.cpu_ns,
            durations_ns=tuple(outcome.durations_ns), block_sizes=tuple(outcome.block_sizes),
            bytes_sent=outcome.bytes_sent, bytes_received=outcome.bytes_received, where=where,
            # any exception of an item is its error, sys.exit() too; Ctrl-C is the caller's
            n_errors=int(outcome.error is not None and not isinstance(outcome.error, KeyboardInterrupt)),
            runq_ns=getattr(outcome, "runq_ns", 0), blocked=getattr(outcome, "blocked", None),
            warmup_ns=getattr(outcome, "warmup_ns", 0), imports_ns=getattr(outcome, "imports_ns", 0),
        )
        self.chunks.append(stats)
        if where == "caller" and (self.selected == "serial" or stats.first_item < self.probe_items) \
                and run_queue_readable():  # a loop, run here: what one meets now (not a head beside the pool)
            _loop_waits.note(stats.cpu_ns, stats.runq_ns)
        if len(self.chunks) > FOLD_AT:
            self.chunks = fold_older_half(self.chunks)
        return stats

    def _serial_estimate(self, chunks: Sequence[ChunkStats]) -> float:
        """Busy time, less what pool chunks spent waiting for a CPU or, when it uses the CPU, for the GIL.

        A pool chunk is priced at its timed items (``own_work_seconds``): around
        them a worker reads its clocks and may block (a /proc read, a page fault),
        which a loop never pays; one such 5 ms stall priced three 2 us items at
        1.7 ms each. Its workers, with the caller, can outnumber the cores: a chunk
        then waits on the run queue, which a loop alone would not. Threads of work
        that uses the CPU wait for the GIL instead, which only their CPU time
        shows; the probe, run alone in the caller, tells how much CPU an item uses
        per second of wall time (``cpu_ratio``). Chunks run here are counted
        whole: a loop here, now, would have met the same machine.
        """
        waits, slower = self._gil_waits_measured(), self.contention
        if waits is not None:
            return sum(_without_gil_waits(c, waits) / (slower if c.where == "pool" else 1.0) for c in chunks) \
                + self._others_load() + (self.consumer_ns + self.input_ns) / 1e9
        ratio = self._pricing_ratio()

        def priced(c: ChunkStats) -> float:
            if c.where != "pool":
                return c.busy_seconds
            if ratio is None:  # work that hardly holds the GIL; unmeasured work cannot be corrected for it
                return own_work_seconds(c) / slower
            return min(own_work_seconds(c), c.cpu_seconds / ratio) / slower

        # sum() over ``chunks``, in the order build() sums their busy time: from Python 3.12 sum() compensates
        # float rounding, and a plain loop came out an ulp above the busy time it can never exceed
        total = sum(priced(c) for c in chunks)
        if ratio is not None and self.selected == "threads" and self._items_unlike_the_probe(ratio, chunks):
            total = max(total, self._least_gil_free_time(chunks))
        if self.serial_price is not None and chunks:
            total = _library_price(self.serial_price, chunks, total, max(priced(c) for c in chunks))
        return total + self._others_load() + (self.consumer_ns + self.input_ns) / 1e9

    def _gil_waits_measured(self) -> GilWaits | None:
        """The sampled GIL queue, for threads of items that mostly wait (``payoff._gil_wait``); None otherwise.

        Items of a larger CPU share keep being priced by it: their waits for the GIL are not only at the
        returns from a wait the sampler stands for, but wherever another thread's CPU work holds it.
        """
        if self.selected != "threads" or self.gil_waits is None or not waits_mostly(self.cpu_ratio):
            return None
        return self.gil_waits

    def _items_unlike_the_probe(self, ratio: float, chunks: Sequence[ChunkStats]) -> bool:
        """Whether the pool's items used under half the CPU an item of the probe (or the learned cost) did.

        Items like the probe's are priced right by its share, however long the GIL held them back; and the
        floor below would overstate them where the GIL is held by a thread that waits without a CPU (a
        ``ctypes.PyDLL`` call, a C extension that blocks without releasing it: 4 threads of 0.5 ms CPU and
        2 ms such a wait recorded 1.7-1.9x for 0.95x).
        """
        pool = [c for c in chunks if c.where == "pool"]
        n = sum(c.n_items for c in pool)
        if self.planned_cost is None or not n:
            return False
        return sum(c.cpu_ns for c in pool) / 1e9 / n < 0.5 * ratio * self.planned_cost

    def _least_gil_free_time(self, chunks: Sequence[ChunkStats]) -> float:
        """The pool's own time less the most its threads can have waited for the GIL: a floor under the price.

        The probe's share prices a chunk by its CPU, and items need not share the probe's: a first item of
        3 ms CPU and 2 ms sleep, then 39 items that only sleep 2 ms, priced those at their CPU over 0.6
        (0.1 ms each; 8-12 ms for 80 ms of waiting, 0.15x recorded for a call twice as fast as the loop).
        A thread waits for the GIL only while another thread of this process holds it, which that thread
        does on a CPU or waiting for one: each second of a pool thread's can hold back the other
        ``workers - 1``, each second of any other thread's (the caller, other calls) all ``workers``.
        """
        pool = [c for c in chunks if c.where == "pool"]
        pool_cpu_ns = sum(c.cpu_ns for c in pool)
        since_ns = self._process_cpu_ns if self._pool_cpu_ns is None else self._pool_cpu_ns
        others_ns = max(0, time.process_time_ns() - since_ns - pool_cpu_ns)
        held_ns = (self.workers - 1) * (pool_cpu_ns + sum(c.runq_ns for c in pool)) + self.workers * others_ns
        return max(0.0, sum(own_work_seconds(c) for c in pool) - held_ns / 1e9) / self.contention + sum(
            c.busy_seconds for c in chunks if c.where != "pool")

    def _pricing_ratio(self) -> float | None:
        """The CPU share that prices a pool chunk by its CPU time, or None to take its own time.

        Threads that mix CPU with waiting also wait for the GIL while others hold it (six threads of 1 ms CPU
        and 2 ms sleep: 6 ms an item, where a loop takes 3 ms), so their CPU prices them from a lower share
        than worker processes need, whose own time is already free of waits for a CPU where it can be read.
        """
        if self.selected in LOCAL_PROCESS_POOLS and run_queue_readable():
            return None  # a share learned from threads or a probe could only add its own error
        gil = shares_the_gil(self.selected, self.chunks)
        if self.cpu_ratio is None and gil and self._gil_filled():
            return 1.0  # unmeasured, and the GIL set the pace: CPU-bound, as a first threads call reads it
        floor = WAITING_PRICED_RATIO if gil else CPU_BOUND_RATIO
        return self.cpu_ratio if self.cpu_ratio is not None and self.cpu_ratio >= floor else None

    def _gil_filled(self) -> bool:
        """The pool's threads together kept about a core busy (``gil_bound``, on the chunks so far)."""
        wall = (time.monotonic_ns() - self.started_ns) / 1e9
        return wall > 0 and gil_bound(sum(c.cpu_seconds for c in self.chunks if c.where == "pool"), wall)

    def _others_load(self) -> float:
        """What other programs' load would have added to a loop: the pool's waits for a CPU, less its own.

        With N runnable threads on C CPUs (the cores, or a cgroup quota's worth: a throttled thread waits as
        a queued one does) each waits ``N/C - 1`` seconds per second of CPU. The pool's workers measured
        that wait per CPU second (``q``) with, on average, ``W`` of their own runnable; a loop alone in
        their place would have met the rest, ``N - W + 1`` runnable: a wait of ``q - (W - 1)/C``,
        nothing once the pool's own workers explain it (a quiet machine); the caller's process (sending
        chunks, taking results) counts among them with its CPU time. For the pools of this machine: worker
        processes, and threads, whose waits at each hand-over of the GIL count among the pool's own (four busy
        programs beside two threads of numpy work read 0.27x for a call 2.8x faster than the loop while threads
        were left out); a cluster's workers meet another machine's load.

        That holds for load in the caller's scheduling group (its session's autogroup, its cgroup). Load of
        other sessions or cgroups takes only its group's share, and a loop alone may not wait at all
        (programs of other sessions beside a 2-worker pool: the pool's waits priced a loop at 1.5-1.7x the
        pool's time where it took 0.8-1.1x; data-science trial). The pool's waits cannot tell the two apart:
        what loops run in the caller recently waited (a probe, a serial call: ``payoff._loop_waits``) bounds
        the estimate; with none recent, the caller measures it as a loop for 12 ms of CPU.
        """
        if self.selected not in LOCAL_PROCESS_POOLS and self.selected != "threads":
            return 0.0
        pool = [c for c in self.chunks if c.where == "pool"]
        cpu_ns, runq_ns = sum(c.cpu_ns for c in pool), sum(c.runq_ns for c in pool)
        if cpu_ns <= 0 or runq_ns <= 0:
            return 0.0
        if self.selected == "threads" and cpu_ns < GIL_FREE_RATIO * sum(c.own_seconds for c in pool) * 1e9:
            return 0.0  # items that wait, for I/O or the GIL: their threads' waits at each wake-up are the pool's own
        span_ns = max(c.end_ns for c in pool) - min(c.start_ns for c in pool)
        caller_ns = time.process_time_ns() - self._process_cpu_ns
        if self.selected == "threads":  # the process's CPU time holds its pool threads' too
            caller_ns = max(0, caller_ns - cpu_ns)
        runnable = (cpu_ns + runq_ns + caller_ns) / span_ns if span_ns > 0 else 1.0
        loop_wait = runq_ns / cpu_ns - max(0.0, runnable - 1) / cpu_capacity()
        if loop_wait > LOOP_WAIT_WORTH_MEASURING:
            measured = _loop_waits.recent_or_measured()
            if measured is not None:
                loop_wait = min(loop_wait, measured)
        return max(0.0, loop_wait) * cpu_ns / 1e9

    def _measured_detail(self, chunks: Sequence[ChunkStats]) -> str:
        """The fallback's detail; where this call's items overturned the estimate it was planned on, saying so
        and what they measured, so that no warning states the stale estimate as the size of the work.

        A function whose cost changed under the same planning key (a wrapper whose inner function was
        redefined, a global it reads, a callable instance or partial with other arguments) ran 300 items of
        0.8 ms serially as "0.19 ms of work"; the next call is planned from what this one measured.
        """
        detail, cost = self.fallback_detail, self.planned_cost
        if cost is None or self.fallback_reason not in ESTIMATED or self.selected != "serial" \
                or ABOVE_THE_LIMIT in detail:  # a task over the size limit was measured, not estimated
            return detail
        rest = [c for c in chunks if c.where == "caller" and c.first_item >= self.probe_items]
        n = sum(c.n_items for c in rest)
        measured, planned = sum(own_work_seconds(c) for c in rest), cost * n
        if not n or measured <= 0 or abs(measured - planned) < OVERTURN_MIN_SECONDS \
                or max(measured, planned) < ESTIMATE_OVERTURNED * min(measured, planned):
            return detail
        ratio = measured / planned if planned > 0 else math.inf
        off = f"{ratio:,.0f}x the estimate" if ratio >= 1 else f"1/{1 / ratio:,.0f} of the estimate"
        return (f"{OVERTURNED}{detail}. This call measured "
                f"{measured * 1e3:,.2f} ms of work in those {n:,} items ({_each(measured / n)} an item, {off}): "
                "the next call is planned from that")

    def build(self, error: BaseException | None = None) -> MapRecord:
        """Freeze the call's record; ``error`` is what the call raised (None: it returned its results)."""
        wall = max(1, time.monotonic_ns() - self.started_ns) / 1e9
        chunks = tuple(sorted(self.chunks, key=lambda c: c.first_item))
        n_errors = sum(c.n_errors for c in chunks)
        overhead = {k: v / 1e9 for k, v in self.overhead_ns.items()}
        overhead["pool_start"] = self.pool_start_seconds
        workers = self.workers
        if self.selected == "dask":  # a cluster that grew during the call: never fewer workers than ran its chunks
            workers = max(workers, _most_at_once([c for c in chunks if c.where != "caller"]))
            workers = workers if self.workers_cap is None else min(workers, self.workers_cap)
        warmup = sum(c.warmup_ns for c in chunks)
        if warmup:  # a phase only calls whose workers imported something have: most never do
            overhead["worker_warmup"] = warmup / 1e9 / max(1, workers)  # per worker: beside the wall-time phases
        busy = sum(c.busy_seconds for c in chunks)
        # what was not the call's never leaves it less capacity than its chunks used: utilization <= 1 on the
        # dashboards too, which divide the counters unclamped (a chunk the pool's bookkeeping missed read 1.58)
        shared = shared_within(self.shared_ns / 1e9, workers * wall, busy)
        return MapRecord(
            call_id=self.call_id, workload=self.workload, requested_strategy=self.requested,
            selected_strategy=self.selected, decision_reason=self.decision,
            fallback_reason=self.fallback_reason, fallback_detail=self._measured_detail(chunks),
            granularity=self.granularity, n_items=self.n_items, n_chunks=sum(c.pieces for c in chunks),
            chunk_size=self.chunk_size, workers=workers, pool_started=self.pool_started,
            pool_start_failed=self.pool_start_failed, pool_start_seconds=self.pool_start_seconds,
            pool_reused=self.pool_reused, probe_items=self.probe_items,
            wall_seconds=wall, busy_seconds=busy,
            cpu_seconds=sum(c.cpu_seconds for c in chunks),
            serial_estimate_seconds=self._serial_estimate(chunks), overhead_seconds=overhead,
            bytes_sent=sum(c.bytes_sent for c in chunks), bytes_received=sum(c.bytes_received for c in chunks),
            n_errors=n_errors, started_at=self.started_at, chunks=chunks,
            outcome=outcome_of(error, n_errors, self.input_failed),
            consumer_seconds=self.consumer_ns / 1e9, input_seconds=self.input_ns / 1e9, pool_shared=self.pool_shared,
            shared_seconds=shared, pool_starts=self.pool_starts,
            gil_priced=self._gil_waits_measured() is not None, items_said=self._said(),
            fn_shipped=self.fn_shipped, contention=self.contention,
        )

    def _said(self) -> str:
        """A library's words for the items; none when it has none or they fail (the record must not)."""
        if self.items_said is None:
            return ""
        try:
            return str(self.items_said())
        except Exception:
            return ""
