"""A ``worker_initializer`` that raises: the user learns what it raised from payoff, not from stderr.

A process pool's workers run the initializer in another process; the pools
themselves report only that the pool broke (``BrokenProcessPool``, or loky's
``TerminatedWorkerError`` with exit codes), so payoff must carry the
initializer's own exception back.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning
from payoff.errors import RemoteTraceback, WorkerInitError
from payoff.reasons import Reason
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}
MESSAGE = "initializer refuses to start"


def _leftover_init_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {name for name in os.listdir(tmp) if name.startswith("payoff-init-")}


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_an_init_failure_names_the_initializers_exception(strategy: str) -> None:
    before = _leftover_init_dirs()
    config = ParallelConfig(strategy=strategy, worker_initializer=tasks.failing_initializer, **FORCE)
    with ParallelExecutor(config) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ex.map(tasks.square, range(20))
        record = ex.last_record
    assert out == [x * x for x in range(20)], "the items still ran, in the caller"
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
    assert "RuntimeError" in record.fallback_detail and MESSAGE in record.fallback_detail, record.fallback_detail
    assert "failing_initializer" in record.fallback_detail, record.fallback_detail
    warned = [str(w.message) for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert warned and MESSAGE in warned[0], warned
    assert _leftover_init_dirs() <= before, "the pool's report folder is removed with the pool"


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_without_fallback_the_raised_error_carries_the_workers_traceback(strategy: str) -> None:
    config = ParallelConfig(strategy=strategy, worker_initializer=tasks.failing_initializer,
                            force_serial_on_failure=False, **FORCE)
    with ParallelExecutor(config) as ex, pytest.raises(WorkerInitError) as info:
        ex.map(tasks.square, range(20))
    error = info.value
    assert MESSAGE in str(error) and "RuntimeError" in str(error) and "failing_initializer" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback), error.__cause__
    assert "def failing_initializer" in str(error.__cause__) or "raise RuntimeError" in str(error.__cause__)
    assert error.pid is not None and error.pid != os.getpid()
