"""The quickstart notebook runs top to bottom in a real kernel (nbclient + ipykernel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "notebooks" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed() -> Any:
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        require(False, "nbclient and nbformat (extra [notebook])")
        raise
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def _outputs(nb: Any, marker: str) -> list[Any]:
    cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
    return list(cell.outputs)


def test_no_cell_errors(executed: Any) -> None:
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source


def test_the_paying_map_reports_its_speedup(executed: Any) -> None:
    text = "".join(o.get("text", "") for o in _outputs(executed, "range(400)") if o.output_type == "stream")
    assert "faster than serial" in text or "slower than serial" in text


def test_the_fallback_cell_shows_the_warning_with_its_reason(executed: Any) -> None:
    outs = _outputs(executed, "workload='tiny'")
    stderr = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stderr")
    assert "ParallelFallbackWarning" in stderr
    assert "(tiny_workload)" in stderr
    assert stderr.count("ParallelFallbackWarning") == 1


def test_the_report_cell_renders_html_with_the_timeline(executed: Any) -> None:
    outs = _outputs(executed, "ex.report()")
    html = "".join(o.get("data", {}).get("text/html", "") for o in outs if o.output_type == "execute_result")
    assert "<svg" in html
    assert 'class="worker-row"' in html
    assert "<script" not in html


def test_the_metrics_cell_shows_live_counters(executed: Any) -> None:
    text = "".join(o.get("text", "") for o in _outputs(executed, "serve_metrics") if o.output_type == "stream")
    assert "http://127.0.0.1:" in text
    assert 'payoff_map_calls_total{mode="parallel"' in text
    assert 'payoff_fallbacks_total{reason="tiny_workload",workload="tiny"} 1.0' in text


def test_a_re_run_cell_shows_its_fallback_warning_again_and_a_loop_in_it_once() -> None:
    """IPython empties a cell's ``__warningregistry__`` for each run, so a re-run cell shows its warnings
    again; payoff kept its own memory of the lines it had warned at, and a re-run cell showed the fallback
    warning only on its first run (1, 0, 0 where a plain UserWarning showed 1, 1, 1)."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        require(False, "nbclient and nbformat (extra [notebook])")
        raise
    cells = ["import warnings, payoff\ndef tiny(x):\n    return x + 1",
             "r = payoff.map(tiny, range(5))",
             "for _ in range(3):\n    r = payoff.map(tiny, range(5))\nwarnings.warn('plain')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    shown: list[tuple[int, int]] = []
    with client.setup_kernel():
        for index in (0, 1, 1, 1, 2, 2):
            cell = client.execute_cell(nb.cells[index], index)
            text = "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")
            if index:
                shown.append((text.count("ParallelFallbackWarning"), text.count("UserWarning: plain")))
    assert shown == [(1, 0)] * 3 + [(1, 1)] * 2


def test_what_items_print_and_warn_in_forked_workers_reaches_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker forked from the kernel held the kernel's own streams, which cannot send from another process:
    every ``print`` and warning of the items on a warm ``processes`` pool was lost, call after call, where
    joblib's and a loop's reached the cell (hunt 66). Each call's four prints and four warnings, twice. The
    kernel reads its descriptors 1 and 2 as a user's does: ipykernel leaves them alone under pytest."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        require(False, "nbclient and nbformat (extra [notebook])")
        raise
    cells = ["""import warnings
from payoff import ParallelConfig, ParallelExecutor
def w(x):
    s = 0
    for i in range(20_000):
        s += i
    if x % 100 == 0:
        print(f'item {x} prints')
        warnings.warn(f'item {x} warns', RuntimeWarning)
    return x
ex = ParallelExecutor(ParallelConfig(strategy="processes", start_method="fork", max_workers=2))
r = ex.map(abs, range(-300, 0), progress=False)""",
             "r = ex.map(w, range(1000, 1400), progress=False)",
             "r = ex.map(w, range(2000, 2400), progress=False)\nex.shutdown()"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    for cell, base in ((nb.cells[1], 1000), (nb.cells[2], 2000)):
        out = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
        err = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
        items = range(base, base + 400, 100)
        assert [f"item {x} prints" in out for x in items] == [True] * 4, (out, cell.outputs)
        assert [f"RuntimeWarning: item {x} warns" in err for x in items] == [True] * 4, err
