"""What the planner knows about pickling belongs to the object it pickled, and to the call whose items it saw.

Facts are remembered per function *source location* (so a lambda made in a
loop is probed once), but whether a callable pickles depends on the very
object: another lambda of the same line, a partial over a lock. And whether
an item or a result pickles depends on that call's items, not the function.
Before: a lambda first run on threads raised ``PicklingError`` on processes,
a partial over a lock raised ``TypeError``, one call over locks kept every
later call of the function serial, and auto sent locks to joblib, which
cannot send them either, and raised.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import pickle
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning, Reason, _knowledge, planning
from payoff._payload import by_value_size
from payoff.record import MapRecord
from tests import tasks

EAGER = {"max_workers": 2, "tiny_workload_threshold": 0, "min_batch_size": 1}
THREADS_FOR_DATA = (Reason.AUTO_SHARED_MEMORY, Reason.AUTO_WAITING)
"""Threads for data no process can take; a probe descheduled on a loaded machine reads as waiting work, which
goes to threads too (seen in the sdist's inner test run, which runs beside the outer suite)."""
"""Parallel whenever the data allows it: these tests are about what can travel, not about what pays."""


@pytest.fixture(autouse=True)
def _quiet_fallbacks() -> Iterator[None]:
    """Serial fallbacks are what several tests expect: their warnings are not the subject here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(ex: ParallelExecutor, fn: Any, items: list[Any]) -> tuple[list[Any], MapRecord]:
    out = ex.map(fn, items)
    record = ex.last_record
    assert record is not None
    return out, record


def test_a_lambda_first_run_on_threads_is_not_sent_to_processes() -> None:
    """A threads call pickles nothing: it must not leave the lambda looking picklable."""
    planner = planning.Planner()
    lock = threading.Lock()  # nor can cloudpickle (a bare lambda would travel by value to named processes)
    heavy = lambda x: tasks.spin(x) if lock else 0  # noqa: E731 - a lambda is the point: pickle cannot send it
    items = list(range(60))
    with ParallelExecutor(config=ParallelConfig(strategy="threads", **EAGER), planner=planner) as th, \
            ParallelExecutor(config=ParallelConfig(strategy="processes", **EAGER), planner=planner) as pr:
        assert run(th, heavy, items)[1].selected_strategy == "threads"
        out, record = run(pr, heavy, items)
    assert out == [tasks.spin(x) for x in items]
    assert (record.selected_strategy, record.fallback_reason) == ("serial", Reason.UNPICKLABLE)
    assert "function" in record.fallback_detail, record.fallback_detail


def test_a_partial_over_a_lock_is_checked_though_one_over_an_int_pickled() -> None:
    """Two partials of one function share a source location, not their arguments."""
    planner = planning.Planner()
    items = list(range(60))
    expected = [tasks.spin(x) for x in items]
    with ParallelExecutor(config=ParallelConfig(strategy="processes", **EAGER), planner=planner) as ex:
        out, first = run(ex, functools.partial(tasks.spin_with, 2), items)
        assert out == expected and first.selected_strategy == "processes"
        out, second = run(ex, functools.partial(tasks.spin_with, threading.Lock()), items)
        assert out == expected
        assert (second.selected_strategy, second.fallback_reason) == ("serial", Reason.UNPICKLABLE)
        assert "function" in second.fallback_detail and "_thread.lock" in second.fallback_detail
        out, third = run(ex, functools.partial(tasks.spin_with, 3), items)  # and a picklable one again
        assert out == expected and third.selected_strategy == "processes", third.fallback_detail


def test_one_call_over_unpicklable_items_does_not_keep_later_calls_serial() -> None:
    planner = planning.Planner()
    with ParallelExecutor(config=ParallelConfig(strategy="processes", **EAGER), planner=planner) as ex:
        out, locked = run(ex, tasks.spin_ignoring, [threading.Lock() for _ in range(40)])
        assert out == [tasks.spin(0)] * 40
        assert (locked.selected_strategy, locked.fallback_reason) == ("serial", Reason.UNPICKLABLE)
        for _ in range(2):
            out, plain = run(ex, tasks.spin_ignoring, list(range(40)))
            assert out == [tasks.spin(0)] * 40
            assert (plain.selected_strategy, plain.fallback_reason) == ("processes", None), plain.fallback_detail
    assert "item" in locked.fallback_detail and "_thread.lock" in locked.fallback_detail
    assert "strategy='joblib'" not in locked.fallback_detail, "cloudpickle cannot send a lock either"


def test_a_named_joblib_falls_back_on_items_cloudpickle_cannot_send() -> None:
    with ParallelExecutor(config=ParallelConfig(strategy="joblib", **EAGER)) as ex:
        out, record = run(ex, tasks.spin_ignoring, [threading.Lock() for _ in range(40)])
    assert out == [tasks.spin(0)] * 40
    assert (record.selected_strategy, record.fallback_reason) == ("serial", Reason.UNPICKLABLE)
    assert "item" in record.fallback_detail and "cloudpickle cannot send it either" in record.fallback_detail


def _on_threads_or_serial(record: MapRecord, what: str) -> None:
    """Threads share what no pickler can send while a run measures them gaining; else serial, saying what."""
    if record.selected_strategy == "threads":
        assert (record.decision_reason, record.fallback_reason) == (Reason.AUTO_SHARED_MEMORY, None)
    else:
        assert (record.selected_strategy, record.fallback_reason) == ("serial", Reason.UNPICKLABLE)
        assert what in record.fallback_detail and "threads measured" in record.fallback_detail


def test_auto_does_not_send_unpicklable_results_to_joblib() -> None:
    """Cloudpickle cannot send a lock back either: auto chose joblib for them and raised."""
    planner = planning.Planner()
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=planner) as ex:
        out, first = run(ex, tasks.spin_then_lock, list(range(60)))
        assert len(out) == 60 and all(isinstance(lock, type(threading.Lock())) for lock in out)
        assert first.selected_strategy == "threads", first.summary()  # nothing measured threads yet
        assert first.decision_reason in THREADS_FOR_DATA
        for _ in range(2):  # known now: the results are checked again, not forgotten
            out, later = run(ex, tasks.spin_then_lock, list(range(60)))
            assert len(out) == 60
            _on_threads_or_serial(later, "result")


def test_auto_does_not_send_unpicklable_items_to_joblib() -> None:
    planner = planning.Planner()
    locks = [threading.Lock() for _ in range(60)]
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=planner) as ex:
        out, record = run(ex, tasks.spin_ignoring, locks)
        assert out == [tasks.spin(0)] * 60
        assert record.selected_strategy == "threads" and record.decision_reason in THREADS_FOR_DATA, record.summary()
        out, later = run(ex, tasks.spin_ignoring, locks)
        assert out == [tasks.spin(0)] * 60
        _on_threads_or_serial(later, "item")


def test_results_that_could_not_be_pickled_once_do_not_keep_the_function_off_processes() -> None:
    planner = planning.Planner()
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=planner) as ex:
        out, locked = run(ex, tasks.lock_if_negative, list(range(-60, 0)))
        assert len(out) == 60
        assert locked.selected_strategy in ("threads", "serial"), "locks cannot come back from processes"
        out, plain = run(ex, tasks.lock_if_negative, list(range(60)))
        assert out == list(range(60))
        assert (plain.selected_strategy, plain.fallback_reason) == ("processes", None), plain.fallback_detail


def _cpu_work(fn: Any) -> planning.Planner:
    """A planner that knows ``fn`` as CPU work of ~1 ms an item: auto would send its items to processes if they
    could travel, whatever a loaded machine's probe would read."""
    planner = planning.Planner()
    planner.knowledge.teach(fn, _knowledge.Facts(1e-3, 1.0, 40, "", None))
    return planner


LATE_LOCKS = [-i if i in (150, 171) else i for i in range(200)]
"""Two items past any probe whose results are locks (``tasks.lock_if_negative``), among ints that travel."""


def _locks_at(out: list[Any]) -> list[int]:
    return [i for i, result in enumerate(out) if isinstance(result, type(threading.Lock()))]


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered"])
def test_auto_runs_again_here_the_items_whose_results_cannot_come_back(method: str) -> None:
    """A loop returns a lock; auto, which chose processes from items whose results were ints, raised
    "item 150 ... cannot be pickled back" (a limit left open since the reliability issue). Those items run
    again in the caller now, the call stays on its pool, and the record says which ran twice."""
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=_cpu_work(tasks.lock_if_negative)) as ex:
        out = list(getattr(ex, method)(tasks.lock_if_negative, LATE_LOCKS))
        record = ex.last_record
    assert record is not None
    if method == "imap_unordered":
        out = sorted(out, key=lambda r: LATE_LOCKS.index(r) if isinstance(r, int) else 150 + 21 * (r is out[-1]))
        assert len(_locks_at(out)) == 2
    else:
        assert _locks_at(out) == [150, 171]
    assert [r for r in out if isinstance(r, int)] == [i for i in LATE_LOCKS if i >= 0]
    assert record.selected_strategy == "processes", record.summary()
    assert record.fallback_reason is Reason.UNPICKLABLE_RESULT_RERUN and not record.fell_back, record.summary()
    assert "2 items (150, 171)" in record.fallback_detail and "a lock" in record.fallback_detail, \
        record.fallback_detail


