"""Observers of MapRecords: warnings, tracing, metrics.

Nothing here is imported by the executor except through ``default_observers``.
"""

from __future__ import annotations

import threading

from payoff.observers import Observer
from payoff.telemetry.warnings import FallbackWarnings, ParallelFallbackWarning

_lock = threading.Lock()
_extra: list[Observer] = []
FALLBACK_WARNINGS = FallbackWarnings()
"""The process-wide warnings observer: one set of "already shown" call sites for all executors."""


def add_default_observer(observer: Observer) -> None:
    """Attach ``observer`` to every executor created from now on."""
    with _lock:
        if observer not in _extra:
            _extra.append(observer)


def remove_default_observer(observer: Observer) -> None:
    with _lock:
        if observer in _extra:
            _extra.remove(observer)


def default_observers() -> list[Observer]:
    """What a new executor observes with; warnings last so an "error" filter raises after telemetry."""
    with _lock:
        return [*_extra, FALLBACK_WARNINGS]


__all__ = ["FALLBACK_WARNINGS", "ParallelFallbackWarning", "add_default_observer", "default_observers",
           "remove_default_observer"]
