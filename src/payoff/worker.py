"""The chunk runner: the only payoff code that runs inside workers.

It is a top-level function so every backend can import it by reference. It
times items with the monotonic clock, measures the chunk's CPU time and hands
back results plus :class:`ChunkStats` material, so the parent never has to
guess what happened in a worker. Timing every single item costs about 80 ns;
for items of a few microseconds that is several percent, so the runner sizes
its timing blocks as it goes: one clock read per ~250 us of work, and the
record keeps each block's size so per-item figures stay honest averages.
Bounding a block costs an ``islice`` layer per item (about 6% of a 35 ns
item), so once items are measured that cheap the rest of the chunk runs as
one plain ``map``, as fast as the caller's own loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import os
import pickle
import resource
import select
import signal
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import count, islice, repeat, starmap
from operator import itemgetter
from typing import Any, cast, overload

from payoff import (
    _budget_cut,
    _caller_state,
    _error_copies,
    _exit,
    _forks,
    _relayed_logs,
    _relayed_warnings,
    _warning_filters,
)
from payoff import _stop_marks as stop_marks
from payoff._import_clock import ImportClock
from payoff._imported import imported
from payoff._loop_hidden import hide_running_loop, loop_runs_here, restore_running_loop, without_the_loop
from payoff._native_threads import limit_here
from payoff._reruns import Unsent, article
from payoff._tracebacks import RAISED_BY, from_the_function
from payoff.errors import RemoteError, RemoteTraceback

_local = threading.local()
_in_worker_process = False


_ITEM_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("payoff_item_depth", default=0)
"""Set once in the context a serial ``imap``'s items run in: a per-item thread-local set cost more than the item."""
_RUNNING: contextvars.ContextVar[tuple[object, ...]] = contextvars.ContextVar("payoff_running_calls", default=())
"""The tokens of the calls whose chunks run here, outermost first: a map from one of their items is part of
that call (``running_calls``)."""


def running_calls() -> tuple[object, ...]:
    """The cancel tokens of the in-process calls whose items this code runs inside."""
    return _RUNNING.get()


def in_worker_process() -> bool:
    """True in a worker process of a payoff pool (processes, joblib), whatever runs in it now."""
    return _in_worker_process


def in_worker() -> bool:
    """True inside a payoff chunk (any backend) or a payoff worker process."""
    return _in_worker_process or in_an_item()


def in_an_item() -> bool:
    """True inside an item of a payoff map, wherever it runs (a worker process also runs submitted tasks)."""
    return getattr(_local, "depth", 0) > 0 or _ITEM_DEPTH.get() > 0


_ALONE_AT: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("payoff_alone_at", default=None)
"""The thread, and the item depth there, of the items a serial call runs in its caller's thread (``alone``)."""


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Around the chunk of a call asked to run serially, run in its caller's thread: its items are a loop's, and
    a map inside one of them may use a pool as it would inside a loop. Under ``strategy="serial"`` or with
    parallelism switched off, such maps fell back to serial as ``nested``: three experiments whose 300 items
    map inside ran at the loop's speed, half of what each got alone on 2 cores (hunt 76)."""
    if in_worker() and not in_an_item_run_alone():  # the serial call runs in a pool's item: nested it stays
        yield
        return
    token = _ALONE_AT.set((threading.get_ident(), getattr(_local, "depth", 0) + 1))
    try:
        yield
    finally:
        _ALONE_AT.reset(token)


def in_an_item_run_alone() -> bool:
    """Inside an item that a serial call runs in this thread (``alone``), not in an item a pool runs: a
    worker's thread, or a worker process, already has the cores' share the pool gave it."""
    at = _ALONE_AT.get()
    return not _in_worker_process and at is not None and at == (threading.get_ident(), getattr(_local, "depth", 0))


_submitted = threading.local()

SET_BY_INITIALIZER: set[str] = set()
"""``__main__`` globals that a ``worker_initializer`` run in this process (a serial run's) bound: workers that
ran the initializer themselves hold their own, so these names are no sign that they hold stale ones."""


def initialize_here(init: Callable[..., object], args: tuple[Any, ...]) -> None:
    """Run a ``worker_initializer`` in this process, noting the ``__main__`` globals it binds."""
    main = sys.modules.get("__main__")
    before = {name: id(value) for name, value in list(vars(main).items())} if main is not None else {}
    init(*args)
    if main is not None:
        SET_BY_INITIALIZER.update(name for name, value in list(vars(main).items()) if before.get(name) != id(value))


def in_submitted() -> bool:
    """True inside a task given to ``ParallelExecutor.submit``."""
    return bool(getattr(_submitted, "pools", ()))


class Submitted:
    """A submitted call, marked while it runs so a ``shutdown`` from inside it does not wait for itself, and
    with the pool it runs on, so a map from inside it does not queue its chunks behind it (see
    :func:`running_on`).

    Top level and picklable: process pools run it too (where the marks are harmless).
    """

    __slots__ = ("fn", "pool")

    def __init__(self, fn: Callable[..., Any], pool: int) -> None:
        self.fn, self.pool = fn, pool

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:  # positional-only: ``submit(f, self=1)`` works
        pools = _submitted.__dict__.setdefault("pools", [])  # the submitted tasks this thread is inside
        pools.append(self.pool)
        try:
            return self.fn(*args, **kwargs)
        finally:
            pools.pop()


@contextlib.contextmanager
def delivering_for(pool: int) -> Iterator[None]:
    """Marks a pool's own thread (a process pool's result thread) while it hands a submitted call's outcome to
    its future, whose done-callbacks run there: to them it is the pool's own work. A ``shutdown`` there waited
    for the thread it ran on, and a map there for results only that thread could bring (both hung for good)."""
    pools = _submitted.__dict__.setdefault("pools", [])
    pools.append(pool)
    try:
        yield
    finally:
        pools.pop()


def running_on(pool: object) -> bool:
    """Whether this thread runs a task submitted to ``pool``: a map of that task on that very pool would wait
    for chunks queued behind the task itself (and behind its siblings, which wait alike)."""
    return id(pool) in getattr(_submitted, "pools", ())


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
    error_traceback: str = ""
    """The error's traceback as text, filled in only when the outcome travels to another process."""
    runq_ns: int = 0
    """How long the chunk's thread waited for a CPU while it ran (see :func:`run_queue_ns`)."""
    blocked: int | None = None
    """How often the chunk's thread gave up its CPU to wait (a sleep, I/O, a lock, the GIL) while it ran: its
    voluntary context switches; None where they cannot be read (see :func:`voluntary_waits`)."""
    warmup_ns: int = 0
    """Of loading the chunk, before its first item, how long the worker spent importing modules (the first
    time it met the function's or items' modules; 0 when it had them): see ``payoff._import_clock``."""
    imports_ns: int = 0
    """Of the items' timed work, what imports their first item made afresh took, over the items after it (read
    where they ran in the caller to be measured: ``payoff._probe._timed_prefix``)."""
    imports_cpu_ns: int = 0
    """Of the items' CPU time, what those imports took: less than ``imports_ns`` where the import waited for
    the GIL other threads held."""
    warnings: tuple[Any, ...] = ()
    """The warnings its items raised that the caller's filters let through, for the caller to show
    (``payoff._relayed_warnings``); only a worker process's chunk has them."""
    logs: tuple[dict[str, Any], ...] = ()
    """The log records its items emitted, for the caller's loggers to handle (``payoff._relayed_logs``); only a
    worker process's chunk has them."""
    unsent: tuple[Unsent, ...] = ()
    """The results pickle refused to send back, each as its place in the chunk, its type's name and the error;
    ``None`` stands in ``results`` at each place (see :func:`run_to_bytes`)."""

    @property
    def n_done(self) -> int:
        return len(self.results)

    def __reduce__(self) -> str | tuple[Any, ...]:
        """Its fields in order, the timing arrays as their bytes: the parent loads one of these per chunk, and
        a dataclass's own pickle (a dict of field names, each array rebuilt through ``copyreg``) took 10 us
        to load where this takes 3 (100 results and their timing blocks)."""
        if type(self) is not ChunkOutcome:
            return super().__reduce__()
        values = [getattr(self, name) for name in _OUTCOME_FIELDS]
        values[_DURATIONS], values[_SIZES] = self.durations_ns.tobytes(), self.block_sizes.tobytes()
        return _outcome_from, tuple(values)


def _outcome_from(*values: Any) -> ChunkOutcome:
    outcome = ChunkOutcome(*values)
    outcome.durations_ns, outcome.block_sizes = array("q", values[_DURATIONS]), array("q", values[_SIZES])
    return outcome


