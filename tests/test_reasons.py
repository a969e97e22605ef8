"""Every fallback reason code is reached, warned (except ``disabled``) and recorded."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason, _knowledge, planning
from payoff.reasons import fallback_reasons
from tests import tasks
from tests.conftest import require

FORCE = {"tiny_workload_threshold": 0.0}


def _run(config: ParallelConfig, fn: Callable[[Any], Any], items: list[Any], **kw: Any) -> tuple[Any, Any]:
    with ParallelExecutor(config) as ex:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = ex.map(fn, items, **kw)
        record = ex.last_record
    fallbacks = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    return record, (result, fallbacks)


def _nested(x: int) -> int:
    inner = ParallelExecutor(ParallelConfig(strategy="threads", **FORCE))
    return sum(inner.map(tasks.square, range(x % 5 + 3)))


CASES: dict[Reason, Callable[[], tuple[Any, Any, list[Any]]]] = {}


def case(reason: Reason) -> Callable[[Callable[[], tuple[Any, Any, list[Any]]]],
                                     Callable[[], tuple[Any, Any, list[Any]]]]:
    def register(fn: Callable[[], tuple[Any, Any, list[Any]]]) -> Callable[[], tuple[Any, Any, list[Any]]]:
        CASES[reason] = fn
        return fn

    return register


@case(Reason.DISABLED)
def _disabled() -> tuple[Any, Any, list[Any]]:
    items = list(range(20))
    record, out = _run(ParallelConfig(enabled=False, strategy="processes"), tasks.square, items)
    return record, out, [x * x for x in items]


@case(Reason.TINY_WORKLOAD)
def _tiny() -> tuple[Any, Any, list[Any]]:
    items = list(range(10))
    _taught(1e-6)  # measured before: a named process backend never probes an unknown function in the caller
    record, out = _run(ParallelConfig(strategy="processes"), tasks.square, items)
    return record, out, [x * x for x in items]


@case(Reason.TOO_FEW_ITEMS)
def _too_few() -> tuple[Any, Any, list[Any]]:
    record, out = _run(ParallelConfig(strategy="processes", max_workers=2), tasks.square, [7])
    return record, out, [49]


def _taught(cost: float, verdicts: dict[str, tuple[float, int]] | None = None) -> None:
    """Facts stated outright, so the planner decides from them (no probe, no clock)."""
    held = {k: (_knowledge.Verdict(*v),) for k, v in (verdicts or {}).items()}
    planning.KNOWLEDGE.teach(tasks.square, _knowledge.Facts(cost, 1.0, 40, "", None, verdicts=held,
                                                                     result_error=""))


@case(Reason.POOL_START_COST)
def _pool_start_cost() -> tuple[Any, Any, list[Any]]:
    items = list(range(60))
    _taught(1e-4)  # 6 ms of work: a warm pool would pay, starting one (6 ms, forked) would not
    record, out = _run(ParallelConfig(), tasks.square, items)
    return record, out, [x * x for x in items]


@case(Reason.NO_MEASURED_GAIN)
def _no_measured_gain() -> tuple[Any, Any, list[Any]]:
    items = list(range(200))
    _taught(1e-3, {"processes": (0.5, 1000)})  # an earlier auto call measured 0.5x on processes
    record, out = _run(ParallelConfig(), tasks.square, items)
    return record, out, [x * x for x in items]


@case(Reason.GRANULARITY_MISMATCH)
def _mismatch() -> tuple[Any, Any, list[Any]]:
    items = list(range(30))
    record, out = _run(ParallelConfig(strategy="threads", granularity="feature", **FORCE), tasks.square,
                       items, granularity="instance")
    return record, out, [x * x for x in items]


@case(Reason.INIT_FAILURE)
def _init_failure() -> tuple[Any, Any, list[Any]]:
    items = list(range(30))
    config = ParallelConfig(strategy="processes", worker_initializer=tasks.failing_initializer,
                            worker_init_args=(os.getpid(),), **FORCE)
    record, out = _run(config, tasks.square, items)
    assert record.pool_start_failed
    return record, out, [x * x for x in items]


@case(Reason.MAP_FAILURE_RETRY)
def _map_failure() -> tuple[Any, Any, list[Any]]:
    folder = tempfile.mkdtemp(prefix="payoff-test-")
    items = [(i, os.getpid(), os.path.join(folder, "died")) for i in range(30)]
    try:
        record, out = _run(ParallelConfig(strategy="processes", **FORCE), tasks.die_once_in_worker, items,
                           chunksize=3)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return record, out, [i * 10 for i, _, _ in items]


@case(Reason.THREAD_BOUND)
def _thread_bound() -> tuple[Any, Any, list[Any]]:
    """Waiting items that ask an sqlite3 connection this thread made: auto plans threads, which it refuses."""
    tasks._CONNECTIONS.clear()
    items = list(range(40))
    assert tasks.queries_a_connection_of_its_thread(0) == 0  # made in this thread, as a loop's would be
    record, out = _run(ParallelConfig(), tasks.queries_a_connection_of_its_thread, items)
    return record, out, items


@case(Reason.UNPICKLABLE_RESULT_RERUN)
def _unpicklable_result_rerun() -> tuple[Any, Any, list[Any]]:
    """Auto on processes (taught the function is 1 ms of CPU work an item): two late results cannot travel."""
    items = [-i if i in (150, 171) else i for i in range(200)]
    planner = planning.Planner()
    planner.knowledge.teach(tasks.spin_unsendable_if_negative, _knowledge.Facts(1e-3, 1.0, 40, "", None))
    with ParallelExecutor(ParallelConfig(max_workers=2, **FORCE), planner=planner) as ex:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = ex.map(tasks.spin_unsendable_if_negative, items)
        record = ex.last_record
    fallbacks = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    return record, (result, fallbacks), [tasks.Unsendable(i) if i < 0 else i for i in items]


@case(Reason.POOL_STOPPED)
def _pool_stopped() -> tuple[Any, Any, list[Any]]:
    """Another thread's call on the same pool times out, so its workers are stopped: this call loses chunks."""
    items = list(range(8))
    slow = functools.partial(tasks.sleep_then_square, seconds=0.3)
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.square, range(4), chunksize=1)  # a warm pool, shared by both calls
        got: dict[str, Any] = {}

        def other() -> None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got["result"] = ex.map(slow, items, chunksize=1)
            got["record"] = next(r for r in reversed(ex.records) if r.n_items == len(items))
            got["fallbacks"] = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.2)
        with pytest.raises(TimeoutError):
            ex.map(tasks.sleep_forever, range(2), chunksize=1, timeout=0.5)
        thread.join(60)
    crasher = planning.KNOWLEDGE.crash_of(slow)
    assert crasher is None, crasher  # nothing crashed: the function is not held in worker processes from now on
    return got["record"], (got["result"], got["fallbacks"]), [x * x for x in items]


