"""The PromQL behind the payoff overview dashboard, in one importable place.

``PANELS`` is the single source of truth for every panel of
``dashboards/json/payoff-overview.json``: ``build.py`` turns it into Grafana
JSON with grafana-foundation-sdk, and tests import it to parse every
expression with ``promtool`` and to evaluate it against a real Prometheus.

Each entry is a plain dict (see :class:`PanelSpec`) with at least ``title``,
``description``, ``exprs`` (list of PromQL strings) and ``unit``. Expressions
use Grafana's ``$__rate_interval`` and the ``$job`` / ``$instance`` /
``$strategy`` / ``$workload`` template variables (every selector has the first
two), always with ``=~`` matchers, so a test can substitute ``$__rate_interval``
-> ``1m`` and the variables -> ``.*`` and get valid PromQL.

Metric names and labels follow the telemetry contract in DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NotRequired, TypedDict

from payoff.reasons import Reason, decision_reasons, fallback_reasons, recovered_reasons
from payoff.telemetry.metrics import METRICS


def _codes(reasons: Iterable[Reason]) -> str:
    """Reason codes as the dashboard lists them: read from the one enum, so a new code is never missing."""
    return ", ".join(r.value for r in reasons)

Kind = Literal["stat", "timeseries", "heatmap"]

RATE = "[$__rate_interval]"

# Label matchers used throughout. Every selector starts with the ``$job`` and
# ``$instance`` variables, so each panel shows the processes picked at the top
# rather than the sum of everything Prometheus scrapes. ``strategy!="serial"``
# keeps the questions about parallel mode about parallel mode: a serial call has
# speedup 1 by definition and would only dilute the answer.
SEL_TARGET = 'job=~"$job", instance=~"$instance"'
SEL = f'{SEL_TARGET}, strategy=~"$strategy", workload=~"$workload"'
SEL_PAR = f'{SEL_TARGET}, strategy!="serial", strategy=~"$strategy", workload=~"$workload"'
SEL_STRATEGY = f'{SEL_TARGET}, strategy=~"$strategy"'
SEL_WORKLOAD = f'{SEL_TARGET}, workload=~"$workload"'
SEL_STRATEGY_PAR = f'{SEL_TARGET}, strategy!="serial", strategy=~"$strategy"'
VARIABLES = ("job", "instance", "strategy", "workload")
"""Template variables, in the order the dashboard shows them; each narrows the ones after it."""
EXEMPLAR_METRICS = frozenset(d.name for d in METRICS if d.exemplars)
"""Metrics whose observations carry a trace id: only their panels ask Prometheus for exemplars."""
# prometheus_client renders the bucket bound 1 as "1.0"; other exporters as "1".
LE_ONE = 'le=~"1|1.0"'


class PanelSpec(TypedDict):
    """One dashboard panel: what it shows and how to read it."""

    section: str  # row title the panel sits under
    title: str
    description: str  # how a user reads the panel; never empty
    kind: Kind
    unit: str  # Grafana unit id
    exprs: list[str]  # PromQL, one per target (refId A, B, ...)
    legends: list[str]  # legend format, same length as exprs
    width: int  # grid columns (of 24)
    height: int  # grid rows
    exemplars: bool  # ask Prometheus for exemplars (trace links) on the first target; only EXEMPLAR_METRICS
    # Colour steps as (lower bound, colour); the first bound is None (-inf). Default: plain green.
    thresholds: NotRequired[list[tuple[float | None, str]]]
    stack: NotRequired[bool]  # stack series (timeseries only)


def _rate(metric: str, selector: str) -> str:
    return f"rate({metric}{{{selector}}}{RATE})"


def _ratio(num: str, den: str, selector: str, by: str = "") -> str:
    """``sum [by] (rate(num)) / sum [by] (rate(den))`` over the same selector."""
    agg = f"sum by ({by}) " if by else "sum "
    return f"{agg}({_rate(num, selector)}) / {agg}({_rate(den, selector)})"


def _utilization(selector: str, by: str = "") -> str:
    """Busy / (capacity - shared): the worker time the calls had, as ``MapRecord.utilization``.

    Capacity counts workers x wall of each call; on a pool several calls share, part of it was the other
    calls': their chunks, and their share of the idle workers. Without the shared time, two calls keeping
    one pool full would each read about 50% and look like too few chunks.
    """
    agg = f"sum by ({by}) " if by else "sum "
    had = f"({agg}({_rate('payoff_capacity_seconds_total', selector)}) - " \
          f"{agg}({_rate('payoff_shared_seconds_total', selector)}))"
    return f"{agg}({_rate('payoff_busy_seconds_total', selector)}) / {had}"


def _quantiles(metric: str, selector: str) -> list[str]:
    return [
        f"histogram_quantile({q}, sum by (le) ({_rate(metric + '_bucket', selector)}))"
        for q in ("0.5", "0.95", "0.99")
    ]


def _faster_than_serial(by: str = "") -> str:
    """Share of parallel calls whose measured speedup was above 1 (bucket le=1 holds the rest)."""
    agg = f"sum by ({by}) " if by else "sum "
    slow = f"{agg}(rate(payoff_speedup_bucket{{{LE_ONE}, {SEL_PAR}}}{RATE}))"
    total = f"{agg}({_rate('payoff_speedup_count', SEL_PAR)})"
    return f"1 - ({slow} / {total})"


HEADLINE = "Does parallel pay off?"
OVER_TIME = "Speedup, efficiency and utilization over time"
CALLS = "Calls, fallbacks and decisions"
LATENCY = "Waiting and running"
COSTS = "What parallelism costs"
WORKERS = "Workers and tasks"

QUANTILE_LEGENDS = ["p50", "p95", "p99"]

# 1x is the line between "parallel paid off" and "a loop would have been faster".
SPEEDUP_STEPS: list[tuple[float | None, str]] = [(None, "red"), (1.0, "green")]
SHARE_STEPS: list[tuple[float | None, str]] = [(None, "red"), (0.5, "yellow"), (0.9, "green")]
RATIO_STEPS: list[tuple[float | None, str]] = [(None, "red"), (0.5, "yellow"), (0.75, "green")]

PANELS: list[PanelSpec] = [
    # ---- headline numbers -------------------------------------------------
    {
        "section": HEADLINE,
        "title": "Speedup vs serial",
        "description": (
            "Estimated serial time divided by real wall time, summed over all parallel calls "
            "(strategy other than serial) and averaged over the selected time range. "
            "Above 1x parallel mode saves time; below 1x (red) the same work would have finished "
            "sooner in a plain loop. Compare per strategy and workload in the panels below."
        ),
        "kind": "stat",
        "unit": "suffix:x",
        "exprs": [_ratio("payoff_serial_estimate_seconds_total", "payoff_wall_seconds_total", SEL_PAR)],
        "legends": ["speedup"],
        "width": 6,
        "height": 5,
        "exemplars": False,
        "thresholds": SPEEDUP_STEPS,
    },
    {
        "section": HEADLINE,
        "title": "Calls faster than serial",
        "description": (
            "Share of parallel calls whose own measured speedup was above 1, read from the "
            "payoff_speedup histogram (everything at or below the 1x bucket counts as not faster). "
            "A high headline speedup with a low share here means a few big wins hide many small "
            "losses: look at the speedup distribution."
        ),
        "kind": "stat",
        "unit": "percentunit",
        "exprs": [_faster_than_serial()],
        "legends": ["faster than serial"],
        "width": 6,
        "height": 5,
        "exemplars": False,
        "thresholds": SHARE_STEPS,
    },
    {
        "section": HEADLINE,
        "title": "Parallel efficiency",
        "description": (
            "Speedup divided by the number of workers: estimated serial seconds / capacity seconds "
            "(capacity = workers x wall time of each call, as a record's efficiency). 100% would be a "
            "perfect linear speedup; 50% on 4 workers is a 2x speedup. Low efficiency with high "
            "utilization means the workers are busy with overhead (serialization, contention), not "
            "with useful work, or that concurrent calls share one pool: each call's speedup, and so "
            "its efficiency, is then about its share of the workers."
        ),
        "kind": "stat",
        "unit": "percentunit",
        "exprs": [_ratio("payoff_serial_estimate_seconds_total", "payoff_capacity_seconds_total", SEL_PAR)],
        "legends": ["efficiency"],
        "width": 6,
        "height": 5,
        "exemplars": False,
        "thresholds": RATIO_STEPS,
    },
    {
        "section": HEADLINE,
        "title": "Worker utilization",
        "description": (
            "Time workers spent inside items divided by the time they were available: busy seconds / "
            "(capacity seconds - shared seconds), where shared is what was other calls' on a pool "
            "several calls use at once (their chunks, their share of idle workers). Low utilization "
            "means workers sat idle: too few or unbalanced chunks, slow dispatch, or a caller that "
            "cannot feed the pool."
        ),
        "kind": "stat",
        "unit": "percentunit",
        "exprs": [_utilization(SEL_PAR)],
        "legends": ["utilization"],
        "width": 6,
        "height": 5,
        "exemplars": False,
        "thresholds": RATIO_STEPS,
    },
    # ---- over time ----------------------------------------------------------
    {
        "section": OVER_TIME,
        "title": "Speedup by strategy and workload",
        "description": (
            "Estimated serial time / wall time per strategy and workload, from the counters "
            "(so long calls weigh more than short ones). The dashed line marks 1x: a series "
            "below it is a strategy that is slower than a loop for that workload."
        ),
        "kind": "timeseries",
        "unit": "suffix:x",
        "exprs": [
            _ratio(
                "payoff_serial_estimate_seconds_total",
                "payoff_wall_seconds_total",
                SEL_PAR,
                by="strategy, workload",
            )
        ],
        "legends": ["{{strategy}} / {{workload}}"],
        "width": 12,
        "height": 8,
        "exemplars": False,
        "thresholds": SPEEDUP_STEPS,
    },
    {
        "section": OVER_TIME,
        "title": "Speedup distribution per call",
        "description": (
            "How many parallel calls per second landed in each payoff_speedup bucket. Each row "
            "is a bucket upper bound: rows at or below 1 are calls that were not faster than "
            "serial, rows above 1 are wins. Mass sitting at 0.5 or lower means parallel mode "
            "is costing at least twice the serial time for those calls."
        ),
        "kind": "heatmap",
        "unit": "ops",
        "exprs": [f"sum by (le) ({_rate('payoff_speedup_bucket', SEL_PAR)})"],
        "legends": ["{{le}}"],
        "width": 12,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": OVER_TIME,
        "title": "Share of calls faster than serial",
        "description": (
            "Per strategy, the fraction of calls whose speedup was above 1 (from the speedup "
            "histogram). 100% means every call paid off; a falling line means a workload change "
            "made parallel mode stop paying off."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [_faster_than_serial(by="strategy")],
        "legends": ["{{strategy}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": OVER_TIME,
        "title": "Efficiency (speedup / workers)",
        "description": (
            "Estimated serial seconds / capacity seconds per strategy and workload: the speedup "
            "each worker buys. Near 100% is linear scaling; adding workers to a series that is "
            "already low mostly adds overhead. Calls sharing one pool each read about their share "
            "of it here (their speedups are); utilization shows whether the pool was full."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [
            _ratio(
                "payoff_serial_estimate_seconds_total",
                "payoff_capacity_seconds_total",
                SEL_PAR,
                by="strategy, workload",
            )
        ],
        "legends": ["{{strategy}} / {{workload}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": OVER_TIME,
        "title": "Utilization (busy / capacity)",
        "description": (
            "Busy seconds / (capacity seconds - shared seconds) per strategy and workload: on a "
            "shared pool, the other calls' chunks and share of idle workers are theirs. Busy and capacity "
            "advance as chunks finish, so the line stays honest during long maps; the shared time "
            "is added when a call ends. Utilization is normally at or above efficiency; a wide gap "
            "between the two means workers are busy but each item runs slower than it would "
            "serially (GIL, memory bandwidth, oversubscription), or calls share one pool."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [_utilization(SEL_PAR, by="strategy, workload")],
        "legends": ["{{strategy}} / {{workload}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    # ---- calls, fallbacks, decisions ---------------------------------------
    {
        "section": CALLS,
        "title": "Map calls: parallel vs serial",
        "description": (
            "Map calls per second by how they really ran (mode). Serial calls include calls that "
            "asked for parallelism and fell back; the fallback panel next to this one says why. "
            "If serial dominates while you configured parallel, parallel mode is not being used."
        ),
        "kind": "timeseries",
        "unit": "ops",
        "exprs": [f"sum by (mode) ({_rate('payoff_map_calls_total', SEL)})"],
        "legends": ["{{mode}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
        "stack": True,
    },
    {
        "section": CALLS,
        "title": "Fallbacks to serial and recoveries by reason",
        "description": (
            "Calls per second that asked for parallelism but ran serially, by reason code "
            f"({_codes([r for r in fallback_reasons() if not r.recovered])}); and, labelled recovered, calls "
            f"that stayed parallel after rerunning lost chunks in fresh workers ({_codes(recovered_reasons())}: "
            "a dead worker, or a pool another call's stop cost them). Filtered by workload only: neither "
            "carries a strategy label. tiny_workload, too_few_items, pool_start_cost and no_measured_gain are the "
            "library protecting you; init_failure, unpicklable and a recurring map_failure_retry need fixing. "
            "A workload's first call of a reason makes its series, which a rate cannot count: a single "
            "recovery shows in payoff_recoveries_total's value and in the call's trace, not here."
        ),
        "kind": "timeseries",
        "unit": "ops",
        # One query: a recovery shows as "recovered: <reason>", and the panel has data with fallbacks alone.
        "exprs": [f"sum by (reason) ({_rate('payoff_fallbacks_total', SEL_WORKLOAD)}) or label_replace("
                  f"sum by (reason) ({_rate('payoff_recoveries_total', SEL_WORKLOAD)}), "
                  '"reason", "recovered: $1", "reason", "(.*)")'],
        "legends": ["{{reason}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
        "stack": True,
    },
    {
        "section": CALLS,
        "title": "What auto decided and why",
        "description": (
            "Decisions per second made by the planner, by chosen strategy and reason code "
            f"({_codes(decision_reasons())}). Use it to check that auto picks threads with many "
            "workers for work that waits (auto_waiting), threads for work that releases the GIL, "
            "processes/joblib for CPU-bound picklable work and for a function that crashed a worker "
            "process (auto_isolates_crashes). Filtered by strategy only: decisions carry "
            "no workload label."
        ),
        "kind": "timeseries",
        "unit": "ops",
        "exprs": [f"sum by (strategy, reason) ({_rate('payoff_decisions_total', SEL_STRATEGY)})"],
        "legends": ["{{strategy}}: {{reason}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    # ---- latency -------------------------------------------------------------
    {
        "section": LATENCY,
        "title": "Queue wait percentiles",
        "description": (
            "Time from submitting a chunk to a worker starting it (p50, p95, p99). A p95 far above "
            "the task time means chunks queue behind each other: fewer, larger chunks or more "
            "workers help. The exact per-call p50 and p95 are on each call's payoff.map span."
        ),
        "kind": "timeseries",
        "unit": "s",
        "exprs": _quantiles("payoff_queue_wait_seconds", SEL),
        "legends": QUANTILE_LEGENDS,
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": LATENCY,
        "title": "Task time percentiles",
        "description": (
            "Time spent inside one item (p50, p95, p99). Items of well under a millisecond rarely "
            "pay for a trip to another process; a p99 many times the p50 means unbalanced items, "
            "where smaller chunks keep workers evenly loaded."
        ),
        "kind": "timeseries",
        "unit": "s",
        "exprs": _quantiles("payoff_task_duration_seconds", SEL),
        "legends": QUANTILE_LEGENDS,
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": LATENCY,
        "title": "Map call wall time percentiles",
        "description": (
            "Wall time of whole map calls (p50, p95, p99), what the caller actually waited. "
            "Read together with the speedup panels: a call can be fast and still slower than "
            "serial. Dots are exemplars: click one to open that call's trace in Tempo."
        ),
        "kind": "timeseries",
        "unit": "s",
        "exprs": _quantiles("payoff_map_duration_seconds", SEL),
        "legends": QUANTILE_LEGENDS,
        "width": 8,
        "height": 8,
        "exemplars": True,
    },
    # ---- costs ------------------------------------------------------------
    {
        "section": COSTS,
        "title": "Overhead by phase (share of wall time)",
        "description": (
            "Seconds spent per phase (pool start, dispatch, serialization, collection) as a share "
            "of parallel wall time. Pool start should be near zero once the pool is warm; high "
            "serialization means payloads are too big for processes: send less data per item "
            "or use threads. Filtered by strategy only (overhead has no workload label)."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [
            f"sum by (phase) ({_rate('payoff_overhead_seconds_total', SEL_STRATEGY_PAR)})"
            f" / ignoring (phase) group_left sum ({_rate('payoff_wall_seconds_total', SEL_STRATEGY_PAR)})"
        ],
        "legends": ["{{phase}}"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": COSTS,
        "title": "Pool starts vs warm reuses",
        "description": (
            "Pool starts per second (by outcome) against calls served by an already running pool. "
            "Reuses should dominate: steady starts mean a pool is created per call, which costs "
            "tens of milliseconds each for processes. Any failed start causes an init_failure "
            "fallback."
        ),
        "kind": "timeseries",
        "unit": "ops",
        "exprs": [
            f"sum by (strategy, outcome) ({_rate('payoff_pool_starts_total', SEL_STRATEGY)})",
            f"sum by (strategy) ({_rate('payoff_pool_reuses_total', SEL_STRATEGY)})",
        ],
        "legends": ["start {{outcome}} ({{strategy}})", "reuse ({{strategy}})"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": COSTS,
        "title": "Payload bytes across process boundaries",
        "description": (
            "Pickled bytes per second sent to and received from workers. Threads send nothing; "
            "for processes every byte is serialized twice. Megabytes per second here on a "
            "workload with cheap items is why processes lose to a loop."
        ),
        "kind": "timeseries",
        "unit": "Bps",
        "exprs": [f"sum by (strategy, direction) ({_rate('payoff_payload_bytes_total', SEL_STRATEGY)})"],
        "legends": ["{{direction}} ({{strategy}})"],
        "width": 8,
        "height": 8,
        "exemplars": False,
    },
    # ---- workers and tasks ------------------------------------------------
    {
        "section": WORKERS,
        "title": "GIL contention (threads: CPU / busy)",
        "description": (
            "For strategy=threads only: CPU seconds inside items / busy seconds inside items. "
            "Near 100%: items compute without waiting, threads run truly in parallel (native code "
            "that releases the GIL). Near 1/threads: pure-Python items queue for the GIL, use "
            "processes. Near 0: items wait on I/O, where threads are the right choice."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [
            _ratio(
                "payoff_task_cpu_seconds_total",
                "payoff_busy_seconds_total",
                f'strategy="threads", {SEL_WORKLOAD}',
                by="workload",
            )
        ],
        "legends": ["{{workload}}"],
        "width": 6,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": WORKERS,
        "title": "Tasks in flight",
        "description": (
            "Items running right now per strategy (a gauge). It should sit at about the number "
            "of workers during a parallel map; far below that the pool is starved."
        ),
        "kind": "timeseries",
        "unit": "short",
        "exprs": [f"sum by (strategy) (payoff_in_flight_tasks{{{SEL_STRATEGY}}})"],
        "legends": ["{{strategy}}"],
        "width": 6,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": WORKERS,
        "title": "Items processed per second",
        "description": (
            "Throughput in items per second per strategy. Compare strategies on the same "
            "workload: the higher line is the one doing the work faster."
        ),
        "kind": "timeseries",
        "unit": "ops",
        "exprs": [f"sum by (strategy) ({_rate('payoff_tasks_total', SEL)})"],
        "legends": ["{{strategy}}"],
        "width": 6,
        "height": 8,
        "exemplars": False,
    },
    {
        "section": WORKERS,
        "title": "Task error ratio",
        "description": (
            "Share of items whose function raised, per strategy and workload. Errors are the "
            "user's exceptions, re-raised to the caller with the item index; a non-zero line "
            "here with no errors in serial runs points at state the function expects but "
            "workers do not have."
        ),
        "kind": "timeseries",
        "unit": "percentunit",
        "exprs": [_ratio("payoff_task_errors_total", "payoff_tasks_total", SEL, by="strategy, workload")],
        "legends": ["{{strategy}} / {{workload}}"],
        "width": 6,
        "height": 8,
        "exemplars": False,
    },
]

SECTIONS: list[str] = list(dict.fromkeys(p["section"] for p in PANELS))


def all_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, in panel order."""
    return [expr for panel in PANELS for expr in panel["exprs"]]
