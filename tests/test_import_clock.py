"""Imports a function makes in its body are the module's one-time cost, not an item's (hunt 59, F1)."""

from __future__ import annotations

import builtins
import sys
import threading
import uuid
from pathlib import Path

import pytest

from payoff import ParallelConfig, Reason, planning
from payoff._import_clock import CallerImports
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


def test_a_clock_times_this_threads_fresh_imports_only_and_puts_the_import_function_back(folder: Path) -> None:
    mine, theirs = _slow_module(folder, 0.05), _slow_module(folder, 0.05)
    real = builtins.__import__
    other = threading.Thread(target=__import__, args=(theirs,))
    with CallerImports() as clock:
        other.start()
        other.join()
        __import__(mine)
        fresh = clock.ns
        __import__(mine)  # found in sys.modules: no import
        import json  # noqa: F401  # imported long before
    assert builtins.__import__ is real
    assert theirs in sys.modules and clock.ns == fresh >= 0.05e9 * 0.9, (clock.ns, fresh)
    assert clock.cpu_ns >= 0.05e9 * 0.9, clock.cpu_ns


def test_clocks_of_two_threads_overlapping_each_count_their_own_and_put_the_import_function_back(
        folder: Path) -> None:
    names = [_slow_module(folder, 0.02), _slow_module(folder, 0.02)]
    real, ready, done = builtins.__import__, threading.Barrier(2), threading.Event()
    counts: list[int] = []

    def first() -> None:
        with CallerImports() as clock:
            ready.wait()
            __import__(names[0])
            done.wait(10)  # ends after the second clock ended
        counts.append(clock.ns)

    thread = threading.Thread(target=first)
    thread.start()
    with CallerImports() as mine:
        ready.wait()
        __import__(names[1])
    done.set()
    thread.join()
    assert builtins.__import__ is real
    assert counts[0] >= 0.02e9 * 0.9 and mine.ns >= 0.02e9 * 0.9, (counts, mine.ns)


def _call(name: str, warm: frozenset[str], method: str = "fork") -> planning.Call:
    return planning.Call(tasks.import_then_spin, [(name, 6_000)] * 400,
                         ParallelConfig(max_workers=2, start_method=method), "auto", None, None, None, warm, 0)


def test_a_probe_takes_the_imports_its_items_made_off_their_cost(folder: Path) -> None:
    """The first item's import (0.3 s) stood for the cost of an item of well under a millisecond."""
    plan = planning.Planner().plan(_call(_slow_module(folder), frozenset()))
    probe = plan.probe
    assert probe.import_seconds >= IMPORT_SECONDS * 0.9, probe
    assert probe.seconds_per_item is not None and probe.seconds_per_item * 30 < probe.import_seconds, probe
    assert probe.cpu_ratio > 0.5, "an import is no wait of the items'"


def test_warm_workers_that_would_import_again_keep_the_call_here_until_waiting_cost_as_much(folder: Path) -> None:
    """Warm worker processes started before the import each import it again (a first call 1.7x the loop's
    time: hunt 59, F1); a process pool forked after it has it. Kept here, calls forgo what the pool would save
    until that is as much as the imports: then the pool runs it, and its workers have them."""
    planner = planning.Planner()
    name = _slow_module(folder)
    plan = planner.plan(_call(name, frozenset({"processes"})))
    assert plan.strategy == "serial" and plan.fallback is Reason.POOL_START_COST, (plan.strategy, plan.detail)
    assert "importing in each worker the modules its first items imported here" in plan.detail, plan.detail
    assert planner.plan(_call(name, frozenset())).strategy == "processes", "a pool forked now has the modules"
    assert planner.plan(_call(name, frozenset(), "spawn")).strategy == "serial", "a spawned one lacks them"
    planner.knowledge.ran_on(tasks.import_then_spin, "processes")
    assert planner.plan(_call(name, frozenset({"processes"}))).strategy == "processes", "its workers have them now"


def test_a_child_forked_while_another_thread_probes_keeps_no_wrapper_on_its_imports() -> None:
    """A worker process forked while a thread of its parent probed would time every import of its life."""
    import os

    real, entered, leave = builtins.__import__, threading.Event(), threading.Event()

    def probing() -> None:
        with CallerImports():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=probing)
    thread.start()
    entered.wait(10)
    assert builtins.__import__ is not real
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once
        os.write(write, b"real" if builtins.__import__ is real else b"wrapped")
        os._exit(0)
    os.close(write)
    said = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    leave.set()
    thread.join()
    assert said == b"real" and builtins.__import__ is real, said
