"""Guided chunk sizes: large while there is plenty of work, smaller as it runs out.

Equal chunks cut from the cost of the first items leave one worker finishing
alone when the dear items sit together at the end (sorted by size, say). As in
OpenMP's ``guided`` schedule, each chunk here takes a share of what is left,
so the last chunks are small and the workers finish together; a floor keeps
every chunk worth its dispatch, and the floor follows the per-item time the
finished chunks measured, so a dear tail is split finer than a cheap head.
The calibrated-explanations adapter plans its tasks with the same function.

A chunk is cut before its own items are measured, so on a size-sorted input
the chunks that reach a dear tail were cut for cheap items, and the workers
that took them finish long after the others. Each chunk therefore gets a
soft time budget, a few times what it was planned to take: past it, the
worker hands back the items it has not started and they are cut again from
what they now measure (work stealing, from the queue's side).

A budget is only as good as the cost it was planned from: items sorted
largest first (as for longest-processing-time scheduling) put the dear ones
in the first chunks, cut at full size from an average that hides them. So
the chunks of a call start at the floor (one item while the cost is
unmeasured) and double up to the guided size, as joblib's batches grow from
one item: a dear head is spread over the first small chunks, and uniform
items pay a few more dispatches, each worth the floor's work. Items a chunk
hands back start small again.

An ``imap`` hands results out as they come, so its chunks also have a ceiling
in work (``max_seconds``): with slow items a chunk sized for throughput would
hold the first result back for seconds, and an ``imap`` its consumer left
would keep its workers busy as long. Until a chunk of such a schedule has come
back, chunks hold one item each. A stream of unknown length starts below the
ceiling, each worker's first chunk holding 1 / (SHARE_DIVISOR x workers) of it,
and doubles every wave up to it: a short stream is shared by the workers, a
long one runs at the ceiling's throughput.
"""

from __future__ import annotations

import math

SHARE_DIVISOR = 2
"""Each chunk takes at most 1 / (this x workers) of the items still left."""
SMOOTHING = 0.5
BUDGET_FACTOR = 3.0
"""A chunk may run this many times its planned time before it hands back its unstarted items."""
MIN_BUDGET_SECONDS = 0.01
"""Never less: each hand-back costs a dispatch (~0.1-1 ms), so a budget this long keeps the cost near 5%."""
IMAP_CHUNK_SECONDS = 0.1
"""An ``imap`` chunk holds at most this much measured work (at least one item): its first results come after
about this long however slow the items, and an abandoned ``imap`` leaves at most this much per chunk running.
A dispatch costs ~0.1-1 ms, so the ceiling costs at most about 1% where it applies."""


POOL_CHUNK_SECONDS = 0.25
"""A chunk holds at most about this much measured work: a call that joins the pool waits behind the chunks
already queued (up to ``2 x workers + 1`` a call), and guided chunks of a long call held 0.7 s each. At a
dispatch of ~0.1-1 ms a chunk, the ceiling costs under 0.5%."""
SHARED_CHUNK_SECONDS = 0.05
"""While another call maps on the same pool, a chunk holds at most about this much measured work: the pool takes
chunks first come, first served, and a small call waited behind a large one's queued chunks of 0.7 s each (3.6 s
for a request 0.09 s alone; library trial). A dispatch costs ~0.1-1 ms, 1-2% of this."""

CHUNKS_PER_WORKER = 4
"""A balanced schedule gives each worker about this many chunks: enough to even out a slow one, few enough
to keep dispatch cheap."""
EVEN_FLOORS_PER_WORKER = 4
"""A call of at most this many floors of work per worker is cut into equal chunks up front."""


