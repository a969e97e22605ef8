"""What earlier calls measured about each function, kept for the planner's next call of it.

A function's item cost, CPU share, payload sizes, the verdicts its parallel
runs earned and the crashes it caused live in its ``Facts``; ``Knowledge``
keys them by the function's code (a closure or partial made afresh per call is
the same workload) and updates them under one lock.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from payoff import _forks
from payoff._by_value import CACHED
from payoff._gil_share import GIL_UNREAD
from payoff._side_by_side import SideBySide, comparable
from payoff.record import ESTIMATE_OVERTURNED, DearItems
from payoff.worker import Star

if TYPE_CHECKING:
    from payoff._probe import Probe

THREADS_KEEP_SPEEDUP = 1.05
"""Threads chosen for payloads too large for processes stay chosen while a run measures this much gain."""
CORES = "cores"
"""What ``hold`` counts for a function kept off threads by the CPUs its items keep busy (``Facts.cores``)."""
VERDICT_RETRY = 8
"""After this many calls held serial by a verdict, one runs in parallel again to re-measure it; the wait
doubles each time the loss is confirmed (at most 128x), so a function that never gains pays for few probes."""
VERDICT_REACH = 4
"""A call up to this many times the size of one that measured no gain is planned serial without trying."""
GIL_HEADROOM = 1.5
"""Threads for waiting items, over those an earlier run kept busy (``Facts.gil_threads``): enough to keep the
GIL's queue from running dry, and to grow the count back by half a call while it does not form."""
VERDICTS_ASIDE = 3
"""Verdicts at other sizes kept beside a strategy's newest (``Facts.verdicts``): calls of 40 and of 8
items in turn replaced each other's, and every 8-item call ran on the pool again with the 40-item call's gain,
at 0.4-0.9x the loop (hunt 72, F7)."""
VERDICT_SMOOTHING = 0.5
"""A new gain's weight in a function's verdict on a strategy; earlier measurements keep the rest."""
VERDICT_LOSS_WEIGHT = 0.25
"""A new loss weighs less: a burst of calls slowed by something else on the machine (a few ms of a stolen
core) must not hold a gaining function serial, so overturning a 1.4x verdict takes about three losses in
a row. A held function is re-measured by one call at a time, so a gain there counts fully."""
THROWN_CALLS = 1
"""A pool closed with its executor after at most this many calls was thrown away (``rebuy``)."""
MAX_THROWN = 6
"""At most 64 times its start: an executor kept open serves many calls, and its pool's start is paid off by them."""
COST_SHIFT = ESTIMATE_OVERTURNED
"""A function's item cost measured this many times off the remembered one is a new cost (other arguments,
other data), not noise: it replaces the remembered cost instead of being smoothed into it, and the verdicts
measured at the old cost no longer apply."""
SOUND_ITEMS = 64
SOUND_SECONDS = 0.0002
"""A cost read from at least SOUND_ITEMS items, or SOUND_SECONDS of their work, is sound; one read from fewer
(the single item a 10-item call's probe may run, a tiny call) is not: a cold first item (1-2 us where a warm
one takes 150 ns) and the timing of a block or two decide it. Such a reading never replaces a sound cost, and
a call that can probe more items than a cost that is not sound rests on measures them again."""
SHARE_SHIFT = 2.0
"""A CPU share read without the GIL this many times off the remembered one replaces it instead of being smoothed
in: items whose service got slower (0 -> 5 ms of sleep on 1 ms of CPU) read 0.17 on processes, and smoothed
from 0.76 it took four calls at 2.6x ``ThreadPoolExecutor()``'s time to reach threads."""
RESHARE_EVERY = 8
"""A function on threads as waiting work has its first items run alone again every this many calls: threads
cannot tell its CPU share (the GIL paces items that wait and items that compute alike), so a function whose
waits went away stayed on threads at a loop's speed while its records read 2-3x."""
COST_HISTORY = 8
"""How many of a function's last measured calls ``Facts.shifts`` remembers."""


class Pickling(NamedTuple):
    """Seconds per item: the parent pickles the item and unpickles its result; a worker does the reverse.

    For items of a few bytes this per-object cost, not the bytes, is what a
    process pool pays (a million ints take ~55 ms in the parent, more than
    ``abs`` on each), so it is measured rather than derived from sizes.
    """

    items_out: float
    items_in: float
    results_out: float
    results_in: float
    item_bytes: int = 0
    """How large the items it was timed on pickled: a call of much larger or smaller items is timed again."""
    item_kind: str = ""
    """What the items it was timed on were (``item_kind``): a call of other items is timed again, whatever their
    size (rows of 20 floats as lists of numpy scalars and as an array pickle to alike sizes at 600x the cost)."""

    @property
    def parent(self) -> float:
        return self.items_out + self.results_in

    @property
    def worker(self) -> float:
        return self.items_in + self.results_out


def item_kind(item: Any) -> str:
    """An item's type, and its first element's for a list or tuple: what its pickling cost depends on beside its
    size."""
    kind = type(item).__qualname__
    if type(item) in (list, tuple) and item:
        kind += f"[{type(item[0]).__qualname__}]"
    return kind


NO_PICKLING = Pickling(0.0, 0.0, 0.0, 0.0)
"""Unmeasured: threads, or payloads too large to time cheaply (their bytes are costed instead)."""


def _pickled_parts(fn: Callable[..., Any]) -> tuple[Any, ...]:
    """The objects pickling ``fn`` depends on: a bound method's instance and function (each attribute access
    makes a new method object), a starmap wrapper's function, else the callable itself."""
    if isinstance(fn, Star):
        return _pickled_parts(fn.fn)
    if isinstance(fn, types.MethodType):
        return (fn.__self__, fn.__func__)
    return (fn,)


