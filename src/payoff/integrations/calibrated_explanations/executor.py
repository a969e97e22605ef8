"""``CEParallelExecutor``: a payoff executor with the surface calibrated-explanations 1.0.2 uses."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from payoff import _forks, planning
from payoff._library import LibraryCall
from payoff.config import ParallelConfig
from payoff.executor import ParallelExecutor
from payoff.integrations.calibrated_explanations import gcpause, merge
from payoff.integrations.calibrated_explanations.chunking import CostFit, ce_chunk_sizes
from payoff.integrations.calibrated_explanations.surface import CEConfig, CEMetrics
from payoff.integrations.calibrated_explanations.tasks import (
    Task,
    as_tasks,
    explain_kind,
    group_tasks,
    merge_tasks,
    shared_explainer,
)
from payoff.integrations.calibrated_explanations.worker import decode_results, run_ce_tasks, timing_tasks_here
from payoff.observers import CallSite, Observer, find_call_site, skip_frames_from
from payoff.reasons import Reason
from payoff.record import RERUN_BY_LIBRARY, RUN_INLINE, ChunkStats, MapRecord
from payoff.strategies import CROSSES_PROCESSES

if TYPE_CHECKING:
    from payoff.report import Report

FACTUAL_PLUGIN = "core.explanation.factual.instance_parallel"
ALTERNATIVE_PLUGIN = "core.explanation.alternative.instance_parallel"
WORKLOAD = "calibrated-explanations"
MIN_PARALLEL_SECONDS = 0.25
"""Below this much estimated work an explain runs in one task in the caller (once its cost is known)."""
PROBE_INSTANCES = 16
"""At most this many instances of an explain whose cost is not known yet run first in the caller, to measure it."""
COLD_POOL_SECONDS = 0.4
"""What worker processes started for an explain cost it beyond its work split over them and the pool's own
start, before this executor measured it: here a first explain of 300 instances x 10 features (~0.85 s of
work) sent to a new pool took 0.88-0.92 s against CE alone's 0.85 s, and 0.55 s once the pool was warm."""


_CE_STRATEGY_NAMES = {"serial": "sequential"}


@dataclass
class _Session:
    latest: dict[int, int]
    """id(explainer) -> id(its latest_explanation) when the session opened."""
    started_ns: int = field(default_factory=time.monotonic_ns)
    started_at: float = field(default_factory=time.time)
    mapped: bool = False
    failed: BaseException | None = None
    gc_paused: bool = False
    """This explain paused the collector (at its first ``map``); ``__exit__`` resumes it."""
    produced: Any = None
    """An explanation this explain's ``map`` returned: CE's merge points it to the collection it joins it into,
    which is this explain's, where the explainer's ``latest_explanation`` may already be another thread's."""


def _user_site() -> CallSite:
    """The user's explain line: CE's own frames are registered as library code (``_register_ce_frames``)."""
    _register_ce_frames()
    return find_call_site()


_ce_frames_registered = False


def _register_ce_frames() -> None:
    """Maps CE makes for its user warn at the user's line, not inside calibrated_explanations."""
    global _ce_frames_registered
    if _ce_frames_registered:
        return
    path = getattr(sys.modules.get("calibrated_explanations"), "__file__", None)
    if path:
        skip_frames_from(os.path.dirname(os.path.abspath(path)) + os.sep)
        _ce_frames_registered = True


def _carried(config: ParallelConfig, workload: str, pause_gc: bool, switched: str | None) -> CEParallelExecutor:
    """A pickled executor, unpickled (saved explainers name this function: keep its name): the strategy
    ``enable`` switched to for its explainer (joblib for one pickle cannot send) is kept."""
    executor = CEParallelExecutor(config, workload=workload, pause_gc=pause_gc)
    if switched is not None:
        executor.use_strategy(switched)
    return executor


def warn_user(reason: Reason, text: str) -> None:
    from payoff.telemetry import FALLBACK_WARNINGS

    FALLBACK_WARNINGS.emit(_user_site(), reason, text, None)


def _resolve_strategy(config: ParallelConfig) -> str:
    """A concrete payoff strategy name: ``auto`` becomes worker processes (CPU-bound, picklable work)."""
    if not isinstance(config.strategy, str):
        return "custom"
    if config.strategy != "auto":
        return config.strategy
    return "processes" if planning.available_workers(config) >= 2 else "serial"


