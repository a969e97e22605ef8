"""Items whose results pickle could not send back from a worker process, to be run again in the caller.

A loop returns a lock, an open file or a generator; a worker process cannot send one back. Auto chose the
pool, so it owes the loop's results: those items run again in the caller when their results' turn comes to be
handed out (input order, so results already back go out first, and no item past an error a loop stops at runs
here). Each of them runs twice; the record counts them and names the lowest (``unpicklable_result_rerun``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

SHOWN = 5
"""A record names this many of the items run again, the lowest, and counts the rest."""

Unsent = tuple[int, str, str]
"""A result left out by its worker: its place in the chunk, its type's name and why pickle refused it."""


class Reruns:
    """What a call keeps to run again here, and what it ran: bookkeeping linear in the items (a call of
    100,000 such items spent seconds re-sorting all of them chunk by chunk, review 65)."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, int], list[Any]] = {}
        self.count = 0
        self._lowest: list[int] = []
        self._what = ""

    def keep(self, index: int, first: int, items: Sequence[Any], unsent: Sequence[Unsent]) -> None:
        """The items of a piece of chunk ``index`` starting at ``first`` whose results did not come back."""
        self._items[(index, first)] = [items[k] for k, _, _ in unsent]

    def take(self, index: int, first: int) -> list[Any]:
        return self._items.pop((index, first))

    def ran(self, first: int, done: Sequence[Unsent]) -> None:
        """Count the items that ran twice, keeping the lowest few and what the lowest returned."""
        self.count += len(done)
        lowest = self._lowest
        for k, kind, why in done:
            at = first + k
            if len(lowest) < SHOWN or at < lowest[-1]:
                bisect.insort(lowest, at)
                del lowest[SHOWN:]
                if at == lowest[0]:
                    self._what = f"item {at}'s: {article(kind)}, {why}"

    def said(self) -> str:
        """The record's words for them ("" when none ran)."""
        n = self.count
        if not n:
            return ""
        shown = ", ".join(map(str, self._lowest)) + (f" and {n - len(self._lowest):,} more"
                                                     if n > len(self._lowest) else "")
        them = "it" if n == 1 else "them"
        return (f"{n:,} item{'s' if n > 1 else ''} ({shown}) returned results pickle cannot send back from a worker "
                f"process ({self._what}); auto ran {them} again in the caller's process, where a result is not "
                f"pickled, so {'it' if n == 1 else 'each of them'} ran twice")


def article(noun: str) -> str:
    """The noun with its indefinite article, by its first letters (a lock, an Unsendable, a UserDict)."""
    head = noun[:2].lower()
    vowel = head[:1] in ("a", "e", "i", "o") or (head[:1] == "u" and head[1:] in ("n", "m", "d", "g", "p"))
    return f"{'an' if vowel else 'a'} {noun}"