class MeasuredOn:
    """Weak references to the callable a function's pickling facts were measured on.

    Facts are keyed by source location, so another lambda of the same line or a
    partial over other arguments shares them; whether it pickles does not. The
    facts hold only for the very object measured (a weak reference, so a closure
    and what it captured are not kept alive); any other is pickled again.
    """

    __slots__ = ("_refs",)

    def __init__(self, refs: tuple[weakref.ref[Any], ...]) -> None:
        self._refs = refs

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> MeasuredOn | None:
        """None for a callable without weak references (a ufunc, a slotted instance): it is pickled every call."""
        try:
            return cls(tuple(weakref.ref(part) for part in _pickled_parts(fn)))
        except TypeError:
            return None

    def holds_for(self, fn: Callable[..., Any]) -> bool:
        if self._refs[0]() is fn and len(self._refs) == 1:  # the common case, a plain function: ~0.1 us
            return True
        parts = _pickled_parts(fn)
        return len(parts) == len(self._refs) and all(ref() is part for ref, part in zip(self._refs, parts, strict=True))


class Pace(NamedTuple):
    """The wall time an item of one call on a pool took, that call's size and its items' cost."""

    seconds: float
    n_items: int
    item_cost: float

    def of_a_call_like(self, n_items: int, item_cost: float) -> bool:
        """Whether this pace stands for a call of ``n_items`` at ``item_cost``: a comparable size, no shifted cost."""
        return comparable(self.n_items, n_items, VERDICT_REACH) and not cost_shifted(self.item_cost, item_cost)


class Verdict(NamedTuple):
    """What an auto-planned parallel call on a strategy really gained, and at how many items: a gain at 40 items
    says little of a call of 8, a loss at 8 little of one of 40."""

    speedup: float
    n_items: int


PACES_KEPT = 4
"""Paces kept per strategy: calls of a few sizes or costs that alternate each keep theirs (trial 48: a cost
moving 10x every call, its paces cleared at each, never had processes measured beside threads)."""


IMPORTED_IN_KEPT = 4096
"""Worker processes kept per function as having its modules: the newest this many, far more than a machine's
pool has (64 charged a pool of more workers the imports on every call: review 61)."""


PACE_SMOOTHING = 0.5
"""Weight of a call's pace against the comparable one kept: one noisy call (FFTs at 476 ms against 440) does
not hand the work to the other side, whose pace was 5% off."""


def pace_for(paces: tuple[Pace, ...], n_items: int, item_cost: float) -> float | None:
    """The latest pace of a call comparable to one of ``n_items`` at ``item_cost`` (size and cost): None if none."""
    for pace in reversed(paces):
        if pace.of_a_call_like(n_items, item_cost):
            return pace.seconds
    return None


@dataclass
class Facts:
    """What earlier calls measured about one function.

    ``fn_bytes``, ``pickle_error`` and ``cloudpickle_ok`` describe the function
    object itself and hold only for the one in ``measured_on``. Whether items
    pickle is never stored: each call's items are checked. Results are checked
    only where a probe ran, so a result that did not pickle is remembered in
    ``result_error`` until a later call's first result is checked and pickles;
    None until a result was checked at all (a call on threads, serially or one
    that failed pickles none), so the first call that would send one checks it.
    """

    seconds_per_item: float
    cpu_ratio: float
    fn_bytes: int
    pickle_error: str
    cloudpickle_ok: bool | None
    names_main: bool = False
    """Whether the function's pickle by name names ``__main__`` (``Probe.names_main``)."""
    threads_speedup: float | None = None
    """Measured speedup of the last threads run chosen for payloads processes could not take."""
    verdicts: dict[str, tuple[Verdict, ...]] = field(default_factory=dict)
    """Per strategy: its verdicts, newest first, each at a size the others cannot speak for (at most
    1 + ``VERDICTS_ASIDE``); a call is held to the one nearest its size (``verdict_near``)."""
    paces: dict[str, tuple[Pace, ...]] = field(default_factory=dict)
    """For threads and processes: the wall seconds an item of auto's last calls there took, a few calls of
    other sizes or costs kept beside each other (``pace_for``). Both are held to one clock, where each verdict is
    held to its own items' times (threads' items may run slower side by side than a process's, or faster than
    in the caller): which was faster."""
    held: dict[str, int] = field(default_factory=dict)
    """Per strategy: calls kept serial by its verdict since it was last measured."""
    retries: dict[str, int] = field(default_factory=dict)
    """Per strategy: re-measurements that confirmed the loss; the wait before the next one doubles with each."""
    forgone: dict[str, float] = field(default_factory=dict)
    """Per strategy: seconds calls kept serial only by a cold pool's start would have saved on a warm one."""
    pickling: Pickling = NO_PICKLING
    """Seconds per item the parent and each worker spend pickling, measured on the probed items."""
    measured_on: MeasuredOn | None = None
    """The callable the function's pickling facts were measured on; None: on none still alive (or never)."""
    result_error: str | None = None
    """Why the last result a probe checked could not be pickled ("": it pickled; None: none was checked yet).
    Unless it pickled, each later call that would send results checks its first result again."""
    item_bytes: int = 0
    """Pickled bytes of the item a probe last ran here and sized (0: none): a call of arrays ``COST_SHIFT`` times
    larger or smaller has its first item run here again (``planning._items_resized``)."""
    result_bytes: int = 0
    """Pickled bytes of one result: a probe's first result, then what a process pool's results averaged. A
    call that recalls the function runs no item here, so without it results would be priced as free."""
    shifts: int = 0
    """The last ``COST_HISTORY`` measured calls, one bit each (newest lowest): set when its cost shifted."""
    import_seconds: float = 0.0
    """What the modules its first probe's items imported took (``Probe.import_seconds``): worker processes that
    lack them import them again, until the function ran on their pool."""
    imported_on: frozenset[str] = frozenset()
    """The process backends whose pool ran the function since then (a cluster's workers have its modules)."""
    imported_in: tuple[int, ...] = ()
    """The worker processes of this machine's pools that ran it since then, oldest first (``IMPORTED_IN_KEPT``):
    a pool started later (a new executor, a restart, loky's retired idle workers replaced) imports again."""
    hidden_dear: float = 0.0
    """Seconds the last pool call ran on timing blocks of dear items among cheap ones (``DearItems.seconds``)."""
    typical_item: float = 0.0
    """What most items of that call cost where its dear items sat together: what chunk budgets are cut for then
    (``DearItems.typical``; 0: they were scattered, budgets follow the mean)."""
    share_without_gil: bool = False
    """Whether ``cpu_ratio`` was read from a whole call whose items no other thread of it held back (in worker
    processes, or one by one). Threads that kept a core busy read the same for CPU-bound items as for items
    that mix CPU with waiting, so their reading only corrects a share a probe took from a few first items
    (a slow first item can make CPU-bound work look waiting)."""
    measured_items: int = SOUND_ITEMS
    """How many items ``seconds_per_item`` rests on: a probe's, then the calls' that corrected it (see
    ``SOUND_ITEMS``). Facts stated outright (``teach``) count as sound."""
    delegates: bool = False
    """Whether a probe saw the items compute mostly outside their own thread (other processes, native threads):
    a run's record reads only the threads that ran the items, so it does not correct ``cpu_ratio`` then."""
    cores: float = 1.0
    """CPUs a probed item kept busy at once (``Probe.cores``)."""
    waited: bool | None = None
    """The side of the waiting line auto last planned the function on from a share read without the GIL (True:
    threads for waiting work; None: none yet), kept until its share moves ``WAITING_BAND`` past the line."""
    threads_calls: int = 0
    """Calls run on threads as waiting work since the share was last read without the GIL (``RESHARE_EVERY``)."""
    side_by_side: SideBySide = field(default_factory=SideBySide)
    """Its items timed alone and on each local pool, and how much slower side by side (``payoff._side_by_side``)."""
    gil_held: float | None = None
    """The share of their time its items held the GIL, as a probe last read it (``payoff._gil_share``)."""
    gil_threads: float | None = None
    """Threads its runs of waiting items on threads kept busy with their own work (their speedups, waits for the
    GIL taken off; smoothed), with headroom: more only queue for the GIL (``GIL_HEADROOM``)."""
    thrown: dict[str, int] = field(default_factory=dict)
    """Per strategy: pools in a row that auto started for it and an executor's shutdown then closed after that
    one call (``Knowledge.pool_closed``)."""
    misleading_firsts: int = 0
    """Other objects of its source whose first item read another CPU share and whose second did not
    (``planning.MISLEADING_FIRSTS``)."""
    timed_loop: TimedLoop | None = None
    """Its last whole serial auto call in the caller: what a loop took lately, which a pool's call under other
    programs' load is held to (``planning._beside_a_timed_loop``)."""
    unjudged: int = 0
    """Losses in a row a pool's calls met under other programs' load with no loop lately to hold them to
    (``planning.UNJUDGED_LOSSES``); a verdict ends the row."""
    unjudged_n: int = 0
    """The items of the last of those calls: a loop is timed for a call of about that size."""
    loop_asked_at: float = -math.inf
    """``time.monotonic()`` when a call was last run serially to time a loop (``loop_wanted``)."""
    pool_loaded: bool = False
    """Its last auto call on a local process pool met other programs' load (``planning._under_outside_load``)."""

    @property
    def sound(self) -> bool:
        return _sound(self.measured_items, self.seconds_per_item)

    def fn_facts_hold_for(self, fn: Callable[..., Any]) -> bool:
        return self.measured_on is not None and self.measured_on.holds_for(fn)