class CEParallelExecutor:
    """A payoff :class:`~payoff.ParallelExecutor` with the surface calibrated-explanations 1.0.2 uses.

    Pass it as ``perf_parallel=`` or, simpler, let :func:`enable` wire it in.
    ``records`` / ``last_record`` hold one :class:`~payoff.MapRecord` per
    explain that reached ``map``; every payoff telemetry observer sees them.

    ``pause_gc`` (default on): the caller's garbage collector is paused from an
    explain's first ``map`` until CE leaves the executor, i.e. across the map
    and CE's merge of the chunk results, and restored in every case (an
    exception, ``KeyboardInterrupt``, CE's serial retry). Those collections
    scan the caller's whole heap while both workers need the cores and find
    nothing to free (see ``gcpause``). ``pause_gc=False`` leaves the caller's
    collector alone.
    """

    def __init__(
        self,
        config: ParallelConfig | None = None,
        *,
        workload: str = WORKLOAD,
        observers: Sequence[Observer] | None = None,
        pause_gc: bool = True,
    ) -> None:
        user = config if config is not None else ParallelConfig.from_env()
        if not isinstance(user, ParallelConfig):
            raise TypeError(f"config must be a payoff ParallelConfig or None, got {type(user).__name__}")
        self.user_config = user
        """The configuration as given: its instance-level knobs are applied here, in instances."""
        self.workload = workload
        self.pause_gc = pause_gc
        """Pause the caller's garbage collector across each explain's map and merge (see the class doc)."""
        strategy = _resolve_strategy(user) if isinstance(user.strategy, str) else user.strategy
        inner = user.with_changes(strategy=strategy, min_batch_size=None, min_instances_for_parallel=None,
                                  tiny_workload_threshold=None, instance_chunk_size=None)
        self.executor = ParallelExecutor(inner, observers=observers)
        """The payoff executor that runs CE's tasks (its items are chunks of instances)."""
        self.metrics = CEMetrics(max_workers=self._workers())
        self._lock = _forks.Lock(reentrant=True)
        self._sessions: dict[int, _Session] = {}
        """Each thread's explain under way, by ``threading.get_ident()``: two threads explaining through one
        enabled wrapper at once shared one, and the second to end found it gone and left its merge unrepaired
        (its probabilities 642 rows for 60 instances: the CE trial)."""
        self._retrying: set[int] = set()
        """Threads whose explain CE is re-running serially after payoff's map failed (``_ce_retries``)."""
        self._explainers: list[weakref.ReferenceType[Any]] = []
        self._costs: OrderedDict[tuple[int, tuple[str, ...]], CostFit] = OrderedDict()
        self._ce_config: tuple[ParallelConfig, ParallelConfig, CEConfig] | None = None
        self._cold_start: float | None = None
        """What a start of the workers cost explains beyond their work, once one was measured."""
        self._forgone = 0.0
        """What explains kept in the caller because the workers were not running would have saved on them."""
        self.last_chunk_sizes: list[int] = []
        """Instances per task in the last explain that reached ``map``."""
        self.last_decision = ""
        """How the last explain that reached ``map`` was split, in instances."""
        self._switched: str | None = None
        """The strategy :meth:`use_strategy` switched to, if any: it goes with a pickled copy."""
        self._unsendable: dict[int, tuple[weakref.ReferenceType[Any], str]] = {}
        """Per explainer (by id, while it lives): why no worker process can take it; its explains run here."""

    # -- what CE reads ------------------------------------------------------------

    @property
    def payoff_config(self) -> ParallelConfig:
        """The configuration of the inner executor (strategy resolved, instance knobs handled here)."""
        return self.executor.config

    @property
    def strategy(self) -> str:
        """The concrete payoff strategy that runs CE's tasks (never ``auto``): ``serial`` while disabled."""
        config = self.payoff_config
        return config.strategy_name if config.enabled else "serial"

    @property
    def active_strategy_name(self) -> str:
        return self.config.strategy

    @property
    def config(self) -> CEConfig:
        """CE's view, rebuilt only when a configuration changed: CE reads it once per instance."""
        user, inner = self.user_config, self.executor.config
        cached = self._ce_config
        if cached is None or cached[0] is not user or cached[1] is not inner:
            name = inner.strategy_name
            cached = self._ce_config = (user, inner, CEConfig(
                enabled=True, strategy=_CE_STRATEGY_NAMES.get(name, name), max_workers=user.max_workers,
                feature_chunk_size=user.feature_chunk_size, tiny_workload_threshold=user.tiny_workload_threshold,
                task_size_hint_bytes=user.task_size_hint_bytes, force_serial_on_failure=user.force_serial_on_failure,
            ))
        return cached[2]

    @property
    def records(self) -> Sequence[MapRecord]:
        return self.executor.records

    @property
    def last_record(self) -> MapRecord | None:
        return self.executor.last_record

    def report(self, title: str = "payoff report", *, last: int | None = None) -> Report:
        """The explains' records as a report: HTML with a timeline in a notebook, a table in a terminal;
        ``last``: only the last so many explains."""
        return self.executor.report(title, last=last)

    def calibrate_kwargs(self) -> dict[str, Any]:
        """Keywords for ``wrapper.calibrate(x, y, **ex.calibrate_kwargs())`` (or ``CalibratedExplainer``)."""
        return {"perf_parallel": self, "factual_plugin": FACTUAL_PLUGIN, "alternative_plugin": ALTERNATIVE_PLUGIN}

    def use_strategy(self, name: str) -> None:
        """Switch the concrete strategy (``enable`` does when the explainer cannot be pickled)."""
        config = self.executor.config
        self.executor.config = config.with_changes(strategy=name, address=config.address if name == "dask" else None)
        self._switched = name

    # -- lifetime -----------------------------------------------------------------

    def __reduce__(self) -> tuple[Callable[..., CEParallelExecutor], tuple[ParallelConfig, str, bool, str | None]]:
        """Pickled (a saved ``WrapCalibratedExplainer`` keeps its executor, as CE's own pickles without its
        pool), a fresh executor of the same settings: no pool, records or learned costs. The strategy ``enable``
        switched to goes with it; one resolved from ``auto`` is resolved again on the machine that loads it."""
        return _carried, (self.user_config, self.workload, self.pause_gc, self._switched)

    def __copy__(self) -> CEParallelExecutor:
        """Itself, as :class:`~payoff.ParallelExecutor` is: a copied explainer shares the warm pool."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> CEParallelExecutor:
        return self

    def __enter__(self) -> CEParallelExecutor:
        """Idempotent: CE enters three times per explain and leaves twice."""
        with self._lock:
            if threading.get_ident() not in self._sessions:
                self._sessions[threading.get_ident()] = _Session(self._latest_ids())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Never closes the pool (CE's inner exit comes before its outer one); reports what CE hides."""
        with self._lock:
            session = self._sessions.pop(threading.get_ident(), None)
            retrying = threading.get_ident() in self._retrying
            self._retrying.discard(threading.get_ident())
        if session is None:
            return
        if session.gc_paused:
            gcpause.resume()
        if session.mapped and exc_type is None:
            self._repair_merged(session)
        if session.mapped and exc_type is not None and issubclass(exc_type, Exception):
            self._ce_retries(session, exc)
        elif not session.mapped and exc_type is None and not retrying:
            self._not_called(session)
        elif not session.mapped and exc_type is None:
            self._retried(session)

    def close(self) -> None:
        """Stop the worker pool (it restarts on the next explain): the executor stays open, as CE's
        explainer keeps it and has no way to enter it again."""
        self.executor.close()
        self.executor._reopen()

    shutdown = close

    def cancel(self) -> None:
        """Stop running maps now (CE calls this only on its cancel path)."""
        self.executor.cancel()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.executor.submit(fn, *args, **kwargs)

    # -- map ----------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, work_items: int | None = None,
            workers: int | None = None, chunksize: int | None = None) -> list[Any]:
        """CE's ``map``: ``[fn(x) for x in items]``; CE's instance tasks are regrouped as described above.

        ``workers`` and ``work_items`` are ignored (payoff's ``max_workers``
        decides, and the tasks say how many instances they hold); ``chunksize``
        applies to maps that are not CE instance tasks.
        """
        _register_ce_frames()
        seq = list(items)
        before = self.executor.last_record
        with self._lock:
            session = self._sessions.get(threading.get_ident())
            if session is not None:
                session.mapped = True
            self.metrics.maps += 1
            self.metrics.submitted += len(seq)
        held = self._pause_gc(session)
        try:
            tasks = as_tasks(seq)
            if tasks is None:
                out = self.executor.map(fn, seq, chunksize=chunksize, workload=self.workload)
            else:
                out = self._map_tasks(fn, tasks)
                if session is not None:
                    session.produced = _first_explanation(out)
        except BaseException as exc:
            with self._lock:
                self.metrics.failures += 1
                if session is not None:
                    session.failed = exc
            self._resume_gc(session, held)
            raise
        finally:
            if self.executor.last_record is not before:
                self._note(self.executor.last_record)
        if session is None:
            self._resume_gc(session, held)
        with self._lock:
            self.metrics.completed += len(seq)
        return out

    def _pause_gc(self, session: _Session | None) -> bool:
        """Pause the caller's collector for this map (and, in an explain, until CE leaves the executor)."""
        if not self.pause_gc:
            return False
        if session is not None:
            with self._lock:
                if session.gc_paused:
                    return False  # a second map in one explain: already paused
                session.gc_paused = True
        gcpause.pause()
        return True

    def _resume_gc(self, session: _Session | None, held: bool) -> None:
        """Undo this map's pause now: it failed (CE's merge will not run), or it was not in an explain."""
        if not held:
            return
        if session is not None:
            with self._lock:
                if not session.gc_paused:
                    return
                session.gc_paused = False
        gcpause.resume()

    def _map_tasks(self, fn: Callable[[Any], Any], tasks: list[Task]) -> list[Any]:
        explainer = shared_explainer(tasks)
        n = sum(b - a for a, b, _ in tasks)
        fit = self._fit(explainer, tasks)
        sizes, why, reason, probing = self._plan(n, fit, self.unsendable(explainer),
                                                 explain_kind(explainer, tasks)[1] == "per-instance")
        groups = group_tasks(tasks, sizes)
        items = [[m] if (m := merge_tasks(g)) is not None else g for g in groups]
        if probing > 1:  # the first item's tasks, each timed alone (``_in_two``)
            items[:probing] = [[task for item in items[:probing] for task in item]]
        if explainer is not None:  # after merging: one state to copy per chunk, not one per instance
            items = [[_without_explainer(t) for t in item] for item in items]
        decide = self._decider(n, items) if probing and len(items) > 1 else None
        self.last_chunk_sizes, self.last_decision = sizes, why
        task_fn = functools.partial(run_ce_tasks, fn, explainer, os.getpid())
        out: list[Any] = []
        options = {"chunksize": 1, "granularity": "instance", "workload": self.workload}
        alone = (reason, why) if len(items) < 2 else None  # the executor would only see "1 item"
        with timing_tasks_here() as timed:
            library = LibraryCall(alone, decide, functools.partial(self._serial_price, fit, items, timed),
                                  functools.partial(_said, n, items, sum(len(item) for item in items)),
                                  self._asked())
            for block in self.executor._stream(task_fn, (items,), options, library=library):
                out.extend(decode_results(block))
        self._learn(fit, self.executor.last_record, items, timed)
        return out

    def _asked(self) -> str | None:
        """``auto`` where the user left the backend to payoff: this executor runs the one it chose for it (never
        ``auto``: ``_resolve_strategy``)."""
        user = self.user_config.strategy
        return "auto" if isinstance(user, str) and user == "auto" else None

    def unsendable(self, explainer: Any) -> str:
        """Why no worker process can take ``explainer`` ("" while one can, or unknown); CE 1.0.2's tasks carry
        it in an ``ExplainerHandle`` (its ``_explainer``)."""
        explainer = getattr(explainer, "_explainer", explainer)
        kept = self._unsendable.get(id(explainer))
        return kept[1] if kept is not None and kept[0]() is explainer else ""

    def mark_unsendable(self, explainer: Any, why: str) -> None:
        """``enable``'s finding for ``explainer``: ``why`` it cannot be sent, or "" for one that can."""
        self._unsendable = {k: v for k, v in self._unsendable.items() if v[0]() is not None and k != id(explainer)}
        if why:
            with contextlib.suppress(TypeError):  # an explainer that takes no weak reference is checked each enable
                self._unsendable[id(explainer)] = (weakref.ref(explainer), why)

    def _plan(self, n: int, fit: CostFit, unsendable: str = "", per_instance: bool = False,
              ) -> tuple[list[int], str, Reason, int]:
        """Instances per task, and why, in instance units; the reason is the record's, should it run here; and
        how many of the first tasks make the first item, which measures the cost in the caller before the rest
        is sent (``_decider``; 0: none does).

        ``per_instance``: one threshold per instance (probabilistic regression given a list), whose tasks CE
        1.0.2 cannot run beside each other on one explainer: on threads 1-12 of 12 explanations differed from
        a serial explain's, from run to run (CE trial 44, F2)."""
        user = self.user_config
        workers = self._workers()
        spi, spt = fit.estimate()
        work = None if spi is None else spi * n + (spt or 0.0)
        floor = max(user.min_batch_size or 0, user.min_instances_for_parallel or 0)
        serial_why = ""
        if workers <= 1 and user.enabled and self.executor.config.strategy != "serial":  # not tiny: one worker
            one = planning.one_worker_said(self.executor.config, workers)
            return [max(1, n)], f"{n} instances in one task: {one}", Reason.SINGLE_WORKER, 0
        if workers <= 1 or not user.enabled:
            serial_why = "no parallel workers"
        elif n < max(2, floor):
            serial_why = f"{n} instances is below the minimum of {max(2, floor)} for parallel"
        if serial_why:
            return [max(1, n)], f"{n} instances in one task: {serial_why}", Reason.TINY_WORKLOAD, 0
        if user.granularity == "feature":  # the executor runs CE's instance tasks here: say so, as one task
            return [n], (f"{n} instances in one task: granularity='feature' allows no split by instance, the "
                         "only one calibrated-explanations makes"), Reason.GRANULARITY_MISMATCH, 0
        if unsendable and self.strategy in CROSSES_PROCESSES:
            return [n], f"{n} instances in one task here: {unsendable}", Reason.UNPICKLABLE, 0
        if per_instance and self.strategy == "threads":
            return [n], (f"{n} instances in one task here: calibrated-explanations' tasks with one threshold per "
                         f"instance share one explainer and give wrong results beside each other on threads"), \
                Reason.THREAD_UNSAFE, 0
        if work is not None and (kept := self._kept_here(work, workers)) is not None:
            return [n], f"{n} instances in one task: ~{work:.3f} s of estimated work {kept[1]}", kept[0], 0
        # measured first only where it decides something: tasks of the user's size, or parallel forced, do not;
        # but named threads, forced or not, time their first task alone: their pool's CPU prices CE at up to twice
        # its time alone, and a forced explain measured 0.53x recorded 1.6-1.7x (hunt 57, F1)
        forced = user.tiny_workload_threshold == 0
        measured_alone = self.strategy == "threads" and n - _probe_size(n, workers) >= 2
        if spi is None and not user.instance_chunk_size and (not forced or measured_alone):
            if n - _probe_size(n, workers) < 2:  # the rest could not be split: measuring first only costs a task
                return [n], f"{n} instances in one task: too few to measure some first and split the rest", \
                    Reason.TOO_FEW_ITEMS, 0
            sizes, why = self._probe_split(n, workers)
            first = _in_two(sizes[0]) if self.strategy == "threads" else [sizes[0]]
            return [*first, *sizes[1:]], why, Reason.TINY_WORKLOAD, len(first)
        sizes = ce_chunk_sizes(n, workers, chunk_size=user.instance_chunk_size, seconds_per_instance=spi,
                               seconds_per_task=spt)
        source = "instance_chunk_size" if user.instance_chunk_size else (
            "guided, floor from the measured fixed cost" if spt is not None else "guided")
        return (sizes, f"{n} instances in {len(sizes)} tasks of {_shown(sizes)} ({source}) on {workers} workers",
                Reason.TINY_WORKLOAD, 0)

    @staticmethod
    def _probe_split(n: int, workers: int) -> tuple[list[int], str]:
        """An explain of unknown cost: a first task that measures it in the caller, then guided tasks (which,
        should the first show the rest is too little work to send, run there as one: see ``_decider``)."""
        k = _probe_size(n, workers)
        rest = ce_chunk_sizes(n - k, workers)
        return [k, *rest], (f"{n} instances: the first {k} in your process to measure their cost, then "
                            f"{len(rest)} tasks of {_shown(rest)} on {workers} workers")

    def _start_to_pay(self, work: float, workers: int) -> str:
        """Why ``work`` stays in the caller, under auto, when the worker processes are not running yet ("" when
        it goes to them): they start once the explains kept here have forgone as much as their start costs,
        as the core's ``pool_start_cost`` does."""
        strategy = self.strategy
        if self.user_config.strategy != "auto" or strategy not in CROSSES_PROCESSES \
                or strategy in self.executor._pools.warm() or self.user_config.tiny_workload_threshold == 0:
            return ""
        saving, start = work * (1 - 1 / workers), self._start_price()
        with self._lock:
            if saving + self._forgone >= start:
                self._forgone = 0.0
                return ""
            self._forgone += saving
        return f"would save ~{saving:.3f} s on {workers} workers, less than starting them (~{start:.2f} s)"

    def _start_price(self) -> float:
        """What starting the workers costs an explain beyond their work: measured, or before that the prior
        for CE plus the core's price of the pool's own start (a fork of ms, fresh interpreters under spawn)."""
        if self._cold_start is not None:
            return self._cold_start
        config = self.executor.config
        pool = self.executor._planner.costs.get(self.strategy, config.start_method, self._workers())
        return COLD_POOL_SECONDS + pool.start

    def _decider(self, n: int, items: list[list[Task]]) -> planning.Decide:
        """What decides, once the first task ran in the caller, where the rest goes: when it stays there,
        ``items`` past the first become one task (the others empty), as an explain planned serial runs."""
        first = sum(b - a for a, b, _ in items[0])

        def decide(seconds: float) -> tuple[Reason, str] | None:
            why = self._after_first(first, n - first, seconds)
            if why is not None:
                gathered = _gather(items[1:])
                where = "in one task" if gathered else f"in its {len(items) - 1} tasks"
                self.last_decision = f"{n} instances: the first {first} in your process, then the rest {where} " \
                                     f"there: {why[1]}"
                if gathered:
                    self.last_chunk_sizes = [first, n - first]
            return why
        return decide

    def _after_first(self, k: int, rest: int, seconds: float) -> tuple[Reason, str] | None:
        """The first ``k`` instances took ``seconds`` (an upper bound per instance: CE's fixed cost is in it)."""
        work = seconds / k * rest
        kept = self._kept_here(work, self._workers())
        if kept is None:
            return None
        return kept[0], f"the first {k} instances took {seconds:.3f} s; the other {rest}, ~{work:.3f} s of work, " \
                        f"{kept[1]}"

    def _kept_here(self, work: float, workers: int) -> tuple[Reason, str] | None:
        """Why ``work`` seconds of instances run in the caller, or None when they go to the workers: below the
        user's ``tiny_workload_threshold`` (0: never) or, without one, ``MIN_PARALLEL_SECONDS``; or, under auto,
        workers not running yet whose start the saving would not pay (``_start_to_pay``)."""
        threshold = self.user_config.tiny_workload_threshold
        if threshold is None and work < MIN_PARALLEL_SECONDS:
            return Reason.TINY_WORKLOAD, f"is below {MIN_PARALLEL_SECONDS} s"
        if threshold is not None and work < threshold:
            return Reason.TINY_WORKLOAD, f"is below tiny_workload_threshold ({threshold:g} s)"
        start = self._start_to_pay(work, workers)
        return (Reason.POOL_START_COST, start) if start else None

    def _workers(self) -> int:
        if not self.user_config.enabled or self.executor.config.strategy == "serial":
            return 1
        return planning.available_workers(self.executor.config)

    # -- learning -------------------------------------------------------------------

    def _fit(self, explainer: Any, tasks: list[Task]) -> CostFit:
        """The cost learned for this explainer's explains of this kind (see ``explain_kind``)."""
        key = (id(explainer), explain_kind(explainer, tasks))
        with self._lock:
            fit = self._costs.get(key)
            if fit is None:
                fit = self._costs[key] = CostFit()
                while len(self._costs) > 16:
                    self._costs.popitem(last=False)
            self._costs.move_to_end(key)
            return fit

    def _learn(self, fit: CostFit, record: MapRecord | None, items: list[list[Task]],
               timed: Sequence[tuple[int, float]] = ()) -> None:
        if record is None or record.n_errors:
            return
        for point in _points(record.chunks, items, timed):
            fit.observe(*point)
        if record.pool_started and record.selected_strategy in CROSSES_PROCESSES and record.workers > 1:
            here = sum(c.busy_seconds for c in record.chunks if c.where == "caller")
            lost = record.wall_seconds - here - max(0.0, record.serial_estimate_seconds - here) / record.workers
            price = self._start_price()
            with self._lock:  # what this start cost beyond the work split over the workers
                self._cold_start = (price + max(0.0, lost)) / 2

    @staticmethod
    def _serial_price(fit: CostFit, items: list[list[Task]], timed: Sequence[tuple[int, float]],
                      chunks: Sequence[ChunkStats], busy: float) -> float:
        """CE alone's time for the explain, as far as this explain's tasks and earlier ones tell.

        CE alone explains in one task: it pays CE's fixed cost per task (fitted with this explain's chunks
        too) once, where the busy time has it once a task (an explain of 200 instances in 4 tasks recorded
        1.4-1.8x for a measured 0.9-1.1x). And where tasks ran alone in the caller, their rate caps the
        estimate: CE on threads spends about twice the CPU of CE alone (1.1x recorded for 0.54x).
        """
        trial = fit.copy()
        points = _points(chunks, items, timed)
        for point in points:
            trial.observe(*point)
        fixed = trial.estimate()[1] or 0.0
        estimate = busy - fixed * max(0, sum(p[0] for p in points) - 1)
        alone = trial.alone_seconds(sum(p[1] for p in points))
        return estimate if alone is None else min(estimate, alone)

    def _note(self, record: MapRecord | None) -> None:
        if record is None:
            return
        with self._lock:
            m = self.metrics
            m.worker_utilisation_pct = 100.0 * record.utilization
            m.max_workers = record.workers
            if record.fell_back and record.fallback_reason is not Reason.DISABLED:  # a recovered call stayed parallel
                m.fallbacks += 1
            m.last = {"strategy": record.selected_strategy, "chunks": record.n_chunks,
                      "speedup": record.speedup, "wall_seconds": record.wall_seconds,
                      "bytes_sent": record.bytes_sent, "bytes_received": record.bytes_received,
                      "fallback_reason": record.fallback_reason.value if record.fallback_reason else None}

    # -- what CE does not say ----------------------------------------------------------

    def bind(self, explainer: Any) -> None:
        """Remember ``explainer`` (weakly) so warnings can name what it explained."""
        with self._lock:
            self._explainers = [r for r in self._explainers if r() is not None and r() is not explainer]
            self._explainers.append(weakref.ref(explainer))

    def _bound(self) -> list[Any]:
        return [e for e in (r() for r in self._explainers) if e is not None]

    def _repair_merged(self, session: _Session) -> None:
        """The explanation CE merged from this explain's chunks, given what a serial explain gives (``merge``).

        Found from an explanation its ``map`` returned: two threads explaining on one explainer both found the
        explainer's ``latest_explanation``, the one set last, and the other's merge stayed CE's (the second
        review: 1-2 runs of 20 on threads). The latest explanation is the way only where none came back."""
        merged = _merged_into(session.produced)
        if merged is not None:
            merge.repair(merged)
            return
        for explainer in self._bound():
            latest = getattr(explainer, "latest_explanation", None)
            if latest is not None and id(latest) != session.latest.get(id(explainer)):
                merge.repair(latest)

    def _latest_ids(self) -> dict[int, int]:
        return {id(e): id(getattr(e, "latest_explanation", None)) for e in self._bound()}

    def _ce_retries(self, session: _Session, exc: BaseException | None) -> None:
        with self._lock:
            self._retrying.add(threading.get_ident())
            self.metrics.fallbacks += 1
        where = "payoff's map" if session.failed is not None else "calibrated-explanations after payoff's map"
        warn_user(Reason.MAP_FAILURE_RETRY,
                  f"payoff: {where} failed ({type(exc).__name__}: {exc}); calibrated-explanations catches "
                  f"this and silently re-runs the whole explanation serially (its log has the traceback). "
                  f"{_retry_advice(exc)}")

    def _explained_in(self, session: _Session) -> list[Any]:
        """The bound explainers whose latest explanation is new since ``session`` opened."""
        return [e for e in self._bound()
                if id(getattr(e, "latest_explanation", None)) != session.latest.get(id(e), -1)]

    def _retried(self, session: _Session) -> None:
        """CE's serial re-run of an explain whose map failed, ended: recorded as the recovery it is. Only the
        failed map was, and record, span and metrics said the explain failed while its user got every
        explanation; the fallback and recovery counters, which the dashboard's panel reads, counted nothing
        (trial 50)."""
        explained = self._explained_in(session)
        latest = getattr(explained[0], "latest_explanation", None) if explained else None
        n = len(getattr(latest, "explanations", None) or ())
        detail = (f"{RERUN_BY_LIBRARY}calibrated-explanations re-ran the whole explain in this process after "
                  "payoff's map failed: the explanations are that run's")
        self.executor._record_unmapped(n, Reason.MAP_FAILURE_RETRY, detail, self.workload, _user_site(),
                                       session.started_ns, session.started_at,
                                       said=f"{n:,} instance{'s' * (n != 1)}", asked=self._asked())

    def _not_called(self, session: _Session) -> None:
        """CE entered the executor and explained without a map: recorded (``disabled`` when it was asked to)."""
        explained = self._explained_in(session)
        n: int | None = None
        detail = ""
        if explained:
            explainer = explained[0]
            latest = getattr(explainer, "latest_explanation", None)
            n = len(getattr(latest, "explanations", None) or ())
            mode = str(getattr(explainer, "last_explanation_mode", "") or "")
            chain = plugin_chain(explainer, mode)
            detail = f"; its {mode or 'explanation'} plugin is {chain!r}" if chain else ""
            if not self.user_config.enabled:  # as asked: recorded as any disabled call, without a warning
                self.executor._record_unmapped(n, Reason.DISABLED, f"{planning.switched_off_by()}: CE explained "
                                               "every instance in this process", self.workload, _user_site(),
                                               session.started_ns, session.started_at)
                return
            if n == 1:
                self._one_instance(session)
            if n < 2:
                return
        if not self.user_config.enabled:
            return
        with self._lock:
            self.metrics.fallbacks += 1
        if not explained:  # an explainer enable() was never given: most often a wrapper's, re-calibrated since
            detail = ("calibrated-explanations entered the payoff executor from an explainer enable() was not given "
                      "(how many instances it explained is unknown), and never called map: calibrating a wrapper "
                      "again builds a new explainer with CE's sequential plugins; call enable(wrapper, "
                      "executor=...) again after calibrate")
        else:
            detail = (f"calibrated-explanations entered the payoff executor but never called map{detail}; "
                      "only its instance_parallel plugins use an executor (enable() selects them), and a "
                      "CE_EXPLANATION_PLUGIN* variable, a pyproject setting or fast explanations can force another")
        self.executor._record_unmapped(n or 0, Reason.EXECUTOR_UNUSED, detail, self.workload, _user_site(),
                                       session.started_ns, session.started_at, asked=self._asked())


    def _one_instance(self, session: _Session) -> None:
        """CE explains a single instance inline, rightly (nothing to split), without a map: recorded as the call
        of one item it is, or ``last_record`` still showed the explain before it."""
        asked = self.executor.config.strategy_name == "serial"  # as asked: no fallback (review)
        if not asked:
            with self._lock:
                self.metrics.fallbacks += 1
        detail = (f"{RUN_INLINE}calibrated-explanations explains a single instance in this process without calling "
                  "map (nothing to split)")
        self.executor._record_unmapped(1, None if asked else Reason.TOO_FEW_ITEMS, detail, self.workload,
                                       _user_site(), session.started_ns, session.started_at, said="1 instance",
                                       asked=self._asked())


