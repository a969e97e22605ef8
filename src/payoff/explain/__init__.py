"""Explanation workloads: split per instance, per feature, or let payoff pick the axis.

Perturbation-style explanations (calibrated-explanations, SHAP-like loops,
permutation importance) can be parallelised on two axes: one task per
instance (explain a row against every feature) or one task per feature
(perturb one column across every row). These helpers run either axis on a
:class:`~payoff.ParallelExecutor` and declare the axis to it, so a config
that allows only the other axis falls back *visibly* (reason
``granularity_mismatch`` and a :class:`~payoff.ParallelFallbackWarning`),
never silently. Chunk sizes per axis come from ``instance_chunk_size`` /
``feature_chunk_size`` in the config when set, and from measured cost
otherwise.

Large shared state (a model, an explainer, background data) goes in
``shared``: it travels inside the function (``functools.partial(task,
shared)``), which payoff's process strategies send once per worker per call
instead of once per chunk.

>>> from payoff import ParallelExecutor                        # doctest: +SKIP
>>> from payoff.explain import explain_instances, explain
>>> with ParallelExecutor() as ex:
...     rows = explain_instances(ex, explain_row, x_test, shared=model)
...     both = explain(ex, instances=x_test, features=range(x_test.shape[1]),
...                    instance_task=explain_row, feature_task=explain_column, shared=model)
...     print(both.axis, both.choice.why)
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from payoff import planning
from payoff._loop_hidden import hide_running_loop, restore_running_loop
from payoff.executor import ParallelExecutor
from payoff.record import MapRecord

Axis = Literal["instance", "feature"]
AXES: tuple[Axis, ...] = ("instance", "feature")

INSTANCE_WORKLOAD = "explain-instances"
FEATURE_WORKLOAD = "explain-features"


def _bind(task: Callable[..., Any], shared: Any, name: str = "task") -> Callable[[Any], Any]:
    if not callable(task):
        raise TypeError(f"{name} must be callable, got {type(task).__name__}: {task!r}")
    return task if shared is None else functools.partial(task, shared)


def _rows(instances: Any, name: str = "instances") -> Any:
    """A pandas DataFrame iterates over its column names: ``explain_instances(ex, task, df)`` ran the task on
    3 names for a frame of 20 rows, and a task that wanted numbers failed on 'age' without naming the frame."""
    if hasattr(instances, "iterrows") and hasattr(instances, "columns"):
        raise TypeError(f"{name} is a pandas DataFrame, which iterates over its column names, not its rows; pass "
                        f"{name}.to_numpy() for rows as arrays, or [row for _, row in {name}.iterrows()] for rows "
                        "as Series")
    return instances


def explain_instances(
    executor: ParallelExecutor,
    task: Callable[..., Any],
    instances: Sequence[Any],
    *,
    shared: Any = None,
    chunk_size: int | None = None,
    workload: str = INSTANCE_WORKLOAD,
) -> list[Any]:
    """``[task(shared, x) for x in instances]`` (or ``task(x)`` without ``shared``), split per instance.

    ``chunk_size`` overrides the config's ``instance_chunk_size``; both ``None``
    means payoff sizes chunks from measured cost. Results are in input order.
    """
    return executor.map(_bind(task, shared), _rows(instances), chunksize=chunk_size, granularity="instance",
                        workload=workload)


def explain_features(
    executor: ParallelExecutor,
    task: Callable[..., Any],
    features: Sequence[Any],
    *,
    shared: Any = None,
    chunk_size: int | None = None,
    workload: str = FEATURE_WORKLOAD,
) -> list[Any]:
    """``[task(shared, f) for f in features]`` (or ``task(f)``), split per feature.

    ``features`` is whatever identifies a feature to ``task``: usually column
    indices. ``chunk_size`` overrides the config's ``feature_chunk_size``.
    """
    return executor.map(_bind(task, shared), features, chunksize=chunk_size, granularity="feature",
                        workload=workload)


# -- choosing the axis ---------------------------------------------------------


@dataclass(frozen=True)
class AxisChoice:
    """Why an axis was chosen: the shape, the workers and the costs that decided it."""

    axis: Axis
    n_instances: int
    n_features: int
    workers: int
    seconds_per_instance: float | None
    seconds_per_feature: float | None
    instance_seconds: float
    """Estimated wall time of the work split per instance (relative units when costs are unknown)."""
    feature_seconds: float
    how: str
    """``config`` (fixed by the config or the call), ``measured`` (probe or earlier records) or ``shape``."""

    @property
    def why(self) -> str:
        if self.how == "config":
            return f"the granularity is fixed to {self.axis!r}"
        unit = "s" if self.how == "measured" else " (relative)"
        on = f"{self.workers} worker" + "s" * (self.workers != 1)
        return (f"{self.n_instances} instances x {self.n_features} features on {on}: "
                f"split per instance ~{self.instance_seconds:.4g}{unit}, "
                f"split per feature ~{self.feature_seconds:.4g}{unit}")


def _makespan(n: int, workers: int, seconds_per_item: float) -> float:
    """Wall time of ``n`` equal, indivisible items on ``workers``: whole rounds of items."""
    return math.ceil(n / workers) * seconds_per_item if n else math.inf


def _per_item(n_instances: int, n_features: int, spi: float | None,
              spf: float | None) -> tuple[float | None, float | None]:
    """Seconds per item of each axis; an unknown one inferred from the other axis' total (same work, other
    split), both relative (a total of 1) when neither is known."""
    if spi is None and spf is None:
        spi = 1.0 / n_instances if n_instances else None
        spf = 1.0 / n_features if n_features else None
    elif spi is None:
        assert spf is not None
        spi = spf * n_features / n_instances if n_instances else None
    elif spf is None:
        spf = spi * n_instances / n_features if n_features else None
    return spi, spf


def _estimates(n_instances: int, n_features: int, workers: int, spi: float | None,
               spf: float | None) -> tuple[float, float]:
    """Makespans per axis (see ``_per_item``)."""
    spi, spf = _per_item(n_instances, n_features, spi, spf)
    inst = _makespan(n_instances, workers, spi) if spi is not None else math.inf
    feat = _makespan(n_features, workers, spf) if spf is not None else math.inf
    return inst, feat


def _check_counts(n_instances: object, n_features: object, workers: object) -> tuple[int, int, int]:
    """The counts as ints: numpy's integers are counts too (``X.shape[0]``), as ``operator.index`` takes them."""
    counts = []
    for name, value, low in (("n_instances", n_instances, 0), ("n_features", n_features, 0),
                             ("workers", workers, 1)):
        try:
            count = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            count = None
        if count is None or isinstance(value, (bool, np.bool_)) or count < low:
            raise ValueError(f"{name} must be a whole number >= {low} (an int or a numpy integer), got {value!r}")
        counts.append(count)
    return counts[0], counts[1], counts[2]


