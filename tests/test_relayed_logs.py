"""Log records items emit in worker processes reach the caller's loggers, as a loop's do (hunt 76).

A handler collecting the records of 300 items saw 0-9 of them on a process pool where a loop's saw 300: a
fresh worker has logging's defaults (INFO dropped, WARNING printed bare to its stderr), a forked one copies
of the caller's handlers. Real pools; the child program's output is read whole where a worker could print.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks

ROOT = Path(__file__).resolve().parents[1]
POOLS = [("processes", None), ("processes", "spawn"), ("joblib", None)]
_IDS = [f"{name}-{start or 'default'}" for name, start in POOLS]


@pytest.fixture(scope="module", params=POOLS, ids=_IDS)
def warm(request: pytest.FixtureRequest) -> Iterator[ParallelExecutor]:
    name, start = request.param
    config = ParallelConfig(strategy=name, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            start_method=start)
    with ParallelExecutor(config) as ex:
        ex.map(tasks.square, range(8))  # the workers start before the caller sets its logging up
        yield ex


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[_Kept]:
    logger, handler = logging.getLogger("tests.items"), _Kept()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _ran_in_workers(ex: ParallelExecutor, n: int) -> None:
    assert ex.map(tasks.logs_then_square, range(n)) == [x * x for x in range(n)]
    record = ex.last_record
    assert record is not None and record.selected_strategy == ex.config.strategy, record
    assert any(c.where == "pool" for c in record.chunks), record


def test_every_items_record_reaches_the_callers_handler_at_its_level(warm: ParallelExecutor, kept: _Kept) -> None:
    logging.getLogger("tests.items").setLevel(logging.INFO)
    _ran_in_workers(warm, 40)
    infos = sorted(r.getMessage() for r in kept.records if r.levelno == logging.INFO)
    assert infos == sorted(f"item {x} ran" for x in range(40)), infos
    assert {r.processName for r in kept.records} != {"MainProcess"}, "the records were made in the caller"
    assert sorted(r.item for r in kept.records if r.levelno == logging.INFO) == list(range(40))  # extra= travels


def test_the_callers_level_of_now_decides_which_records_are_made(warm: ParallelExecutor, kept: _Kept) -> None:
    logging.getLogger("tests.items").setLevel(logging.WARNING)
    _ran_in_workers(warm, 12)
    assert sorted(r.levelname for r in kept.records) == ["ERROR", "WARNING"], [r.getMessage() for r in kept.records]


def test_a_record_with_an_argument_pickle_cannot_send_and_an_exception_arrive_as_text(
        warm: ParallelExecutor, kept: _Kept) -> None:
    logging.getLogger("tests.items").setLevel(logging.WARNING)
    _ran_in_workers(warm, 8)
    warning = next(r for r in kept.records if r.levelno == logging.WARNING)
    assert warning.getMessage().startswith("item 3 holds <unlocked _thread.lock"), warning.getMessage()
    error = next(r for r in kept.records if r.levelno == logging.ERROR)
    text = logging.Formatter().format(error)
    assert "item 5 failed" in text and "ValueError: inside item 5" in text and "Traceback" in text, text


def test_caplog_sees_the_items_records(warm: ParallelExecutor, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tests.items"):
        _ran_in_workers(warm, 10)
    assert sorted(r.getMessage() for r in caplog.records if r.levelno == logging.INFO) == \
        sorted(f"item {x} ran" for x in range(10))


_PROGRAM = """
import logging, sys
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
strategy, start = sys.argv[1], sys.argv[2]
config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                        start_method=None if start == "default" else start)
with ParallelExecutor(config) as ex:
    ex.map(tasks.square, range(4))
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="caller's format %(levelname)s %(message)s")
    print("results:", ex.map(tasks.logs_then_square, range(30)) == [x * x for x in range(30)],
          ex.last_record.selected_strategy)
"""


@pytest.mark.parametrize(("strategy", "start"), [("joblib", "default"), ("processes", "spawn"),
                                                 ("processes", "fork")])
def test_a_program_that_configures_logging_after_its_pool_started_prints_every_record_its_way(
        strategy: str, start: str) -> None:
    done = subprocess.run([sys.executable, "-c", _PROGRAM, strategy, start], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert f"results: True {strategy}" in done.stdout, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("caller's format INFO")) == \
        sorted(f"caller's format INFO item {x} ran" for x in range(30)), done.stdout
    assert "caller's format WARNING item 3 holds" in done.stdout
    assert "item" not in done.stderr, done.stderr


def test_a_level_an_item_set_in_a_worker_stays_when_the_caller_changes_its_own(warm: ParallelExecutor,
                                                                               kept: _Kept) -> None:
    """A library's own level, set when items imported it, held its WARNINGs back in the caller's loop; a worker
    reset it when the caller's levels changed, and they flowed."""
    library, handler = logging.getLogger("tests.library"), _Kept()
    library.addHandler(handler)
    try:
        assert warm.map(tasks.logs_as_a_library, range(8)) == list(range(8))
        logging.getLogger("tests.items").setLevel(logging.DEBUG)  # the caller's levels change
        assert warm.map(tasks.logs_as_a_library, range(8)) == list(range(8))
    finally:
        library.removeHandler(handler)
    assert handler.records == [], [r.getMessage() for r in handler.records]


def test_logging_a_worker_initializer_set_up_stays_the_workers(tmp_path: Path) -> None:
    """A file per worker at INFO, set by the initializer: 0 of 20 records reached the files (review 83)."""
    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            worker_initializer=tasks.log_to_a_file_per_worker, worker_init_args=(str(tmp_path),))
    with ParallelExecutor(config) as ex:
        _ran_in_workers(ex, 20)
    written = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert sorted(line for line in written.splitlines() if line.startswith("INFO:tests.items:item")) == \
        sorted(f"INFO:tests.items:item {x} ran" for x in range(20)), written


_HANGS = """
import logging, sys
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="worker's own %(message)s")
config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                        start_method="fork")
ex = ParallelExecutor(config)
try:
    ex.map(tasks.warns_then_hangs, range(2), timeout=3)
except TimeoutError:
    print("timed out", flush=True)
ex.shutdown(wait=False)
"""


def test_a_record_before_an_item_hangs_is_not_lost_with_its_chunk() -> None:
    """Kept until the chunk ended, which it never did: the call timed out with its items' records gone."""
    done = subprocess.run([sys.executable, "-c", _HANGS], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "timed out" in done.stdout, done.stdout + done.stderr
    assert "item 0 starts and hangs" in done.stderr and "item 1 starts and hangs" in done.stderr, done.stderr
