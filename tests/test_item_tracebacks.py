"""An item's error reads as a loop's would: the caller's line, the ``map`` it called, then the function's own
frames, with none of payoff's machinery between them (8-10 frames of it before; notebook trial)."""

from __future__ import annotations

import functools
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import payoff
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks

PAYOFF = str(Path(payoff.__file__).resolve().parent)
FORCE = {"tiny_workload_threshold": 0, "min_batch_size": 1}


def _frames(error: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(error.__traceback__))


def _payoff_frames(frames: list[traceback.FrameSummary]) -> list[str]:
    return [f"{Path(f.filename).name}:{f.name}" for f in frames if f.filename.startswith(PAYOFF)]


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes", "joblib"])
def test_an_items_error_shows_the_callers_line_map_and_the_function(strategy: str) -> None:
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex, \
            pytest.raises(KeyError, match="bad item 7") as caught:
        ex.map(tasks.fail_on_seven, range(20))
    frames = _frames(caught.value)
    assert _payoff_frames(frames) == ["executor.py:map"], traceback.format_exception(caught.value)
    here = [f.name for f in frames]
    assert here[0] == "test_an_items_error_shows_the_callers_line_map_and_the_function"
    crossed = strategy in ("processes", "joblib")
    if crossed:  # the function's frames are the worker's: in the cause, as concurrent.futures gives them
        remote = str(caught.value.__cause__)
        assert "fail_on_seven" in remote and "worker.py" not in remote, remote
    else:
        assert here[-1] == "fail_on_seven", here
    assert any("raised by item 7" in note for note in caught.value.__notes__)


def test_imap_shows_the_loop_over_it_and_the_function() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex, \
            pytest.raises(KeyError, match="bad item 7") as caught:
        for _ in ex.imap(tasks.fail_on_seven, range(20)):
            pass
    frames = _frames(caught.value)
    assert [f.name for f in frames][-1] == "fail_on_seven"
    assert len(_payoff_frames(frames)) == 1, _payoff_frames(frames)


def test_payoffs_own_errors_keep_every_frame() -> None:
    """Not an item's error: where payoff raised it is what a bug report needs."""
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex, \
            pytest.raises(payoff.WorkerCrashedError) as caught:
        ex.map(tasks.segfault_on_five, range(10))
    assert len(_payoff_frames(_frames(caught.value))) > 1


@pytest.mark.parametrize("strategy", ["serial", "threads", "processes"])
def test_an_error_whose_notes_cannot_be_read_is_raised_as_itself(strategy: str) -> None:
    """An exception reading attributes from its payload raised ``KeyError('__notes__')`` where payoff looked for
    its note, and that replaced the item's error (review of the change)."""
    # across processes it may not unpickle (its __getattr__ answers pickle's lookups): then a RemoteError
    # naming it, as for any exception the parent cannot rebuild; never the KeyError
    # (caught by hand: pytest's own report reads __notes__ too, and fails on it)
    raised = (tasks.NotesRaise, payoff.RemoteError) if strategy == "processes" else (tasks.NotesRaise,)
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, **FORCE)) as ex:
        for call in (ex.map, lambda *args: list(ex.imap(*args))):
            came: BaseException | None = None
            try:
                call(tasks.raise_notes_raise_on_three, range(10))
            except BaseException as exc:
                came = exc
            assert isinstance(came, raised), f"{type(came).__name__}: {came and came.args!r} came out"
            assert "42" in str(came.args)


def test_payoffs_own_error_passes_map_once() -> None:
    """Re-raised with ``raise error``, payoff's own error showed the ``map`` frame twice."""
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex, \
            pytest.raises(TimeoutError) as caught:
        ex.map(functools.partial(tasks.sleep_then_square, seconds=1.0), range(4), timeout=0.1)
    names = [f"{Path(f.filename).name}:{f.name}" for f in _frames(caught.value)]
    assert names.count("executor.py:map") == 1, names


SENT_BY_VALUE = '''
import sys
from payoff import ParallelConfig, ParallelExecutor


def check(x):
    if x == 7:
        raise ValueError("seven is wrong")
    return x


if __name__ == "__main__":
    config = ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        try:
            ex.map(lambda x: check(x) * 2, range(20))
        except ValueError as error:
            print(error.__cause__)
'''


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_function_sent_by_value_names_its_file_and_line(strategy: str, tmp_path: Path) -> None:
    """A script's function travels by value (cloudpickle), which names its code ``<dynamic-code>``: the
    worker's traceback named neither the script nor the line's source (pip-user trial)."""
    script = tmp_path / "by_value_script.py"
    script.write_text(SENT_BY_VALUE)
    done = subprocess.run([sys.executable, str(script), strategy], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    remote = done.stdout
    assert "<dynamic-code>" not in remote, remote
    assert f'File "{script}", line 8, in check' in remote, remote
    assert 'raise ValueError("seven is wrong")' in remote, remote
    assert f'File "{script}", line 16, in <lambda>' in remote, remote
