"""A worker's exception arrives as the user wrote it, with the worker's traceback (issue 12)."""

from __future__ import annotations

import itertools
import operator
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from payoff import MapRecord, Observer, ParallelConfig, ParallelExecutor, planning
from payoff.errors import RemoteError, RemoteTraceback, StuckThreadsWarning
from payoff.observers import CallInfo
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_the_remote_traceback_shows_the_users_frames(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        with pytest.raises(ValueError, match="deep user failure on 3") as info:
            ex.map(tasks.user_frame_error, range(10), chunksize=2)
        assert ex.map(tasks.square, range(8), chunksize=2) == [x * x for x in range(8)], "the pool stays usable"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_deep_user_helper" in cause.text and "user_frame_error" in cause.text
    assert any("item 3 of the map" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_exception_no_copy_can_rebuild_keeps_its_type_and_message(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises((RemoteError, tasks.TwoArgOSError)) as info:
        ex.map(tasks.raise_two_arg_os_error, range(10), chunksize=2)
    err = info.value
    if not isinstance(err, RemoteError):  # a library in the process (tblib, via dask) taught pickle to rebuild it
        assert type(err) is tasks.TwoArgOSError and str(err) == "the os error's message (code 7)", repr(err)
        return
    assert err.type_name == "tests.tasks.TwoArgOSError"
    assert err.message == "the os error's message (code 7)"
    assert "raise_two_arg_os_error" in err.traceback_text
    assert str(err) == "tests.tasks.TwoArgOSError: the os error's message (code 7)"
    assert any("item 3 of the map" in note for note in getattr(err, "__notes__", []))


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_exception_holding_what_pickle_refuses_arrives_as_its_class_without_it(strategy: str) -> None:
    """It arrived as a ``RemoteError``, which ``except HoldsALockError`` missed where a loop's was caught."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(tasks.HoldsALockError) as info:
        ex.map(tasks.raise_unpicklable, range(10), chunksize=2)
    err = info.value
    assert str(err) == "the lock holder's message" and not hasattr(err, "lock"), vars(err)
    notes = " ".join(getattr(err, "__notes__", []))
    assert "item 3 of the map" in notes and "attribute(s) lock could not travel" in notes, notes
    assert isinstance(err.__cause__, RemoteTraceback) and "raise_unpicklable" in err.__cause__.text


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_exception_whose_init_takes_other_arguments_arrives_as_its_class(strategy: str) -> None:
    """Old code: ``TypeError: __init__() missing 1 required positional argument`` replaced it; then a
    ``RemoteError``, which ``except TwoArgError`` missed (hunt 76)."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(tasks.TwoArgError) as info:
        ex.map(tasks.raise_two_arg, range(10), chunksize=2)
    err = info.value
    assert err.code == 42 and str(err) == "the user's message (code 42)", repr(err)
    assert err.args == ("the user's message (code 42)",)


@pytest.mark.parametrize("strategy", ["serial", "threads"])
def test_in_process_errors_are_the_users_own_object(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(tasks.TwoArgError) as info:
        ex.map(tasks.raise_two_arg, range(10), chunksize=2)
    assert info.value.code == 42


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes", "auto"])
@pytest.mark.parametrize("chunksize", [None, 3, 5])
@pytest.mark.parametrize("lazy", [False, True])
def test_imap_yields_every_result_before_the_failing_item_then_raises(strategy: str, chunksize: int | None,
                                                                       lazy: bool) -> None:
    """As the builtin ``map`` and ``concurrent.futures`` do: an item's error comes where the item is."""
    got: list[int] = []

    def take_all(results: Iterator[int]) -> None:
        for value in results:
            got.append(value)

    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        items = iter(range(20)) if lazy else list(range(20))
        with pytest.raises(KeyError, match="bad item 7"):
            take_all(ex.imap(tasks.fail_on_seven, items, chunksize=chunksize))
        assert ex.map(tasks.square, range(6)) == [x * x for x in range(6)], "the executor stays usable"
    assert got == list(range(7))


class _Errors(Observer):
    def __init__(self) -> None:
        self.seen: list[BaseException | None] = []

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        self.seen.append(error)


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_an_item_raising_generator_exit_is_a_failed_call_not_a_closed_one(strategy: str) -> None:
    spy = _Errors()
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE), observers=[spy]) as ex, \
            pytest.raises(GeneratorExit, match="item five") as raised:
        ex.map(tasks.generator_exit_on_five, range(20), chunksize=3)
    assert len(spy.seen) == 1 and isinstance(spy.seen[0], GeneratorExit), spy.seen
    notes = getattr(raised.value, "__notes__", None) or []
    assert any(note.startswith("payoff: raised by item 5 of the map") for note in notes), notes  # as any item's


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_item_that_cannot_be_pickled_is_named(strategy: str) -> None:
    """Only some items are unsendable: the pickling error raised while sending them names the item."""
    items: list[Any] = [threading.Lock() if i == 70 else i for i in range(100)]
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        ex.map(tasks.identity, list(range(20)), chunksize=10)  # measured and sendable: the next call is sent
        with pytest.raises(Exception, match="pickle") as info:
            ex.map(tasks.identity, items, chunksize=10)
        notes = getattr(info.value, "__notes__", [])
        assert any("item 70 of the map" in note and strategy in note for note in notes), notes
        assert ex.map(tasks.square, range(5)) == [0, 1, 4, 9, 16], "the executor still works"


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_result_that_cannot_be_pickled_back_is_named_and_the_results_before_it_arrive(strategy: str) -> None:
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        with pytest.raises(RuntimeError, match=r"item 7 of the map .* returned a lock") as info:
            ex.map(tasks.lock_at_seven, range(20), chunksize=20)
        assert "cannot be pickled back" in str(info.value)
        results = ex.imap(tasks.lock_at_seven, range(20), chunksize=20)
        got = [next(results) for _ in range(7)]
        assert got == list(range(7)), "imap hands out the results before it, as for any item's error"
        with pytest.raises(RuntimeError, match="item 7 of the map"):
            next(results)


@pytest.mark.parametrize("strategy", ["threads", "processes", "joblib", "auto"])
def test_map_raises_the_first_failing_item_in_input_order_not_the_first_to_fail(strategy: str) -> None:
    """Item 80 failed at once and item 5 after 0.3 s: map raised item 80's KeyError, where the builtin map, a
    list comprehension and ``concurrent.futures`` raise item 5's ValueError (helper 27, fault 4)."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(ValueError, match="item 5"):
        ex.map(tasks.fail_late_and_early, range(100), chunksize=10)


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_an_exception_object_raised_again_carries_one_payoff_note(strategy: str) -> None:
    """A service raising one exception object on many calls (a module-level sentinel) gave it one more
    'raised by item' note per call: its ``__notes__`` grew for the life of the process (in the process
    workers too, where the object lives). The note names the latest raise only; the user's own notes stay."""
    tasks.SAME_ERROR.add_note("the user's own note")
    try:
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
            for _ in range(5):
                with pytest.raises(ValueError, match="the same object") as info:
                    ex.map(tasks.raise_the_same_error, range(8), chunksize=2)
        notes = list(getattr(info.value, "__notes__", []))
        assert [n for n in notes if n.startswith("payoff: raised by item")] == \
            [n for n in notes if "item 3 of the map" in n], notes
        assert len([n for n in notes if n.startswith("payoff: raised by item")]) == 1, notes
        assert "the user's own note" in notes
    finally:
        tasks.SAME_ERROR.__notes__ = []


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes", "joblib"])
def test_an_item_that_calls_sys_exit_is_named_and_ends_the_program_as_in_a_loop(strategy: str) -> None:
    """``sys.exit(3)`` in item 5 goes on to the caller, as it would from a loop (and from ``concurrent.futures``),
    but it came without payoff's note naming the item that raised it, which every ``Exception`` gets. Its exit
    status survives the trip from a worker process even where ``dask.distributed`` was imported (it installs
    tblib's exception pickling, which rebuilt ``SystemExit(3)`` with ``code`` None: the program exited 0)."""
    import distributed  # noqa: F401  # what a program that used payoff's dask strategy has done

    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0)
    for method in ("map", "imap"):  # a serial imap's items run as their results are taken: it had no note
        with ParallelExecutor(config) as ex, pytest.raises(SystemExit) as raised:
            list(getattr(ex, method)(tasks.sys_exit_on_five, range(20)))
        assert raised.value.code == 3
        notes = getattr(raised.value, "__notes__", [])
        assert any(n.startswith("payoff: raised by item 5 of the map") and "sys.exit(3)" in n for n in notes), \
            (method, notes)


KINDS = ["generator_exit", "base", "sys_exit"]
PARALLEL = ["threads", "processes", "joblib"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", PARALLEL)
def test_an_earlier_items_error_wins_over_a_later_items_exception_outside_exception(strategy: str,
                                                                                    kind: str) -> None:
    """Item 6 raising GeneratorExit, ``sys.exit()`` or a user's ``BaseException`` at once, item 2 a ValueError
    after 0.3 s: the builtin map raises item 2's (it never reaches item 6). payoff raised item 6's on every
    pool (fuzz trial): that exception went around the chunk's per-item handling and failed its whole chunk."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(ValueError, match="item 2 failed first"):
        ex.map(tasks.fail_slowly_at_two_exit_at_six, [(x, kind) for x in range(10)], chunksize=5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", PARALLEL)
def test_imap_hands_out_every_result_before_an_items_exception_outside_exception(strategy: str,
                                                                                  kind: str) -> None:
    """The builtin hands out items 0-5, then raises item 6's exception; payoff's pools handed out none of them,
    or items 0-4 (item 5, in item 6's chunk, was lost with it). Its note names item 6, as any item's error."""
    expected = tasks.OUTSIDE_EXCEPTION[kind]
    got: list[int] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(expected) as raised:
        got.extend(ex.imap(tasks.slow_then_exit_at_six, [(x, kind) for x in range(10)], chunksize=5))
    assert got == [0, 1, 2, 3, 4, 5]
    notes = getattr(raised.value, "__notes__", None) or []
    assert any(note.startswith("payoff: raised by item 6 of the map") for note in notes), notes


@pytest.mark.parametrize("api", ["map", "starmap", "imap"])
@pytest.mark.parametrize("strategy", ["serial", *PARALLEL, "auto"])
def test_an_items_error_before_the_inputs_own_error_is_the_one_raised(strategy: str, api: str) -> None:
    """``list(map(fn, gen))`` where ``fn`` fails at item 2 and the input raises at item 5 raises ``fn``'s error:
    the loop never reads item 5. payoff's ``map`` and ``starmap`` read the whole input first (as
    ``concurrent.futures`` does) and raised the input's error before any item ran (fuzz trial)."""
    calls: dict[str, Callable[[ParallelExecutor], object]] = {
        "map": lambda ex: ex.map(tasks.fail_at_two, tasks.stream_breaking_at(10, 5)),
        "starmap": lambda ex: ex.starmap(tasks.fail_at_two, ((x,) for x in tasks.stream_breaking_at(10, 5))),
        "imap": lambda ex: list(ex.imap(tasks.fail_at_two, tasks.stream_breaking_at(10, 5))),
    }
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(ValueError, match="fn failed at item"):
        calls[api](ex)


@pytest.mark.parametrize("strategy", ["serial", *PARALLEL, "auto"])
def test_an_input_that_raises_partway_runs_the_items_before_it_then_raises(strategy: str) -> None:
    """As the builtin: the items read before the input's error run (their side effects happen), then its
    error is raised, under a timeout too (the input is then read under it)."""
    for timeout in (None, 60.0):
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
                pytest.raises(LookupError, match="the input broke at 5"):
            ex.map(tasks.square, tasks.stream_breaking_at(10, 5), timeout=timeout)
        record = ex.last_record
        assert record is not None and record.n_items == 5 and record.items_done == 5, record


@pytest.mark.parametrize("strategy", ["serial", *PARALLEL])
def test_imap_unordered_hands_out_the_failing_chunks_results_before_its_error(strategy: str) -> None:
    """Items 0 and 1 ran before item 2 failed in the same chunk: serial and threads handed them out, process
    pools dropped them with the chunk (fuzz trial). Unordered, other chunks' results may come before or not."""
    got: list[int] = []
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(ValueError, match="fn failed at item"):
        got.extend(ex.imap_unordered(tasks.fail_at_two, range(10), chunksize=5))
    assert {0, 1} <= set(got) and 2 not in got, got


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", ["serial", *PARALLEL])
def test_an_items_exception_outside_exception_is_a_failed_item_in_the_record_and_named(strategy: str,
                                                                                        kind: str) -> None:
    """The record counted an item's GeneratorExit or ``sys.exit()`` as a cancelled call with no item error, and
    a user's BaseException as an error with none (review): each is that item's error, as its note says, on the
    caller as on a pool (the caller's note named only the first two)."""
    expected = tasks.OUTSIDE_EXCEPTION[kind]
    for method in ("map", "imap"):
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
                pytest.raises(expected) as raised:
            list(getattr(ex, method)(tasks.raise_at_three, [(x, kind) for x in range(8)], chunksize=4))
        record = ex.last_record
        assert record is not None and record.outcome == "error", (method, record.outcome, record.summary())
        assert sum(c.n_errors for c in record.chunks) == 1, (method, record.chunks)
        notes = getattr(raised.value, "__notes__", None) or []
        assert any(note.startswith("payoff: raised by item 3 of the map") for note in notes), (method, notes)


@pytest.mark.parametrize("kind", ["base", "sys_exit", "timeout"])
@pytest.mark.parametrize("strategy", PARALLEL)
def test_an_items_own_exception_does_not_stop_the_pool_as_ctrl_c_does(strategy: str, kind: str) -> None:
    """An item's user BaseException (pytest's ``fail``), ``sys.exit()`` or its own TimeoutError, raised while
    other items ran, killed the process pool (a call sharing it lost its chunks: ``pool_stopped``) or left
    thread tasks behind as stuck, as Ctrl-C or the call's ``timeout=`` do (review)."""
    expected = tasks.OUTSIDE_EXCEPTION[kind]
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        assert ex.map(tasks.square, range(8), chunksize=1) == [x * x for x in range(8)]
        before = ex.worker_pids()
        with warnings.catch_warnings():
            warnings.simplefilter("error", StuckThreadsWarning)
            with pytest.raises(expected):
                ex.map(tasks.raise_at_zero_else_nap, [(x, kind) for x in range(6)], chunksize=1)
        assert ex.map(tasks.square, range(8), chunksize=1) == [x * x for x in range(8)]
        record = ex.last_record
        assert record is not None and not record.pool_started, record.summary()
        assert ex.worker_pids() == before


def _input_timing_out(n: int) -> Iterator[int]:
    """A stream whose source times out after ``n`` items (a socket read, a queue's ``get(timeout=...)``)."""
    yield from range(n)
    raise TimeoutError("the source timed out")


@pytest.mark.parametrize("method", ["map", "imap"])
def test_an_inputs_own_timeout_is_the_calls_error_not_its_timeout(method: str) -> None:
    """An input raising its own TimeoutError, with no ``timeout=``: the record said the call "timed out",
    feeding the timeout counters, for an error of the input (review). The error goes on as it came."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex, \
            pytest.raises(TimeoutError, match="the source timed out"):
        list(getattr(ex, method)(tasks.square, _input_timing_out(50)))
    record = ex.last_record
    assert record is not None and record.outcome == "error", (record.outcome, record.summary())
    assert record.items_done == 50


@pytest.mark.parametrize("strategy", ["serial", *PARALLEL])
def test_starmap_over_an_item_that_is_no_argument_tuple_raises_as_itertools_starmap(strategy: str) -> None:
    """A serial starmap said "'int' object is not iterable", as ``itertools.starmap``; the pools said "add()
    argument after * must be an iterable, not int" (fuzz trial): one message whatever the backend."""
    items: list[Any] = [(0, 1), (1, 2), 5, (2, 3)]
    with pytest.raises(TypeError) as builtin:
        list(itertools.starmap(operator.add, items))
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(TypeError) as raised:
        ex.starmap(operator.add, items, chunksize=1)
    assert str(raised.value) == str(builtin.value)


def test_an_items_error_is_not_replaced_by_a_fallback_warning_made_an_error() -> None:
    """Under ``python -W error`` a call that fell back (one item, too few for the pool named) and whose item
    raised ended with the ParallelFallbackWarning, not the item's ValueError the caller's ``except`` names (the
    pip-user trial's fault 2, on the fallback side). The warning rides on the item's error as a note."""
    with ParallelExecutor(ParallelConfig(strategy="processes"), planner=planning.Planner()) as ex, \
            warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="fn failed at item") as raised:
            ex.map(tasks.fail_at_two, [2])
    notes = getattr(raised.value, "__notes__", [])
    assert any("ParallelFallbackWarning" in note and "too_few_items" in note for note in notes), notes


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_a_failed_maps_chunks_stop_in_the_workers_too(strategy: str, tmp_path: Path) -> None:
    """After an item raised, a process pool ran the call's other chunks to their end, for nobody: 100-200 items
    of 400 after ``map()`` had raised (0.5 s of worker CPU the record never showed), and the next call on the
    pool queued behind them and read its own speedup as 0.2 (telemetry trial). Chunks already running stop at
    their next item, as threads' do; the queued ones do not start."""
    items = [(x, str(tmp_path)) for x in range(400)]
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0)) as ex:
        with pytest.raises(ValueError, match="item 5 failed"):
            ex.map(tasks.note_then_raise_at_five, items)
        raised = {p.name for p in tmp_path.iterdir()}
        time.sleep(1.0)  # what was still running, or queued, has had the time to run several items each
        after = {p.name for p in tmp_path.iterdir()} - raised
        assert len(after) <= 4, f"{len(after)} items ran after the map raised (of {len(raised)} before)"
        assert ex.map(tasks.square, range(20)) == [x * x for x in range(20)], "the pool is usable after"
