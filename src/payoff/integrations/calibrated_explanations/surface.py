"""What calibrated-explanations reads from its executor: ``config`` and ``metrics`` (CE's own names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CEConfig:
    """The configuration as calibrated-explanations reads it (CE's own field names).

    This is a read-only view derived from the payoff :class:`~payoff.ParallelConfig`
    (``CEParallelExecutor.payoff_config``): change that one instead. ``strategy``
    is always concrete (CE's name ``"sequential"`` for payoff's ``"serial"``);
    ``instance_chunk_size=1`` asks CE for one task per instance, which payoff
    regroups into chunks of its own choosing. ``enabled`` is always true and
    ``min_instances_for_parallel`` 1: CE's instance-parallel plugin then takes
    every explain to ``map``, where payoff decides (in one task here when
    disabled or for one instance). Declined, it sent the explain down CE's
    legacy path, 4.4x slower than CE's own default, with a logged warning on
    every explain of one instance.
    """

    enabled: bool
    strategy: str
    max_workers: int | None
    granularity: str = "instance"
    instance_chunk_size: int = 1
    feature_chunk_size: int | None = None
    min_batch_size: int = 1
    min_instances_for_parallel: int = 1
    tiny_workload_threshold: float | None = None
    task_size_hint_bytes: int = 16 * 1024 * 1024
    force_serial_on_failure: bool = True
    worker_initializer: None = None
    worker_init_args: tuple[Any, ...] = ()
    telemetry: None = None


@dataclass
class CEMetrics:
    """CE's ``metrics`` surface; payoff's own measurements are in ``executor.records``.

    ``total_duration`` is CE's: it adds the wall time of every explain to it.
    """

    total_duration: float = 0.0
    submitted: int = 0
    """CE tasks received (one per instance)."""
    completed: int = 0
    fallbacks: int = 0
    """Explains that ran serially although parallelism was allowed (payoff fallbacks, never-called, CE retries)."""
    failures: int = 0
    maps: int = 0
    max_workers: int = 0
    worker_utilisation_pct: float = 0.0
    """Measured busy / capacity of the last map, in percent (CE's own figure is min(items, workers) / workers)."""
    last: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted, "completed": self.completed, "fallbacks": self.fallbacks,
            "failures": self.failures, "total_duration": self.total_duration, "max_workers": self.max_workers,
            "worker_utilisation_pct": self.worker_utilisation_pct, "maps": self.maps, **self.last,
        }