def _check_cost(name: str, value: object) -> float | None:
    """Seconds as a float: numpy's floats too; never negative, infinite or NaN (an unknown cost is None)."""
    if value is None:
        return None
    seconds = float(value) if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) else -1.0
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{name} must be None or a finite number of seconds >= 0, got {value!r}")
    return seconds


def choose_granularity(
    n_instances: int,
    n_features: int,
    workers: int,
    *,
    seconds_per_instance: float | None = None,
    seconds_per_feature: float | None = None,
) -> Axis:
    """The axis whose split finishes first on ``workers``.

    Items on one axis are indivisible, so the wall time of an axis is whole
    rounds of items: ``ceil(n / workers) * seconds_per_item``. With both costs
    known the cheaper makespan wins (per-feature tasks often vectorise over
    rows and cost less in total). With one or no cost known, both axes are
    assumed to do the same total work and balance decides: 3 features on 2
    workers leave a worker idle for a third of the run, 1,000 instances do
    not. Ties go to ``"instance"``, the axis calibrated-explanations supports.
    """
    return _choose(n_instances, n_features, workers, seconds_per_instance, seconds_per_feature).axis


def _choose(n_instances: int, n_features: int, workers: int, spi: float | None, spf: float | None,
            how: str | None = None) -> AxisChoice:
    n_instances, n_features, workers = _check_counts(n_instances, n_features, workers)
    spi, spf = _check_cost("seconds_per_instance", spi), _check_cost("seconds_per_feature", spf)
    inst, feat = _estimates(n_instances, n_features, workers, spi, spf)
    axis: Axis = "feature" if feat < inst * (1 - 1e-9) else "instance"
    if how is None:
        how = "measured" if spi is not None or spf is not None else "shape"
    return AxisChoice(axis, n_instances, n_features, workers, spi, spf, inst, feat, how)


