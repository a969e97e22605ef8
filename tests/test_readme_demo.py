"""The README's first command, run as a new user would: in a fresh clone, with nothing installed there."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require, require_tool

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
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].endswith("bash scripts/test.sh")


def test_demo_quick_from_a_fresh_clone(tmp_path: Path) -> None:
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