def test_with_a_worker_initializer_an_item_is_not_run_again_here_and_the_error_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Items of a call whose pool has an initializer run only on workers (``planning._has_initializer``): run
    again here, the initializer ran in the caller, its failure became the call's error and a slow one outlived
    the call's timeout (review 72, N2). The first such item is the error, saying why it was not run here."""
    monkeypatch.setattr(tasks, "_MODEL", None)
    config = ParallelConfig(worker_initializer=tasks.load_model, worker_init_args=(3,), **EAGER)
    with ParallelExecutor(config=config, planner=_cpu_work(tasks.predict_or_lock)) as ex, \
            pytest.raises(RuntimeError, match=r"item 150 of the map .* returned a lock.*worker_initializer"):
        ex.map(tasks.predict_or_lock, LATE_LOCKS)
    assert tasks._MODEL is None, "the initializer ran in the caller"


def test_an_item_that_fails_when_run_again_here_raises_its_own_error() -> None:
    """The rerun is the item's run as a loop's: its error is the call's, the results before it out first."""
    fn = functools.partial(tasks.lock_there_error_in, os.getpid())
    items = [-i if i == 150 else i for i in range(200)]
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=_cpu_work(fn)) as ex:
        results = ex.imap(fn, items)
        got = [next(results) for _ in range(150)]
        with pytest.raises(ValueError, match="item -150 failed in the caller"):
            next(results)
    assert got == list(range(150))


