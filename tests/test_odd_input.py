"""Input a user rarely means, each found by the bad-input trial: a clear error naming what was wrong, or what
the builtin ``map`` and ``concurrent.futures`` do; nothing left running."""

from __future__ import annotations

import functools
import gc
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from payoff import ParallelConfig, ParallelExecutor
from tests import tasks
from tests.conftest import ROOT, children_of

FORCE = {"tiny_workload_threshold": 0.0}


class _AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


async def _coroutine_fn(x: int) -> int:
    return x


async def _async_gen_fn(x: int):  # type: ignore[no-untyped-def]
    yield x


def _workers() -> set[int]:
    """This process's children but the resource trackers multiprocessing and loky start once per process."""
    out = set()
    for pid in children_of(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"resource_tracker" in fh.read():
                    continue
        except OSError:
            continue
        out.add(pid)
    return out


@pytest.mark.parametrize("strategy", ["processes", "threads", "joblib"])
def test_a_kept_future_does_not_keep_a_dropped_executors_workers(strategy: str) -> None:
    """A dropped executor stops its pools when collected (as a dropped ``ProcessPoolExecutor`` does), also
    while a future of its ``submit`` is kept: the future's done-callbacks held the executor, so two worker
    processes per dropped executor lived on until the future went or the idle timeout (300 s) passed."""
    before = _workers()
    threads_before = set(threading.enumerate())
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2))
    future = ex.submit(tasks.square, 3)
    assert future.result() == 9
    started = _workers() - before
    threads = {t for t in set(threading.enumerate()) - threads_before if t.name.startswith("payoff")}
    assert started or threads
    del ex
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gc.collect()
        if not started & _workers() and not any(t.is_alive() for t in threads):
            break
        time.sleep(0.05)
    assert not started & _workers(), "the dropped executor's workers still run"
    assert not [t.name for t in threads if t.is_alive()], "the dropped executor's threads still run"
    assert future.result() == 9


@pytest.mark.parametrize("fn", [_AsyncCallable(), functools.partial(_coroutine_fn), _async_gen_fn],
                         ids=["async __call__", "partial of async def", "async generator"])
def test_async_callables_are_refused_by_map_and_submit(fn: object) -> None:
    """An object whose ``__call__`` is ``async def`` made a list of never-awaited coroutines (serial, threads,
    auto); ``submit`` took any async function. Both refuse now, naming what the callable is."""
    with ParallelExecutor() as ex:
        with pytest.raises(TypeError, match="async") as mapped:
            ex.map(fn, [1, 2, 3])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async") as submitted:
            ex.submit(fn, 1)  # type: ignore[arg-type]
    if fn is _async_gen_fn:
        assert "async generator" in str(mapped.value) and "async generator" in str(submitted.value)


@pytest.mark.parametrize("strategy", ["threads", "processes"])
def test_a_timeout_beyond_a_year_is_refused_naming_the_limit(strategy: str) -> None:
    """``timeout=1e10`` passed the check ("a finite number of seconds") and then raised ``OverflowError:
    timestamp out of range for platform time_t`` from a thread wait; the config's own seconds stop at a year."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, **FORCE)) as ex:
        with pytest.raises(ValueError, match="timeout") as refused:
            ex.map(tasks.square, range(10), timeout=1e10)
        assert "year" in str(refused.value)
        assert ex.map(tasks.square, range(10), timeout=3e7) == [x * x for x in range(10)]


def test_an_empty_input_under_a_spent_timeout_is_an_empty_result() -> None:
    """``Executor.map([], timeout=0)`` returns nothing to wait for; payoff raised ``TimeoutError``."""
    with ParallelExecutor() as ex:
        assert ex.map(tasks.square, [], timeout=0) == []
        with pytest.raises(TimeoutError):
            ex.map(tasks.square, [1], timeout=0)


def test_an_empty_input_under_a_spent_timeout_streams_nothing() -> None:
    """``imap`` and ``imap_unordered`` over an empty list with ``timeout=0`` raised ``TimeoutError`` at the
    first ``next()``, where ``map`` returns ``[]``; a spent deadline still stops an input with items."""
    with ParallelExecutor() as ex:
        assert list(ex.imap(tasks.square, [], timeout=0)) == []
        assert list(ex.imap_unordered(tasks.square, (), timeout=0)) == []
        late = ex.imap(tasks.square, [1, 2], timeout=0.001)
        time.sleep(0.01)
        with pytest.raises(TimeoutError, match="had run out"):
            next(late)


CALLER_UNPICKLES = textwrap.dedent("""
    import pickle, sys
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    config = ParallelConfig(strategy=sys.argv[1], max_workers=2, worker_initializer=tasks.no_setup,
                            tiny_workload_threshold=0.0)
    with ParallelExecutor(config) as ex:
        try:
            ex.map(tasks.reply_on_five, range(8), chunksize=2)
            print("no error")
        except pickle.UnpicklingError as error:
            print("cause:", type(error.__cause__).__name__)
            print("message:", error)
        print("after:", ex.map(tasks.square, range(4)))
