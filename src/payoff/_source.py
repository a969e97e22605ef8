"""A call's items: a sequence used as given, or an iterator read only as far as the work has got.

``map`` returns a list, so it may hold its input; ``imap`` over a generator
must not, or a stream of millions of items (or an endless one under
``islice``) costs memory a loop would never use. The planner sees a stream
through :class:`_Ahead`, which reads an item only when the planner's probe is
about to run it; a serial ``imap`` then reads one item per result
(:meth:`Source.stream`), a parallel one chunk by chunk as workers free up.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast, overload

from payoff._imported import imported
from payoff.worker import ArrayRows, ListTail, Zipped, until_deadline

MAX_REST_READ = 1 << 16
"""The most items a run in the caller reads of a stream at a time (``Source.rest``); ``STREAM_FILL_SECONDS``
bounds it first for an input that yields slowly."""
PLANNED_STREAM_ITEMS = 1024
"""How many items the planner takes a stream it has not seen the end of to have (none are read for that)."""
STREAM_FILL_SECONDS = 0.1
"""A chunk read from a stream holds what its input gave in about this long (one item at least): an input that
yields slowly (a socket, a queue, a sensor) filled a chunk sized for its items' cost, and a trivial function
over an item every 50 ms read 517 items, 26 s, before its first result (trial 49). Read in doubling batches
between clock reads, so a fast input pays a read per batch, and a slow one stops within twice this long."""
MAP_READ_FIRST_SECONDS = 0.05
"""A ``map`` reads its input whole before its items run, unless reading it takes longer than this at a pace
slower than ``SLOW_INPUT_ITEM_SECONDS`` an item: it then reads the rest as it goes, as ``imap`` does, so the
workers run the items read while the next are read (see :meth:`Source._read_head`)."""
SLOW_INPUT_ITEM_SECONDS = 10e-6
"""An input slower than this an item is read as it goes by a ``map`` too: a generator yielding a row a
millisecond (a database cursor, a socket) was read whole first, 0.2 s for 200 rows before any ran, and the map
took 0.96x the loop's time where ``ThreadPoolExecutor.map``, which submits each item as it reads it, took 0.59x.
At this pace a stream's own cost (0.1-0.2 us an item, its chunks read in doubling batches) is 1-2% of the
reading; a fast generator (30 ns an item) is read whole, its length known to the planner."""
PROBE_READ_SECONDS = 0.01
"""The planner's probe reads no further item of a stream once reading it took this long: its items' own time
is what it budgets, and a slow input's waits are no part of that."""
SLICED_AS_GIVEN = (list, tuple, range, Zipped)
"""Inputs whose slices are cheap, list-like and picklable. Another Sequence may refuse slices (a deque, a
reader taking integer indices only) or slice into something a worker process cannot receive (a
memoryview), so it is read like any iterable. So is a subclass of these: its own ``__iter__``,
``__getitem__`` or ``__len__`` (a list iterated newest first, one formatting what it indexes) is what
``map`` over it reads, and slicing it would go around them."""


def _read_head_for(items: Iterator[Any], got: list[Any], start: float, deadline: float | None) -> tuple[bool, bool]:
    """A ``map``'s input into ``got``, in doubling batches between clock reads: whether it ended, and whether
    it was read before ``deadline``. It stops early, not ended, once ``MAP_READ_FIRST_SECONDS`` passed at a
    pace slower than ``SLOW_INPUT_ITEM_SECONDS`` an item. Under a deadline each item is followed by a clock
    read, as a slow input's may not come back for long."""
    batch, judged = 1, False
    while True:
        if deadline is None:
            before = len(got)
            got.extend(itertools.islice(items, batch))
            if len(got) - before < batch:
                return True, True
        else:
            for _ in range(batch):
                item = next(items, _END)
                if item is _END:
                    return True, True
                got.append(item)
                if time.monotonic() >= deadline:
                    return False, False
        if not judged and (spent := time.monotonic() - start) >= MAP_READ_FIRST_SECONDS:
            if spent >= SLOW_INPUT_ITEM_SECONDS * len(got):
                return False, True
            judged = True  # a fast input, only a long one: read to its end
        batch = min(2 * batch, 1 << 16)


