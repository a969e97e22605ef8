"""``payoff._process_tree``: what a killed worker started is found, helpers are left, a reused pid is spared."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

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
