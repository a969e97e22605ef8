#!/usr/bin/env python3
"""Build the payoff Grafana dashboards as code with grafana-foundation-sdk.

Usage (from the repository root)::

    python dashboards/build.py           # (re)write dashboards/json/*.json
    python dashboards/build.py --check   # exit 1 if the committed JSON is stale

Panels, PromQL and descriptions live in ``dashboards/panels.py``; this file
only turns them into Grafana JSON. Output is deterministic: sorted keys,
panel ids assigned in document order, explicit grid positions.

The JSON is the current dashboard schema (``schemaVersion`` 41, what Grafana 12
writes) as the pinned grafana-foundation-sdk builds it: pip alone would pick an
old build (its versions carry an epoch, and the newest epoch targets Grafana
10.1, schema 36), so ``SDK_VERSION`` is pinned and checked here.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import heatmap as heatmap_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models import prometheus as prom_m
from panels import EXEMPLAR_METRICS, PANELS, SECTIONS, PanelSpec

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "json"
OVERVIEW_FILE = "payoff-overview.json"
OVERVIEW_UID = "payoff-overview"
GRID_WIDTH = 24
DATASOURCE_VAR = "${datasource}"
REF_IDS = "ABCDEFGHIJ"
SDK_VERSION = "1769699241"
"""grafana-foundation-sdk's build for the current Grafana (the compose stack runs Grafana 12)."""
SCHEMA_VERSION = 41


def check_sdk() -> None:
    """Refuse to write JSON in an old schema: an unpinned install gets the Grafana 10.1 build."""
    from importlib.metadata import version

    built = dash_m.Dashboard().schema_version
    if built != SCHEMA_VERSION:
        raise SystemExit(
            f"grafana-foundation-sdk {version('grafana-foundation-sdk')} builds dashboard schema {built}, "
            f"not {SCHEMA_VERSION}: pip install 'grafana-foundation-sdk=={SDK_VERSION}'"
        )


def datasource_ref() -> common_m.DataSourceRef:
    """Every panel and every target points at the `$datasource` template variable."""
    return common_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_VAR)


def has_exemplars(expr: str) -> bool:
    """Whether the expression reads a metric whose observations carry trace ids."""
    return any(name in expr for name in EXEMPLAR_METRICS)


def thresholds(spec: PanelSpec) -> dash_b.ThresholdsConfig:
    steps = spec.get("thresholds", [(None, "green")])
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=value, color=color) for value, color in steps])
    )


def targets(spec: PanelSpec) -> list[Builder[cogvariants.Dataquery]]:
    assert len(spec["exprs"]) == len(spec["legends"]), spec["title"]
    out: list[Builder[cogvariants.Dataquery]] = []
    for index, (expr, legend) in enumerate(zip(spec["exprs"], spec["legends"], strict=True)):
        query = (
            prom_b.Dataquery()
            .expr(expr)
            .legend_format(legend)
            .ref_id(REF_IDS[index])
            .editor_mode(prom_m.QueryEditorMode.CODE)
            .datasource(datasource_ref())
        )
        if spec["kind"] == "heatmap":
            query = query.format(prom_m.PromQueryFormat.HEATMAP).range()
        else:
            query = query.format(prom_m.PromQueryFormat.TIME_SERIES).range()
        if spec["exemplars"] and index == 0:
            if not has_exemplars(expr):
                raise ValueError(f"{spec['title']}: exemplars asked for a metric without them: {expr}")
            query = query.exemplar(True)
        out.append(query)
    return out


def stat_panel(spec: PanelSpec) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .unit(spec["unit"])
        .decimals(2)
        .thresholds(thresholds(spec))
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .text_mode(common_m.BigValueTextMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["mean"]).values(False))
    )


def timeseries_panel(spec: PanelSpec) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .unit(spec["unit"])
        .thresholds(thresholds(spec))
        .line_width(1)
        .fill_opacity(25 if spec.get("stack") else 10)
        .show_points(common_m.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common_m.TooltipDisplayMode.MULTI)
            .sort(common_m.SortOrder.DESCENDING)
        )
    )
    if spec["unit"] == "percentunit":
        panel = panel.min(0)
    if "thresholds" in spec:
        panel = panel.thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED)
        )
    if spec.get("stack"):
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    return panel


