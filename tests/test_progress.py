"""Progress bars in a real Jupyter kernel (jupyter_client + ipykernel + ipywidgets + tqdm) and a real terminal.

A bar costs nothing until shown: the short calls of a loop make no tqdm bar
and no widget (each used to leave ten widgets in the kernel and the saved
notebook). A bar that was shown is closed, with every widget it made, however
its call ends.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import queue
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import payoff
from tests.conftest import require

SRC = str(Path(payoff.__file__).resolve().parents[1])

SETUP = """
import sys, time
import ipywidgets
from payoff import ParallelConfig, ParallelExecutor
def tiny(x): return x
def slow(x):
    time.sleep(0.05)
    return x
def fails_late(x):
    time.sleep(0.05)
    if x == 20:
        raise ValueError("item 20")
    return x
def widgets(): return len(ipywidgets.Widget.widgets)
ex = ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2))
"""

BLOCK_IPYWIDGETS = """
import sys
class _NoIpywidgets:
    '''As if ipywidgets were not installed: its import fails as a missing package's does.'''
    def find_spec(self, name, path=None, target=None):
        if name == "ipywidgets" or name.startswith("ipywidgets."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
assert "ipywidgets" not in sys.modules
sys.meta_path.insert(0, _NoIpywidgets())
"""


@dataclass
class Cell:
    """What one cell sent: its streams, its error, and the widget comms opened and closed meanwhile."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    opened: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    shown: list[dict[str, Any]] = field(default_factory=list)
    """Its displayed outputs as a saved notebook holds them: each display's data, as its last update left it."""
    display_ids: list[str | None] = field(default_factory=list)


class Kernel:
    def __init__(self) -> None:
        from jupyter_client import KernelManager

        env = dict(os.environ, PYTHONPATH=SRC)
        for name in ("PAYOFF_PARALLEL", "CE_PARALLEL"):
            env.pop(name, None)
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, interrupt_when_shown: bool = False, timeout: float = 120) -> Cell:
        """Run a cell to its end; ``interrupt_when_shown``: interrupt the kernel once a widget comes up."""
        msg_id = self.kc.execute(textwrap.dedent(code))
        cell, interrupted, end = Cell(), False, time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                setattr(cell, content["name"], getattr(cell, content["name"]) + content["text"])
            elif kind == "error":
                cell.error = f"{content['ename']}: {content['evalue']}"
            elif kind == "comm_open":
                cell.opened.add(content["comm_id"])
                if interrupt_when_shown and not interrupted:
                    interrupted = True
                    self.km.interrupt_kernel()
            elif kind == "comm_close":
                cell.closed.add(content["comm_id"])
            elif kind == "display_data":
                cell.shown.append(content["data"])
                cell.display_ids.append(content.get("transient", {}).get("display_id"))
            elif kind == "update_display_data":  # as nbclient applies it to the saved outputs
                shown_id = content.get("transient", {}).get("display_id")
                for i, known in enumerate(cell.display_ids):
                    if known is not None and known == shown_id:
                        cell.shown[i] = content["data"]
            elif kind == "status" and content["execution_state"] == "idle":
                return cell
        raise AssertionError(f"cell did not end in {timeout} s: {code}")

    def value(self, expr: str) -> Any:
        cell = self.run(f"print(repr({expr}))")
        assert cell.error is None, cell.error
        return eval(cell.stdout.strip())

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _kernel(*cells: str) -> Iterator[Kernel]:
    for module in ("jupyter_client", "ipykernel", "ipywidgets", "tqdm"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"{module} (extras [notebook] and [progress]) for a real kernel")
    kernel = Kernel()
    try:
        for code in cells:
            cell = kernel.run(code)
            assert cell.error is None, cell.error
        yield kernel
    finally:
        kernel.stop()


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    yield from _kernel(SETUP)


def test_short_calls_in_a_kernel_make_no_bar_and_no_widget(kernel: Kernel) -> None:
    """200 calls of a loop: each used to build a tqdm notebook bar (ten widgets, comms to the frontend)."""
    before = kernel.value("widgets()")
    cell = kernel.run("for i in range(200): ex.map(tiny, range(20))")
    assert cell.error is None, cell.error
    assert not cell.opened, f"{len(cell.opened)} widget comms opened by 200 short calls"
    assert kernel.value("widgets()") == before
    assert kernel.value("'tqdm' in sys.modules") is False  # no bar was made: tqdm was not even imported


