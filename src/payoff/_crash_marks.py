"""Where a worker process was when it died: the item each rerun chunk is running, left in a shared file.

A pool tells its parent only that a worker died. Finding which item killed it took halving the lost
chunks, a fresh pool per crash: eight crashes for a segfault in a map of 200, 5 s on joblib, whose
workers start as fresh interpreters. A chunk rerun after a crash now writes each item's index to an
8-byte file of its worker's, mapped in memory (a store, no system call), before it runs the item; the
file outlives the worker, so the parent reads where each dead worker stood, and the item found runs
alone next: a crash then names it. First runs never mark (they time blocks of items, not each item).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Collection
from pathlib import Path

from payoff._process_tree import running
from payoff._scratch import ScratchDir

PREFIX = "at-"
NOWHERE = -1
_SIZE = 16
"""Two int64: the item the worker runs (``NOWHERE`` between chunks), and the call whose chunk it is."""

_mine: tuple[str, int, memoryview] | None = None


def marker(folder: str, call: int) -> memoryview | None:
    """This worker's mark in ``folder``, set for a chunk of ``call``; made on its first marked chunk there.
    None where the file cannot be made (the pool's folder gone, a full disk): the chunk runs unmarked."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != folder or _mine[1] != pid:  # a fork of a worker marks a file of its own
        try:
            fd = os.open(os.path.join(folder, f"{PREFIX}{pid}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, _SIZE)
                mapped = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        _mine = (folder, pid, memoryview(mapped).cast("q"))
    view = _mine[2]
    view[0], view[1] = NOWHERE, call
    return view


class CrashMarks(ScratchDir):
    """The parent's side: a folder of marks for one pool's workers."""

    def __init__(self) -> None:
        super().__init__("payoff-marks-")

    def where_the_dead_stood(self, call: int, spare: Collection[int] = ()) -> list[int]:
        """Item indices of ``call`` that dead workers were running; live workers' marks, other calls' (a pool
        shared by two calls breaks for both), and those of the workers ``spare`` names, are left out."""
        found = set()
        try:  # not Path.glob: between its check that the folder is there and its read, the folder may go
            entries = [e for e in os.scandir(self.path) if e.name.startswith(PREFIX)]
        except OSError:  # gone with its pool, which another call stopped: no marks to read
            return []
        for entry in entries:
            pid = int(entry.name[len(PREFIX):]) if entry.name[len(PREFIX):].isdigit() else None
            if pid is None or pid in spare or running(pid):
                continue
            with contextlib.suppress(OSError):
                mark = Path(entry.path).read_bytes()
                at = int.from_bytes(mark[:8], "little", signed=True)
                if at != NOWHERE and int.from_bytes(mark[8:_SIZE], "little", signed=True) == call:
                    found.add(at)
        return sorted(found)
