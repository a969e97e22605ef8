"""calibrated-explanations 1.0.2 on payoff, with the real library (no mocks).

Small random forests (20 trees) and 60 test instances keep the file fast;
every comparison is against CE's own serial explanation of the same data.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelFallbackWarning, Reason
from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats
from tests.conftest import require
from tests.test_ce_codec import assert_identical

try:
    import calibrated_explanations as ce
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
except ImportError:  # pragma: no cover - reported by require() in every test
    ce = None

from payoff.integrations.calibrated_explanations import (
    ALTERNATIVE_PLUGIN,
    FACTUAL_PLUGIN,
    CEParallelExecutor,
    ce_chunk_sizes,
    enable,
    merge,
)
from payoff.integrations.calibrated_explanations import executor as ce_executor_module

FORCE: dict[str, Any] = {"tiny_workload_threshold": 0.0}
"""Parallel whatever it costs: these tests check results and reporting, not the planner."""
N_TEST = 60


@pytest.fixture(autouse=True)
def _ce_installed() -> None:
    require(ce is not None and getattr(ce, "__version__", "") == "1.0.2",
            "calibrated-explanations 1.0.2 with scikit-learn (the [ce] extra)")


def _data(task: str) -> tuple[np.ndarray, ...]:
    if task == "classification":
        x, y = make_classification(n_samples=560, n_features=8, n_informative=5, random_state=0)
    else:
        x, y = make_regression(n_samples=560, n_features=8, noise=10.0, random_state=0)
    return x[:300], y[:300], x[300:500], y[300:500], x[500:500 + N_TEST]


def _wrapper(task: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_cal, y_cal, x_test = _data(task)
    model = (RandomForestClassifier if task == "classification" else RandomForestRegressor)(
        n_estimators=20, random_state=0, n_jobs=1)
    wrapper = ce.WrapCalibratedExplainer(model)
    wrapper.fit(x_train, y_train)
    wrapper.calibrate(x_cal, y_cal)
    return wrapper, x_cal, y_cal, x_test


def arrays(explanations: Any) -> dict[str, np.ndarray]:
    """Per-instance numbers of a CalibratedExplanations: weights, perturbed predictions, prediction, intervals."""
    out = {}
    for attr in ("feature_weights", "feature_predict", "prediction"):
        for key in ("predict", "low", "high"):
            out[f"{attr}[{key}]"] = np.array(
                [np.asarray(getattr(e, attr)[key], dtype=float) for e in explanations.explanations])
    out["index"] = np.array([e.index for e in explanations.explanations])
    return out


def assert_same(expected: Any, got: Any) -> None:
    a, b = arrays(expected), arrays(got)
    assert len(got.explanations) == len(expected.explanations)
    for key in a:
        assert a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    for want, have in zip(expected.explanations, got.explanations, strict=True):
        for attr in CHUNK_INDEPENDENT:
            assert_identical(_field(want, attr), _field(have, attr), sharing=False)  # types and bytes too


CHUNK_INDEPENDENT = ("conditions", "feature_weights", "feature_predict", "prediction")
"""What CE computes the same whichever of its paths runs and however it splits the instances. Its own
chunked explanations differ from its serial ones in ``rules`` (sampled values), ``binned`` (rule values,
bin predictions) and the full probabilities (those of the chunk), and its legacy path (its retry after a
failure) in ``binned`` counts; against CE's own chunked path every field is compared."""


def _state(explanation: Any) -> dict[str, Any]:
    """Everything an explanation holds but its timing and its collection (compared on their own)."""
    return {k: v for k, v in vars(explanation).items() if k not in ("explain_time", "calibrated_explanations")}


def _field(explanation: Any, name: str) -> Any:
    value = getattr(explanation, name)
    if name == "prediction":
        return {k: v for k, v in value.items() if k != "__full_probabilities__"}
    return value


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_explanations_through_payoff_equal_ce_serial(task: str) -> None:
    wrapper, _, _, x_test = _wrapper(task)
    factual = wrapper.explain_factual(x_test)
    alternatives = wrapper.explore_alternatives(x_test[:20])
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            got = wrapper.explain_factual(x_test)
            factual_record = ex.last_record
            got_alternatives = wrapper.explore_alternatives(x_test[:20])
            alternative_record = ex.last_record
    finally:
        ex.close()
    assert_same(factual, got)
    assert_same(alternatives, got_alternatives)
    for record in (factual_record, alternative_record):
        assert record is not None
        assert record.mode == "parallel" and record.selected_strategy == "processes"
        assert record.fallback_reason is None and record.n_chunks >= 2
        assert record.granularity == "instance" and record.workload == "calibrated-explanations"
    assert factual_record is not alternative_record
    assert ex.metrics.maps == 2 and ex.metrics.failures == 0
    assert ex.metrics.submitted == N_TEST + 20  # CE's tasks: one per instance, regrouped by payoff


@pytest.mark.parametrize(("task", "call", "thresholds"), [
    ("classification", "explain_factual", False), ("classification", "explore_alternatives", False),
    ("regression", "explain_factual", True), ("regression", "explore_alternatives", False),
])
def test_every_field_equals_ces_own_explanations_in_the_same_chunks(task: str, call: str, thresholds: bool) -> None:
    """Chunks of 15 both ways: CE's sequential executor and payoff's processes (compact results) agree on all.

    Per-instance thresholds (probabilistic regression, 0.2 s an instance in CE itself) on 20 instances in
    chunks of 5: still several chunks, each with its own slice of the thresholds."""
    from calibrated_explanations.parallel import ParallelConfig as CEConfig
    from calibrated_explanations.parallel import ParallelExecutor as CEExecutor

    wrapper, x_cal, y_cal, x_test = _wrapper(task)
    n, chunk = (20, 5) if thresholds else (N_TEST, 15)
    x_test = x_test[:n]
    kwargs = {"threshold": np.linspace(-50.0, 50.0, n)} if thresholds else {}
    ce_executor = CEExecutor(CEConfig(enabled=True, strategy="sequential", instance_chunk_size=chunk,
                                      min_instances_for_parallel=1))
    wrapper.calibrate(x_cal, y_cal, perf_parallel=ce_executor, factual_plugin=FACTUAL_PLUGIN,
                      alternative_plugin=ALTERNATIVE_PLUGIN)
    expected = getattr(wrapper, call)(x_test, **kwargs)
    merge.repair(expected)  # each instance's own row and the call's probabilities, as a serial explain gives
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, instance_chunk_size=chunk, **FORCE))
    got, record = _explained(ex, lambda: getattr(wrapper, call)(x_test, **kwargs))
    assert record is not None and record.mode == "parallel" and record.n_chunks == n // chunk
    assert len(got.explanations) == len(expected.explanations) == n
    for want, have in zip(expected.explanations, got.explanations, strict=True):
        assert type(have) is type(want) and have.calibrated_explanations is got
        mine, theirs = _state(have), _state(want)
        assert list(mine) == list(theirs)
        for attr in theirs:
            assert_identical(theirs[attr], mine[attr], sharing=False)


def _explained(ex: Any, explain: Callable[[], Any]) -> tuple[Any, Any]:
    """``explain()``'s result and the executor's record of it; the executor closed after, whatever happened."""
    try:
        return explain(), ex.last_record
    finally:
        ex.close()


