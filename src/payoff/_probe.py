"""A call's first items, run in the caller before it is planned: what they cost and how much CPU they use.

The probe times its items in blocks, stops at a small budget, keeps their
results (the call does not run them again), reads the CPU share that tells
waiting work from computing work, and corrects what other calls of this
process took from it: their hold of the GIL, their use of the CPUs. Under a
``timeout`` it runs on a payoff thread the caller stops waiting for.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from payoff import _delegated_cpu, _forks, _gil_share, _own_pools
from payoff._gil_share import GIL_PROBE_SECONDS
from payoff._item_size import item_bytes_in_memory
from payoff._knowledge import NO_PICKLING, SOUND_ITEMS, SOUND_SECONDS, Pace, Pickling, Verdict
from payoff._source import is_stream, reads_for_a_probe
from payoff.config import cpu_capacity
from payoff.errors import StuckThreadsWarning
from payoff.observers import warn_before_raising
from payoff.record import GIL_BOUND_CORES
from payoff.scheduling import CHUNKS_PER_WORKER, items_within_bytes
from payoff.strategies.start_failure import thread_refused_error
from payoff.worker import CancelToken, ChunkOutcome, run_chunk

if TYPE_CHECKING:
    from payoff.planning import Call
    from payoff.reasons import Reason

PROBE_BUDGET_SECONDS = 0.002
PROBE_MAX_ITEMS = SOUND_ITEMS
"""A probe runs at most as many items as a sound cost needs (``SOUND_ITEMS``)."""
PROBE_CHEAP_SECONDS = SOUND_SECONDS
PROBE_CHEAP_MAX_ITEMS = 4096
"""A probe whose items took less than PROBE_CHEAP_SECONDS in all goes on doubling up to this many items:
timing a block costs a few hundred ns, so 64 items of ~40 ns each would read as several times dearer."""
WAITING_CPU_RATIO = 0.8
"""On one CPU, items that use less CPU than this per second of their time mostly wait: threads beside each
other keep them going. With more CPUs the line is lower (``waiting_line``)."""
WAITING_BAND = 0.2
"""A function keeps the side of the waiting line it last ran on until its share moves this far past it: a share
read near the line (1.6 ms of CPU and 2 ms of sleep read 0.37-0.56 a call) flipped between threads and
processes, each flip starting the other pool."""
GIL_WAIT_PER_CPU = 8
"""A thread's wait for a CPU counts as holding the GIL up to this many times its CPU time: a GIL holder on a
process that gets a ninth of a core (eight busy programs per core) waits eight times as long as it runs."""
HUNG_SHARE = 0.5
"""A probe still running at its call's deadline after at least this share of the call's timeout is taken for
one whose items hang: its function's next calls run in worker processes. One that had less (the rest went on
reading the input) only ran late, and is planned as before; stuck threads stay bounded by STUCK_PROBES_LIMIT."""
STUCK_PROBES_LIMIT = 4
"""Probe threads still running past their calls' timeouts beyond which no call with a timeout probes on a
thread: its items run in worker processes, which a timeout stops, so hung items leave no more threads."""
_STUCK_PROBES: list[Callable[[], bool]] = []
"""Whether each stuck probe (or serial run under a timeout) still runs its item."""
_STUCK_LOCK = _forks.Lock()
PROBE_STOP_GRACE_SECONDS = 0.25
"""How long Ctrl-C in a caller waits for its probe thread to stop at its next timing block."""


CONFIRM_ITEM_SECONDS = 0.05
"""Items that cost up to this much are run once more to confirm a reading of CPU outside their thread that
would make them CPU work (``_confirmed``): a stray burst of a few ms flips only such short items."""
CORES_MIN_SECONDS = 1e-3
"""A probe shorter than this reads no ``cores``: reading the other threads' clocks costs ~0.1 ms of CPU, which
a probe of 0.3 ms (ten single-threaded numpy sorts) read as 1.23 CPUs busy; over 1 ms it adds under 0.1."""


@dataclass
class Probe:
    """What running the first items in the caller taught us."""

    outcome: ChunkOutcome | None = None
    seconds_per_item: float | None = None
    cpu_ratio: float = 1.0
    item_bytes: int = 0
    result_bytes: int = 0
    fn_bytes: int = 0
    pickle_error: str = ""
    """Why pickle refuses the function itself."""
    cloudpickle_ok: bool | None = None
    """Whether cloudpickle can send the function (None: not tried)."""
    names_main: bool = False
    """The function's pickle by name names ``__main__``: a backend that cannot look it up there sends it by value."""
    fn_bytes_by_value: int | None = None
    """What cloudpickle sends the function in, for this call (``planning._fn_bytes``); None: not sized."""
    fn_checked: bool = False
    """The fields above describe this call's very function object (measured now, or on it before)."""
    unsendable: list[tuple[str, Any]] = field(default_factory=list)
    """This call's sampled items or results pickle refused: why, and the object (to try cloudpickle on it)."""
    payload_cloudpickle_ok: bool | None = None
    """Whether cloudpickle can send all of ``unsendable`` (None: not tried)."""
    result_error: str | None = None
    """Why the first probed result cannot be pickled; "" when it can, None when no result was checked."""
    threads_speedup: float | None = None
    verdicts: dict[str, tuple[Verdict, ...]] = field(default_factory=dict)
    """``Facts.verdicts``: what auto's calls of this and other sizes measured."""
    paces: dict[str, tuple[Pace, ...]] = field(default_factory=dict)
    """Wall seconds an item of auto's last threads and processes calls took (``Facts.paces``)."""
    forgone: dict[str, float] = field(default_factory=dict)
    thrown: dict[str, int] = field(default_factory=dict)
    """``Facts.thrown``: pools started for the function that an executor's shutdown closed after one call."""
    pickling: Pickling = NO_PICKLING
    known: bool = False
    """True when the cost came from an earlier call instead of running items now."""
    crashed: str | None = None
    """How the function crashed a worker process in an earlier call; None if it never did."""
    delegates: bool = False
    """The probed items' CPU ran mostly outside their thread (see :mod:`payoff._delegated_cpu`)."""
    cores: float = 1.0
    """CPUs the probed items kept busy at once, their native threads' (BLAS, OpenMP) and child processes'
    included: above one, worker threads share those libraries' threads (``threads_oversubscribe``)."""
    cores_read: bool = False
    """Whether this call's probe read ``cores`` (an uncrowded probe of ``CORES_MIN_SECONDS`` or more)."""
    decided: tuple[Reason, str] | None = None
    """Why a library that decides after its first item (``Call.decide_after_first``) keeps the rest here."""
    waited: bool | None = None
    """The side of the waiting line the function was last planned on (``Facts.waited``)."""
    gil_threads: float | None = None
    """Threads earlier runs of its waiting items kept busy, with headroom (``Facts.gil_threads``)."""
    factors: dict[str, float] = field(default_factory=dict)
    """Per local pool: how many times longer its items took than alone (``payoff._side_by_side``)."""
    gil_held: float | None = None
    """The share of their time the probed items held the GIL (``payoff._gil_share``); None: never read."""
    import_seconds: float = 0.0
    """What the modules the probed items imported afresh took to import: this process has them now, worker
    processes started before (or started without this process's modules) import them again."""
    imported_on: frozenset[str] = frozenset()
    """Process backends whose pool ran the function since (``Facts.imported_on``)."""
    imported_in: frozenset[int] = frozenset()
    """Worker processes that ran it since (``Facts.imported_in``)."""

    @property
    def refused(self) -> str:
        """All that pickle refused, each naming what it was (the function, an item, a result); "" if none."""
        if not self.unsendable:
            return self.pickle_error
        return "; ".join([self.pickle_error] * bool(self.pickle_error) + [why for why, _ in self.unsendable])

    @property
    def n(self) -> int:
        return 0 if self.outcome is None else self.outcome.n_done

    @property
    def failed(self) -> bool:
        return self.outcome is not None and self.outcome.error is not None