@pytest.mark.parametrize("ending", ["success", "error", "timeout"])
def test_a_long_call_shows_a_bar_and_closes_every_widget_it_made(kernel: Kernel, ending: str) -> None:
    """Past the delay a widget bar comes up; when the call ends, all its widgets close (tqdm closed only its
    outer box on success, and none after an error: the bar stayed, red)."""
    before = kernel.value("widgets()")
    code = {"success": "r = ex.map(slow, range(40))",  # at least 1 s with 2 threads: past the 0.5 s delay
            "error": "r = ex.map(fails_late, range(40))",  # item 20 raises after ~0.5 s of sleeps
            "timeout": "r = ex.map(slow, range(400), timeout=1.0)"}[ending]
    cell = kernel.run(code)
    assert (cell.error is None) == (ending == "success"), cell.error
    assert cell.opened, "no bar was shown"
    assert cell.opened <= cell.closed, f"{len(cell.opened - cell.closed)} of {len(cell.opened)} widgets left open"
    assert kernel.value("widgets()") == before


@pytest.mark.parametrize("ending", ["success", "error"])
def test_a_closed_bar_leaves_nothing_in_the_cells_saved_output(kernel: Kernel, ending: str) -> None:
    """A notebook run by nbclient (papermill, ``nbconvert --execute``) saves each display as its last update
    left it: the bar's widget output stayed in the cell, its text fallback frozen short of the end ("34%")
    although the call completed (hunt 66). The bar's display is replaced by an empty one when it closes."""
    code = {"success": "r = ex.map(slow, range(40))", "error": "r = ex.map(fails_late, range(40))"}[ending]
    cell = kernel.run(code)
    assert (cell.error is None) == (ending == "success"), cell.error
    assert cell.opened, "no bar was shown"
    left = [data for data in cell.shown if any(data.get(kind) for kind in data)]
    assert not left, left


@pytest.mark.parametrize("pool", ["payoff", "multiprocessing"])
def test_a_map_in_a_worker_forked_from_the_kernel_makes_no_bar(kernel: Kernel, pool: str) -> None:
    """A forked worker's map (nested, or a library's ``payoff.map`` in an item) built widget bars it cannot send:
    each message was refused and logged in full on the kernel's stderr, 148 records for 4 calls (hunt 71)."""
    outer = {"payoff": 'ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2))',
             "multiprocessing": '__import__("multiprocessing").get_context("fork").Pool(2)'}[pool]
    cell = kernel.run("""
        def counted_late(x):
            time.sleep(0.05)
            return widgets() if x == 19 else 0
        def widgets_made_inside(x):
            before = widgets()
            return ParallelExecutor(ParallelConfig(strategy="serial")).map(counted_late, range(20))[-1] - before
        with OUTER as pool:
            print(pool.map(widgets_made_inside, range(2)))
        """.replace("OUTER", outer))
    assert cell.error is None, cell.error
    assert cell.stdout.split() == ["[0,", "0]"], cell.stdout


def test_an_interrupted_call_closes_its_bar(kernel: Kernel) -> None:
    """Ctrl-C (the kernel's interrupt) in a long map: its bar used to stay on the page, frozen."""
    before = kernel.value("widgets()")
    cell = kernel.run("r = ex.map(slow, range(400))", interrupt_when_shown=True)
    assert cell.error is not None and cell.error.startswith("KeyboardInterrupt"), cell.error
    assert cell.opened <= cell.closed, f"{len(cell.opened - cell.closed)} of {len(cell.opened)} widgets left open"
    assert kernel.value("widgets()") == before


