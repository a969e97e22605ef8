from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator

import pytest

from payoff import planning
from payoff.telemetry import FALLBACK_WARNINGS
from payoff.telemetry.warnings import ParallelFallbackWarning

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip loudly when a real component is missing; in CI that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {what}")
    pytest.skip(f"MISSING REAL COMPONENT: {what}")


def require_tool(name: str) -> str:
    """Path of an external tool (promtool, prometheus, chromium...); see ``require``."""
    path = shutil.which(name)
    require(path is not None, f"{name} not found on PATH (Debian package 'prometheus' provides promtool)")
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def _fresh_warning_memory() -> Iterator[None]:
    """Each test sees fallback warnings as a new session would."""
    FALLBACK_WARNINGS.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("always", ParallelFallbackWarning)
        yield
    FALLBACK_WARNINGS.reset()


@pytest.fixture(autouse=True)
def _fresh_planner() -> None:
    """Each test plans from the priors, not from what earlier tests taught the process."""
    planning.PLANNER.reset()


@pytest.fixture(autouse=True)
def _no_ce_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CE_PARALLEL", raising=False)
    monkeypatch.delenv("PAYOFF_PARALLEL", raising=False)


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc), zombies excluded."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
