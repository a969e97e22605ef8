"""Checks of the Prometheus, alerting and Grafana provisioning files in deploy/.

`promtool` (Debian package `prometheus`) validates the config and rules and runs
the alert unit tests in deploy/alerts.test.yml. The project has no YAML parser
dependency, so the cross-file checks below read the files with anchored regular
expressions over the layout these files use, and cross-check counts with promtool.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus.yml"
ALERTS_YML = DEPLOY / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "alerts.test.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
STACK_DOC = ROOT / "docs" / "stack.md"
HOMEPAGE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Homepage"]
RUNBOOK_BASE = f"{HOMEPAGE}/blob/main/docs/stack.md#"
"""Where every alert's runbook_url points: a heading of docs/stack.md, as the project's home renders it."""

EXPECTED_ALERTS = {
    "PayoffParallelNotPayingOff",
    "PayoffFallbackRateHigh",
    "PayoffPoolStartFailures",
    "PayoffTaskErrorRatioHigh",
    "PayoffQueueWaitP95High",
    "PayoffUtilizationLow",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def alert_blocks() -> dict[str, str]:
    """Alert name -> the text of its rule in alerts.yml."""
    text = ALERTS_YML.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]
    blocks: dict[str, str] = {}
    for part in parts:
        name, _, body = part.partition("\n")
        blocks[name.strip()] = body
    return blocks


def alert_tests() -> list[tuple[str, bool]]:
    """(alertname, fires) for every alert_rule_test case in alerts.test.yml."""
    text = ALERTS_TEST_YML.read_text(encoding="utf-8")
    cases = re.findall(r"^\s*alertname:\s*(\S+)\s*\n\s*exp_alerts:[ \t]*(\[\])?", text, flags=re.MULTILINE)
    return [(name, empty == "") for name, empty in cases]


# ---------------------------------------------------------------- promtool


def test_prometheus_config_is_valid() -> None:
    """`promtool check config` also loads rule_files, resolved relative to the config file."""
    result = promtool("check", "config", str(PROMETHEUS_YML.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(ALERTS_YML.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"(\d+) rules found", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert int(found.group(1)) == len(alert_blocks()), "alert parsing here disagrees with promtool"


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST_YML.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# ---------------------------------------------------------------- alert coverage and shape


def test_expected_alerts_exist() -> None:
    assert set(alert_blocks()) == EXPECTED_ALERTS


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    cases = alert_tests()
    assert cases, "no alert_rule_test cases found"
    for name in alert_blocks():
        outcomes = {fires for alert, fires in cases if alert == name}
        assert True in outcomes, f"{name}: no test case where it fires"
        assert False in outcomes, f"{name}: no test case where it stays quiet"
    unknown = {alert for alert, _ in cases} - set(alert_blocks())
    assert not unknown, f"tests for alerts that do not exist: {unknown}"


def test_every_alert_has_severity_and_annotations() -> None:
    for name, body in alert_blocks().items():
        assert re.search(r"^\s+severity:\s*(info|warning|critical)\s*$", body, re.MULTILINE), name
        assert re.search(r"^\s+summary:\s*\S", body, re.MULTILINE), f"{name}: no summary"
        assert re.search(r"^\s+description:\s*\S", body, re.MULTILINE), f"{name}: no description"


def test_alerts_use_contract_metrics_only() -> None:
    text = ALERTS_YML.read_text(encoding="utf-8")
    assert 'payoff_pool_starts_total{outcome="failure"}' in text
    for metric in set(re.findall(r"\bpayoff_[a-z_]+", text)):
        assert metric.endswith(("_total", "_bucket")), f"unexpected metric {metric}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section_in_the_docs() -> None:
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", STACK_DOC.read_text(encoding="utf-8"), re.MULTILINE)}
    for name, body in alert_blocks().items():
        found = re.search(r'^\s+runbook_url:\s*"([^"]+)"\s*$', body, re.MULTILINE)
        assert found, f"{name}: no runbook_url"
        url = found.group(1)
        assert url == RUNBOOK_BASE + name.lower(), f"{name}: runbook_url {url}"
        assert name.lower() in anchors, f"{name}: docs/stack.md has no heading for its runbook"


def test_alerts_keep_job_and_instance() -> None:
    """Every aggregation keeps the labels that say which process the alert is about."""
    for name, body in alert_blocks().items():
        expr = body.split("expr: |", 1)[1].split("\n        for:")[0].split("\n        labels:")[0]
        groupings = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr)
        assert groupings, f"{name}: no aggregation found"
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            assert {"job", "instance"} <= labels, f"{name}: aggregates away job/instance: ({grouping})"
        assert not re.search(r"\b(sum|max|min|avg|count)\s*\(", expr), f"{name}: an aggregation without by()"
        assert "$labels.instance" in body, f"{name}: its summary or description does not name the instance"


def test_firing_alert_tests_expect_job_and_instance() -> None:
    text = ALERTS_TEST_YML.read_text(encoding="utf-8")
    expected = re.findall(r"- exp_labels:\n((?:\s{14}\S.*\n)+)", text)
    assert expected, "no exp_labels in alerts.test.yml"
    for block in expected:
        assert re.search(r"^\s+job:\s*\S", block, re.MULTILINE) and re.search(r"^\s+instance:\s*\S", block,
                                                                                re.MULTILINE), block


# ---------------------------------------------------------------- prometheus.yml content


def test_prometheus_scrapes_the_demo_app_and_loads_alerts() -> None:
    text = PROMETHEUS_YML.read_text(encoding="utf-8")
    assert re.search(r"""targets:\s*\[\s*["']127\.0\.0\.1:9465["']\s*\]""", text), "the demo app is not scraped"
    assert re.search(r"^rule_files:\s*\n\s*-\s*alerts\.yml\s*$", text, re.MULTILINE)
    assert re.search(r"^\s+evaluation_interval:\s*\S+", text, re.MULTILINE)


# ---------------------------------------------------------------- grafana provisioning


def test_datasources_link_exemplars_to_tempo() -> None:
    text = (PROVISIONING / "datasources" / "datasources.yml").read_text(encoding="utf-8")
    assert re.search(r"^apiVersion:\s*1\s*$", text, re.MULTILINE)
    assert re.search(r"type:\s*prometheus\b", text)
    assert re.search(r"type:\s*tempo\b", text)
    tempo_uid = re.search(r"uid:\s*(\S+)\s*\n\s*type:\s*tempo\b", text)
    assert tempo_uid, "the Tempo data source needs a fixed uid for exemplar links"
    link = re.search(
        r"exemplarTraceIdDestinations:\s*\n\s*-\s*name:\s*trace_id\s*\n\s*datasourceUid:\s*(\S+)", text
    )
    assert link, "exemplarTraceIdDestinations with name: trace_id is missing"
    assert link.group(1) == tempo_uid.group(1)


def test_dashboard_provider_points_at_a_folder() -> None:
    text = (PROVISIONING / "dashboards" / "dashboards.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+type:\s*file\s*$", text, re.MULTILINE)
    assert re.search(r"^\s+path:\s*/\S+", text, re.MULTILINE)


def test_collector_and_tempo_configs_are_present() -> None:
    collector = (DEPLOY / "otel-collector.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+grpc:\s*\n\s+endpoint:\s*0\.0\.0\.0:4317", collector, re.MULTILINE)
    assert re.search(r"^\s+http:\s*\n\s+endpoint:\s*0\.0\.0\.0:4318", collector, re.MULTILINE)
    assert re.search(r"^\s+otlp/tempo:\s*\n\s+endpoint:\s*tempo:4317", collector, re.MULTILINE)
    assert "prometheus" not in re.sub(r"#.*", "", collector), (
        "metrics are scraped, not exported by the collector"
    )
    tempo = (DEPLOY / "tempo.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+backend:\s*local\s*$", tempo, re.MULTILINE)
    assert re.search(r"^\s+http_listen_port:\s*3200\s*$", tempo, re.MULTILINE)


def test_the_fallback_rate_alert_leaves_out_exactly_the_reasons_of_serial_by_choice() -> None:
    """Its matcher is written in the rule; the codes it leaves out are ``Reason.serial_by_choice`` (a new code
    of either kind would otherwise count, or stay out of, the alert without anyone deciding it)."""
    from payoff.reasons import fallback_reasons

    excluded = re.search(r'payoff_fallbacks_total\{reason!~"([^"]+)"\}', alert_blocks()["PayoffFallbackRateHigh"])
    assert excluded is not None, "the rule no longer excludes reasons by a regular expression"
    by_choice = {r.value for r in fallback_reasons() if r.serial_by_choice}
    assert set(excluded[1].split("|")) == by_choice
    assert not any(r.recovered for r in fallback_reasons() if r.serial_by_choice)