def test_a_kernel_without_ipywidgets_draws_a_text_bar_without_tqdms_warning() -> None:
    """tqdm.auto warned "IProgress not found" to a user who never asked for a bar."""
    for kernel in _kernel(BLOCK_IPYWIDGETS, SETUP.replace("import ipywidgets\n", "")):
        cell = kernel.run("r = ex.map(slow, range(40))\nr = ex.map(slow, range(40), progress=True)")
        assert cell.error is None, cell.error
        assert "IProgress" not in cell.stdout + cell.stderr, cell.stderr
        assert "default [" in cell.stderr and "item" in cell.stderr, cell.stderr  # the text bar
        assert not cell.opened
        assert kernel.value("'ipywidgets' in sys.modules") is False


def _in_a_terminal(code: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``code`` run with a terminal on stderr: its result (stdout captured) and what the terminal got."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new terminal is 0 wide
    env = dict(os.environ, PYTHONPATH=SRC)
    for name in ("PAYOFF_PARALLEL", "CE_PARALLEL"):
        env.pop(name, None)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(leader, chunks), daemon=True)
    reader.start()  # read as it is written: a terminal's unread output is lost once its writer is gone
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=follower,
                             text=True, env=env, timeout=120)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    return out, b"".join(chunks).decode(errors="replace")


def test_a_bar_made_while_an_item_redirects_stderr_draws_on_the_terminal() -> None:
    """The progress thread made a late bar on whatever ``sys.stderr`` was then: an item of a serial run
    capturing its own stderr got the bar's text in its output, and the terminal got no bar (review 77)."""
    out, drawn = _in_a_terminal("""
        import contextlib, io, sys, time
        from payoff import ParallelConfig, ParallelExecutor
        def item(x):
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                time.sleep(0.4)
                print(f"report {x}", file=sys.stderr)
            return buf.getvalue()
        with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
            print(ex.map(item, range(4)) == [f"report {x}\\n" for x in range(4)], flush=True)
        """)
    assert out.returncode == 0, drawn
    assert out.stdout.split() == ["True"], out.stdout
    assert "default [serial]" in drawn, drawn


def test_short_calls_in_a_terminal_make_no_bar() -> None:
    """A terminal on stderr: many short calls make no tqdm bar (tqdm is not even imported); a long one draws."""
    out, drawn = _in_a_terminal("""
        import sys, time
        from payoff import ParallelConfig, ParallelExecutor
        from payoff.progress import interactive
        assert interactive()
        ex = ParallelExecutor(ParallelConfig(strategy="serial"))
        for i in range(200):
            ex.map(abs, range(20))
        print("tqdm imported:", "tqdm" in sys.modules, flush=True)
        ex.map(time.sleep, [0.05] * 20)
        print("tqdm imported:", "tqdm" in sys.modules, flush=True)
    """)
    assert out.returncode == 0, drawn
    assert out.stdout.split("\n")[:2] == ["tqdm imported: False", "tqdm imported: True"], out.stdout
    assert "default [serial]" in drawn, drawn


