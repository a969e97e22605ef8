"""Offline checks of the Grafana dashboards built as code in dashboards/.

The generated JSON must be what dashboards/build.py produces, must survive a
decode/encode round trip through grafana-foundation-sdk's own models, must lay
out cleanly, must read its data through the `$datasource` variable, and every
PromQL expression must parse (checked with the real `promtool`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
OVERVIEW = DASHBOARDS / "json" / "payoff-overview.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The Prometheus telemetry contract (DESIGN.md): every metric a dashboard may query.
CONTRACT_METRICS = {
    "payoff_map_calls_total",
    "payoff_fallbacks_total",
    "payoff_recoveries_total",
    "payoff_tasks_total",
    "payoff_task_errors_total",
    "payoff_wall_seconds_total",
    "payoff_busy_seconds_total",
    "payoff_capacity_seconds_total",
    "payoff_shared_seconds_total",
    "payoff_serial_estimate_seconds_total",
    "payoff_task_cpu_seconds_total",
    "payoff_overhead_seconds_total",
    "payoff_payload_bytes_total",
    "payoff_pool_starts_total",
    "payoff_pool_reuses_total",
    "payoff_decisions_total",
    "payoff_in_flight_tasks",
}
CONTRACT_HISTOGRAMS = {
    "payoff_map_duration_seconds",
    "payoff_task_duration_seconds",
    "payoff_queue_wait_seconds",
    "payoff_speedup",
}


VARIABLES = ("job", "instance", "strategy", "workload")
SCHEMA_VERSION = 41  # what Grafana 12 writes; the SDK pinned in dashboards/build.py builds it


def substitute(expr: str) -> str:
    """Make a dashboard expression plain PromQL, the way Grafana would with 'All' selected."""
    expr = expr.replace("$__rate_interval", "1m")
    for name in VARIABLES:
        expr = expr.replace(f"${name}", ".*")
    return expr


@pytest.fixture(scope="module")
def panels_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("payoff_dashboard_panels", DASHBOARDS / "panels.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/TypedDict machinery looks the module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    return data


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including rows and panels nested inside collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(board) if p.get("type") != "row"]


def all_exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in data_panels(board) for t in p.get("targets", [])]


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_committed_json_matches_the_code(hash_seed: str) -> None:
    """`python dashboards/build.py --check` passes: regenerating changes nothing, whatever the hash seed."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "build.py"), "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        "dashboards/json is stale; run `python dashboards/build.py`\n" + result.stdout + result.stderr
    )


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    """--check really compares: a copy of build.py next to a tampered JSON exits 1."""
    work = tmp_path / "dashboards"
    (work / "json").mkdir(parents=True)
    shutil.copy(DASHBOARDS / "build.py", work / "build.py")
    shutil.copy(DASHBOARDS / "panels.py", work / "panels.py")
    text = OVERVIEW.read_text(encoding="utf-8")
    (work / "json" / OVERVIEW.name).write_text(text.replace("Speedup vs serial", "Speedup"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(work / "build.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "out of date" in result.stderr


def test_json_is_canonical(dashboard: dict[str, Any]) -> None:
    """Sorted keys, 2-space indent, trailing newline: diffs stay reviewable."""
    text = OVERVIEW.read_text(encoding="utf-8")
    assert text == json.dumps(dashboard, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_json_round_trips_through_the_sdk(dashboard: dict[str, Any]) -> None:
    """Decode with the SDK's typed models (Dashboard.from_json) and encode again: nothing is lost.

    The SDK's runtime registries must be populated first, otherwise panel options
    and Prometheus targets decode as untyped dicts and the round trip proves less.
    """
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import prometheus
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

    register_default_plugins()
    model = Dashboard.from_json(dashboard)
    decoded_panels = [p for p in model.panels or [] if isinstance(p, Panel)]
    assert decoded_panels, "no panels decoded"
    for panel in decoded_panels:
        assert not isinstance(panel.options, dict), f"{panel.title}: options decoded as a plain dict"
        for target in panel.targets or []:
            assert isinstance(target, prometheus.Dataquery), f"{panel.title}: target not a Prometheus query"
    again = json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True))
    assert again == dashboard


def test_dashboard_matches_panels_module(dashboard: dict[str, Any], panels_module: ModuleType) -> None:
    """panels.PANELS is the single source: same titles, descriptions, expressions, units, in order."""
    specs = panels_module.PANELS
    built = data_panels(dashboard)
    assert [p["title"] for p in built] == [s["title"] for s in specs]
    for panel, spec in zip(built, specs, strict=True):
        assert panel["description"] == spec["description"]
        assert [t["expr"] for t in panel["targets"]] == spec["exprs"]
        assert panel["fieldConfig"]["defaults"]["unit"] == spec["unit"]
    rows = [p["title"] for p in all_panels(dashboard) if p.get("type") == "row"]
    assert rows == panels_module.SECTIONS
    assert panels_module.all_exprs() == all_exprs(dashboard)


# ---------------------------------------------------------------- structure


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in all_panels(dashboard)]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"


def test_grid_has_no_overlaps(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert min(w, h) > 0, f"{panel['title']}: empty size {grid}"
        assert min(x, y) >= 0, f"{panel['title']}: negative position {grid}"
        assert x + w <= 24, f"{panel['title']}: wider than the 24-column grid {grid}"
        boxes.append((panel["title"], x, y, w, h))
    for i, (name_a, xa, ya, wa, ha) in enumerate(boxes):
        for name_b, xb, yb, wb, hb in boxes[i + 1 :]:
            overlap = xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha
            assert not overlap, f"panels overlap: {name_a!r} and {name_b!r}"


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        assert panel.get("datasource") == DATASOURCE, (
            f"{panel['title']}: datasource {panel.get('datasource')}"
        )
    for panel in data_panels(dashboard):
        assert panel.get("targets"), f"{panel['title']}: no targets"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, f"{panel['title']}/{target['refId']}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in VARIABLES:
        assert variables[name]["datasource"] == DATASOURCE


def test_every_panel_has_a_description(dashboard: dict[str, Any]) -> None:
    for panel in data_panels(dashboard):
        description = panel.get("description", "")
        assert isinstance(description, str)
        assert len(description.strip()) >= 40, (
            f"{panel['title']}: a description must tell the reader how to read the panel"
        )


def test_template_variables(dashboard: dict[str, Any]) -> None:
    listed = dashboard["templating"]["list"]
    assert [v["name"] for v in listed] == ["datasource", *VARIABLES]
    variables = {v["name"]: v for v in listed}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for index, name in enumerate(VARIABLES):
        var = variables[name]
        assert var["type"] == "query"
        assert var["multi"] is True
        assert var["includeAll"] is True
        assert var["allValue"] == ".*"
        assert var["datasource"] == DATASOURCE
        # each variable lists its values among the series the variables before it select
        narrowed = ", ".join(f'{earlier}=~"${earlier}"' for earlier in VARIABLES[:index])
        metric = f"payoff_map_calls_total{{{narrowed}}}" if narrowed else "payoff_map_calls_total"
        assert var["query"] == f"label_values({metric}, {name})"


def test_every_selector_filters_on_job_and_instance(dashboard: dict[str, Any]) -> None:
    """No panel sums every scraped process: each metric selector carries the $job and $instance matchers."""
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            selectors = re.findall(r"\bpayoff_[a-z_]+(\{[^}]*\})?", target["expr"])
            assert selectors, f"{panel['title']}: no payoff metric in {target['expr']}"
            for selector in selectors:
                assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, (
                    f"{panel['title']}: a selector without $job/$instance: {target['expr']}"
                )


def test_exemplars_only_where_the_metric_has_them(dashboard: dict[str, Any]) -> None:
    """Exemplars are asked for exactly on the panels that read a metric carrying trace ids."""
    from payoff.telemetry.metrics import METRICS

    with_exemplars = {d.name for d in METRICS if d.exemplars}
    assert with_exemplars == {"payoff_map_duration_seconds"}
    asked = set()
    for panel in data_panels(dashboard):
        first = panel["targets"][0]
        reads = {m.removesuffix("_bucket") for m in re.findall(r"\bpayoff_[a-z_]+", first["expr"])}
        if first.get("exemplar"):
            asked.add(panel["title"])
            assert reads & with_exemplars, f"{panel['title']}: exemplars on a metric without them"
        else:
            assert not reads & with_exemplars, f"{panel['title']}: its metric has exemplars, switched off"
        for target in panel["targets"][1:]:
            assert not target.get("exemplar"), f"{panel['title']}/{target['refId']}: exemplars twice"
    assert asked == {"Map call wall time percentiles"}


def test_current_dashboard_schema(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert "style" not in dashboard, "a field of old schemas"
    import grafana_foundation_sdk.models.dashboard as models

    assert models.Dashboard().schema_version == SCHEMA_VERSION, (
        "the installed grafana-foundation-sdk builds an old schema: install the version dashboards/build.py pins"
    )


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "payoff-overview"
    assert dashboard["title"]
    assert "id" not in dashboard, "a provisioned dashboard must not carry an instance-specific id"


# ---------------------------------------------------------------- PromQL


def test_expressions_only_use_contract_metrics(dashboard: dict[str, Any]) -> None:
    allowed = set(CONTRACT_METRICS)
    for name in CONTRACT_HISTOGRAMS:
        allowed |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    for expr in all_exprs(dashboard):
        for metric in re.findall(r"\bpayoff_[a-z_]+", expr):
            assert metric in allowed, f"{metric} is not in the telemetry contract: {expr}"


def test_expressions_use_grafana_conventions(dashboard: dict[str, Any]) -> None:
    for expr in all_exprs(dashboard):
        # Variables are multi-value: only a regex matcher accepts "a|b" and ".*".
        for match in re.finditer(r"\$(job|instance|workload|strategy)\b", expr):
            assert expr[: match.start()].endswith('=~"'), f"${match.group(1)} without =~ in: {expr}"
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"fixed range [{window}] in: {expr}"
        assert "$__range" not in expr
        assert "$__interval" not in expr.replace("$__rate_interval", "")


def test_every_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each expression becomes a recording rule; `promtool check rules` parses them all."""
    promtool = require_tool("promtool")
    exprs = all_exprs(dashboard)
    assert len(exprs) >= 20
    lines = ["groups:", "  - name: dashboard_expressions", "    rules:"]
    for index, expr in enumerate(exprs):
        lines.append(f"      - record: payoff:dashboard_expr_{index}")
        lines.append(f"        expr: {json.dumps(substitute(expr))}")  # JSON strings are YAML strings
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """Control for the check above: promtool really parses PromQL in `check rules`."""
    promtool = require_tool("promtool")
    rules = tmp_path / "broken.yml"
    rules.write_text(
        "groups:\n  - name: broken\n    rules:\n"
        '      - record: payoff:broken\n        expr: "sum(rate(x[1m])"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0


def test_key_expressions_compute_what_they_claim(tmp_path: Path, panels_module: ModuleType) -> None:
    """Evaluate the ratio panels on synthetic series with `promtool test rules` (promql_expr_test).

    Bucket bounds are written as prometheus_client renders them ("1.0"), so the
    "faster than serial" share really reads the 1x bucket.
    """
    promtool = require_tool("promtool")
    by_title = {p["title"]: p for p in panels_module.PANELS}

    def expr(title: str) -> str:
        return substitute(by_title[title]["exprs"][0]).replace("[1m]", "[5m]")

    proc = 'strategy="processes", workload="w"'
    parallel_series = {
        f'payoff_speedup_bucket{{{proc}, le="0.5"}}': "0+1x20",
        f'payoff_speedup_bucket{{{proc}, le="1.0"}}': "0+3x20",
        f'payoff_speedup_bucket{{{proc}, le="+Inf"}}': "0+4x20",
        f"payoff_speedup_count{{{proc}}}": "0+4x20",
        f"payoff_serial_estimate_seconds_total{{{proc}}}": "0+60x20",
        f"payoff_wall_seconds_total{{{proc}}}": "0+120x20",
        f"payoff_capacity_seconds_total{{{proc}}}": "0+240x20",
        # other calls' chunks held 60 of the 240: occupied, so utilization is 135 / 180 (not 135 / 240);
        # efficiency, as a record's (speedup / workers), stays serial estimate / capacity
        f"payoff_shared_seconds_total{{{proc}}}": "0+60x20",
        f"payoff_busy_seconds_total{{{proc}}}": "0+135x20",
        # serial calls are excluded from the parallel headline numbers
        'payoff_serial_estimate_seconds_total{strategy="serial", workload="w"}': "0+600x20",
        'payoff_wall_seconds_total{strategy="serial", workload="w"}': "0+60x20",
        'payoff_overhead_seconds_total{strategy="processes", phase="dispatch"}': "0+12x20",
        'payoff_overhead_seconds_total{strategy="processes", phase="pool_start"}': "0+6x20",
    }
    parallel_cases = [
        ("Speedup vs serial", [("{}", 0.5)]),
        ("Calls faster than serial", [("{}", 0.25)]),
        ("Parallel efficiency", [("{}", 0.25)]),
        ("Worker utilization", [("{}", 0.75)]),
        ("Utilization (busy / capacity)", [('{strategy="processes", workload="w"}', 0.75)]),
        ("Efficiency (speedup / workers)", [('{strategy="processes", workload="w"}', 0.25)]),
        (
            "Overhead by phase (share of wall time)",
            [('{phase="dispatch"}', 0.1), ('{phase="pool_start"}', 0.05)],
        ),
    ]
    thread_series = {
        'payoff_task_cpu_seconds_total{strategy="threads", workload="w"}': "0+30x20",
        'payoff_busy_seconds_total{strategy="threads", workload="w"}': "0+60x20",
    }
    thread_cases = [("GIL contention (threads: CPU / busy)", [('{workload="w"}', 0.5)])]
    groups = [(parallel_series, parallel_cases), (thread_series, thread_cases)]
    (tmp_path / "empty.yml").write_text("groups: []\n", encoding="utf-8")
    doc = {
        "rule_files": ["empty.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": [
                    {
                        "expr": expr(title),
                        "eval_time": "15m",
                        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
                    }
                    for title, samples in cases
                ],
            }
            for series, cases in groups
        ],
    }
    test_file = tmp_path / "dashboard.test.yml"
    test_file.write_text(json.dumps(doc), encoding="utf-8")  # JSON is valid YAML
    result = subprocess.run(
        [promtool, "test", "rules", test_file.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
