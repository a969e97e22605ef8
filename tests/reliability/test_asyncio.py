"""payoff from asyncio code: a service's handlers, an async pipeline, a notebook.

A ``map`` is a blocking call. Called straight from a coroutine it holds the
event loop for the whole call, and every other task (the service's other
requests) waits: that is said once per call site. The documented way,
``await asyncio.to_thread(ex.map, fn, items)``, runs it in a thread of the
loop and is neither warned about nor treated as nested. A notebook cell runs
inside the kernel's event loop, where a blocking cell is the normal case.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import payoff
from payoff import ParallelExecutor
from payoff.errors import EventLoopBlockedWarning
from tests.conftest import require

CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(payoff.__file__).resolve().parents[1])}

NAP = 0.06


def nap(x: int) -> int:
    """Four of these on two threads take two naps at least: past asyncio's 0.1 s slow-callback bar, however
    idle or busy the machine is."""
    time.sleep(NAP)
    return x * 2


def _blocked(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, EventLoopBlockedWarning)]


def test_a_map_called_in_a_coroutine_warns_once_at_its_own_line() -> None:
    """A ``map`` straight in a coroutine starved the loop's other tasks without a word."""
    ex = ParallelExecutor(strategy="threads", max_workers=2)

    async def main() -> list[int]:
        lines = []
        for _ in range(3):
            lines.append(_line() + 1)
            ex.map(nap, range(4))
        return lines

    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        lines = asyncio.run(main())
    blocked = _blocked(caught)
    assert len(blocked) == 1, [str(w.message) for w in caught]
    assert (blocked[0].filename, blocked[0].lineno) == (__file__, lines[0])
    text = str(blocked[0].message)
    assert "blocked the running asyncio event loop" in text and "asyncio.to_thread" in text, text


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno


def test_a_map_run_in_a_thread_of_the_loop_is_not_warned_nor_nested() -> None:
    ex = ParallelExecutor(strategy="threads", max_workers=2)

    async def main() -> tuple[list[int], Any, list[int], Any]:
        def job() -> tuple[list[int], Any]:
            return ex.map(nap, range(4)), ex.last_record  # the record of this thread's call, read in it
        by_thread = await asyncio.to_thread(job)
        by_executor = await asyncio.get_running_loop().run_in_executor(None, job)
        return (*by_thread, *by_executor)

    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, record, second, other = asyncio.run(main())
    assert first == second == [0, 2, 4, 6]
    assert not _blocked(caught), [str(w.message) for w in caught]
    for rec in (record, other):
        assert rec.selected_strategy == "threads" and rec.fallback_reason is None, rec.summary()


def test_the_loops_own_slow_callback_bar_decides() -> None:
    """asyncio's ``slow_callback_duration`` (0.1 s unless set) is the bar: a loop that allows more is not warned."""
    ex = ParallelExecutor(strategy="threads", max_workers=2)

    async def main() -> None:
        asyncio.get_running_loop().slow_callback_duration = 3600
        ex.map(nap, range(4))

    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
    assert not _blocked(caught), [str(w.message) for w in caught]