def _serial_and_in_three_chunks(wrapper: Any, call: str, x_test: np.ndarray) -> tuple[Any, Any]:
    """CE's own serial explanations of 12 instances, then payoff's in chunks of 4 on processes."""
    expected = getattr(wrapper, call)(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, instance_chunk_size=4, **FORCE))
    got, record = _explained(ex, lambda: getattr(wrapper, call)(x_test))
    assert record is not None and record.n_chunks == 3
    return expected, got


@pytest.mark.parametrize("call", ["explain_factual", "explore_alternatives"])
def test_merged_explanations_hold_their_own_rows_and_the_calls_probabilities_as_serial_ones_do(call: str) -> None:
    """CE's instance-parallel merge gave every explanation the whole test matrix as its ``x_test`` and its
    chunk's probabilities: ``add_conjunctions()`` then added no conjunctive rule (140 serially for 7
    instances) and ``.probabilities`` had a row per instance per chunk (25 for 7). Both as serial now."""
    wrapper, _, _, x_test = _wrapper("classification")
    x_test = x_test[:12]
    expected, got = _serial_and_in_three_chunks(wrapper, call, x_test)
    for want, have in zip(expected.explanations, got.explanations, strict=True):
        np.testing.assert_array_equal(have.x_test, want.x_test)
    if call == "explain_factual":  # CE keeps no probabilities with alternatives
        assert got.probabilities.shape == expected.probabilities.shape == (12, 2)
        np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    assert (got.probabilities is None) == (expected.probabilities is None)
    expected.add_conjunctions()
    got.add_conjunctions()
    conjunctive = [sum(map(bool, e.conjunctive_rules["is_conjunctive"])) for e in expected.explanations]
    assert sum(conjunctive) > 0, "the serial explanations have no conjunctive rule: nothing was compared"
    assert [sum(map(bool, e.conjunctive_rules["is_conjunctive"])) for e in got.explanations] == conjunctive


def test_probabilistic_regression_with_one_threshold_for_every_instance() -> None:
    """A scalar threshold goes to every regrouped task whole. (Per-instance thresholds, sliced with CE's tasks
    and rejoined, are compared field by field in the test above.)"""
    wrapper, _, _, x_test = _wrapper("regression")
    expected = wrapper.explain_factual(x_test, threshold=0.0)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    got, record = _explained(ex, lambda: wrapper.explain_factual(x_test, threshold=0.0))
    assert_same(expected, got)
    assert record is not None and record.mode == "parallel"


def test_the_explainer_travels_once_per_worker_not_once_per_task() -> None:
    wrapper, _, _, x_test = _wrapper("classification")
    explainer_bytes = len(pickle.dumps(wrapper.explainer, protocol=pickle.HIGHEST_PROTOCOL))
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, instance_chunk_size=6, **FORCE))
    try:
        wrapper.explain_factual(x_test)
        first = ex.last_record
        wrapper.explain_factual(x_test)  # the first explain completes the explainer's state (its discretizer)
        wrapper.explain_factual(x_test)
        third = ex.last_record
    finally:
        ex.close()
    assert first is not None and third is not None
    assert first.n_chunks == N_TEST // 6 == 10
    heavy = [c for c in first.chunks if c.bytes_sent >= explainer_bytes // 2]
    assert 1 <= len(heavy) <= 2, [c.bytes_sent for c in first.chunks]
    light = [c.bytes_sent for c in first.chunks if c not in heavy]
    assert max(light) < explainer_bytes // 10
    assert third.pool_reused and third.bytes_sent < explainer_bytes // 2  # unchanged: cached in the workers
    assert ex.last_chunk_sizes == [6] * (N_TEST // 6)


def test_the_executor_reports_a_concrete_strategy_never_auto() -> None:
    auto = CEParallelExecutor(ParallelConfig(strategy="auto"))
    assert auto.config.strategy == auto.active_strategy_name == "processes"
    assert auto.config.granularity == "instance" and auto.config.worker_initializer is None
    assert auto.config.instance_chunk_size == 1 and auto.config.min_instances_for_parallel == 1
    one = CEParallelExecutor(ParallelConfig(strategy="auto", max_workers=1))
    assert one.config.strategy == one.active_strategy_name == "sequential"
    for name in ("threads", "joblib", "serial"):
        ex = CEParallelExecutor(ParallelConfig(strategy=name))
        assert ex.config.strategy == ({"serial": "sequential"}.get(name, name))
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(**FORCE))
    try:
        assert wrapper.explainer.parallel_executor is ex and wrapper.parallel_executor is ex
        assert wrapper.explainer.plugin_manager.explanation_plugin_fallbacks["factual"][0] == FACTUAL_PLUGIN
        assert wrapper.explainer.plugin_manager.explanation_plugin_fallbacks["alternative"][0] == ALTERNATIVE_PLUGIN
        wrapper.explain_factual(x_test)
        record = ex.last_record
    finally:
        ex.close()
    # CE reads the concrete backend; the record says what the user asked, and that auto chose it (trial 50: it
    # said processes and explicit_strategy, and the warning's advice to name the strategy read as done already)
    assert record is not None and record.requested_strategy == "auto", record
    assert record.selected_strategy == "processes" and record.decision_reason is Reason.AUTO_CPU_BOUND, record
    assert ex.config.strategy == "processes"


def test_a_feature_granularity_config_falls_back_visibly_and_auto_follows_the_call() -> None:
    wrapper, _, _, x_test = _wrapper("classification")
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, granularity="feature", **FORCE))
    try:
        assert ex.config.granularity == "instance"  # what CE needs to call map at all
        with pytest.warns(ParallelFallbackWarning, match="granularity_mismatch") as caught:
            got = wrapper.explain_factual(x_test)
        record = ex.last_record
    finally:
        ex.close()
    assert_same(expected, got)
    assert record is not None
    assert record.fallback_reason is Reason.GRANULARITY_MISMATCH and record.mode == "serial"
    assert any(getattr(w.message, "reason", None) is Reason.GRANULARITY_MISMATCH for w in caught)
    assert ex.metrics.fallbacks == 1
    # the explain's own account agrees, and it runs as one task, as any explain kept here does (it said "7 tasks
    # ... on 2 workers" and ran 8 tasks in the caller: CE trial 44, F1)
    assert "granularity" in ex.last_decision and "workers" not in ex.last_decision, ex.last_decision
    assert ex.last_chunk_sizes == [len(x_test)] and record.n_chunks == 1, record.summary()

    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, granularity="auto", **FORCE))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            got = wrapper.explain_factual(x_test)
        record = ex.last_record
    finally:
        ex.close()
    assert_same(expected, got)
    assert record is not None and record.mode == "parallel" and record.fallback_reason is None