def rebuy(thrown: int) -> int:
    """How many times its start a pool must save before auto starts one, after ``thrown`` pools in a row that
    an executor closed after the call that started them (``Facts.thrown``): each doubles it.

    The ski-rental start is never worse than twice the best choice in hindsight for one pool; a pool thrown
    away with its executor is bought again. ``with ParallelExecutor() as ex:`` inside a loop started a pool
    every third or fourth call and closed it at once: 12 calls took 1.8-1.9x a loop's time (trial 51).
    Counted per function and for auto's starts only: counted for the process, one-call executors of a named
    strategy held an unrelated function serial for 81 calls instead of 10 (review).
    """
    return 1 << thrown


class TimedLoop(NamedTuple):
    wall_per_item: float
    n_items: int
    item_seconds: float
    """Its items' own time each: a pool call is held to it only over items of about that cost."""
    at: float
    """``time.monotonic()`` when it ended: load comes and goes, so an old reading says little of the load now."""
    item_cpu: float = 0.0
    """Its items' CPU time each: what the same work costs wherever it waited (for a CPU, or for the GIL)."""
    loaded: bool = False
    """It waited for a CPU (other programs had the cores): a loop only while that load lasts."""
    after_load: bool = False
    """The function's last pool call before it met other programs' load: a loop timed while the load was on,
    whether or not the caller's one thread waited for a CPU itself (``planning._beside_a_timed_loop``)."""


def _forget_old_items(facts: Facts) -> None:
    """What was measured of items the function no longer has (a new cost, or other work): a gain or loss
    measured on them says nothing of these, and their share of the GIL, their waits and their readings side by
    side are read again."""
    facts.verdicts.clear()
    facts.held.clear()
    facts.retries.clear()
    facts.gil_held = facts.gil_threads = facts.threads_speedup = None
    facts.side_by_side = facts.side_by_side.afresh()
    facts.timed_loop = None


def _sound(n_items: int, seconds_per_item: float) -> bool:
    return n_items >= SOUND_ITEMS or n_items * seconds_per_item >= SOUND_SECONDS


