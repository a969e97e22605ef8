"""A ``worker_initializer`` that raises: the user learns what it raised from payoff, not from stderr.

A process pool's workers run the initializer in another process; the pools
themselves report only that the pool broke (``BrokenProcessPool``, or loky's
``TerminatedWorkerError`` with exit codes), so payoff must carry the
initializer's own exception back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning
from payoff.errors import RemoteTraceback, WorkerInitError
from payoff.reasons import Reason
from tests import tasks

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}

FORCE = {"tiny_workload_threshold": 0.0}
MESSAGE = "initializer refuses to start"


def _leftover_init_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {name for name in os.listdir(tmp) if name.startswith("payoff-init-")}


@pytest.mark.parametrize("strategy", ["processes", "joblib", "threads"])
def test_an_init_failure_names_the_initializers_exception(strategy: str) -> None:
    before = _leftover_init_dirs()
    config = ParallelConfig(strategy=strategy, worker_initializer=tasks.failing_initializer,
                            worker_init_args=(os.getpid(),), **FORCE)
    with ParallelExecutor(config) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ex.map(tasks.square, range(20))
        record = ex.last_record
    assert out == [x * x for x in range(20)], "the items still ran, in the caller"
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
    assert "RuntimeError" in record.fallback_detail and MESSAGE in record.fallback_detail, record.fallback_detail
    assert "failing_initializer" in record.fallback_detail, record.fallback_detail
    # the failed start's time is overhead like a start's (no phase had it: metrics trial)
    assert record.overhead_seconds["pool_start"] == record.pool_start_seconds > 0, record.overhead_seconds
    warned = [str(w.message) for w in caught if issubclass(w.category, ParallelFallbackWarning)]
    assert warned and MESSAGE in warned[0], warned
    deadline = time.monotonic() + 10  # a pool closing in the background removes its folder as it ends
    while not _leftover_init_dirs() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
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


# -- an item never runs where the initializer did not --------------------------------------------------------


@pytest.fixture
def no_model() -> Iterator[None]:
    tasks._MODEL = None
    yield
    tasks._MODEL = None


@pytest.mark.parametrize(("strategy", "extra"), [
    ("auto", {}), ("threads", {}), ("processes", {}), ("joblib", {}), ("serial", {}),
    ("processes", {"min_batch_size": 100}), ("auto", {"max_workers": 1}), ("threads", {"max_workers": 1}),
])
def test_items_run_only_where_the_initializer_ran(no_model: None, strategy: str, extra: dict[str, Any]) -> None:
    config = ParallelConfig(strategy=strategy, worker_initializer=tasks.load_model, worker_init_args=(10,), **extra)
    with ParallelExecutor(config) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        for n in (1000, 5, 1, 300):  # measured first, then small calls the planner would keep in the caller
            assert ex.map(tasks.predict, range(n)) == [x * 10 for x in range(n)], (n, ex.last_record)
    on_threads = any(r.selected_strategy == "threads" for r in ex.records)  # their initializer runs here
    if strategy in ("processes", "joblib") or (strategy == "auto" and not on_threads):
        assert tasks._MODEL is None, ("no item (and no initializer) ran in the caller's process",
                                      [(r.n_items, r.selected_strategy, r.fallback_reason) for r in ex.records])


def test_disabled_runs_the_initializer_once_in_the_caller(no_model: None) -> None:
    calls: list[int] = []

    def count_and_load(scale: int) -> None:
        calls.append(scale)
        tasks.load_model(scale)

    config = ParallelConfig(enabled=False, worker_initializer=count_and_load, worker_init_args=(3,))
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.predict, range(4)) == [0, 3, 6, 9]
        assert ex.map(tasks.predict, range(4)) == [0, 3, 6, 9]
    assert calls == [3], "once per executor, not once per call"


def test_a_strategy_object_with_a_worker_initializer_is_refused() -> None:
    """A user's executor starts its own workers: payoff cannot run an initializer in them, so it says so
    instead of running ``fn`` where the initializer never ran."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool, \
            pytest.raises(ValueError, match=r"worker_initializer.*strategy object.*ThreadPoolExecutor\(initializer="):
        ParallelConfig(strategy=pool, worker_initializer=tasks.load_model, worker_init_args=(3,))


@pytest.mark.parametrize("config", [{"strategy": "serial"}, {"enabled": False}])
def test_a_serial_submit_runs_the_initializer_first_as_a_serial_map_does(config: dict[str, Any]) -> None:
    tasks._MODEL = None  # another test's load_model in this process must not stand in for this one's
    ex = ParallelExecutor(ParallelConfig(worker_initializer=tasks.load_model, worker_init_args=(7,), **config))
    try:
        assert ex.submit(tasks.predict, 2).result(timeout=30) == 14
    finally:
        ex.shutdown()


@pytest.mark.parametrize("strategy", ["processes", "threads"])
def test_a_pool_that_could_not_start_falls_back_with_the_initializer_run_here_first(strategy: str) -> None:
    """A start past pool_start_timeout never finished the initializer anywhere: the serial fallback runs it in
    the caller before any item, as every serial run does (``fn`` raised TypeError on the missing model)."""
    tasks._MODEL = None
    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.slow_load_model,
                            worker_init_args=(5, 1.5), pool_start_timeout=0.3)
    with ParallelExecutor(config) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        assert ex.map(tasks.predict, range(6)) == [x * 5 for x in range(6)]
        record = ex.last_record
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
    # the advice is "the detail names what to do": here, the setting that gives the start longer (advice trial)
    assert "raise pool_start_timeout" in record.fallback_detail, record.fallback_detail


