"""How many instances each CE task gets: guided sizes, and the fixed cost per task fitted from records."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from payoff.scheduling import guided_sizes

MAX_TASKS_PER_WORKER = 4
"""Without a measured fixed cost, no task is smaller than 1 / (workers x this) of the explain."""
FIXED_COST_CAP = 0.5
"""A fitted fixed cost per task is at most this share of the cheapest task measured (per task it held): the
fixed cost is part of every task's time. On a loaded machine the fit read 0.20-0.25 s a task where CE's
fixed cost is ~0.02 s and a whole task of 16 instances took 0.086 s alone; taken off the busy time once a
task, it recorded 0.80-0.99x for explains measured 1.23-1.59x faster than CE alone."""
FIXED_COST_SHARE = 0.05
"""Each task pays CE's fixed cost (predict calls, an explainer deep copy): a task's own work is at least
1 / this times that cost, so the fixed costs stay within this share of the work."""


def ce_chunk_sizes(
    n_instances: int,
    workers: int,
    *,
    chunk_size: int | None = None,
    seconds_per_instance: float | None = None,
    seconds_per_task: float | None = None,
) -> list[int]:
    """Instances per CE task, in order, for an explain of ``n_instances`` on ``workers``.

    A fixed ``chunk_size`` wins. Otherwise the split is guided (the core's
    :func:`payoff.scheduling.guided_sizes`, the schedule every map uses): each task takes
    ``1 / (2 x workers)`` of the instances still left, so the first tasks are
    large (few fixed costs) and the last ones small (workers finish together
    although CE's per-instance time varies), down to a floor. The floor keeps
    each task's work at least ``1 / FIXED_COST_SHARE`` times its fixed cost once
    both costs are measured, and is ``1 / (workers x MAX_TASKS_PER_WORKER)`` of
    the explain before that, and never above ``1 / (2 x workers)`` of it, so a
    noisy cost fit cannot take away the balancing.
    """
    if n_instances < 1:
        return []
    if chunk_size is not None:
        size = max(1, chunk_size)
        return [min(size, n_instances - lo) for lo in range(0, n_instances, size)]
    if workers <= 1:
        return [n_instances]
    floor = math.ceil(n_instances / (workers * MAX_TASKS_PER_WORKER))
    measured = bool(seconds_per_instance and seconds_per_task is not None)
    if measured:
        floor = math.ceil(seconds_per_task / FIXED_COST_SHARE / seconds_per_instance)  # type: ignore[operator]
    floor = max(1, min(floor, math.ceil(n_instances / (2 * workers))))  # a noisy fit must not cost the balance
    return guided_sizes(n_instances, workers, floor, even_start=measured)


SIZES_APART = 1.25
"""Chunks whose instances a task differ by this factor tell CE's fixed cost a task from its cost an instance."""


class CostFit:
    """Seconds of a CE chunk = tasks x fixed cost + instances x cost per instance, fitted from records.

    Chunks that ran in the caller ran alone, as CE does without an executor: they are also kept
    apart (``alone``), the only measure of what an instance costs without a second busy worker
    beside it (memory and caches shared, or the GIL: CE on threads spent twice the CPU).
    """

    def __init__(self) -> None:
        self.points: deque[tuple[int, int, float]] = deque(maxlen=64)
        self.alone: deque[tuple[int, int, float]] = deque(maxlen=16)

    def copy(self) -> CostFit:
        twin = CostFit()
        twin.points.extend(self.points)
        twin.alone.extend(self.alone)
        return twin

    def observe(self, tasks: int, instances: int, seconds: float, alone: bool = False) -> None:
        if instances > 0 and seconds > 0:
            self.points.append((tasks, instances, seconds))
            if alone:
                self.alone.append((tasks, instances, seconds))

    def alone_seconds(self, instances: int) -> float | None:
        """One task of ``instances`` run alone, fitted from the caller's chunks only, once they came in sizes
        that tell the fixed cost from the cost per instance (None before). The fixed cost fitted from busy
        workers does not do: taken off one first task of 16 instances, it left CE alone at half its time."""
        own = CostFit()
        own.points.extend(self.alone)
        per, fixed = own.estimate(cap=1.0)  # a small task alone is mostly its fixed cost (19.5 of 25 ms, 4 instances)
        if per is None or (fixed is None and not own.sizes_differ()):
            return None
        # sizes that differ but fit no line of costs at least 0 (a small task slowed by other programs' load took
        # longer than a large one): priced in proportion to its instances, not left uncapped (a 3-worker suite)
        return (fixed or 0.0) + per * instances

    def sizes_differ(self) -> bool:
        """Whether the points' instances a task differ enough (``SIZES_APART``) to tell a fixed cost a task."""
        if len(self.points) < 2:
            return False
        ratios = [n / t for t, n, _ in self.points]
        return max(ratios) >= SIZES_APART * min(ratios)

    def estimate(self, cap: float = FIXED_COST_CAP) -> tuple[float | None, float | None]:
        """(seconds per instance, fixed seconds per task); the fixed cost needs chunks of different sizes, and is
        at most ``cap`` of the cheapest chunk's time a task."""
        if not self.points:
            return None, None
        t = np.array([p[0] for p in self.points], dtype=float)
        n = np.array([p[1] for p in self.points], dtype=float)
        s = np.array([p[2] for p in self.points], dtype=float)
        if self.sizes_differ():
            a = np.stack([t, n], axis=1)
            (fixed, per), *_ = np.linalg.lstsq(a, s, rcond=None)
            if per > 0 and fixed >= 0:
                cap = cap * float((s / t).min())
                if fixed > cap:  # an implausible fit: at most the cap, the rest of the time is per instance
                    fixed, per = cap, (s.sum() - cap * t.sum()) / n.sum()
                return float(per), float(fixed)
        return float(s.sum() / n.sum()), None