def waiting_line(workers: int) -> float:
    """The CPU share below which threads beat ``workers`` worker processes.

    The GIL lets threads run about one item's CPU at a time, so threads finish
    at most 1/share items in an item's time, processes ``workers``: items of
    1.6 ms CPU and 2 ms sleep (share 0.43) ran 3.1x a loop on
    ``ThreadPoolExecutor()`` and 2.4x on ``ProcessPoolExecutor(2)``; on 8 CPUs
    the same items gain more from 8 processes than from any number of threads.
    """
    return min(WAITING_CPU_RATIO, 1.0 / max(1, workers))


def probe_share(call: Call, workers: int) -> int:
    """The most items a probe runs: its share of a balanced schedule, so a small call still splits; one for a
    library that decides after its first item (``Call.decide_after_first``)."""
    if call.decide_after_first is not None:
        return 1
    share = len(call.items) // (CHUNKS_PER_WORKER * workers) or 1
    if is_stream(call.items):  # read before its first result: at most a chunk's bytes (``items_within_bytes``)
        return min(share, items_within_bytes(item_bytes_in_memory(call.items),
                                             call.config.task_size_hint_bytes) or share)
    return share


def probe_cost(call: Call, probe: Probe, workers: int, crowded: bool = False,
                others_since: Callable[[int], bool] | None = None, known_waiting: bool = False,
                sample_gil: bool = False) -> None:
    """Run the first items in the caller to learn what an item costs and how much of it is CPU.

    Little CPU per second of wall time means the items wait (I/O, sleep),
    unless other payoff calls of this process ran around it (``crowded``, or
    calls that came while it ran: ``others_since``) and the process's other
    threads kept a core busy meanwhile: then the probe's thread waited for the
    GIL they held (many threads sharing one executor), its items are CPU work,
    and what they cost alone is their CPU time. Without other payoff calls a
    busy thread of the program's own says nothing about these items, which may
    really wait (I/O beside a busy thread). Read so beside other calls, a CPU share is ambiguous: it does not
    overturn a function known to wait (``known_waiting``: a share read alone before, checked again every
    ``RESHARE_EVERY`` calls on threads). Each such check among a service's other requests turned sleeping
    items into CPU work of microseconds, planned serial, then moved to processes: 15% of a sleeping
    endpoint's calls at 5-10x the latency of threads (service trial). A function that turned CPU-bound is
    told by a reading alone, or by its threads run (``Planner.learn``'s ``not_waiting``).
    ``sample_gil``: the GIL is sampled meanwhile, for the share of it the items held (``payoff._gil_share``),
    over a longer budget (``GIL_PROBE_SECONDS``): a 2 ms probe holds two or three of the sampler's wake-ups.
    """
    share = probe_share(call, workers)
    with _gil_share.reading(sample_gil) as gil:  # first: the sampler's thread is the program's, not the items'
        # other calls' pools would count as the items'; under a timeout the items run on a thread of their own
        elsewhere = None if crowded or call.timeout is not None else _delegated_cpu.snapshot()
        starts = _own_pools.process_starts()
        busy = _delegated_cpu.thread_times()  # read next to the probe: the others' time is compared with its window
        start_ns, process_ns, clock_ns = time.monotonic_ns(), time.process_time_ns(), time.perf_counter_ns()
        with _Collections() as collections, gil.around():
            probe.outcome, per_item = bounded(call, max(1, min(PROBE_MAX_ITEMS, share)),
                                               max(1, min(PROBE_CHEAP_MAX_ITEMS, share)),
                                               GIL_PROBE_SECONDS if sample_gil else PROBE_BUDGET_SECONDS)
        outcome = probe.outcome
        import_ns, import_cpu_ns = outcome.imports_ns, outcome.imports_cpu_ns  # taken off both in the share
        if import_ns:  # made once, by the module: no item's cost or CPU share (a recalled one stays)
            probe.import_seconds = import_ns / 1e9
        process_ns = time.process_time_ns() - process_ns  # this thread's and the others': a core when GIL-bound
        clock_ns = time.perf_counter_ns() - clock_ns
    if gil.share is not None:
        probe.gil_held = gil.share
    crowded = crowded or (others_since is not None and others_since(start_ns))
    if outcome.n_done:
        wall = (_own_ns(outcome) - import_ns) / 1e9  # a wait for a CPU is not the items waiting, nor an import
        probe.seconds_per_item = max(per_item, 1e-9)
        probe.cpu_ratio = cpu_ratio_of(outcome, collections.ns + import_cpu_ns, import_ns)
        line = waiting_line(workers) * (1 + WAITING_BAND)
        elapsed = (outcome.end_ns - outcome.start_ns) / 1e9  # waits for a CPU included: the native threads' are
        # read (/proc) only where a reading is used; no payoff process pool started meanwhile: the processes
        # started then are the items'
        used = _delegated_cpu.since(elsewhere) \
            if elsewhere is not None and not crowded and _own_pools.none_started_since(starts) \
            and (elapsed >= CORES_MIN_SECONDS or probe.cpu_ratio < line) else None
        others_ns = None if used is None \
            else items_elsewhere_ns(used.ns - collections.ns, used.spun_ns, probe.cpu_ratio, line)
        if others_ns is not None and probe.cpu_ratio < line:
            others_ns = _confirmed(call, outcome, others_ns, workers)
            probe.cpu_ratio = cpu_ratio_of(outcome, collections.ns + import_cpu_ns, import_ns)
            wall, elapsed = (_own_ns(outcome) - import_ns) / 1e9, (outcome.end_ns - outcome.start_ns) / 1e9
        if others_ns is not None and elapsed >= CORES_MIN_SECONDS:
            probe.cores = min(cpu_capacity(), max(0.0, outcome.cpu_ns + others_ns) / 1e9 / elapsed)
            probe.cores_read = True
        if probe.cpu_ratio >= line:
            return
        if others_ns is not None:
            _count_delegated(probe, outcome.cpu_ns - import_cpu_ns, others_ns, wall, workers)
        elif crowded and not known_waiting \
                and _held_by_others(outcome, _others_busy(busy, outcome, here=call.timeout is None), process_ns,
                                    clock_ns):
            probe.cpu_ratio = 1.0
            probe.seconds_per_item = max((outcome.cpu_ns - import_cpu_ns) / outcome.n_done / 1e9, 1e-9)


