"""How much slower a function's items run side by side on a pool of this machine than alone in a loop.

A pool's serial estimate is the sum of its items' own times: what a loop would take if an item cost the same
beside the others as alone. Items that share what the cores do not each have (memory bandwidth, a shared
cache, a CPU's boost clock, a hyper-thread's core) run slower side by side, and their sum then overstates a
loop: 500 sums of 1 MiB arrays on 2 threads read 1.3x for a call 0.85x the loop's speed (matrix row W5). Items
can run faster there too (the same arrays unpickled afresh in a worker process, in its cache, took 0.8 of their
time alone), and their sum then understates a loop. No
reading inside the pool's call can tell; timing the items alone can. A whole serial call of the function
(auto runs one on purpose where none ran: ``auto_serial_check``) against its pool's call of a comparable
size, one right after the other, gives the factor the pool's later records divide their items' time by.

A user's data may move from call to call: a check call whose items were half as dear as the pool call's before
it read a factor of 2.15, and held a function serial that gained 1.35-1.5x on threads (user trial). So a factor
is read from a sandwich only, three readings in a row (pool, alone, pool; or alone, pool, alone): its two pairs
must agree, and their geometric mean cancels a drift that goes one way at one pace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

POOLS = frozenset({"threads", "processes", "joblib"})
"""The pools of this machine: a cluster's workers are other machines', never held to a loop here."""
ALONE = "alone"
"""``SideBySide.before``'s key for the serial calls' readings (no pool is named so)."""
MIDDLE_REACH = 3
"""A sandwich's middle reading is held to the one of its kind before it only if that one is at most this many of
the function's readings older: an old one says little of the items now, and would cost a real factor its check."""
CHECK_BELOW = 1.6
"""Auto times the items alone only where a pool measured a gain under this: there a slowdown side by side can
turn the gain into a loss, and the serial call costs least (under 0.6 of one call, once)."""
CHECK_MAX_LOSS_SECONDS = 5.0
"""Nor where the serial call would cost more than this over the pool's (its estimate at the measured gain)."""
CHECK_TRIES = 2
"""Serial checks a pool gets: one that met other programs' load (or ran among other calls) reads nothing, so one
more is tried; past that, the pool's own timing stands."""
CHECK_TRIES_IN_ALL = 4
"""Serial checks per pool for the life of a function, whatever its cost did: a cost moving 10x every call
started the count afresh at each, and every other call ran serially as a check (trial 48: 1.67x the time of a
warm ProcessPoolExecutor over 10 calls)."""
SHOWS = 1.03
"""A factor between 1/SHOWS and SHOWS is two calls' noise: the pool's timing stands (1.0 is kept)."""
MOST = 3.0
"""The largest factor believed: two calls further apart had other items (other data, other arguments), not the
same items slowed; a cost that moved by ``COST_SHIFT`` (3x) is a new cost too."""
FASTEST = 1.5
"""The most times faster items are believed to run side by side than alone: data fresh in a worker's cache made
them 1.25x faster; a loop dearer than this had other items, or waited for what a pool's items did not (the GIL
that other threads of the program held, which the loop's timing cannot tell from its items' work)."""
ON_CPU = 0.9
"""A serial call whose items' CPU time was at least this share of their time never waited (for the GIL, a lock,
the disk): a loop dearer than the pool's items that ran on a CPU all its time was dearer there. The caller's main
thread allocates from glibc's main arena, which gives large temporaries back to the system and faults them in
afresh item after item; a pool's threads keep theirs. 60 numpy items of 400k-element temporaries took 0.20 s as a
loop in the main thread (92,000 page faults) and 0.10 s in any other one (2,300): threads ran 3.5x the loop and
recorded 1.5x, and under load 1.0x, which held the function serial (trial 52 F2)."""
FASTEST_ON_CPU = MOST
"""The most times faster items are believed to run side by side than a loop of them that never waited
(``ON_CPU``): as far as they are believed slower."""
ADJACENT = 1
"""Readings compared are at most this many of the function's readings apart (1: one right after the other):
its data may drift from call to call, so a loop's time from long ago says little of the pool's call now."""
AGREE = 1.3
"""The two pairs of a sandwich agree within this ratio, or the items moved between the calls: no factor."""
CHECK_SHARE = 0.1
"""A pool's gain of CHECK_BELOW or more is checked too once the serial call would cost at most this share of the
time the function's calls on that pool took so far: an overstated gain (1.74-1.84x recorded for 1.41-1.60x, user
trial) is never below the line it is checked by."""
SMOOTHING = 0.5
"""A new comparison's weight once a factor is known; the earlier ones keep the rest."""


