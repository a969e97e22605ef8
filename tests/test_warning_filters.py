"""Items in worker processes warn under the caller's warning filters, as a loop's items do (hunt 55, F3).

joblib's loky workers and ``spawn``/``forkserver`` ones are fresh interpreters: a program that silenced a
warning saw it printed once per worker, and one under ``error`` filters got results where its loop raised.
Real pools, in a child program whose stderr (the workers' too) is read whole.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = """
import sys, warnings
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
strategy, start, action = sys.argv[1], sys.argv[2], sys.argv[3]
warnings.simplefilter(action, UserWarning)
config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                        start_method=None if start == "default" else start)
with ParallelExecutor(config) as ex:
    try:
        out = ex.map(tasks.warn_then_square, range(40))
    except UserWarning as exc:
        print("raised:", exc)
    else:
        print("results:", out == [x * x for x in range(40)], ex.last_record.selected_strategy)
"""


def _run(strategy: str, start: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROGRAM, strategy, start, action], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("strategy", "start"), [("joblib", "default"), ("processes", "spawn")])
def test_a_warning_the_caller_ignores_is_not_printed_by_the_workers(strategy: str, start: str) -> None:
    done = _run(strategy, start, "ignore")
    assert done.returncode == 0, done.stderr
    assert f"results: True {strategy}" in done.stdout, done.stdout + done.stderr
    assert "warns" not in done.stderr, done.stderr


@pytest.mark.parametrize(("strategy", "start"), [("joblib", "default"), ("processes", "spawn")])
def test_a_warning_the_caller_makes_an_error_raises_as_in_a_loop(strategy: str, start: str) -> None:
    done = _run(strategy, start, "error")
    assert done.returncode == 0, done.stderr
    assert "raised: item" in done.stdout and "warns" in done.stdout, done.stdout + done.stderr


def test_a_warning_the_caller_shows_is_shown() -> None:
    """The filters travel, not a silence: under ``always`` the workers print every item's warning."""
    done = _run("joblib", "default", "always")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warns") >= 30, done.stderr


_SUBMITTED = """
import warnings
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
warnings.simplefilter("ignore", UserWarning)
with ParallelExecutor(ParallelConfig(strategy="joblib", max_workers=2)) as ex:
    print("result:", ex.submit(tasks.warn_then_square, 7).result(timeout=60))
"""


def test_a_submitted_call_warns_under_the_callers_filters_too() -> None:
    done = subprocess.run([sys.executable, "-c", _SUBMITTED], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "result: 49" in done.stdout and "warns" not in done.stderr, done.stdout + done.stderr