_END = object()


def as_given(items: object) -> Sequence[Any] | None:
    """The input as the sequence payoff slices into chunks, or None when it is read as a stream: a list,
    tuple or range as it is, a numpy array (not a subclass: its own iteration is what ``map`` reads) as its
    :class:`~payoff.worker.ArrayRows`."""
    if type(items) in SLICED_AS_GIVEN:
        return cast(Sequence[Any], items) if _has_len(cast(Sequence[Any], items)) else None
    np = imported("numpy")  # not imported yet: the input is no array
    if np is not None and type(items) is np.ndarray and cast(Any, items).ndim >= 1:
        return ArrayRows(items)
    return None


TOLD_LENGTH: tuple[type, ...] = (dict, set, frozenset, deque, type({}.keys()), type({}.values()), type({}.items()))
"""Inputs read as streams whose ``len()`` is their count and cheap: an ``imap`` over a dict, a set or a deque
had a bar with no total, no percentage nor time left (hunt 71). Not any ``Sized``, nor any mapping's views: a
database query set's ``len()`` fetches every row, which an ``imap`` reads one at a time."""


def told_length(items: object) -> int | None:
    """The number of items a stream's own kind tells: those of :data:`TOLD_LENGTH` and pandas' containers but
    a DataFrame (its ``len()`` counts rows, its iteration gives the column names)."""
    kind = type(items)
    pandas = kind.__module__.partition(".")[0] == "pandas" and kind.__name__ != "DataFrame"
    if not pandas and not isinstance(items, TOLD_LENGTH):
        return None
    try:
        return len(items)  # type: ignore[arg-type]
    except Exception:  # a pandas object without one (a GroupBy's len is its groups': kept)
        return None


def _has_len(items: Sequence[Any]) -> bool:
    """A ``range`` longer than ``sys.maxsize`` has no ``len()``: it is read as a stream, as the builtin does."""
    try:
        len(items)
    except OverflowError:
        return False
    return True


