"""payoff as the parallel executor of calibrated-explanations (CE) 1.0.2.

Two lines switch it on for an already calibrated explainer::

    from payoff.integrations.calibrated_explanations import enable
    executor = enable(wrapper)        # WrapCalibratedExplainer or CalibratedExplainer, calibrated
    wrapper.explain_factual(x_test)   # parallel when it pays off; executor.last_record says how it went

What CE does with an executor, and what this adapter does about it:

- CE only calls ``map`` when the explanation plugin is
  ``core.explanation.factual.instance_parallel`` (or the alternative one);
  :func:`enable` selects both. With CE's default plugins the executor is
  entered and never used, which CE does not mention: this adapter warns
  (:class:`~payoff.ParallelFallbackWarning`) when an explain of two or more
  instances entered it without calling ``map``.
- CE enters the executor three times and leaves it twice per explain, and
  its own executor shuts its pool at the inner exit. Here ``__enter__`` is
  idempotent and ``__exit__`` never closes the pool: it lives until
  :meth:`CEParallelExecutor.close`, the idle timeout or interpreter exit.
- CE hands ``map`` a list of ``(start, stop, state)`` tasks whose ``state``
  holds the *whole explainer*, the same object in every task. The adapter
  asks CE for one task per instance (``instance_chunk_size=1`` in the view
  CE reads), regroups consecutive tasks into chunks sized from measured cost
  (``ParallelConfig.instance_chunk_size`` when set), takes the explainer out
  of the items and puts it in the function, which payoff's process
  strategies send once per worker per call instead of once per task.
  Results go back as CE expects: ``(start, CalibratedExplanations)`` pairs.
  Crossing processes, each chunk's results are pickled with the garbage
  collector paused (it otherwise dominates (de)serialising the tens of
  thousands of small objects an explanation holds), and the deep copy of the
  explainer CE embeds in every chunk result (discarded by CE's merge) stays
  in the worker.
- CE reads ``config.strategy`` and must never see ``"auto"``: payoff's
  ``auto`` is resolved here (worker processes for this CPU-bound work) and
  the concrete name is reported.
- CE catches any exception from ``map`` (and from its own merge) and
  silently re-runs the explanation serially; when that happens here it is
  warned with reason ``map_failure_retry``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import pickle
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from payoff import planning
from payoff.config import ParallelConfig
from payoff.executor import ParallelExecutor
from payoff.observers import CallSite, Observer, find_call_site, skip_frames_from
from payoff.reasons import Reason
from payoff.record import MapRecord
from payoff.strategies import CROSSES_PROCESSES

FACTUAL_PLUGIN = "core.explanation.factual.instance_parallel"
ALTERNATIVE_PLUGIN = "core.explanation.alternative.instance_parallel"
WORKLOAD = "calibrated-explanations"

MAX_TASKS_PER_WORKER = 4
"""Without a measured fixed cost, no task is smaller than 1 / (workers x this) of the explain."""
FIXED_COST_SHARE = 0.05
"""Each task pays CE's fixed cost (predict calls, an explainer deep copy): a task's own work is at least
1 / this times that cost, so the fixed costs stay within this share of the work."""
MIN_PARALLEL_SECONDS = 0.25
"""Below this much estimated work an explain runs in one task in the caller (once its cost is known)."""


_CE_STRATEGY_NAMES = {"serial": "sequential"}
_SKIP_FRAMES = (os.path.dirname(contextlib.__file__) + os.sep + "contextlib",)


# -- what CE reads -----------------------------------------------------------------


@dataclass(frozen=True)
class CEConfig:
    """The configuration as calibrated-explanations reads it (CE's own field names).

    This is a read-only view derived from the payoff :class:`~payoff.ParallelConfig`
    (``CEParallelExecutor.payoff_config``): change that one instead. ``strategy``
    is always concrete (CE's name ``"sequential"`` for payoff's ``"serial"``);
    ``instance_chunk_size=1`` asks CE for one task per instance, which payoff
    regroups into chunks of its own choosing.
    """

    enabled: bool
    strategy: str
    max_workers: int | None
    granularity: str = "instance"
    instance_chunk_size: int = 1
    feature_chunk_size: int | None = None
    min_batch_size: int = 1
    min_instances_for_parallel: int = 2
    tiny_workload_threshold: float | None = None
    task_size_hint_bytes: int = 16 * 1024 * 1024
    force_serial_on_failure: bool = True
    worker_initializer: None = None
    worker_init_args: tuple[Any, ...] = ()
    telemetry: None = None


@dataclass
class CEMetrics:
    """CE's ``metrics`` surface; payoff's own measurements are in ``executor.records``.

    ``total_duration`` is CE's: it adds the wall time of every explain to it.
    """

    total_duration: float = 0.0
    submitted: int = 0
    """CE tasks received (one per instance)."""
    completed: int = 0
    fallbacks: int = 0
    """Explains that ran serially although parallelism was allowed (payoff fallbacks, never-called, CE retries)."""
    failures: int = 0
    maps: int = 0
    max_workers: int = 0
    worker_utilisation_pct: float = 0.0
    """Measured busy / capacity of the last map, in percent (CE's own figure is min(items, workers) / workers)."""
    last: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted, "completed": self.completed, "fallbacks": self.fallbacks,
            "failures": self.failures, "total_duration": self.total_duration, "max_workers": self.max_workers,
            "worker_utilisation_pct": self.worker_utilisation_pct, "maps": self.maps, **self.last,
        }


# -- chunking ----------------------------------------------------------------------


def ce_chunk_sizes(
    n_instances: int,
    workers: int,
    *,
    chunk_size: int | None = None,
    seconds_per_instance: float | None = None,
    seconds_per_task: float | None = None,
) -> list[int]:
    """Instances per CE task, in order, for an explain of ``n_instances`` on ``workers``.

    A fixed ``chunk_size`` wins. Otherwise the split is guided: each task takes
    ``1 / (2 x workers)`` of the instances still left, so the first tasks are
    large (few fixed costs) and the last ones small (workers finish together
    although CE's per-instance time varies), down to a floor. The floor keeps
    each task's work at least ``1 / FIXED_COST_SHARE`` times its fixed cost once
    both costs are measured, and is ``1 / (workers x MAX_TASKS_PER_WORKER)`` of
    the explain before that, and never above ``1 / (2 x workers)`` of it, so a
    noisy cost fit cannot take away the balancing.
    """
    if n_instances < 1:
        return []
    if chunk_size is not None:
        size = max(1, chunk_size)
        return [min(size, n_instances - lo) for lo in range(0, n_instances, size)]
    if workers <= 1:
        return [n_instances]
    floor = math.ceil(n_instances / (workers * MAX_TASKS_PER_WORKER))
    if seconds_per_instance and seconds_per_task is not None:
        floor = math.ceil(seconds_per_task / FIXED_COST_SHARE / seconds_per_instance)
    floor = max(1, min(floor, math.ceil(n_instances / (2 * workers))))  # a noisy fit must not cost the balance
    sizes: list[int] = []
    left = n_instances
    while left:
        size = min(left, max(floor, math.ceil(left / (2 * workers))))
        sizes.append(size)
        left -= size
    return sizes


class _CostFit:
    """Seconds of a CE chunk = tasks x fixed cost + instances x cost per instance, fitted from records."""

    def __init__(self) -> None:
        self.points: deque[tuple[int, int, float]] = deque(maxlen=64)

    def observe(self, tasks: int, instances: int, seconds: float) -> None:
        if instances > 0 and seconds > 0:
            self.points.append((tasks, instances, seconds))

    def estimate(self) -> tuple[float | None, float | None]:
        """(seconds per instance, fixed seconds per task); the fixed cost needs chunks of different sizes."""
        if not self.points:
            return None, None
        t = np.array([p[0] for p in self.points], dtype=float)
        n = np.array([p[1] for p in self.points], dtype=float)
        s = np.array([p[2] for p in self.points], dtype=float)
        ratio = n / t
        if len(self.points) >= 2 and ratio.max() >= 1.25 * ratio.min():
            a = np.stack([t, n], axis=1)
            (fixed, per), *_ = np.linalg.lstsq(a, s, rcond=None)
            if per > 0 and fixed >= 0:
                return float(per), float(fixed)
        return float(s.sum() / n.sum()), None


# -- CE's tasks ------------------------------------------------------------------------

Task = tuple[int, int, dict[str, Any]]
_SHARED_KEYS = ("low_high_percentiles", "features_to_ignore_array", "config_state")
_SLICED_KEYS = ("subset", "threshold_slice", "bins_slice", "feature_filter_per_instance_ignore")


def _as_tasks(items: Sequence[Any]) -> list[Task] | None:
    """CE's instance tasks, or ``None`` when ``items`` are something else."""
    if not items:
        return None
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], int)
                and isinstance(item[1], int) and isinstance(item[2], dict)):
            return None
    return list(items)