def _read_all(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            return
        if not data:
            return
        chunks.append(data)


@pytest.mark.parametrize("config", [{"strategy": "serial"}, {"enabled": False}])
def test_a_serial_map_with_a_bar_runs_in_pieces_the_bar_can_follow(config: dict[str, Any]) -> None:
    """A serial map ran as one chunk, so its bar stood at 0% until the end (3 s of work: 0%, then 100%). With
    a bar it runs in pieces of about 0.2 s of work (here at least 0.6 s: more than one piece); without one, as
    one chunk, as before."""
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    with ParallelExecutor(ParallelConfig(**config)) as ex:
        assert ex.map(tasks.nap_ms, [20] * 30, progress=True) == [20] * 30
        pieces = ex.last_record
        assert ex.map(tasks.nap_ms, [20] * 30, progress=False) == [20] * 30
        whole = ex.last_record
    assert pieces is not None and whole is not None
    assert pieces.n_chunks >= 2 and whole.n_chunks == 1
    assert sum(c.n_items for c in pieces.chunks) == 30 and pieces.mode == "serial"


@pytest.mark.parametrize("strategy", ["auto", "serial"])
def test_a_serial_map_in_pieces_returns_every_item_once_in_order(strategy: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``map`` puts a short first block (the probe's results) in front of a longer next one, in that block's own
    list; the serial run read how many items its piece had done from that list after handing it over, and
    skipped as many items as the probe had run: 2,048 results of 1,000,000 were missing, in a terminal or a
    notebook (where every serial map over 0.5 s runs in pieces). Pieces made short here, so that any run has
    several whatever the machine's speed."""
    from payoff import ParallelConfig, ParallelExecutor, _maprun
    from tests import tasks

    monkeypatch.setattr(_maprun, "PROGRESS_PIECE_SECONDS", 0.002)
    items = list(range(300_000))
    # a threshold no probe's reading passes: one on a loaded machine (the full suite) priced 300,000 negations
    # worth a pool
    with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=60.0)) as ex:
        assert ex.map(tasks.negate, items, progress=True) == [-x for x in items]
        record = ex.last_record
    assert record is not None and record.selected_strategy == "serial"
    assert record.n_chunks >= 3, record.summary()


@pytest.mark.parametrize("kind", ["map", "imap"])
def test_the_bar_of_a_serial_run_that_moved_to_a_pool_says_so(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Its label named the strategy the call began on, and said [serial] to the end of a run whose rest went to
    the pool (review of the imap outgrow)."""
    from payoff import ParallelConfig, ParallelExecutor, planning
    from tests import tasks

    with ParallelExecutor(ParallelConfig(max_workers=2), planner=planning.Planner()) as ex:
        run = ex.map if kind == "map" else lambda fn, items, **kw: list(ex.imap(fn, items, **kw))
        assert run(tasks.grows, range(1000), progress=True) == [tasks.grows(x) for x in range(1000)]
        record = ex.last_record
    assert record is not None
    if record.selected_strategy == "serial":
        pytest.fail(f"the premise: the run moved to a pool ({record.summary()})")
    shown = capsys.readouterr().err
    assert f"default [{record.selected_strategy}]" in shown, shown[-2000:]


@pytest.mark.parametrize("observers", ["none", "own"])
def test_a_bar_asked_for_is_drawn_on_an_executor_with_observers_of_the_users_own(
        observers: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``observers=[...]`` replaces the default telemetry, which held the bar: ``progress=True`` drew nothing
    there, without a word (hunt 71). A bar nobody asked for stays off, as those observers chose."""
    from payoff import Observer, ParallelConfig, ParallelExecutor

    class Count(Observer):
        def __init__(self) -> None:
            self.items = 0

        def chunk_finished(self, call: Any, chunk: Any) -> None:
            self.items += chunk.n_items

    count = Count()
    given = {"none": [], "own": [count]}[observers]
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2), observers=given) as ex:
        assert ex.map(abs, range(-60, 0), progress=True) == list(range(60, 0, -1))
        asked = capsys.readouterr().err
        ex.map(abs, range(-60, 0))
        ex.map(abs, range(-60, 0), progress=None)
        unasked = capsys.readouterr().err
    assert "/60 [" in asked, asked  # a bar of the call's 60 items was drawn
    assert unasked == "", unasked
    assert count.items == (180 if observers == "own" else 0)


def _sized_inputs() -> dict[str, Any]:
    from collections import deque

    inputs: dict[str, Any] = {"dict": dict.fromkeys(range(50)), "set": set(range(50)),
                              "deque": deque(range(50)), "dict keys": dict.fromkeys(range(50)).keys()}
    try:
        import pandas as pd
    except ImportError:
        return inputs
    return {**inputs, "pandas Series": pd.Series(range(50)), "pandas Index": pd.Index(range(50))}


