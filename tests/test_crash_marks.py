"""``payoff._crash_marks``: the parent reads where its dead workers stood, and only theirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from payoff import ParallelConfig
from payoff import _crash_marks as crash_marks
from payoff.strategies import make_strategy
from payoff.strategies.base import ChunkTask

SRC = str(Path(crash_marks.__file__).resolve().parents[1])


CALL, OTHER_CALL = 1001, 1002


def _worker(folder: str, at: int, then: str, call: int = CALL) -> subprocess.Popen[str]:
    """A process that marks ``at`` of ``call`` in ``folder`` as a worker running that item would, then ``then``."""
    code = (f"from payoff import _crash_marks as m\nmark = m.marker({folder!r}, {call})\nmark[0] = {at}\n"
            f"print('marked', flush=True)\n{then}\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "marked"
    return proc


def test_only_the_dead_workers_marks_of_the_asking_call_are_read() -> None:
    """Two calls sharing a pool both lose chunks when it breaks: each reads its own items, and both can read
    them (the first reader took every mark, the other call's items too, and could read an item twice)."""
    marks = crash_marks.CrashMarks()
    living = None
    try:
        crashed = _worker(marks.path, 50, "import ctypes; ctypes.string_at(0)")
        finished = _worker(marks.path, crash_marks.NOWHERE, "")  # ended between chunks: no item to blame
        killed_too = _worker(marks.path, 9, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", OTHER_CALL)
        again = _worker(marks.path, 50, "import os; os._exit(3)")  # two dead workers on one item: named once
        assert again.wait(30) == 3
        living = _worker(marks.path, 7, "import time; time.sleep(120)")
        assert crashed.wait(30) != 0 and finished.wait(30) == 0 and killed_too.wait(30) != 0
        assert marks.where_the_dead_stood(CALL) == [50]
        assert marks.where_the_dead_stood(OTHER_CALL) == [9]
        assert marks.where_the_dead_stood(CALL) == [50], "the marks are read, not taken"
    finally:
        if living is not None:
            living.kill()
            living.wait(30)
        marks.remove()
    assert not os.path.exists(marks.path)


def test_a_worker_whose_folder_is_gone_runs_unmarked(tmp_path: Path) -> None:
    assert crash_marks.marker(str(tmp_path / "gone"), CALL) is None


def test_a_marks_folder_a_temp_cleaner_took_is_made_again_and_its_lock_let_go() -> None:
    pool = make_strategy("processes", 1, ParallelConfig(strategy="processes"))  # never started: its folder only
    task = ChunkTask(0, 0, [1], retry=True)
    first = pool._marks_for(task)  # type: ignore[attr-defined]
    assert first is not None and first[1] == id(task.cancel)
    open_fds = len(os.listdir("/proc/self/fd"))
    shutil.rmtree(first[0])
    second = pool._marks_for(task)  # type: ignore[attr-defined]
    try:
        assert second is not None and second[0] != first[0] and os.path.isdir(second[0])
        assert len(os.listdir("/proc/self/fd")) == open_fds, "the lost folder's lock is still open"
    finally:
        pool._remove_files()  # type: ignore[attr-defined]
    assert not os.path.exists(second[0])


def test_marks_asked_for_as_their_folder_goes_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool stopped by another call's timeout removes its marks folder while a call that ran on it still asks
    where its dead workers stood: that call failed with a raw ``FileNotFoundError`` (a service trial: 1 innocent
    call in each of four 40-90 s runs of a request type timing out beside three others), the folder gone between
    the check that it was there and its read. That moment, made here: the read finds it gone. No folder, no
    marks."""
    marks = crash_marks.CrashMarks()

    def gone(path: object) -> Any:  # the folder is there for any check before; its read finds it gone
        raise FileNotFoundError(2, "No such file or directory", str(path))

    try:
        with monkeypatch.context() as patched:
            patched.setattr(os, "scandir", gone)
            assert marks.where_the_dead_stood(1) == []
    finally:
        marks.remove()


def test_a_pool_future_failed_twice_keeps_its_first_failure() -> None:
    """The stdlib pool's manager fails every pending future as the pool breaks (``terminate_broken``), and
    payoff's own reaper may have failed one first: ``InvalidStateError`` then killed the manager thread (a
    traceback on stderr each time), which left its queue feeder thread and pipes behind for good (23 threads
    and 166 fds after 60 s of timeouts beside other calls, still there after ``shutdown()``)."""
    from concurrent.futures.process import BrokenProcessPool

    from payoff.strategies.processes import _PoolFuture

    future: _PoolFuture = _PoolFuture()
    first = BrokenProcessPool("first")
    future.set_exception(first)
    future.set_exception(BrokenProcessPool("second"))
    assert future.exception() is first
