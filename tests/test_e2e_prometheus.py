"""A real Prometheus scrapes a real demo run; every panel and alert expression is evaluated.

Prometheus (Debian package) runs as a plain background process on 127.0.0.1
with a temporary config and data directory; the test stops it by PID.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from payoff import Reason
from payoff.demo import Row, Sizes, run_round
from payoff.telemetry import metrics_observer, serve_metrics
from tests.prometheus import query, running_prometheus, wait_until

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboards"))
from panels import PANELS  # noqa: E402

SIZES = Sizes(instances=600, features=12, feature_rows=8000)
SCRAPE = "1s"
JOB = "payoff"
DEMO_STRATEGIES = ("serial", "threads", "processes", "joblib")
"""Where the demo round's calls run (``auto`` picks one of them)."""


@dataclass
class Stack:
    api: str
    rows: list[Row]
    started: float


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus")
    server = serve_metrics(0)
    # Series exist only for what ran; declaring the demo's pairs creates them at zero before the first
    # scrape, so rate() also counts each pair's first call (the round runs most pairs once).
    metrics_observer().declare("demo-instance", "demo-feature", strategies=DEMO_STRATEGIES)
    shutil.copy(ROOT / "deploy" / "alerts.yml", work / "alerts.yml")
    config = (f"global:\n  scrape_interval: {SCRAPE}\n  evaluation_interval: {SCRAPE}\n"
              "rule_files: [alerts.yml]\n"
              f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
              f"      - targets: ['127.0.0.1:{server.port}']\n")
    try:
        with running_prometheus(work, config) as api:
            wait_until(lambda: query(api, 'payoff_map_calls_total{workload="demo-instance"}'), "first scrape")
            started = time.time()
            rows = run_round(SIZES, progress=False, on_row=lambda row: None)
            calls = sum(1 for _ in rows)
            wait_until(lambda: float(query(api, 'sum(payoff_map_calls_total{workload=~"demo-.*"})')[0]["value"][1])
                       >= calls, "the last scrape of the round")
            time.sleep(2.5)  # a few more scrapes so every rate() window has samples after the last call
            yield Stack(api, rows, started)
    finally:
        server.stop()


def _concrete(expr: str, window: str = "5m", job: str = JOB, instance: str = ".*") -> str:
    """A panel expression as Grafana sends it: the range window and the template variables filled in."""
    values = {"$__rate_interval": window, "$job": job, "$instance": instance, "$workload": ".*", "$strategy": ".*"}
    for name, value in values.items():
        expr = expr.replace(name, value)
    return expr


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_panel_expression_returns_data(stack: Stack, panel: dict[str, Any]) -> None:
    instance = _instance(stack)
    for expr in panel["exprs"]:
        # Grafana regex-escapes a selected value and PromQL unescapes the string once: 127\\.0\\.0\\.1:port
        result = query(stack.api, _concrete(expr, job=JOB, instance=re.escape(instance).replace("\\", "\\\\")))
        assert result, f"panel {panel['title']!r} is empty for job {JOB}, instance {instance}: {expr}"
        # and the variables really filter: another job selects nothing
        assert not query(stack.api, _concrete(expr, job="not-payoff")), f"{panel['title']!r} ignores $job"


def _instance(stack: Stack) -> str:
    """The scraped process, as the dashboard's $instance variable lists it."""
    found = query(stack.api, f'group by (instance) (payoff_map_calls_total{{job="{JOB}"}})')
    assert len(found) == 1, found
    return str(found[0]["metric"]["instance"])


def _alert_rules() -> list[tuple[str, str]]:
    text = (ROOT / "deploy" / "alerts.yml").read_text()
    rules = []
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name = block.split("\n", 1)[0].strip()
        expr_lines = block.split("expr: |", 1)[1].split("\n")
        body = []
        for line in expr_lines[1:]:
            if line.strip() and not line.startswith(" " * 10):
                break
            body.append(line)
        rules.append((name, "\n".join(body).strip()))
    return rules


@pytest.mark.parametrize(("name", "expr"), _alert_rules(), ids=[n for n, _ in _alert_rules()])
def test_every_alert_expression_evaluates_on_real_series(stack: Stack, name: str, expr: str) -> None:
    for sample in query(stack.api, expr):  # parses and evaluates; firing or not depends on the run
        assert sample["metric"].get("job") == JOB and sample["metric"].get("instance"), (name, sample)
    for metric in set(re.findall(r"\b(payoff_[a-z_]+)", expr)):
        assert query(stack.api, f"count({metric})"), f"{name}: no series for {metric}"
    groupings = re.findall(r"\bby \(([^)]*)\)", expr)
    assert groupings and all(g.startswith("job, instance") for g in groupings), f"{name}: drops job/instance"


def test_the_alert_rules_loaded_into_prometheus(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.api}/api/v1/rules", timeout=30) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert {name for name, _ in _alert_rules()} <= loaded
    assert all(r.get("health") in ("ok", "unknown") for g in groups for r in g["rules"])


def test_speedup_panel_agrees_with_the_records(stack: Stack) -> None:
    panel = next(p for p in PANELS if "serial_estimate" in p["exprs"][0] and "wall" in p["exprs"][0])
    window = f"{int(time.time() - stack.started) + 30}s"
    value = float(query(stack.api, _concrete(panel["exprs"][0], window))[0]["value"][1])
    parallel = [r.record for r in stack.rows if r.record.selected_strategy != "serial"]
    expected = sum(r.serial_estimate_seconds for r in parallel) / sum(r.wall_seconds for r in parallel)
    assert value == pytest.approx(expected, rel=0.10), (panel["title"], value, expected)


def test_the_demo_rounds_fallback_rows_fall_back(stack: Stack) -> None:
    """The round's docstring promises two calls that fall back; the dashboards' fallback panels show them."""
    reasons = {row.case: row.record.fallback_reason for row in stack.rows if row.case.startswith("fallback:")}
    assert reasons.keys() == {"fallback: 3 instances", "fallback: feature-only config"}, reasons
    assert reasons["fallback: feature-only config"] is Reason.GRANULARITY_MISMATCH, reasons
    # too small for a pool: too small for even a warm one, or only for one that must start first (on a machine
    # busy enough that the 3 instances' measured work came to more than a warm pool's per-call cost)
    assert reasons["fallback: 3 instances"] in (Reason.TINY_WORKLOAD, Reason.POOL_START_COST), reasons
