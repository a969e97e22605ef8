"""Warnings an item raises in a worker process, shown in the caller as a loop would show them.

A loop's warnings go through the caller's ``warnings`` machinery: its filters, ``catch_warnings``,
``pytest.warns``, a notebook cell's output. A worker process printed them to its own stderr instead, which a
Jupyter kernel's forked workers share with the server's terminal, not the cell: a scikit-learn
``ConvergenceWarning`` of a fold fit on processes never reached the notebook, and ``catch_warnings(record=True)``
around ``map`` caught 0 of 20 where a loop caught 20 (hunt 68). The worker applies the caller's filters
(``_warning_filters``); what they let through is kept with the chunk's outcome, and the caller shows it again
where it collects the chunk, deduplicated in the registry of the warning's module (``__warningregistry__``),
which the same warnings raised in the caller fill too.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from payoff._chunk_kept import Kept

RELAY_CAP = 1_000
"""A chunk relays at most this many warnings (an ``"always"`` filter over a million items); the rest are shown
where they are raised, as before."""

Relayed = tuple[Any, type[Warning], str, int, str | None]
"""A warning's message (its object, or its text where that cannot travel), category, file, line and module."""

_module_of: dict[str, str | None] = {}


def _install() -> None:
    """Route this process's shown warnings through :func:`_show`."""
    warnings.showwarning = _showing(warnings.showwarning)


_KEPT: Kept[Relayed] = Kept(RELAY_CAP, _install)


def collecting() -> AbstractContextManager[list[Relayed]]:
    """Keep the warnings this thread raises while a chunk runs (the thread of the chunk only: an item's own
    threads show theirs where they are). A process pool's workers only: a dask worker's tasks share its threads'
    filters, which the caller's never reach."""
    return _KEPT.collecting()


def _showing(shown_before: Callable[..., None]) -> Callable[..., None]:
    def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: Any = None, line: str | None = None) -> None:
        kept = _KEPT.list()
        if kept is None or file is not None:
            shown_before(message, category, filename, lineno, file, line)
            return
        kept.append((message, category, filename, lineno, _module_named(filename, lineno)))
    return _show


def _module_named(filename: str, lineno: int) -> str | None:
    """The module's name for the caller's filters (which match names, not paths): that of the frame that
    warned, as ``warnings.warn`` read it (a function sent by value and a notebook cell's are ``__main__``,
    which a file's path never names: Python's own ``default::DeprecationWarning:__main__`` then matched
    nothing, review 74); else the module loaded from the file."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == filename and frame.f_lineno == lineno:
            name = frame.f_globals.get("__name__")
            # a spawned or forkserver worker runs the main script as __mp_main__: the caller's is __main__
            return ("__main__" if name == "__mp_main__" else name) if isinstance(name, str) else None
        frame = frame.f_back
    if filename not in _module_of:
        _module_of[filename] = next((name for name, module in list(sys.modules.items())
                                     if getattr(module, "__file__", None) == filename), None)
    return _module_of[filename]


def travelling(kept: list[Relayed], dumps: Callable[[Any], bytes]) -> tuple[Relayed, ...]:
    """The kept warnings as they can travel: a message object that cannot, as its text; a category that cannot,
    as a ``UserWarning`` that names it."""
    out = []
    for message, category, filename, lineno, module in kept:
        try:
            dumps((message, category))
        except Exception:
            try:
                dumps(category)
                message = str(message)
            except Exception:
                message, category = f"{category.__qualname__}: {message}", UserWarning
        out.append((message, category, filename, lineno, module))
    return tuple(out)


_registries: dict[str, dict[Any, Any]] = {}
"""Per module not loaded in the caller, what was shown of it."""


def _registry(module: str | None, filename: str) -> dict[Any, Any]:
    """The module's own ``__warningregistry__`` where the caller loaded it, which its warnings raised here fill
    too (an auto call's probed items, a loop of the user's): a registry of the relay's own showed them twice
    (review 74). A worker's ``__main__`` is the caller's where both run one script (fork) or one notebook."""
    namespace = getattr(sys.modules.get(module), "__dict__", None) if module is not None else None
    if isinstance(namespace, dict):  # a module (a class put in sys.modules has a mappingproxy)
        registry = namespace.setdefault("__warningregistry__", {})
        if isinstance(registry, dict):
            return registry
    return _registries.setdefault(module or filename, {})


def show_here(relayed: Iterable[Relayed]) -> None:
    """Show a chunk's warnings in the caller, through its filters and its ``showwarning``."""
    for message, category, filename, lineno, module in relayed:
        registry = _registry(module, filename)
        if module is None:  # an explicit module=None shows nothing (CPython's C warn_explicit): the file's
            warnings.warn_explicit(message, category, filename, lineno, registry=registry)
        else:
            warnings.warn_explicit(message, category, filename, lineno, module=module, registry=registry)