def test_entered_but_never_called_is_warned() -> None:
    """CE's default plugin enters the executor and never maps: CE says nothing, payoff does."""
    wrapper, x_cal, y_cal, x_test = _wrapper("classification")
    expected = wrapper.explain_factual(x_test)
    ex = CEParallelExecutor(ParallelConfig(strategy="processes", **FORCE))
    wrapper.calibrate(x_cal, y_cal, perf_parallel=ex)  # the executor, but CE's sequential plugin
    ex.bind(wrapper.explainer)
    with pytest.warns(ParallelFallbackWarning, match="never called map") as caught:
        got = wrapper.explain_factual(x_test)
    assert_same(expected, got)
    assert ex.metrics.maps == 0 and ex.metrics.fallbacks == 1
    messages = [w.message for w in caught if isinstance(w.message, ParallelFallbackWarning)]
    assert messages and messages[0].reason is Reason.EXECUTOR_UNUSED
    assert f"{N_TEST} items" in str(messages[0]) and "core.explanation.factual.sequential" in str(messages[0])
    assert caught[0].filename == __file__  # points at the user's explain line, not into CE
    record = ex.last_record  # and it is a record like any other, so metrics and spans count it
    assert record is not None and record.fallback_reason is Reason.EXECUTOR_UNUSED
    assert record.n_items == N_TEST and record.mode == "serial"
    assert record.n_chunks == 1 and record.items_done == N_TEST, record  # its items ran here, as a loop

    enable(wrapper, executor=ex)  # now the plugins are selected: no warning, and a single instance is fine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            wrapper.explain_factual(x_test[:1])
            assert ex.metrics.maps == 0
            one = ex.last_record  # recorded all the same: last_record showed the explain before it
            wrapper.explain_factual(x_test)
    finally:
        ex.close()
    assert ex.metrics.maps == 1
    assert one is not None and one is not record and one.n_items == 1 and one.mode == "serial", one
    assert one.fallback_reason is Reason.TOO_FEW_ITEMS and "single instance" in one.fallback_detail, one
    assert "several in one call" in one.summary() and "tiny_workload_threshold" not in one.summary(), one.summary()
    # the loop it is: it read 0.0x with no item done, and such requests drew the dashboard's speedup to 0 (trial 50)
    assert one.items_done == 1 and one.serial_estimate_seconds > 0 and 0.5 < one.speedup <= 1.0, one


def test_a_small_explain_falls_back_with_the_adapters_reason_at_the_users_line() -> None:
    """A small explain runs in one task. The adapter decided that from the instance count: the record and the
    warning say so, not that the one task it made is "too few to split"; the advice names the knob that
    would change it, and the warning names the user's explain line, not CE's internals."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", min_instances_for_parallel=N_TEST + 1))
    try:
        with pytest.warns(ParallelFallbackWarning) as caught:
            wrapper.explain_factual(x_test)
    finally:
        ex.close()
    record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.TINY_WORKLOAD
    assert record.fallback_detail == ex.last_decision
    assert f"below the minimum of {N_TEST + 1} for parallel" in record.fallback_detail
    [warning] = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert warning.filename == __file__
    assert ex.last_decision.startswith(f"{N_TEST} instances in one task")
    assert "too few to split" not in str(warning.message) and ex.last_decision in str(warning.message)
    assert "min_instances_for_parallel" in str(warning.message)
    assert str(warning.message).startswith(f"payoff: {N_TEST} instances in 1 task of workload ")


def test_tiny_in_ce_parallel_counts_instances_as_ce_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CE_PARALLEL=processes,tiny=N``: CE keeps an explain of fewer than N instances in the caller; payoff read
    N as seconds, and an explain of 200 instances under ``tiny=8`` never reached the processes (hunt 57, F2)."""
    wrapper, _, _, x_test = _wrapper("classification")
    monkeypatch.setenv("PAYOFF_PARALLEL", "tiny=0")  # payoff's seconds: no explain is too little work for a pool
    for tiny, stays in ((N_TEST + 1, True), (2, False)):
        monkeypatch.setenv("CE_PARALLEL", f"processes,workers=2,tiny={tiny}")
        ex = enable(wrapper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wrapper.explain_factual(x_test)
        finally:
            ex.close()
        record = ex.last_record
        assert record is not None
        if stays:
            assert record.fallback_reason is Reason.TINY_WORKLOAD, record
            assert f"below the minimum of {tiny} for parallel" in record.fallback_detail, record.fallback_detail
        else:
            assert record.selected_strategy == "processes" and record.fallback_reason is None, record


def test_a_disabled_explain_is_recorded_as_disabled_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """enabled=False (CE_PARALLEL=off): CE explains in the caller; the documented
    ``executor.last_record.summary()`` still has a record to read, with reason ``disabled``. CE's
    instance-parallel plugin, told it was disabled, declined and CE ran its legacy path instead (4.4x slower
    than CE's own default, and a logged warning); told it was enabled, it maps, and payoff runs one task here."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(enabled=False))
    assert ex.strategy == "serial", "a disabled executor named the strategy it does not run"
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
            warnings.simplefilter("error", ParallelFallbackWarning)
            wrapper.explain_factual(x_test)
    finally:
        ex.close()
    record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.DISABLED
    assert record.items_said == f"{N_TEST} instances in 1 task" and record.mode == "serial"
    assert "disabled" in record.summary()
    assert [r.getMessage() for r in caplog.records if "legacy" in r.getMessage()] == []


def test_a_single_instance_explain_takes_ces_plugin_path_without_a_logged_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """CE was told not to take fewer than 2 instances in parallel: its plugin declined each single-instance
    explain, and CE logged "Execution plugin unsupported; falling back to legacy sequential execution"."""
    wrapper, _, _, x_test = _wrapper("classification")
    expected = wrapper.explain_factual(x_test[:1])
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2))
    try:
        with caplog.at_level(logging.WARNING):
            got = wrapper.explain_factual(x_test[:1])
    finally:
        ex.close()
    assert [r.getMessage() for r in caplog.records if "legacy" in r.getMessage()] == []
    assert_same(expected, got)


def test_enter_is_idempotent_and_exit_keeps_the_pool() -> None:
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        wrapper.explain_factual(x_test)
        pids = ex.executor.worker_pids()
        assert len(pids) == 2  # CE's inner __exit__ did not shut the pool
        with ex, ex:
            pass
        assert ex.executor.worker_pids() == pids
        wrapper.explain_factual(x_test)
        record = ex.last_record
        assert record is not None and record.pool_reused and not record.pool_started
        assert ex.executor.worker_pids() == pids
        ex.metrics.total_duration += 1.5  # CE adds its explain time to this float
        snap = ex.metrics.snapshot()
        assert snap["total_duration"] >= 1.5 and snap["maps"] == 2 and snap["strategy"] == "processes"
        assert 0 < snap["worker_utilisation_pct"] <= 100
    finally:
        ex.close()
    assert ex.executor.worker_pids() == []


def test_close_stops_the_pool_and_the_next_explain_starts_it_again() -> None:
    """``close`` promised a restart on the next explain; payoff's map raised there and CE re-ran serially."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        wrapper.explain_factual(x_test)
        ex.close()
        assert ex.executor.worker_pids() == []
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParallelFallbackWarning)
            wrapper.explain_factual(x_test)
        record = ex.last_record
        assert record is not None and record.selected_strategy == "processes" and record.pool_started
        assert ex.metrics.snapshot()["failures"] == 0
    finally:
        ex.close()
    assert ex.executor.worker_pids() == []


class FailsInWorkers(RandomForestClassifier if ce is not None else object):  # type: ignore[misc]
    """A real forest whose predictions fail in worker processes only: CE's serial retry then succeeds."""

    parent_pid = 0

    def predict_proba(self, x: Any) -> Any:
        if os.getpid() != self.parent_pid:
            raise RuntimeError("this model refuses to predict in a worker process")
        return super().predict_proba(x)