# -- the auto helper -------------------------------------------------------------


@dataclass(frozen=True)
class Explained:
    """Results along the chosen axis, and why that axis was chosen."""

    axis: Axis
    results: list[Any]
    choice: AxisChoice
    record: MapRecord | None
    """The executor's record of the map call that produced ``results``."""


@dataclass
class _Costs:
    """Seconds per item of each axis, measured on one shape of work: the instances and features counted, the
    ``shared`` object and the two tasks (a function by its code: a lambda made afresh per call is the same
    task). An instance's cost grows with the features and the shared data, a feature's with the instances;
    another task is other work: comparing two explanation methods on one executor reused the first one's
    costs and ran the second 20x slower than its better axis (hunt 62)."""

    shape: tuple[object, ...]
    seconds: dict[str, float]


_costs: weakref.WeakKeyDictionary[ParallelExecutor, dict[str, _Costs]] = weakref.WeakKeyDictionary()
"""Per executor and workload, what its last ``explain(auto)`` measured."""


class _Same:
    """An object told by identity without being kept alive: a model or explainer held here kept its memory,
    and an executor it referred to was never collected (review 61). Its id, and a weak reference where it
    takes one (a dead one means the id may be another object's now)."""

    __slots__ = ("ident", "ref")

    def __init__(self, obj: object) -> None:
        self.ident = id(obj)
        try:
            self.ref: weakref.ref[Any] | None = weakref.ref(obj)
        except TypeError:  # a list, a dict, an int: by id, as before
            self.ref = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and self.ident == other.ident \
            and (self.ref is None or self.ref() is not None)

    def __hash__(self) -> int:
        return self.ident


def _task_key(task: Callable[..., Any]) -> tuple[object, ...]:
    """A function by its code and what its closure holds (a lambda made afresh per call over the same objects is
    the same task; two closures of one factory, or one decorator's wrappers, over other objects are two: review
    62), a bound method by that and its object (two explainers' methods are two tasks: review 61), anything
    else by identity."""
    owner = getattr(task, "__self__", None)
    fn = getattr(task, "__func__", task)
    code = getattr(fn, "__code__", None)
    if code is None:
        return (_Same(task),)
    held = tuple(_Same(_held(cell)) for cell in getattr(fn, "__closure__", None) or ())
    return (code, *held) if owner is None else (code, *held, _Same(owner))


def _held(cell: Any) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _items(given: Any, name: str) -> Any:
    """The items as ``map`` gets them: an array stays one (``map``'s fast path: 200,000 rows made a list of
    rows pickled in 0.8 s against 0.02 s, hunt 62), a stream becomes a list (its first item is timed)."""
    given = _rows(given, name)
    if isinstance(given, (list, tuple, range, np.ndarray)):
        return given
    return list(given)  # a stream, a deque (which does not slice), a Series: their items, in order