def items_within_bytes(item_bytes: int | None, limit: int) -> int | None:
    """How many items of ``item_bytes`` a chunk may hold within ``limit`` bytes (at least one); None when an
    item's size is not known.

    An ``imap`` holds the items of the chunks it runs ahead of its consumer (and a process pool's chunk is one
    pickle): 0.1 s of a cheap function's work over 4 MB arrays was 536 items read ahead, 2.1 GB (memory
    trial). Bytes bound them as seconds do."""
    if not item_bytes or item_bytes <= 0:
        return None
    return max(1, limit // item_bytes)


def guided_size(remaining: int, workers: int, floor: int, cap: int) -> int:
    """The next chunk for ``remaining`` items: a share of them, between ``floor`` and ``cap``.

    The last chunk may be a runt below the floor: mid-call, the workers are
    mid-chunk at different points, and a small last chunk is what lets them end
    together.
    """
    share = math.ceil(remaining / (SHARE_DIVISOR * max(1, workers)))
    return max(1, min(remaining, cap, max(floor, share)))


def even_chunks(n_items: int, workers: int, floor: int, cap: int | None = None) -> int | None:
    """How many equal chunks a call only a few floors long is cut into; None for a longer call.

    Cut at the floor, 100 items on 2 workers with a 41-item floor ran as 41 + 41
    + 18, the 18 alone after the others: 59 items' time for 50 items of work.
    At a call's start every worker is free, so equal chunks, as many as the
    floor allows and a multiple of the workers, end together (mid-call a runt
    is kept: see ``guided_size``). A call of fewer
    floors than workers gets one equal share per worker (below the floor: the
    planner chose the workers for it).
    """
    workers, floor = max(1, workers), max(1, floor)
    if n_items > EVEN_FLOORS_PER_WORKER * workers * floor:
        return None
    chunks = n_items // floor
    chunks = min(n_items, max(workers, chunks - chunks % workers))
    if cap is not None and math.ceil(n_items / max(1, chunks)) > cap:
        return None
    return max(1, chunks)


def guided_sizes(n_items: int, workers: int, floor: int, cap: int | None = None, even_start: bool = True
                 ) -> list[int]:
    """Every chunk of a call planned up front, in order (a static guided schedule).

    ``even_start=False``: the floor only limits how many chunks there are (it is
    no measured cost), so a short call is still cut large first, small last.
    """
    even = even_chunks(n_items, workers, floor, cap) if even_start else None
    if even is not None:
        return [n_items // even + (k < n_items % even) for k in range(even)]
    sizes: list[int] = []
    left = n_items
    top = n_items if cap is None else cap
    while left > 0:
        size = guided_size(left, workers, floor, top)
        sizes.append(size)
        left -= size
    return sizes


class GuidedChunks:
    """Hands out chunk sizes for one call as its items are taken, learning from the chunks that finished."""

    def __init__(self, size: int, floor: int, workers: int, seconds_per_item: float | None,
                 floor_seconds: float = 0.0, max_seconds: float | None = None, *, check_each: bool = False,
                 budget_item: float | None = None, max_items: int | None = None, unsized: bool = False) -> None:
        """``floor`` in items for a measured cost; for an unmeasured one (None), ``floor_seconds`` of work,
        turned into items once the first chunks are back. ``max_seconds``: the most work a chunk may hold
        (an ``imap``'s; None: no ceiling), one item while the cost is unmeasured. ``check_each`` and
        ``budget_item``: the plan's (``Plan.check_each``). ``max_items``: the most items a chunk may hold
        whatever their cost (their bytes: :func:`items_within_bytes`). ``unsized``: a stream's results whose
        bytes no one measured yet: chunks hold one item until a chunk's have come back (``observe_bytes``)."""
        self.size, self.floor, self.workers = size, max(1, floor), workers
        self.max_items = max_items
        self.unsized = unsized
        self.max_seconds = max_seconds
        self.check_each = check_each
        """Chunks check their budget before each item, not only between timing blocks."""
        self.budget_item = budget_item
        """Seconds per item a budget is cut for, instead of the measured mean: a typical item's, for a function
        whose few dear items the mean spreads over all (a budget of 3 x 1,000 x 100 us held 10 naps whole)."""
        measured = seconds_per_item is not None and seconds_per_item > 0
        self.fixed = self.floor >= size or not (measured or floor_seconds > 0)
        self._per_item = seconds_per_item if measured and seconds_per_item is not None else 0.0
        self._floor_seconds = self.floor * self._per_item if measured else floor_seconds
        self._stream_chunks = 0
        self._ramp = 0
        """Chunks cut since the call started or items were handed back: the next is at most floor x 2^this."""
        self._even: int | None = None
        """Equal chunks still to cut, for a call only a few floors long (``even_chunks``)."""
        self._restarted = False

    def next(self, remaining: int | None) -> int:
        """The size of the next chunk; ``remaining`` is None for a stream of unknown length."""
        size = self._next_size(remaining)
        if self.unsized:
            return 1
        return size if self.max_items is None else max(1, min(size, self.max_items))

    def _next_size(self, remaining: int | None) -> int:
        size = self.size if self.fixed or remaining is None else self._guided(remaining)
        if self.max_seconds is None:
            return size
        if remaining is not None or self._per_item <= 0:
            return self._capped(size, self.max_seconds)
        workers = max(1, self.workers)
        share = min(1.0, 2.0 ** (self._stream_chunks // workers) / (SHARE_DIVISOR * workers))
        if share < 1.0:  # the waves stop counting once chunks hold the whole ceiling: a stream may be endless
            self._stream_chunks += 1
        return self._capped(size, self.max_seconds * share)

    def _guided(self, remaining: int) -> int:
        floor = self._current_floor()
        if self._ramp == 0 and not self._restarted:
            self._even = even_chunks(remaining, self.workers, floor, self.size)
        self._ramp += 1
        if self._even:
            self._even -= 1
            return max(1, math.ceil(remaining / (self._even + 1)))
        return min(guided_size(remaining, self.workers, floor, self.size), floor << min(self._ramp - 1, 30))

    def within(self, size: int, seconds: float) -> int:
        """``size`` cut to about ``seconds`` of measured work (at least one item); as it is for fixed sizes."""
        return size if self.fixed else self._capped(size, seconds)

    def _capped(self, size: int, max_seconds: float) -> int:
        if self._per_item <= 0:
            return 1
        return max(1, min(size, int(max_seconds / self._per_item)))

    def restart(self) -> None:
        """Items a chunk handed back are those its cost did not foresee: cut them small again."""
        self._ramp, self._even, self._restarted = 0, None, True

    def budget_ns(self, size: int) -> int | None:
        """How long a chunk of ``size`` may run; None when sizes are fixed (a user's chunksize)."""
        per_item = self.budget_item or self._per_item
        if self.fixed or per_item <= 0:
            return None
        return int(max(MIN_BUDGET_SECONDS, BUDGET_FACTOR * size * per_item) * 1e9)

    def observe_bytes(self, n_items: int, nbytes: int, limit: int) -> None:
        """Chunks hold at most ``limit`` bytes of items and results, as measured on chunks that came back: a
        stream's first chunks hold one item each, and results the plan could not size (small items, large
        results: 2 MiB arrays made chunks of 250 results, 1.5 GiB at the peak, memory trial 44) are read there."""
        self.unsized = False
        if n_items > 0 and nbytes > 0:
            most = items_within_bytes(math.ceil(nbytes / n_items), limit)
            if most is not None:
                self.max_items = most if self.max_items is None else min(self.max_items, most)

    def observe(self, n_items: int, busy_seconds: float) -> None:
        if n_items > 0 and busy_seconds > 0:
            measured = busy_seconds / n_items
            self._per_item = measured if self._per_item <= 0 else \
                (1 - SMOOTHING) * self._per_item + SMOOTHING * measured

    def _current_floor(self) -> int:
        if self._per_item <= 0:
            return self.floor
        return max(1, min(self.size, math.ceil(self._floor_seconds / self._per_item)))
