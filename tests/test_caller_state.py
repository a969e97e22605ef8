"""Items in a warm pool's worker processes see the caller's state of now, as a loop's items do (hunt 76).

A pool started before the caller changed directory, environment, a context variable, decimal's precision or
numpy's error state kept the old ones: 191-300 of 300 items returned what the old state gave, with no error.
Each test starts from a pool that ran a call first, changes the caller's state, and compares with a loop.
"""

from __future__ import annotations

import decimal
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks

POOLS = [("processes", None), ("processes", "spawn"), ("joblib", None)]


@pytest.fixture(scope="module", params=POOLS, ids=[f"{name}-{start or 'default'}" for name, start in POOLS])
def warm(request: pytest.FixtureRequest) -> Iterator[ParallelExecutor]:
    name, start = request.param
    config = ParallelConfig(strategy=name, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            start_method=start)
    with ParallelExecutor(config) as ex:
        ex.map(tasks.square, range(8))  # the workers start before the caller changes anything
        yield ex


def _seen(ex: ParallelExecutor, name: str) -> list[Any]:
    """What 8 items saw on the pool, after checking they ran there and what a loop's items see."""
    out = ex.map(tasks.in_caller_state, [name] * 8)
    record = ex.last_record
    assert record is not None and record.selected_strategy == ex.config.strategy, record
    assert os.getpid() not in {pid for pid, _ in out}, "the items ran in the caller: nothing to compare"
    loop = tasks.in_caller_state(name)[1]
    return [seen for _, seen in out] + [loop]


def test_a_relative_path_opens_in_the_callers_directory_of_now(warm: ParallelExecutor, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "state.txt").write_text("written after the pool started")
    monkeypatch.chdir(tmp_path)
    assert _seen(warm, "file") == ["written after the pool started"] * 9


