"""payoff: a parallel executor that proves whether parallelism pays off."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from payoff import _forks  # noqa: F401  (its fork hooks: a child forked during a lazy import can import again)
from payoff._version import __version__

if TYPE_CHECKING:
    from payoff._default import default_executor, map  # noqa: A004 (payoff.map mirrors builtins.map on purpose)
    from payoff.config import ParallelConfig
    from payoff.errors import RemoteError, StuckThreadsWarning, WorkerCrashedError, WorkerInitError
    from payoff.executor import ParallelExecutor
    from payoff.observers import CallInfo, Observer
    from payoff.reasons import DecisionReason, FallbackReason, Reason
    from payoff.record import ChunkStats, MapRecord
    from payoff.telemetry.server import serve_metrics
    from payoff.telemetry.warnings import ParallelFallbackWarning

_WHERE = {
    "default_executor": "payoff._default", "map": "payoff._default",
    "ParallelConfig": "payoff.config",
    "RemoteError": "payoff.errors", "StuckThreadsWarning": "payoff.errors",
    "WorkerCrashedError": "payoff.errors", "WorkerInitError": "payoff.errors",
    "ParallelExecutor": "payoff.executor",
    "CallInfo": "payoff.observers", "Observer": "payoff.observers",
    "DecisionReason": "payoff.reasons", "FallbackReason": "payoff.reasons", "Reason": "payoff.reasons",
    "ChunkStats": "payoff.record", "MapRecord": "payoff.record",
    "serve_metrics": "payoff.telemetry.server",
    "ParallelFallbackWarning": "payoff.telemetry.warnings",
}
"""Where each public name lives. They load on first use: a worker process (loky's, a spawned or forkserver
one, a dask worker) imports ``payoff.worker`` to run its chunks, and the executor, telemetry, numpy and
OpenTelemetry it would otherwise load with the package (0.3 s) delayed every worker's start."""

_SUBMODULES = frozenset({"cli", "config", "demo", "errors", "executor", "explain", "integrations", "observers",
                         "planning", "progress", "reasons", "record", "report", "scheduling", "stack", "strategies",
                         "telemetry", "worker"})
"""Public submodules, loaded on first use as the names are: the docs write ``payoff.telemetry.serve_metrics``
and ``payoff.observers.skip_frames_from(...)`` (at a library's import time), which a bare ``import payoff``
did not reach."""


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"payoff.{name}")  # the import binds it in this module's globals
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'payoff' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names; not the submodules, which introspection (``inspect.getmembers``) would all import."""
    return sorted({*globals(), *_WHERE})


__all__ = [
    "CallInfo",
    "ChunkStats",
    "DecisionReason",
    "FallbackReason",
    "MapRecord",
    "Observer",
    "ParallelConfig",
    "ParallelExecutor",
    "ParallelFallbackWarning",
    "Reason",
    "RemoteError",
    "StuckThreadsWarning",
    "WorkerCrashedError",
    "WorkerInitError",
    "__version__",
    "default_executor",
    "map",
    "serve_metrics",
]