_OUTCOME_FIELDS = tuple(f.name for f in fields(ChunkOutcome))
_DURATIONS, _SIZES = _OUTCOME_FIELDS.index("durations_ns"), _OUTCOME_FIELDS.index("block_sizes")


class Star:
    """``fn(*args)`` for an item that is a tuple of arguments: ``starmap``, and ``map`` over several iterables.

    A top-level class rather than a closure, so it pickles to worker processes.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"map() needs a callable as fn, got {type(fn).__name__}: {fn!r}")
        self.fn = fn

    def __call__(self, args: Any) -> Any:
        # an item that is no tuple is made one first, as itertools.starmap makes it (a serial run's): its error
        # then reads as there ("'int' object is not iterable"), not as the unpacking's ("add() argument after *")
        return self.fn(*(args if type(args) is tuple else tuple(args)))

    def __repr__(self) -> str:
        return f"Star({self.fn!r})"


class CancelToken:
    """Stops in-process chunks early: a cancel is seen between timing blocks, a deadline before each item, and
    with a deadline the cancel too (a call with ``timeout=`` runs its caller-side items on a payoff thread,
    which only this token stops)."""

    clock: Callable[[], float] = staticmethod(time.monotonic)
    """What the deadline is read against; a subclass may read another clock (a test's, which it moves itself)."""

    def __init__(self, deadline: float | None = None) -> None:
        self._event = threading.Event()
        self.cancelled: Callable[[], bool] = self._event.is_set
        """Whether :meth:`set` was called, the deadline aside: read before each item where the deadline is."""
        self.deadline = deadline
        """``clock()`` by which the call must end, or None. Fixed once chunks run: they read it as they start."""
        self._hooks: list[Callable[[], object]] = []

    def set(self) -> None:
        self._event.set()
        for hook in list(self._hooks):
            hook()

    def when_set(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` when the call stops (now, if it has): a process pool tells its workers so."""
        self._hooks.append(hook)
        if self._event.is_set():
            hook()

    def is_set(self) -> bool:
        return self._event.is_set() or self.expired()

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()


class SharedStop(CancelToken):
    """A chunk's stop in a worker process: its call's slot in the pool's file of stopped calls
    (``payoff._stop_marks``), where the parent's token cannot be read. No deadline: at a call's deadline the
    parent kills its workers."""

    def __init__(self, stopped: Callable[[], bool]) -> None:
        super().__init__()
        self.cancelled = stopped

    def is_set(self) -> bool:
        return self.cancelled()


BLOCK_TARGET_NS = 250_000
"""A chunk with a budget reads the clock per this much work: it stops at the first block that ends past its
budget, so a block this short keeps the overrun small (and the overhead near 1% while the code stays warm).
A watched one (``payoff._budget_cut``) is ended inside a block, and times its items as one with no budget:
20,000 items of 2 us in 112 blocks cost 1.1 ms more than in 30."""
FREE_BLOCK_TARGET_NS = 1_000_000
"""A chunk with no budget (a serial run that cannot outgrow its plan, a fixed chunksize) times its items
cheaper than BLOCK_TARGET_NS in blocks of this much: its bookkeeping runs cold after the items' work (4-8x
slower than warm on this VM), and 500 items of a 1 MiB array sum spent 1.7 ms of a 24 ms serial call in ~100
blocks' bookkeeping, 1.2 ms in ~25. Dearer items are still timed one by one (the per-item histograms of both
exporters agree on them)."""
MAX_BLOCK = 1 << 14
"""Trivial items (tens of ns) fill blocks of thousands (4,096 made the instrument cost more than the item);
a cap, with growth of at most BLOCK_GROWTH per block, bounds how long a block of items that turn dear can run."""
BLOCK_GROWTH = 8
_CUT = object()
CUT_WATCH_ITEMS = 2
"""A serial run that may outgrow its estimate is watched (``payoff._budget_cut``) from its first block of this
many items on: a block of one item ends at that item."""
TAIL_ITEM_NS = 1_000
"""Items cheaper than this pay a measurable share (about 2 ns of ~35) for the ``islice`` that bounds a block."""
TAIL_BLOCK_NS = 50_000_000
"""So once such items are measured, the rest of a chunk runs as one unbounded ``map`` if it fits in this long
at their measured cost and is at most BLOCK_GROWTH times the items done. A call with a deadline never does,
nor a chunk with a budget (items that turn dearer inside such a block would hold its checks back for the
whole block), except a serial run that may outgrow its estimate, where the rest fits what is left of its budget
at the measured cost (``run_chunk(tail_in_budget=True)``); a watcher ends that block at the budget if its
items turn dear inside it (``payoff._budget_cut``)."""


class ListTail(Sequence[Any]):
    """Items ``lo..`` of a list, without copying them: a serial call's rest after its probe, run in the caller.

    Slicing a million-item list to drop the probed items cost ~4 ms, as much as a tenth of the work of
    trivial items. Only ever run in the caller: it is not meant to be pickled.
    """

    __slots__ = ("_items", "_lo")

    def __init__(self, items: list[Any], lo: int) -> None:
        self._items, self._lo = items, lo

    def __len__(self) -> int:
        return max(0, len(self._items) - self._lo)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self._items)
        it.__setstate__(self._lo)  # type: ignore[attr-defined]  # the list's own iterator, started at lo
        return it

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._items[self._lo + k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError("ListTail index out of range")
        return self._items[self._lo + (i % len(self))]


class Zipped(Sequence[tuple[Any, ...]]):
    """``zip(*sequences)`` as a sequence: ``map(fn, xs, ys)``'s items, without a tuple made for each up front.

    A list of 200,000 argument tuples took 11-37 ms to build (the tuples set off garbage collections), two
    to five times the loop it stood in for. A slice is another ``Zipped`` (of the sequences' slices), which
    pickles as those: a chunk sent to a process carries the columns, not a tuple per item.
    """

    __slots__ = ("_columns", "_n")

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        self._columns = tuple(columns)
        self._n = min(len(c) for c in self._columns)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self._columns, strict=False)  # stops at the shortest, as the builtin map does

    @overload
    def __getitem__(self, i: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, i: slice) -> Zipped: ...

    def __getitem__(self, i: int | slice) -> tuple[Any, ...] | Zipped:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            return Zipped([c[start:stop:step] for c in self._columns])
        if not -self._n <= i < self._n:
            raise IndexError("Zipped index out of range")
        i %= self._n
        return tuple(c[i] for c in self._columns)

    def __reduce__(self) -> tuple[Any, ...]:
        return Zipped, ([c[:self._n] if len(c) > self._n else c for c in self._columns],)

    @property
    def item_bytes(self) -> int | None:
        """What one item adds to a chunk's pickle when every column is an array's rows (a row of each); None
        otherwise, as only pickling sizes other columns."""
        total = 0
        for column in self._columns:
            share = column.item_bytes if isinstance(column, ArrayRows) else None
            if share is None:
                return None
            total += share
        return total


class ArrayRows(Sequence[Any]):
    """A numpy array's items (its rows, or its scalars when 1-D: what ``map`` over it reads) as a sequence
    sliced without reading it.

    Read as a list, a 2-D input became one view object per row (2 M rows: +270 MB over a loop), and a chunk
    of those views pickled row by row: 100,000 rows of 20 floats took 2.9 s to pickle, as one array 0.05 s.
    A slice is another ``ArrayRows`` of the array's slice (a view), which pickles as that array.
    """

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> ArrayRows: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ArrayRows(self.array[i])
        return self.array[i]

    def __reduce__(self) -> tuple[Any, ...]:
        return ArrayRows, (self.array,)

    @property
    def item_bytes(self) -> int | None:
        """What one item adds to a chunk's pickle (its share of the array's buffer); None for objects."""
        if self.array.dtype.hasobject or not len(self.array):
            return None
        return int(self.array.nbytes // len(self.array))


_ENDS_AT_LEN = (list, tuple, range, ListTail, Zipped, ArrayRows)
"""Sequences whose own iterator stops at their length (a custom ``__getitem__`` may never raise IndexError)."""


def run_chunk(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    first: int,
    index: int,
    cancel: CancelToken | None = None,
    budget_ns: int | None = None,
    on_interrupt: Callable[[ChunkOutcome], object] | None = None,
    results: list[Any] | None = None,
    mark_in: tuple[str, int] | None = None,
    check_each: bool = False,
    tail_in_budget: bool = False,
) -> ChunkOutcome:
    """Run ``fn`` over ``items``; never raises for a user error (it is returned).

    A chunk given ``budget_ns`` stops at the first timing block that ends past
    it and returns fewer results than items: it was cut for cheaper items than
    it met, and the parent cuts the rest again from what they now measure.
    Ctrl-C is the caller's, not an item's error: it goes on unchanged, and
    ``on_interrupt`` first gets the items that ran (no error), so a chunk in the
    caller still counts its work. Any other exception an item raises, outside
    ``Exception`` too (``sys.exit()``), is that item's error (see ``_failed``).
    ``results``, given, receives each result as it is computed: a caller that stopped waiting for the chunk
    can still hand out those computed before its deadline. ``mark_in`` (a rerun after a crash, in a worker
    process) names the folder where each item's index is marked before it runs, and the call it is of
    (``payoff._crash_marks``).
    ``check_each``: the budget is checked before each item, not only between blocks (``Plan.check_each``).
    ``tail_in_budget``: trivial items' rest may still run as one unbounded block (TAIL_BLOCK_NS) under a budget,
    if at their measured cost it ends within what is left of it: a serial run that may outgrow its estimate
    (``Plan.outgrow``) keeps a loop's pace on trivial items, and items dear from the start are still checked.
    """
    mark = None if mark_in is None else _marker(mark_in)
    _local.depth = getattr(_local, "depth", 0) + 1
    results = [] if results is None else results
    durations: array[int] = array("q")
    sizes: array[int] = array("q")
    start_ns = time.monotonic_ns()
    cpu0, runq, waits0 = time.thread_time_ns(), [0, 0], voluntary_waits()
    error: BaseException | None = None
    running = None if cancel is None else _RUNNING.set((*_RUNNING.get(), cancel))
    loop = hide_running_loop()
    try:
        _run_blocks(fn, items, results, durations, sizes, cancel, budget_ns, (mark, first), check_each,
                    tail_in_budget, runq=runq)
    except KeyboardInterrupt:
        if on_interrupt is not None:
            _close_last_block(results, durations, sizes, time.monotonic_ns() - start_ns - sum(durations))
            on_interrupt(_ended(index, first, results, start_ns, (cpu0, runq, waits0), durations, sizes))
        raise
    except BaseException as exc:  # see _failed
        error = item_error(exc)
        _close_last_block(results, durations, sizes, 0)  # an item that raised: its block is not timed
    finally:
        restore_running_loop(loop)
        _local.depth -= 1
        if running is not None:
            _RUNNING.reset(running)
        if mark is not None:
            _unmark(mark)
    outcome = _ended(index, first, results, start_ns, (cpu0, runq, waits0), durations, sizes)
    return outcome if error is None else _failed(outcome, error)


def _failed(outcome: ChunkOutcome, error: BaseException) -> ChunkOutcome:
    """The chunk's outcome with the error of the item after its results.

    An item's ``GeneratorExit``, ``sys.exit()`` or a user's own
    ``BaseException`` is such an error too, raised by the caller in input order
    and named as any item's: let through a pool's worker, it failed the whole
    chunk, so a later item's went before an earlier item's error and the
    results before it were lost (fuzz trial). Ctrl-C is never an item's.
    """
    outcome.error_index = outcome.first + len(outcome.results)
    outcome.error = error
    return outcome


def noted(outcome: ChunkOutcome) -> BaseException:
    """The outcome's error, its note naming this outcome's item: written by the caller as it raises it, never
    by the chunk. One exception object raised by several items (a module's sentinel error) is shared by the
    threads running them: a chunk that noted it as it failed, after the call had raised it or for another
    call, renamed the item the caller held. It carries the note of its latest raise."""
    assert outcome.error is not None
    _add_note(outcome.error, _raised_by(outcome.error, outcome.error_index, outcome.index, outcome.worker))
    return outcome.error


def _raised_by(exc: BaseException, item: int | None, chunk: int, worker: str) -> str:
    """The note naming the item that raised ``exc``; an item's ``sys.exit()`` says it ends the caller's program."""
    note = f"{RAISED_BY}{item} of the map (chunk {chunk}, worker {worker})"
    if isinstance(exc, SystemExit):
        return f"{note}: sys.exit({exc.code!r}) ends the caller's program as it would end a loop"
    return note


def _marker(mark_in: tuple[str, int]) -> memoryview | None:
    from payoff import _crash_marks  # only a rerun after a crash pays for its import (8 ms of a worker's start)

    return _crash_marks.marker(*mark_in)


def _unmark(mark: memoryview) -> None:
    from payoff._crash_marks import NOWHERE  # imported by _marker already

    mark[0] = NOWHERE


def _ended(index: int, first: int, results: list[Any], start_ns: int,
           clocks: tuple[int, list[int], int | None], durations: array[int], sizes: array[int]) -> ChunkOutcome:
    """The chunk's outcome as it stands now: its thread's CPU time and waits since it began (``clocks``: what
    they read then), and its run-queue wait while its items were timed (read by ``_run_blocks``)."""
    cpu0, runq, waits0 = clocks
    waits = voluntary_waits()
    return ChunkOutcome(index, first, results, start_ns, time.monotonic_ns(), time.thread_time_ns() - cpu0,
                        durations, sizes, _worker_name(), runq_ns=max(0, runq[1] - runq[0]),
                        blocked=None if waits is None or waits0 is None else waits - waits0)


def _close_last_block(results: list[Any], durations: array[int], sizes: array[int], took_ns: int) -> None:
    """The block a raise cut short: its finished items still count as work done, timed as ``took_ns``."""
    if len(results) > sum(sizes):
        sizes.append(len(results) - sum(sizes))
        durations.append(max(0, took_ns))


class _StoppedEarly(Exception):
    """A block's ``map`` ended before its items did: ``fn`` raised StopIteration, which ``map`` takes for the
    end of its input (the exception itself is gone by then)."""


STOP_ITERATION_MESSAGE = ("fn raised StopIteration (a next() on an exhausted iterator, most likely): payoff "
                          "raises it as this item's error, since taken for the end of the input it would "
                          "silently drop this item's result and the rest")


def item_error(exc: BaseException) -> BaseException:
    """What an item's exception is raised as: itself, except StopIteration, which becomes a RuntimeError.

    A StopIteration let through ends whatever loop runs ``fn``: the builtin ``map``
    stops there, a generator turns it into "generator raised StopIteration", so
    results would go missing or shift. As in a generator (PEP 479), it is a
    RuntimeError, caused by the StopIteration when payoff caught it itself (a
    ``map`` over a block of items swallows it before anyone can).
    """
    if isinstance(exc, StopIteration):
        error = RuntimeError(STOP_ITERATION_MESSAGE)
        error.__cause__ = exc
        return error
    if isinstance(exc, _StoppedEarly):
        return RuntimeError(STOP_ITERATION_MESSAGE)
    return exc



def _add_note(error: BaseException, note: str) -> None:
    """Best effort: a user's exception whose ``__notes__`` is not a list must still arrive as itself.

    An object raised again (a module-level sentinel, on every call of a service) keeps only its latest
    "raised by item" note: one per raise grew its ``__notes__`` for the life of the process.
    """
    with contextlib.suppress(Exception):
        notes = getattr(error, "__notes__", None)
        if note.startswith(RAISED_BY) and isinstance(notes, list):
            notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(RAISED_BY))]
        error.add_note(note)


def _run_blocks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    results: list[Any],
    durations: array[int],
    sizes: array[int],
    cancel: CancelToken | None,
    budget_ns: int | None = None,
    marking: tuple[memoryview | None, int] = (None, 0),
    check_each: bool = False,
    tail_in_budget: bool = False,
    *,
    runq: list[int],
) -> None:
    """Blocks grow while items are cheaper than the target and shrink when they get dearer; a marked chunk
    runs item by item, each item's index (``marking``: the mark and the chunk's first index) set first.

    ``runq`` gets the thread's run-queue wait (``run_queue_ns``) as the first block's timing begins and as the
    last one's ends: the waits of the items' own time, which ``own_work_seconds`` takes off it. Read from the
    chunk's start, they held what its thread waited before (a thread of a pool taking the GIL back, on a
    loaded machine): 40 items that each sleep 2 ms were priced at 61 ms of work on threads on a loaded CI
    machine."""
    clock = time.perf_counter_ns
    append, extend = results.append, results.extend
    n = len(items)
    stop_at = None if budget_ns is None else clock() + budget_ns
    source, gate_ns, gate_passed = _source(items, cancel, budget_ns if check_each else None)
    gated = source is not None
    if source is None:
        source = iter(items)  # one pass: slicing a list per block would copy every item reference
    tail_ok = type(items) in _ENDS_AT_LEN and not gated and (budget_ns is None or tail_in_budget)
    calls, each = (starmap, fn.fn) if type(fn) is Star else (map, fn)  # Star's call in Python cost ~100 ns an item
    lo, block = 0, 1
    mark, base = marking
    watch = tail_in_budget and stop_at is not None and type(source) in _budget_cut.STOPPABLE
    target = FREE_BLOCK_TARGET_NS if budget_ns is None or watch else BLOCK_TARGET_NS
    cut: _budget_cut.Cut | None = None
    runq[0] = run_queue_ns()
    last = clock()
    try:
        while lo < n:
            if mark is not None:
                block, mark[0] = 1, base + lo
            hi = min(n, lo + block)
            if watch and cut is None and hi - lo >= CUT_WATCH_ITEMS and stop_at is not None:
                cut = _budget_cut.arm(source, stop_at)
            if hi - lo == 1 and not gated:
                item = next(source, _CUT)  # ended by the budget's timer between two blocks: none
                if item is not _CUT:
                    append(fn(item))
            elif hi == n and tail_ok:  # map runs the calls in C; on an error the items before it are in results
                extend(calls(each, source))
                del results[n:]  # a list that fn grew while it ran: the call is over its first n items
            else:
                extend(calls(each, islice(source, hi - lo)))
            now = clock()
            done = len(results) - lo
            took = max(done, now - last - done * gate_ns)
            last = now
            if done:
                durations.append(took)
                sizes.append(done)
            if done < hi - lo:  # stopped before the block's end: the deadline or budget, or fn raised StopIteration
                if (gated and gate_passed()) or (cut is not None and cut.end() and n - cut.left == len(results)):
                    return  # the chunk hands back fewer results
                raise _StoppedEarly
            per_item = took // done or 1
            block = 1 if per_item >= BLOCK_TARGET_NS else \
                max(1, min(MAX_BLOCK, BLOCK_GROWTH * (hi - lo), target // per_item))
            if tail_ok and per_item < TAIL_ITEM_NS and n - hi <= BLOCK_GROWTH * hi and (n - hi) * per_item \
                    <= TAIL_BLOCK_NS and (stop_at is None or now + (n - hi) * per_item <= stop_at):
                block = n - hi
            lo = hi
            if cancel is not None and cancel.is_set():
                return
            if stop_at is not None and now >= stop_at:
                return
    finally:
        if cut is not None:
            cut.end()
        runq[1] = run_queue_ns()


def _source(items: Sequence[Any], cancel: CancelToken | None,
            budget_ns: int | None = None) -> tuple[Iterator[Any] | None, int, Callable[[], bool]]:
    """For a call with a deadline, or a chunk whose budget is checked item by item, its items checked against
    the sooner one by one; what each check costs; and whether that time has passed.

    Checking only between blocks let a block grown on cheap items run on past
    the deadline through every dear item in it, and a chunk cut for cheap items
    run a sorted input's dear tail alone while the other workers sat idle. The
    check (a clock read and a generator step, 60-110 ns) is left out of the
    timing, so such chunks measure, plan and record their items at their own
    cost; chunks with neither (None here) do not pay it. A cancel is read before
    each item there too (a ``threading.Event`` read, ~40 ns more), elsewhere between blocks.
    """
    clock = time.monotonic if cancel is None else cancel.clock
    deadline = None if cancel is None else cancel.deadline
    if budget_ns is not None:
        ends = clock() + budget_ns / 1e9
        deadline = ends if deadline is None else min(deadline, ends)
    if deadline is None:
        return None, 0, _never
    if cancel is None:
        return until_deadline(iter(items), clock, deadline), gate_cost_ns(), lambda: clock() >= deadline
    until, cancelled = deadline, cancel.cancelled
    return (until_deadline(iter(items), clock, until, cancelled), gate_cost_ns(stopped=True),
            lambda: clock() >= until or cancelled())


def _never() -> bool:
    return False


_gate_ns: dict[bool, int] = {}


def gate_cost_ns(*, stopped: bool = False) -> int:
    """Measured once per process for each kind of gate (with a cancel read or without), as the lowest of a few
    tries: interruptions only ever add to a try."""
    cost = _gate_ns.get(stopped)
    if cost is None:
        cost = _gate_ns[stopped] = _measure_gate(stopped)
    return cost


def _measure_gate(stopped: bool, n: int = 512, tries: int = 5) -> int:
    clock, never = time.perf_counter_ns, float("inf")

    def run(gate: bool) -> int:
        source: Iterator[int] = iter(range(n))
        if gate:
            source = until_deadline(source, time.monotonic, never, threading.Event().is_set if stopped else None)
        out: list[int] = []
        t0 = clock()
        out.extend(map(id, islice(source, n)))
        return clock() - t0

    plain = gated = 1 << 62
    for _ in range(tries):
        plain, gated = min(plain, run(False)), min(gated, run(True))
    return max(0, (gated - plain) // n)


def until_deadline(source: Iterator[Any], clock: Callable[[], float], deadline: float,
                   stopped: Callable[[], bool] | None = None) -> Iterator[Any]:
    """The items that start before the deadline (and before ``stopped()``: a cancel, Ctrl-C told to the thread
    that runs a call's items): one that started runs to its end, none starts after it. Two loops, so a gate
    with no cancel to read calls nothing more per item."""
    if stopped is None:
        while clock() < deadline:
            try:
                item = next(source)
            except StopIteration:
                return
            yield item
        return
    while clock() < deadline and not stopped():
        try:
            item = next(source)
        except StopIteration:
            return
        yield item


class _Schedstat:
    """This thread's ``/proc/thread-self/schedstat``, open for cheap reads (1 us, against 6 us to open it).

    The open file names the thread it was opened by, so a forked child opens
    its own; a thread's file is closed when the thread's locals go.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd: int | None = None
        with contextlib.suppress(OSError):
            self.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)

    def run_delay_ns(self) -> int:
        if self.fd is None:
            return 0
        try:
            return int(os.pread(self.fd, 96, 0).split()[1])
        except (OSError, ValueError, IndexError):
            self.close()
            return 0

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


def run_queue_ns() -> int:
    """Nanoseconds this thread has waited, runnable, for a CPU (Linux schedstat ``run_delay``); 0 elsewhere.

    A worker's items take longer when the machine has more runnable threads
    than cores (the caller, other workers, other programs): waiting for a CPU
    is part of a chunk's wall time but not of what its items cost alone.
    """
    return _schedstat().run_delay_ns()


def voluntary_waits() -> int | None:
    """How often this thread has given up its CPU to wait (voluntary context switches); None where unknown.

    A thread that never did cannot have waited, whatever its wall clock says:
    a virtual machine whose CPU the host lent elsewhere (steal time) stops the
    clocks of the thread's CPU time and run-queue wait alike, and 1.7 ms of a
    2 ms probe read as waiting work.
    """
    who = getattr(resource, "RUSAGE_THREAD", None)
    return None if who is None else resource.getrusage(who).ru_nvcsw


def run_queue_readable() -> bool:
    """Whether this thread's waits for a CPU can be read here: then a process's chunk times its items without
    them (``run_queue_ns``), and needs no CPU share to take them off."""
    return _schedstat().fd is not None


def _schedstat() -> _Schedstat:
    """This thread's schedstat file, opened on first use in this thread of this process."""
    stat: _Schedstat | None = getattr(_local, "schedstat", None)
    if stat is None or stat.pid != os.getpid():
        if stat is not None:
            stat.close()  # the parent's thread's file, inherited by this forked child
        stat = _local.schedstat = _Schedstat()
    return stat


def _worker_name() -> str:
    return f"{os.getpid()}:{threading.get_ident()}"


# -- a serial imap: items run as their results are asked for -------------------------------------------------

SAMPLED_BLOCK_NS = 64_000
"""A serial imap times the first item of each block alone (two clock reads and its bookkeeping, ~0.3 us), and
runs the rest through ``map`` untimed, each counted at the timed one's cost: blocks of about this much work
(at most SAMPLED_MAX items), so trivial items pay for their timing once a block instead of 15 times their own
cost each."""
SAMPLED_MAX = 256
RESAMPLE_EVERY = 8
RESAMPLE_FACTOR = 16
RESAMPLE_FLOOR_NS = 1_000_000
"""An untimed block reads the clock every RESAMPLE_EVERY items and ends once it took RESAMPLE_FACTOR times what
its items and their consumer were sampled at (at least RESAMPLE_FLOOR_NS): at most that many items turned dear
run in it unseen, and a consumer slower than sampled only makes the next item timed sooner."""
SAMPLED_MIN = 8
"""Setting up an untimed block (a generator and the iterators of its ``map``) costs about as much as timing
a few items: items dearer than SAMPLED_BLOCK_NS / SAMPLED_MIN (8 us) are each timed instead."""

CPU_SAMPLE_NS = 100_000
"""A streamed item reads the thread's CPU clock around itself only after an item at least this dear took its
turn (a read costs up to ~0.7 us); cheaper items count their wall time as CPU (run in the caller, a cheap
item is almost always computing)."""


@dataclass
class StreamedOutcome(ChunkOutcome):
    """A streamed chunk's outcome: its results went to the caller one by one, so only their count is kept."""

    count: int = 0

    @property
    def n_done(self) -> int:
        return self.count


_first = itemgetter(0)
_read_ns: int | None = None


def _clock_read_ns() -> int:
    """What one read of the clock adds to an item timed alone (its two reads, back to back), measured once
    per process as the lowest of a thousand pairs: the instrument's cost, not the item's (~40 ns here, twice
    the cost of ``abs``)."""
    global _read_ns
    if _read_ns is None:
        clock = time.perf_counter_ns
        _read_ns = max(0, min(-clock() + clock() for _ in range(1000)))
    return _read_ns


@functools.cache
def _run_in_floor_ns() -> int:
    """What running an item in the call's context (``Context.run``, one per item of a serial ``imap``) adds to
    its timed cost: a loop calls ``fn`` directly. Measured once per process against ``map`` calling a trivial
    function directly, the lowest of a few tries (~30 ns here, more than ``abs`` costs)."""
    run, clock, n = contextvars.copy_context().run, time.perf_counter_ns, 512

    def took(calls: Iterator[object]) -> int:
        t0 = clock()
        for _ in calls:
            pass
        return clock() - t0

    in_context = min(took(map(run, repeat(id), range(n))) for _ in range(5))
    direct = min(took(map(id, range(n))) for _ in range(5))
    return max(0, (in_context - direct) // n)


@functools.cache
def _handing_floor_ns() -> int:
    """What the reading of a consumer's time with one result holds that is payoff's: the generators that hand
    the result out (the chunk's, the executor's results') and the clock, measured once per process with a
    consumer that does nothing, the lowest of a few tries (~50 ns here, two to five times a trivial loop's
    own time with a result)."""
    return min(_handing_reading() for _ in range(5))


def _handing_reading(n: int = 512) -> int:
    clock, read_ns, total = time.perf_counter_ns, _clock_read_ns(), [0]

    def chunk() -> Iterator[int]:  # as StreamedChunk reads it around a timed item's result
        spent = 0
        for i in range(n):
            h0 = clock()
            yield i
            spent += max(0, clock() - h0 - read_ns)
        total[0] = spent

    def results(block: Iterator[int]) -> Iterator[int]:  # as the executor's results hand a block's out
        yield from block

    for _ in results(chunk()):
        pass
    return total[0] // n


class StreamedChunk:
    """Items run in the caller one at a time, each result handed out before the next item is read.

    A serial ``imap`` is the builtin ``map`` with a record: iterating this runs
    ``fn`` on the next item only when the consumer asks for the next result, so
    an input whose items are valid only until the next read (``itertools.groupby``,
    a reused buffer), or that waits for a result before it yields the next item,
    works as it does with ``map``. The consumer's time between results is not
    the chunk's work, so an item is timed alone: the first of each block, the
    rest of which (items cheap enough: SAMPLED_BLOCK_NS) run untimed and count
    at its cost. The times are summed into timing blocks of about
    BLOCK_TARGET_NS. Iteration ends after ``max_items`` items or ``max_ns`` of
    work, at the end of the input (``ended``; what the input raised in
    ``input_error``), at an item's error (kept in ``error``, for the caller to
    raise once iteration ended), or once ``cancel`` is set or its deadline
    passed: no item starts after that.
    """

    def __init__(self, fn: Callable[[Any], Any], items: Iterator[Any], index: int, first: int,
                 cancel: CancelToken | None, max_ns: int, max_items: int,
                 context: contextvars.Context | None = None) -> None:
        """``context``: where each item runs (a copy of the caller's with the call's span current, so the
        item's own spans nest under it, as on a thread); None: a copy of the caller's own. Items run in a copy
        so that marking them as inside payoff (a map in ``fn`` is nested) costs one set a chunk, not two an item.
        Made in the consumer's thread: each item runs with its asyncio loop set aside (``payoff._loop_hidden``)."""
        self.fn = without_the_loop(fn) if loop_runs_here() else fn
        self.items, self.index, self.first = items, index, first
        self.cancel, self.max_ns, self.max_items, self.context = cancel, max_ns, max_items, context
        self.count = 0
        self._left_after = 0
        """Untimed items of the block the consumer left (closed or threw into the results) that it took."""
        self.error: BaseException | None = None
        self.input_error: Exception | None = None
        self.ended = False
        self.start_ns = time.monotonic_ns()
        self._waits0 = voluntary_waits()
        self.work_ns = self.cpu_ns = self.runq_ns = 0
        self.consumer_ns = 0
        """The consumer's time with the results handed out, read around the timed items' and counted for the
        untimed ones after each: a loop spends it too, unlike the generators that hand the results over."""
        self.durations: array[int] = array("q")
        self.sizes: array[int] = array("q")
        self._run: Generator[Any, None, None] | None = None
        self.sample: list[Any] = []
        """The last item timed (none yet: empty): what the planner sizes the rest of a stream by, with no item
        read ahead of the consumer for it (an input may wait for a result before it yields the next item)."""
        self.result_sample: list[Any] = []
        """The last timed item's result, which the planner sizes the rest's results by (hunt 75)."""

    def __iter__(self) -> Iterator[Any]:
        if self._run is None:
            self._run = self._items()
        return self._run

    def _items(self) -> Generator[Any, None, None]:
        fn, items, local = self.fn, self.items, _local
        context = contextvars.copy_context() if self.context is None else self.context
        context.run(_ITEM_DEPTH.set, getattr(local, "depth", 0) + 1)  # a map inside fn is nested; none outside
        run_in = context.run
        cancel = self.cancel
        cancelled = None if cancel is None else cancel._event.is_set
        deadline, now = (None, time.monotonic) if cancel is None else (cancel.deadline, cancel.clock)
        clock, cpu_clock, read_ns = time.perf_counter_ns, time.thread_time_ns, _clock_read_ns()
        handing, instrument = read_ns + _handing_floor_ns(), read_ns + _run_in_floor_ns()
        durations, sizes, max_items, max_ns = self.durations, self.sizes, self.max_items, self.max_ns
        self.count = self._left_after = work = cpu = block_ns = block_n = item_cpu = taken = consumer = 0
        last = CPU_SAMPLE_NS  # the first item reads the CPU clock
        self.start_ns, runq = time.monotonic_ns(), run_queue_ns()
        try:
            while self.count < max_items and work < max_ns:
                if cancelled is not None and (cancelled() or (deadline is not None and now() >= deadline)):
                    return
                try:
                    item = next(items)
                except StopIteration:
                    self.ended = True
                    return
                except Exception as exc:  # the input's own error: raised once the results before it are out
                    self.ended, self.input_error = True, exc
                    return
                self.sample[:] = (item,)
                c0 = cpu_clock() if last >= CPU_SAMPLE_NS else 0
                t0 = clock()
                try:
                    result = run_in(fn, item)
                except BaseException as exc:  # whatever it is, the caller raises it once this run has ended
                    self._fail(exc, self.count)
                    return
                last = max(1, clock() - t0 - instrument)
                item_cpu = cpu_clock() - c0 if c0 else last
                self.result_sample[:] = (result,)
                self.count += 1
                work, cpu, block_ns, block_n = work + last, cpu + item_cpu, block_ns + last, block_n + 1
                h0 = clock()
                yield result
                taken = max(0, clock() - h0 - handing)  # the consumer's, sampled as the items are
                untimed = min(SAMPLED_MAX - 1, SAMPLED_BLOCK_NS // last, max_items - self.count)
                n = 0
                if untimed >= SAMPLED_MIN:  # the clock read for its end only where such a block runs
                    until = clock() + max(RESAMPLE_FLOOR_NS, RESAMPLE_FACTOR * untimed * (last + taken))
                    n = yield from self._untimed(run_in, untimed, deadline, now, until)
                work, cpu, block_ns, block_n = work + last * n, cpu + item_cpu * n, block_ns + last * n, block_n + n
                consumer += taken * (1 + n)
                if block_ns >= BLOCK_TARGET_NS:
                    durations.append(block_ns)
                    sizes.append(block_n)
                    block_ns = block_n = 0
                if self.ended or self.error is not None:
                    return
        finally:
            left = self._left_after  # untimed items the consumer took before it left: the timed one's cost each
            work, cpu, block_ns, block_n = work + last * left, cpu + item_cpu * left, block_ns + last * left, \
                block_n + left
            if block_n:
                durations.append(block_ns)
                sizes.append(block_n)
            self.work_ns, self.cpu_ns, self.consumer_ns = work, cpu, consumer + taken * left
            span = time.monotonic_ns() - self.start_ns  # its waits for a CPU, the items' share of them
            self.runq_ns = int((run_queue_ns() - runq) * min(1.0, work / span)) if span > 0 else 0

    def _untimed(self, run_in: Callable[..., Any], n: int, deadline: float | None,
                 now: Callable[[], float], until_ns: int) -> Generator[Any, None, int]:
        """Up to ``n`` items after a timed one, run by ``map`` with no clock read: how many ran.

        The clock is read every ``RESAMPLE_EVERY`` items all the same, and past ``until_ns`` the block ends early
        so that the next item is timed: items that turned dear inside a block counted at the cheap one's cost,
        and 120 items of ~10 ms after 200,000 cheap ones ran unseen in one block, their call kept serial.

        Each is still read only when its result is asked for. Items that ran before an error count; what
        raised is told apart by where: at the ``yield``, the consumer's (it closed the results or threw into
        them); else by how many items were read: one more than ran, ``fn`` (StopIteration from ``fn`` looks
        like the input's end to ``map``), as many, the input.
        """
        source: Iterator[Any] = self.items if deadline is None else until_deadline(self.items, now, deadline)
        reads = count()
        counted = map(_first, zip(islice(source, n), reads, strict=False))
        done, handing = 0, False
        try:
            clock, check_at = time.perf_counter_ns, RESAMPLE_EVERY
            for result in map(run_in, repeat(self.fn), counted):
                done += 1
                handing = True
                yield result
                handing = False
                if done == check_at:
                    if clock() >= until_ns:
                        self.count += done
                        return done  # not the input's end: the next item is timed
                    check_at += RESAMPLE_EVERY
        except BaseException as exc:
            self.count += done
            if handing:
                self._left_after = done
                raise
            if next(reads) > done:
                self._fail(exc, self.count)
            elif isinstance(exc, Exception):
                self.ended, self.input_error = True, exc
            else:
                raise
            return done
        self.count += done
        if done < n:
            if next(reads) > done:
                self._fail(_StoppedEarly(), self.count)
            elif deadline is None or now() < deadline:
                self.ended = True
        return done

    def _fail(self, exc: BaseException, done: int) -> None:
        error = item_error(exc)
        if not isinstance(error, KeyboardInterrupt):  # Ctrl-C goes on as it came
            _add_note(error, _raised_by(error, self.first + done, self.index, _worker_name()))
        self.error = error

    def outcome(self) -> StreamedOutcome:
        """What ran, for the record; a run its consumer left midway is closed first.

        Its busy span is its items' time: it starts at the first item and lasts as long as they took.
        """
        if self._run is not None:
            with contextlib.suppress(ValueError):  # running: only possible from inside fn itself
                self._run.close()
        waits = voluntary_waits()  # the consumer's waits between items too: it only ever reads as more waiting
        out = StreamedOutcome(self.index, self.first, [], self.start_ns, self.start_ns + self.work_ns, self.cpu_ns,
                              self.durations, self.sizes, _worker_name(), runq_ns=self.runq_ns, count=self.count,
                              blocked=None if waits is None or self._waits0 is None else waits - self._waits0)
        if self.error is not None:
            out.error, out.error_index = self.error, self.first + self.count
        return out


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
_FN_CACHE_BYTES = 256 << 20
"""Versions of large functions a worker keeps: at most 4, and older ones only while all weigh this much or
less (a 256 MiB array made anew each call grew every worker by 768 MiB of versions no call would use again:
memory trial 44, F3). The newest is kept whatever it weighs."""
_fn_cache: dict[str, tuple[Callable[[Any], Any], int]] = {}


def _resolve(fn: Any) -> tuple[Callable[[Any], Any], int]:
    """The callable itself, and how many bytes this worker had to load for it."""
    if not isinstance(fn, ShippedFn):
        return fn, 0
    cached = _fn_cache.pop(fn.digest, None)
    if cached is not None:
        _fn_cache[fn.digest] = cached  # the most recently used last: two functions used in turn both stay
        return cached[0], 0
    from payoff import _out_of_band  # only a worker given a large function pays for its import (and hashlib's)

    try:
        loaded, size = _out_of_band.load(fn.path)
    except (MemoryError, OSError) as exc:
        if isinstance(exc, MemoryError) or exc.errno == errno.ENOMEM:
            exc.add_note(f"payoff: this worker ran out of memory loading the function shipped to it "
                         f"({fn.size / 1e6:,.1f} MB pickled, arrays and all); state this large belongs in "
                         "worker_initializer (a global the workers set once, or inherit when forked), or on "
                         "threads, which share it")
        raise
    _fn_cache[fn.digest] = (loaded, size)
    while len(_fn_cache) > 1 and (len(_fn_cache) > _FN_CACHE_SIZE
                                  or sum(kept for _, kept in _fn_cache.values()) > _FN_CACHE_BYTES):
        _fn_cache.pop(next(iter(_fn_cache)))
    return loaded, size


UNPICKLING_CHUNK = ("payoff: a worker could not unpickle the chunk it was sent: the function or one of the "
                    "chunk's items failed to load there")


def _flushing(entry: Callable[[bytes, str], bytes]) -> Callable[[bytes, str], bytes]:
    """A process entry point that flushes what its items wrote when it ends.

    Its streams are buffered (a pipe, a file, a Jupyter kernel's descriptors:
    ``_print_to_the_kernels_fds``): what the items printed would otherwise wait for
    the worker's exit, or be lost with it. A loop's appears in the cell as it runs.
    """
    @functools.wraps(entry)
    def run(payload: bytes, pickler: str = "pickle") -> bytes:
        try:
            return entry(payload, pickler)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # closed, or replaced by something with no flush
                    if stream is not None:
                        stream.flush()
    return run


@_flushing
def run_pickled_chunk(payload: bytes, pickler: str = "pickle") -> bytes:
    """Process entry point: the parent pre-pickles so it can count the bytes exactly.

    The outcome goes back with the backend's own pickler: a function that only
    cloudpickle could send returns objects of classes only it can send back
    (a dataclass or exception defined in the user's script).
    """
    with ImportClock() as imports:
        try:
            shipped, items, first, index, budget_ns, mark_in, check_each, stop_in, *caller = pickle.loads(payload)
        except Exception as exc:  # the pool reports it; the parent names the chunk's items (``UNPICKLING_CHUNK``)
            _add_note(exc, UNPICKLING_CHUNK)
            raise
        filters, state = _callers(caller)
        _warning_filters.adopt(filters)  # the caller's, as a loop's items have
        stopped = None if stop_in is None else stop_marks.reader(*stop_in)
        if stopped is not None and stopped():
            items = items[:0]  # its call ended while it was queued: it hands every item back unrun
        fn, loaded = _resolve(shipped)
    return _caller_state.within(state, lambda: run_to_bytes(
        fn, items, first, index, loaded, budget_ns, pickler=pickler, mark_in=mark_in, check_each=check_each,
        warmup_ns=imports.ns, cancel=None if stopped is None else SharedStop(stopped), relay=True))


def _callers(caller: list[Any]) -> tuple[Any, Any]:
    """The caller's warning filters and state (``_caller_state``) a payload ends with; None for each missing."""
    filters, state = (*caller, None, None)[:2]
    return filters, state


@_flushing
def run_pickled_call(payload: bytes, pickler: str = "pickle") -> bytes:
    """Process entry point of a submitted call: its outcome travels as bytes, as a chunk's does.

    An exception the parent could not rebuild arrives as a ``RemoteError`` (the
    pool's own result thread would break the pool on it), and so does a result
    that cannot be pickled. ``mark_in``: the call is marked while it runs, so a
    crash names it (``payoff._rescue``).
    """
    shipped, args, kwargs, mark_in, *caller = pickle.loads(payload)
    filters, state = _callers(caller)
    _warning_filters.adopt(filters)
    fn, _ = _resolve(shipped)
    return _caller_state.within(state, lambda: _called(fn, args, kwargs, mark_in, pickler))


def _called(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], mark_in: Any,
            pickler: str) -> bytes:
    """The submitted call, run where the caller's state is in force (``_caller_state.within``)."""
    dumps = _dumps_for(pickler)
    mark = None if mark_in is None else _marker(mark_in)
    if mark is not None:
        mark[0] = 0
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return dumps((False, *_travelling(exc, dumps)))
    finally:
        if mark is not None:
            _unmark(mark)
    try:
        return dumps((True, result, ""))
    except Exception as exc:
        _add_note(exc, f"payoff: the result of the submitted call ({type(result).__qualname__}) cannot be "
                       f"pickled to return it")
        return dumps((False, *_travelling(exc, dumps)))


def call_outcome(raw: bytes) -> tuple[bool, Any]:
    """Parent side of :func:`run_pickled_call`: ``(True, result)``, or ``(False, error)`` with the worker's
    traceback as the error's cause, as ``concurrent.futures`` gives it."""
    ok, value, traceback_text = pickle.loads(raw)
    if not ok:
        _caused_by_worker(value, traceback_text)
    return ok, value


def _dumps_for(pickler: str) -> Callable[[Any], bytes]:
    if pickler == "cloudpickle":
        from payoff import _by_value  # only workers of a cloudpickle backend pay for its (and cloudpickle's) import

        return _by_value.dumps
    return lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def run_to_bytes(fn: Callable[[Any], Any], items: Sequence[Any], first: int, index: int, loaded: int = 0,
                 budget_ns: int | None = None, *, pickler: str = "pickle", mark_in: tuple[str, int] | None = None,
                 check_each: bool = False, warmup_ns: int = 0, cancel: CancelToken | None = None,
                 relay: bool = False) -> bytes:
    """Run a chunk and pickle its outcome, replacing what cannot be pickled with a clear error.

    The parent reads either pickler's output with ``pickle.loads``. When the
    results before a user's error cannot travel, the error still does: it is
    what the call raises, and those results would be dropped anyway.
    """
    dumps = _dumps_for(pickler)
    with _relayed_warnings.collecting() if relay else contextlib.nullcontext([]) as raised, \
            _relayed_logs.collecting() if relay else contextlib.nullcontext([]) as logged:
        outcome = run_chunk(fn, items, first, index, cancel, budget_ns=budget_ns, mark_in=mark_in,
                            check_each=check_each)
    outcome.fn_bytes_loaded, outcome.warmup_ns = loaded, warmup_ns
    outcome.warnings = _relayed_warnings.travelling(raised, dumps) if raised else ()
    outcome.logs = _relayed_logs.travelling(logged, dumps) if logged else ()
    if outcome.error is not None:
        _prepare_for_travel(outcome, dumps)
    try:
        return dumps(outcome)
    except Exception as exc:  # an unpicklable result
        return _without_the_unsendable(outcome, dumps, exc)


def _without_the_unsendable(outcome: ChunkOutcome, dumps: Callable[[Any], bytes], exc: Exception) -> bytes:
    """The chunk's results with each one pickle refuses left out and named (``ChunkOutcome.unsent``): the parent
    decides what that means (an error for a named backend; for auto, the item run again in the caller, where
    nothing is pickled). Results are pickled one by one only once the whole batch failed. Where they still
    cannot travel (one that pickles once only), the first refused item's error goes instead; an item's own
    error travels, then, without the results before it, as it did."""
    refused = _refused(outcome.results, dumps, exc)
    sent = _marked(outcome, refused, dumps)
    if sent is None and outcome.error is None:
        sent = _first_refused_as_error(outcome, refused[0], dumps) if refused else None
    return sent if sent is not None else _nothing_but_the_error(outcome, dumps, exc)


def _refused(results: list[Any], dumps: Callable[[Any], bytes], exc: Exception) -> list[Unsent]:
    """Each result pickle refuses alone; all of them where each pickles alone but not all together (a first
    pickling that fails): none of them can be trusted to travel."""
    refused = []
    for k, value in enumerate(results):
        try:
            dumps(value)
        except Exception as err:
            refused.append((k, type(value).__qualname__, _safe_repr(err)))
    return refused or [(k, type(value).__qualname__, _safe_repr(exc)) for k, value in enumerate(results)]


def _marked(outcome: ChunkOutcome, refused: list[Unsent], dumps: Callable[[Any], bytes]) -> bytes | None:
    """The outcome pickled with ``None`` where each refused result stood, or None where it still cannot be."""
    if not refused:
        return None
    for k, _, _ in refused:
        outcome.results[k] = None
    outcome.unsent = tuple(refused)
    try:
        return dumps(outcome)
    except Exception:
        outcome.unsent = ()
        return None


def fail_at(outcome: ChunkOutcome, k: int, error: BaseException) -> None:
    """The error stands at the chunk's item ``k``: the results before it go out, as for any item's error."""
    outcome.results, outcome.unsent = outcome.results[:k], ()
    outcome.error, outcome.error_index = error, outcome.first + k


def fail_at_refused(outcome: ChunkOutcome, refused: Unsent, not_here: str = "") -> None:
    """The refused result's item fails with an error naming it (``not_here``: why it is not run in the caller)."""
    k, kind, why = refused
    said = f"; it is not run again in the caller: {not_here}" if not_here else ""
    fail_at(outcome, k, RuntimeError(f"payoff: item {outcome.first + k} of the map (chunk {outcome.index}) "
                                     f"returned {article(kind)}, which cannot be pickled back to the parent: "
                                     f"{why}{said}"))


def _first_refused_as_error(outcome: ChunkOutcome, first: Unsent, dumps: Callable[[Any], bytes]) -> bytes | None:
    """The results before the first refused one, and its error, pickled; None where even those cannot be."""
    fail_at_refused(outcome, first)
    try:
        return dumps(outcome)
    except Exception:
        return None


def _nothing_but_the_error(outcome: ChunkOutcome, dumps: Callable[[Any], bytes], exc: Exception) -> bytes:
    """No result travels: the item's own error, or where none, one saying the batch cannot be pickled."""
    outcome.results, outcome.unsent = [], ()
    if outcome.error is None:
        outcome.error = RuntimeError(f"payoff: the results of chunk {outcome.index} cannot be pickled back to "
                                     f"the parent: {_safe_repr(exc)}")
        outcome.error_index = outcome.first
    return dumps(outcome)


def first_unpicklable(values: Sequence[Any], dumps: Callable[[Any], bytes]) -> tuple[int, Exception] | None:
    """The position of the first value ``dumps`` refuses, and its error; looked for only once a whole batch
    failed to pickle, to name the item at fault."""
    for k, value in enumerate(values):
        try:
            dumps(value)
        except Exception as err:
            return k, err
    return None


def _prepare_for_travel(outcome: ChunkOutcome, dumps: Callable[[Any], bytes]) -> None:
    """Keep the traceback as text, and swap an exception the parent could not rebuild for a RemoteError.

    Pickling an exception only stores its class and ``args``; a class whose
    ``__init__`` takes other arguments fails when the parent unpickles it, which
    would lose the whole chunk and the user's message with it. Nothing the
    exception does (a ``__str__`` that raises, odd notes) may replace it.
    """
    assert outcome.error is not None
    outcome.error, outcome.error_traceback = _travelling(outcome.error, dumps)


def _travelling(error: BaseException, dumps: Callable[[Any], bytes]) -> tuple[BaseException, str]:
    """``error`` as it can travel to the parent (a ``RemoteError`` where it could not be rebuilt there), and
    its traceback as text."""
    text = _format(error)
    try:
        pickle.loads(dumps(error))
    except Exception:
        carried = _error_copies.sendable(error, dumps)
        if carried is not None:
            return carried, text
        remote = RemoteError(f"{type(error).__module__}.{type(error).__qualname__}", _safe_str(error), text)
        for note in _notes(error):
            remote.add_note(note)
        return remote, text
    return error, text


def _format(error: BaseException) -> str:
    """The traceback from the function's frames: the worker's own (the chunk runner) say nothing of the item."""
    try:
        return "".join(traceback.format_exception(type(error), error, from_the_function(error.__traceback__)))
    except Exception:
        return f"{type(error).__qualname__}: {_safe_str(error)}\n"


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as exc:
        return f"<str() of the exception raised {type(exc).__qualname__}>"


def _notes(error: BaseException) -> list[str]:
    try:
        return [note for note in error.__notes__ if isinstance(note, str)]
    except Exception:  # no notes, or not a sequence of them
        return []


def received(data: bytes) -> ChunkOutcome:
    """Parent side: a chunk's pickled outcome. The function's own error travels inside it, so any error of
    loading it is the caller's unpickling (a result class whose ``__init__`` its pickle cannot call, a module
    missing here), raised as ``pickle.UnpicklingError`` with that error as its cause; running out of memory
    stays what it is."""
    try:
        outcome = pickle.loads(data)
    except MemoryError:
        raise
    except Exception as exc:
        raise pickle.UnpicklingError(f"{type(exc).__name__}: {exc}") from exc
    assert isinstance(outcome, ChunkOutcome)
    return outcome


def arrived(outcome: ChunkOutcome) -> ChunkOutcome:
    """Parent side: the worker's traceback becomes the error's cause, as ``concurrent.futures`` does."""
    if outcome.error is not None:
        _caused_by_worker(outcome.error, outcome.error_traceback)
    return outcome


def _caused_by_worker(error: BaseException, traceback_text: str) -> None:
    if isinstance(error, SystemExit) and error.code is None and error.args:  # as tblib rebuilds it (dask imported)
        error.code = cast("int | str | None", error.args[0] if len(error.args) == 1 else error.args)
    if traceback_text:
        with contextlib.suppress(Exception):  # a user's class that refuses the attribute still arrives
            error.__cause__ = RemoteTraceback(traceback_text)


def init_process(user_init: Callable[..., object] | None, args: tuple[Any, ...], parent: int | None = None,
                 report_dir: str | None = None, owner: int | None = None,
                 native_threads: tuple[int, bool] | None = None) -> None:
    """Runs once per worker process: marks it as a worker, limits native threads, watches the parent, then the
    user's initializer.

    ``parent`` is the pid of the process that made the pool: one that died
    while this worker was still starting left it adopted already. What the
    initializer raises is also written to ``report_dir``: the pool only tells
    the parent that a worker ended. ``native_threads`` is what
    :func:`payoff._native_threads.per_worker` decided for the pool. A forked
    worker first drops the parent's copy of loky's executor, while it is still
    the only thread here, so ``joblib.Parallel`` in its items starts its own (the modules other parent
    threads were importing at the fork were forgotten at the fork itself: ``_forks.forget_unfinished_imports``).
    """
    global _in_worker_process
    _in_worker_process = True
    if _forks.forked():
        _forks.forget_inherited_loky()
        _print_to_the_kernels_fds()
    _draw_afresh()
    deaf_to_the_groups_ctrl_c()
    _exit.stop_loky_before_joins()
    if native_threads is not None:
        limit_here(*native_threads)
    _watch_parent(os.getppid() if parent is None else parent, owner)
    if user_init is None:
        return
    state, logs = _caller_state.before_initializer(), _relayed_logs.before_initializer()
    try:
        user_init(*args)
    except BaseException as exc:
        if report_dir is not None:
            _report_init_failure(report_dir, exc)
        raise
    _caller_state.after_initializer(state)
    _relayed_logs.after_initializer(logs)


def _print_to_the_kernels_fds() -> None:
    """A worker forked from a Jupyter kernel writes to the file descriptors it shares with the kernel.

    Its ``sys.stdout`` and ``sys.stderr`` are its copies of the kernel's streams,
    which send over the kernel's sockets, not a forked process's to use: every
    ``print`` and warning of the items was lost, call after call (hunt 66;
    ``ProcessPoolExecutor`` under fork loses them too). The kernel reads its
    descriptors 1 and 2 and shows what comes there in the running cell, as it
    does for joblib's workers, which start afresh with plain streams on them;
    each chunk's end flushes them (``_flushing``).
    """
    for name in ("stdout", "stderr"):
        here, plain = getattr(sys, name), getattr(sys, f"__{name}__")
        if plain is not None and type(here).__module__.startswith("ipykernel."):
            setattr(sys, name, plain)


def deaf_to_the_groups_ctrl_c() -> None:
    """Ctrl-C is the caller's. A terminal's, and a Jupyter kernel's stop button, send SIGINT to the whole process
    group, workers included: each raised KeyboardInterrupt and died, so a map running in another thread of the
    caller lost its results, and every idle warm pool was lost (its initializer ran again), on every stop pressed
    (notebook trial). The caller's own map, interrupted, stops its workers itself. A handler that returns (on a
    second press, raises: ``AGAIN_SECONDS``), not ``SIG_IGN``: a handler is reset by ``exec``, so programs an item
    runs still get Ctrl-C as usual."""
    with contextlib.suppress(ValueError):  # not the main thread: no signal to take
        signal.signal(signal.SIGINT, _not_ours)
        signal.siginterrupt(signal.SIGINT, False)  # a C call in an item carries on (a read() failed with EINTR)


AGAIN_SECONDS = 5.0
"""A second Ctrl-C this soon after one is meant for the workers too: a program whose exit waits for them (a map
in a thread it waits for) stopped on the second press before, and hung for good when they took none."""
_interrupts: list[float] = []


def _not_ours(signum: int, frame: object) -> None:
    now = time.monotonic()
    _interrupts[:] = [t for t in _interrupts if now - t < AGAIN_SECONDS] + [now]
    if len(_interrupts) >= 2:
        raise KeyboardInterrupt


def _draw_afresh() -> None:
    """Each worker draws its own numbers from numpy's global generator, as in a fresh process (joblib's loky
    workers, a loop): a forked worker starts with the parent's copy, so every worker drew the same bootstrap
    resamples (data-science trial: 115 distinct means of 200). Python's ``random`` is reseeded at a fork by
    Python itself. A user initializer that seeds runs after this, and wins."""
    numpy_random = imported("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


INIT_REPORT_PREFIX = "init-"


def _report_init_failure(report_dir: str, exc: BaseException) -> None:
    """First line the exception's repr, then its traceback; written whole or not at all."""
    path = os.path.join(report_dir, f"{INIT_REPORT_PREFIX}{os.getpid()}")
    with contextlib.suppress(Exception):
        text = _safe_repr(exc) + "\n" + _format(exc)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


def _safe_repr(exc: BaseException) -> str:
    try:
        return repr(exc)
    except Exception:
        return f"{type(exc).__qualname__}({_safe_str(exc)!r})"


def read_init_failure(report_dir: str) -> tuple[int, str, str] | None:
    """The first worker's report in ``report_dir``: its pid, the exception's repr and the traceback text."""
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(report_dir)):
            if name.startswith(INIT_REPORT_PREFIX) and name[len(INIT_REPORT_PREFIX):].isdigit():
                with open(os.path.join(report_dir, name), encoding="utf-8") as fh:
                    first, _, rest = fh.read().partition("\n")
                return int(name[len(INIT_REPORT_PREFIX):]), first, rest
    return None


PARENT_CHECK_SECONDS = 0.5


def _watch_parent(parent: int, owner: int | None = None) -> None:
    """End this worker when its parent dies, even in the middle of a task.

    A parent killed with SIGKILL runs no clean-up, and a worker busy in a long
    task would otherwise compute for nobody. ``PR_SET_PDEATHSIG`` is tied to
    the thread that forked the worker, which may be a short-lived user thread,
    so a daemon thread polls the parent id instead. A forkserver's worker is
    the forkserver's child, and each of them keeps the forkserver alive, so it
    also watches ``owner``, the process that made the pool.
    """
    owner_gone = _owner_watch(owner)
    if os.getppid() != parent or owner_gone():
        os._exit(70)

    def watch() -> None:
        while os.getppid() == parent and not owner_gone():
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(70)

    # "can't start new thread" (ulimit -u counts threads): a worker unwatched, not a dead one whose pool broke
    # mid-call and blamed an item for the crash (hostile trial 44)
    with contextlib.suppress(RuntimeError):
        threading.Thread(target=watch, name="payoff-parent-watch", daemon=True).start()


def _owner_watch(owner: int | None) -> Callable[[], bool]:
    """A check that ``owner`` has ended: its pidfd turns readable at its exit (a zombie counts as ended, and a
    reused pid cannot fool it); without pidfds, whether the pid still exists."""
    if owner is None:
        return lambda: False
    try:
        fd = os.pidfd_open(owner)
    except ProcessLookupError:
        return lambda: True
    except (AttributeError, OSError):
        return lambda: not _pid_exists(owner)
    return lambda: bool(select.select([fd], [], [], 0)[0])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping() -> int:
    """Round trip used to prove a pool is alive and its initializer succeeded."""
    return os.getpid()