def next_item_here(call: Call, outcome: ChunkOutcome) -> ChunkOutcome | None:
    """Run the call's item after the ``outcome.n_done`` run here already, added to ``outcome``: its own reading
    (garbage collections meanwhile taken off its CPU share by ``cpu_ratio_of``), or None where no item may run
    here unbounded (a ``timeout=``, a stream, none left, an item that raised)."""
    n = outcome.n_done
    if call.timeout is not None or not call.sized or outcome.error is not None or n >= len(call.items):
        return None
    on_interrupt = call.on_interrupt
    joined = None if on_interrupt is None else lambda cut: on_interrupt(_extend(outcome, cut))
    with _Collections() as collections:
        more = run_chunk(call.fn, call.items[n:n + 1], n, 0, on_interrupt=joined)
    _extend(outcome, more)
    more.cpu_ns = max(0, more.cpu_ns - collections.ns)
    return more if more.error is None and more.n_done else None


def own_seconds(outcome: ChunkOutcome) -> float:
    """The items' timed work less their waits for a CPU (``_own_ns``), in seconds."""
    return _own_ns(outcome) / 1e9


def items_elsewhere_ns(others_ns: int, spun_ns: int, cpu_ratio: float, line: float) -> int:
    """The CPU outside the items' thread that counts as theirs: for items that wait (a share under ``line``),
    not what native threads already running before them used (``_delegated_cpu.Elsewhere.spun_ns``); for items that
    compute, all of it (their BLAS work runs on the threads a product just before left spinning)."""
    return others_ns - spun_ns if cpu_ratio < line else others_ns