def test_a_call_that_ran_items_twice_is_judged_though_its_pool_was_cold() -> None:
    """A pool's first call gives no verdict (its start is no cost of later calls); one whose items ran twice
    was never judged, so every later call went to processes and did the work twice again (review 65, F2)."""
    planner = _cpu_work(tasks.lock_if_negative)
    items = [0] + [-i for i in range(1, 120)]
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=planner) as ex:
        out, record = run(ex, tasks.lock_if_negative, items)
    assert len(_locks_at(out)) == 119 and record.pool_started, record.summary()
    assert record.fallback_reason is Reason.UNPICKLABLE_RESULT_RERUN, record.summary()
    known = planner.knowledge.get(tasks.lock_if_negative)
    assert known is not None
    assert "processes" in known.verdicts or known.unjudged, "judged, or held for a loop under outside load"


def _reran(log: Any) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_results_already_back_go_out_before_items_are_run_again_here(tmp_path: Any) -> None:
    """The caller ran a chunk's unsendable items as soon as that chunk came back, so results of an earlier
    chunk, back long before, waited for them (an imap's timeout then said every result ready was out when 30
    were held; review 72, N1). They run in input order now, when their results' turn comes."""
    log = tmp_path / "reran"
    # item 0 is probed here; then a slower chunk of 30 that travel, and one of 30 that cannot come back
    items = [(i, os.getpid(), str(log), 0.02, -1) for i in range(31)]
    items += [(-i, os.getpid(), str(log), 0.0, -1) for i in range(31, 61)]
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=_cpu_work(tasks.unsendable_noting_reruns)) as ex:
        results = ex.imap(tasks.unsendable_noting_reruns, items, chunksize=30)
        first = [next(results) for _ in range(31)]
        reran_by_then = _reran(log)
        rest = list(results)
    assert first == list(range(31)) and reran_by_then == []
    assert [r.x for r in rest] == [-i for i in range(31, 61)] and _reran(log) == [-i for i in range(31, 61)]


