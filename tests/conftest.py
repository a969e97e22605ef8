from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from payoff import planning
from payoff.telemetry import FALLBACK_WARNINGS
from payoff.telemetry.warnings import ParallelFallbackWarning

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A suite started in the background of a script (`bash scripts/test.sh &`) inherits Ctrl-C ignored, and so would
    # every program the Ctrl-C tests start and interrupt. A handler of our own is reset to the default in them.
    signal.signal(signal.SIGINT, signal.default_int_handler)

SDIST_HEAVY = {
    "test_ce_integration.py": "calibrated-explanations end to end (~90 s)",
    "test_ce_codec.py": "calibrated-explanations results through the codec",
    "test_dask.py": "local dask clusters",
    "test_e2e_prometheus.py": "a real Prometheus scraping the demo",
    "test_notebook.py": "a Jupyter kernel",
    "test_progress.py": "Jupyter kernels and a terminal",
    "test_compose.py::test_the_app_exports_over_otlp_only_what_the_collector_takes":
        "the demo run against a collector (13 s)",
}
"""Test files (or one test of a file, ``file::name``) an unpacked sdist collects but skips, saying why: minutes
of end-to-end work, run in the checkout."""


def outside_checkout() -> bool:
    """True in an unpacked sdist (PKG-INFO at the root, no .git); a checkout never has PKG-INFO there."""
    return (ROOT / "PKG-INFO").is_file() and not (ROOT / ".git").exists()


def checkout_only(what: str) -> None:
    """Skip, saying why, when the tests run from an unpacked sdist; never inside a checkout.

    Detection is positive (the sdist's PKG-INFO), so a checkout in CI=true cannot skip through it:
    there a missing component still goes through ``require`` and fails.
    """
    if outside_checkout():
        pytest.skip(f"outside a checkout (unpacked sdist): {what}")


HARD_LIMIT_SECONDS = 420
"""A test still running this long after it began is past pytest-timeout's 300 s (pyproject) by minutes."""


def pytest_configure(config: pytest.Config) -> None:
    """Where the watchdog below writes: the terminal's stderr as it was before pytest captured it."""
    capture = getattr(config.pluginmanager.getplugin("capturemanager"), "_global_capturing", None)
    saved = getattr(getattr(capture, "err", None), "targetfd_save", None)
    config.stash[_WATCHDOG_OUT] = os.fdopen(os.dup(saved if isinstance(saved, int) else 2), "w")


_WATCHDOG_OUT = pytest.StashKey[TextIO]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A hang pytest-timeout's alarm cannot end ends the run, with every thread's stack printed.

    The alarm interrupts the test's main thread once; a clean-up that then waits for the hung work (a
    ``with ThreadPoolExecutor`` joining its threads) hangs for good, and CI ran into its 90-minute limit with
    no word of where. Past ``HARD_LIMIT_SECONDS`` Python's faulthandler (a C thread, GIL or not) prints
    every thread's stack to the terminal and exits.
    """
    faulthandler.dump_traceback_later(HARD_LIMIT_SECONDS, exit=True, file=item.config.stash[_WATCHDOG_OUT])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an unpacked sdist, the end-to-end files of :data:`SDIST_HEAVY` skip with their reason."""
    if not outside_checkout():
        return
    tests = ROOT / "tests"
    for item in items:
        path = item.path.resolve()  # ROOT is resolved: a symlinked checkout must match too
        where = path.relative_to(tests).as_posix() if path.is_relative_to(tests) else None
        why = None if where is None else \
            SDIST_HEAVY.get(where) or SDIST_HEAVY.get(f"{where}::{getattr(item, 'originalname', item.name)}")
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=f"outside a checkout (unpacked sdist): {why}"))


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


@contextlib.contextmanager
def a_busy_python_thread() -> Iterator[None]:
    """A thread of the program's own that holds the GIL while the block runs (a service's other request)."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(10_000))

    spinner = threading.Thread(target=busy, daemon=True)
    spinner.start()
    try:
        yield
    finally:
        stop.set()
        spinner.join()


def until(condition: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` was awaited once ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:g} s for {what}"
        time.sleep(0.01)


def thread_stacks() -> str:
    """Every thread's stack in this process, for the message of a test that found a call hung."""
    frames = sys._current_frames()
    return "\n".join(f"--- {t.name}:\n" + "".join(traceback.format_stack(frames[t.ident]))
                     for t in threading.enumerate() if t.ident in frames)


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


def describe_stuck(pids: list[int]) -> str:
    """What a process that should have ended is doing: its state, kernel wait, and Python stacks if gdb can tell.

    For the message of a test that found a process left behind, so a rare failure
    in CI says where the process waits instead of only that it exists.
    """
    out = []
    for pid in pids:
        lines = [f"pid {pid}:"]
        for name in ("cmdline", "wchan", "status"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as fh:
                    text = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError as e:
                text = repr(e)
            lines.append(f"  {name}: {text[:600] if name != 'status' else _status_lines(text)}")
        lines.append(_gdb_stacks(pid))
        out.append("\n".join(lines))
    return "\n".join(out)


def _status_lines(text: str) -> str:
    return "; ".join(line for line in text.splitlines() if line.startswith(("State", "PPid", "Threads", "SigQ")))


def _gdb_stacks(pid: int) -> str:
    gdb = shutil.which("gdb")
    if gdb is None:
        return "  (no gdb for Python stacks)"
    helper = Path(sys.executable).resolve().with_name(Path(sys.executable).resolve().name + "-gdb.py")
    cmd = [gdb, "-p", str(pid), "-batch", "-iex", f"add-auto-load-safe-path {helper}",
           "-ex", "thread apply all py-bt", "-ex", "thread apply all bt 8"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=25)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"  gdb failed: {e!r}"
    return "  gdb:\n" + done.stdout[-5000:]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reap_or_kill(pid: int, seconds: float) -> bool:
    """Wait for a forked child ``pid`` to end; after ``seconds`` it is taken as hung and killed. True: it ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


@pytest.fixture
def sampler_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GIL sampler's thread refuses to start, as in a process out of threads; every other thread starts."""
    from payoff import _gil_wait

    real_start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name == "payoff-gil-sampler":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    monkeypatch.setattr(_gil_wait._SAMPLER, "_threads", [])
