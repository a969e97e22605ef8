"""``payoff._crash_marks``: the parent reads where its dead workers stood, and only theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from payoff import _crash_marks as crash_marks

SRC = str(Path(crash_marks.__file__).resolve().parents[1])


def _worker(folder: str, at: int, then: str) -> subprocess.Popen[str]:
    """A process that marks ``at`` in ``folder`` as a worker running that item would, then ``then``."""
    code = (f"from payoff import _crash_marks as m\nmark = m.marker({folder!r})\nmark[0] = {at}\n"
            f"print('marked', flush=True)\n{then}\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "marked"
    return proc


def test_the_dead_workers_marks_are_read_once_and_the_living_ones_left() -> None:
    marks = crash_marks.CrashMarks()
    living = None
    try:
        crashed = _worker(marks.path, 50, "import ctypes; ctypes.string_at(0)")
        finished = _worker(marks.path, crash_marks.NOWHERE, "")  # ended between chunks: no item to blame
        living = _worker(marks.path, 7, "import time; time.sleep(120)")
        assert crashed.wait(30) != 0 and finished.wait(30) == 0
        assert marks.where_the_dead_stood() == [50]
        assert marks.where_the_dead_stood() == [], "a dead worker's mark was read twice"
        assert (Path(marks.path) / f"{crash_marks.PREFIX}{living.pid}").exists()
    finally:
        if living is not None:
            living.kill()
            living.wait(30)
        marks.remove()
    assert not os.path.exists(marks.path)


def test_a_worker_whose_folder_is_gone_runs_unmarked(tmp_path: Path) -> None:
    assert crash_marks.marker(str(tmp_path / "gone")) is None