def _shared_explainer(tasks: Sequence[Task]) -> Any:
    """The explainer every task carries, when it is one object (it is, in CE 1.0.2)."""
    first = tasks[0][2].get("explainer")
    if first is None or any(t[2].get("explainer") is not first for t in tasks):
        return None
    return first


def _concat(parts: list[Any]) -> Any:
    """Join per-task slices of one field, or raise ``TypeError`` when they cannot be joined exactly."""
    head = parts[0]
    if all(p is head for p in parts):
        return head  # shared (None, a scalar threshold, an interval tuple)
    if any(p is None for p in parts):
        raise TypeError("some slices are None")
    if all(type(p) is np.ndarray for p in parts):
        return np.concatenate(parts)
    if all(type(p) is list for p in parts):
        return [x for p in parts for x in p]
    if all(type(p) is tuple for p in parts):
        return tuple(x for p in parts for x in p)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(head, pandas.Series) and all(type(p) is type(head) for p in parts):
        return pandas.concat(parts)
    raise TypeError(f"cannot join slices of type {type(head).__name__}")


def _merge(group: list[Task]) -> Task | None:
    """One task covering consecutive ``group`` (as CE builds for a bigger chunk), or ``None`` if unsure."""
    if len(group) == 1:
        return group[0]
    states = [t[2] for t in group]
    keys = set(states[0])
    if any(set(s) != keys for s in states) or not keys <= {*_SHARED_KEYS, *_SLICED_KEYS, "explainer"}:
        return None
    if any(group[i][1] != group[i + 1][0] for i in range(len(group) - 1)):
        return None
    merged: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in states]
        if key in _SHARED_KEYS or key == "explainer":
            if any(v is not values[0] for v in values):
                return None
            merged[key] = values[0]
            continue
        try:
            merged[key] = _concat(values)
        except TypeError:
            return None
    return group[0][0], group[-1][1], merged