def cpu_ratio_of(outcome: ChunkOutcome, collecting_ns: int = 0, importing_ns: int = 0) -> float:
    """The items' CPU time per second of their own wall time (waits for a CPU taken off); 1.0 for a thread that
    never gave up its CPU, which cannot have waited: the time its clocks lack was the machine's (steal).
    ``collecting_ns``: CPU the thread spent collecting the program's garbage meanwhile (or importing), not the
    items' own; ``importing_ns``: wall time of imports the items made, taken off their time too."""
    wall = _own_ns(outcome) - importing_ns
    if wall <= 0 or outcome.blocked == 0:
        return 1.0
    return min(1.0, max(0.05, max(0, outcome.cpu_ns - collecting_ns) / wall))


class _Collections:
    """Garbage collections this thread runs while it is entered (``gc.callbacks``), in ns of ``clock``.

    A collection walks the whole program's heap, set off by whatever allocation
    crossed the threshold; its time is the heap's, not the items'. Counted by
    CPU (``time.thread_time_ns``, every generation): in the test suite a probe
    of one 2 ms sleep read 1.7-2.9 ms of CPU (a share of 0.8-1.0) whenever one
    fell there, and auto sent sleeping items to processes, whose heaps are the
    items' only. Counted by wall time (``full_only``: the young generations grow
    with what the items allocate and stay in): a full collection (6.8 ms of CPU in
    a test process, with no wait to show it) in the probe's first item spent the
    whole budget, and that one item stood for all. Collections another thread
    runs are not counted (a probe under a timeout runs on another thread).
    """

    def __init__(self, clock: Callable[[], int] = time.thread_time_ns, full_only: bool = False) -> None:
        self.ns = 0
        self._clock, self._full_only = clock, full_only
        self._thread = threading.get_ident()
        self._started: int | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._thread or (self._full_only and info.get("generation") != 2):
            return
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            self.ns += self._clock() - self._started
            self._started = None

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)


def _confirmed(call: Call, outcome: ChunkOutcome, others_ns: int, workers: int) -> int:
    """``others_ns``, the CPU read outside the items' thread, as a second reading around one more item confirms
    it, where it alone would make waiting items CPU work and an item costs little to run again here.

    A single reading can hold CPU that was no item's: a thread of the program's that ended meanwhile, whose last
    growth nothing subtracts, or a clock moved on by a scheduler's tick of 4 ms. Beside a product's spinning
    BLAS thread, on a loaded CI machine, 2 calls of 5 of 2 ms sleeps read 0.6 of a core elsewhere and went to
    processes. Items that delegate do so again; a stray burst seldom comes twice. The lower of the two rates
    counts, over both readings' wall time; the item run here is one of the call's, not run again.
    """
    wall_ns, line = _own_ns(outcome), waiting_line(workers)  # the line ``_count_delegated`` marks from
    if wall_ns <= 0 or (outcome.cpu_ns + others_ns) / wall_ns < line \
            or wall_ns / max(1, outcome.n_done) > CONFIRM_ITEM_SECONDS * 1e9:
        return others_ns
    before, starts = _delegated_cpu.snapshot(), _own_pools.process_starts()
    if before is None:
        return others_ns
    more = next_item_here(call, outcome)
    if more is None:
        return others_ns
    if not _own_pools.none_started_since(starts):
        return others_ns
    used = _delegated_cpu.since(before)
    again = items_elsewhere_ns(used.ns, used.spun_ns, 0.0, line)
    rate = min(others_ns / wall_ns, max(0, again) / max(1, _own_ns(more)))
    return int(rate * _own_ns(outcome))


