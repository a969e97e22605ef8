"""payoff.explain: instance / feature / auto granularity for explanation workloads."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason
from payoff.explain import (
    AxisChoice,
    choose_granularity,
    explain,
    explain_features,
    explain_instances,
)
from tests.conftest import require

FORCE = {"tiny_workload_threshold": 0.0}

ROWS = np.random.default_rng(0).standard_normal((40, 6))
BACKGROUND = np.random.default_rng(1).standard_normal((2000, 6))  # ~94 KiB: travels in the function, once per worker


def row_effects(background: np.ndarray, row: np.ndarray) -> list[float]:
    """Per-feature effect for one instance (the instance axis)."""
    return [float(np.mean(np.abs(background[:, j] - row[j]))) for j in range(row.shape[0])]


def column_effect(state: tuple[np.ndarray, np.ndarray], j: int) -> float:
    """One feature's mean effect over every instance (the feature axis)."""
    background, rows = state
    return float(np.mean(np.abs(background[:200, j][None, :] - rows[:, j][:, None])))


_calls: dict[str, int] = {"instance": 0, "feature": 0}
_calls_lock = threading.Lock()


def counted_row(background: np.ndarray, row: np.ndarray) -> list[float]:
    with _calls_lock:
        _calls["instance"] += 1
    return row_effects(background, row)


def counted_column(state: tuple[np.ndarray, np.ndarray], j: int) -> float:
    with _calls_lock:
        _calls["feature"] += 1
    return column_effect(state, j)


def expected_rows() -> list[list[float]]:
    return [row_effects(BACKGROUND, r) for r in ROWS]


def expected_columns() -> list[float]:
    return [column_effect((BACKGROUND, ROWS), j) for j in range(ROWS.shape[1])]


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_both_axes_equal_a_loop(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE)) as ex:
        rows = explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND)
        by_instance = ex.last_record
        cols = explain_features(ex, column_effect, range(ROWS.shape[1]), shared=(BACKGROUND, ROWS))
        by_feature = ex.last_record
    assert rows == expected_rows()
    assert cols == expected_columns()
    assert by_instance is not None and by_feature is not None
    assert (by_instance.granularity, by_feature.granularity) == ("instance", "feature")
    assert (by_instance.workload, by_feature.workload) == ("explain-instances", "explain-features")
    if strategy != "serial":
        assert by_instance.mode == by_feature.mode == "parallel"


def test_shared_state_travels_once_per_worker_not_per_chunk() -> None:
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        assert explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND, chunk_size=2) == expected_rows()
        record = ex.last_record
    assert record is not None and record.n_chunks == 20
    heavy = [c for c in record.chunks if c.bytes_sent > BACKGROUND.nbytes]
    assert 1 <= len(heavy) <= 2, [c.bytes_sent for c in record.chunks]
    assert record.bytes_sent < 3 * BACKGROUND.nbytes


def test_per_axis_chunk_sizes_come_from_the_config() -> None:
    cfg = ParallelConfig(strategy="threads", instance_chunk_size=7, feature_chunk_size=2, **FORCE)
    with ParallelExecutor(cfg) as ex:
        explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND)
        instance_record = ex.last_record
        explain_features(ex, column_effect, range(6), shared=(BACKGROUND, ROWS))
        feature_record = ex.last_record
        explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND, chunk_size=5)
        explicit = ex.last_record
    assert instance_record is not None and feature_record is not None and explicit is not None
    for record, size in ((instance_record, 7), (feature_record, 2), (explicit, 5)):
        assert record.chunk_size == size
        pool_chunks = [c.n_items for c in record.chunks if c.where == "pool"]  # the probe runs in the caller
        assert pool_chunks and max(pool_chunks) == size