def _points(chunks: Sequence[ChunkStats], items: list[list[Task]],
            timed: Sequence[tuple[int, float]] = ()) -> list[tuple[int, int, float, bool]]:
    """(CE tasks, instances, seconds, ran alone in the caller) of each chunk that ran tasks (an emptied item
    ran none); a caller's chunk whose tasks were each ``timed`` (in the order they ran) gives one point each."""
    out: list[tuple[int, int, float, bool]] = []
    left = list(timed)
    for c in chunks:
        groups = items[c.first_item:c.first_item + c.n_items]
        tasks = [t for g in groups for t in g]
        here = c.where == "caller"
        if here and len(tasks) > 1 and [n for n, _ in left[:len(tasks)]] == [t[1] - t[0] for t in tasks]:
            out.extend((1, n, seconds, True) for n, seconds in left[:len(tasks)])
        elif tasks:
            out.append((len(tasks), sum(t[1] - t[0] for t in tasks), c.busy_seconds, here))
        if here:
            left = left[len(tasks):]
    return out


def _gather(items: list[list[Task]]) -> bool:
    """All of ``items``' tasks as one, in the first item (the others emptied), when CE's tasks can be merged."""
    merged = merge_tasks([t for item in items for t in item])
    if merged is None:
        return False
    items[0][:] = [merged]
    for item in items[1:]:
        item.clear()
    return True


