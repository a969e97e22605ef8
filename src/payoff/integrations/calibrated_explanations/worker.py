"""What runs in the worker: CE's task function with the explainer put back, results pickled lean."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from payoff.integrations.calibrated_explanations.tasks import Task


@dataclass(frozen=True)
class _Encoded:
    """Chunk results pickled in the worker with the garbage collector paused."""

    payload: bytes


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pickling tens of thousands of small objects triggers collections that cost more than the pickling."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lighten(result: Any) -> Any:
    """Drop the explainer deep copy CE embeds in a chunk's result: CE's merge re-parents and discards it."""
    if isinstance(result, tuple) and len(result) == 2:
        chunk = result[1]
        if hasattr(chunk, "explanations") and hasattr(chunk, "calibrated_explainer"):
            chunk.calibrated_explainer = None
    return result


def run_ce_tasks(fn: Callable[[Task], Any], explainer: Any, parent_pid: int, tasks: list[Task]) -> Any:
    """Worker entry point: CE's task function over ``tasks`` with the explainer put back into each state.

    ``functools.partial(run_ce_tasks, fn, explainer, pid)`` is what payoff ships: the
    explainer travels once per worker, the tasks carry only their slices.
    """
    if os.getpid() == parent_pid:
        return [fn(_with(task, explainer)) for task in tasks]
    with _gc_paused():  # in a worker only: the caller's process is the user's, and so is its collector
        results = [fn(_with(task, explainer)) for task in tasks]
        return _Encoded(pickle.dumps([_lighten(r) for r in results], protocol=pickle.HIGHEST_PROTOCOL))


def _with(task: Task, explainer: Any) -> Task:
    start, stop, state = task
    return (start, stop, state if explainer is None else {**state, "explainer": explainer})


def decode_results(block: Any) -> list[Any]:
    if isinstance(block, _Encoded):
        with _gc_paused():
            decoded: list[Any] = pickle.loads(block.payload)
        return decoded
    return list(block)