class _Timed:
    """``fn(item)`` and the seconds it took where it ran: a top-level class, so it pickles to worker processes."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, item: Any) -> tuple[Any, float]:
        hidden = hide_running_loop()  # timed in the caller, it sees no loop, as the map's items do
        try:
            t0 = time.perf_counter()
            result = self.fn(item)
            return result, time.perf_counter() - t0
        finally:
            restore_running_loop(hidden)


def _time_first_items(executor: ParallelExecutor, firsts: dict[str, tuple[Callable[[Any], Any], Any]]
                      ) -> dict[str, tuple[Any, float]]:
    """Each axis' first item, run and timed: in the caller where items may run there, else on the executor's
    workers, side by side (where a ``worker_initializer`` ran: timed in the caller, the tasks failed on the
    model it loads, hunt 62)."""
    if planning.items_may_run_here(executor.config) and executor.config.worker_initializer is None:
        return {axis: _Timed(fn)(item) for axis, (fn, item) in firsts.items()}  # a config kept serial: submit
    # runs them here too, after the initializer (a map there runs it first; review 61)
    futures = {axis: executor.submit(_Timed(fn), item) for axis, (fn, item) in firsts.items()}
    return {axis: future.result() for axis, future in futures.items()}


@dataclass(frozen=True)
class _Split:
    """How an axis would run: its first item's result kept from timing it (``head``) or not, then a map."""

    axis: Axis
    head: bool
    seconds: float


def _split(axis: Axis, n: int, cost: float, timed: bool, workers: int, config: Any) -> _Split:
    """The time an axis of ``n`` items of ``cost`` takes from now: its timed first item kept, the rest mapped,
    serially where the config's floors keep so few; when only all of them reach the floor, all are mapped
    (the timed one again): 40 instances under ``min_instances_for_parallel=40`` ran serially as 39 (hunt 62)."""
    floor = max(2, planning.config_floor(config, axis) or 0)  # two at least: one item splits across nothing
    rest = n - 1 if timed else n
    if workers > 1 and rest >= floor:
        return _Split(axis, timed, _makespan(rest, workers, cost))
    if workers > 1 and timed and n >= floor:
        return _Split(axis, False, _makespan(n, workers, cost))
    return _Split(axis, timed, rest * cost)


def _auto(executor: ParallelExecutor, workload: str, instances: Any, features: Any,
          tasks: tuple[Callable[[Any], Any], Callable[[Any], Any]], shape: tuple[object, ...],
          workers: int) -> tuple[AxisChoice, dict[str, Any], _Split]:
    """The axis to run, chosen from what each costs from now: one item of each timed (its result kept) unless
    the executor's last call of ``workload`` measured this work."""
    known = _costs.setdefault(executor, {}).get(workload)
    seconds = dict(known.seconds) if known is not None and known.shape == shape else {}
    firsts = {axis: (fn, items[0]) for axis, fn, items in (("instance", tasks[0], instances),
                                                           ("feature", tasks[1], features)) if axis not in seconds}
    timed = _time_first_items(executor, firsts) if firsts else {}
    kept = {axis: result for axis, (result, _) in timed.items()}
    seconds.update({axis: took for axis, (_, took) in timed.items()})
    _costs[executor][workload] = _Costs(shape, seconds)
    n_i, n_f = len(instances), len(features)
    choice = _choose(n_i, n_f, workers, seconds.get("instance"), seconds.get("feature"))
    spi, spf = _per_item(n_i, n_f, seconds.get("instance"), seconds.get("feature"))
    assert spi is not None and spf is not None  # neither axis is empty
    splits = [_split("instance", n_i, spi, "instance" in kept, workers, executor.config),
              _split("feature", n_f, spf, "feature" in kept, workers, executor.config)]
    best = min(splits, key=lambda split: split.seconds)  # ties: instance, the axis calibrated-explanations takes
    return replace(choice, axis=best.axis, instance_seconds=splits[0].seconds,
                   feature_seconds=splits[1].seconds), kept, best


def _run(executor: ParallelExecutor, fn: Callable[[Any], Any], items: Any, head: list[Any], axis: Axis,
         workload: str) -> list[Any]:
    try:
        return head + executor.map(fn, items[len(head):], granularity=axis, workload=workload)
    except BaseException as exc:
        if head:  # the map numbers its items from the second: the first ran here to be timed
            exc.add_note(f"payoff.explain: the map's item numbers count from {axis} 1 of explain()'s {axis}s "
                         f"(its {axis} 0 ran first, alone, to time it): add 1 for the {axis}'s index")
        raise


