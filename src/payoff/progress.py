"""Progress bars for long maps (tqdm: a widget in notebooks, text in terminals).

Off in non-interactive runs (CI logs, pipes) unless a call asks with
``progress=True``; tqdm's ``delay`` keeps short calls from flashing a bar.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from payoff.observers import CallInfo, Observer
from payoff.record import ChunkStats, MapRecord

SHOW_AFTER_SECONDS = 0.5


_tty: tuple[object, bool] = (None, False)
"""(stream, is it a terminal): ``isatty`` is a system call, asked again only when stderr is replaced."""


def interactive() -> bool:
    """A terminal on stderr, or a Jupyter kernel."""
    global _tty
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    if _tty[0] is not stream:
        _tty = (stream, _isatty(stream))
    return _tty[1]


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


class Progress(Observer):
    """One bar per call that wants one; advanced as chunks finish."""

    def map_planned(self, call: CallInfo) -> None:
        wanted = call.progress if call.progress is not None else interactive()
        if not wanted or (call.n_items == 0 and not call.stream):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the [progress] extra is not installed
            if call.progress:
                _say_once("payoff: progress=True needs tqdm: pip install 'payoff[progress]'")
            return
        bar: Any = tqdm(total=None if call.stream else call.n_items, desc=f"{call.workload} [{call.selected_strategy}]",
                        unit="item", leave=False, delay=0.0 if call.progress else SHOW_AFTER_SECONDS,
                        dynamic_ncols=True)
        call.state["progress"] = bar

    def chunk_finished(self, call: CallInfo, chunk: ChunkStats) -> None:
        bar = call.state.get("progress")
        if bar is not None:
            bar.update(chunk.n_items)

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        bar = call.state.pop("progress", None)
        if bar is not None:
            bar.close()