def test_a_config_for_the_other_axis_falls_back_visibly() -> None:
    cfg = ParallelConfig(strategy="threads", granularity="feature", **FORCE)
    with ParallelExecutor(cfg) as ex:
        with pytest.warns(ParallelFallbackWarning, match="granularity_mismatch") as caught:
            rows = explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND)
        record = ex.last_record
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            cols = explain_features(ex, column_effect, range(6), shared=(BACKGROUND, ROWS))
        feature_record = ex.last_record
    assert rows == expected_rows() and cols == expected_columns()
    assert record is not None and record.fallback_reason is Reason.GRANULARITY_MISMATCH
    assert record.mode == "serial"
    assert any(getattr(w.message, "reason", None) is Reason.GRANULARITY_MISMATCH for w in caught)
    assert feature_record is not None and feature_record.fallback_reason is None
    assert feature_record.mode == "parallel"


def test_auto_granularity_follows_the_call() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", granularity="auto", **FORCE)) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("error", ParallelFallbackWarning)
        explain_instances(ex, row_effects, list(ROWS), shared=BACKGROUND)
        first = ex.last_record
        explain_features(ex, column_effect, range(6), shared=(BACKGROUND, ROWS))
        second = ex.last_record
    assert first is not None and second is not None
    assert (first.granularity, second.granularity) == ("instance", "feature")
    assert first.fallback_reason is None and second.fallback_reason is None


# -- choosing the axis ------------------------------------------------------------------


def test_shape_decides_when_costs_are_unknown() -> None:
    assert choose_granularity(1000, 3, 2) == "instance"  # 3 features on 2 workers: a third idle
    assert choose_granularity(3, 1000, 2) == "feature"
    assert choose_granularity(100, 100, 4) == "instance"  # tie: the axis calibrated-explanations supports
    assert choose_granularity(5, 8, 4) == "feature"  # 2 rounds of 4 either way: 8 smaller items finish first
    assert choose_granularity(0, 8, 4) == "feature"
    assert choose_granularity(8, 0, 4) == "instance"
    assert choose_granularity(10, 3, 1) == "instance"


def test_measured_costs_decide_when_known() -> None:
    # per-feature tasks vectorise: 20 features x 0.01 s beat 1,000 instances x 0.005 s
    assert choose_granularity(1000, 20, 4, seconds_per_instance=0.005, seconds_per_feature=0.01) == "feature"
    assert choose_granularity(1000, 20, 4, seconds_per_instance=0.0001, seconds_per_feature=0.5) == "instance"
    # one known cost: the other axis is assumed to do the same total work
    assert choose_granularity(1000, 3, 4, seconds_per_instance=0.001) == "instance"


@pytest.mark.parametrize(("args", "kwargs"), [
    ((-1, 3, 2), {}), ((3, 3, 0), {}), ((3.5, 3, 2), {}), ((True, 3, 2), {}),
    ((3, 3, 2), {"seconds_per_instance": -1.0}), ((3, 3, 2), {"seconds_per_feature": "fast"}),
])
def test_bad_input_is_an_error(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"n_instances|n_features|workers|seconds_per"):
        choose_granularity(*args, **kwargs)  # type: ignore[arg-type]


def test_explain_auto_measures_once_then_uses_records() -> None:
    _calls.update(instance=0, feature=0)
    features = list(range(ROWS.shape[1]))
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as ex:
        first = explain(ex, instances=list(ROWS), features=features, instance_task=counted_row_bg,
                        feature_task=counted_column_bg, granularity="auto")
        probes = dict(_calls)
        _calls.update(instance=0, feature=0)
        second = explain(ex, instances=list(ROWS), features=features, instance_task=counted_row_bg,
                         feature_task=counted_column_bg, granularity="auto")
        measured = dict(_calls)
    # 40 instances x 6 features on one worker: the shape cannot decide, the measured costs do
    assert first.choice.how == "measured" and isinstance(first.choice, AxisChoice)
    n = {"instance": len(ROWS), "feature": len(features)}
    other = "feature" if first.axis == "instance" else "instance"
    assert probes == {first.axis: n[first.axis], other: 1}  # the chosen axis' probe result was kept
    assert measured == {second.axis: n[second.axis], "instance" if second.axis == "feature" else "feature": 0}
    assert first.record is not None and first.record.granularity == first.axis
    assert first.choice.why