def fn_key(fn: Callable[..., Any]) -> Hashable | None:
    """A key that survives re-creating the same function (a lambda in a loop, a new partial)."""
    if isinstance(fn, Star):
        inner = fn_key(fn.fn)
        return None if inner is None else ("star", inner)
    if isinstance(fn, functools.partial):
        inner = fn_key(fn.func)
        return None if inner is None else ("partial", inner, len(fn.args), tuple(sorted(fn.keywords)))
    if type(fn) is CACHED:  # its wrapper has no code: every cached `score` of every module shared one key
        inner = fn_key(fn.__wrapped__)
        return None if inner is None else ("cached", inner)
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    if code is not None:
        owner = type(fn.__self__).__qualname__ if hasattr(fn, "__self__") else ""
        # exec'd and generated code shares one pseudo-file ("<string>"): its own code tells it apart
        body = code if code.co_filename.startswith("<") else None
        return ("code", code.co_filename, code.co_firstlineno, code.co_qualname, owner, body)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)  # a builtin or a ufunc: its own
    return ("object", type(fn).__module__, type(fn).__qualname__, name if isinstance(name, str) else None)


class Knowledge:
    """A bounded memory of per-function facts, so a function is probed once, not on every call.

    ``get`` hands out the stored object itself: treat it as read-only. Which
    functions crashed a worker process is kept beside the facts, under the same
    key: a function can crash before anything about it was measured.
    """

    LIMIT = 512
    SMOOTHING = 0.3

    def __init__(self) -> None:
        self._lock = _forks.Lock()
        self._facts: OrderedDict[Hashable, Facts] = OrderedDict()
        self._crashes: OrderedDict[Hashable, tuple[str, tuple[Callable[[], bool], ...]]] = OrderedDict()
        """A function's mark: how it crashed a worker (no callables: for good), or the items that outlived a
        timeout, each with whether it still runs."""
        self._bound: OrderedDict[Hashable, str] = OrderedDict()
        """Functions whose items raised off the caller's thread what they did not raise on it (``thread_bound``)."""
        self._closed_later: deque[tuple[Hashable | None, str, int]] = deque()
        """Pools closed with an executor nobody held (``closed_later``), for ``take_notes``."""

    @contextlib.contextmanager
    def _stored(self, fn: Callable[..., Any]) -> Iterator[Facts | None]:
        """The facts of ``fn`` (None when unknown), held under the lock for an update."""
        key = fn_key(fn)
        with self._lock:
            yield self._facts.get(key) if key is not None else None

    def get(self, fn: Callable[..., Any]) -> Facts | None:
        key = fn_key(fn)
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is not None:
                self._facts.move_to_end(key)
        return facts

    def snapshot(self, fn: Callable[..., Any]) -> Facts | None:
        """A copy of the facts of ``fn``, taken under the lock: another call may update them meanwhile."""
        key = fn_key(fn)
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is None:
                return None
            self._facts.move_to_end(key)
            return replace(facts, verdicts=dict(facts.verdicts), forgone=dict(facts.forgone), paces=dict(facts.paces),
                           side_by_side=facts.side_by_side.copy(), thrown=dict(facts.thrown))

    def remember(self, fn: Callable[..., Any], probe: Probe) -> None:
        key = fn_key(fn)
        if key is None or probe.seconds_per_item is None:
            return
        facts = Facts(probe.seconds_per_item, probe.cpu_ratio, probe.fn_bytes, probe.pickle_error,
                      probe.cloudpickle_ok, probe.names_main, pickling=probe.pickling,
                      result_error=probe.result_error,
                      result_bytes=probe.result_bytes, measured_on=MeasuredOn.of(fn) if probe.fn_checked else None,
                      measured_items=probe.n, delegates=probe.delegates, item_bytes=probe.item_bytes,
                      cores=probe.cores, import_seconds=probe.import_seconds)
        with self._lock:
            self._store(key, facts)

    def recheck(self, fn: Callable[..., Any], probe: Probe, fn_measured: bool) -> None:
        """Store what this call checked afresh: the pickling of ``fn`` when it was not the object measured
        before (``fn_measured``), whether its first result pickled when a probe ran one, and the pickling of
        items of another kind than those measured before."""
        measured_on = MeasuredOn.of(fn) if fn_measured else None
        with self._stored(fn) as facts:
            if facts is None:
                return
            if fn_measured:
                facts.fn_bytes, facts.pickle_error = probe.fn_bytes, probe.pickle_error
                facts.cloudpickle_ok, facts.measured_on = probe.cloudpickle_ok, measured_on
                facts.names_main = probe.names_main
            if probe.result_error is not None:
                facts.result_error = probe.result_error
            if probe.outcome is not None and probe.outcome.n_done:
                facts.result_bytes, facts.item_bytes = probe.result_bytes, probe.item_bytes
            if probe.pickling.item_kind != facts.pickling.item_kind:  # items of another kind, timed afresh
                facts.pickling = probe.pickling

    def first_measured(self, fn: Callable[..., Any], seconds_per_item: float, cpu_ratio: float,
                       without_gil: bool = False, n_items: int = SOUND_ITEMS) -> None:
        """Facts of a function first measured by a whole call on a pool, with no probe (its pickling unknown)."""
        key = fn_key(fn)
        if key is None or seconds_per_item <= 0:
            return
        with self._lock:
            if key not in self._facts:
                self._store(key, Facts(seconds_per_item, min(1.0, max(0.01, cpu_ratio)), 0, "", None,
                                       share_without_gil=without_gil, measured_items=n_items))

    def _store(self, key: Hashable, facts: Facts) -> None:
        """Under the lock: ``facts`` as the newest entry, the least recently used dropped past LIMIT."""
        self._facts[key] = facts
        self._facts.move_to_end(key)
        while len(self._facts) > self.LIMIT:
            self._facts.popitem(last=False)

    def observe(self, fn: Callable[..., Any], seconds_per_item: float, cpu_ratio: float | None = None,
                without_gil: bool = False, n_items: int = SOUND_ITEMS) -> bool:
        """Correct the remembered cost (and how much of it is CPU) with what a whole call of ``n_items`` measured.

        A CPU share read ``without_gil`` is not corrected by one read on threads (``Facts.share_without_gil``).
        False when nothing is remembered of ``fn`` to correct.
        """
        with self._stored(fn) as facts:
            if facts is None:
                return False
            a = self.SMOOTHING
            new_cost = seconds_per_item > 0 and _correct_cost(facts, seconds_per_item, n_items, a)
            if new_cost:
                _forget_old_items(facts)
            if cpu_ratio is not None and (without_gil or not facts.share_without_gil):
                share = min(1.0, max(0.01, cpu_ratio))
                # a firmer reading, not one more; or the share of items of a new cost (naps of 10 ms after free
                # items read 1.0: smoothed in, the next call ran them on 5 threads, where 20 took a third)
                first = (without_gil and not facts.share_without_gil) or new_cost
                shifted = without_gil and max(share, facts.cpu_ratio) > SHARE_SHIFT * min(share, facts.cpu_ratio)
                facts.cpu_ratio = share if first or shifted else (1 - a) * facts.cpu_ratio + a * share
                facts.share_without_gil = without_gil
            if without_gil:
                facts.threads_calls = 0
        return True

    def observe_hidden_dear(self, fn: Callable[..., Any], dear: DearItems) -> None:
        with self._stored(fn) as facts:
            if facts is not None:
                facts.hidden_dear, facts.typical_item = dear

    def observe_results(self, fn: Callable[..., Any], bytes_per_result: int) -> None:
        """What a process pool's results weighed on the way back, the size the next call is priced with."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.result_bytes = bytes_per_result

    def hold(self, fn: Callable[..., Any], key: str) -> bool:
        """Count a call kept serial by a verdict (``key``: a verdict's ``verdict_counter``, threads' hold for
        shared memory, ``CORES``); False every ``VERDICT_RETRY``-th time (the wait doubling with each confirmed
        loss), so a verdict formed on a busy machine is re-measured.

        The verdict itself stays until a measurement replaces or corrects it: a
        call let through that ends up not running on its strategy measures nothing.
        """
        with self._stored(fn) as facts:
            if facts is None:
                return False
            held = facts.held[key] = facts.held.get(key, 0) + 1
            if held < VERDICT_RETRY << min(facts.retries.get(key, 0), 7):
                return True
            facts.held[key] = 0
            return False

    def observe_gil(self, fn: Callable[..., Any], held: float) -> None:
        """A probe's reading of the GIL's share its items held replaces the kept one (``payoff._gil_share``)."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.gil_held = held

    def observe_cores(self, fn: Callable[..., Any], cores: float, spread: bool) -> None:
        """A probe run again to read the CPUs an item keeps busy: its reading replaces the kept one, so one taken
        on a busy machine is no ban for the life of the process (the review); ``spread`` (still too many for
        threads) doubles the wait before the next, as a confirmed loss does a verdict's."""
        with self._stored(fn) as facts:
            if facts is None:
                return
            facts.cores = cores
            if spread:
                facts.retries[CORES] = facts.retries.get(CORES, 0) + 1
            else:
                facts.retries.pop(CORES, None)

    def observe_verdict(self, fn: Callable[..., Any], strategy: str, speedup: float, n_items: int) -> None:
        """What a parallel call of ``fn`` really gained: the next plan of a similar call believes it.

        A measurement at a size comparable to the nearest kept verdict's is averaged into it (a
        loss with less weight), so a few noisy calls do not flip it; one at a very
        different size is new, and the others are kept aside for calls of their sizes.
        """
        with self._stored(fn) as facts:
            if facts is None:
                return
            facts.unjudged = 0
            kept = facts.verdicts.get(strategy, ())
            nearest = verdict_near(facts.verdicts, strategy, n_items)  # the one that held this size, if a loss
            earlier = nearest if nearest is not None and comparable(n_items, nearest.n_items, VERDICT_REACH) else None
            new = Verdict(speedup, n_items)
            if earlier is not None:  # averaged in where it was first measured: its hold and retries stay its own
                _count_confirmation(facts, verdict_counter(strategy, earlier), speedup >= 1.0, earlier.speedup < 1.0)
                weight = VERDICT_SMOOTHING if speedup >= 1.0 else VERDICT_LOSS_WEIGHT
                new = Verdict(weight * speedup + (1 - weight) * earlier.speedup, earlier.n_items)
            elif nearest is not None:
                _inherit_confirmation(facts, strategy, nearest, new)
            facts.verdicts[strategy] = (new, *(v for v in kept if v is not earlier))[:1 + VERDICTS_ASIDE]
            _forget_counters_of_dropped(facts, strategy)

    def observe_pace(self, fn: Callable[..., Any], strategy: str, seconds_per_item: float, n_items: int) -> None:
        """The wall time an item of an auto call on ``strategy`` took (``Facts.paces``): it replaces the pace of
        a comparable call, at the function's cost as now learned."""
        with self._stored(fn) as facts:
            if facts is None:
                return
            cost, kept = facts.seconds_per_item, []
            for pace in facts.paces.get(strategy, ()):
                if pace.of_a_call_like(n_items, cost):
                    seconds_per_item = PACE_SMOOTHING * seconds_per_item + (1 - PACE_SMOOTHING) * pace.seconds
                else:
                    kept.append(pace)
            facts.paces[strategy] = (*kept, Pace(seconds_per_item, n_items, cost))[-PACES_KEPT:]

    def other_work(self, fn: Callable[..., Any], seconds_per_item: float, cpu_ratio: float) -> None:
        """Another object of ``fn``'s source, checked here, is other work (``planning._other_work``): its cost
        and CPU share replace the source's, and nothing measured of the old work stands. Resting on two items,
        the cost is not sound: the next call of it probes in full."""
        with self._stored(fn) as facts:
            if facts is None:
                return
            facts.seconds_per_item, facts.cpu_ratio = max(seconds_per_item, 1e-9), min(1.0, max(0.01, cpu_ratio))
            facts.share_without_gil, facts.measured_items, facts.waited, facts.threads_calls = True, 1, None, 0
            _forget_old_items(facts)
            facts.paces, facts.forgone, facts.misleading_firsts = {}, {}, 0

    def first_item_misled(self, fn: Callable[..., Any]) -> None:
        with self._stored(fn) as facts:
            if facts is not None:
                facts.misleading_firsts += 1

    def observe_timed_loop(self, fn: Callable[..., Any], wall_per_item: float, n_items: int,
                           item_seconds: float, item_cpu: float = 0.0, loaded: bool = False) -> None:
        """A whole serial call in the caller took ``wall_per_item`` an item, its items ``item_seconds`` each, of
        which ``item_cpu`` on a CPU; ``loaded``: it waited for a CPU."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.timed_loop = TimedLoop(wall_per_item, n_items, item_seconds, time.monotonic(), item_cpu,
                                             loaded, facts.pool_loaded)

    def pool_met_load(self, fn: Callable[..., Any], loaded: bool) -> None:
        """An auto call on a local process pool met other programs' load or not (``Facts.pool_loaded``)."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.pool_loaded = loaded

    def loss_unjudged(self, fn: Callable[..., Any], n_items: int) -> None:
        """A pool's call of ``n_items`` lost under other programs' load, and no loop timed lately could judge it."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.unjudged, facts.unjudged_n = facts.unjudged + 1, n_items

    def loop_wanted(self, fn: Callable[..., Any], losses: int, n_items: int, every: float) -> bool:
        """Whether ``losses`` losses in a row went unjudged, the last at about this call's size, and no loop was
        timed so in the last ``every`` seconds: this call times one, and the row starts again."""
        with self._stored(fn) as facts:
            now = time.monotonic()
            if facts is None or facts.unjudged < losses or now - facts.loop_asked_at < every \
                    or not comparable(n_items, facts.unjudged_n, VERDICT_REACH):
                return False
            facts.unjudged, facts.loop_asked_at = 0, now
            return True

    def observe_alone(self, fn: Callable[..., Any], seconds_per_item: float, n_items: int,
                      on_cpu: bool = False) -> None:
        """A whole serial call's cost an item, in the caller: a loop's, which the pools' timings are held to.
        ``on_cpu``: its items never waited (``payoff._side_by_side.ON_CPU``)."""
        with self._stored(fn) as facts:
            if facts is not None and _sound(n_items, seconds_per_item):
                for strategy, moved in facts.side_by_side.note_alone(seconds_per_item, n_items, VERDICT_REACH,
                                                                     on_cpu).items():
                    _correct_verdicts(facts, strategy, moved)

    def observe_on_pool(self, fn: Callable[..., Any], strategy: str, seconds_per_item: float,
                        n_items: int, wall_seconds: float = 0.0) -> None:
        """A local pool's call of ``wall_seconds`` read its items at ``seconds_per_item`` (no factor taken off)."""
        with self._stored(fn) as facts:
            if facts is not None and _sound(n_items, seconds_per_item):
                moved = facts.side_by_side.note_on_pool(strategy, seconds_per_item, n_items, VERDICT_REACH,
                                                        wall_seconds)
                if moved is not None:
                    _correct_verdicts(facts, strategy, moved)

    def far_check(self, fn: Callable[..., Any]) -> None:
        """A serial check read far off the pool's cost (``SideBySide.note_far``)."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.side_by_side.note_far()

    def check_alone(self, fn: Callable[..., Any], strategy: str, remaining: int, shared: bool = False,
                    cost: float | None = None) -> bool:
        """Whether this call runs serially to time the items alone (``SideBySide.check_due``); once per pool.
        ``shared``: threads chosen for data processes cannot take, whose gain is ``threads_speedup``. ``cost``:
        what this call's items were planned at; a call of items of another cost than the pool's last (a probe
        read it) could not be compared with that pool call (trial 48: costs alternating 10x were checked every
        other call)."""
        with self._stored(fn) as facts:
            if facts is None:
                return False
            pool = facts.side_by_side.on_pool.get(strategy)
            if cost is not None and pool is not None and cost_shifted(cost, pool.seconds_per_item):
                return False
            verdict = verdict_near(facts.verdicts, strategy, remaining)
            gain = facts.threads_speedup if shared else verdict.speedup if verdict is not None else None
            if not facts.side_by_side.check_due(strategy, gain, remaining, VERDICT_REACH):
                return False
            facts.side_by_side.note_check(strategy)
            return True

    def forgo(self, fn: Callable[..., Any], strategy: str, seconds: float) -> None:
        """A call stayed serial because ``strategy``'s pool was cold; a warm one would have saved ``seconds``."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.forgone[strategy] = facts.forgone.get(strategy, 0.0) + max(0.0, seconds)

    def ran_on(self, fn: Callable[..., Any], strategy: str, pids: Iterable[int] = ()) -> None:
        """The pool of ``strategy`` ran ``fn``'s items, in worker processes ``pids`` where known: they imported
        what the function imports."""
        with self._stored(fn) as facts:
            if facts is None or not facts.import_seconds:
                return
            facts.imported_on = facts.imported_on | {strategy}
            known = set(facts.imported_in)
            fresh = [pid for pid in dict.fromkeys(pids) if pid not in known]
            if fresh:
                facts.imported_in = (*facts.imported_in, *fresh)[-IMPORTED_IN_KEPT:]

    def started(self, fn: Callable[..., Any], strategy: str | None) -> None:
        """A pool of ``strategy`` (None: of any) was started for ``fn``: what waiting for it cost is paid off."""
        with self._stored(fn) as facts:
            if facts is not None:
                if strategy is None:
                    facts.forgone.clear()
                else:
                    facts.forgone.pop(strategy, None)

    def closed_later(self, key: Hashable | None, strategy: str, calls: int) -> None:
        """``pool_closed``, noted for the next ``take_notes``: an executor's finalizer calls it, and a collection
        may run that inside this object's lock (it is not reentrant). ``deque.append`` takes no lock of ours. By
        the function's key (``fn_key``): a function kept for the finalizer kept a method's instance, and with it
        an executor that instance held, alive for good (review: 66 threads after three dropped services)."""
        self._closed_later.append((key, strategy, calls))

    def take_notes(self) -> None:
        """Count the pools ``closed_later`` noted (``pool_closed``)."""
        while self._closed_later:
            try:
                key, strategy, calls = self._closed_later.popleft()
            except IndexError:  # another thread took the last one
                return
            self.pool_closed(key, strategy, calls)

    def pool_closed(self, key: Hashable | None, strategy: str, calls: int) -> None:
        """An executor was shut down with the ``strategy`` pool an auto call of the function of ``key``
        (``fn_key``) started, after ``calls`` calls (maps, submits) on it: one that served only that call was
        thrown away (see ``rebuy``)."""
        with self._lock:
            facts = self._facts.get(key) if key is not None else None
            if facts is not None:
                thrown = facts.thrown.get(strategy, 0)
                facts.thrown[strategy] = min(MAX_THROWN, thrown + 1) if calls <= THROWN_CALLS else 0

    def observe_threads(self, fn: Callable[..., Any], speedup: float, confirms: bool = True) -> None:
        """What threads really gained for ``fn``: the GIL decides, and only a run can tell. ``confirms``: the
        call's gain or loss confirms or ends a hold of threads (not where its verdict already counted it: a
        loss held threads off 4x as long, review)."""
        with self._stored(fn) as facts:
            if facts is not None:
                earlier = facts.threads_speedup
                if confirms:
                    _count_confirmation(facts, "threads", speedup >= THREADS_KEEP_SPEEDUP,
                                        earlier is not None and earlier < THREADS_KEEP_SPEEDUP)
                if earlier is not None and speedup < THREADS_KEEP_SPEEDUP:  # one noisy loss (0.93x) held threads
                    # off for 7 calls that gained 1.3x (user trial); a gain re-measured after a hold counts fully
                    speedup = VERDICT_LOSS_WEIGHT * speedup + (1 - VERDICT_LOSS_WEIGHT) * earlier
                facts.threads_speedup = speedup

    def observe_gil_threads(self, fn: Callable[..., Any], busy_threads: float) -> None:
        """A run of waiting items on more threads than cores kept ``busy_threads`` of them busy on average: the
        next runs use about that many, and the GIL headroom lets the count grow back where the GIL left it free.

        The count the CPU share asks for (the cores over it) holds only where an item's CPU runs beside the
        GIL: pure-Python items queue for it instead. 31 threads of items of ten 0.2 ms sleeps ran 9-12x the
        loop, 16 ran 10-14x; the run's own estimate says where the GIL's queue began.
        """
        with self._stored(fn) as facts:
            if facts is not None and busy_threads > 0:
                wanted = GIL_HEADROOM * busy_threads
                a = self.SMOOTHING
                facts.gil_threads = wanted if facts.gil_threads is None else (1 - a) * facts.gil_threads + a * wanted

    def not_waiting(self, fn: Callable[..., Any]) -> None:
        """Threads chosen for waiting work lost, their items on a CPU all their time: the probe misread CPU
        work (it met GIL or CPU waits), and one correction, not a few smoothed ones, ends the thread runs."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.cpu_ratio = 1.0

    def sided(self, fn: Callable[..., Any], waiting: bool) -> None:
        """Auto planned ``fn`` as waiting work (threads) or not: near the line, its next plans keep that side.

        Only a side taken on a share read without the GIL: a probe's few first items, or threads that kept a
        core busy (read as CPU-bound), may have put it on the wrong one, which the band would then keep.
        """
        with self._stored(fn) as facts:
            if facts is not None and facts.share_without_gil:
                facts.waited = waiting

    def ran_waiting_on_threads(self, fn: Callable[..., Any]) -> None:
        """One more call on threads as waiting work, whose run cannot read the share (``RESHARE_EVERY``)."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.threads_calls += 1

    def reshare(self, fn: Callable[..., Any]) -> None:
        """The next auto call of ``fn`` reads its CPU share alone (its first items run in the caller): a run on
        threads that kept the GIL busy cannot tell items that wait from items that compute. Until then the share
        it read (1.0 for such a run, smoothed in) stands, so a call that cannot run items here still moves."""
        with self._stored(fn) as facts:
            if facts is not None:
                facts.threads_calls = max(facts.threads_calls, RESHARE_EVERY)

    def crashed(self, fn: Callable[..., Any], detail: str, hanging: Callable[[], bool] | None = None) -> None:
        """``fn`` crashed a worker process (``detail`` says how): from now on it runs only in worker processes.

        Kept for the life of the process (or until ``forget``), like the facts:
        a crash that a retry recovered may recur, and the caller is the one
        process payoff cannot restart. An item that outlived its call's timeout
        on a payoff thread (``hanging`` tells whether it still runs) is kept only
        while it, or another such item of ``fn``, runs: one that finished was
        slow, not hung, and one slow request had moved every later call of a
        service's function to worker processes for good (3x its latency on 1,000
        calls). A crash's mark is never replaced by such a one.
        """
        key = fn_key(fn)
        if key is None:
            return
        with self._lock:
            kept = self._crashes.get(key)
            if hanging is None or kept is None:
                self._crashes[key] = (detail, () if hanging is None else (hanging,))
            elif kept[1]:  # items that outlived a timeout: this one joins them (a crash's mark stays as it is)
                self._crashes[key] = (detail, (*[h for h in kept[1] if h()], hanging))
            self._crashes.move_to_end(key)
            while len(self._crashes) > self.LIMIT:
                self._crashes.popitem(last=False)

    def crash_of(self, fn: Callable[..., Any]) -> str | None:
        """How ``fn`` crashed a worker process in an earlier call, or that an item of it still runs past a
        timeout; None if neither."""
        key = fn_key(fn)
        if key is None:
            return None
        with self._lock:
            detail, hanging = self._crashes.get(key, (None, ()))
            if hanging and not any(h() for h in hanging):
                del self._crashes[key]
                return None
            return detail

    def bound_to_its_thread(self, fn: Callable[..., Any], detail: str) -> None:
        """``fn``'s items raised on a pool what they did not raise in the caller's thread (``detail`` says what):
        from now on auto runs them there. Kept for the life of the process (or until ``forget``), as a crash is:
        a thread-bound object stays bound."""
        key = fn_key(fn)
        if key is None:
            return
        with self._lock:
            self._bound[key] = detail
            self._bound.move_to_end(key)
            while len(self._bound) > self.LIMIT:
                self._bound.popitem(last=False)

    def bound_of(self, fn: Callable[..., Any]) -> str | None:
        """What ``fn``'s items raised off the caller's thread in an earlier call, or None."""
        key = fn_key(fn)
        if key is None:
            return None
        with self._lock:
            return self._bound.get(key)

    def forget(self) -> None:
        with self._lock:
            self._facts.clear()
            self._crashes.clear()
            self._bound.clear()
            self._closed_later.clear()

    def teach(self, fn: Callable[..., Any], facts: Facts) -> None:
        """State the facts of ``fn`` outright (tests, or a user who measured it): no probe will run.

        Its pickling facts are believed for this very object, as if measured on it.
        """
        key = fn_key(fn)
        if key is None:
            raise ValueError(f"cannot remember facts for {fn!r}")
        if facts.measured_on is None:
            facts.measured_on = MeasuredOn.of(fn)
        if facts.gil_held is None:  # no probe to sample the GIL in either
            facts.gil_held = GIL_UNREAD
        with self._lock:
            self._facts[key] = facts