def _count_delegated(probe: Probe, cpu_ns: int, elsewhere_ns: int, wall: float, workers: int) -> None:
    """Items that looked like waiting work but kept other processes or native threads computing meanwhile
    (``joblib.Parallel``, a scikit-learn ``n_jobs=-1`` model, BLAS threads) are CPU work: that CPU counts.

    They delegate from the line the planner decides by (``waiting_line``): marked only above its band, a share
    read between the two (children that waited for a CPU beside one busy program) went to processes unmarked,
    and that run's record, which sees only its own threads' CPU, taught a share of 0.01: every later call went
    to threads as waiting work (flaky-test hunt: 2 runs of 15 beside one busy loop)."""
    if elsewhere_ns <= 0 or wall <= 0:
        return
    probe.cpu_ratio = min(1.0, max(0.05, (cpu_ns + elsewhere_ns) / 1e9 / wall))
    probe.delegates = probe.cpu_ratio >= waiting_line(workers) and elsewhere_ns >= cpu_ns


def _held_by_others(outcome: ChunkOutcome, others: int | None, process_ns: int, clock_ns: int) -> bool:
    """Whether the probe's thread, while neither on a CPU nor waiting for one, could have been waiting for the
    GIL: the process's other threads ran or waited for a CPU (holding the GIL meanwhile) about as long
    (``others``, from ``_others_busy``).

    Their waits for a CPU count: on a loaded machine or under a CPU quota the process gets less than a core,
    and the old test (the process kept 0.8 of a core busy) read CPU-bound items probed beside other calls as
    waiting work, then ran them on 5-32 threads at 0.1x. Without schedstat only the others' CPU time counts.
    """
    blocked = clock_ns - outcome.cpu_ns - outcome.runq_ns
    if others is None:
        others = process_ns - outcome.cpu_ns
    return others >= GIL_BOUND_CORES * blocked


def _others_busy(before: dict[int, tuple[int, int]] | None, outcome: ChunkOutcome, here: bool) -> int | None:
    """How long the process's other threads held the GIL at most since ``before`` (``thread_times``): their
    CPU time and their waits for a CPU, each thread's wait up to ``GIL_WAIT_PER_CPU`` times its CPU time.

    A thread that holds the GIL on a process that gets a fifth of a core alternates running and waiting for
    it; one that woke from a sleep or a lock waits for a CPU without the GIL and has next to no CPU time to
    show (idle pool threads under two busy programs: 20-60x more wait than CPU), and summed whole their
    waits read a sleeping item's probe as a GIL wait. Each thread counts its own growth (a thread that
    ended meanwhile took its whole life's time out of a sum of all). The caller's thread is never another:
    beside the probe it read /proc for every thread (9 ms around a 2 ms probe on a loaded machine). A probe
    run on a thread of its own (under a timeout) is not in ``before``: its chunk's own time comes off.
    """
    now = _delegated_cpu.thread_times() if before is not None else None
    if before is None or now is None:
        return None
    python = {t.native_id for t in threading.enumerate() if t.native_id is not None}
    grown = _gil_holding_ns(before, now, threading.get_native_id(), python)
    return grown if here else grown - outcome.cpu_ns - min(outcome.runq_ns, GIL_WAIT_PER_CPU * outcome.cpu_ns)


def _gil_holding_ns(before: dict[int, tuple[int, int]], now: dict[int, tuple[int, int]], me: int,
                    python: Collection[int] | None = None) -> int:
    """The most the threads other than ``me`` can have held the GIL between two ``thread_times`` readings: of
    the ``python`` threads only, where given. A native thread never holds it: an OpenBLAS thread spinning on
    after a product of the program's own read as a GIL holder, and every 8th call of 2 ms sleeps (its share
    read again, right after the call before) went to processes at 13x the time of threads (trial 52)."""
    grown = 0
    for tid, (cpu, waited) in now.items():
        cpu0, waited0 = before.get(tid, (0, 0))
        if tid != me and (python is None or tid in python):
            grown += cpu - cpu0 + min(waited - waited0, GIL_WAIT_PER_CPU * (cpu - cpu0))
    return grown