def counted_row_bg(row: np.ndarray) -> list[float]:
    return counted_row(BACKGROUND, row)


def counted_column_bg(j: int) -> float:
    return counted_column((BACKGROUND, ROWS), j)


def test_explain_auto_picks_the_balanced_axis_and_returns_its_results() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=4, granularity="auto", **FORCE)) as ex:
        got = explain(ex, instances=list(ROWS), features=[0, 1, 2, 3, 4], instance_task=counted_row_bg,
                      feature_task=counted_column_bg)
    if got.axis == "instance":
        assert got.results == expected_rows()
    else:
        assert got.results == expected_columns()[:5]
    assert got.choice.workers == 4


@pytest.mark.parametrize("fixed", ["instance", "feature"])
def test_explain_with_a_fixed_granularity_uses_it_without_probing(fixed: str) -> None:
    _calls.update(instance=0, feature=0)
    with ParallelExecutor(ParallelConfig(strategy="threads", granularity=fixed, **FORCE)) as ex:  # type: ignore[arg-type]
        got = explain(ex, instances=list(ROWS), features=list(range(6)), instance_task=counted_row_bg,
                      feature_task=counted_column_bg)
    assert got.axis == fixed and got.choice.how == "config"
    assert _calls == {"instance": len(ROWS) if fixed == "instance" else 0, "feature": 6 if fixed == "feature" else 0}
    assert got.results == (expected_rows() if fixed == "instance" else expected_columns())


def test_explain_rejects_a_bad_granularity() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex, pytest.raises(ValueError, match="granularity"):
        explain(ex, instances=[1], features=[1], instance_task=abs, feature_task=abs, granularity="rows")


def test_explain_measures_again_when_the_data_changed_shape() -> None:
    """Costs measured on one call's data were reused for a call on a background 500 times larger (same
    executor, same workload): it chose the feature axis from the small data's costs and ran 300x slower than
    the instance axis. An instance's cost grows with the features and the shared data, a feature's with the
    instances: a change in any of them is measured again (one item of each axis, timed here)."""
    features = list(range(ROWS.shape[1]))
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as ex:
        def probes(rows: list[np.ndarray], shared: object) -> dict[str, int]:
            _calls.update(instance=0, feature=0)
            got = explain(ex, instances=rows, features=features, instance_task=counted_row,
                          feature_task=lambda state, j: counted_column((state, ROWS), j), shared=shared)
            other = "feature" if got.axis == "instance" else "instance"
            return {"other axis probed": _calls[other]}

        assert probes(list(ROWS), BACKGROUND) == {"other axis probed": 1}
        assert probes(list(ROWS), BACKGROUND) == {"other axis probed": 0}  # same data: the records decide
        assert probes(list(ROWS), BACKGROUND[:500].copy()) == {"other axis probed": 1}  # other shared data
        assert probes(list(ROWS[:20]), BACKGROUND) == {"other axis probed": 1}  # fewer instances


def test_explain_refuses_a_dataframe_and_an_empty_axis_and_names_a_bad_task() -> None:
    """A DataFrame iterated over its column names (3 results for 20 rows); an empty axis silently ran the
    other one; a task that was not callable was not named."""
    import importlib.util

    require(importlib.util.find_spec("pandas") is not None, "pandas (installed with calibrated-explanations)")
    import pandas
    frame = pandas.DataFrame(ROWS[:20, :3], columns=["age", "income", "score"])
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        with pytest.raises(TypeError, match=r"instances is a pandas DataFrame.*to_numpy\(\)"):
            explain_instances(ex, len, frame)
        with pytest.raises(TypeError, match="pandas DataFrame"):
            explain(ex, instances=frame, features=[0], instance_task=len, feature_task=len)
        for instances, features, empty in (([], [0, 1], "instances"), ([1, 2], [], "features")):
            with pytest.raises(ValueError, match=f"{empty} is empty"):
                explain(ex, instances=instances, features=features, instance_task=abs, feature_task=abs)
        with pytest.raises(TypeError, match="feature_task must be callable"):
            explain(ex, instances=[1], features=[1], instance_task=abs, feature_task="abs")  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [ParallelConfig(strategy="serial"), ParallelConfig(enabled=False)],
                         ids=["serial", "disabled"])
