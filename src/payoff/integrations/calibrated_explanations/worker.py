"""What runs in the worker: CE's task function with the explainer put back, results pickled lean."""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from payoff import _forks
from payoff.integrations.calibrated_explanations import gcpause
from payoff.integrations.calibrated_explanations.codec import CompactChunk, decode_chunk, encode_chunk, owners
from payoff.integrations.calibrated_explanations.tasks import Task

RESULT_PROTOCOL = 4
"""Protocol 4, not 5: with 5, numpy rebuilds every small array through a Python-level ``_frombuffer``
(~2.5 us against ~1.1 us per array of 2 floats); the arrays are too small to gain from out-of-band buffers."""


@dataclass(frozen=True)
class _Encoded:
    """Chunk results pickled in the worker with the garbage collector paused."""

    payload: bytes


def _lighten(result: Any) -> Any:
    """Drop the explainer deep copies CE embeds in a chunk's result: CE's merge re-parents and discards them.

    One is the chunk's own; CE's alternative explanations also point back to a second
    collection with a copy of its own (MBs per chunk with a forest of 100 trees).
    """
    if isinstance(result, tuple) and len(result) == 2:
        chunk = result[1]
        if hasattr(chunk, "explanations") and hasattr(chunk, "calibrated_explainer"):
            chunk.calibrated_explainer = None
            if type(chunk.explanations) is list:
                for owner in owners(chunk.explanations):
                    if hasattr(owner, "calibrated_explainer"):
                        owner.calibrated_explainer = None
    return result


def _compact(result: Any) -> Any:
    """The chunk's explanations as columns (see ``codec``) when they fit, else the result as it is."""
    compact = encode_chunk(result)
    return result if compact is None else compact


def run_ce_tasks(fn: Callable[[Task], Any], explainer: Any, parent_pid: int, tasks: list[Task]) -> Any:
    """Worker entry point: CE's task function over ``tasks`` with the explainer put back into each state.

    ``functools.partial(run_ce_tasks, fn, explainer, pid)`` is what payoff ships: the
    explainer travels once per worker, the tasks carry only their slices.
    """
    if os.getpid() == parent_pid:  # results as lean as a worker's; the user's explainer is left as it is
        timed = getattr(_here, "task_seconds", None)
        if timed is None:
            return [_lighten(fn(_with(task, explainer))) for task in tasks]
        return [_timed(fn, task, explainer, timed) for task in tasks]
    with gcpause.paused():  # in a worker only: the caller's process is the user's, and so is its collector
        with _snapshot_shared(explainer):
            results = [_compact(_lighten(fn(_with(task, explainer)))) for task in tasks]
        return _Encoded(pickle.dumps(results, protocol=RESULT_PROTOCOL))


_here = threading.local()


@contextlib.contextmanager
def timing_tasks_here() -> Iterator[list[tuple[int, float]]]:
    """(instances, seconds) of each task this thread runs meanwhile: tasks alone in the caller, each timed
    apart (a pool's threads, in this process too, are not this thread)."""
    timed: list[tuple[int, float]] = []
    _here.task_seconds = timed
    try:
        yield timed
    finally:
        del _here.task_seconds


def _timed(fn: Callable[[Task], Any], task: Task, explainer: Any, timed: list[tuple[int, float]]) -> Any:
    start = time.perf_counter()
    result = _lighten(fn(_with(task, explainer)))
    timed.append((task[1] - task[0], time.perf_counter() - start))
    return result


@contextlib.contextmanager
def _snapshot_shared(explainer: Any) -> Iterator[None]:
    """While tasks run, a deep copy of their explainer is the explainer itself.

    CE snapshots the explainer into every chunk's results (a deep copy: about half
    of a task's fixed cost, 29 of 52 ms with a forest of 100 trees); ``_lighten``
    drops that snapshot and CE's merge in the caller takes its own. In a worker the
    explainer is its own unpickled copy, so sharing it changes nothing the caller
    sees. Not in the caller: there it is the user's explainer, which other threads
    may pickle or copy meanwhile (a lambda ``__deepcopy__`` refuses pickle and makes
    ``copy.deepcopy`` return the live object). ``copy.deepcopy`` reads ``__deepcopy__``
    from the instance first; it is set while any thread runs tasks of the explainer
    (counted: one thread's end must not take it from another's).
    """
    shared = explainer is not None and _share(explainer)
    try:
        yield
    finally:
        if shared:
            _unshare(explainer)


_sharing_lock = _forks.Lock()
_sharing: dict[int, int] = {}
"""Threads running tasks of each explainer shared (by ``id``), while its ``__deepcopy__`` is set."""
_forks.in_child(_sharing.clear)  # a forked worker's explainers are its own; the parent's threads are not there


def _share(explainer: Any) -> bool:
    """Set the explainer's ``__deepcopy__`` (or count one more thread under it); False where it cannot be: an
    explainer with a ``__deepcopy__`` of its own, or refusing attributes, is copied by CE as it would be."""
    with _sharing_lock:
        held = _sharing.get(id(explainer), 0)
        if not held:
            if "__deepcopy__" in getattr(explainer, "__dict__", {"__deepcopy__": None}):
                return False
            try:
                explainer.__deepcopy__ = lambda memo: explainer
            except (AttributeError, TypeError):
                return False
        _sharing[id(explainer)] = held + 1
        return True


def _unshare(explainer: Any) -> None:
    with _sharing_lock:
        held = _sharing.pop(id(explainer)) - 1
        if held:
            _sharing[id(explainer)] = held
        else:
            with contextlib.suppress(AttributeError):  # taken by its owner meanwhile
                del explainer.__deepcopy__


def _with(task: Task, explainer: Any) -> Task:
    start, stop, state = task
    return (start, stop, state if explainer is None else {**state, "explainer": explainer})


def decode_results(block: Any) -> list[Any]:
    """A worker's block as CE's ``(start, CalibratedExplanations)`` pairs.

    No collector pause of its own: the executor pauses it across the whole explain
    (unless ``pause_gc=False``, which leaves the caller's collector alone).
    """
    if not isinstance(block, _Encoded):
        return list(block)
    results: list[Any] = pickle.loads(block.payload)
    return [decode_chunk(r) if isinstance(r, CompactChunk) else r for r in results]
