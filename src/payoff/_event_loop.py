"""A blocking ``map`` called straight on a running asyncio event loop: said once per call site.

In a service (FastAPI, aiohttp) every request is a task of one loop. A ``map``
called in a handler's coroutine holds that loop for the whole call, so the
other requests wait, with nothing in the record to say why: the call itself ran
as well as it would anywhere. ``await asyncio.to_thread(ex.map, ...)`` is the
way; a map run like that has no loop in its thread and is not looked at again.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from payoff._imported import imported
from payoff.errors import EventLoopBlockedWarning
from payoff.observers import SiteWarnings, find_call_site

_KERNELS = ("ipykernel", "IPython")
"""A notebook cell runs inside the kernel's loop (in its ``shell_main`` task): a cell that maps is meant to block."""

_shown = SiteWarnings()


def blocking_loop() -> Any | None:
    """The asyncio loop this thread runs now and a map here would hold, if any.

    asyncio is not imported for a program that never imported it: no loop runs then.
    """
    aio = imported("asyncio")
    if aio is None:
        return None
    loop = aio.events._get_running_loop()
    if loop is None or _in_kernel_cell(aio, loop):
        return None
    return loop


def _in_kernel_cell(aio: Any, loop: Any) -> bool:
    task = aio.current_task(loop)
    if task is None:
        return _KERNELS[0] in sys.modules  # an older kernel runs cells from a callback, not a task
    frame = getattr(task.get_coro(), "cr_frame", None)
    name = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return name.split(".")[0] in _KERNELS


def warn_if_held(loop: Any, started: float, n_items: int) -> None:
    """Warn at the caller's line when the call held the loop past its own bar for a slow step."""
    held = time.monotonic() - started
    if held > _bar(loop):
        _warn(loop, f"a map of {n_items:,} item{'s' if n_items != 1 else ''} blocked the running asyncio "
              f"event loop for {held:.2f} s", "no other task of the loop ran meanwhile",
              "`await asyncio.to_thread(ex.map, fn, items)`")


def warn_if_waited(loop: Any, held: float) -> bool:
    """Warn at the consumer's line once an imap's waits for its results, in all, held the loop past its bar:
    each ``next()`` waits in the loop's thread (True once said, for the call to stop counting)."""
    if held <= _bar(loop):
        return False
    _warn(loop, f"an imap's waits for its results blocked the running asyncio event loop for {held:.2f} s "
          "so far", "no other task of the loop ran while it waited",
          "`await asyncio.to_thread(lambda: list(ex.imap(fn, items)))`, or take each result with "
          "`await asyncio.to_thread(next, results, None)`")
    return True


def _bar(loop: Any) -> float:
    return float(getattr(loop, "slow_callback_duration", 0.1))


def _warn(loop: Any, what: str, consequence: str, way: str) -> None:
    text = (f"payoff: {what} (its slow_callback_duration is {_bar(loop):g} s): {consequence}. In a coroutine, "
            f"run it in a thread: {way}")
    _shown.warn(find_call_site(), EventLoopBlockedWarning(text))