def test_a_choice_for_a_call_kept_serial_counts_one_worker(config: ParallelConfig) -> None:
    """With the config keeping every call in the caller, ``choice.why`` said "on 2 workers" (the machine's
    cores): the choice is made for the one worker the call runs on, and says so."""
    with ParallelExecutor(config) as ex:
        got = explain(ex, instances=list(ROWS[:8]), features=list(range(6)), instance_task=counted_row_bg,
                      feature_task=counted_column_bg, granularity="auto")
    assert got.record is not None and got.record.selected_strategy == "serial"
    assert got.choice.workers == 1 and "on 1 worker:" in got.choice.why, got.choice.why


# -- hunt 62 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["auto", "processes"])
def test_explain_auto_times_nothing_in_the_caller_where_workers_run_an_initializer(strategy: str) -> None:
    """The tasks need what the initializer loads in each worker: timed in the caller, where it never ran,
    ``explain(auto)`` raised (``explain_instances`` and a fixed axis worked). The two are timed on the
    executor's workers now, side by side, and their results kept."""
    from tests import tasks

    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.load_model,
                            worker_init_args=(3,), **FORCE)
    with ParallelExecutor(config) as ex:
        first = explain(ex, instances=list(range(40)), features=list(range(6)), instance_task=tasks.predict,
                        feature_task=tasks.predict)
        second = explain(ex, instances=list(range(40)), features=list(range(6)), instance_task=tasks.predict,
                         feature_task=tasks.predict)
    for got in (first, second):
        assert got.choice.how == "measured", got.choice
        assert got.results == [3 * x for x in range(40 if got.axis == "instance" else 6)]


def test_explain_auto_measures_another_task_on_the_same_data_again() -> None:
    """Two explanation methods compared on one executor, data and model: the second reused the first's costs
    (2.0-2.3 s against 0.1 s on its better axis, hunt 62). Another task is other work: both axes are timed."""
    features = list(range(ROWS.shape[1]))
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as ex:
        def probes(instance_task: Any, feature_task: Any) -> dict[str, int]:
            _calls.update(instance=0, feature=0)
            got = explain(ex, instances=list(ROWS), features=features, instance_task=instance_task,
                          feature_task=feature_task)
            return {"other axis probed": _calls["feature" if got.axis == "instance" else "instance"]}

        assert probes(counted_row_bg, counted_column_bg) == {"other axis probed": 1}
        assert probes(counted_row_bg, counted_column_bg) == {"other axis probed": 0}
        def fresh() -> Any:
            return lambda j: counted_column_bg(j)

        assert probes(counted_row_bg, fresh()) == {"other axis probed": 1}, "another task"
        assert probes(counted_row_bg, fresh()) == {"other axis probed": 0}, "a lambda made afresh is the same task"


def test_explain_auto_reads_no_other_calls_record_of_its_workload_name() -> None:
    """``explain_instances``' default workload is the one ``explain()`` read its instance costs from: one
    unrelated call of a trivial task between two identical explains moved the second to the other axis
    (1.9x slower, hunt 62)."""
    features = list(range(ROWS.shape[1]))
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as ex:
        first = explain(ex, instances=list(ROWS), features=features, instance_task=counted_row_bg,
                        feature_task=counted_column_bg)
        explain_instances(ex, abs, list(range(50_000)))  # workload "explain-instances", items of ~0.1 us
        _calls.update(instance=0, feature=0)
        second = explain(ex, instances=list(ROWS), features=features, instance_task=counted_row_bg,
                         feature_task=counted_column_bg)
    assert second.choice.seconds_per_instance is not None and second.choice.seconds_per_instance > 1e-6, \
        second.choice
    assert second.axis == first.axis or first.record is None, (first.choice, second.choice)