def test_a_slow_initializer_forked_beside_a_thread_is_told_of_both_the_lock_and_the_timeout() -> None:
    """A thread alive at the fork (tqdm's monitor, left by an earlier progress bar) took the advice to raise
    pool_start_timeout away, leaving only the lock hint, for an initializer that was only slow: a suite run
    failed on it whenever such a thread outlived its test."""
    tasks._MODEL = None
    done = threading.Event()
    beside = threading.Thread(target=done.wait, name="beside-the-fork", daemon=True)
    beside.start()
    config = ParallelConfig(strategy="processes", max_workers=2, worker_initializer=tasks.slow_load_model,
                            worker_init_args=(5, 1.5), pool_start_timeout=0.3, start_method="fork")
    try:
        with ParallelExecutor(config) as ex, warnings.catch_warnings():
            warnings.simplefilter("ignore", ParallelFallbackWarning)
            assert ex.map(tasks.predict, range(6)) == [x * 5 for x in range(6)]
            record = ex.last_record
    finally:
        done.set()
    assert record is not None and record.fallback_reason is Reason.INIT_FAILURE
    assert "'beside-the-fork'" in record.fallback_detail, record.fallback_detail
    assert "raise pool_start_timeout" in record.fallback_detail, record.fallback_detail


def test_an_initializer_that_raises_everywhere_stops_the_call_instead_of_running_items_without_it() -> None:
    config = ParallelConfig(strategy="processes", worker_initializer=tasks.failing_initializer, **FORCE)
    with ParallelExecutor(config) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", ParallelFallbackWarning)
        with pytest.raises(RuntimeError) as info:
            ex.map(tasks.square, range(20))
    assert MESSAGE in str(info.value)
    assert any("raised here too" in note for note in getattr(info.value, "__notes__", [])), info.value


REBIND_SCRIPT = textwrap.dedent("""
    import os, warnings
    from payoff import ParallelConfig, ParallelExecutor
    warnings.simplefilter("ignore")
    MODEL = None
    def load(tag):
        global MODEL
        MODEL = (tag, os.getpid())
    def loaded_in(x):
        return MODEL[1]
    config = ParallelConfig(strategy="processes", max_workers=2, worker_initializer=load, worker_init_args=("m",),
                            granularity="instance", tiny_workload_threshold=0.0)
    with ParallelExecutor(config) as ex:
        first = set(ex.map(loaded_in, range(8), granularity="instance"))
        ex.map(loaded_in, range(4), granularity="feature")  # a mismatch: serial, the initializer runs here
        second = set(ex.map(loaded_in, range(8), granularity="instance"))
    print("parent", os.getpid(), "first", sorted(first), "second", sorted(second))
""")


def test_the_callers_own_run_of_the_initializer_does_not_replace_the_workers_state() -> None:
    """A serial fallback runs the initializer in the caller, rebinding its ``__main__`` global; the workers,
    which ran it themselves, keep theirs (before, ``fn`` then travelled by value with the caller's model)."""
    proc = subprocess.run([sys.executable, "-c", REBIND_SCRIPT], cwd=ROOT, env=CHILD_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    parent = int(words[words.index("parent") + 1])
    second = proc.stdout.split("second", 1)[1]
    assert str(parent) not in second, proc.stdout


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_pool_with_an_initializer_starts_where_no_temporary_folder_can_be_made(
        no_model: None, strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only or full temp folder: the folder for workers' initializer failure reports could not be made,
    and the pool never started ('No usable temporary directory found'), where a stdlib pool starts."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))  # a folder inside a file: never made
    config = ParallelConfig(strategy=strategy, worker_initializer=tasks.load_model, worker_init_args=(10,), **FORCE)
    with ParallelExecutor(config) as ex:
        assert ex.map(tasks.predict, range(50)) == [x * 10 for x in range(50)]
        record = ex.last_record
    assert record is not None and record.selected_strategy == strategy and not record.pool_start_failed, \
        record.fallback_detail
