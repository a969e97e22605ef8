"""Calls stopped while their chunks run in worker processes: a shared file the workers read between blocks.

A thread's chunk stops at its next timing block once its call's token is set. A worker process's chunk
could not see the token and ran to its end after the map had raised, for nobody: 100-200 items of 400, 0.5 s
of worker CPU no record showed, and the next call, queued behind them, read its own speedup as 0.2
(telemetry trial). Nor can a pool cancel the chunks it has already moved to its call queue. The parent now
writes a stopped call's key into a slot of a file of the pool's, mapped in memory; a worker maps the file once
and reads the slot (a memory read) before each chunk and between its timing blocks.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
from collections.abc import Callable

SLOTS = 4096
"""Keys share a slot every SLOTS calls: a later call writing its key there only ever un-stops a call long over."""
_SIZE = SLOTS * 8
FILE_NAME = "stopped"


class StopMarks:
    """The parent's side: one file of slots for one pool's workers, in a folder of the pool's."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, FILE_NAME)
        self._view = _mapped(self.path, create=True)
        self._keys = itertools.count(1)
        self._pid = os.getpid()

    def key(self) -> int:
        """A key for one more call's chunks."""
        return next(self._keys)

    def stop(self, key: int) -> None:
        """Only in the process that made the file: a forked child shares its mapping, and a call it ends (the
        parent's ``imap`` it cannot continue) is the parent's still."""
        if os.getpid() != self._pid:
            return
        with contextlib.suppress(ValueError):  # the pool closed meanwhile: its workers are gone with it
            self._view[key % SLOTS] = key


_seen: dict[str, memoryview] = {}
"""A worker's mappings: one per pool file it was sent chunks from (one, as a worker serves one pool)."""


def reader(path: str, key: int) -> Callable[[], bool] | None:
    """Whether the call of ``key`` was stopped, read from the file at ``path``; None where it cannot be mapped
    (the pool's folder gone): its chunks then run to their end, as before."""
    view = _seen.get(path)
    if view is None:
        try:
            view = _seen[path] = _mapped(path, create=False)
        except (OSError, ValueError):
            return None
    slot = key % SLOTS
    return lambda: view[slot] == key


def _mapped(path: str, *, create: bool) -> memoryview:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    try:
        if create:
            os.ftruncate(fd, _SIZE)
        return memoryview(mmap.mmap(fd, _SIZE)).cast("q")
    finally:
        os.close(fd)
