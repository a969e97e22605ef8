"""The planner's decisions as a table: facts in, plan out, no item run and no clock read (issue 13).

Each row teaches a fresh :class:`~payoff.planning.Planner` what earlier calls
measured about a function, then asks for a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from payoff import ParallelConfig, Reason
from payoff.planning import Call, Facts, Planner
from tests import tasks


@dataclass
class Row:
    name: str
    seconds_per_item: float
    n_items: int
    expect_strategy: str
    expect_reason: Reason
    config: dict[str, Any] = field(default_factory=lambda: {"max_workers": 2})
    cpu_ratio: float = 1.0
    verdicts: dict[str, tuple[float, int]] = field(default_factory=dict)
    warm: frozenset[str] = frozenset()
    releases_gil: bool | None = None
    expect_workers: int | None = None


ROWS = [
    Row("cpu-bound work goes to processes", 1e-3, 1000, "processes", Reason.AUTO_CPU_BOUND, expect_workers=2),
    Row("trivial items stay serial", 5e-8, 1000, "serial", Reason.TINY_WORKLOAD),
    Row("waiting work gets more threads than cores", 5e-3, 400, "threads", Reason.AUTO_WAITING,
        config={}, cpu_ratio=0.05, expect_workers=32),
    Row("the waiting cap is a config field", 5e-3, 400, "threads", Reason.AUTO_WAITING,
        config={"max_waiting_workers": 8}, cpu_ratio=0.05, expect_workers=8),
    Row("an explicit max_workers wins over the wait fraction", 5e-3, 400, "threads", Reason.AUTO_WAITING,
        config={"max_workers": 3}, cpu_ratio=0.05, expect_workers=3),
    Row("a few waiting items get a thread each, no more", 5e-3, 6, "threads", Reason.AUTO_WAITING,
        config={}, cpu_ratio=0.05, expect_workers=6),
    Row("a named joblib runs 1.5 s of work on joblib, cold", 3.75e-3, 400, "joblib", Reason.EXPLICIT_STRATEGY,
        config={"strategy": "joblib", "max_workers": 2}),
    Row("a named dask runs seconds of work on dask", 5e-3, 500, "dask", Reason.EXPLICIT_STRATEGY,
        config={"strategy": "dask", "max_workers": 2}),
    Row("a named backend still skips truly tiny work", 1e-6, 10, "serial", Reason.TINY_WORKLOAD,
        config={"strategy": "processes", "max_workers": 2}),
    Row("a measured loss is believed at a similar size", 1e-3, 200, "serial", Reason.NO_MEASURED_GAIN,
        verdicts={"processes": (0.5, 1000)}),
    Row("a measured loss does not bind a much larger call", 1e-3, 5000, "processes", Reason.AUTO_CPU_BOUND,
        verdicts={"processes": (0.5, 1000)}),
    Row("a measured gain keeps the backend", 1e-3, 200, "processes", Reason.AUTO_CPU_BOUND,
        verdicts={"processes": (1.7, 1000)}),
    Row("work a warm pool would win but a cold start would not", 2e-4, 100, "serial", Reason.POOL_START_COST),
    Row("the same work on a warm pool", 2e-4, 100, "processes", Reason.AUTO_CPU_BOUND,
        warm=frozenset({"processes"})),
    Row("a GIL-releasing hint gets threads", 1e-3, 1000, "threads", Reason.AUTO_RELEASES_GIL, releases_gil=True),
    Row("nothing to do", 1e-3, 0, "serial", Reason.EMPTY_INPUT),
]


def plan(row: Row) -> Any:
    planner = Planner()
    planner.knowledge.teach(tasks.square, Facts(row.seconds_per_item, row.cpu_ratio, 40, "", None,
                                                verdicts=dict(row.verdicts)))
    config = ParallelConfig(**row.config)
    return planner.plan(Call(tasks.square, list(range(row.n_items)), config, config.strategy_name, None, None,
                             row.releases_gil, row.warm, 0))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_decision_table(row: Row) -> None:
    got = plan(row)
    assert got.strategy == row.expect_strategy
    assert (got.fallback or got.decision) is row.expect_reason, got.detail
    if row.expect_workers is not None:
        assert got.workers == row.expect_workers
    assert got.probe.outcome is None, "a taught function is never probed"
    if got.fallback is not None:
        assert "tiny" not in got.detail, "a fallback detail never calls work tiny in words"


def test_guided_plans_shrink_to_a_floor_worth_a_chunk() -> None:
    got = plan(Row("", 2e-4, 1000, "processes", Reason.AUTO_CPU_BOUND))
    assert got.chunk_size == 125  # 1000 / (2 workers x 4)
    assert got.min_chunk == 15  # 3 ms of work (20 x the 0.15 ms per-chunk prior) at 0.2 ms per item


def test_a_verdict_is_re_measured_every_few_calls() -> None:
    planner = Planner()
    planner.knowledge.teach(tasks.square, Facts(1e-3, 1.0, 40, "", None, verdicts={"processes": (0.5, 1000)}))
    config = ParallelConfig(max_workers=2)
    call = Call(tasks.square, list(range(200)), config, "auto", None, None, None, frozenset(), 0)
    strategies = [planner.plan(call).strategy for _ in range(8)]
    assert strategies[:7] == ["serial"] * 7 and strategies[7] == "processes"
