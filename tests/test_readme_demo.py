"""The README's first command, run as a new user would: in a fresh clone, with nothing installed there.

Also the demo's variants: numpy fits the model on the core install (the wheel in a fresh venv is
tests/test_package.py), and a variant asked for without its extra is one line naming the install.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from payoff import demo
from payoff.demo.workload import fit_logistic, make_problem
from tests.conftest import checkout_only, require, require_tool

ROOT = Path(__file__).resolve().parent.parent
CASES = ("instances/serial", "instances/processes", "instances/auto", "features/threads", "features/auto")


def readme_commands() -> list[str]:
    """The two set-up commands the README starts with (its first code block)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_starts_with_the_demo_and_the_test_command() -> None:
    assert readme_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    checkout_only(".ci/run (what CI runs) is not in the sdist")
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].endswith("bash scripts/test.sh")


def test_demo_quick_from_a_fresh_clone(tmp_path: Path) -> None:
    checkout_only("this test clones the git checkout")
    git = require_tool("git")
    require((ROOT / ".git").exists(), "a git checkout of payoff (the test clones it)")
    clone = tmp_path / "payoff"
    subprocess.run([git, "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True, timeout=60)
    assert not (clone / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PAYOFF_", "CE_PARALLEL"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    command = readme_commands()[0].split()
    try:
        done = subprocess.run([*command, "--quick", "--metrics-port", "0"], cwd=clone, env=env, timeout=480,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a failure with the output so far
        pytest.fail(f"the demo did not finish in 8 minutes:\n{exc.stdout!s}\n{exc.stderr!s}")
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert re.search(r"^case\s+ran as\s+wall s\s+vs serial", out, re.M), out
    for case in CASES:
        assert re.search(rf"^{re.escape(case)}\s+\w+ x\d+\s+\d+\.\d{{3}}", out, re.M), f"no row for {case}:\n{out}"
    assert "verdict (instances): auto chose" in out and "verdict (features): auto chose" in out, out
    assert (clone / ".venv" / "bin" / "payoff").exists()
    warned = [line for line in done.stderr.splitlines() if "ParallelFallbackWarning" in line]
    assert warned, "the demo's fallback cases warn"
    assert all(line.startswith("payoff demo: ParallelFallbackWarning: ") for line in warned), done.stderr
    assert "sys.exit(main())" not in done.stderr, "a warning named the console script's line as its place"


def test_numpy_fits_the_model_scikit_learn_fits() -> None:
    require(importlib.util.find_spec("sklearn") is not None, "scikit-learn (the [demo] extra)")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=1000, n_features=16, n_informative=8, random_state=0)
    coef, intercept = fit_logistic(x, y.astype(float))
    model = LogisticRegression(max_iter=1000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(coef, model.coef_[0], atol=1e-4)
    assert intercept == pytest.approx(float(model.intercept_[0]), abs=1e-4)


def test_the_core_install_problem_is_the_same_workload() -> None:
    numpy_problem = make_problem(50, 16, fit="numpy")
    assert numpy_problem.fitted_with == "numpy"
    assert numpy_problem.instances.shape == (50, 16) and numpy_problem.background.shape == (48, 16)
    assert make_problem(50, 16, fit="numpy").coef.tolist() == numpy_problem.coef.tolist(), "not deterministic"
    with pytest.raises(ValueError, match="fit must be"):
        make_problem(5, 4, fit="torch")


@pytest.mark.parametrize(("flag", "extra"), [("dask", "dask"), ("ce", "ce")])
def test_a_variant_without_its_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                 flag: str, extra: str) -> None:
    monkeypatch.setattr(demo, "has_extra", lambda name: name != extra)
    args = argparse.Namespace(quick=True, loop=False, pause=0.0, dask=False, ce=False, metrics_port=0,
                              metrics_addr="127.0.0.1")
    setattr(args, flag, True)
    assert demo.run_demo(args) == 2
    captured = capsys.readouterr()
    assert not captured.out
    assert captured.err.count("\n") == 1 and captured.err.rstrip().endswith(f"pip install 'payoff[{extra}]'")


def test_has_extra_looks_for_the_modules_without_importing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo.has_extra("demo") == (importlib.util.find_spec("sklearn") is not None)
    monkeypatch.setitem(demo.EXTRAS, "nothing", (("no_such_package.sub",), "nothing"))
    assert demo.has_extra("nothing") is False


def _rows(serial_wall: float, auto_wall: float, estimate: float) -> list[demo.Row]:
    """An axis's serial and auto rows: real records, with the walls and the estimate the test sets."""
    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(abs, range(10))
        serial = ex.last_record
    assert serial is not None
    auto = dataclasses.replace(serial, selected_strategy="processes", wall_seconds=auto_wall,
                               serial_estimate_seconds=estimate * auto_wall, workers=2)
    return [demo.Row(f"{axis}/serial", serial, serial_wall) for axis in ("instances", "features")] + \
        [demo.Row(f"{axis}/auto", auto, auto_wall) for axis in ("instances", "features")]


@pytest.mark.parametrize(("serial_wall", "auto_wall", "estimate", "says"), [
    (1.2, 0.8, 0.97, "1.50x against the serial run: parallel paid off"),
    (0.8, 1.0, 1.6, "0.80x against the serial run: serial was the right call"),
    (1.2, 0.6, 1.9, "2.00x against the serial run: parallel paid off"),
])
def test_the_verdict_goes_by_what_the_demo_measured_and_names_a_disagreeing_estimate(
        serial_wall: float, auto_wall: float, estimate: float, says: str) -> None:
    """It said "1.54x against serial: serial was the right call" when the record's estimate was 0.97x."""
    text = demo.verdict(_rows(serial_wall, auto_wall, estimate))
    assert says in text, text
    measured = serial_wall / auto_wall
    disagrees = abs(estimate / measured - 1) > 0.10
    assert (f"payoff's own estimate for that call was {estimate:.2f}x" in text) == disagrees, text
