"""A call's items: a sequence used as given, or an iterator read only as far as the work has got.

``map`` returns a list, so it may hold its input; ``imap`` over a generator
must not, or a stream of millions of items (or an endless one under
``islice``) costs memory a loop would never use. The planner sees a bounded
look-ahead; the rest is read chunk by chunk as workers free up.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from payoff.worker import ListTail, until_deadline

LOOKAHEAD_ITEMS = 1024
"""Items read ahead of a stream for planning (fewer when items are large)."""
LOOKAHEAD_BYTES = 32 * 1024 * 1024
SLICED_AS_GIVEN = (list, tuple, range)
"""Inputs whose slices are cheap, list-like and picklable. Another Sequence may refuse slices (a deque, a
reader taking integer indices only) or slice into something a worker process cannot receive (a
memoryview), so it is read like any iterable."""


def _read_all_by(items: Iterator[Any], deadline: float) -> list[Any]:
    """A ``map``'s whole input, read under its timeout: an iterator yielding slowly raises on time."""
    got: list[Any] = []
    for item in items:
        got.append(item)
        if time.monotonic() >= deadline:
            raise TimeoutError("payoff: the call did not finish within its timeout: its input was still being "
                               f"read after {len(got):,} items (an iterator that yields slowly counts)")
    return got


class Source:
    """Hands out consecutive slices of the input, reading an iterator lazily."""

    def __init__(self, items: Iterable[Any], lazy: bool, deadline: float | None = None) -> None:
        """``deadline`` (``time.monotonic()``), a call's timeout: no item is read after it."""
        self._next = 0
        self._deadline = deadline
        self._dropped = False
        self._iter: Iterator[Any] | None = None
        if isinstance(items, SLICED_AS_GIVEN):
            self.head: Sequence[Any] = items
            self.exhausted = True
        elif not lazy:
            self.head = list(items) if deadline is None else _read_all_by(iter(items), deadline)
            self.exhausted = True
        else:
            self._iter = iter(items)
            self.head = []
            self.exhausted = False
        self._error: Exception | None = None
        """What the input raised while it was read: raised once the results before it are out, as the
        builtin ``map`` does, so they are not lost."""

    def read_ahead(self, item_bytes: int) -> None:
        """Fill the look-ahead of a stream: up to LOOKAHEAD_ITEMS, or LOOKAHEAD_BYTES of ``item_bytes`` items."""
        if self.exhausted or self._iter is None:
            return
        want = max(2, min(LOOKAHEAD_ITEMS, LOOKAHEAD_BYTES // max(1, item_bytes)))
        assert isinstance(self.head, list)
        self.head.extend(self._read(want - len(self.head)))

    def first(self) -> Any:
        """The first item, read from a stream if needed; raises IndexError when there is none."""
        if not self.head and self._iter is not None and not self.exhausted:
            assert isinstance(self.head, list)
            self.head.extend(self._read(1))
        return self.head[0]  # IndexError when there is none; an input error waits for raise_error()

    @property
    def known_length(self) -> int | None:
        """The number of items, once the whole input is known to fit the look-ahead (or was a sequence)."""
        return len(self.head) if self.exhausted and not self._dropped else None

    def skip(self, n: int) -> None:
        """Items the planner's probe already ran."""
        self._next = n

    def take(self, size: int) -> tuple[int, Sequence[Any]] | None:
        """The next ``size`` items and the position of the first, or None at the end."""
        lo = self._next
        if lo < len(self.head):
            hi = min(len(self.head), lo + size)
            part: Sequence[Any] = self.head[lo:hi] if lo or hi < len(self.head) else self.head
            if hi == len(self.head) and not self.exhausted:
                part = list(part) + self._read(size - (hi - lo))
                self._drop_head()
        elif self._iter is not None and not self.exhausted:
            part = self._read(size)
        else:
            part = []
        if not part:
            return None
        self._next = lo + len(part)
        return lo, part

    def rest(self) -> tuple[int, Sequence[Any]] | None:
        """Every item not yet taken of a known input, for a run in the caller: a list's without a copy."""
        lo, n = self._next, len(self.head)
        if lo >= n or not self.exhausted or self._dropped:
            return self.take(max(1, n - lo))
        self._next = n
        if lo == 0:
            return 0, self.head
        return lo, ListTail(self.head, lo) if isinstance(self.head, list) else self.head[lo:]

    def _read(self, n: int) -> list[Any]:
        """Up to ``n`` items; an input that raises ends there, and its error waits for the work to get there."""
        assert self._iter is not None
        got: list[Any] = []
        try:
            if self._deadline is None:
                got.extend(itertools.islice(self._iter, n))
            else:  # a slow input stops at the deadline; the call then raises TimeoutError at its next check
                got.extend(itertools.islice(until_deadline(self._iter, time.monotonic, self._deadline), n))
                if len(got) < n and time.monotonic() >= self._deadline:
                    return got
        except Exception as exc:
            self._error = exc
        if len(got) < n:
            self.exhausted = True
        return got

    def raise_error(self) -> None:
        """At the end of the work: what the input raised while it was read, if anything."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _drop_head(self) -> None:
        """The look-ahead is handed out: positions continue, the memory goes."""
        self.head = []
        self._dropped = True

    @property
    def taken(self) -> int:
        return self._next
