"""An ``imap`` left part-way and freed by the garbage collector, which runs wherever an allocation crosses its
threshold: inside payoff's own bookkeeping too, under a lock that is not reentrant (hunt 74, F1).

A request handler that raises out of its ``for r in ex.imap(...)`` loop and keeps the error keeps the
iterator in a cycle (the error's traceback holds the frame); the collector closes it later. Its close ends the
call (its record, what the planner learns, the pool given back), and taking a lock its thread already held
there hung the program for good: 7 runs of 7, on threads, processes and auto.
"""

from __future__ import annotations

import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
from tests.reliability.test_forks_and_exit import last_json, run_child

COLLECTED_INSIDE_A_LOCK = """
    import faulthandler, gc, json, sys
    from payoff import ParallelConfig, ParallelExecutor, planning
    from tests import tasks

    strategy, held = sys.argv[1:3]
    faulthandler.dump_traceback_later(30, exit=True)  # a hang ends the child with every thread's stack
    planner = planning.Planner()
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0, min_batch_size=1)
    with ParallelExecutor(config=config, planner=planner) as ex:
        ex.map(tasks.square, range(40))  # the pool is up
        it = ex.imap(tasks.square, range(1000), chunksize=10)
        first = next(it)
        cycle = [it]
        cycle.append(cycle)  # as an error kept with its traceback holds the loop's frame
        del it, cycle
        lock = {"knowledge": planner.knowledge._lock, "events": planner._events_lock, "pools": ex._pools._lock}[held]
        gc.disable()
        with lock:  # payoff's own bookkeeping, where the collector happens to run
            freed = gc.collect()
        gc.enable()
        after = ex.map(tasks.square, range(40))
    print(json.dumps({"first": first, "freed": freed > 0, "after": after == [x * x for x in range(40)],
                      "closed_call_recorded": any(r.outcome == "cancelled" for r in ex.records)}))
"""


@pytest.mark.parametrize("held", ["knowledge", "events", "pools"])
@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_an_imap_the_collector_frees_inside_payoffs_own_lock_ends_without_a_hang(strategy: str, held: str) -> None:
    got = last_json(run_child(COLLECTED_INSIDE_A_LOCK, strategy, held))
    assert got == {"first": 0, "freed": True, "after": True, "closed_call_recorded": True}, got


STOPPED_BY_A_SIGNAL = """
    import faulthandler, json, signal, sys, time
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    faulthandler.dump_traceback_later(30, exit=True)
    ex = ParallelExecutor(config=ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0.0))
    ex.map(tasks.square, range(40))
    signal.signal(signal.SIGTERM, lambda *_: ex.shutdown(wait=False))  # a service's graceful stop
    with ex._pools._lock:  # the signal lands inside payoff's own bookkeeping
        signal.raise_signal(signal.SIGTERM)
    try:
        ex.map(tasks.square, range(40))
        refused = False
    except RuntimeError:
        refused = True
    deadline = time.monotonic() + 20
    while ex._pools.current() and time.monotonic() < deadline:  # its pool is let go, off the handler's thread
        time.sleep(0.05)
    print(json.dumps({"refused": refused, "pools_left": len(ex._pools.current())}))
"""


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_a_shutdown_a_signal_handler_makes_inside_payoffs_own_lock_returns(strategy: str) -> None:
    """``signal.signal(SIGTERM, lambda *a: ex.shutdown(wait=False))`` hung the main thread when the signal
    landed while it held the pool registry's lock (2 runs of 2 on processes, hunt 74 F2)."""
    got = last_json(run_child(STOPPED_BY_A_SIGNAL, strategy))
    assert got == {"refused": True, "pools_left": 0}, got


def test_a_worker_forked_while_its_pools_start_held_a_lock_holds_none() -> None:
    """A fork copies the forking thread's count of the locks it holds, and the pool's start forks its workers
    inside the registry's lock: each worker then counted it held for its whole life, and a call or a shutdown
    ended there went to a thread of its own and was not waited for."""
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0.0, start_method="fork")
    with ParallelExecutor(config=config) as ex:
        held = ex.map(tasks.holds_a_payoff_lock, range(8), chunksize=1)
        record = ex.last_record
    assert record is not None and record.selected_strategy == "processes", record
    assert held == [False] * 8