def test_an_environment_variable_set_changed_and_removed_reaches_the_items(
        warm: ParallelExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOFF_CALLER_STATE", "first")
    assert _seen(warm, "PAYOFF_CALLER_STATE") == ["first"] * 9
    monkeypatch.setenv("PAYOFF_CALLER_STATE", "second")
    assert _seen(warm, "PAYOFF_CALLER_STATE") == ["second"] * 9
    monkeypatch.delenv("PAYOFF_CALLER_STATE")
    assert _seen(warm, "PAYOFF_CALLER_STATE") == [None] * 9


def test_a_variable_set_back_to_its_first_value_is_set_back_in_the_workers(
        warm: ParallelExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME was set when payoff was imported: once changed, its value of now travels, even the old one again."""
    home = os.environ.get("HOME")
    monkeypatch.setenv("HOME", "/elsewhere")
    assert _seen(warm, "HOME") == ["/elsewhere"] * 9
    monkeypatch.undo()
    assert _seen(warm, "HOME") == [home] * 9


def test_the_thread_limits_payoff_sets_in_workers_stay_theirs(warm: ParallelExecutor,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = _seen(warm, "OMP_NUM_THREADS")[:-1]
    monkeypatch.setenv("OMP_NUM_THREADS", "17")
    assert _seen(warm, "OMP_NUM_THREADS")[:-1] == before and "17" not in before


def test_a_context_variable_set_and_reset_reaches_the_items(warm: ParallelExecutor) -> None:
    token = tasks.CALLER_VAR.set("the caller's value")
    try:
        assert _seen(warm, "var") == ["the caller's value"] * 9
    finally:
        tasks.CALLER_VAR.reset(token)
    assert _seen(warm, "var") == ["default"] * 9


@pytest.mark.parametrize(("value", "kind"), [(threading.Lock(), "lock"), (b"x" * (2 << 20), "bytes")],
                         ids=["pickle refuses it", "over 1 MiB"])
def test_a_value_that_cannot_travel_leaves_the_workers_default_and_the_rest_travels(
        warm: ParallelExecutor, monkeypatch: pytest.MonkeyPatch, value: object, kind: str) -> None:
    monkeypatch.setenv("PAYOFF_CALLER_STATE", "still sent")
    token = tasks.CALLER_VAR.set(value)
    try:
        seen = _seen(warm, "var")
        assert seen[:-1] == ["default"] * 8 and seen[-1] == kind, seen
        assert _seen(warm, "PAYOFF_CALLER_STATE") == ["still sent"] * 9
    finally:
        tasks.CALLER_VAR.reset(token)


def test_decimal_precision_of_the_caller_is_the_items(warm: ParallelExecutor) -> None:
    with decimal.localcontext() as context:
        context.prec = 50
        seen = _seen(warm, "decimal")
    assert len(seen[0]) == 52 and seen == [seen[0]] * 9, seen
    seen = _seen(warm, "decimal")
    assert len(seen[0]) == 30 and seen == [seen[0]] * 9, seen


def test_numpy_error_state_of_the_caller_is_the_items(warm: ParallelExecutor) -> None:
    with np.errstate(divide="raise"):
        assert _seen(warm, "numpy") == ["raised"] * 9
    assert _seen(warm, "numpy") == ["no error"] * 9


def test_a_submitted_call_runs_in_the_callers_state(warm: ParallelExecutor, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "state.txt").write_text("for the submitted call")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAYOFF_CALLER_STATE", "submitted")
    token = tasks.CALLER_VAR.set("submitted")
    try:
        calls = {name: warm.submit(tasks.in_caller_state, name) for name in ("file", "PAYOFF_CALLER_STATE", "var")}
        seen = {name: future.result(timeout=60) for name, future in calls.items()}
    finally:
        tasks.CALLER_VAR.reset(token)
    assert {pid for pid, _ in seen.values()} != {os.getpid()}
    assert {name: value for name, (_, value) in seen.items()} == {
        "file": "for the submitted call", "PAYOFF_CALLER_STATE": "submitted", "var": "submitted"}


def test_a_caller_whose_directory_was_removed_still_maps(warm: ParallelExecutor, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop runs where its directory is gone (``os.getcwd()`` raises there); the map raised that error."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert warm.map(tasks.square, range(8)) == [x * x for x in range(8)]
    record = warm.last_record
    assert record is not None and record.selected_strategy == warm.config.strategy


def test_the_directory_and_variables_a_worker_initializer_chose_stay_the_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An initializer that gives each worker a directory and pins a variable (a GPU per worker): the caller's
    later ones overrode them on every chunk (review 83)."""
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            worker_initializer=tasks.pin_worker_state, worker_init_args=(str(pinned),))
    with ParallelExecutor(config) as ex:
        ex.map(tasks.square, range(4))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("PAYOFF_PINNED", "the caller's")
        seen = ex.map(tasks.where_and_pinned, range(8))
    assert {where for where, _ in seen} == {str(pinned)}, seen
    assert all(value is not None and value.startswith("worker ") for _, value in seen), seen


def test_threads_mapping_at_once_each_send_their_own_context(warm: ParallelExecutor) -> None:
    """The cache of the last context sent was updated piece by piece: two request threads' items saw the other
    thread's value, 0-4 of 320 (review 83)."""
    wrong: dict[str, int] = {}
    big = list(range(20_000))  # a value slow enough to pickle for the threads to meet

    def requests(name: str) -> None:
        tasks.CALLER_VAR.set((name, big))
        wrong[name] = sum(seen != name for _ in range(30) for seen in warm.map(tasks.caller_var_head, range(8)))

    threads = [threading.Thread(target=requests, args=(name,)) for name in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert wrong == {"A": 0, "B": 0}, wrong


def test_a_module_holding_a_lazy_object_is_looked_at_without_setting_it_up(warm: ParallelExecutor) -> None:
    """``isinstance`` on each module global asked a Django-style lazy settings object its class, which set it
    up, and that raised out of the map (review 83)."""
    import contextvars

    from tests import lazy_global  # noqa: F401  the module the look meets

    held = type("Holder", (), {})()
    held.var = contextvars.ContextVar("held by an object")  # no module holds it: every module is looked at
    token = held.var.set("x")
    try:
        assert warm.map(tasks.square, range(8)) == [x * x for x in range(8)]
    finally:
        held.var.reset(token)