def test_ce_silently_rerunning_serially_after_a_failure_is_warned() -> None:
    wrapper, x_test = _failing_wrapper()
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        with pytest.warns(ParallelFallbackWarning, match="silently re-runs") as caught:
            got = wrapper.explain_factual(x_test)
    finally:
        ex.close()
    assert_same(expected, got)
    reasons = [getattr(w.message, "reason", None) for w in caught]
    assert Reason.MAP_FAILURE_RETRY in reasons and Reason.EXECUTOR_UNUSED not in reasons
    assert ex.metrics.failures == 1 and ex.metrics.maps == 1
    retry = next(str(w.message) for w in caught if getattr(w.message, "reason", None) is Reason.MAP_FAILURE_RETRY)
    assert "No worker died" in retry and "A worker died" not in retry  # a task raised: no crash advice
    # CE's serial re-run is recorded as the recovery it is: only the failed map was, so record, span and metrics
    # said the explain failed, and the fallback and recovery counters counted nothing (trial 50)
    failed, rerun = ex.records[-2:]
    assert failed.outcome == "error" and failed.mode == "parallel", failed
    assert rerun.outcome == "ok" and rerun.fallback_reason is Reason.MAP_FAILURE_RETRY, rerun
    assert rerun.mode == "serial" and rerun.items_done == rerun.n_items == len(x_test), rerun


def test_maps_that_are_not_ce_tasks_pass_through() -> None:
    ex = CEParallelExecutor(ParallelConfig(strategy="threads", **FORCE))
    try:
        assert ex.map(abs, [-3, -2, 5], work_items=3) == [3, 2, 5]
        assert ex.map(abs, []) == []
    finally:
        ex.close()


def test_enable_called_again_keeps_the_executor_and_its_warm_pool() -> None:
    """A second ``enable(wrapper)`` (a re-run notebook cell) made a second executor and pool beside the first,
    which nobody used any more: 4 workers on 2 CPUs until the collector found the first. The same
    configuration keeps the executor; another makes a new one."""
    wrapper, _, _, x_test = _wrapper("classification")
    config = ParallelConfig(strategy="processes", max_workers=2, **FORCE)
    ex = enable(wrapper, config)
    try:
        wrapper.explain_factual(x_test)
        pids = ex.executor.worker_pids()
        assert enable(wrapper, config) is ex and enable(wrapper, executor=ex) is ex
        wrapper.explain_factual(x_test)
        assert ex.executor.worker_pids() == pids and ex.last_record is not None and ex.last_record.pool_reused
        other = enable(wrapper, config.with_changes(strategy="threads"))
        assert other is not ex
        other.close()
    finally:
        ex.close()


def test_an_enabled_wrapper_still_pickles_and_copies_as_without_payoff() -> None:
    """Users save a fitted explainer (``pickle``, ``joblib.dump``) and copy it; CE's own executor pickles
    without its pool, and ``WrapCalibratedExplainer`` keeps its executor in its state. After ``enable`` the
    wrapper did neither (TypeError: cannot pickle '_thread.RLock'). The saved wrapper explains as the original
    does; a copy shares the executor and its warm pool."""
    import copy

    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        expected = wrapper.explain_factual(x_test[:20])
        saved = pickle.loads(pickle.dumps(wrapper))
        assert isinstance(saved.parallel_executor, CEParallelExecutor) and saved.parallel_executor is not ex
        assert saved.parallel_executor.user_config == ex.user_config
        assert saved.parallel_executor.strategy == ex.strategy
        # CE drops its explainer's executor when pickled: the loaded explainer ran CE's instance-parallel
        # plugins without payoff, unrecorded, and with CE's merge (every explanation held the whole test
        # matrix, and add_conjunctions found none: CE trial 44, F4)
        assert saved.explainer.parallel_executor is saved.parallel_executor
        assert_same(expected, saved.explain_factual(x_test[:20]))
        assert saved.parallel_executor.last_record is not None, "the loaded copy's explain did not reach payoff"
        again = pickle.loads(pickle.dumps(saved))
        assert again.explainer.parallel_executor is again.parallel_executor, "a loaded copy saved again"
        twin = copy.deepcopy(wrapper)
        assert twin.parallel_executor is ex
        assert_same(expected, twin.explain_factual(x_test[:20]))
    finally:
        ex.close()
    saved.parallel_executor.close()


def test_a_saved_executor_decides_auto_again_on_the_machine_that_loads_it(tmp_path: Any) -> None:
    """``auto`` resolves to processes or serial by the CPUs there are: a copy saved on one CPU stayed serial on
    two (and one saved on two forced processes on one). What ``enable`` switched to goes with it."""
    import subprocess
    import sys

    saved = tmp_path / "executor.pkl"
    code = ("import os, pickle, sys\nos.sched_setaffinity(0, {0})\n"
            "from payoff import ParallelConfig\n"
            "from payoff.integrations.calibrated_explanations import CEParallelExecutor\n"
            "ex = CEParallelExecutor(ParallelConfig())\n"
            "switched = CEParallelExecutor(ParallelConfig(strategy='processes'))\n"
            "switched.use_strategy('joblib')\n"
            "print(ex.strategy)\n"
            "open(sys.argv[1], 'wb').write(pickle.dumps((ex, switched)))\n")
    child = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "CE_PARALLEL": "", "PAYOFF_PARALLEL": ""}, check=False)
    assert child.returncode == 0 and child.stdout.strip() == "serial", child.stderr[-2000:]
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this process has one CPU: nothing to decide again")
    ex, switched = pickle.loads(saved.read_bytes())
    assert ex.strategy == "processes" and switched.strategy == "joblib"
    ex.close()
    switched.close()