def test_no_item_past_an_items_error_runs_again_here(tmp_path: Any) -> None:
    """A loop stops at item 30's error; the chunks after it, back first, had their items run again in the
    caller, side effects and all (review 72, N5)."""
    log = tmp_path / "reran"
    items = [(i, os.getpid(), str(log), 0.3 if i == 30 else 0.0, 30) for i in range(30)]
    items += [(-i, os.getpid(), str(log), 0.0, 30) for i in range(31, 80)]
    items.insert(30, (30, os.getpid(), str(log), 0.3, 30))
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=_cpu_work(tasks.unsendable_noting_reruns)) as ex, \
            pytest.raises(ValueError, match="item 30 raised"):
        ex.map(tasks.unsendable_noting_reruns, items, chunksize=10)
    assert _reran(log) == []


def test_a_call_whose_worker_crashed_runs_no_item_here(tmp_path: Any) -> None:
    """After a crash the caller's process never runs the function's items; the call that met the crash ran
    item 40 here all the same, and the next, identical call raised (review 72, N4). Both raise now, saying
    why."""
    marker = str(tmp_path / "died")
    items = [(i, os.getpid(), marker) for i in range(60)]
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=_cpu_work(tasks.unsendable_after_a_crash)) as ex:
        for _ in range(2):
            with pytest.raises(RuntimeError, match=r"item 40 .* crashed a worker process"):
                ex.map(tasks.unsendable_after_a_crash, items, chunksize=5)


@pytest.mark.parametrize("config", [{"strategy": "processes"}, {"force_serial_on_failure": False}],
                         ids=["named", "no-fallback"])
def test_a_named_backend_or_no_fallback_raises_for_a_result_that_cannot_come_back(config: dict[str, Any]) -> None:
    planner = _cpu_work(tasks.lock_if_negative)
    with ParallelExecutor(config=ParallelConfig(**config, **EAGER), planner=planner) as ex, \
            pytest.raises(RuntimeError, match=r"item 150 of the map .* returned a lock, which cannot be pickled"):
        ex.map(tasks.lock_if_negative, LATE_LOCKS)


@pytest.mark.parametrize("strategy", ["auto", "joblib"])
def test_open_text_files_never_reach_workers_as_copies_of_their_text(strategy: str, tmp_path: Any) -> None:
    """cloudpickle sends a text file open for reading as an io.StringIO of what is left to read: auto sent
    such items to joblib, where the function's ``f.fileno()`` raised what a loop never does, and a named
    process backend's fallback advised joblib (hunt 63, F2). They stay in this process now, whatever runs them."""
    paths = [tmp_path / f"f{i}" for i in range(150)]
    for i, path in enumerate(paths):
        path.write_text("x" * i)
    files = [path.open() for path in paths]
    try:
        with ParallelExecutor(config=ParallelConfig(strategy=strategy, **EAGER),
                              planner=_cpu_work(tasks.bytes_behind)) as ex:
            out, record = run(ex, tasks.bytes_behind, files)
    finally:
        for f in files:
            f.close()
    assert out == list(range(150))
    assert record.selected_strategy in ("threads", "serial"), record.selected_strategy
    assert "strategy='joblib'" not in record.fallback_detail, record.fallback_detail