def heatmap_panel(spec: PanelSpec) -> heatmap_b.Panel:
    return (
        heatmap_b.Panel()
        .unit(spec["unit"])
        .calculate(False)
        .rows_frame(heatmap_b.RowsHeatmapOptions().layout(common_m.HeatmapCellLayout.LE))
        .y_axis(heatmap_b.YAxisConfig().unit("suffix:x"))
        .cell_values(heatmap_b.CellValues().unit(spec["unit"]))
        .color(
            heatmap_b.HeatmapColorOptions()
            .mode(heatmap_m.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(heatmap_m.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .show_legend()
        .mode(common_m.TooltipDisplayMode.SINGLE)
        .hide_from(common_b.HideSeriesConfig().legend(False).tooltip(False).viz(False))
    )


def panel(spec: PanelSpec, panel_id: int, grid: dash_m.GridPos) -> Builder[dash_m.Panel]:
    kind = spec["kind"]
    built: stat_b.Panel | ts_b.Panel | heatmap_b.Panel
    if kind == "stat":
        built = stat_panel(spec)
    elif kind == "timeseries":
        built = timeseries_panel(spec)
    elif kind == "heatmap":
        built = heatmap_panel(spec)
    else:  # pragma: no cover - guarded by the Kind literal
        raise ValueError(f"unknown panel kind {kind!r}")
    return (
        built.id(panel_id)
        .title(spec["title"])
        .description(spec["description"])
        .datasource(datasource_ref())
        .grid_pos(grid)
        .targets(targets(spec))
    )


def query_variable(name: str, label: str, description: str, narrowed_by: list[str]) -> dash_b.QueryVariable:
    """A multi-value variable listing ``name``'s values among the series the earlier variables select."""
    all_option = dash_m.VariableOption(selected=True, text="All", value="$__all")
    selector = ", ".join(f'{earlier}=~"${earlier}"' for earlier in narrowed_by)
    metric = f"payoff_map_calls_total{{{selector}}}" if selector else "payoff_map_calls_total"
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(datasource_ref())
        .query(f"label_values({metric}, {name})")
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(all_option)
    )


def variables() -> list[Builder[dash_m.VariableModel]]:
    datasource = (
        dash_b.DatasourceVariable("datasource")
        .label("Data source")
        .description("Prometheus data source that scrapes payoff's /metrics endpoint.")
        .type("prometheus")
    )
    job = query_variable("job", "Job", "Prometheus scrape job of the payoff processes.", [])
    instance = query_variable(
        "instance", "Instance", "The process (host:port of its /metrics) within the chosen jobs.", ["job"]
    )
    strategy = query_variable(
        "strategy",
        "Strategy",
        "Executor strategy (serial, threads, processes, joblib, custom, dask).",
        ["job", "instance"],
    )
    workload = query_variable(
        "workload",
        "Workload",
        "Workload name given by the caller (default 'default'; names past the cap become 'other').",
        ["job", "instance", "strategy"],
    )
    return [datasource, job, instance, strategy, workload]


def overview() -> dash_m.Dashboard:
    """The "does parallel mode pay off?" dashboard."""
    board = (
        dash_b.Dashboard("payoff: does parallel pay off?")
        .uid(OVERVIEW_UID)
        .description(
            "Whether payoff's parallel map calls beat a plain loop: speedup, efficiency, "
            "utilization, fallbacks with reasons, decisions of the auto planner, waits and overheads."
        )
        .tags(["payoff", "parallelism"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )
    next_id = 1
    y = 0
    for section in SECTIONS:
        row = (
            dash_b.Row(section)
            .id(next_id)
            .datasource(datasource_ref())
            .grid_pos(dash_m.GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        )
        board = board.with_row(row)
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for spec in (p for p in PANELS if p["section"] == section):
            width, height = spec["width"], spec["height"]
            if x + width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            grid = dash_m.GridPos(h=height, w=width, x=x, y=y)
            board = board.with_panel(panel(spec, next_id, grid))
            next_id += 1
            x += width
            line_height = max(line_height, height)
        y += line_height
    return board.build()


def render(dashboard: dash_m.Dashboard) -> str:
    return json.dumps(dashboard, cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file, keyed by path."""
    return {OUT_DIR / OVERVIEW_FILE: render(overview())}


def check(files: dict[Path, str]) -> int:
    stale = 0
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            stale += 1
            print(f"{path} is out of date; run: python dashboards/build.py", file=sys.stderr)
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1
            )
            for line in list(diff)[:40]:
                print(line, file=sys.stderr)
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    check_sdk()
    files = outputs()
    if args.check:
        return check(files)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
