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


def test_an_import_cut_short_drops_the_modules_that_hold_its_half_made_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``a`` imports ``b``, which binds the half-made ``a`` (a circular import), then ``a`` is cut short (a
    Ctrl-C): importlib drops ``a`` but ``b`` kept it, and ``b``'s every use raised "partially initialized
    module". ``b`` is dropped too, and the package that held it with its other new submodules (``c``: a package
    imported again lacks, as attributes, the submodules it kept)."""
    from payoff._extras import imports_undone_if_cut

    package = tmp_path / "cutpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "c.py").write_text("VALUE = 3\n")
    (package / "b.py").write_text("from . import a, c\n\ndef use():\n    return a.X\n")
    (package / "a.py").write_text("import sys\nfrom . import b\nif getattr(sys, 'cut_a', False):\n"
                                  "    raise KeyboardInterrupt('cut')\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "cut_a", True, raising=False)
    try:
        with pytest.raises(KeyboardInterrupt), imports_undone_if_cut():
            import cutpkg.a
        assert not [name for name in sys.modules if name.startswith("cutpkg")]
        monkeypatch.setattr(sys, "cut_a", False)
        import cutpkg.b

        assert cutpkg.b.use() == 1 and cutpkg.c.VALUE == 3
    finally:
        for name in [n for n in sys.modules if n == "cutpkg" or n.startswith("cutpkg.")]:
            del sys.modules[name]


def test_an_import_cut_short_keeps_a_finished_module_that_holds_a_module_known_by_another_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_collections_abc`` calls itself ``collections.abc``: read by that name, every finished module holding it
    (cloudpickle, and with it 39 of joblib's) counted as holding a dropped module and was dropped (review)."""
    from payoff._extras import imports_undone_if_cut

    (tmp_path / "finished_holder.py").write_text("import _collections_abc\n")
    (tmp_path / "cut_here.py").write_text("raise KeyboardInterrupt('cut')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    def import_both() -> None:
        __import__("finished_holder")
        __import__("cut_here")

    try:
        with pytest.raises(KeyboardInterrupt), imports_undone_if_cut():
            import_both()
        assert "finished_holder" in sys.modules
    finally:
        sys.modules.pop("finished_holder", None)
