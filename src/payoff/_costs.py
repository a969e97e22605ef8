"""What each backend costs besides the work: priors first, then what this process measured.

The planner weighs a pool's start, its fixed cost per call and per chunk, and
moving pickled bytes against the serial time of the work; these figures start
as priors made for no machine in particular and are replaced by measurement.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
from collections import deque
from dataclasses import dataclass, replace

from payoff import _forks


@dataclass(frozen=True)
class Overheads:
    """What one backend costs besides the work, in seconds (and seconds per byte)."""

    start: float
    per_call: float
    per_chunk: float
    per_byte: float


_PRIORS: dict[str, Overheads] = {
    "threads": Overheads(start=0.0005, per_call=0.0001, per_chunk=0.00005, per_byte=0.0),
    "processes": Overheads(start=0.006, per_call=0.0005, per_chunk=0.00015, per_byte=1.5e-9),
    "joblib": Overheads(start=0.5, per_call=0.001, per_chunk=0.0003, per_byte=2e-9),
    "dask": Overheads(start=2.0, per_call=0.005, per_chunk=0.002, per_byte=3e-9),
}

_PROCESS_START_PRIORS = {"fork": (0.004, 0.004), "forkserver": (0.15, 0.05), "spawn": (0.15, 0.05)}
"""A process pool's start before one is measured, by start method: (fixed, per worker) seconds. The parent
forks its workers one by one, and each starts by limiting its native libraries' threads and answering the
parent (2 workers 11-15 ms with numpy imported, on the 2-core machine); forkserver and spawn start fresh
interpreters that import payoff and the caller's modules, in parallel where there are cores (~250 ms for 2).
One prior for all three was 5x too dear for fork and 8x too cheap for spawn."""

MODULES_STEP = 50
"""A kept answer is asked again once the program imported this many modules more (0.5 ms of a fork's prior)."""

FORK_START_PER_MODULE = 10e-6
"""A fork pool's start grows with what the parent imported: the reload watch reads each module, and each
worker's scan for native libraries meets theirs (2 workers: 26-31 ms with scikit-learn and pandas, 1,700
modules, against 11-15 ms with numpy, 280). Without it the prior read 6 ms, and a new process's first pool,
bought once calls kept serial had forgone that much, cost 2-6x a 20-90 ms loop (hunt 68)."""


def start_method(chosen: str | None) -> str:
    """How process pools start: the config's ``start_method`` when it names one, else the platform's default.

    Read without fixing the default, so a caller may still ``set_start_method`` afterwards.
    """
    if chosen is not None:
        return chosen
    return multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]


def _start_key(strategy: str, method: str | None) -> str:
    return f"{strategy}/{method}" if strategy == "processes" and method else strategy


def _process_method(strategy: str, method: str | None) -> str | None:
    """The start method a process pool's start is priced and learned by (None: not a process pool's)."""
    return start_method(method) if strategy == "processes" else method


class CostModel:
    """Per-process knowledge of backend overheads, corrected by measurement.

    Per-call and per-chunk overheads are each the median of the last
    ``WINDOW`` measurements (the prior counts as one until the window fills):
    a few calls that met a busy machine must not make every later small call serial, because a call kept
    serial is never measured again. A pool's start is learned per backend and
    start method; the first measured start replaces the prior outright (a
    guess made for no machine in particular), later ones are smoothed.
    """

    SMOOTHING = 0.3
    WINDOW = 9

    def __init__(self) -> None:
        self._lock = _forks.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to the priors (tests, or after the machine's load changed a lot)."""
        with self._lock:
            self._costs = dict(_PRIORS)
            self._per_call: dict[str, deque[float]] = {k: deque([v.per_call], maxlen=self.WINDOW)
                                                       for k, v in _PRIORS.items()}
            self._per_chunk: dict[str, deque[float]] = {k: deque([v.per_chunk], maxlen=self.WINDOW)
                                                        for k, v in _PRIORS.items()}
            self._starts: dict[str, float] = {}
            self._answers: dict[tuple[str, str | None, int, int], Overheads] = {}

    def get(self, strategy: str, method: str | None = None, workers: int = 2) -> Overheads:
        """``strategy``'s overheads; a process pool's start is the one of ``method`` (None: the platform's).

        Answers are kept until the next ``learn``: a plan asks about nine times, and a small call's plan
        is most of what payoff adds to it."""
        method = _process_method(strategy, method)
        # a fork pool's prior follows the modules imported since (a notebook that imports scikit-learn after
        # its first call kept the price of the modules it had then; review 73)
        key = (strategy, method, workers, len(sys.modules) // MODULES_STEP if method == "fork" else 0)
        with self._lock:
            known = self._answers.get(key)
            if known is not None:
                return known
            costs = self._costs.get(strategy, _PRIORS["processes"])
            learned = self._starts.get(_start_key(strategy, method))
            if learned is not None:
                costs = replace(costs, start=learned)
            elif strategy == "processes" and method in _PROCESS_START_PRIORS:
                fixed, per_worker = _PROCESS_START_PRIORS[method]
                imported = FORK_START_PER_MODULE * len(sys.modules) if method == "fork" else 0.0
                costs = replace(costs, start=fixed + per_worker * workers + imported)
            self._answers[key] = costs
        return costs

    def learn(self, strategy: str, *, start: float | None = None, per_call: float | None = None,
              per_chunk: float | None = None, method: str | None = None) -> None:
        method = _process_method(strategy, method)
        with self._lock:
            costs = self._costs.get(strategy)
            if costs is None:
                return
            if start is not None and start > 0:
                key = _start_key(strategy, method)
                known = self._starts.get(key)
                self._starts[key] = start if known is None else (1 - self.SMOOTHING) * known + self.SMOOTHING * start
            if per_call is not None:
                window = self._per_call[strategy]
                window.append(max(0.0, per_call))
                # one outlier beside the prior is no majority
                self._costs[strategy] = costs = replace(costs, per_call=statistics.median_low(window))
            if per_chunk is not None:
                window = self._per_chunk[strategy]
                window.append(max(0.0, per_chunk))
                self._costs[strategy] = replace(costs, per_chunk=statistics.median_low(window))
            self._answers.clear()

