"""payoff: a parallel executor that proves whether parallelism pays off."""

from __future__ import annotations

from payoff._default import default_executor, map  # noqa: A004 (payoff.map mirrors builtins.map on purpose)
from payoff._version import __version__
from payoff.config import ParallelConfig
from payoff.errors import RemoteError, StuckThreadsWarning, WorkerCrashedError, WorkerInitError
from payoff.executor import ParallelExecutor
from payoff.observers import CallInfo, Observer
from payoff.reasons import DecisionReason, FallbackReason, Reason
from payoff.record import ChunkStats, MapRecord
from payoff.telemetry.warnings import ParallelFallbackWarning


def __getattr__(name: str) -> object:
    """``payoff.serve_metrics`` without importing the HTTP server for programs that never serve."""
    if name == "serve_metrics":
        from payoff.telemetry.server import serve_metrics

        return serve_metrics
    raise AttributeError(f"module 'payoff' has no attribute {name!r}")


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
