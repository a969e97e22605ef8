"""Functions bound to the thread that made their objects (an sqlite3 connection): auto runs them where a loop
would, and says so, instead of raising what a loop never does."""

from __future__ import annotations

import sqlite3
import warnings

import pytest

from payoff import ParallelExecutor, planning
from payoff.reasons import Reason
from tests import tasks


def _fresh() -> None:
    tasks._CONNECTIONS.clear()


def test_waiting_items_bound_to_the_callers_thread_run_here_once_a_thread_of_payoffs_refuses_them() -> None:
    """Their items wait, so auto plans threads, where each raised ``ProgrammingError`` ("SQLite objects
    created in a thread can only be used in that same thread") on every call, where the loop ran them all."""
    _fresh()
    items = list(range(60))
    assert [tasks.queries_a_connection_of_its_thread(x) for x in items[:2]] == [0, 1]  # made here, as a loop's
    planner = planning.Planner()
    with warnings.catch_warnings(), ParallelExecutor(planner=planner) as ex:
        warnings.simplefilter("ignore")
        assert ex.map(tasks.queries_a_connection_of_its_thread, items) == items
        first = ex.last_record
        assert ex.map(tasks.queries_a_connection_of_its_thread, items) == items
        second = ex.last_record
    assert first is not None and first.fallback_reason is Reason.THREAD_BOUND, first and first.summary()
    assert "ProgrammingError" in first.fallback_detail, first.fallback_detail
    assert second is not None and second.selected_strategy == "serial", second.summary()
    assert second.fallback_reason is Reason.THREAD_BOUND, second.summary()


def test_a_named_threads_backend_raises_the_items_error_and_says_what_it_may_mean() -> None:
    """A named backend runs its items nowhere else; its error says why a loop did not raise it."""
    _fresh()
    assert tasks.queries_a_connection_of_its_thread(0) == 0
    with ParallelExecutor(strategy="threads", max_workers=2) as ex, \
            pytest.raises(sqlite3.ProgrammingError) as raised:
        ex.map(tasks.queries_a_connection_of_its_thread, range(10))
    notes = " ".join(getattr(raised.value, "__notes__", []))
    assert "thread" in notes and "strategy=\"serial\"" in notes, notes


def test_an_items_own_error_that_names_a_thread_is_raised_and_the_function_is_not_kept_here() -> None:
    """Handed back, the item raises again here: its own error, raised as a loop's, and no mark for later calls."""
    planner = planning.Planner()
    with warnings.catch_warnings(), ParallelExecutor(planner=planner) as ex:
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="thread count"):
            ex.map(tasks.naps_then_refuses_a_thread_count, range(40))
    assert planner.knowledge.bound_of(tasks.naps_then_refuses_a_thread_count) is None


@pytest.mark.parametrize("call", ["imap", "imap_unordered"])
def test_an_imap_of_items_bound_to_the_callers_thread_hands_out_every_result(call: str) -> None:
    _fresh()
    assert tasks.queries_a_connection_of_its_thread(0) == 0
    with warnings.catch_warnings(), ParallelExecutor(planner=planning.Planner()) as ex:
        warnings.simplefilter("ignore")
        out = list(getattr(ex, call)(tasks.queries_a_connection_of_its_thread, iter(range(60))))
        record = ex.last_record
    assert sorted(out) == list(range(60)) and (call != "imap" or out == list(range(60)))
    assert record is not None and record.fallback_reason is Reason.THREAD_BOUND, record and record.summary()
