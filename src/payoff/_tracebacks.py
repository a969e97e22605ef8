"""An item's error as a loop would show it: the caller's frames, the ``map`` it called, then the function's own.

Between ``map`` and the function lie 8-10 frames of payoff's machinery (planning, the call's driver, the chunk
runner); a notebook user reading an item's error had to scroll past them to their own line. Errors payoff
raises itself keep every frame: where it raised them is what a bug report needs.
"""

from __future__ import annotations

import os
from types import TracebackType

RAISED_BY = "payoff: raised by item "
"""The start of the note payoff adds to an item's error, naming the item (``worker.noted``)."""

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _ours(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE)


def from_the_function(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first frame outside payoff: the item's function (or, through a wrapper payoff gave it,
    the code it wraps). None when every frame is payoff's: the error was raised in another process, and the
    function's frames are in its cause."""
    while tb is not None and _ours(tb):
        tb = tb.tb_next
    return tb


def an_items(error: BaseException) -> bool:
    """Whether ``error`` was raised by an item of a map (payoff noted which), not by payoff."""
    try:  # an exception's own __getattr__ or __notes__ property may raise anything: then it is not told apart
        notes = getattr(error, "__notes__", ())
        return isinstance(notes, list) and any(isinstance(n, str) and n.startswith(RAISED_BY) for n in notes)
    except Exception:
        return False


def show_from_the_function(error: BaseException) -> bool:
    """Cut an item's ``error``'s traceback to the function's frames, for the frame that raises it again to
    head (then the caller's); False, and ``error`` untouched, for any other error, which that frame re-raises
    as it is (a bare ``raise``: ``raise error`` would add that frame a second time)."""
    if not an_items(error):
        return False
    error.__traceback__ = from_the_function(error.__traceback__)
    return True
