"""An item's exception that its own pickle cannot rebuild, sent as its class, arguments and attributes.

Pickle rebuilds an exception by calling its class with its ``args``. One whose ``__init__`` takes other
arguments than it hands on (``def __init__(self, code, detail): super().__init__(f"{code}: {detail}")``, as
many libraries' do) cannot be rebuilt so, and the caller got a ``RemoteError`` where a loop raised the class
itself: ``except TwoArgError`` missed it, and its attributes were gone (hunt 76). Made afresh without its
``__init__`` (as ``BaseException.__new__`` makes any exception, ``args`` set) and given its attributes, it
arrives as its class; an attribute pickle cannot send (a lock) stays behind, and a note names it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any


class _Carried(Exception):
    """Stands for the error in the worker's pickle of it, and unpickles as the error itself."""

    def __init__(self, kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> None:
        super().__init__(kind.__qualname__)
        self.kind, self.error_args, self.state = kind, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (self.kind, self.error_args, self.state)


def _rebuilt(kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = BaseException.__new__(kind, *args)
    error.__dict__.update(state)
    return error


def sendable(error: BaseException, dumps: Callable[[Any], bytes]) -> BaseException | None:
    """What stands for ``error`` in its chunk's pickle, to arrive as its class; None where even that cannot
    travel (its class not importable, or built in C with fields of its own: ``BaseException.__new__`` refuses
    it)."""
    try:
        args = tuple(error.args)
        _rebuilt(type(error), args, {})
        state, left = {}, []
        for name, value in vars(error).items():
            try:
                dumps(value)
            except Exception:
                left.append(name)
            else:
                state[name] = value
        if left:
            notes = [note for note in state.get("__notes__", []) if isinstance(note, str)]
            state["__notes__"] = [*notes, f"payoff: its attribute(s) {', '.join(left)} could not travel from the "
                                          "worker process (pickle refused them), and were left out"]
        carried = _Carried(type(error), args, state)
        pickle.loads(dumps(carried))
    except Exception:
        return None
    return carried
