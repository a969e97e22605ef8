"""Imports a function makes in its body are the module's one-time cost, not an item's (hunt 59, F1)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from payoff import ParallelConfig, Reason, planning
from tests import tasks

IMPORT_SECONDS = 0.3
"""CPU a fresh module's body spins for: a heavy library's import (sklearn's is about 1 s)."""


def _slow_module(folder: Path, seconds: float = IMPORT_SECONDS) -> str:
    name = f"payoff_test_slow_import_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(f"import time\nbegan = time.process_time()\n"
                                       f"while time.process_time() - began < {seconds}:\n    pass\n")
    return name


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _call(name: str, warm: frozenset[str], method: str = "fork") -> planning.Call:
    return planning.Call(tasks.import_then_spin, [(name, 6_000)] * 400,
                         ParallelConfig(max_workers=2, start_method=method), "auto", None, None, None, warm, 0)


def test_a_probe_takes_the_imports_its_items_made_off_their_cost(folder: Path) -> None:
    """The first item's import (0.3 s) stood for the cost of an item of well under a millisecond: the probe's
    budget now starts after it, and what it took over the items after it is the import's."""
    plan = planning.Planner().plan(_call(_slow_module(folder), frozenset()))
    probe = plan.probe
    assert probe.import_seconds >= IMPORT_SECONDS * 0.9, probe
    assert probe.seconds_per_item is not None and probe.seconds_per_item * 30 < probe.import_seconds, probe
    assert probe.cpu_ratio > 0.5, "an import is no wait of the items'"
    assert probe.outcome is not None and probe.outcome.imports_ns == int(probe.import_seconds * 1e9)


def test_a_lookup_of_a_loaded_module_in_an_items_body_costs_it_nothing_more() -> None:
    """Timing each ``import`` statement (a wrapper of ``builtins.__import__``) made an item that looks up two
    loaded modules read 5.6x dearer (review); nothing wraps the import now, and no import is read."""
    import builtins

    real = builtins.__import__
    plan = planning.Planner().plan(planning.Call(tasks.looks_up_modules, list(range(2000)),
                                                 ParallelConfig(max_workers=2), "auto", None, None, None,
                                                 frozenset(), 0))
    assert builtins.__import__ is real and plan.probe.import_seconds == 0.0, plan.probe


def test_warm_workers_that_would_import_again_keep_the_call_here_until_waiting_cost_as_much(folder: Path) -> None:
    """Warm worker processes started before the import each import it again (a first call 1.7x the loop's
    time: hunt 59, F1); a process pool forked after it has it. Kept here, calls forgo what the pool would save
    until that is as much as the imports: then the pool runs it, and its workers have them."""
    planner = planning.Planner()
    name = _slow_module(folder)
    plan = planner.plan(_call(name, frozenset({"processes"})))
    assert plan.strategy == "serial" and plan.fallback is Reason.POOL_START_COST, (plan.strategy, plan.detail)
    assert "importing in each worker the modules its first items imported here" in plan.detail, plan.detail
    assert plan.detail.endswith("ms the imports cost"), "a warm pool costs no start"
    assert planner.plan(_call(name, frozenset())).strategy == "processes", "a pool forked now has the modules"
    assert planner.plan(_call(name, frozenset(), "spawn")).strategy == "serial", "a spawned one lacks them"
    planner.knowledge.ran_on(tasks.import_then_spin, "processes")
    assert planner.plan(_call(name, frozenset({"processes"}))).strategy == "processes", "its workers have them now"
