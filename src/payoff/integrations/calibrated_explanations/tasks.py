"""CE's instance tasks ``(start, stop, state)``: recognised, stripped of the shared explainer, regrouped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from payoff._imported import imported

Task = tuple[int, int, dict[str, Any]]
_SHARED_KEYS = ("low_high_percentiles", "features_to_ignore_array", "config_state")
_SLICED_KEYS = ("subset", "threshold_slice", "bins_slice", "feature_filter_per_instance_ignore")


def as_tasks(items: Sequence[Any]) -> list[Task] | None:
    """CE's instance tasks, or ``None`` when ``items`` are something else."""
    if not items:
        return None
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], int)
                and isinstance(item[1], int) and isinstance(item[2], dict)):
            return None
    return list(items)


def shared_explainer(tasks: Sequence[Task]) -> Any:
    """The explainer every task carries, when it is one object (it is, in CE 1.0.2)."""
    first = tasks[0][2].get("explainer")
    if first is None or any(t[2].get("explainer") is not first for t in tasks):
        return None
    return first


def explain_kind(explainer: Any, tasks: Sequence[Task]) -> tuple[str, ...]:
    """What sets an instance's cost apart between explains of one explainer, as the tasks show it.

    The discretizer CE sets for the kind of explanation (factual: a binary one, alternatives: one of
    every bin: ~1.5-3x the cost), and a threshold (probabilistic regression: a scalar, or one per
    instance), Mondrian bins and ignored features, which change what each instance computes.
    """
    state = tasks[0][2]
    explainer = state.get("explainer") if explainer is None else explainer
    threshold = state.get("threshold_slice")
    shape = "none" if threshold is None else "scalar" if np.ndim(threshold) == 0 and not isinstance(
        threshold, (tuple, list)) else "interval" if isinstance(threshold, tuple) else "per-instance"
    ignored = state.get("features_to_ignore_array")
    return (type(getattr(explainer, "discretizer", None)).__name__, shape,
            "bins" if state.get("bins_slice") is not None else "",
            str(len(ignored)) if ignored is not None and hasattr(ignored, "__len__") else "")


def _concat(parts: list[Any]) -> Any:
    """Join per-task slices of one field, or raise ``TypeError`` when they cannot be joined exactly."""
    head = parts[0]
    if all(p is head for p in parts):
        return head  # shared (None, a scalar threshold, an interval tuple)
    if any(p is None for p in parts):
        raise TypeError("some slices are None")
    if all(type(p) is np.ndarray for p in parts):
        return np.concatenate(parts)
    if all(type(p) is list for p in parts):
        return [x for p in parts for x in p]
    if all(type(p) is tuple for p in parts):
        return tuple(x for p in parts for x in p)
    pandas = imported("pandas")
    if pandas is not None and isinstance(head, pandas.Series) and all(type(p) is type(head) for p in parts):
        return pandas.concat(parts)
    raise TypeError(f"cannot join slices of type {type(head).__name__}")


def merge_tasks(group: list[Task]) -> Task | None:
    """One task covering consecutive ``group`` (as CE builds for a bigger chunk), or ``None`` if unsure."""
    if len(group) == 1:
        return group[0]
    states = [t[2] for t in group]
    keys = set(states[0])
    if any(set(s) != keys for s in states) or not keys <= {*_SHARED_KEYS, *_SLICED_KEYS, "explainer"}:
        return None
    if any(group[i][1] != group[i + 1][0] for i in range(len(group) - 1)):
        return None
    merged: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in states]
        if key in _SHARED_KEYS or key == "explainer":
            if any(v is not values[0] for v in values):
                return None
            merged[key] = values[0]
            continue
        try:
            merged[key] = _concat(values)
        except TypeError:
            return None
    return group[0][0], group[-1][1], merged


def group_tasks(tasks: list[Task], sizes: list[int]) -> list[list[Task]]:
    """Consecutive tasks, about ``sizes[k]`` instances in group ``k`` (the last group takes the rest)."""
    out: list[list[Task]] = []
    current: list[Task] = []
    size = 0
    for task in tasks:
        current.append(task)
        size += task[1] - task[0]
        if len(out) < len(sizes) - 1 and size >= sizes[len(out)]:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out