def test_enable_needs_a_calibrated_explainer() -> None:
    x_train, y_train, *_ = _data("classification")
    wrapper = ce.WrapCalibratedExplainer(RandomForestClassifier(n_estimators=5, random_state=0))
    wrapper.fit(x_train, y_train)
    with pytest.raises(ValueError, match="calibrate"):
        enable(wrapper)
    with pytest.raises(TypeError, match="WrapCalibratedExplainer"):
        enable(object())
    with pytest.raises(ValueError, match="either config or executor"):
        enable(wrapper, ParallelConfig(), executor=CEParallelExecutor())
    with pytest.raises(TypeError, match=r"executor must be a CEParallelExecutor.*got object"):
        enable(wrapper, executor=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config must be a payoff\.ParallelConfig.*got str"):
        enable(wrapper, "processes")  # type: ignore[arg-type]


def test_chunk_sizes() -> None:
    guided = ce_chunk_sizes(2000, 2)  # big tasks first, small last, floor 2000 / (2 x 4)
    assert sum(guided) == 2000 and guided[:3] == [500, 375, 282] and min(guided[:-1]) == 250
    assert guided == sorted(guided, reverse=True)
    assert ce_chunk_sizes(2000, 2, chunk_size=200) == [200] * 10
    assert ce_chunk_sizes(10, 2, chunk_size=200) == [10]
    assert ce_chunk_sizes(2000, 1) == [2000]
    assert ce_chunk_sizes(0, 2) == []
    # 6 ms per instance, 60 ms fixed per task: no task under 20 x 60 ms = 200 instances of work
    measured = ce_chunk_sizes(2000, 2, seconds_per_instance=0.006, seconds_per_task=0.06)
    assert sum(measured) == 2000 and min(measured[:-1]) == 200 and len(measured) == 8
    # a dominant (or badly fitted) fixed cost: still two tasks per worker, for balance
    assert ce_chunk_sizes(2000, 2, seconds_per_instance=0.006, seconds_per_task=2.0) == [500] * 4


class GcWatch(Observer):
    """Records whether the caller's garbage collector is on as each chunk comes back; can raise Ctrl-C there."""

    def __init__(self, interrupt: bool = False) -> None:
        self.seen: list[bool] = []
        self.interrupt = interrupt

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        self.seen.append(gc.isenabled())
        if self.interrupt:
            raise KeyboardInterrupt  # as a Ctrl-C while the caller waits for its workers


@pytest.fixture
def gc_state() -> Iterator[None]:
    """Every test here leaves the collector as it found it, whatever it asserts."""
    was = gc.isenabled()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


def _failing_wrapper() -> tuple[Any, np.ndarray]:
    x_train, y_train, x_cal, y_cal, x_test = _data("classification")
    model = FailsInWorkers(n_estimators=20, random_state=0, n_jobs=1)
    model.parent_pid = os.getpid()
    wrapper = ce.WrapCalibratedExplainer(model)
    wrapper.fit(x_train, y_train)
    wrapper.calibrate(x_cal, y_cal)
    return wrapper, x_test


@pytest.mark.usefixtures("gc_state")
def test_the_collector_is_paused_during_the_explain_and_restored_after_a_failure_inside_it() -> None:
    wrapper, x_test = _failing_wrapper()
    expected = wrapper.explain_factual(x_test)
    watch = GcWatch()
    ex = enable(wrapper, executor=CEParallelExecutor(
        ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[watch]))
    gc.enable()
    try:
        with pytest.warns(ParallelFallbackWarning, match="silently re-runs"):
            got = wrapper.explain_factual(x_test)  # fails in the workers; CE re-runs it serially in this process
        assert gc.isenabled()
        assert not any(watch.seen)  # paused whenever a chunk came back
        assert_same(expected, got)

        gc.disable()  # the user's choice: a pause must not end with the collector on
        with pytest.warns(ParallelFallbackWarning, match="silently re-runs"):
            wrapper.explain_factual(x_test)
        assert not gc.isenabled()
    finally:
        ex.close()


@pytest.mark.usefixtures("gc_state")
def test_the_collector_is_restored_after_ctrl_c_inside_the_explain() -> None:
    wrapper, _, _, x_test = _wrapper("classification")
    watch = GcWatch(interrupt=True)
    ex = enable(wrapper, executor=CEParallelExecutor(
        ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[watch]))
    try:
        for user_enabled in (True, False):
            (gc.enable if user_enabled else gc.disable)()
            with pytest.raises(KeyboardInterrupt):
                wrapper.explain_factual(x_test)
            assert gc.isenabled() is user_enabled
        assert watch.seen == [False, False]
        assert ex.metrics.failures == 2
    finally:
        ex.close()


@pytest.mark.usefixtures("gc_state")
def test_the_pause_lasts_until_ce_leaves_the_executor_and_can_be_turned_off() -> None:
    """CE merges the chunk results after ``map`` returns and before it leaves the executor: still paused."""
    ex = CEParallelExecutor(ParallelConfig(strategy="threads", **FORCE))
    gc.enable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParallelFallbackWarning)  # maps of 1-3 numbers run in one task
            with ex:
                assert ex.map(abs, [-1, 2, -3]) == [1, 2, 3]
                assert not gc.isenabled()
                ex.map(abs, [-4])  # a second map in the same explain: one pause
            assert gc.isenabled()
            ex.map(abs, [-5, 6])  # a map outside an explain restores the collector when it returns
            assert gc.isenabled()
            ex.pause_gc = False
            with ex:
                ex.map(abs, [-1, 2])
                assert gc.isenabled()
    finally:
        ex.close()

    wrapper, _, _, x_test = _wrapper("classification")
    watch = GcWatch()
    ex = enable(wrapper, executor=CEParallelExecutor(
        ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[watch]), pause_gc=False)
    try:
        wrapper.explain_factual(x_test)
    finally:
        ex.close()
    assert watch.seen and all(watch.seen)


def test_ce_reads_a_cached_config_that_follows_changes() -> None:
    """CE reads ``executor.config`` once per instance: it is built once per configuration, not per read."""
    ex = CEParallelExecutor(ParallelConfig(strategy="processes"))
    first = ex.config
    assert ex.config is first and ex.active_strategy_name == "processes"
    ex.use_strategy("threads")
    assert ex.config is not first and ex.config.strategy == ex.active_strategy_name == "threads"
    threads = ex.config
    ex.user_config = ex.user_config.with_changes(enabled=False)
    assert ex.config is not threads and ex.config.enabled is True  # payoff decides, in map (see CEConfig)


def test_the_executor_reports_its_explains_as_the_docs_say() -> None:
    """docs/calibrated-explanations.md: "``executor.report()`` renders them"; it raised AttributeError."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        wrapper.explain_factual(x_test[:20])
        report = ex.report()
    finally:
        ex.close()
    assert list(report.records) == list(ex.records) and len(ex.records) >= 1
    assert "calibrated-explanations" in str(report) and "<svg" in report._repr_html_()


def test_a_fallback_is_warned_once_per_line_despite_crepes_blanket_always_filter() -> None:
    """crepes, which CE imports, runs ``warnings.simplefilter("always", UserWarning)``: every explain of a loop
    said the same fallback again (3 of 3 in a user's trial), where the docs promise once per call site."""
    wrapper, _, _, x_test = _wrapper("classification")
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always", UserWarning)  # what crepes' import does
        ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, min_batch_size=1000))
        try:
            for _ in range(3):
                wrapper.explain_factual(x_test[:4])
        finally:
            ex.close()
    fallbacks = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert len(fallbacks) == 1, [str(w.message)[:120] for w in fallbacks]
    assert all(ex.records[i].fallback_reason is not None for i in range(len(ex.records)))


def test_a_wrapper_calibrated_again_after_enable_is_named_as_the_cause() -> None:
    """Calibrating again builds a new explainer, which enable() never saw: the warning said "0 items" and named
    no plugin, nothing of the re-calibration (a user's trial)."""
    wrapper, x_cal, y_cal, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **FORCE))
    try:
        wrapper.calibrate(x_cal, y_cal)  # the wrapper keeps the executor; the new explainer is not enabled
        with pytest.warns(ParallelFallbackWarning, match="never called map") as caught:
            wrapper.explain_factual(x_test)
    finally:
        ex.close()
    text = " ".join(str(w.message) for w in caught if isinstance(w.message, ParallelFallbackWarning))
    assert "call enable(wrapper, executor=...) again after calibrate" in text, text


# -- an explain whose cost is not known yet --------------------------------------------------------------------


@pytest.fixture
def ce_task_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Instances of each call of CE's task function in this process (CE looks it up at every explain)."""
    from calibrated_explanations.core.explain import parallel_instance

    calls: list[int] = []
    real = parallel_instance._instance_parallel_task

    def counted(task: Any) -> Any:
        calls.append(task[1] - task[0])
        return real(task)

    monkeypatch.setattr(parallel_instance, "_instance_parallel_task", counted)
    return calls


