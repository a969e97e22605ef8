"""payoff: a parallel executor that proves whether parallelism pays off."""

from __future__ import annotations

from payoff._default import default_executor, map  # noqa: A004 (payoff.map mirrors builtins.map on purpose)
from payoff._version import __version__
from payoff.config import ParallelConfig
from payoff.errors import RemoteError, StuckThreadsWarning, WorkerCrashedError
from payoff.executor import ParallelExecutor
from payoff.observers import CallInfo, Observer
from payoff.reasons import DecisionReason, FallbackReason, Reason
from payoff.record import ChunkStats, MapRecord
from payoff.telemetry.warnings import ParallelFallbackWarning

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
    "__version__",
    "default_executor",
    "map",
]