class Source:
    """Hands out consecutive slices of the input, reading an iterator lazily."""

    def __init__(self, items: Iterable[Any], lazy: bool, deadline: float | None = None) -> None:
        """``deadline`` (``time.monotonic()``), a call's timeout: no item is read after it."""
        self._next = 0
        self._deadline = deadline
        self.read_seconds = 0.0
        """How long reading a stream took so far (its waits for the input included)."""
        self.cut = False
        """Whether the last :meth:`take` of a stream ended at ``STREAM_FILL_SECONDS``, before its size."""
        self.late: TimeoutError | None = None
        """A ``map``'s input still being read at its deadline: the call raises this before any item runs."""
        self._dropped = False
        self.told_length: int | None = None
        """A stream's ``len()`` where its kind tells it cheaply (see :func:`told_length`): a bar's total."""
        self._iter: Iterator[Any] | None = None
        self._error: Exception | None = None
        """What the input raised while it was read: raised once the items before it have run and their
        results are out, as the builtin ``map`` does: an item's error before it is the one raised."""
        given = as_given(items)
        if given is not None:
            self.head: Sequence[Any] = given
            self.exhausted = True
        elif not lazy:
            self._iter = iter(items)
            self.head = self._read_head(deadline)
            self.exhausted = self._iter is None
        else:
            self.told_length = told_length(items)
            self._iter = iter(items)
            self.head = []
            self.exhausted = False

    def _read_head(self, deadline: float | None) -> list[Any]:
        """A ``map``'s input, read whole before its items run; an error the input raises waits, as a stream's
        does (``_read``): raised at once, it went before an earlier item's own error and none of the items
        before it ran (fuzz trial). An input slow to yield (``SLOW_INPUT_ITEM_SECONDS``) is read only in part:
        ``_iter`` is left set, and the rest is read as a stream's is, while the items read run. Else ``_iter``
        is None: the input was read to its end (or to the call's deadline, which ``late`` then says)."""
        items = self._iter
        got: list[Any] = []
        assert items is not None
        start = time.monotonic()
        on_time = ended = True
        try:
            ended, on_time = _read_head_for(items, got, start, deadline)
        except Exception as exc:
            self._error = exc
        finally:
            self.read_seconds += time.monotonic() - start
        if not on_time:  # raised by the call, which records it: raised here, before it began, it went unrecorded
            self.late = TimeoutError("payoff: the call did not finish within its timeout: its input was still "
                                     f"being read after {len(got):,} items (an iterator that yields slowly counts)")
        if ended or not on_time or self._error is not None:
            self._iter = None
        return got

    def for_planning(self) -> Sequence[Any]:
        """What the planner sees: the items themselves, or a stream as far as the planner's probe reads it
        (nothing, when not even its first item came before the deadline: the call then times out)."""
        return self.head if self.exhausted or self._iter is None or not self.head else _Ahead(self)

    def first(self) -> Any:
        """The first item, read from a stream if needed; raises IndexError when there is none."""
        if not self.head and self._iter is not None and not self.exhausted:
            assert isinstance(self.head, list)
            self.head.extend(self._read(1))
        return self.head[0]  # IndexError when there is none; an input error waits for raise_error()

    @property
    def known_length(self) -> int | None:
        """The number of items, once the whole input is known to fit the look-ahead (or was a sequence)."""
        return len(self.head) if self.exhausted and not self._dropped else None

    def skip(self, n: int) -> None:
        """Items the planner's probe already ran."""
        self._next = n

    def take(self, size: int) -> tuple[int, Sequence[Any]] | None:
        """The next ``size`` items and the position of the first, or None at the end."""
        lo = self._next
        if lo < len(self.head):
            hi = min(len(self.head), lo + size)
            part: Sequence[Any] = self.head[lo:hi] if lo or hi < len(self.head) else self.head
            if hi == len(self.head) and not self.exhausted:
                part = list(part) + self._read(size - (hi - lo))
                self._drop_head()
        elif self._iter is not None and not self.exhausted:
            if self.head:
                self._drop_head()  # all of it was run (by the probe): the stream goes on past it
            part = self._read(size)
        else:
            part = []
        if not part:
            return None
        self._next = lo + len(part)
        return lo, part

    def rest(self) -> tuple[int, Sequence[Any]] | None:
        """Every item not yet taken of a known input, for a run in the caller: a list's without a copy. Of a
        stream, what is left of what was read, or as much as it yields in ``STREAM_FILL_SECONDS``."""
        lo, n = self._next, len(self.head)
        if lo >= n or not self.exhausted or self._dropped:
            return self.take(max(1, n - lo) if lo < n or self.exhausted else MAX_REST_READ)
        self._next = n
        if lo == 0:
            return 0, self.head
        return lo, ListTail(self.head, lo) if isinstance(self.head, list) else self.head[lo:]

    def _read(self, n: int) -> list[Any]:
        """Up to ``n`` items; an input that raises ends there, and its error waits for the work to get there."""
        assert self._iter is not None
        got: list[Any] = []
        start = time.monotonic()
        self.cut = False
        try:
            if self._deadline is None:
                self.cut = _read_for(self._iter, n, got, start)
            else:  # a slow input stops at the deadline; the call then raises TimeoutError at its next check
                self.cut = _read_for(until_deadline(self._iter, time.monotonic, self._deadline), n, got, start)
                if len(got) < n and time.monotonic() >= self._deadline:
                    return got
        except Exception as exc:
            self._error = exc
        finally:
            self.read_seconds += time.monotonic() - start
        if len(got) < n and not self.cut:
            self.exhausted = True
        return got

    def stream(self) -> Iterator[Any]:
        """The items not taken yet, each read from the input only when asked for (a serial ``imap``'s).

        Whoever takes them says how many with :meth:`advance`: no item is read
        here beyond the one asked for, and nothing is held.
        """
        rest = itertools.islice(self.head, self._next, None)
        if self._iter is None or self.exhausted:
            return rest
        self._drop_head()  # the islice holds what is left of the look-ahead until it is handed out
        return itertools.chain(rest, self._iter)

    def hand_back(self, items: Iterator[Any]) -> None:
        """A serial ``imap`` that stopped partway hands back its :meth:`stream`: the items it did not read are
        taken from there (what is left of the look-ahead included, which that stream holds)."""
        if self._iter is not None and not self.exhausted:
            self._iter = items

    def rest_for_planning(self, sample: list[Any]) -> Sequence[Any]:
        """The items not taken yet as the planner sees them once a serial ``imap`` stopped partway: a known
        input's rest; a stream's as many items as it gave so far, each like ``sample`` (an item that ran: none is
        read ahead of the consumer, whose input may wait for a result before it yields the next item). Not
        PLANNED_STREAM_ITEMS: a stream of 200,000 items was planned as 1,024 more and kept serial, one of 405 sent
        11 items to a pool it started (review); one that has given n items is as likely as not to give n more."""
        if self._iter is None or self.exhausted:
            return self.head[self._next:] if self._next < len(self.head) else []
        return _Repeated(sample[0], self._next) if sample and self._next else []

    def advance(self, n: int, ended: bool = False, error: Exception | None = None) -> None:
        """``n`` items of :meth:`stream` were taken; ``ended``: it ran out, or raised ``error``."""
        self._next += n
        if ended:
            self.exhausted = True
        if error is not None:
            self._error = error

    @property
    def failed(self) -> bool:
        """Whether the input raised while it was read (``raise_error`` raises it)."""
        return self._error is not None

    def raise_error(self) -> None:
        """At the end of the work: what the input raised while it was read, if anything."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _drop_head(self) -> None:
        """The look-ahead is handed out: positions continue, the memory goes."""
        self.head = []
        self._dropped = True

    @property
    def taken(self) -> int:
        return self._next


def _read_for(items: Iterator[Any], n: int, got: list[Any], start: float) -> bool:
    """Up to ``n`` items into ``got``, in doubling batches until ``STREAM_FILL_SECONDS`` after ``start``: True when
    that time ended the read before ``n`` items (the input may have more)."""
    batch = 1
    while len(got) < n:
        asked = min(batch, n - len(got))
        before = len(got)
        got.extend(itertools.islice(items, asked))
        if len(got) - before < asked:
            return False
        if len(got) < n and time.monotonic() - start >= STREAM_FILL_SECONDS:
            return True
        batch *= 2
    return False


class _Repeated(Sequence[Any]):
    """``n`` items, each ``item``: a stream's rest as the planner sizes it (``Source.rest_for_planning``)."""

    def __init__(self, item: Any, n: int) -> None:
        self._item, self._n = item, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._item] * len(range(*i.indices(self._n)))
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._item