def _groups(tasks: list[Task], sizes: list[int]) -> list[list[Task]]:
    """Consecutive tasks, about ``sizes[k]`` instances in group ``k`` (the last group takes the rest)."""
    out: list[list[Task]] = []
    current: list[Task] = []
    size = 0
    for task in tasks:
        current.append(task)
        size += task[1] - task[0]
        if len(out) < len(sizes) - 1 and size >= sizes[len(out)]:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out


# -- in the worker -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """Chunk results pickled in the worker with the garbage collector paused."""

    payload: bytes


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pickling tens of thousands of small objects triggers collections that cost more than the pickling."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lighten(result: Any) -> Any:
    """Drop the explainer deep copy CE embeds in a chunk's result: CE's merge re-parents and discards it."""
    if isinstance(result, tuple) and len(result) == 2:
        chunk = result[1]
        if hasattr(chunk, "explanations") and hasattr(chunk, "calibrated_explainer"):
            chunk.calibrated_explainer = None
    return result


def run_ce_tasks(fn: Callable[[Task], Any], explainer: Any, parent_pid: int, tasks: list[Task]) -> Any:
    """Worker entry point: CE's task function over ``tasks`` with the explainer put back into each state.

    ``functools.partial(run_ce_tasks, fn, explainer, pid)`` is what payoff ships: the
    explainer travels once per worker, the tasks carry only their slices.
    """
    if os.getpid() == parent_pid:
        return [fn(_with(task, explainer)) for task in tasks]
    with _gc_paused():  # in a worker only: the caller's process is the user's, and so is its collector
        results = [fn(_with(task, explainer)) for task in tasks]
        return _Encoded(pickle.dumps([_lighten(r) for r in results], protocol=pickle.HIGHEST_PROTOCOL))