def _learn(executor: ParallelExecutor, workload: str, axis: Axis) -> None:
    """The call's measured cost per item of ``axis`` stands for the next call of the same work."""
    record, known = executor.last_record, _costs.get(executor, {}).get(workload)
    if known is not None and record is not None and record.n_items and not record.n_errors:
        known.seconds[axis] = record.work_seconds / record.n_items


def explain(
    executor: ParallelExecutor,
    *,
    instances: Sequence[Any],
    features: Sequence[Any],
    instance_task: Callable[..., Any],
    feature_task: Callable[..., Any],
    shared: Any = None,
    granularity: str | None = None,
    workload: str = "explain",
) -> Explained:
    """Run the explanation on the axis that pays off best.

    ``granularity`` (default: the executor's config) is ``"instance"``,
    ``"feature"`` or ``"auto"``; a config fixed to one axis fixes ``"auto"``
    to it. With ``"auto"`` the axis is chosen by what each axis takes from
    now, from the measured cost per item: what the executor's last call of
    ``workload`` measured on the same work (the same tasks, ``shared`` and
    counts), otherwise one instance and one feature timed in the caller,
    whose results are kept (the other one is the price of measuring). Where
    no item may run in the caller (a ``worker_initializer``, a backend named
    for its worker processes, a pool of yours) the two are timed on the
    executor's workers, side by side (``submit``). The config's floors
    (``min_batch_size``, ``min_instances_for_parallel``) count. A DataFrame is
    refused (it iterates over its column names), as is an empty axis.
    """
    wanted = executor.config.granularity if granularity is None else granularity
    if wanted not in ("instance", "feature", "auto"):
        raise ValueError(f"granularity must be None, 'instance', 'feature' or 'auto', got {granularity!r}")
    instances, features = _items(instances, "instances"), _items(features, "features")
    for name, given in (("instances", instances), ("features", features)):
        if not len(given):
            raise ValueError(f"explain() needs at least one instance and one feature; {name} is empty (the other "
                             f"axis would run with nothing to explain)")
    run_instance = _bind(instance_task, shared, "instance_task")
    run_feature = _bind(feature_task, shared, "feature_task")
    names = {"instance": f"{workload}-instances", "feature": f"{workload}-features"}
    cfg = executor.config  # a call the config keeps in the caller runs on one worker, whatever the cores
    workers = 1 if cfg.strategy == "serial" or not cfg.enabled else planning.available_workers(cfg)
    if wanted == "auto" and cfg.granularity != "auto":  # the config allows its axis only (hunt 62)
        wanted = cfg.granularity
    kept: dict[str, Any] = {}
    if wanted != "auto":
        axis_fixed: Axis = "instance" if wanted == "instance" else "feature"
        choice = replace(_choose(len(instances), len(features), workers, None, None, how="config"), axis=axis_fixed)
        head = False
    else:
        shape = (len(instances), len(features), _Same(shared), _task_key(instance_task), _task_key(feature_task))
        choice, kept, split = _auto(executor, workload, instances, features, (run_instance, run_feature), shape,
                                    workers)
        head = split.head and choice.axis in kept
    axis = choice.axis
    fn, items = (run_instance, instances) if axis == "instance" else (run_feature, features)
    results = _run(executor, fn, items, [kept[axis]] if head else [], axis, names[axis])
    if wanted == "auto":
        _learn(executor, workload, axis)
    return Explained(axis, results, choice, executor.last_record)


__all__ = [
    "AXES",
    "FEATURE_WORKLOAD",
    "INSTANCE_WORKLOAD",
    "AxisChoice",
    "Explained",
    "choose_granularity",
    "explain",
    "explain_features",
    "explain_instances",
]
