"""Backends behind one protocol; see :mod:`payoff.strategies.base`.

Backends are imported on first use so ``import payoff`` stays cheap (joblib
alone costs more than a hundred milliseconds to import).
"""

from __future__ import annotations

import importlib

from payoff.strategies.base import ChunkTask, Strategy

_LOCATIONS = {
    "serial": ("payoff.strategies.serial", "SerialStrategy"),
    "threads": ("payoff.strategies.threads", "ThreadStrategy"),
    "processes": ("payoff.strategies.processes", "ProcessStrategy"),
    "joblib": ("payoff.strategies.joblib", "JoblibStrategy"),
}

CROSSES_PROCESSES = frozenset({"processes", "joblib"})
SHIP_ONCE_BYTES = 64 * 1024
"""Functions that pickle larger than this travel once per worker per version, not once per chunk."""
PICKLER = {"processes": "pickle", "joblib": "cloudpickle"}


def strategy_class(name: str) -> type[Strategy]:
    module, attr = _LOCATIONS[name]
    cls: type[Strategy] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = ["CROSSES_PROCESSES", "PICKLER", "SHIP_ONCE_BYTES", "ChunkTask", "Strategy", "strategy_class"]