""")


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_result_the_caller_cannot_unpickle_is_not_raised_as_the_functions_error(strategy: str) -> None:
    """The builtin map returns ``Reply(5, "bad")``; unpickled in the caller it raised ``TypeError: __init__()
    missing 1 required positional argument`` with no item named, which an ``except TypeError`` around the
    user's code takes for the function's own error. It is an ``UnpicklingError`` naming the chunk's items.
    An initializer keeps every item in the workers. A fresh interpreter: importing ``distributed`` (as the dask
    and CE tests do) runs ``tblib.pickling_support.install()``, which gives every exception class defined by then,
    ``Reply`` too, a reducer that rebuilds it without ``__init__``; forked workers inherit it and the result
    round-trips as ``Reply(5)`` with its ``detail``, as it should under that reducer."""
    import payoff

    paths = os.pathsep.join([str(os.path.dirname(os.path.dirname(payoff.__file__))), str(ROOT)])
    proc = subprocess.run([sys.executable, "-c", CALLER_UNPICKLES, strategy], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": paths})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cause: TypeError" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    named = re.search(r"items (\d+)\.\.(\d+)", proc.stdout)
    assert named is not None and int(named[1]) <= 5 <= int(named[2]), proc.stdout
    assert "after: [0, 1, 4, 9]" in proc.stdout  # the executor goes on


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_running_out_of_memory_while_unpickling_results_stays_a_memory_error(strategy: str) -> None:
    """Every error of taking a chunk's results in became ``UnpicklingError``; running out of memory is not a
    broken pickle (a user's ``except MemoryError`` retries smaller), so it stays one, with the chunk named."""
    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.no_setup, **FORCE)
    with ParallelExecutor(config) as ex:
        with pytest.raises(MemoryError, match="no room") as caught:
            ex.map(tasks.too_large_on_three, range(8), chunksize=2)
        notes = "\n".join(getattr(caught.value, "__notes__", []))
        named = re.search(r"items (\d+)\.\.(\d+)", notes)
        assert named is not None and int(named[1]) <= 3 <= int(named[2]), notes
        assert ex.map(tasks.square, range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_an_item_a_worker_cannot_unpickle_names_its_chunk(strategy: str) -> None:
    items = [tasks.Token(i) for i in range(20)]
    config = ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.no_setup, **FORCE)
    with ParallelExecutor(config) as ex, pytest.raises(ValueError, match="cannot rebuild token 13") as caught:
        ex.map(tasks.token_value, items, chunksize=4)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    named = re.search(r"items (\d+)\.\.(\d+)", notes)
    assert named is not None and int(named[1]) <= 13 <= int(named[2]), notes
    assert "unpickl" in notes


