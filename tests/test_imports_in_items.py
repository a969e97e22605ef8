"""Imports a function makes in its body are the module's one-time cost, not an item's (hunt 59, F1)."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path

import pytest

from payoff import ParallelConfig, ParallelExecutor, Reason, planning
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


def _call(name: str, warm: frozenset[str], method: str = "fork", strategy: str = "auto",
          pids: frozenset[int] | None = None) -> planning.Call:
    return planning.Call(tasks.import_then_spin, [(name, 6_000)] * 400,
                         ParallelConfig(max_workers=2, start_method=method), strategy, None, None, None, warm, 0,
                         warm_processes=dict.fromkeys(warm, pids) if pids else {})


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


def test_workers_other_than_those_that_ran_the_function_import_again(folder: Path) -> None:
    """Workers that ran the function have its modules; a new executor's spawned pool, a pool restarted, or
    loky's workers replacing its retired idle ones do not: before, once any pool of the strategy had run it,
    every later one was priced without the imports (review 60)."""
    planner = planning.Planner()
    name = _slow_module(folder)
    warm = frozenset({"processes"})
    planner.plan(_call(name, frozenset(), "spawn"))
    planner.knowledge.ran_on(tasks.import_then_spin, "processes", {101, 102})
    assert planner.plan(_call(name, warm, "spawn", pids=frozenset({101, 102}))).strategy == "processes"
    replaced = planner.plan(_call(name, warm, "spawn", pids=frozenset({101, 103})))
    assert replaced.strategy == "serial" and replaced.fallback is Reason.POOL_START_COST, replaced.detail
    assert replaced.detail.endswith("ms the imports cost"), replaced.detail
    cold = planner.plan(_call(name, frozenset(), "spawn"))
    assert cold.strategy == "serial" and "importing in each worker" in cold.detail, cold.detail
    many = frozenset(range(1000, 1100))  # a pool of 100 workers: 64 kept charged it the imports for good
    planner.knowledge.ran_on(tasks.import_then_spin, "processes", many)
    assert planner.plan(_call(name, warm, "spawn", pids=many)).strategy == "processes"


def test_a_named_joblib_pool_is_priced_with_the_imports_its_new_workers_make(folder: Path) -> None:
    """A named backend runs there anyway; its estimate (the record's speedup) holds the imports its workers
    make: loky's workers are new in each executor and after 300 s idle."""
    planner = planning.Planner()
    name = _slow_module(folder)
    planner.plan(_call(name, frozenset(), "spawn"))  # a named backend's first call runs nothing here
    planner.knowledge.ran_on(tasks.import_then_spin, "joblib", {101, 102})
    probe = planner.plan(_call(name, frozenset({"joblib"}), "spawn", "joblib", frozenset({101, 102}))).probe
    assert probe.import_seconds > 0 and probe.imported_in == {101, 102}, probe
    for warm, pids, due in ((frozenset({"joblib"}), frozenset({101, 102}), False),
                            (frozenset({"joblib"}), frozenset({101, 104}), True), (frozenset(), None, True)):
        call = _call(name, warm, "spawn", "joblib", pids)
        assert planning._imports_again(call, "joblib", probe) == (probe.import_seconds if due else 0.0), pids


def test_a_pool_that_ran_the_function_is_known_by_its_workers(folder: Path) -> None:
    """The executor tells the planner its warm pools' worker processes, and what it learns of a call names
    the workers that ran it: the real pool's, not a strategy's name."""

    name = _slow_module(folder, 0.05)
    with ParallelExecutor(ParallelConfig(max_workers=2, start_method="fork")) as ex:
        ex.map(tasks.import_then_spin, [(name, 20_000)] * 200)  # its probe imports; a pool forked then has it
        record = ex.last_record
        assert record is not None and record.selected_strategy == "processes", record
        ran = {int(c.worker.partition(":")[0]) for c in record.chunks if c.where == "pool"}
        facts = ex._planner.knowledge.get(tasks.import_then_spin)
        pids = ex._pools.warm_processes().get("processes", frozenset())
    assert facts is not None and facts.import_seconds > 0, facts
    assert ran and ran <= set(facts.imported_in) <= pids, (ran, facts.imported_in, pids)


def test_a_probe_beside_other_calls_holding_the_gil_prices_its_items_without_the_imports(folder: Path) -> None:
    """Beside other payoff calls that held the GIL, a probe whose share read low is priced by its items' CPU
    time: that held the import's too, an item of ~5 ms read as ~30 (review 60)."""
    import sys
    import threading
    import time

    shared = ParallelExecutor(ParallelConfig(strategy="serial"))  # plans with the process's planner, as below
    stop, interval = threading.Event(), sys.getswitchinterval()

    def other_calls() -> None:
        while not stop.is_set():
            shared.map(tasks.spin, range(20))

    hogs = [threading.Thread(target=other_calls, daemon=True) for _ in range(7)]
    sys.setswitchinterval(1e-5)  # so that even a short probe meets the others
    try:
        for thread in hogs:
            thread.start()
        time.sleep(0.05)
        got = planning.PLANNER.plan(_call(_slow_module(folder), frozenset()))
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        for thread in hogs:
            thread.join()
        shared.shutdown()
    probe = got.probe
    assert probe.import_seconds > 0 and probe.outcome is not None and probe.outcome.n_done >= 2, probe
    later = [ns / k for ns, k in zip(probe.outcome.durations_ns[1:], probe.outcome.block_sizes[1:], strict=True) if k]
    assert probe.seconds_per_item is not None and probe.seconds_per_item * 1e9 <= 3 * statistics.median(later), \
        (probe.seconds_per_item, later, probe.import_seconds)