@case(Reason.UNPICKLABLE)
def _unpicklable() -> tuple[Any, Any, list[Any]]:
    items = list(range(30))
    lock = threading.Lock()  # neither pickler sends a closure over a lock (a bare lambda travels by value)
    record, out = _run(ParallelConfig(strategy="processes", **FORCE), lambda x: x - 1 if lock else x, items)
    return record, out, [x - 1 for x in items]


@case(Reason.PAYLOAD_TOO_LARGE)
def _payload() -> tuple[Any, Any, list[Any]]:
    items = [np.full(4096, i, dtype=np.float64) for i in range(12)]
    config = ParallelConfig(strategy="processes", task_size_hint_bytes=1024, **FORCE)
    # measured: a named process backend sends an unmeasured function's items to its workers whatever their size
    planning.KNOWLEDGE.teach(tasks.identity, _knowledge.Facts(1e-3, 1.0, 40, "", None, result_error=""))
    record, out = _run(config, tasks.identity, items)
    result, fallbacks = out
    assert all(np.array_equal(a, b) for a, b in zip(result, items, strict=True))
    return record, (items, fallbacks), items


@case(Reason.SINGLE_WORKER)
def _single() -> tuple[Any, Any, list[Any]]:
    items = list(range(30))
    record, out = _run(ParallelConfig(strategy="threads", max_workers=1, **FORCE), tasks.square, items)
    return record, out, [x * x for x in items]


