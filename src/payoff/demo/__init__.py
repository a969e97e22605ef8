"""``payoff demo``: one explanation workload under every strategy, and the verdict."""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

from payoff.config import ParallelConfig
from payoff.demo.workload import explain_instance, install, make_problem
from payoff.executor import ParallelExecutor
from payoff.record import MapRecord
from payoff.telemetry.warnings import ParallelFallbackWarning


@dataclass(frozen=True)
class Row:
    case: str
    record: MapRecord
    wall: float


STRATEGIES = ("serial", "threads", "processes", "joblib", "auto")


def run_demo(args: argparse.Namespace) -> int:
    n_instances = 300 if args.quick else 2000
    problem = make_problem(n_instances, n_features=12)
    install(problem.model, problem.background)
    print(f"payoff demo: perturbation explanations of a logistic regression, "
          f"{n_instances} instances x {problem.instances.shape[1]} features")
    while True:
        rows = _one_round(problem)
        _print_table(rows)
        if not args.loop:
            return 0


def _one_round(problem: object) -> list[Row]:
    from payoff.demo.workload import Problem, _state

    assert isinstance(problem, Problem)
    rows: list[Row] = []
    init = {"worker_initializer": install, "worker_init_args": (problem.model, problem.background)}
    instances = list(problem.instances)
    for name in STRATEGIES:
        with ParallelExecutor(ParallelConfig(strategy=name, **init)) as ex:  # type: ignore[arg-type]
            rows.append(_timed(f"instances/{name}", ex, explain_instance, instances, "instance"))
    _state["instances"] = problem.instances
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParallelFallbackWarning)
        with ParallelExecutor(ParallelConfig(strategy="processes", **init)) as ex:  # type: ignore[arg-type]
            rows.append(_timed("tiny: 3 instances", ex, explain_instance, instances[:3], "instance"))
        with ParallelExecutor(ParallelConfig(strategy="processes", granularity="feature",
                                             **init)) as ex:  # type: ignore[arg-type]
            rows.append(_timed("mismatch: feature-only config", ex, explain_instance, instances[:64],
                               "instance"))
    return rows


def _timed(case: str, ex: ParallelExecutor, fn: object, items: list[object], granularity: str) -> Row:
    t0 = time.perf_counter()
    ex.map(fn, items, granularity=granularity, workload="demo")  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    record = ex.last_record
    assert record is not None
    print(f"  {case:<32} {record.summary()}", flush=True)
    return Row(case, record, wall)


def _print_table(rows: list[Row]) -> None:
    serial = next(r.wall for r in rows if r.case == "instances/serial")
    print()
    print(f"{'case':<32} {'ran as':<12} {'wall s':>8} {'vs serial':>10} {'est. speedup':>13} "
          f"{'utilization':>12}  fallback")
    for r in rows:
        rec = r.record
        vs = f"{serial / r.wall:.2f}x" if r.case.startswith("instances/") else "-"
        print(f"{r.case:<32} {rec.selected_strategy + ' x' + str(rec.workers):<12} {r.wall:>8.3f} {vs:>10} "
              f"{rec.speedup:>12.2f}x {rec.utilization:>11.0%}  {rec.fallback_reason or '-'}")
    auto = next(r for r in rows if r.case == "instances/auto")
    best = min((r for r in rows if r.case.startswith("instances/")), key=lambda r: r.wall)
    paid = "paid off" if auto.record.pays_off else "did not pay off: serial was the right call"
    print(f"\nverdict: auto chose {auto.record.selected_strategy} ({auto.record.decision_reason.value}); "
          f"{serial / auto.wall:.2f}x against serial, parallel {paid}. "
          f"Fastest here: {best.case.split('/')[1]} ({serial / best.wall:.2f}x).")