def cost_shifted(a: float, b: float) -> bool:
    """Whether two costs per item are ``COST_SHIFT`` times apart: the items are others, not the same ones timed
    again, and what was measured at one cost (its verdicts) says nothing of the other."""
    return max(a, b) > COST_SHIFT * min(a, b)


def _correct_cost(facts: Facts, seconds_per_item: float, n_items: int, weight: float) -> bool:
    """A call's reading of the cost per item, weighed by what it and the remembered cost rest on; True for a new cost.

    A sound reading many times off a cost is a new cost (``COST_SHIFT``), as is any reading that rests on more
    items than a cost that is not sound; near it, it is smoothed in. A reading that is not sound against a
    sound cost only nudges it, by its share of their items: a 10-item call, where each item's timing block and
    a cold first item weigh as much as the items, once read 7 us an item for 150 ns items, and the next call
    of 5,000 items went to worker processes (30-120 ms against 0.35 ms for a loop).
    """
    known, known_n = facts.seconds_per_item, facts.measured_items
    shifted = cost_shifted(seconds_per_item, known)
    facts.shifts = ((facts.shifts << 1) | shifted) & ((1 << COST_HISTORY) - 1)  # adopted or not: see _unsteady
    if not _sound(n_items, seconds_per_item) and facts.sound:
        share = min(weight, n_items / (n_items + known_n))
        facts.seconds_per_item = (1 - share) * known + share * seconds_per_item
        return False
    if (shifted and _sound(n_items, seconds_per_item)) or (not facts.sound and n_items >= known_n):
        facts.seconds_per_item, facts.measured_items = seconds_per_item, n_items
        return shifted
    facts.seconds_per_item = (1 - weight) * known + weight * seconds_per_item
    facts.measured_items = max(known_n, n_items)
    return False