@case(Reason.NESTED)
def _nested_case() -> tuple[Any, Any, list[Any]]:
    items = list(range(12))
    with ParallelExecutor(ParallelConfig(strategy="threads", **FORCE)) as outer, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = outer.map(_nested, items)
    inner_records = [w.message.record for w in caught  # type: ignore[union-attr]
                     if issubclass(w.category, ParallelFallbackWarning)]
    fallbacks = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    return inner_records[0], (result, fallbacks), [_nested(x) for x in items]


def _fitted_wrapper(regression: bool) -> tuple[Any, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """A calibrated-explanations wrapper fitted on a small random set, its calibration set, and 10 rows to
    explain."""
    try:
        import calibrated_explanations as ce
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    except ImportError:
        require(False, "calibrated-explanations with scikit-learn (the [ce] extra)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4))
    y = x[:, 0] * 10 + x[:, 1] if regression else (x[:, 0] + x[:, 1] > 0).astype(int)
    model = (RandomForestRegressor if regression else RandomForestClassifier)(n_estimators=5, random_state=0)
    wrapper = ce.WrapCalibratedExplainer(model)
    wrapper.fit(x[:80], y[:80])
    return wrapper, (x[80:150], y[80:150]), x[150:]


def _explained(wrapper: Any, x: np.ndarray, **kwargs: Any) -> tuple[Any, list[Any]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explained = wrapper.explain_factual(x, **kwargs)
    return explained, [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]


@case(Reason.EXECUTOR_UNUSED)
def _unused() -> tuple[Any, Any, list[Any]]:
    """Only a library can enter the executor and then not map: calibrated-explanations' default plugin."""
    from payoff.integrations.calibrated_explanations import CEParallelExecutor

    wrapper, cal, x = _fitted_wrapper(regression=False)
    ex = CEParallelExecutor(ParallelConfig(strategy="processes", **FORCE))
    wrapper.calibrate(*cal, perf_parallel=ex)
    ex.bind(wrapper.explainer)
    explained, fallbacks = _explained(wrapper, x)
    return ex.last_record, ([len(explained.explanations)], fallbacks), [10]


@case(Reason.THREAD_UNSAFE)
def _thread_unsafe() -> tuple[Any, Any, list[Any]]:
    """Only a library's tasks can be known unsafe on threads: CE's with one threshold per instance."""
    from payoff.integrations.calibrated_explanations import enable

    wrapper, cal, x = _fitted_wrapper(regression=True)
    wrapper.calibrate(*cal)
    thresholds = list(np.linspace(-5.0, 5.0, 10))
    expected = wrapper.explain_factual(x, threshold=thresholds)
    ex = enable(wrapper, ParallelConfig(strategy="threads", max_workers=2, **FORCE))
    explained, fallbacks = _explained(wrapper, x, threshold=thresholds)
    weights = [e.feature_weights["predict"].tolist() for e in explained.explanations]
    return ex.last_record, (weights, fallbacks), [e.feature_weights["predict"].tolist()
                                                  for e in expected.explanations]


def test_every_fallback_reason_has_a_case() -> None:
    assert set(CASES) == set(fallback_reasons())


@pytest.mark.parametrize("reason", fallback_reasons(), ids=lambda r: r.value)
def test_reason_is_reached_warned_and_recorded(reason: Reason) -> None:
    record, (result, fallbacks), expected = CASES[reason]()
    assert result == expected if not isinstance(expected[0], np.ndarray) else True
    assert record.fallback_reason is reason
    if reason is Reason.UNPICKLABLE_RESULT_RERUN:  # its items ran again in the caller: the call stays parallel
        assert (record.mode, record.selected_strategy) == ("parallel", "processes")
        assert not any(c.where == "retry" for c in record.chunks)
    elif reason in (Reason.MAP_FAILURE_RETRY, Reason.POOL_STOPPED):  # recovered in fresh workers: stays parallel
        assert record.mode == "parallel"
        assert any(c.where == "retry" for c in record.chunks)
        assert not any(c.where == "caller" and c.first_item > 0 for c in record.chunks)
    else:
        assert record.selected_strategy == "serial"
        assert record.mode == "serial"
    if reason is Reason.DISABLED:
        assert fallbacks == []
        return
    assert fallbacks, f"no ParallelFallbackWarning for {reason.value}"
    warning = fallbacks[0].message
    assert isinstance(warning, ParallelFallbackWarning)
    assert warning.reason is reason
    assert f"({reason.value})" in str(warning)
    assert warning.record is not None
    assert warning.record.fallback_reason is reason
    assert fallbacks[0].filename == __file__


def test_reason_codes_have_meaning_and_advice() -> None:
    for reason in Reason:
        assert reason.meaning
        assert reason.kind in ("fallback", "decision")
        if reason.is_fallback:
            assert reason.advice
        assert str(reason) == reason.value


def test_a_function_held_in_worker_processes_is_told_why_for_how_long_and_how_to_reset() -> None:
    """Tiny calls of a function that once crashed a worker ran on processes 200 of 200 times (0.93 ms against
    0.01 ms for a loop), lambdas of its line too, and nothing said this never wears off or how to undo it. It
    must not wear off (a crash in the caller takes the caller down): the decision's meaning says so."""
    meaning = Reason.AUTO_ISOLATES_CRASHES.meaning
    for says in ("for the life of the process", "take the caller down", "same source line",
                 "PLANNER.reset()"):
        assert says in meaning, (says, meaning)


def test_warnings_appear_once_per_call_site_and_reason_by_default() -> None:
    ex = ParallelExecutor(ParallelConfig(strategy="processes"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default", ParallelFallbackWarning)
        for n in range(3, 9):
            ex.map(tasks.square, range(n))  # one call site, tiny every time, n differs
        ex.map(tasks.square, range(4))  # a second call site
    messages = [w for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert len(messages) == 2
    assert len({w.lineno for w in messages}) == 2


def test_a_fallback_warning_shown_before_is_shown_again_once_the_filters_change() -> None:
    """As the standard library does: "once per call site" is forgotten when the filters change (a fresh
    ``catch_warnings`` block, a test re-arming warnings, a re-run notebook cell); before, a fallback shown once
    never came back for that line, where a plain warning did."""
    ex = ParallelExecutor(ParallelConfig(strategy="processes"))
    shown = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            # Python 3.12+ warns at a fork while the process runs another OS thread (here conftest's faulthandler
            # watchdog): the pool's start, in the first block only; not what this test counts
            warnings.filterwarnings("ignore", message=r"This process \(pid=\d+\) is multi-threaded",
                                    category=DeprecationWarning)
            for _ in range(3):
                ex.map(tasks.square, range(5))  # one call site, tiny every time
                warnings.warn("plain", UserWarning, stacklevel=1)
        shown.append(sorted(w.category.__name__ for w in caught))
    assert shown == [["ParallelFallbackWarning", "UserWarning"]] * 2


def test_a_fallback_warning_is_written_only_when_it_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop of small calls kept serial wrote each call's warning text (its numbers, its advice) to have it
    ignored by a filter or by the once-per-line rule; a filter that matches on the text still reads it."""
    from payoff.telemetry import warnings as payoff_warnings

    written: list[str] = []

    def counted(record: Any, *rest: Any) -> str:
        written.append(record.workload)
        return real(record, *rest)

    real = payoff_warnings.fallback_message
    monkeypatch.setattr(payoff_warnings, "fallback_message", counted)
    ex = ParallelExecutor(ParallelConfig())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        ex.map(tasks.square, range(5), workload="ignored")
        warnings.simplefilter("default", ParallelFallbackWarning)
        for _ in range(3):
            ex.map(tasks.square, range(5), workload="shown once")
        warnings.filterwarnings("ignore", message="payoff: 5 items of workload 'by text'",
                                category=ParallelFallbackWarning)
        ex.map(tasks.square, range(5), workload="by text")
    assert written == ["shown once", "by text"]
    assert [str(w.message).split("'")[1] for w in caught] == ["shown once"]


def test_warning_filters_still_apply() -> None:
    ex = ParallelExecutor(ParallelConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParallelFallbackWarning)
        with pytest.raises(ParallelFallbackWarning) as info:
            ex.map(tasks.square, range(5))
    assert info.value.reason is Reason.TINY_WORKLOAD
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        ex.map(tasks.square, range(5))
    assert caught == []


def test_moving_data_is_not_advised_to_raise_the_size_limit_that_played_no_part() -> None:
    """``payload_too_large`` has two causes: a task above ``task_size_hint_bytes`` (raising it helps), and data
    whose moving costs more than the pool saves (the planner's detail then says so: the decision table's rows),
    where the advice named the limit all the same (advice trial: ``task_size_hint_bytes=2**40`` changed
    nothing)."""
    from dataclasses import replace

    limited, _ = CASES[Reason.PAYLOAD_TOO_LARGE]()[:2]
    assert "task_size_hint_bytes" in limited.fallback_detail and "raise task_size_hint_bytes" in limited.summary()
    moving = replace(limited, fallback_detail="20 items x 916.1 us = 18.32 ms of work; processes would need about "
                                              "252.97 ms, 240.01 ms of it moving pickled data")
    assert "task_size_hint_bytes" not in moving.summary() and "send indices" in moving.summary(), moving.summary()


def test_a_disabled_call_says_where_it_was_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detail said ``enabled=False`` and the advice "or CE_PARALLEL to a strategy": with PAYOFF_PARALLEL=off
    that raised (the two variables disagreed), and a config given as it is reads no variable (advice trial)."""
    monkeypatch.delenv("CE_PARALLEL", raising=False)
    monkeypatch.setenv("PAYOFF_PARALLEL", "off")
    with ParallelExecutor() as ex:
        ex.map(tasks.square, range(10))
        by_env = ex.last_record
    monkeypatch.delenv("PAYOFF_PARALLEL")
    monkeypatch.setenv("CE_PARALLEL", "processes")
    with ParallelExecutor(ParallelConfig(enabled=False)) as ex:
        ex.map(tasks.square, range(10))
        given = ex.last_record
    monkeypatch.setenv("CE_PARALLEL", "off")
    with ParallelExecutor(ParallelConfig(enabled=False)) as ex:
        ex.map(tasks.square, range(10))
        both = ex.last_record
    assert by_env is not None and by_env.fallback_reason is Reason.DISABLED
    assert "PAYOFF_PARALLEL=off is set" in by_env.fallback_detail, by_env.fallback_detail
    assert given is not None and "the ParallelConfig the executor was given" in given.fallback_detail
    # a given config and a variable that says off too: the detail cannot tell which, so it names both (review)
    assert both is not None and "CE_PARALLEL=off" in both.fallback_detail, both.fallback_detail
    assert "one given a config reads no variable" in both.fallback_detail, both.fallback_detail
    assert all("where the detail says" in r.summary() for r in (by_env, given, both))
