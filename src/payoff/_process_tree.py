"""The processes a worker started, so that a worker payoff kills does not leave them running without it.

An item that runs ``joblib.Parallel`` (a scikit-learn ``n_jobs=-1`` fit or
predict) starts loky workers under the payoff worker. A worker that ends
normally stops them (``_exit.stop_loky_before_joins``), but one killed in the
middle of an item (a cancel, a call's timeout) had no say: its loky workers
were adopted by init and waited for joblib's idle timeout (300 s), each a
Python process with the items' libraries loaded, and any task already queued to
them kept a core busy for nobody. loky ends its own workers' process trees when
it terminates them (``kill_process_tree``); payoff does the same when it kills.

Resource trackers and forkservers are left to end by themselves: they ignore
SIGTERM, and leave on their own once the processes that hold their pipe are
gone, removing what those leaked (a tracker killed instead would leave it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from payoff import _procfs
from payoff._outer_pools import HELPERS, _children, _cmdline

_PROC = Path("/proc")


def descendants(pids: Iterable[int], proc: Path = _PROC) -> list[tuple[int, str]]:
    """Every process below ``pids`` but helpers, with its start time (to tell it from a later process given its
    pid); none where ``/proc`` cannot tell."""
    found: list[tuple[int, str]] = []
    todo = list(pids)
    seen = set(todo)
    while todo:
        for child in sorted(_children(todo.pop(), proc) or ()):
            if child in seen:
                continue
            seen.add(child)
            started = _start_time(child, proc)
            if started is None or any(marker in _settled_cmdline(child, proc) for marker in HELPERS):
                continue
            found.append((child, started))
            todo.append(child)
    return found


CMDLINE_SETTLE_SECONDS = 0.05
"""How long a live process's empty command line is read again: a process in the middle of ``exec``."""


def _settled_cmdline(pid: int, proc: Path) -> bytes:
    """The command line of ``pid``, read again while it is empty and the process lives.

    ``subprocess.Popen`` returns once the new program's ``exec`` closed its pipe, before the kernel has
    written that program's arguments: a resource tracker just started read as an empty command line, no
    helper, and was counted among the processes to stop (seen with two test processes sharing 2 cores).
    """
    deadline = time.monotonic() + CMDLINE_SETTLE_SECONDS
    while not (line := _cmdline(pid, proc)) and time.monotonic() < deadline and running(pid, proc):
        time.sleep(0.001)
    return line


def signal_alive(processes: Iterable[tuple[int, str]], sig: signal.Signals, proc: Path = _PROC) -> None:
    """Send ``sig`` to those of ``processes`` that still run (the same process: its start time unchanged)."""
    for pid, started in processes:
        if _start_time(pid, proc) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def running(pid: int, proc: Path = _PROC) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    return _start_time(pid, proc) is not None


def _start_time(pid: int, proc: Path) -> str | None:
    """Field 22 of ``stat`` (clock ticks after boot); None for a process gone or a zombie."""
    try:
        fields = _procfs.read_text(f"{proc}/{pid}/stat").rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None