@dataclass
class Reading:
    seconds_per_item: float
    n_items: int
    seq: int
    """The function's reading count when it was taken (``SideBySide.seq``)."""
    on_cpu: bool = False
    """A serial call's items ran on a CPU all their time (``ON_CPU``)."""


@dataclass
class SideBySide:
    """One function's readings alone and on each local pool, and the factors drawn from them."""

    alone: Reading | None = None
    """The last whole serial call in the caller: what a loop's items cost."""
    on_pool: dict[str, Reading] = field(default_factory=dict)
    """Per local pool: what its last call read an item at, before any factor was taken off."""
    factors: dict[str, float] = field(default_factory=dict)
    """Per pool: how many times longer its items took than alone (1.0: the two agreed; below: shorter)."""
    checked: dict[str, int] = field(default_factory=dict)
    """Per pool: serial checks planned for it (``CHECK_TRIES``), until the items' cost shifts."""
    seq: int = 0
    pairs: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Per pool: the last pair's ratio (pool over alone) and the count of its later reading."""
    pool_seconds: dict[str, float] = field(default_factory=dict)
    """Per pool: wall seconds of the function's calls on it so far (``CHECK_SHARE``)."""
    spent: dict[str, int] = field(default_factory=dict)
    """Per pool: serial checks planned for it at any cost (``CHECK_TRIES_IN_ALL``); a new cost keeps the count."""
    before: dict[str, Reading] = field(default_factory=dict)
    """The reading each kind had before its last one: per pool, and ``ALONE`` for the serial calls."""

    def copy(self) -> SideBySide:
        return SideBySide(self.alone, dict(self.on_pool), dict(self.factors), dict(self.checked), self.seq,
                          dict(self.pairs), dict(self.pool_seconds), dict(self.spent), dict(self.before))

    def afresh(self) -> SideBySide:
        """Readings for items of a new cost: nothing of these carries over but the checks spent."""
        return SideBySide(spent=dict(self.spent))

    def note_far(self) -> None:
        """A check that read its items far off the pool's cost (``planning._check_far_dearer``): no reading kept,
        but one in the count, so the pool's next call, not this one's reading, makes the next check due."""
        self.seq += 1

    def note_check(self, strategy: str) -> None:
        self.checked[strategy] = self.checked.get(strategy, 0) + 1
        self.spent[strategy] = self.spent.get(strategy, 0) + 1

    def factor(self, strategy: str) -> float:
        return self.factors.get(strategy, 1.0)

    def note_alone(self, seconds_per_item: float, n_items: int, reach: int,
                   on_cpu: bool = False) -> dict[str, float]:
        """A serial call's reading; returns, per pool whose factor moved, new factor over old."""
        self.seq += 1
        if self.alone is not None:
            self.before[ALONE] = self.alone
        self.alone = Reading(seconds_per_item, n_items, self.seq, on_cpu)
        moved = {s: self._compare(s, reach) for s in self.on_pool}
        return {s: r for s, r in moved.items() if r is not None}

    def note_on_pool(self, strategy: str, seconds_per_item: float, n_items: int, reach: int,
                     wall_seconds: float = 0.0) -> float | None:
        """A pool call's reading (its factor taken off again); new factor over old if it moved, else None."""
        self.pool_seconds[strategy] = self.pool_seconds.get(strategy, 0.0) + wall_seconds
        self.seq += 1
        if strategy in self.on_pool:
            self.before[strategy] = self.on_pool[strategy]
        self.on_pool[strategy] = Reading(seconds_per_item, n_items, self.seq)
        return self._compare(strategy, reach)

    def check_due(self, strategy: str, gain: float | None, remaining: int, reach: int) -> bool:
        """Whether a call of ``remaining`` items is the one to time alone for ``strategy`` (see CHECK_BELOW)."""
        pool = self.on_pool.get(strategy)
        tried = self.checked.get(strategy, 0) >= CHECK_TRIES or self.spent.get(strategy, 0) >= CHECK_TRIES_IN_ALL
        if gain is None or gain < 1.0 or pool is None or tried or strategy in self.factors \
                or pool.seq != self.seq or not comparable(pool.n_items, remaining, reach):
            return False
        serial = pool.seconds_per_item * remaining
        loss = serial - serial / gain
        return loss <= CHECK_MAX_LOSS_SECONDS and \
            (gain < CHECK_BELOW or loss <= CHECK_SHARE * self.pool_seconds.get(strategy, 0.0))

    def _compare(self, strategy: str, reach: int) -> float | None:
        pool, alone = self.on_pool[strategy], self.alone
        if alone is None or not self._adjacent(pool, alone) or not comparable(pool.n_items, alone.n_items, reach) \
                or alone.seconds_per_item <= 0:
            return None
        ratio = pool.seconds_per_item / alone.seconds_per_item
        last = self.pairs.get(strategy)
        self.pairs[strategy] = (ratio, self.seq)
        if last is None or last[1] != min(pool.seq, alone.seq) or max(ratio, last[0]) > AGREE * min(ratio, last[0]):
            return None  # no sandwich yet, or the items moved between its calls
        if self._middle_apart(strategy, pool, alone, reach):
            return None
        ratio = math.sqrt(ratio * last[0])
        if not 1 / (FASTEST_ON_CPU if alone.on_cpu else FASTEST) <= ratio <= MOST:
            return None
        old = self.factors.get(strategy)
        new = ratio if old is None else SMOOTHING * ratio + (1 - SMOOTHING) * old
        new = 1.0 if 1 / SHOWS < new < SHOWS else new
        self.factors[strategy] = new
        return new / (old or 1.0) if new != (old or 1.0) else None

    def _middle_apart(self, strategy: str, pool: Reading, alone: Reading, reach: int) -> bool:
        """Whether a sandwich's middle reading is ``AGREE`` apart from the one of its kind before it. Both pairs
        hold the middle one, so their agreement says only that the outer two agree: one pool call descheduled to
        252.8 us an item, between loops of 104.7 and 97.4 (its other calls read 84-114), made a factor of 1.75,
        which lowered the pool's verdict on serial calls and divided its later records (hunt 72, F9)."""
        middle = pool if pool.seq < alone.seq else alone
        earlier = self.before.get(strategy if middle is pool else ALONE)
        if earlier is None or earlier.seconds_per_item <= 0 or middle.seq - earlier.seq > MIDDLE_REACH \
                or not comparable(earlier.n_items, middle.n_items, reach):
            return False
        apart = middle.seconds_per_item / earlier.seconds_per_item
        return not 1 / AGREE <= apart <= AGREE

    @staticmethod
    def _adjacent(a: Reading, b: Reading) -> bool:
        return abs(a.seq - b.seq) <= ADJACENT


def comparable(n_items: int, other: int, reach: int) -> bool:
    """Whether two calls' sizes are within ``reach`` times each other (a verdict's reach, ``VERDICT_REACH``)."""
    return max(n_items, other) <= reach * max(1, min(n_items, other))