def bounded(call: Call, limit: int, cheap_limit: int,
            budget_seconds: float = PROBE_BUDGET_SECONDS) -> tuple[ChunkOutcome, float]:
    """The probe, in the caller; under a timeout on a payoff thread the caller waits for no longer than it.

    An item that hangs there cannot be stopped (no thread can be), but the call raises on time and the
    thread, a daemon, never keeps the program from exiting.
    """
    if call.timeout is None:
        return _timed_prefix(call.fn, call.items, limit, cheap_limit, on_interrupt=call.on_interrupt,
                             budget_seconds=budget_seconds)
    box: list[tuple[ChunkOutcome, float]] = []
    errors: list[BaseException] = []
    context = contextvars.copy_context()
    given = _time_left(call)
    if given <= 0:  # reading the input spent it all: a thread started now would run an item past the deadline
        raise TimeoutError(f"payoff: the call did not finish within timeout={call.timeout:g} s (it ran out "
                           "before its first item started; no item ran)")
    deadline = CancelToken(time.monotonic() + given)

    finished = threading.Event()  # not Thread.join: one interrupted by Ctrl-C may mark a running thread ended

    reads = reads_for_a_probe(call.items)

    def probe() -> None:
        try:
            box.append(context.run(_timed_prefix, call.fn, call.items, limit, cheap_limit, deadline,
                                   budget_seconds=budget_seconds))
        except BaseException as exc:  # handed to the caller, whatever it is
            errors.append(exc)
        finally:
            finished.set()
            if reads is not None:
                reads.close()

    thread = threading.Thread(target=probe, name="payoff-probe", daemon=True)
    try:  # from the start on: Thread.start waits for the thread, which may be cut short there too
        started = _started(thread, reads is None)
        if started:
            if reads is not None:
                reads.serve(given)
            finished.wait(max(0.0, deadline.seconds_left() or 0.0))
    except BaseException:  # Ctrl-C in the caller: the items the probe thread ran still belong in the record
        _hand_over_cut_probe(call, finished, deadline, box)
        raise
    if not started:  # no thread left (ulimit -u): here, its items starting before the deadline; a Ctrl-C hands
        here = _timed_prefix(call.fn, call.items, limit, cheap_limit, deadline,  # them over, as in the caller
                             on_interrupt=call.on_interrupt, budget_seconds=budget_seconds)
        if deadline.expired():  # an item ran past it: the call's timeout holds, as on a thread (review 62)
            raise _outlived_elsewhere(
                f"payoff: the call did not finish within timeout={call.timeout:g} s (its first items, run to "
                "measure them, ran past it)",
                f"no thread could start (ulimit -u, a pids limit), so its first items ran in the caller, which "
                f"cannot stop one that runs past timeout={call.timeout:g} s", hung=False)
        return here
    if not finished.is_set():
        _outlived(call, left_running(thread.is_alive, call.timeout, given,
                                      "the item(s) this call ran to measure them still run"), thread.is_alive)
    if errors:
        raise errors[0]
    return box[0]


def _started(thread: threading.Thread, may_run_here: bool) -> bool:
    """``thread`` started; False where the OS refused it a thread (``ulimit -u``, a container's pids limit)
    and its work may run in the caller instead: under a timeout that raised "can't start new thread" where
    a loop, and the same map without one, ran (hunt 60)."""
    try:
        thread.start()
    except RuntimeError as exc:
        if not (may_run_here and thread_refused_error(exc)):
            raise
        return False
    return True


def _time_left(call: Call) -> float:
    """What is left of the call's timeout: it counts from the call, and reading a stream's first item (or a
    wait behind another call) may have spent most of it before the probe starts."""
    assert call.timeout is not None
    left = call.stop.seconds_left() if call.stop is not None else None
    return max(0.0, min(call.timeout, call.timeout if left is None else left))


def left_running(running: Callable[[], bool], timeout: float, given: float, what: str) -> tuple[bool, str | None]:
    """Items on a payoff thread (a probe, or a serial run under a timeout) still ran at their call's deadline,
    ``given`` seconds after they started: their thread is left (none can be stopped from outside) and counted
    among the stuck ones while ``running()``, and the caller is warned. Whether they had at least HUNG_SHARE of
    the timeout: their function is then taken for one that hangs, and runs only in worker processes. With it,
    the warning's text where the filters made it an error, for a note on the call's ``TimeoutError``."""
    with _STUCK_LOCK:
        _STUCK_PROBES.append(running)
    hung = given >= HUNG_SHARE * timeout
    then = (" Under auto (or a named process backend) this function's next calls run in worker processes, which "
            "payoff stops on a timeout; under strategy='threads' each call whose item hangs for good leaves one "
            "more such thread.") if hung else ""
    note = warn_before_raising(StuckThreadsWarning(
        f"payoff: {what} after its timeout: Python cannot stop a thread from outside. It finishes in the "
        f"background and never keeps the program from exiting.{then}"))
    return hung, note