def _with(task: Task, explainer: Any) -> Task:
    start, stop, state = task
    return (start, stop, state if explainer is None else {**state, "explainer": explainer})


def _decode(block: Any) -> list[Any]:
    if isinstance(block, _Encoded):
        with _gc_paused():
            decoded: list[Any] = pickle.loads(block.payload)
        return decoded
    return list(block)


# -- sessions: what CE did between entering and leaving ------------------------------------


@dataclass
class _Session:
    latest: dict[int, int]
    """id(explainer) -> id(its latest_explanation) when the session opened."""
    started_ns: int = field(default_factory=time.monotonic_ns)
    started_at: float = field(default_factory=time.time)
    mapped: bool = False
    failed: BaseException | None = None


def _user_site() -> CallSite:
    """The user's explain line: CE's own frames are registered as library code (``_register_ce_frames``)."""
    _register_ce_frames()
    return find_call_site(_SKIP_FRAMES)


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


def _warn(reason: Reason, text: str) -> None:
    from payoff.telemetry import FALLBACK_WARNINGS

    FALLBACK_WARNINGS.emit(_user_site(), reason, text, None)


# -- the executor -------------------------------------------------------------------------


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
    """

    def __init__(
        self,
        config: ParallelConfig | None = None,
        *,
        workload: str = WORKLOAD,
        observers: Sequence[Observer] | None = None,
    ) -> None:
        user = config if config is not None else ParallelConfig.from_env()
        if not isinstance(user, ParallelConfig):
            raise TypeError(f"config must be a payoff ParallelConfig or None, got {type(user).__name__}")
        self.user_config = user
        """The configuration as given: its instance-level knobs are applied here, in instances."""
        self.workload = workload
        strategy = _resolve_strategy(user) if isinstance(user.strategy, str) else user.strategy
        inner = user.with_changes(strategy=strategy, min_batch_size=None, min_instances_for_parallel=None,
                                  tiny_workload_threshold=None, instance_chunk_size=None)
        self.executor = ParallelExecutor(inner, observers=observers)
        """The payoff executor that runs CE's tasks (its items are chunks of instances)."""
        self.metrics = CEMetrics(max_workers=self._workers())
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._retrying = False
        self._explainers: list[weakref.ReferenceType[Any]] = []
        self._costs: OrderedDict[int, _CostFit] = OrderedDict()
        self.last_chunk_sizes: list[int] = []
        """Instances per task in the last explain that reached ``map``."""
        self.last_decision = ""
        """How the last explain that reached ``map`` was split, in instances."""

    # -- what CE reads ------------------------------------------------------------

    @property
    def payoff_config(self) -> ParallelConfig:
        """The configuration of the inner executor (strategy resolved, instance knobs handled here)."""
        return self.executor.config

    @property
    def strategy(self) -> str:
        """The concrete payoff strategy that runs CE's tasks (never ``auto``)."""
        return self.payoff_config.strategy_name

    @property
    def active_strategy_name(self) -> str:
        return _CE_STRATEGY_NAMES.get(self.strategy, self.strategy)

    @property
    def config(self) -> CEConfig:
        user = self.user_config
        return CEConfig(
            enabled=user.enabled, strategy=self.active_strategy_name, max_workers=user.max_workers,
            feature_chunk_size=user.feature_chunk_size, tiny_workload_threshold=user.tiny_workload_threshold,
            task_size_hint_bytes=user.task_size_hint_bytes, force_serial_on_failure=user.force_serial_on_failure,
        )

    @property
    def records(self) -> Sequence[MapRecord]:
        return self.executor.records

    @property
    def last_record(self) -> MapRecord | None:
        return self.executor.last_record

    def calibrate_kwargs(self) -> dict[str, Any]:
        """Keywords for ``wrapper.calibrate(x, y, **ex.calibrate_kwargs())`` (or ``CalibratedExplainer``)."""
        return {"perf_parallel": self, "factual_plugin": FACTUAL_PLUGIN, "alternative_plugin": ALTERNATIVE_PLUGIN}

    def use_strategy(self, name: str) -> None:
        """Switch the concrete strategy (``enable`` does when the explainer cannot be pickled)."""
        self.executor.config = self.executor.config.with_changes(strategy=name)

    # -- lifetime -----------------------------------------------------------------

    def __enter__(self) -> CEParallelExecutor:
        """Idempotent: CE enters three times per explain and leaves twice."""
        with self._lock:
            if self._session is None:
                self._session = _Session(self._latest_ids())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Never closes the pool (CE's inner exit comes before its outer one); reports what CE hides."""
        with self._lock:
            session, self._session = self._session, None
            retrying, self._retrying = self._retrying, False
        if session is None:
            return
        if session.mapped and exc_type is not None and issubclass(exc_type, Exception):
            self._ce_retries(session, exc)
        elif not session.mapped and exc_type is None and not retrying and self.user_config.enabled:
            self._not_called(session)

    def close(self) -> None:
        """Stop the worker pool (it restarts on the next explain)."""
        self.executor.close()

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

        ``workers`` is ignored (payoff's ``max_workers`` decides); ``chunksize``
        applies to maps that are not CE instance tasks.
        """
        _register_ce_frames()
        seq = list(items)
        before = self.executor.last_record
        with self._lock:
            session = self._session
            if session is not None:
                session.mapped = True
            self.metrics.maps += 1
            self.metrics.submitted += len(seq)
        try:
            tasks = _as_tasks(seq)
            if tasks is None:
                out = self.executor.map(fn, seq, chunksize=chunksize, workload=self.workload)
            else:
                out = self._map_tasks(fn, tasks, work_items)
        except BaseException as exc:
            with self._lock:
                self.metrics.failures += 1
                if session is not None:
                    session.failed = exc
            raise
        finally:
            if self.executor.last_record is not before:
                self._note(self.executor.last_record)
        with self._lock:
            self.metrics.completed += len(seq)
        return out

    def _map_tasks(self, fn: Callable[[Any], Any], tasks: list[Task], work_items: int | None) -> list[Any]:
        explainer = _shared_explainer(tasks)
        if explainer is not None:
            tasks = [(a, b, {k: v for k, v in s.items() if k != "explainer"}) for a, b, s in tasks]
        n = sum(b - a for a, b, _ in tasks)
        fit = self._fit(explainer)
        sizes, why = self._plan(n, fit)
        groups = _groups(tasks, sizes)
        items = [[m] if (m := _merge(g)) is not None else g for g in groups]
        self.last_chunk_sizes, self.last_decision = sizes, why
        task_fn = functools.partial(run_ce_tasks, fn, explainer, os.getpid())
        out: list[Any] = []
        for block in self.executor.imap(task_fn, items, chunksize=1, granularity="instance",
                                        workload=self.workload):
            out.extend(_decode(block))
        self._learn(fit, self.executor.last_record, items)
        return out

    def _plan(self, n: int, fit: _CostFit) -> tuple[list[int], str]:
        """Instances per task, and why, in instance units."""
        user = self.user_config
        workers = self._workers()
        spi, spt = fit.estimate()
        work = None if spi is None else spi * n + (spt or 0.0)
        floor = max(user.min_batch_size or 0, user.min_instances_for_parallel or 0)
        serial_why = ""
        if workers <= 1 or not user.enabled:
            serial_why = "no parallel workers"
        elif n < max(2, floor):
            serial_why = f"{n} instances is below the minimum of {max(2, floor)} for parallel"
        elif user.tiny_workload_threshold is not None and user.tiny_workload_threshold > 0 and work is not None \
                and work < user.tiny_workload_threshold:
            serial_why = f"~{work:.3f} s of estimated work is below tiny_workload_threshold"
        elif user.tiny_workload_threshold is None and work is not None and work < MIN_PARALLEL_SECONDS:
            serial_why = f"~{work:.3f} s of estimated work is below {MIN_PARALLEL_SECONDS} s"
        if serial_why:
            return [max(1, n)], f"{n} instances in one task: {serial_why}"
        sizes = ce_chunk_sizes(n, workers, chunk_size=user.instance_chunk_size, seconds_per_instance=spi,
                               seconds_per_task=spt)
        source = "instance_chunk_size" if user.instance_chunk_size else (
            "guided, floor from the measured fixed cost" if spt is not None else "guided")
        shown = ", ".join(map(str, sizes[:6])) + (", ..." if len(sizes) > 6 else "")
        return sizes, f"{n} instances in {len(sizes)} tasks of {shown} ({source}) on {workers} workers"

    def _workers(self) -> int:
        if not self.user_config.enabled or self.executor.config.strategy == "serial":
            return 1
        return planning.available_workers(self.executor.config)

    # -- learning -------------------------------------------------------------------

    def _fit(self, explainer: Any) -> _CostFit:
        key = id(explainer)
        with self._lock:
            fit = self._costs.get(key)
            if fit is None:
                fit = self._costs[key] = _CostFit()
                while len(self._costs) > 16:
                    self._costs.popitem(last=False)
            self._costs.move_to_end(key)
            return fit

    def _learn(self, fit: _CostFit, record: MapRecord | None, items: list[list[Task]]) -> None:
        if record is None or record.n_errors:
            return
        for c in record.chunks:
            groups = items[c.first_item:c.first_item + c.n_items]
            tasks = sum(len(g) for g in groups)
            instances = sum(t[1] - t[0] for g in groups for t in g)
            fit.observe(tasks, instances, c.busy_seconds)

    def _note(self, record: MapRecord | None) -> None:
        if record is None:
            return
        with self._lock:
            m = self.metrics
            m.worker_utilisation_pct = 100.0 * record.utilization
            m.max_workers = record.workers
            if record.fallback_reason is not None and record.fallback_reason is not Reason.DISABLED:
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

    def _latest_ids(self) -> dict[int, int]:
        return {id(e): id(getattr(e, "latest_explanation", None)) for e in self._bound()}

    def _ce_retries(self, session: _Session, exc: BaseException | None) -> None:
        with self._lock:
            self._retrying = True
            self.metrics.fallbacks += 1
        where = "payoff's map" if session.failed is not None else "calibrated-explanations after payoff's map"
        _warn(Reason.MAP_FAILURE_RETRY,
              f"payoff: {where} failed ({type(exc).__name__}: {exc}); calibrated-explanations catches this "
              "and silently re-runs the whole explanation serially (its log has the traceback). "
              f"{Reason.MAP_FAILURE_RETRY.advice[:1].upper()}{Reason.MAP_FAILURE_RETRY.advice[1:]}.")

    def _not_called(self, session: _Session) -> None:
        explained = [e for e in self._bound()
                     if id(getattr(e, "latest_explanation", None)) != session.latest.get(id(e), -1)]
        n: int | None = None
        detail = ""
        if explained:
            explainer = explained[0]
            latest = getattr(explainer, "latest_explanation", None)
            n = len(getattr(latest, "explanations", None) or ())
            mode = str(getattr(explainer, "last_explanation_mode", "") or "")
            chain = _plugin_chain(explainer, mode)
            detail = f"; its {mode or 'explanation'} plugin is {chain!r}" if chain else ""
            if n < 2:
                return  # nothing to split: CE runs a single instance inline, rightly
        with self._lock:
            self.metrics.fallbacks += 1
        detail = (f"calibrated-explanations entered the payoff executor but never called map{detail}; "
                  "only its instance_parallel plugins use an executor (enable() selects them), and a "
                  "CE_EXPLANATION_PLUGIN* variable, a pyproject setting or fast explanations can force another")
        self.executor._record_unmapped(n or 0, Reason.EXECUTOR_UNUSED, detail, self.workload, _user_site(),
                                       session.started_ns, session.started_at)


def _plugin_chain(explainer: Any, mode: str) -> str:
    with contextlib.suppress(Exception):
        chain = explainer.plugin_manager.explanation_plugin_fallbacks.get(mode) or ()
        return str(chain[0]) if chain else ""
    return ""


# -- wiring -----------------------------------------------------------------------------------


def _explainer_of(target: Any) -> tuple[Any, Any]:
    """(wrapper or None, CalibratedExplainer) for a calibrated wrapper or an explainer."""
    from calibrated_explanations import CalibratedExplainer, WrapCalibratedExplainer

    if isinstance(target, WrapCalibratedExplainer):
        if not target.calibrated or getattr(target, "explainer", None) is None:
            raise ValueError(
                "enable() needs a calibrated WrapCalibratedExplainer: call wrapper.calibrate(x_cal, y_cal) "
                "first, or pass **executor.calibrate_kwargs() to calibrate for a CEParallelExecutor you made"
            )
        return target, target.explainer
    if isinstance(target, CalibratedExplainer):
        return None, target
    raise TypeError(f"enable() needs a WrapCalibratedExplainer or CalibratedExplainer, got {type(target).__name__}")


def select_parallel_plugins(explainer: Any) -> dict[str, str]:
    """Make CE's factual and alternative explanations use the instance-parallel plugins.

    The same steps CE itself takes when it overrides a plugin after construction
    (``CalibratedExplainer`` with a feature filter). Returns the plugins replaced.
    """
    manager = explainer.plugin_manager
    before = {mode: _plugin_chain(explainer, mode) for mode in ("factual", "alternative")}
    manager.explanation_plugin_overrides["factual"] = FACTUAL_PLUGIN
    manager.explanation_plugin_overrides["alternative"] = ALTERNATIVE_PLUGIN
    manager.clear_explanation_plugin_instances()
    manager.clear_explanation_plugin_identifiers()
    manager.initialize_chains()
    return before


def _check_picklable(executor: CEParallelExecutor, explainer: Any) -> None:
    """Processes need a picklable explainer; fall back to joblib (cloudpickle), then threads, and say so."""
    if executor.strategy not in CROSSES_PROCESSES:
        return
    try:
        pickle.dumps(explainer, protocol=pickle.HIGHEST_PROTOCOL)
        return
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    try:
        import cloudpickle

        cloudpickle.dumps(explainer)
        name = "joblib"
    except Exception:
        name = "threads"
    if name == executor.strategy:
        return
    _warn(Reason.UNPICKLABLE, f"payoff: the explainer cannot be pickled for worker processes ({problem}); "
          f"calibrated-explanations will run on {name} instead of {executor.strategy}.")
    executor.use_strategy(name)


def enable(target: Any, config: ParallelConfig | None = None, *,
           executor: CEParallelExecutor | None = None) -> CEParallelExecutor:
    """Run ``target``'s explanations on payoff; returns the executor (for its records).

    ``target`` is a calibrated ``WrapCalibratedExplainer`` or a
    ``CalibratedExplainer``. ``config`` is a payoff :class:`~payoff.ParallelConfig`
    (default: from ``CE_PARALLEL``, payoff's grammar); pass ``executor`` to share
    one pool between several explainers. The executor becomes the explainer's
    ``perf_parallel`` (and the wrapper's, for later ``calibrate`` calls), and
    the factual and alternative explanation plugins become CE's
    instance-parallel ones, without which CE never calls an executor.
    Re-calibrating a wrapper builds a new explainer: call ``enable`` again.
    """
    if executor is not None and config is not None:
        raise ValueError("pass either config or executor, not both")
    wrapper, explainer = _explainer_of(target)
    ex = executor if executor is not None else CEParallelExecutor(config)
    if wrapper is not None:
        wrapper.parallel_executor = ex
    explainer.parallel_executor = ex
    select_parallel_plugins(explainer)
    ex.bind(explainer)
    _check_picklable(ex, explainer)
    return ex


__all__ = [
    "ALTERNATIVE_PLUGIN",
    "FACTUAL_PLUGIN",
    "WORKLOAD",
    "CEConfig",
    "CEMetrics",
    "CEParallelExecutor",
    "ce_chunk_sizes",
    "enable",
    "run_ce_tasks",
    "select_parallel_plugins",
]