def _said(n: int, items: list[list[Task]], planned: int) -> str:
    """The call's items as its user knows them: instances, and the tasks that ran (an item may hold two: the
    first on named threads, ``_in_two``). ``_gather`` merges the ``planned`` tasks left after the first into
    one; the record's ``n_items`` (and the span's and metrics' task counts) count the items as planned, so the
    text names both (trial 50: "2 tasks" beside 8)."""
    tasks = sum(len(item) for item in items)
    said = f"{n:,} instance{'s' * (n != 1)} in {tasks:,} task{'s' * (tasks != 1)}"
    return said if tasks == planned else f"{said}, merged from {planned:,} planned"


def _in_two(k: int) -> list[int]:
    """The first item's ``k`` instances as two tasks of unlike sizes, each timed alone in the caller, on named
    threads: there nothing else tells CE alone's time. Its tasks side by side take about twice their time
    alone, and a caller's one task cannot tell CE's fixed cost per task from its cost per instance (the pool's
    tasks of many sizes can, but only as slowed side by side: fitted to them, CE alone read 0.6-0.7 of its
    time). Recorded 1.03-1.07x with ``pays_off`` for a real 0.65-0.82x (trial 50). It costs one more fixed
    cost in the caller, once per kind of explain (later explains are planned from the fit)."""
    small = max(1, k // 4)
    return [small, k - small] if k - small >= 2 * small else [k]


def _probe_size(n: int, workers: int) -> int:
    return min(PROBE_INSTANCES, math.ceil(n / (workers + 1)))


def _shown(sizes: list[int]) -> str:
    return ", ".join(map(str, sizes[:6])) + (", ..." if len(sizes) > 6 else "")


def _retry_advice(exc: BaseException | None) -> str:
    """The core's advice is for a worker that died; an error a task raised (a model that fails in worker
    processes, say) was told "a worker died (out of memory, os._exit, ...)" though none had."""
    if isinstance(exc, BrokenExecutor):  # WorkerCrashedError among them
        return Reason.MAP_FAILURE_RETRY.advice_sentence
    return ("No worker died: an explanation task (or CE's merge) raised it. If it comes from what works only in "
            "your process (a model that needs this process's state, a resource it opened), the serial re-run "
            "succeeds and strategy='threads' keeps the explainer here; otherwise the re-run raises it too.")


def _without_explainer(task: Task) -> Task:
    """The task without the explainer every task carries: payoff sends it once per worker instead."""
    start, stop, state = task
    return start, stop, {k: v for k, v in state.items() if k != "explainer"}


def plugin_chain(explainer: Any, mode: str) -> str:
    with contextlib.suppress(Exception):
        chain = explainer.plugin_manager.explanation_plugin_fallbacks.get(mode) or ()
        return str(chain[0]) if chain else ""
    return ""


def _first_explanation(results: list[Any]) -> Any:
    """An explanation of CE's ``(start, CalibratedExplanations)`` task results; None if there is none."""
    for pair in results:
        items = getattr(pair[1], "explanations", None) if isinstance(pair, tuple) and len(pair) == 2 else None
        if items:
            return items[0]
    return None


def _merged_into(explanation: Any) -> Any:
    """The collection CE's merge put ``explanation`` in (it sets each one's ``calibrated_explanations``)."""
    merged = getattr(explanation, "calibrated_explanations", None)
    items = getattr(merged, "explanations", None)
    return merged if items and any(e is explanation for e in items) else None
