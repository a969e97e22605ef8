"""Progress bars for long maps (tqdm: a widget in notebooks, text in terminals).

Off in non-interactive runs (CI logs, pipes) unless a call asks with
``progress=True``. A bar costs nothing until it is shown: a call makes its
tqdm bar (in a notebook, some ten widgets sent to the frontend and saved in
the notebook) only once it has run ``SHOW_AFTER_SECONDS``, so the many short
calls of a loop make none. tqdm's own ``delay`` only defers drawing: it builds
every widget at once. A thread of payoff's (``_Ticker``) shows a bar when its
time comes and draws it again while no chunk ends, so slow items have one too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from payoff._imported import imported
from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats, MapRecord
from payoff.worker import in_worker_process

SHOW_AFTER_SECONDS = 0.5


_tty: tuple[object, bool] = (None, False)
"""(stream, is it a terminal): ``isatty`` is a system call, asked again only when stderr is replaced."""


def interactive() -> bool:
    """A terminal on stderr, or a Jupyter kernel (not a process forked from one)."""
    global _tty
    if "ipykernel" in sys.modules and not _forked_from_kernel():
        return True
    stream = sys.stderr
    if _tty[0] is not stream:
        _tty = (stream, _isatty(stream))
    return _tty[1]


def _forked_from_kernel() -> bool:
    """A process forked from a Jupyter kernel: a payoff worker, or as ipykernel's own output streams tell it (a
    pool of the user's). Its messages to the frontend are refused, each logged in full on the kernel's stderr:
    the widget bars a map there built (148 log records for 4 calls, hunt 71) are made nowhere."""
    if in_worker_process():
        return True
    for stream in (sys.stdout, sys.stderr):
        is_master = getattr(stream, "_is_master_process", None)
        if callable(is_master) and not is_master():
            return True
    return False


def _isatty(stream: object) -> bool:
    """A closed or broken stderr (a service that closed it) is no terminal, not a reason for a map to fail."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


_said: set[str] = set()


def _say_once(text: str) -> None:
    """A bar that was asked for and cannot be drawn says so, once per process, instead of nothing."""
    if text not in _said:
        _said.add(text)
        warnings.warn(text, RuntimeWarning, stacklevel=2)


class _Bar:
    """A call's bar before and after it is shown: the items done so far, and the tqdm bar once made."""

    __slots__ = ("closed", "done", "drawn_ns", "file", "lock", "show_at_ns", "shown", "strategy", "tqdm")

    def __init__(self, show_at_ns: int) -> None:
        self.show_at_ns = show_at_ns
        self.file = sys.stderr
        """The caller's stderr as the call began: made by the ticker's thread, the bar was drawn on whatever an
        item running in the caller had put there (``redirect_stderr``), into the item's own output (review 77)."""
        self.done = 0
        self.lock = threading.Lock()
        """Held to change the bar: the caller's thread advances and closes it, the ticker shows and redraws it."""
        self.closed = False
        self.drawn_ns = 0
        """When the ticker last drew it."""
        self.tqdm: Any = None
        self.shown: Any = None
        """In a notebook, the handle of the bar's display: emptied when the bar closes."""
        self.strategy = ""
        """The strategy its label names: a serial run that outgrew its estimate moves on to a pool."""


_NEVER = 2**63


class Progress(Observer):
    """One bar per call that wants one and lasts; advanced as chunks finish, closed however the call ends."""

    def __init__(self, asked_only: bool = False) -> None:
        """``asked_only``: bars only for calls that pass ``progress=True`` (see :data:`ASKED_ONLY`)."""
        self.asked_only = asked_only

    def map_started(self, call: CallInfo) -> None:
        """A call of known length has its bar from its start: planning may run its first items (an unmeasured
        function's probe, in the caller), and a bar made once it was planned came after a first 60 s fit."""
        if call.n_items:
            self.map_planned(call)

    def map_planned(self, call: CallInfo) -> None:
        if "progress" in call.state:
            return
        wanted = call.progress if call.progress is not None else not self.asked_only and interactive()
        if not wanted or (call.n_items == 0 and not call.stream):
            return
        delay_ns = 0 if call.progress else int(SHOW_AFTER_SECONDS * 1e9)
        bar = call.state["progress"] = _Bar(call.started_ns + delay_ns)
        if call.progress:  # asked for: shown now, or said now that it cannot be
            _show(call, bar)
        _TICKER.add(call, bar)

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        bar = call.state.get("progress")
        if bar is None:
            return
        with bar.lock, _DRAWING:
            bar.done += chunk.n_items
            if bar.tqdm is not None:
                _relabel(call, bar)
                bar.tqdm.update(chunk.n_items)
            elif time.monotonic_ns() >= bar.show_at_ns:
                _show(call, bar)

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        bar = call.state.pop("progress", None)
        if bar is None:
            return
        _TICKER.remove(bar)
        with bar.lock, _DRAWING:
            bar.closed = True
            if bar.tqdm is not None:
                _close(bar.tqdm, bar.shown)