def test_only_the_text_file_cloudpickle_would_copy_is_refused(tmp_path: Any) -> None:
    """A subclass with a ``__reduce__`` of its own (reopened by path) travelled before the refusal and must
    still: it matched ``isinstance`` and auto raised PicklingError where it had run on processes (review 67)."""
    from payoff import _by_value

    path = tmp_path / "f"
    path.write_text("text")
    with path.open() as plain, tasks.reopened_by_path(str(path)) as own:
        with pytest.raises(pickle.PicklingError, match=r"io\.StringIO copy"):
            _by_value.dumps(plain)
        again = pickle.loads(_by_value.dumps(own))
        try:
            assert type(again) is tasks.ReopenedByPath and again.read() == "text"
        finally:
            again.close()


def test_a_fallback_on_open_text_files_does_not_advise_joblib(tmp_path: Any) -> None:
    paths = [tmp_path / f"f{i}" for i in range(20)]
    for path in paths:
        path.write_text("text")
    files = [path.open() for path in paths]
    try:
        with ParallelExecutor(config=ParallelConfig(strategy="processes", **EAGER)) as ex:
            out, record = run(ex, tasks.bytes_behind, files)
    finally:
        for f in files:
            f.close()
    assert out == [4] * 20 and record.fallback_reason is Reason.UNPICKLABLE
    assert "joblib" not in record.fallback_detail and "cloudpickle cannot send it either" in record.fallback_detail


class CountsPickles:
    """A callable that counts how often it is pickled: the planner's cost on a repeated call, without a clock."""

    def __init__(self) -> None:
        self.pickled = 0

    def __call__(self, x: int) -> int:
        return x

    def __reduce__(self) -> tuple[Any, ...]:
        self.pickled += 1
        return (CountsPickles, ())


def _plan(planner: planning.Planner, fn: Any) -> planning.Plan:
    config = ParallelConfig(max_workers=2, tiny_workload_threshold=0)  # parallel, so its pickling is weighed
    return planner.plan(planning.Call(fn, list(range(1000)), config, "auto", None, None, None,
                                      frozenset(), 0))


def test_the_same_callable_is_pickled_once_a_new_one_again() -> None:
    """Repeated calls of one function object stay as cheap as before; another object is checked."""
    planner = planning.Planner()
    fn = CountsPickles()
    plans = [_plan(planner, fn) for _ in range(5)]
    assert not plans[0].probe.known and all(p.probe.known for p in plans[1:])
    assert fn.pickled == 1
    other = CountsPickles()
    _plan(planner, other)
    _plan(planner, other)
    assert other.pickled == 1


class CarriesAModel(CountsPickles):
    """A callable whose pickle is large (a model inside), made afresh for each call as closures often are."""

    def __reduce__(self) -> tuple[Any, ...]:
        self.pickled += 1
        return (_rebuild, (b"m" * 200_000,))


def _rebuild(_model: bytes) -> CarriesAModel:
    return CarriesAModel()


def test_a_large_callable_made_afresh_per_call_is_not_pickled_on_every_call() -> None:
    """Re-checking a new object is cheap for a small callable; a model-sized one trusts what its first measured."""
    planner = planning.Planner()
    first = CarriesAModel()
    _plan(planner, first)
    assert first.pickled == 1
    later = [CarriesAModel() for _ in range(3)]
    for fn in later:
        _plan(planner, fn)
    assert [fn.pickled for fn in later] == [0, 0, 0]