class _Ahead(Sequence[Any]):
    """A stream as the planner sees it: as long as PLANNED_STREAM_ITEMS until its end is known.

    The planner's probe runs the first items in steps, each step a slice that
    starts where the items run so far end; such a slice reads one item more,
    so each item is read just before it runs, as in a loop, and an input whose
    items are valid only until the next read (``itertools.groupby``, a reused
    buffer) is measured right. The probe reads as many items as it runs
    (bounded by its budget: a few ms, and at most PROBE_CHEAP_MAX_ITEMS or a
    share of this length). Any other slice (a sample of the items, to time
    their pickling) and an integer index read nothing: an item not read yet is
    stood for by the last one read (the planner only samples sizes). Only the thread
    that made the call reads the input (a probe run on a payoff thread, under a
    timeout, runs only on what that thread read), since a reader may belong to
    its thread (a database cursor): a probe on a payoff thread has it read
    for the probe, one item at a time, while it waits (:class:`ReadsForAProbe`).
    """

    def __init__(self, source: Source) -> None:
        self._source = source
        self._reader = threading.get_ident()
        self._reads: ReadsForAProbe | None = None

    def __len__(self) -> int:
        source = self._source
        if source.exhausted:
            return len(source.head)
        return max(PLANNED_STREAM_ITEMS, len(source.head) + 1)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        head = self._source.head
        assert isinstance(head, list)
        if isinstance(i, slice):
            start, stop, _ = i.indices(len(self))
            if start == len(head) < stop:  # the probe's next step: the item it is about to run
                self._read_one()
            return self._source.head[i]
        if not head:
            raise IndexError("the stream is empty")
        if i < 0:
            i += len(self)
        return head[max(0, min(i, len(head) - 1))]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._source.head))

    def _read_one(self) -> None:
        source = self._source
        if source.exhausted or (source.head and source.read_seconds >= PROBE_READ_SECONDS):
            return  # the probe's step then runs nothing and it ends
        if threading.get_ident() == self._reader:
            assert isinstance(source.head, list)
            source.head.extend(source._read(1))
        elif self._reads is not None:
            self._reads.ask()