TICK_SECONDS = 1.0
"""How often a shown bar is drawn again while no chunk ends: its elapsed time and rate move on."""


class _Ticker:
    """One daemon thread for the bars of the process: it shows a bar once its call has run
    ``SHOW_AFTER_SECONDS`` and draws shown bars again every ``TICK_SECONDS``. Shown only as chunks ended, a call of
    four 2 s items on two workers had no bar for 2 s, and one of long model fits none until its first fit
    ended, its bar then frozen between chunks (hunt 71)."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._bars: dict[_Bar, CallInfo] = {}
        self._thread: threading.Thread | None = None
        self._wakes_ns = _NEVER
        """When the thread wakes next: a bar due later needs no wake-up (a loop of short calls woke it at each
        call, and the wake-ups took the GIL from the caller: +20% a call, review 77)."""

    def add(self, call: CallInfo, bar: _Bar) -> None:
        with self._ready:
            self._bars[bar] = call
            if self._thread is None:  # kept only once started: refused at a process's thread limit, tried again
                thread = threading.Thread(target=self._run, name="payoff-progress", daemon=True)
                thread.start()
                self._thread = thread
            due = _due_ns(bar)
            if due < self._wakes_ns:
                self._wakes_ns = due
                self._ready.notify()

    def remove(self, bar: _Bar) -> None:
        with self._ready:
            self._bars.pop(bar, None)

    def _run(self) -> None:
        while True:
            with self._ready:
                now = time.monotonic_ns()
                due, wait = self._due(now)
                if not due:
                    self._wakes_ns = _NEVER if wait is None else now + int(wait * 1e9)
                    self._ready.wait(wait)
                    self._wakes_ns = 0  # awake: a bar added now is seen by the next look
                    continue
            for bar, call in due:
                try:
                    _tick(call, bar)
                except Exception:  # a stream closed under it, say: that bar is drawn no more, the others are
                    self.remove(bar)

    def _due(self, now: int) -> tuple[list[tuple[_Bar, CallInfo]], float | None]:
        """The bars to show or draw now, else how long until the next is due (None: no bar)."""
        due, soonest = [], None
        for bar, call in self._bars.items():
            at = _due_ns(bar)
            if at == _NEVER:
                continue  # could not be made
            if at <= now:
                due.append((bar, call))
            else:
                soonest = at if soonest is None else min(soonest, at)
        return due, None if soonest is None else (soonest - now) / 1e9

    def forked(self) -> None:
        """In a forked child: no thread, no bar of the parent's, a lock no thread holds."""
        self._ready = threading.Condition(threading.Lock())
        self._bars, self._thread, self._wakes_ns = {}, None, _NEVER


def _due_ns(bar: _Bar) -> int:
    """When the ticker shows the bar or draws it again (``_NEVER``: a bar that could not be made)."""
    return bar.show_at_ns if bar.tqdm is None else bar.drawn_ns + int(TICK_SECONDS * 1e9)


def _tick(call: CallInfo, bar: _Bar) -> None:
    with bar.lock, _DRAWING:
        if bar.closed:
            return
        if bar.tqdm is None:
            _show(call, bar)
        elif not _relabel(call, bar):
            bar.tqdm.refresh()
        bar.drawn_ns = time.monotonic_ns()


def _relabel(call: CallInfo, bar: _Bar) -> bool:
    """The label names where the call runs now (drawn at once; True): a bar made before the plan named none, and
    one of a serial run that outgrew its estimate said [serial] to the end of a run moved to a pool."""
    if bar.strategy == _strategy(call):
        return False
    bar.strategy = _strategy(call)
    bar.tqdm.set_description(_label(call))
    return True


_DRAWING = threading.Lock()
"""Held while a bar is drawn, and by a fork: tqdm's lock, held in the child by a draw of another thread that a
fork cut (the ticker's, every second), hung the child's first bar for good, and with it, through tqdm's lock
that processes share, the parent's next draw (review 77)."""


def _before_fork() -> None:
    _DRAWING.acquire()


def _after_fork_in_parent() -> None:
    _DRAWING.release()


def _after_fork_in_child() -> None:
    """The child's own lock (the parent's, taken for the fork, stays held in it) and no ticker of the parent's;
    the hooks look the lock up anew, so a child that forks again takes its own (hooks bound to the first lock
    hung a child's fork for good)."""
    global _DRAWING
    _DRAWING = threading.Lock()
    _TICKER.forked()


_TICKER = _Ticker()
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