def _outlived(call: Call, left: tuple[bool, str | None], running: Callable[[], bool]) -> NoReturn:
    """The call's deadline came while its probe's thread ran an item: raise the call's timeout."""
    hung, note = left
    error = ProbeOutlivedTimeout(
        f"payoff: the call did not finish within timeout={call.timeout:g} s (its first items, run to "
        "measure them, were still running)",
        detail=f"its first items, measured on a payoff thread, still ran after timeout={call.timeout:g} s",
        hung=hung, running=running)
    if note is not None:
        error.add_note(note)
    raise error


class ProbeOutlivedTimeout(TimeoutError):
    """A call's timeout struck while its probe thread still ran an item, which may hang for good."""

    def __init__(self, message: str, detail: str, *, hung: bool, running: Callable[[], bool]) -> None:
        super().__init__(message)
        self.detail = detail
        self.hung = hung
        """Whether the item had most of the timeout (it may hang for good), not just what was left of it."""
        self.running = running
        """Whether the item still runs (its thread is alive)."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Raised in a task of the user's own process pool, it travels as the ``TimeoutError`` it is; its item
        runs in that process, so in another one it reads as no longer running."""
        return (_outlived_elsewhere, (str(self), self.detail, self.hung))


def _outlived_elsewhere(message: str, detail: str, hung: bool) -> ProbeOutlivedTimeout:
    return ProbeOutlivedTimeout(message, detail, hung=hung, running=_not_here)


def _not_here() -> bool:
    return False


def stuck_probes(call: Call) -> str | None:
    """Why a call with a timeout may not probe on a thread: too many earlier probes still hang; None if it may."""
    if call.timeout is None:
        return None
    with _STUCK_LOCK:
        _STUCK_PROBES[:] = [running for running in _STUCK_PROBES if running()]
        stuck = len(_STUCK_PROBES)
    if stuck < STUCK_PROBES_LIMIT:
        return None
    return f"{stuck} probe threads of earlier calls still run past their timeouts"


def _hand_over_cut_probe(call: Call, finished: threading.Event, deadline: CancelToken,
                         box: list[tuple[ChunkOutcome, float]]) -> None:
    """Ctrl-C reached the caller, not the probe's thread: stop that thread at its next timing block (no item
    starts after) and hand ``on_interrupt`` the items it ran, as a probe cut in the caller does. An item that
    does not end within the grace cannot be waited for: its probe's items are then not counted."""
    deadline.set()
    finished.wait(PROBE_STOP_GRACE_SECONDS)
    if box and call.on_interrupt is not None:
        call.on_interrupt(box[0][0])