def test_a_first_explain_below_the_threshold_is_measured_here_and_starts_no_worker(ce_task_calls: list[int]) -> None:
    """Its cost is measured on its first task in this process; the rest, too little work, follows as one task
    (CE's fixed cost paid twice, not once per planned task), and no worker process starts."""
    wrapper, _, _, x_test = _wrapper("classification")
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e6))
    try:
        with pytest.warns(ParallelFallbackWarning) as caught:
            got = wrapper.explain_factual(x_test)
        record, pids = ex.last_record, ex.executor.worker_pids()
    finally:
        ex.close()
    assert_same(expected, got)
    planned = record.n_items if record is not None else 0  # the record counts every planned task (one a item here)
    said = f"{N_TEST} instances in 2 tasks, merged from {planned} planned"
    assert planned > 2 and record is not None and record.summary().startswith(f"serial x1, {said} (")
    assert next(str(w.message) for w in caught if w.category is ParallelFallbackWarning).startswith(
        f"payoff: {said} of workload 'calibrated-explanations' ran serially instead of processes")
    assert record is not None and record.selected_strategy == "serial"
    assert record.fallback_reason is Reason.TINY_WORKLOAD and "the first" in record.fallback_detail
    assert pids == [] and all(c.where == "caller" for c in record.chunks)
    assert len(ce_task_calls) == 2 and sum(ce_task_calls) == N_TEST and ce_task_calls[0] < N_TEST // 2
    assert "in one task there" in ex.last_decision and ex.last_chunk_sizes == ce_task_calls


def test_a_first_explain_above_the_threshold_sends_the_rest_to_the_workers() -> None:
    wrapper, _, _, x_test = _wrapper("regression")
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e-9))
    got, record = _explained(ex, lambda: wrapper.explain_factual(x_test))
    assert_same(expected, got)
    assert record is not None and record.selected_strategy == "processes" and not record.fell_back
    assert [c.where for c in record.chunks][:1] == ["caller"]
    assert {c.where for c in record.chunks[1:]} == {"pool"} and len(record.chunks) >= 3


def test_under_auto_a_pool_not_running_starts_once_explains_kept_here_forgo_its_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As the core's ``pool_start_cost``: each explain kept here adds what the workers would have saved."""
    monkeypatch.setattr(ce_executor_module, "COLD_POOL_SECONDS", 0.25)
    ex = CEParallelExecutor(ParallelConfig(strategy="auto", max_workers=2))
    try:
        start = ex._start_price()  # the prior and the pool's own start, as this platform and process price it
        said = [ex._start_to_pay(0.9 * start, 2) for _ in range(3)]  # each would save 0.45 of the start
    finally:
        ex.close()
    assert start >= 0.25
    assert f"would save ~{0.45 * start:.3f} s on 2 workers, less than starting them (~{start:.2f} s)" in said[0]
    assert said[1] and said[2] == ""
    named = CEParallelExecutor(ParallelConfig(strategy="processes", max_workers=2))
    try:
        assert named._start_to_pay(0.2, 2) == ""  # a backend the user named starts when asked
    finally:
        named.close()


def test_a_first_explain_under_auto_is_kept_here_while_the_start_would_cost_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ce_executor_module, "COLD_POOL_SECONDS", 1e6)
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="auto", max_workers=2, tiny_workload_threshold=1e-9))
    try:
        wrapper.explain_factual(x_test)
        first = ex.last_record
        wrapper.explain_factual(x_test)  # its cost is known now: planned in one task, for the same reason
        second, pids = ex.last_record, ex.executor.worker_pids()
    finally:
        ex.close()
    assert first is not None and first.fallback_reason is Reason.POOL_START_COST
    assert "less than starting them" in first.fallback_detail
    assert second is not None and second.fallback_reason is Reason.POOL_START_COST and pids == []


class _Explainer:
    def __init__(self) -> None:
        self.state = [1, 2]


def test_a_worker_shares_its_explainer_as_the_snapshot_only_while_it_runs_tasks() -> None:
    import copy

    from payoff.integrations.calibrated_explanations.worker import _snapshot_shared

    explainer = _Explainer()
    with _snapshot_shared(explainer):
        assert copy.deepcopy(explainer) is explainer
    assert copy.deepcopy(explainer) is not explainer and "__deepcopy__" not in vars(explainer)
    with pytest.raises(ValueError, match="a task failed"), _snapshot_shared(explainer):
        raise ValueError("a task failed")
    assert "__deepcopy__" not in vars(explainer)
    pickle.dumps(explainer)


def test_each_kind_of_explain_learns_its_own_cost() -> None:
    """Alternatives cost several times a factual explain of the same explainer, and a threshold changes what
    each instance computes: each kind's first explain measures it again, on its first task in this process."""
    wrapper, _, _, x_test = _wrapper("regression")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e-9))
    firsts = []
    try:
        for explain in (wrapper.explain_factual, wrapper.explain_factual, wrapper.explore_alternatives,
                        wrapper.explore_alternatives, lambda x: wrapper.explain_factual(x, threshold=0.0)):
            explain(x_test)
            record = ex.last_record
            assert record is not None and record.selected_strategy == "processes"
            firsts.append(record.chunks[0].where)
    finally:
        ex.close()
    assert firsts == ["caller", "pool", "caller", "pool", "caller"]


def _ce_chunk(index: int, busy_s: float, where: str) -> ChunkStats:
    return ChunkStats(index, index, 1, "w", 0, 0, int(busy_s * 1e9), int(busy_s * 1e9), (int(busy_s * 1e9),), (1,),
                      0, 0, where)


def test_the_serial_price_counts_ces_fixed_cost_once_and_the_callers_alone_rate_caps_it() -> None:
    """Fixed cost 0.05 s a task, 0.01 s an instance: four tasks of 50 instances are 2.2 s busy, CE alone's one task
    2.05 s. Tasks the caller ran alone, in two sizes, tell CE alone's own rate: busier workers ran slower."""
    fit = ce_executor_module.CostFit()
    fit.observe(1, 10, 0.15)
    fit.observe(1, 40, 0.45)
    items = [[(k * 50, (k + 1) * 50, {})] for k in range(4)]
    chunks = [_ce_chunk(k, 0.55, "pool") for k in range(4)]
    price = CEParallelExecutor._serial_price(fit, items, (), chunks, 2.2)
    assert price == pytest.approx(2.05, rel=1e-6)
    assert fit.alone_seconds(200) is None  # the workers' chunks say nothing of a task run alone
    fit.observe(1, 10, 0.10, alone=True)
    assert fit.alone_seconds(200) is None  # one size cannot tell the fixed cost from the rest
    fit.observe(1, 30, 0.20, alone=True)
    assert fit.alone_seconds(200) == pytest.approx(0.05 + 0.005 * 200)
    assert CEParallelExecutor._serial_price(fit, items, (), chunks, 2.2) == pytest.approx(1.05, rel=1e-6)


def test_two_sizes_timed_alone_that_fit_no_line_of_positive_costs_still_cap_the_price() -> None:
    """Under other programs' load a first explain's smaller task, timed alone, took longer than its larger one:
    the two fit no line of costs at least 0, and CE alone's time was left unknown, the serial price uncapped
    (a suite run on three workers; failed before). Such sizes price a task in proportion to its instances."""
    fit = ce_executor_module.CostFit()
    fit.observe(1, 4, 0.050, alone=True)
    fit.observe(1, 12, 0.040, alone=True)
    assert fit.alone_seconds(60) == pytest.approx(60 * 0.090 / 16)
    steady = ce_executor_module.CostFit()  # the free fit, where it holds, is kept
    steady.observe(1, 4, 0.030, alone=True)
    steady.observe(1, 12, 0.050, alone=True)
    assert steady.alone_seconds(60) == pytest.approx(0.020 + 0.0025 * 60)