ASKED_ONLY = Progress(asked_only=True)
"""On an executor given observers of the user's own: ``progress=True`` is a call's own request, and it drew
nothing there, without a word (hunt 71); a bar nobody asked for stays off, as those observers chose."""


def _show(call: CallInfo, bar: _Bar) -> None:
    """Make the call's tqdm bar, counting from the call's start: its elapsed time and rate are the call's."""
    bar.show_at_ns = _NEVER  # made once: a bar that cannot be made is not tried again at every chunk
    cls = _bar_class(asked=bool(call.progress))
    if cls is None:
        return
    with _whole():
        made: Any = cls(total=call.told_length if call.stream else call.n_items, unit="item", leave=False,
                        desc=_label(call), dynamic_ncols=True, delay=1e-9,  # drawn below, on the call's clock
                        file=bar.file)
        bar.tqdm, bar.strategy = made, _strategy(call)
        bar.shown = _displayed(made)
    made.start_t = made.last_print_t = call.started_at
    bar.drawn_ns = time.monotonic_ns()
    if bar.done:
        made.update(bar.done)
    else:
        made.refresh()
        made.last_print_t = time.time()  # drawn: closing clears it


def _displayed(made: Any) -> Any:
    """A notebook bar shown under a display id, for its close to empty (tqdm's own display has none): a
    notebook run by nbclient (papermill, ``nbconvert --execute``) saves each display as it was last sent, and
    kept a completed call's bar frozen short of its end ("34%"), its widgets closed (hunt 66)."""
    box = getattr(made, "container", None)
    if box is None:
        return None
    from IPython.display import display

    made.displayed = True  # tqdm's first draw shows it without an id otherwise
    return display(box, display_id=True)  # type: ignore[no-untyped-call]


def _label(call: CallInfo) -> str:
    return f"{call.workload} [{_strategy(call)}]"


def _strategy(call: CallInfo) -> str:
    return call.selected_strategy or call.requested_strategy


def _bar_class(asked: bool) -> Any:
    """tqdm's widget bar in a notebook that can show widgets, its text bar elsewhere; None without tqdm.

    Chosen here rather than by ``tqdm.auto``, which warns "IProgress not found" in a kernel without
    ipywidgets: a bar nobody asked for falls back to text without a word.
    """
    try:
        import tqdm
    except ImportError:  # the [progress] extra is not installed
        if asked:
            _say_once("payoff: progress=True needs tqdm: pip install 'payoff[progress]'")
        return None
    if _widgets_shown():
        from tqdm import notebook  # imports whether ipywidgets is there or not: IProgress None if not

        if getattr(notebook, "IProgress", None) is not None:
            return notebook.tqdm
    return tqdm.tqdm


def _widgets_shown() -> bool:
    """A Jupyter kernel whose frontend draws widgets (as ``tqdm.autonotebook`` tells: not qtconsole or Spyder)."""
    if "ipykernel.zmqshell" not in sys.modules or _forked_from_kernel():
        return False
    if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
        return False
    ipython = getattr(imported("IPython"), "get_ipython", None)
    shell = type(ipython()).__name__.lower() if ipython is not None else ""
    return "qt" not in shell and "spyder" not in shell


def _close(bar: Any, shown: Any = None) -> None:
    """Close the bar and, in a notebook, every widget it made, and empty its display.

    tqdm's notebook bar closes only its outer box, and none at all when the call
    ended early (an error, Ctrl-C): it turns red and stays. Its texts, bar,
    layouts and styles would stay open in the kernel and saved in the notebook.
    """
    box = getattr(bar, "container", None)
    if box is None:
        bar.close()  # text: clears its line
        return
    import tqdm

    with _whole():
        try:
            tqdm.tqdm.close(bar)  # the text bar's close: unregisters the bar, draws nothing
        finally:
            _close_widgets(box)
            if shown is not None:
                shown.update({"text/plain": ""}, raw=True)


@contextlib.contextmanager
def _whole() -> Iterator[None]:
    """Ctrl-C waits until a notebook bar is whole or gone: cut short inside tqdm or ipywidgets, it would
    leave widgets that nothing closes. The interrupt is raised again right after (main thread only, where
    Python delivers it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler not set from Python: left alone
        yield
        return
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _close_widgets(box: Any) -> None:
    """Close ``box`` first (its view leaves the page at once), then every widget reachable from it."""
    from ipywidgets import Widget

    found: list[Any] = []
    todo, seen = [box], set()
    while todo:
        widget = todo.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        found.append(widget)
        for name in widget.keys:
            value = getattr(widget, name, None)
            todo.extend(v for v in (value if isinstance(value, (tuple, list)) else (value,)) if isinstance(v, Widget))
    for widget in found:
        widget.close()
