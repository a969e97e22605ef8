"""``payoff._process_tree``: what a killed worker started is found, helpers are left, a reused pid is spared."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from payoff._process_tree import descendants, signal_alive


def test_descendants_finds_grandchildren_and_leaves_helpers_and_reused_pids_alone() -> None:
    # a child that starts a grandchild and a process named like a resource tracker, then waits
    code = ("import subprocess, sys, time\n"
            "g = subprocess.Popen(['sleep', '30'])\n"
            "h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)  # resource' + '_tracker'])\n"
            "print(g.pid, h.pid, flush=True)\n"
            "time.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild, helper = map(int, child.stdout.readline().split())
        found = dict(descendants([os.getpid()]))
        assert child.pid in found and grandchild in found
        assert helper not in found  # a resource tracker ends by itself, after cleaning up
        signal_alive([(grandchild, "0")], signal.SIGKILL)  # another start time: another process, spared
        assert grandchild in dict(descendants([child.pid]))
        signal_alive([(child.pid, found[child.pid]), (grandchild, found[grandchild])], signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        for pid in (child.pid, locals().get("grandchild"), locals().get("helper")):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        child.wait(10)


def _fake_process(proc: Path, pid: int, parent: int, started: str, cmdline: bytes) -> None:
    """A process as ``/proc`` shows it: its ``stat`` (state, parent, start time in field 22) and command line."""
    (proc / str(pid) / "task" / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "task" / str(pid) / "children").write_text("")
    rest = ["S", str(parent)] + ["0"] * 17 + [started]
    (proc / str(pid) / "stat").write_text(f"{pid} (python) {' '.join(rest)}\n")
    (proc / str(pid) / "cmdline").write_bytes(cmdline)


def test_a_helper_caught_in_the_middle_of_its_exec_is_still_a_helper(tmp_path: Path) -> None:
    """A process in the middle of ``exec`` has an empty command line for a moment after ``Popen`` returned: a
    resource tracker read then was no helper and was counted among the processes to stop (a run of the test
    above on two test processes found the tracker it had just started). Its arguments come a moment later."""
    _fake_process(tmp_path, 100, 1, "5", b"python\0worker\0")
    (tmp_path / "100" / "task" / "100" / "children").write_text("101 102")
    _fake_process(tmp_path, 101, 100, "7", b"")
    _fake_process(tmp_path, 102, 100, "7", b"sleep\x0030\0")
    later = threading.Timer(0.002, (tmp_path / "101" / "cmdline").write_bytes,
                            [b"python\0-c\0from multiprocessing.resource_tracker import main\0"])
    later.start()
    try:
        assert dict(descendants([100], tmp_path)) == {102: "7"}
    finally:
        later.join()