@pytest.mark.parametrize("first", ["threads", "serial", "processes"])
def test_results_never_checked_by_a_first_call_elsewhere_are_checked_before_auto_sends_them(first: str) -> None:
    """A first call on threads or serially pickles no result; nor does one on processes that the results
    failed. Their facts said "results pickle" and auto sent locks to processes on every later call."""
    planner = planning.Planner()
    items = list(range(60))
    with ParallelExecutor(config=ParallelConfig(strategy=first, **EAGER), planner=planner) as elsewhere, \
            contextlib.suppress(Exception):  # on processes the first call itself cannot bring locks back
        elsewhere.map(tasks.spin_then_lock, items)
    with ParallelExecutor(config=ParallelConfig(**EAGER), planner=planner) as ex:
        for _ in range(2):
            out, record = run(ex, tasks.spin_then_lock, items)
            assert len(out) == 60 and all(isinstance(lock, type(threading.Lock())) for lock in out)
            _on_threads_or_serial(record, "result")


def _compiled_rule(i: int) -> Any:
    """A function a rule engine exec's per request: no ``__module__``, so pickle and cloudpickle search every
    module for it (~2 ms together)."""
    namespace: dict[str, Any] = {}
    exec(f"def rule_{i}(x):\n    return x * {i % 7} + 1", namespace)
    return namespace[f"rule_{i}"]


TINY_ITEM_READ = 5e-6
"""An item of ``CountsPickles`` reads well under a microsecond; one read above this met a stall inside it."""