def test_a_notebook_cell_is_not_warned() -> None:
    """A cell runs inside ipykernel's event loop: a cell that maps is meant to block, so nothing is said. Its
    items see no loop: a named ``threads`` map of ``asyncio.run`` wrappers raised on its first items (hunt 71)."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        require(False, "nbclient and nbformat (extra [notebook])")
        raise
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import asyncio, warnings, time\n"
        "warnings.simplefilter('always')\n"
        "from payoff import ParallelExecutor\n"
        "def nap(x):\n"
        "    time.sleep(0.06)\n"
        "    return x\n"
        "asyncio.get_running_loop()  # the cell runs in the kernel's loop: this test is about that case\n"
        "with ParallelExecutor(strategy='threads', max_workers=2) as ex:\n"
        "    print(ex.map(nap, range(4)))\n"), nbformat.v4.new_code_cell(
        "async def double(x):\n"
        "    await asyncio.sleep(0)\n"
        "    return 2 * x\n"
        "with ParallelExecutor(strategy='threads', max_workers=2) as ex:\n"
        "    print(ex.map(lambda x: asyncio.run(double(x)), range(20)) == [2 * x for x in range(20)])\n"
        "print(asyncio.get_event_loop_policy().get_event_loop() is asyncio.get_running_loop())\n")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs + nb.cells[1].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    text = "".join(o.get("text", "") for o in outputs)
    assert "[0, 1, 2, 3]" in text and "EventLoopBlockedWarning" not in text, text
    assert "".join(o.get("text", "") for o in nb.cells[1].outputs).split() == ["True", "True"], nb.cells[1].outputs


@pytest.mark.parametrize("strategy", ["processes", "auto"])
def test_concurrent_handlers_share_one_pool_and_read_their_own_records(strategy: str) -> None:
    """Twelve handlers mapping at once through ``to_thread``: right results, one pool, each its own record."""
    from tests.tasks import spin

    ex = ParallelExecutor(strategy=strategy, max_workers=2)

    async def handler(i: int) -> Any:
        def job() -> tuple[list[int], Any]:
            return ex.map(spin, range(i * 100, i * 100 + 40 + i), workload=f"req{i}"), ex.last_record
        results, record = await asyncio.to_thread(job)
        assert results == [spin(x) for x in range(i * 100, i * 100 + 40 + i)]
        assert (record.workload, record.n_items) == (f"req{i}", 40 + i)
        return record

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(handler(i) for i in range(12))))

    with ex:
        records = asyncio.run(main())
    assert sum(r.pool_started for r in records) <= 1, [r.summary() for r in records]


async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x


@pytest.mark.parametrize("call", ["map", "map2", "starmap", "imap", "imap_unordered"])
def test_an_async_function_is_refused_before_anything_runs(call: str) -> None:
    """``ex.map(fetch, urls)`` with an ``async def fetch`` returned coroutines that never ran, recorded as a
    tiny_workload fallback whose advice was to force parallelism (auto, threads, processes alike)."""
    ex = ParallelExecutor(strategy="threads", max_workers=2)
    calls = {"map": lambda: ex.map(fetch, range(50)), "map2": lambda: ex.map(fetch, range(5), range(5)),
             "starmap": lambda: ex.starmap(fetch, [(1,), (2,)]), "imap": lambda: ex.imap(fetch, range(5)),
             "imap_unordered": lambda: ex.imap_unordered(fetch, range(5))}
    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=r"coroutine function \(async def\).*asyncio\.gather"):
            calls[call]()
    assert ex.last_record is None
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]


HALF_IMPORTED = textwrap.dedent("""
    import importlib.machinery, sys, types

    for name in sys.argv[1:]:  # what another thread's import still running leaves in sys.modules
        half = types.ModuleType(name)
        half.__spec__ = importlib.machinery.ModuleSpec(name, None)
        half.__spec__._initializing = True
        sys.modules[name] = half

    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2)) as ex:
        print(ex.map(abs, range(-50, 0)) == list(range(50, 0, -1)), flush=True)
""")


@pytest.mark.parametrize("modules", [["asyncio"], ["numpy"], ["asyncio", "numpy", "pandas", "IPython"]])
def test_a_map_while_another_thread_still_imports_a_module_it_looks_at(modules: list[str]) -> None:
    """A request thread's first ``import numpy`` (or a client library's asyncio) while another request maps:
    the module is in ``sys.modules`` half made, and reading ``numpy.integer`` or ``asyncio.events`` raised
    "partially initialized module" out of the map (library trial: 9 of 10 and 10 of 10 runs). This sets up
    that state as CPython's import leaves it, in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", HALF_IMPORTED, *modules], capture_output=True, text=True,
                          timeout=120, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"], (done.stdout, done.stderr[-3000:])