def test_a_function_a_worker_cannot_unpickle_is_not_blamed_on_the_items() -> None:
    """The note said an item's pickle failed to load when the function's had: it names both as suspects."""
    config = ParallelConfig(strategy="processes", max_workers=2, worker_initializer=tasks.no_setup, **FORCE)
    with ParallelExecutor(config) as ex, pytest.raises(ValueError, match="cannot be rebuilt") as caught:
        ex.map(tasks.RefusesRebuild(), range(8), chunksize=4)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "the function or one of the chunk's items" in notes, notes


def test_flags_and_worker_counts_take_what_they_say() -> None:
    """``releases_gil=1`` was taken as True (``1 in (None, True, False)``); a numpy integer as the executor's
    max_workers was refused though the config and chunksize take one."""
    with ParallelExecutor(np.int64(2)) as ex:
        assert ex.config.max_workers == 2
        with pytest.raises(ValueError, match="releases_gil"):
            ex.map(tasks.square, [1], releases_gil=1)
        with pytest.raises(ValueError, match="progress"):
            ex.map(tasks.square, [1], progress=0)


def test_an_exception_object_several_items_raise_names_the_item_it_was_raised_for() -> None:
    """On threads each failing chunk wrote its "raised by item" note into the one shared object, so a chunk
    that failed after the map had raised renamed the item: item 7's error read "raised by item 17"
    (calls-and-callables trial, 2 of 3 runs)."""
    tasks.STARTED_17.clear()
    tasks.LATE_17.clear()
    tasks.SHARED_ERROR.__notes__ = []
    config = ParallelConfig(strategy="threads", max_workers=2, worker_initializer=tasks.no_setup, **FORCE)
    ex = ParallelExecutor(config)
    try:
        with pytest.raises(LookupError) as caught:
            ex.map(tasks.raise_shared, range(30), chunksize=5)
        assert tasks.STARTED_17.is_set()  # item 17 runs on, and fails after the map raised
    finally:
        tasks.LATE_17.set()
        ex.shutdown(wait=True)
    assert caught.value is tasks.SHARED_ERROR
    notes = [n for n in caught.value.__notes__ if n.startswith("payoff: raised by item")]
    assert len(notes) == 1 and notes[0].startswith("payoff: raised by item 7 "), notes


def test_a_cached_function_of_a_submodule_of_a_package_sent_by_value_travels_by_value_too(
        tmp_path: pathlib.Path) -> None:
    """cloudpickle sends the submodules of a package registered by value by value too; a cached function there
    went by name (only the package's own name was checked) and failed where the package cannot be imported."""
    (tmp_path / "latepkg").mkdir()
    (tmp_path / "latepkg" / "__init__.py").write_text("")
    (tmp_path / "latepkg" / "sub.py").write_text("import functools\n\n@functools.cache\ndef g(x):\n    return x + 1\n")
    script = textwrap.dedent(f"""
        import pickle, subprocess, sys
        import cloudpickle
        sys.path.insert(0, {str(tmp_path)!r})
        import latepkg.sub
        from payoff import _by_value
        cloudpickle.register_pickle_by_value(latepkg)
        blob = _by_value.dumps(latepkg.sub.g)
        sys.path.pop(0)
        load = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())(1))"
        loaded = subprocess.run([sys.executable, "-c", load], input=blob, capture_output=True)
        print("got", loaded.stdout.decode().strip(), loaded.stderr.decode().strip().splitlines()[-1:])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "got 2 []" in proc.stdout, proc.stdout


def test_code_compiled_per_request_keeps_a_bounded_number_of_warning_registries() -> None:
    """Each file name of code whose globals are no module's kept a registry for the life of the process: rule
    code compiled per request under a name of its own kept 20,000 (about 10 MB; review of the session's diff)."""
    from payoff import observers

    for i in range(2 * observers._DETACHED_LIMIT):
        space: dict[str, object] = {"__name__": "rules"}
        exec(compile("import sys\nsite = __import__('payoff').observers.find_call_site()", f"<rule {i}>", "exec"),
             space)
    assert len(observers._DETACHED) <= observers._DETACHED_LIMIT