def test_a_tiny_call_does_not_pickle_its_function() -> None:
    """A tiny auto call stays serial whatever its payload, so nothing is pickled to size it. Before, every new
    function object was pickled (and, refused by pickle, cloudpickled) first: a rule engine exec'ing a function
    per request paid ~2 ms of planning a call for 8 items of 0.1 us that then ran serially anyway."""
    for _ in range(3):  # the scene needs the item read tiny: one stall inside it (33 us, beside a busy suite)
        planner = planning.Planner()  # makes 8 of them weigh as much as a pool's cost, and then they are sized
        fn = CountsPickles()
        collecting = gc.isenabled()
        gc.disable()  # a full collection of the suite's heap inside the probe's one timed item made it cost ~15 us+
        try:
            plan = planner.plan(planning.Call(fn, list(range(8)), ParallelConfig(max_workers=2), "auto", None, None,
                                              None, frozenset(), 0))
        finally:
            if collecting:
                gc.enable()
        if (plan.probe.seconds_per_item or 0.0) < TINY_ITEM_READ:
            break
    assert (plan.probe.seconds_per_item or 0.0) < TINY_ITEM_READ, plan.probe.seconds_per_item
    assert (plan.strategy, plan.fallback) == ("serial", Reason.TINY_WORKLOAD), plan
    assert fn.pickled == 0, plan.probe.seconds_per_item
    rule = _compiled_rule(3)
    with ParallelExecutor(planner=planner) as ex:
        assert ex.map(rule, range(8)) == [x * 3 + 1 for x in range(8)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.TINY_WORKLOAD, record.summary()
    facts = planner.knowledge.get(rule)  # the serial run's cost, learned from its record: no pickling
    assert facts is None or (facts.measured_on is None and facts.result_error is None), facts


def test_a_function_not_pickled_while_tiny_is_pickled_once_its_call_can_go_parallel() -> None:
    """Skipping the pickling of tiny calls must not send a function pickle refuses to processes later. The scene
    needs the first item read tiny: a clean-clone CI run read it at 572 us (a stall), which priced 8 of them
    worth sizing; such a reading is taken again on a fresh planner, as in the test above."""
    for _ in range(3):
        planner = planning.Planner()
        rule = _compiled_rule(4)
        tiny = planner.plan(planning.Call(rule, list(range(8)), ParallelConfig(max_workers=2), "auto", None, None,
                                          None, frozenset(), 0))
        if (tiny.probe.seconds_per_item or 0.0) < TINY_ITEM_READ:
            break
    assert tiny.strategy == "serial" and not tiny.probe.fn_checked, tiny.probe.seconds_per_item
    big = planner.plan(planning.Call(rule, list(range(1000)), ParallelConfig(**EAGER), "auto", None, None, None,
                                     frozenset(), 0))
    assert big.probe.fn_checked and big.probe.pickle_error, big.probe
    assert (big.strategy, big.decision) == ("processes", Reason.AUTO_CPU_BOUND), big  # by value


def test_a_tiny_call_of_a_known_function_runs_in_one_piece() -> None:
    """A known function whose results were never checked for pickling (its calls stayed serial) had its first
    item run apart on every tiny call, to check a result no pool would receive: two chunks, and their
    bookkeeping, for each of a service's small calls (~25% of payoff's cost per 20-item call)."""
    planner = planning.Planner()
    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planner) as ex:
        for _ in range(3):
            assert ex.map(tasks.square, range(20)) == [x * x for x in range(20)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.TINY_WORKLOAD, record.summary()
    assert record.n_chunks == 1, record.summary()


class _HoldsALock:
    """Defined at module top level; its instance holds what no pickler sends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def add_one(self, x: int) -> int:
        return x + 1


@pytest.mark.parametrize("strategy", ["joblib", "processes"])
def test_a_bound_method_whose_instance_cannot_be_sent_is_named_and_joblib_is_not_advised(strategy: str) -> None:
    """The method is at module top level: its instance's lock refuses, and cloudpickle (joblib's) refuses it too,
    so neither "define it at top level" nor "use joblib" would help the user."""
    with ParallelExecutor(ParallelConfig(strategy=strategy), planner=planning.Planner()) as ex:
        with pytest.warns(ParallelFallbackWarning, match="unpicklable") as caught:
            results = ex.map(_HoldsALock().add_one, range(50))
        record = ex.last_record
    assert results == list(range(1, 51))
    assert record is not None and record.fallback_reason is Reason.UNPICKLABLE
    assert "bound method _HoldsALock.add_one" in record.fallback_detail
    text = " ".join(str(w.message) for w in caught)
    assert "_HoldsALock instance" in text and "strategy='joblib'" not in text and "worker_initializer" in text


LATE_FUNCTION = '''
import sys, threading, warnings
from payoff import ParallelConfig, ParallelExecutor

LOCK = threading.Lock()


def early(x):
    return x


if __name__ == "__main__":
    ex = ParallelExecutor(ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0))
    ex.map(early, range(20))  # the workers start (fork): what is defined later is not theirs to look up

    def late(x):
        with LOCK:
            return x + 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ex.map(late, range(20)) == list(range(1, 21))
    print("REASON", ex.last_record.fallback_reason.value)
    print("SUMMARY", ex.last_record.summary())
    for w in caught:
        print("WARNING", str(w.message))
    ex.shutdown()
'''


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_function_sent_by_value_that_cloudpickle_refuses_is_not_told_to_use_joblib(strategy: str,
                                                                                     tmp_path: Any) -> None:
    """The detail said cloudpickle cannot pickle it and the advice then said strategy='joblib' (cloudpickle);
    under joblib the same fallback said it again (advice trial)."""
    import subprocess
    import sys

    script = tmp_path / "late.py"
    script.write_text(LATE_FUNCTION)
    done = subprocess.run([sys.executable, str(script), strategy], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "REASON unpicklable" in done.stdout, done.stdout
    told = "\n".join(line for line in done.stdout.splitlines() if line.startswith(("SUMMARY", "WARNING")))
    assert "strategy='joblib'" not in told and "keep locks" in told, told


@pytest.mark.parametrize("strategy", ["auto", "processes"])
def test_a_function_cloudpickle_writes_but_cannot_load_back_runs_here_saying_so(strategy: str) -> None:
    """A ``unittest.mock.Mock`` wrapping a real function, as a test suite passes one, once called: pickle refuses
    it, cloudpickle writes it, and loading that recurses without end. auto sent it to processes and the call
    raised ``RecursionError`` from the workers, where the loop ran it (hunt 55; failed before)."""
    from unittest import mock

    fn = mock.Mock(wraps=tasks.spin_ignoring)
    fn(0)  # its record of calls is what no longer loads
    with ParallelExecutor(config=ParallelConfig(strategy=strategy, **EAGER)) as ex:
        out, record = run(ex, fn, list(range(40)))
    assert out == [tasks.spin(0)] * 40 and fn.call_count == 41
    assert (record.selected_strategy, record.fallback_reason) == ("serial", Reason.UNPICKLABLE)
    assert "does not load back: RecursionError" in record.fallback_detail, record.fallback_detail


def _counting_sizes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What ``by_value_size`` hands cloudpickle from now on, each time it sizes something."""
    from payoff import _payload

    sized: list[object] = []
    real = _payload.cloudpickled_size

    def counting(obj: object) -> int | None:
        sized.append(obj)
        return real(obj)

    monkeypatch.setattr(_payload, "cloudpickled_size", counting)
    return sized


