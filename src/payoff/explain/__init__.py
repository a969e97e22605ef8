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
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from payoff import planning
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


def _estimates(n_instances: int, n_features: int, workers: int, spi: float | None,
               spf: float | None) -> tuple[float, float]:
    """Makespans per axis. An unknown cost is inferred from the other axis' total (same work, other split)."""
    if spi is None and spf is None:
        total = 1.0
        spi = total / n_instances if n_instances else None
        spf = total / n_features if n_features else None
    elif spi is None:
        assert spf is not None
        spi = spf * n_features / n_instances if n_instances else None
    elif spf is None:
        spf = spi * n_instances / n_features if n_features else None
    inst = _makespan(n_instances, workers, spi) if spi is not None else math.inf
    feat = _makespan(n_features, workers, spf) if spf is not None else math.inf
    return inst, feat


def _check_counts(n_instances: object, n_features: object, workers: object) -> None:
    for name, value, low in (("n_instances", n_instances, 0), ("n_features", n_features, 0),
                             ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_cost(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
        raise ValueError(f"{name} must be None or seconds >= 0, got {value!r}")


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
    _check_counts(n_instances, n_features, workers)
    _check_cost("seconds_per_instance", spi)
    _check_cost("seconds_per_feature", spf)
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


_probed: weakref.WeakKeyDictionary[ParallelExecutor, dict[str, float]] = weakref.WeakKeyDictionary()
"""Probe timings per executor, for axes that have no record yet."""
_shapes: weakref.WeakKeyDictionary[ParallelExecutor, dict[str, tuple[int, int, int]]] = weakref.WeakKeyDictionary()
"""Per executor and workload, the instances, features and ``shared`` (by id) its costs were measured on: an
instance's cost grows with the features and the shared data, a feature's with the instances. A second call
on a background 500 times larger reused the first call's costs and ran the axis 300 times slower."""


def _measured_cost(executor: ParallelExecutor, workload: str) -> float | None:
    """Seconds per item from this executor's most recent clean call of ``workload``, else an earlier probe."""
    for record in reversed(executor.records):
        if record.workload == workload and record.n_items and not record.n_errors:
            return record.work_seconds / record.n_items
    return _probed.get(executor, {}).get(workload)


def _timed(fn: Callable[[Any], Any], item: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn(item)
    return result, time.perf_counter() - t0


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
    ``"feature"`` or ``"auto"``. With ``"auto"`` the axis is chosen by
    :func:`choose_granularity` from the shape and the measured cost per item:
    the executor's earlier records of ``{workload}-instances`` /
    ``{workload}-features`` when the last call of ``workload`` had as many
    instances and features and the same ``shared``, otherwise one instance and
    one feature timed in the caller (remembered for the next call). A
    DataFrame is refused (it iterates over its column names), as is an empty
    axis. The probe
    result of the chosen axis is kept (not recomputed); the other one is the
    price of measuring.
    """
    wanted = executor.config.granularity if granularity is None else granularity
    if wanted not in ("instance", "feature", "auto"):
        raise ValueError(f"granularity must be None, 'instance', 'feature' or 'auto', got {granularity!r}")
    instances, features = list(_rows(instances)), list(features)
    for name, given in (("instances", instances), ("features", features)):
        if not given:
            raise ValueError(f"explain() needs at least one instance and one feature; {name} is empty (the other "
                             f"axis would run with nothing to explain)")
    run_instance = _bind(instance_task, shared, "instance_task")
    run_feature = _bind(feature_task, shared, "feature_task")
    names = {"instance": f"{workload}-instances", "feature": f"{workload}-features"}
    cfg = executor.config  # a call the config keeps in the caller runs on one worker, whatever the cores
    workers = 1 if cfg.strategy == "serial" or not cfg.enabled else planning.available_workers(cfg)
    kept: dict[str, Any] = {}
    if wanted != "auto":
        axis_fixed: Axis = "instance" if wanted == "instance" else "feature"
        choice = replace(_choose(len(instances), len(features), workers, None, None, how="config"), axis=axis_fixed)
    else:
        shape = (len(instances), len(features), id(shared))
        same = _shapes.setdefault(executor, {}).get(workload) == shape
        _shapes[executor][workload] = shape
        spi = _measured_cost(executor, names["instance"]) if same else None
        spf = _measured_cost(executor, names["feature"]) if same else None
        if spi is None and instances:
            kept["instance"], spi = _timed(run_instance, instances[0])
            _probed.setdefault(executor, {})[names["instance"]] = spi
        if spf is None and features:
            kept["feature"], spf = _timed(run_feature, features[0])
            _probed.setdefault(executor, {})[names["feature"]] = spf
        choice = _choose(len(instances), len(features), workers, spi, spf)
    axis = choice.axis
    fn, items = (run_instance, instances) if axis == "instance" else (run_feature, features)
    head = [kept[axis]] if axis in kept else []
    rest = executor.map(fn, items[len(head):], granularity=axis, workload=names[axis])
    return Explained(axis, head + rest, choice, executor.last_record)


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