def _timed_prefix(fn: Callable[[Any], Any], items: Sequence[Any], limit: int, cheap_limit: int,
                  deadline: CancelToken | None = None,
                  on_interrupt: Callable[[ChunkOutcome], object] | None = None,
                  budget_seconds: float = PROBE_BUDGET_SECONDS) -> tuple[ChunkOutcome, float]:
    """Run doubling steps of items until the budget is spent: a single chunk of real work, and seconds per item.

    The cost per item is the lower of the whole probe's mean and its last
    (largest) step's: the few hundred ns of timing each block costs only ever
    inflate a mean, most of all the first steps' blocks of one or two items; waits for a CPU are taken off
    both (see ``_own_ns``). The budget is soft (a step stops at the first timing block past it) and counts
    the items' own time, not the wall clock: a garbage collection between steps (5 ms of CPU in a test
    process) or a wait for a CPU while other programs kept the cores busy spent a wall-clock budget after
    one or two items, whose cold cost (2-4 us) then stood for items of 65 ns. The steps double, so the
    probe's wall time is the items' plus a dozen steps' bookkeeping. A call's ``deadline`` is hard (no item
    starts after it). Ctrl-C hands ``on_interrupt`` the steps that ran, the one it cut included.
    A first item that imported modules afresh (``import sklearn`` in a worker function's body, the usual
    advice for process pools) paid them: the probe's budget starts after it, and what it took over the items
    after it is the modules' one-time cost, not an item's (``ChunkOutcome.imports_ns``): its
    1 s stood for items of 0.7 ms (hunt 59). Read so, not by timing each ``import`` statement: a wrapper of
    ``builtins.__import__`` made each lookup of a loaded module in an item dearer than the item (review).
    """
    budget_ns = int(budget_seconds * 1e9)
    with _Collections(time.perf_counter_ns, full_only=True) as collected:
        modules = len(sys.modules)
        outcome = run_chunk(fn, items[:1], 0, 0, on_interrupt=on_interrupt)
        imported = len(sys.modules) > modules  # afresh
        first_ns, first_cpu_ns = (_items_ns(outcome, collected.ns), outcome.cpu_ns) if imported else (0, 0)

        def aside() -> int:  # collections, and a first item that imported: the budget starts after it
            return collected.ns + first_ns

        joined = None if on_interrupt is None else lambda cut: on_interrupt(_extend(outcome, cut))
        taken, steps = 1, [] if first_ns else [(_items_ns(outcome, collected.ns), 1)]
        while outcome.error is None and (spent_ns := _items_ns(outcome, aside())) < budget_ns:
            cap = cheap_limit if _typical_ns(spent_ns, taken, steps[-2:]) * taken < PROBE_CHEAP_SECONDS * 1e9 \
                else limit
            if taken >= cap:
                break
            left_ns, before_ns = budget_ns - spent_ns, collected.ns  # a step of items that turn dear stops too
            more = run_chunk(fn, items[taken:taken + min(taken, cap - taken)], taken, 0, deadline, left_ns,
                             on_interrupt=joined)
            if not more.n_done and more.error is None:  # the call's deadline came: no item started
                break
            if more.error is None and more.n_done:
                steps.append((_items_ns(more, collected.ns - before_ns), more.n_done))
            _extend(outcome, more)
            taken += more.n_done
    if not steps:  # the first item alone: what it imported stays in its cost, nothing to tell it apart by
        return outcome, _items_ns(outcome, collected.ns) / outcome.n_done / 1e9 if outcome.n_done else 0.0
    later = later_half(steps)
    outcome.imports_ns = max(0, first_ns - later[0] // later[1])
    if first_cpu_ns:
        later_cpu_ns = (outcome.cpu_ns - first_cpu_ns) // max(1, outcome.n_done - 1)
        outcome.imports_cpu_ns = min(outcome.imports_ns, max(0, first_cpu_ns - later_cpu_ns))
    own_ns = _items_ns(outcome, collected.ns + outcome.imports_ns)
    return outcome, _typical_ns(own_ns, outcome.n_done, [later]) / 1e9


def _items_ns(outcome: ChunkOutcome, collected_ns: int) -> int:
    """The probed items' own time: their timed work less the waits for a CPU and the garbage collections in it
    (at least 1 ns an item)."""
    return max(outcome.n_done, _own_ns(outcome) - collected_ns)


def later_half(steps: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The last steps that hold at least half of the probe's items, as one: its last step, when the steps
    double; a stream's probe runs one item a step (each read just before it runs)."""
    half, ns, n = sum(n for _, n in steps) / 2, 0, 0
    for step_ns, step_n in reversed(steps):
        ns, n = ns + step_ns, n + step_n
        if n >= half:
            break
    return ns, max(1, n)


def _typical_ns(own_ns: int, n: int, steps: Sequence[tuple[int, int]]) -> float:
    """Nanoseconds an item: the lowest of the probe's mean (``own_ns`` over its ``n`` items) and of the given
    steps' (own ns, items) means.

    Timing only ever adds: a cold first item, a step's bookkeeping, a stall inside one step (a garbage
    collection, the hypervisor taking the CPU: neither shows as a wait) inflate the mean, and a stall inflates
    the step it falls in. Whether the items are cheap enough to go on probing asks the last two steps, so that a
    stall in either leaves the other to answer; the cost the call is planned at asks only the later half of the
    items (a smaller share, alone, would read the cheap side of items of uneven cost).
    """
    return min([own_ns / max(1, n), *(step_ns / step_n for step_ns, step_n in steps)])


def _extend(outcome: ChunkOutcome, more: ChunkOutcome) -> ChunkOutcome:
    """``outcome`` with the probe's next step ``more`` added: one chunk of the call's first items."""
    outcome.results.extend(more.results)
    outcome.durations_ns.extend(more.durations_ns)
    outcome.block_sizes.extend(more.block_sizes)
    outcome.cpu_ns += more.cpu_ns
    outcome.runq_ns += more.runq_ns
    outcome.blocked = None if outcome.blocked is None or more.blocked is None else outcome.blocked + more.blocked
    outcome.end_ns = more.end_ns
    outcome.error, outcome.error_index = more.error, more.error_index
    return outcome


def _own_ns(outcome: ChunkOutcome) -> int:
    """The items' timed work less the waits for a CPU in it: a stall of the machine during a short probe is not
    what its items cost.

    The chunk's waits and CPU time span the whole chunk, the timed blocks and what runs around them, so a
    wait outside the blocks can take off too much: the CPU time is the floor, but only up to the timed
    work. Beyond that it is the chunk's own set-up (150 us for a thread's first chunk), which made one
    probed item of 65 ns cost 164 us.
    """
    timed = sum(outcome.durations_ns)
    return max(timed - outcome.runq_ns, min(outcome.cpu_ns, timed))


def forget_stuck_probes() -> None:
    """Stuck probes still run, but no longer hold the next calls off threads (``Planner.reset``)."""
    with _STUCK_LOCK:
        _STUCK_PROBES.clear()