def test_what_a_function_weighs_sent_by_value_is_sized_again_only_once_a_global_it_reads_is_rebound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sized each call, a later cell's function reading a million small dicts cost 176-208 ms a call in
    cloudpickle; kept for good, a global rebound from 160 MB to 8 KB kept the call serial as "the function
    carries 160.0 MB" (review 69). The size is kept while what the function reads stays bound as it was."""
    sized = _counting_sizes(monkeypatch)
    scope: dict[str, Any] = {"DATA": bytes(200_000)}
    exec("def reads(i):\n    return len(DATA) + i\n", scope)
    reads = scope["reads"]
    first = by_value_size(reads, 0)
    assert first > 200_000 and by_value_size(reads, 0) == first and len(sized) == 1
    scope["DATA"] = bytes(10)  # a later cell binds it anew
    assert by_value_size(reads, 0) < 1_000 and len(sized) == 2
    scope["OTHER"] = bytes(200_000)  # a global it does not read
    assert by_value_size(reads, 0) < 1_000 and len(sized) == 2


class _Table:
    def __init__(self, table: bytes) -> None:
        self.table = table

    def __call__(self, i: int) -> int:
        return len(self.table) + i

    def look(self, i: int) -> int:
        return len(self.table) + i


def test_what_partials_methods_and_callable_instances_weigh_by_value_follows_what_they_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial or a callable instance kept its first size for good (80 MB priced where 730 bytes went), and a
    bound method, a new object at each access, was sized again on every call (review 70)."""
    sized = _counting_sizes(monkeypatch)
    scope: dict[str, Any] = {"DATA": bytes(200_000)}
    exec("def reads(i, k=0):\n    return len(DATA) + i + k\n", scope)
    part = functools.partial(scope["reads"], k=1)
    assert by_value_size(part, 0) > 200_000 and by_value_size(part, 0) > 200_000
    scope["DATA"] = bytes(10)
    assert by_value_size(part, 0) < 2_000 and len(sized) == 2
    table = _Table(bytes(300_000))
    assert by_value_size(table, 0) > 300_000 and by_value_size(table.look, 0) > 300_000
    assert by_value_size(table.look, 0) > 300_000 and len(sized) == 4  # a new bound method: kept
    table.table = bytes(5)
    assert by_value_size(table, 0) < 2_000 and by_value_size(table.look, 0) < 2_000
    assert len(sized) == 6


class _AttrDict(dict[str, Any]):
    __getattr__ = dict.__getitem__  # a config idiom: a missing attribute raises KeyError


def test_pricing_a_function_never_raises_for_what_its_globals_are() -> None:
    """``getattr(cfg, "nbytes", None)`` on a config dict whose ``__getattr__`` raises ``KeyError`` failed the
    user's call from inside the planner (review 71)."""
    scope: dict[str, Any] = {"CFG": _AttrDict(scale=2)}
    exec("def scaled(i):\n    return CFG.scale * i\n", scope)
    assert by_value_size(scope["scaled"], 7) > 0