def _correct_verdicts(facts: Facts, strategy: str, moved: float) -> None:
    """The gains measured on ``strategy`` divided by how far its factor side by side moved: they priced a loop
    at the pool's items' time."""
    if strategy in facts.verdicts:
        facts.verdicts[strategy] = tuple(Verdict(v.speedup / moved, v.n_items) for v in facts.verdicts[strategy])
    if strategy == "threads" and facts.threads_speedup is not None:
        facts.threads_speedup /= moved


def verdict_near(verdicts: dict[str, tuple[Verdict, ...]], strategy: str, n_items: int) -> Verdict | None:
    """Of ``strategy``'s verdicts (``Facts.verdicts``, or a ``Probe``'s), the one measured at the size nearest
    ``n_items``'s, in ratio; the newest wins a tie."""
    size = max(1, n_items)
    return min(verdicts.get(strategy, ()), key=lambda v: abs(math.log(size / max(1, v.n_items))), default=None)


def verdict_counter(strategy: str, verdict: Verdict) -> str:
    """The key of the holds and confirmed losses of ``strategy``'s verdict at its size (``Facts.held``,
    ``Facts.retries``): each size's verdict is re-measured on its own calls' turn. One count a strategy let
    through only every 8th held call: with calls of 1,000 and of 10 items in turn, always a 10-item one, and a
    loss at 1,000 items was never measured again while such calls gained 3x (review 79)."""
    return f"{_counters_of(strategy)}{verdict.n_items}"


