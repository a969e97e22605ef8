"""A feature reached without its optional dependency names the extra that installs it.

Each case runs in a fresh interpreter whose ``sys.modules`` holds None for the dependency: an import of it
raises ``ModuleNotFoundError`` there as in an environment without it (a bare ``pip install payoff``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "otlp": ("opentelemetry.exporter", """
        import payoff.telemetry as t
        try:
            t.configure(otlp_endpoint="http://127.0.0.1:4318")
        except ModuleNotFoundError as exc:
            print(exc)
    """),
    "dask": ("distributed", """
        import warnings
        from payoff import ParallelConfig, ParallelExecutor
        warnings.simplefilter("ignore")
        with ParallelExecutor(ParallelConfig(strategy="dask", tiny_workload_threshold=0)) as ex:
            ex.map(abs, range(-50, 50))
            print(ex.last_record.fallback_reason, ex.last_record.fallback_detail)
    """),
    "ce": ("calibrated_explanations", """
        from payoff.integrations.calibrated_explanations import enable
        try:
            enable(object())
        except ModuleNotFoundError as exc:
            print(exc)
    """),
}


@pytest.mark.parametrize("extra", sorted(CASES))
def test_a_feature_without_its_extra_names_the_extra(extra: str) -> None:
    """Before: a bare "No module named 'opentelemetry.exporter'" (configure()), a dask fallback detail of
    ``ModuleNotFoundError("No module named 'distributed'")``, and "No module named 'calibrated_explanations'"
    from ``enable()``, none saying which extra brings it."""
    module, body = CASES[extra]
    code = f"import sys\nsys.modules[{module!r}] = None\n" + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"pip install 'payoff[{extra}]'" in out.stdout, out.stdout + out.stderr[-2000:]
    assert f"'{module}" in out.stdout, out.stdout  # the missing package named
