"""Items in worker processes warn under the caller's warning filters, as a loop's items do (hunt 55, F3).

joblib's loky workers and ``spawn``/``forkserver`` ones are fresh interpreters: a program that silenced a
warning saw it printed once per worker, and one under ``error`` filters got results where its loop raised.
Real pools, in a child program whose stderr (the workers' too) is read whole.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = """
import sys, warnings
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
strategy, start, action = sys.argv[1], sys.argv[2], sys.argv[3]
warnings.simplefilter(action, UserWarning)
config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                        start_method=None if start == "default" else start)
with ParallelExecutor(config) as ex:
    try:
        out = ex.map(tasks.warn_then_square, range(40))
    except UserWarning as exc:
        print("raised:", exc)
    else:
        print("results:", out == [x * x for x in range(40)], ex.last_record.selected_strategy)
"""


def _run(strategy: str, start: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROGRAM, strategy, start, action], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("strategy", "start"), [("joblib", "default"), ("processes", "spawn")])
def test_a_warning_the_caller_ignores_is_not_printed_by_the_workers(strategy: str, start: str) -> None:
    done = _run(strategy, start, "ignore")
    assert done.returncode == 0, done.stderr
    assert f"results: True {strategy}" in done.stdout, done.stdout + done.stderr
    assert "warns" not in done.stderr, done.stderr


@pytest.mark.parametrize(("strategy", "start"), [("joblib", "default"), ("processes", "spawn")])
def test_a_warning_the_caller_makes_an_error_raises_as_in_a_loop(strategy: str, start: str) -> None:
    done = _run(strategy, start, "error")
    assert done.returncode == 0, done.stderr
    assert "raised: item" in done.stdout and "warns" in done.stdout, done.stdout + done.stderr


def test_a_warning_the_caller_shows_is_shown() -> None:
    """The filters travel, not a silence: under ``always`` the workers print every item's warning."""
    done = _run("joblib", "default", "always")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warns") >= 30, done.stderr


_SUBMITTED = """
import warnings
from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
warnings.simplefilter("ignore", UserWarning)
with ParallelExecutor(ParallelConfig(strategy="joblib", max_workers=2)) as ex:
    print("result:", ex.submit(tasks.warn_then_square, 7).result(timeout=60))
"""


def test_a_submitted_call_warns_under_the_callers_filters_too() -> None:
    done = subprocess.run([sys.executable, "-c", _SUBMITTED], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "result: 49" in done.stdout and "warns" not in done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_what_items_warn_in_worker_processes_reaches_the_callers_warnings(strategy: str) -> None:
    """A loop's warnings go through the caller's ``warnings``: ``catch_warnings``, ``pytest.warns``, a notebook
    cell. Worker processes printed theirs to their own stderr, so ``catch_warnings(record=True)`` around ``map``
    caught 0 of 20 where a loop caught 20 (hunt 68, F4). Each is shown in the caller now, from its own line."""
    import inspect
    import warnings

    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    source, first = inspect.getsourcelines(tasks.warn_then_square)
    line = next(n for n, text in enumerate(source, first) if "warnings.warn(" in text)
    config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert ex.map(tasks.warn_then_square, range(40), chunksize=5) == [x * x for x in range(40)]
        assert ex.last_record is not None and ex.last_record.selected_strategy == strategy
        shown = [w for w in caught if issubclass(w.category, UserWarning) and "warns" in str(w.message)]
        assert sorted(str(w.message) for w in shown) == sorted(f"item {x} warns" for x in range(40))
        assert {(w.filename, w.lineno) for w in shown} == {(tasks.__file__, line)}
        with pytest.warns(UserWarning, match="item 3 warns"):
            ex.map(tasks.warn_then_square, range(8), chunksize=2)


def test_a_warning_shown_once_per_place_is_shown_once_however_many_workers_raise_it() -> None:
    """Under the "default" action a loop shows each warning once per place and text; so does a pool's relay,
    whichever worker raised it how often (each worker's own registry showed it once a worker)."""
    import warnings

    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            ex.map(tasks.warn_the_same, range(40), chunksize=5)
    assert [str(w.message) for w in caught if "the same" in str(w.message)] == ["the same warning"]


_MAIN_DEPRECATES = """
import sys, warnings
from payoff import ParallelConfig, ParallelExecutor

def deprecates(x):
    warnings.warn("an old argument", DeprecationWarning)
    return x

if __name__ == "__main__":
    config = ParallelConfig(strategy=sys.argv[1], max_workers=2, tiny_workload_threshold=0, min_batch_size=1,
                            start_method=None if sys.argv[2] == "default" else sys.argv[2])
    with ParallelExecutor(config) as ex:
        out = ex.map(deprecates, range(40), chunksize=5)
        print("results:", out == list(range(40)), ex.last_record.selected_strategy)
"""


@pytest.mark.parametrize(("strategy", "start"), [("processes", "default"), ("joblib", "default"),
                                                  ("processes", "spawn")])
def test_a_deprecation_in_main_shows_once_as_pythons_own_filter_for_main_says(strategy: str, start: str,
                                                                            tmp_path: Path) -> None:
    """Python shows a ``DeprecationWarning`` of ``__main__``'s code (``default::DeprecationWarning:__main__``): a
    loop once. Relayed from joblib's workers, where the function travels by value, the warning named its file's
    path as its module, that filter matched nothing, and none was shown (review 74, W2); from spawned workers,
    which run the script as ``__mp_main__``, that name (review 75, F1)."""
    script = tmp_path / "main_deprecates.py"
    script.write_text(_MAIN_DEPRECATES)
    done = subprocess.run([sys.executable, str(script), strategy, start], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"results: True {strategy}" in done.stdout, done.stdout + done.stderr
    assert done.stderr.count("DeprecationWarning: an old argument") == 1, done.stderr


def test_a_warning_raised_here_and_on_the_pool_is_shown_once_per_place_and_text() -> None:
    """The relay kept a registry of its own, apart from the module's ``__warningregistry__`` that the same
    warnings raised in the caller fill (an auto call's probed items, the user's own calls): each showed twice
    (review 74, W1)."""
    import warnings

    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    config = ParallelConfig(strategy="processes", max_workers=2, tiny_workload_threshold=0, min_batch_size=1)
    with ParallelExecutor(config) as ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        tasks.warn_a_seventh(0)
        ex.map(tasks.warn_a_seventh, range(70), chunksize=10)
        tasks.warn_a_seventh(1)
    assert sorted(str(w.message) for w in caught if "a seventh" in str(w.message)) == \
        [f"a seventh {k}" for k in range(7)]