def test_explain_auto_keeps_to_the_axis_the_config_allows() -> None:
    """``CE_PARALLEL=granularity=instance`` and ``explain(granularity="auto")`` chose the feature axis, which
    then ran serially (``granularity_mismatch``) with advice to set granularity='auto' (hunt 62)."""
    _calls.update(instance=0, feature=0)
    with ParallelExecutor(ParallelConfig(strategy="threads", granularity="instance", **FORCE)) as ex:
        got = explain(ex, instances=list(ROWS), features=list(range(6)), instance_task=counted_row_bg,
                      feature_task=counted_column_bg, granularity="auto")
    assert got.axis == "instance" and got.choice.how == "config" and _calls["feature"] == 0
    assert got.record is not None and got.record.fallback_reason is not Reason.GRANULARITY_MISMATCH


def sleepy_column(j: int) -> float:
    """Far dearer than a row, so the one row ``auto`` times picks the instance axis even when a loaded machine
    stalls it: at 0.02 s a row timed at over 2.6 ms (a stall) chose the features (a CI run, 2026-12-07)."""
    time.sleep(0.2)
    return float(j)


def row_or_raise(row: np.ndarray) -> float:
    if row[0] == ROWS[5, 0]:
        raise ValueError("instance 5 is bad")
    return float(row.sum())


def test_explain_auto_counts_the_instance_it_timed_against_the_floor_and_in_errors() -> None:
    """With ``min_instances_for_parallel=40`` and 40 instances, ``explain(auto)`` mapped the 39 after the one
    it timed, and ran them serially ("39 items is below the minimum of 40"); an error in instance 5 was
    named "item 4" (hunt 62)."""
    config = ParallelConfig(strategy="threads", max_workers=2, min_instances_for_parallel=40, **FORCE)
    with ParallelExecutor(config) as ex:
        got = explain(ex, instances=ROWS, features=list(range(6)), instance_task=counted_row_bg,
                      feature_task=sleepy_column, granularity="auto")
        assert got.axis == "instance", got.choice
        assert got.record is not None and got.record.n_items == 40 and got.record.selected_strategy == "threads"
        assert got.results == expected_rows()
        with pytest.raises(ValueError, match="instance 5 is bad") as raised:
            explain(ex, instances=ROWS[:30], features=list(range(6)), instance_task=row_or_raise,
                    feature_task=sleepy_column, granularity="auto", workload="raises")
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "item 4 of the map" in notes and "add 1 for the instance's index" in notes, notes