@pytest.mark.parametrize("threshold", [1e-9, 0.0], ids=["measured", "parallel forced"])
def test_a_first_explain_on_named_threads_times_two_tasks_alone_and_caps_its_serial_price(threshold: float) -> None:
    """On threads CE's tasks side by side took about twice their time alone, and nothing capped the busy time: a
    named threads explain recorded 1.03-1.07x with ``pays_off`` for a real 0.65-0.82x (trial 50). Its first
    item, in the caller, is two tasks of unlike sizes, each timed alone: CE's fixed cost and its cost per
    instance, alone, cap the serial price. Parallel forced (``tiny_workload_threshold=0``) too: it skipped that
    measure and recorded 1.6-1.7x for a measured 0.53-0.68x (hunt 57, F1; failed before)."""
    wrapper, _, _, x_test = _wrapper("classification")
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="threads", max_workers=2, tiny_workload_threshold=threshold))
    try:
        got = wrapper.explain_factual(x_test)
        record = ex.last_record
        fits = list(ex._costs.values())
    finally:
        ex.close()
    assert_same(expected, got)
    assert record is not None and record.selected_strategy == "threads" and record.chunks[0].where == "caller"
    assert len(fits) == 1 and len({n for _, n, _ in fits[0].alone}) == 2, list(fits[0].alone)
    assert fits[0].alone_seconds(N_TEST) is not None  # what caps the price (see the serial price tests above)
    tasks = record.n_items + 1  # the first item holds two
    assert record.items_said == f"{N_TEST} instances in {tasks} tasks", record.items_said


def test_tasks_timed_alone_in_the_caller_are_points_of_their_own() -> None:
    items = [[(0, 4, {}), (4, 16, {})], [(16, 60, {})]]
    chunks = [_ce_chunk(0, 0.05, "caller"), _ce_chunk(1, 0.4, "pool")]
    assert ce_executor_module._points(chunks, items, [(4, 0.02), (12, 0.03)]) == [
        (1, 4, 0.02, True), (1, 12, 0.03, True), (1, 44, 0.4, False)]
    assert ce_executor_module._points(chunks, items) == [(2, 16, 0.05, True), (1, 44, 0.4, False)]
    assert ce_executor_module._in_two(16) == [4, 12] and ce_executor_module._in_two(2) == [2]


def test_a_fitted_fixed_cost_is_at_most_half_the_cheapest_task_measured() -> None:
    """Chunk times of a loaded machine fitted 0.20-0.25 s of fixed cost a task where a whole task of 16
    instances took 0.086 s: taken off the busy time once a task, explains 1.23-1.59x faster than CE alone were
    recorded at 0.80-0.99x. A task's time holds its fixed cost, so no fit can make it more than that."""
    fit = ce_executor_module.CostFit()
    for tasks, instances, seconds in [(1, 100, 0.55), (1, 75, 0.50), (1, 57, 0.45), (1, 18, 0.30)]:
        fit.observe(tasks, instances, seconds)
    per, fixed = fit.estimate()
    assert fixed == pytest.approx(0.5 * 0.30)  # the lstsq fit says 0.26 s
    assert per == pytest.approx((0.55 + 0.50 + 0.45 + 0.30 - 4 * 0.15) / 250)


def test_a_pool_started_for_an_explain_teaches_what_a_start_costs() -> None:
    """What the explain lost beyond its work split over the workers replaces half of the prior (0.4 s), so
    later decisions on a pool that is not running (after close()) weigh this machine's starts."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e-9))
    try:
        wrapper.explain_factual(x_test)
        record = ex.last_record
        learned = ex._cold_start
        wrapper.explain_factual(x_test)
        assert ex._cold_start == learned  # a warm pool's explain says nothing of a start
    finally:
        ex.close()
    assert record is not None and record.pool_started and record.workers == 2
    here = sum(c.busy_seconds for c in record.chunks if c.where == "caller")
    lost = max(0.0, record.wall_seconds - here - (record.serial_estimate_seconds - here) / 2)
    prior = ce_executor_module.COLD_POOL_SECONDS + ex.executor._planner.costs.get("processes", None, 2).start
    assert learned == pytest.approx((prior + lost) / 2)


def test_a_first_explain_too_small_to_split_after_measuring_runs_as_one_task(ce_task_calls: list[int]) -> None:
    """Two instances: measuring one first leaves one, which no pool could share out; CE's fixed cost once."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e-9))
    try:
        wrapper.explain_factual(x_test[:2])
        record = ex.last_record
    finally:
        ex.close()
    assert ce_task_calls == [2] and record is not None and record.fallback_reason is Reason.TOO_FEW_ITEMS
    assert "too few to measure some first" in record.fallback_detail


@pytest.mark.parametrize("settings", [{"instance_chunk_size": 30, "tiny_workload_threshold": 1e-9},
                                      {"tiny_workload_threshold": 0.0}], ids=["chunk size", "forced"])
def test_a_first_explain_is_not_measured_in_this_process_where_that_decides_nothing(settings: dict[str, Any]) -> None:
    """Tasks of the user's size (a first one of 30 of 60 instances would run half the explain here), or parallel
    forced: every task goes to the workers, as before."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, **settings))
    _, record = _explained(ex, lambda: wrapper.explain_factual(x_test))
    assert record is not None and record.selected_strategy == "processes"
    assert {c.where for c in record.chunks} == {"pool"}


def test_a_workers_results_that_still_hold_the_explainer_pickle() -> None:
    """The shared snapshot is undone before the results are pickled: a result CE may shape otherwise (one
    ``_lighten`` does not know) pickles its explainer's ``__dict__``, which must not hold the lambda."""
    from payoff.integrations.calibrated_explanations.worker import decode_results, run_ce_tasks

    explainer = _Explainer()
    block = run_ce_tasks(lambda task: ("kept", task[2]["explainer"]), explainer, -1, [(0, 1, {})])
    [(label, copy)] = decode_results(block)
    assert label == "kept" and copy.state == [1, 2] and "__deepcopy__" not in vars(copy)


@pytest.mark.parametrize("call", ["explain_factual", "explore_alternatives"])
def test_multiclass_explanations_read_their_own_probabilities_as_serial_ones_do(call: str) -> None:
    """CE's narratives (``to_narrative``) take an instance's class probabilities from its row of the full
    matrix. Alternatives keep that matrix only in ``prediction["__full_probabilities__"]``, which the merge
    left as the chunk's: instance 9 read row 9 of a 4-row matrix (none: no class named) or another
    instance's row (the wrong class and runner-up in its narrative)."""
    from calibrated_explanations.core.narrative_generator import extract_probability_vector

    x, y = make_classification(n_samples=520, n_features=6, n_informative=4, n_classes=3, random_state=1)
    model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1)
    wrapper = ce.WrapCalibratedExplainer(model)
    wrapper.fit(x[:250], y[:250])
    wrapper.calibrate(x[250:500], y[250:500])
    x_test = x[500:512]
    expected, got = _serial_and_in_three_chunks(wrapper, call, x_test)
    for want, have in zip(expected.explanations, got.explanations, strict=True):
        wanted = extract_probability_vector(want)
        assert wanted is not None and wanted.shape == (3,)
        np.testing.assert_array_equal(extract_probability_vector(have), wanted)
        full = have.prediction["__full_probabilities__"]
        assert np.shape(full[0] if isinstance(full, tuple) else full) == (12, 3)


