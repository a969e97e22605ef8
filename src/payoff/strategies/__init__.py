"""Backends behind one protocol; see :mod:`payoff.strategies.base`.

Backends are imported on first use so ``import payoff`` stays cheap (joblib
alone costs more than a hundred milliseconds to import, distributed more).
"""

from __future__ import annotations

import importlib

from payoff.config import ParallelConfig
from payoff.strategies.base import ChunkTask, Strategy

_LOCATIONS = {
    "serial": ("payoff.strategies.serial", "SerialStrategy"),
    "threads": ("payoff.strategies.threads", "ThreadStrategy"),
    "processes": ("payoff.strategies.processes", "ProcessStrategy"),
    "joblib": ("payoff.strategies.joblib", "JoblibStrategy"),
    "dask": ("payoff.strategies.dask", "DaskStrategy"),
}

CROSSES_PROCESSES = frozenset({"processes", "joblib", "dask"})
SHIP_ONCE_BYTES = 64 * 1024
"""Functions that pickle larger than this travel once per worker per version, not once per chunk."""
PICKLER = {"processes": "pickle", "joblib": "cloudpickle", "dask": "cloudpickle"}


def strategy_class(name: str) -> type[Strategy]:
    module, attr = _LOCATIONS[name]
    cls: type[Strategy] = getattr(importlib.import_module(module), attr)
    return cls


def make_strategy(name: str, workers: int, config: ParallelConfig) -> Strategy:
    """A not yet started pool of kind ``name``, configured from ``config``."""
    cls = strategy_class(name)
    args = (workers, config.worker_initializer, config.worker_init_args, config.start_method)
    if name == "dask":
        client = config.strategy if not isinstance(config.strategy, str) else None
        strategy = cls(*args, client=client, address=config.address)  # type: ignore[call-arg]
    else:
        strategy = cls(*args)
    strategy.start_timeout = config.pool_start_timeout
    strategy.inner_threads = config.inner_threads
    return strategy


__all__ = ["CROSSES_PROCESSES", "PICKLER", "SHIP_ONCE_BYTES", "ChunkTask", "Strategy", "make_strategy",
           "strategy_class"]