class _Watched(ParallelExecutor):
    """Notes what each map got as its items."""

    seen: list[type] = []

    def map(self, fn: Any, *iterables: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.seen.append(type(iterables[0]))
        return super().map(fn, *iterables, **kwargs)


@pytest.mark.parametrize("granularity", ["instance", "auto"])
def test_explain_hands_an_array_of_instances_to_map_as_an_array(granularity: str) -> None:
    """A list of rows lost map's array fast path: 200,000 rows pickled in 0.8 s against 0.02 s, and
    ``explain(granularity="instance")`` ran 2.4x slower than ``explain_instances`` (hunt 62)."""
    with _Watched(ParallelConfig(strategy="serial")) as ex:
        ex.seen.clear()
        got = explain(ex, instances=ROWS, features=list(range(6)), instance_task=counted_row_bg,
                      feature_task=sleepy_column, granularity=granularity)
    assert got.axis == "instance" and ex.seen == [np.ndarray], ex.seen
    assert got.results == expected_rows()


def test_choose_granularity_takes_numpys_numbers_and_refuses_an_infinite_cost() -> None:
    """``choose_granularity(X.shape[0], ...)`` refused a numpy integer as "not an int"; an infinite cost was
    taken, and its axis chosen (hunt 62)."""
    assert choose_granularity(np.int64(100), np.int32(5), np.int64(2),
                              seconds_per_instance=np.float32(0.01)) == "instance"
    with pytest.raises(ValueError, match="finite number of seconds"):
        choose_granularity(100, 5, 2, seconds_per_instance=float("inf"))
    with pytest.raises(ValueError, match="whole number"):
        choose_granularity(np.float64(100.0), 5, 2)  # type: ignore[arg-type]


# -- review 61 -----------------------------------------------------------------------------------------------


class _Explainer:
    """An explainer of the user's: its method is the task, and it holds the executor."""

    def __init__(self, executor: ParallelExecutor, scale: float) -> None:
        self.executor, self.scale = executor, scale

    def row(self, row: np.ndarray) -> float:
        with _calls_lock:
            _calls["instance"] += 1
        return float(row.sum()) * self.scale

    def column(self, j: int) -> float:
        with _calls_lock:
            _calls["feature"] += 1
        return float(j) * self.scale


def test_explain_auto_keeps_no_user_object_alive_and_tells_two_explainers_apart() -> None:
    """The cost memo held ``shared`` (a model, background data) for the executor's life, and an explainer
    that held its executor kept it from ever being collected; two explainers' bound methods counted as one
    task, so the second reused the first's costs (review 61)."""
    import gc
    import weakref

    ex = ParallelExecutor(ParallelConfig(strategy="serial"))
    background = BACKGROUND.copy()
    gone = weakref.ref(background)
    explain(ex, instances=ROWS, features=list(range(6)), instance_task=counted_row,
            feature_task=lambda bg, j: counted_column((bg, ROWS), j), shared=background, granularity="auto")
    del background
    gc.collect()
    assert gone() is None, "the shared data outlived its last use"
    first, second = _Explainer(ex, 1.0), _Explainer(ex, 2.0)
    for explainer, probed in ((first, 1), (first, 0), (second, 1)):
        _calls.update(instance=0, feature=0)
        got = explain(ex, instances=ROWS, features=list(range(6)), instance_task=explainer.row,
                      feature_task=explainer.column, granularity="auto")
        assert _calls["feature" if got.axis == "instance" else "instance"] == probed, (explainer.scale, _calls)
    executor = weakref.ref(ex)
    ex.shutdown()
    del ex, first, second, explainer, got
    gc.collect()
    assert executor() is None, "an explainer holding its executor kept it alive"


def test_explain_takes_a_deque_and_times_under_a_serial_config_after_the_initializer() -> None:
    """A deque (which does not slice) failed every granularity; under ``strategy="serial"`` with a
    ``worker_initializer`` the tasks were timed before it ran here (review 61)."""
    import collections

    from tests import tasks

    config = ParallelConfig(strategy="serial", worker_initializer=tasks.load_model, worker_init_args=(3,))
    with ParallelExecutor(config) as ex:
        for granularity in ("auto", "instance", "feature"):
            got = explain(ex, instances=collections.deque(range(10)), features=collections.deque(range(4)),
                          instance_task=tasks.predict, feature_task=tasks.predict, granularity=granularity)
            assert got.results == [3 * x for x in range(10 if got.axis == "instance" else 4)], granularity


def _made(scale: list[float]) -> tuple[Any, Any]:
    """Two tasks of one factory, over ``scale``: another call of it makes other tasks of the same code."""
    def row(r: np.ndarray) -> float:
        return counted_row_bg(r)[0] * scale[0]

    def column(j: int) -> float:
        return counted_column_bg(j) * scale[0]

    return row, column


def test_explain_auto_tells_closures_of_one_factory_over_other_objects_apart() -> None:
    """Closures of one factory (or one decorator's wrappers) share their code: the memo took them for one task
    and reused the other's costs, 0.50 s against 0.058 s on the better axis (review 62). Over the same objects
    they are the same task."""
    scale = [1.0]
    with ParallelExecutor(ParallelConfig(strategy="serial", granularity="auto")) as ex:
        def probes(tasks_: tuple[Any, Any]) -> int:
            _calls.update(instance=0, feature=0)
            got = explain(ex, instances=ROWS, features=list(range(6)), instance_task=tasks_[0],
                          feature_task=tasks_[1])
            return _calls["feature" if got.axis == "instance" else "instance"]

        assert probes(_made(scale)) == 1
        assert probes(_made(scale)) == 0, "made afresh over the same objects: the same task"
        assert probes(_made([2.0])) == 1, "over another object: another task"
