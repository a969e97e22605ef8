"""What a chunk's own thread keeps while the chunk runs in a worker process, for the caller to take over.

Warnings and log records an item raises there are kept instead of shown where the caller never sees them
(``_relayed_warnings``, ``_relayed_logs``): each kind routes its process-wide hook through one of these, once per
process (a fork has hooks of its own to install), and keeps only what the chunk's thread raises: an item's own
threads show theirs where they are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Kept(Generic[T]):
    """One kind of thing kept, at most ``cap`` a chunk; past it, ``list()`` is None and the hook shows the rest
    as it did before."""

    def __init__(self, cap: int, install: Callable[[], None]) -> None:
        self._cap, self._install = cap, install
        self._local = threading.local()
        self._installed_in: int | None = None

    @contextmanager
    def collecting(self) -> Iterator[list[T]]:
        """Keep what this thread raises until the block ends."""
        if self._installed_in != os.getpid():
            self._installed_in = os.getpid()
            self._install()
        kept: list[T] = []
        self._local.kept = kept
        try:
            yield kept
        finally:
            self._local.kept = None

    def list(self) -> list[T] | None:
        """Where the hook keeps one more, or None: no chunk runs in this thread, or it kept ``cap`` already."""
        kept: list[T] | None = getattr(self._local, "kept", None)
        return None if kept is None or len(kept) >= self._cap else kept