def is_stream(items: Sequence[Any]) -> bool:
    """Whether the planner sees a stream read as it goes (:class:`_Ahead`), not items held already."""
    return type(items) is _Ahead


READS_FOR_A_PROBE = 16
"""The most items the caller reads for a probe on a payoff thread: each costs a round trip between the two
threads (~50 us here), which the probe's budget does not count, as it counts only the items' own time."""


def reads_for_a_probe(items: Sequence[Any]) -> ReadsForAProbe | None:
    """For a stream the probe will run on another thread (under a timeout): the caller's reads for it; else
    None (a sequence, or a stream read to its end, needs no reading)."""
    if not isinstance(items, _Ahead) or items._source.exhausted:
        return None
    items._reads = ReadsForAProbe(items)
    return items._reads


class ReadsForAProbe:
    """The caller reads a stream's items, one at a time, for its probe on a payoff thread.

    Under a timeout the probe runs on a payoff thread, so that an item that hangs cannot hold the call past
    it; the input is still read only by the caller's thread, as each item is about to run. Without this the
    probe ran the one item read before it, and a call on a stream of 100 trivial items was planned as 1,024
    items at that one cold item's cost (7-12 us, against 0.4 us once warm): processes, at 10x the loop.
    """

    def __init__(self, items: _Ahead) -> None:
        self._items = items
        self._changed = threading.Condition(threading.Lock())
        self._wanted = self._closed = False
        self._left = READS_FOR_A_PROBE

    def ask(self) -> None:
        """On the probe's thread: wait until the caller has read one more item, or stopped reading."""
        with self._changed:
            if self._closed or not self._left:
                return
            self._left -= 1
            self._wanted = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: not self._wanted or self._closed)

    def serve(self, seconds: float) -> None:
        """On the caller's thread: read what the probe asks for, until :meth:`close` or ``seconds`` pass."""
        end = time.monotonic() + seconds
        try:
            while True:
                with self._changed:
                    left = end - time.monotonic()
                    if not self._changed.wait_for(lambda: self._wanted or self._closed, max(0.0, left)) \
                            or self._closed:
                        return
                self._items._read_one()
                with self._changed:
                    self._wanted = False
                    self._changed.notify_all()
        finally:
            self.close()

    def close(self) -> None:
        """No more reads: the probe ended, or the caller stopped waiting for it (its step then gets no item)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._items._reads = None