def test_an_explainer_larger_than_a_task_is_sent_once_not_refused_for_the_copies_ce_makes_here() -> None:
    """CE deep-copies the explainer into every task's result; run in the caller (the first task, measured
    there) that copy was counted as the result's bytes, so a model above ``task_size_hint_bytes`` (136 MB, CE
    trial) gave ``payload_too_large``: every explain ran here, as 4-8 tasks each copying the model, 1.4-2.4x
    slower than plain CE. Results made here are as lean as a worker's, and the explainer is shared there too."""
    x_train, y_train, x_cal, y_cal, x_test = _data("classification")
    wrapper = ce.WrapCalibratedExplainer(RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1))
    wrapper.fit(x_train, y_train)
    wrapper.calibrate(x_cal, y_cal)
    limit = len(pickle.dumps(wrapper.explainer, protocol=pickle.HIGHEST_PROTOCOL)) // 2
    expected = wrapper.explain_factual(x_test)
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=1e-6,
                            task_size_hint_bytes=limit)
    ex = enable(wrapper, config)  # a threshold above 0: the first task is measured in the caller
    got, record = _explained(ex, lambda: wrapper.explain_factual(x_test))
    assert record is not None
    assert record.fallback_reason is not Reason.PAYLOAD_TOO_LARGE, record.fallback_detail
    assert record.mode == "parallel" and record.selected_strategy == "processes"
    assert "__deepcopy__" not in vars(wrapper.explainer)
    assert_same(expected, got)


def test_an_explainer_nothing_can_pickle_is_explained_here_not_on_threads() -> None:
    """A learner holding a lock: neither pickle nor cloudpickle sends the explainer. The adapter moved CE to
    threads, where its GIL-bound work took 1.15-1.8x a plain explain (300 instances) and the record said 1.04x
    faster (CE trial). It runs in the caller now, recorded as ``unpicklable``; named threads still run there."""
    import threading

    wrapper, _, _, x_test = _wrapper("classification")
    wrapper.learner.lock_ = threading.Lock()
    expected = wrapper.explain_factual(x_test)
    with pytest.warns(ParallelFallbackWarning, match="cannot be pickled"):
        ex = enable(wrapper, ParallelConfig(max_workers=2, **FORCE))
    try:
        with pytest.warns(ParallelFallbackWarning, match="unpicklable"):
            got = wrapper.explain_factual(x_test)
        record = ex.last_record
    finally:
        ex.close()
    assert record is not None and record.mode == "serial" and record.fallback_reason is Reason.UNPICKLABLE
    assert "cloudpickle" in record.fallback_detail and record.n_items == 1
    assert "joblib" not in record.summary(), "advised joblib, which was just shown unable to send it (CE trial)"
    assert_same(expected, got)
    other, _, _, _ = _wrapper("classification")  # a picklable explainer on the same executor: each keeps its own
    enable(other, executor=ex)
    assert ex.unsendable(wrapper.explainer) and not ex.unsendable(other.explainer)
    threads = enable(wrapper, ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    _, record = _explained(threads, lambda: wrapper.explain_factual(x_test))
    assert record is not None and record.selected_strategy == "threads" and record.fallback_reason is None


def test_two_threads_explaining_through_one_wrapper_each_get_a_merge_set_right() -> None:
    """Two threads explained through one enabled wrapper at once: they shared the executor's one explain session,
    and the second to end left CE's raw merge (the whole test matrix as every explanation's row, 642 rows of
    probabilities for 60 instances: the CE trial, 2 of 2 runs)."""
    wrapper, _, _, x_test = _wrapper("classification")
    parts = [x_test[:30], x_test[30:]]
    expected = [wrapper.explain_factual(part) for part in parts]
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, instance_chunk_size=5, **FORCE))
    # both explains merged (the explainer's latest_explanation set twice) before either repairs: a schedule the
    # OS may pick at any time, where each repaired the explainer's latest, one of them twice (the second review)
    barrier, repair = threading.Barrier(2, timeout=120), ex._repair_merged

    def repair_once_both_merged(session: Any) -> None:
        barrier.wait()
        repair(session)

    ex._repair_merged = repair_once_both_merged  # type: ignore[method-assign]
    got: dict[int, Any] = {}

    def explain(k: int) -> None:
        got[k] = wrapper.explain_factual(parts[k])

    try:
        threads = [threading.Thread(target=explain, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        ex.close()
    assert sorted(got) == [0, 1], "an explain did not finish"
    for k in range(2):
        assert got[k].probabilities.shape == expected[k].probabilities.shape == (30, 2), k
        for want, have in zip(expected[k].explanations, got[k].explanations, strict=True):
            np.testing.assert_array_equal(have.x_test, want.x_test)


def test_a_multiclass_merge_joins_the_predicted_classes_with_the_probabilities() -> None:
    """For more than two classes CE keeps ``(probabilities, predicted classes)`` under the full-probabilities key:
    the probabilities were joined across tasks, the classes stayed the first task's (16 for 60 instances: the CE
    trial's fault 5)."""
    x, y = make_classification(n_samples=560, n_features=6, n_informative=3, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    wrapper = ce.WrapCalibratedExplainer(RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1))
    wrapper.fit(x[:300], y[:300])
    wrapper.calibrate(x[300:500], y[300:500])
    x_test = x[500:530]
    expected = wrapper.explain_factual(x_test)
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=2, instance_chunk_size=10, **FORCE))
    got, record = _explained(ex, lambda: wrapper.explain_factual(x_test))
    assert record is not None and record.n_chunks == 3
    want_full = expected.explanations[25].prediction["__full_probabilities__"]
    have_full = got.explanations[25].prediction["__full_probabilities__"]
    assert isinstance(want_full, tuple) and len(want_full) == len(have_full) == 2, "not CE's multiclass payload"
    for want, have in zip(want_full, have_full, strict=True):
        np.testing.assert_array_equal(have, want)


def test_one_worker_is_named_as_the_reason_not_tiny_work() -> None:
    """``max_workers=1`` kept an explain in one task as ``tiny_workload``, whose advice (force parallel) changes
    nothing (advice trial)."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="processes", max_workers=1, **FORCE))
    try:
        wrapper.explain_factual(x_test)
    finally:
        ex.close()
    record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.SINGLE_WORKER, record
    assert "max_workers=1" in record.fallback_detail, record.fallback_detail


def test_one_instance_under_a_serial_strategy_is_recorded_as_asked_not_as_a_fallback() -> None:
    """``strategy="serial"`` asks for the caller: a one-instance explain there is no fallback (review)."""
    wrapper, _, _, x_test = _wrapper("classification")
    ex = enable(wrapper, ParallelConfig(strategy="serial"))
    try:
        wrapper.explain_factual(x_test[:1])
    finally:
        ex.close()
    record = ex.last_record
    assert record is not None and record.n_items == 1 and record.selected_strategy == "serial", record
    assert record.fallback_reason is None and ex.metrics.fallbacks == 0, record