async def _doubled(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def doubled_on_its_own_loop(x: int) -> int:
    """A plain function around an async client: one event loop of its own per call, as on any pool's thread."""
    return asyncio.run(_doubled(x))


@pytest.mark.parametrize("strategy", ["threads", "auto", "serial"])
@pytest.mark.parametrize("call", ["map", "imap"])
def test_items_that_run_an_event_loop_of_their_own_run_in_a_map_called_on_a_loop(strategy: str, call: str) -> None:
    """In a notebook (its cells run in the kernel's loop) a named ``threads`` map of ``asyncio.run(fetch(i))``
    raised "asyncio.run() cannot be called from a running event loop": its first items ran in the caller's
    thread, where ``ThreadPoolExecutor.map`` runs none (hunt 71). Items see no loop wherever they run; the
    caller's loop is its own again after the call."""
    ex = ParallelExecutor(strategy=strategy, max_workers=2)

    async def main() -> tuple[list[int], bool, bool]:
        loop = asyncio.get_running_loop()
        got = ex.map(doubled_on_its_own_loop, range(20)) if call == "map" \
            else list(ex.imap(doubled_on_its_own_loop, range(20)))
        return got, asyncio.get_running_loop() is loop, asyncio.get_event_loop_policy().get_event_loop() is loop

    with ex, warnings.catch_warnings():
        warnings.simplefilter("ignore", EventLoopBlockedWarning)
        got, running_kept, current_kept = asyncio.run(main())
    assert got == [2 * x for x in range(20)]
    assert running_kept and current_kept


class _Fetcher:
    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x


def test_a_partial_of_an_object_with_an_async_call_is_refused() -> None:
    """``functools.partial(Fetcher(), ...)`` passed the guard and returned never-awaited coroutines (hunt 71)."""
    import functools

    ex = ParallelExecutor(strategy="threads", max_workers=2)
    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fn in (functools.partial(_Fetcher()), functools.partial(functools.partial(fetch))):
            with pytest.raises(TypeError, match=r"coroutine function \(async def\)"):
                ex.map(fn, range(5))
            with pytest.raises(TypeError, match=r"coroutine function \(async def\)"):
                ex.submit(fn, 1)
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("strategy", ["threads", "serial"])
@pytest.mark.parametrize("call", ["imap", "imap_unordered"])
def test_an_imap_consumed_in_a_coroutine_warns_once_at_the_consumers_line(call: str, strategy: str) -> None:
    """Each ``next()`` of an imap waits for its result in the loop's thread: consumed in a coroutine, the
    other tasks waited for the whole run, and nothing was said where ``map`` says so (hunt 71). A serial
    run's items run as their results are handed out: their time counts too (review 77)."""
    ex = ParallelExecutor(strategy=strategy, max_workers=2)

    async def main() -> tuple[list[int], int]:
        results = getattr(ex, call)(nap, range(8))
        line = _line() + 1
        got = list(results)
        return sorted(got), line

    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        got, line = asyncio.run(main())
    assert got == [2 * x for x in range(8)]
    blocked = _blocked(caught)
    assert len(blocked) == 1, [str(w.message) for w in caught]
    assert (Path(blocked[0].filename).name, blocked[0].lineno) == ("test_asyncio.py", line), \
        (blocked[0].filename, blocked[0].lineno)
    assert "asyncio.to_thread" in str(blocked[0].message), blocked[0].message


def test_an_imap_consumed_in_a_thread_of_the_loop_is_not_warned() -> None:
    ex = ParallelExecutor(strategy="threads", max_workers=2)

    async def main() -> list[int]:
        return await asyncio.to_thread(lambda: list(ex.imap(nap, range(8))))

    with ex, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(main()) == [2 * x for x in range(8)]
    assert not _blocked(caught), [str(w.message) for w in caught]
