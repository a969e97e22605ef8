"""Generated docs stay in step with the code that defines them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from payoff.reasons import Reason
from payoff.telemetry.metrics import METRICS, metrics_reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_reference_is_generated_from_the_code() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert committed == metrics_reference_markdown(), \
        "docs/metrics.md drifted from the metric definitions: run `payoff metrics-doc -o docs/metrics.md`"


def test_reference_names_every_metric_and_reason() -> None:
    text = metrics_reference_markdown()
    for d in METRICS:
        assert f"`{d.name}`" in text
    for r in Reason:
        assert f"`{r.value}`" in text


def test_the_cli_writes_the_same_text(tmp_path: Path) -> None:
    out = tmp_path / "metrics.md"
    subprocess.run([sys.executable, "-m", "payoff", "metrics-doc", "-o", str(out)], check=True, cwd=ROOT,
                   timeout=120)
    assert out.read_text(encoding="utf-8") == metrics_reference_markdown()


def test_design_contract_metrics_all_exist() -> None:
    design = ROOT.parent / "shared" / "DESIGN.md"
    if not design.exists():
        return
    names = {d.name for d in METRICS}
    table = [line for line in design.read_text().splitlines() if line.startswith("| `payoff_")]
    assert table
    for line in table:
        assert line.split("`")[1] in names


def test_the_architecture_page_names_every_module() -> None:
    """A module added without a line in docs/architecture.md leaves contributors a room without a door."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "src" / "payoff"
    modules = [f"{p.name}" for p in package.glob("*.py") if p.name != "__init__.py"]
    folders = [f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()]
    missing = [name for name in modules + folders if f"`{name}" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"



def test_the_quickstart_names_every_fallback_reason() -> None:
    """Its list had fallen behind the enum: ``pool_start_cost`` and ``no_measured_gain``, two of the codes a
    user meets most, were missing (observability trial)."""
    from payoff.reasons import fallback_reasons

    text = (Path(__file__).resolve().parents[1] / "docs" / "quickstart.md").read_text()
    listed = re.search(r"Reason codes: (.*?)\. The", text, flags=re.DOTALL)
    assert listed is not None, "the quickstart's list of reason codes moved"
    assert set(re.findall(r"`([a-z_]+)`", listed[1])) == {r.value for r in fallback_reasons()}


def test_the_tuning_guide_says_what_every_reason_code_means_for_you() -> None:
    """Six codes, among them ``thread_unsafe`` and ``pool_stopped``, had no word in the tuning guide's table of
    what a record says and what to do (the issue 13 audit, trial 44)."""
    from payoff.reasons import Reason

    text = (Path(__file__).resolve().parents[1] / "docs" / "tuning.md").read_text()
    cells = re.findall(r"^\| ((?:fallback|decision) [^|]*)\|", text, flags=re.MULTILINE)
    rows = {code for cell in cells for code in re.findall(r"`([a-z_]+)`", cell)}
    assert {r.value for r in Reason} - rows == set()
