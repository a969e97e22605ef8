"""Every Python block in the README and docs runs as written, or is marked as an excerpt (issue 14).

A block right after a ``<!-- excerpt -->`` line (which may say why) is only
compiled; every other block runs in a fresh interpreter, so docs that drift
from the code fail here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, bool]]:
    found = []
    for path in DOCS:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1), before.startswith("<!-- excerpt")))
    return found


BLOCKS = blocks()


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 5
    assert any(not excerpt for _, _, excerpt in BLOCKS)


@pytest.mark.parametrize(("where", "code", "excerpt"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_block_runs_as_written(where: str, code: str, excerpt: bool, tmp_path: Path) -> None:
    compile(code, where, "exec")
    if excerpt:
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PAYOFF_RECORDS": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env=env)
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