def _counters_of(strategy: str) -> str:
    return f"{strategy}@"


def _inherit_confirmation(facts: Facts, strategy: str, nearest: Verdict, new: Verdict) -> None:
    """A loss measured at a size ``nearest``'s loss held serial (up to ``VERDICT_REACH`` times its size), but not
    comparable with it: a verdict of its own, whose wait goes on from ``nearest``'s, doubled (the retry confirmed
    the loss). ``nearest``'s own wait is left as it was: its size was not measured."""
    if new.speedup >= 1.0 or nearest.speedup >= 1.0 or new.n_items > VERDICT_REACH * nearest.n_items:
        return
    key = verdict_counter(strategy, nearest)
    facts.retries[verdict_counter(strategy, new)] = facts.retries.get(key, 0) + 1


def _forget_counters_of_dropped(facts: Facts, strategy: str) -> None:
    live = {verdict_counter(strategy, v) for v in facts.verdicts.get(strategy, ())}
    prefix = _counters_of(strategy)
    for counts in (facts.held, facts.retries):
        for key in [k for k in counts if k.startswith(prefix) and k not in live]:
            del counts[key]


def _count_confirmation(facts: Facts, strategy: str, gained: bool, was_a_loss: bool) -> None:
    """A gain resets the wait before the next re-measurement; a loss measured again doubles it."""
    if gained:
        facts.retries.pop(strategy, None)
    elif was_a_loss:
        facts.retries[strategy] = facts.retries.get(strategy, 0) + 1
