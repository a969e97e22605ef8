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
PICKLER = {"processes": "pickle", "joblib": "cloudpickle"}


def strategy_class(name: str) -> type[Strategy]:
    module, attr = _LOCATIONS[name]
    cls: type[Strategy] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = ["CROSSES_PROCESSES", "PICKLER", "ChunkTask", "Strategy", "strategy_class"]