@pytest.mark.parametrize("kind", list(_sized_inputs()))
def test_an_imap_over_an_input_that_tells_its_length_has_a_bars_total(kind: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``imap(..., progress=True)`` over a dict, a set or a pandas Series drew a bar with no total (no percentage,
    no time left), where ``map`` and ``tqdm(series)`` have one (hunt 71)."""
    from payoff import ParallelConfig, ParallelExecutor

    items = _sized_inputs()[kind]
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        assert sorted(ex.imap(abs, items, progress=True)) == sorted(abs(x) for x in items)
    shown = capsys.readouterr().err
    assert "/50 [" in shown, shown


def test_an_imap_over_an_iterator_has_no_total_and_reads_no_length(capsys: pytest.CaptureFixture[str]) -> None:
    """A stream of no told length keeps a bar of counts; its ``len()`` is not asked (a query set's fetches
    every row, which an ``imap`` reads one at a time)."""
    from payoff import ParallelConfig, ParallelExecutor

    class Rows:
        def __iter__(self) -> Iterator[int]:
            return iter(range(50))

        def __len__(self) -> int:
            raise AssertionError("len() was asked")

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        assert list(ex.imap(abs, Rows(), progress=True)) == list(range(50))
    shown = capsys.readouterr().err
    assert "item" in shown and "/50" not in shown, shown


@pytest.mark.parametrize("strategy", ["threads", "auto"])
def test_a_call_of_slow_items_shows_its_bar_while_they_run(kernel: Kernel, strategy: str) -> None:
    """A bar was made only as a chunk ended: four 2 s items on two workers showed none for 2 s, long model
    fits none until the first fit ended, and under auto, whose plan times a new function's first item in
    the caller, none until that item ended (hunt 71). The items here end only once they see the bar."""
    cell = kernel.run(f"""
        before = widgets()
        def until_a_bar_{strategy}(x):
            end = time.monotonic() + 20
            while widgets() == before and time.monotonic() < end:
                time.sleep(0.05)
            return widgets() > before
        with ParallelExecutor(ParallelConfig(strategy="{strategy}", max_workers=2)) as slow_ex:
            print(slow_ex.map(until_a_bar_{strategy}, range(2)))
        """)
    assert cell.error is None, cell.error
    assert cell.stdout.split() == ["[True,", "True]"], cell.stdout
    assert cell.opened and cell.opened <= cell.closed, (len(cell.opened), len(cell.closed))
    assert cell.shown, "the bar was displayed in another cell than its call's"  # made by a thread of an earlier cell


class _Draws(io.StringIO):
    """A stderr that counts the bar's draws of 0 of 1 items."""

    def draws(self) -> int:
        return self.getvalue().count("0/1 [")


def test_a_shown_bar_is_drawn_again_while_no_chunk_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawn only as chunks ended, a bar's elapsed time stood still while one long item ran."""
    from payoff import ParallelConfig, ParallelExecutor

    stderr = _Draws()
    monkeypatch.setattr(sys, "stderr", stderr)

    def until_drawn_again(x: int) -> bool:
        end = time.monotonic() + 20
        while stderr.draws() < 2 and time.monotonic() < end:
            time.sleep(0.05)
        return stderr.draws() >= 2

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        assert ex.map(until_drawn_again, [0], progress=True) == [True]


FORK_WHILE_DRAWING = """
import os, signal, sys, threading, time
import tqdm
from payoff import ParallelConfig, ParallelExecutor

drawn = tqdm.tqdm.display
def slow_draw(self, *args, **kwargs):  # the progress thread's draw, slowed to span the fork below
    if threading.current_thread().name == "payoff-progress":
        time.sleep(0.8)
    return drawn(self, *args, **kwargs)
tqdm.tqdm.display = slow_draw

def item(x):
    if x == 0:
        time.sleep(1.2)  # the bar was drawn at once; the thread draws it again at 1 s, for 0.8 s
        pid = os.fork()
        if pid == 0:  # a library's own bar in a child process, or a nested map's
            signal.alarm(10)
            for _ in tqdm.tqdm(range(3), file=sys.stderr):
                pass
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        return "child hung" if os.WIFSIGNALED(status) else "child ok"
    return ""

with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
    print(ex.map(item, range(2), progress=True)[0], flush=True)
"""


def test_a_fork_while_the_progress_thread_draws_leaves_the_child_a_working_tqdm() -> None:
    """A fork that cut the thread's draw left tqdm's lock held in the child: its first bar hung for good, and
    through tqdm's lock that processes share, the parent's next draw and its map with it (review 77)."""
    env = dict(os.environ, PYTHONPATH=SRC)
    out = subprocess.run([sys.executable, "-c", FORK_WHILE_DRAWING], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "child ok", out.stdout
