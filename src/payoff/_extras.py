"""Imports of optional dependencies: a missing one is reported with the extra that installs it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def extra_needed(extra: str, purpose: str) -> Iterator[None]:
    """Re-raise a ``ModuleNotFoundError`` inside as one that names ``pip install 'payoff[extra]'``.

    A pip user who reaches a feature without its extra got a bare "No module named 'distributed'" (or
    'opentelemetry.exporter', 'calibrated_explanations'), and had to guess which extra brings it.
    """
    before = set(sys.modules)
    try:
        yield
    except ModuleNotFoundError as exc:
        what = f"the {exc.name!r} package" if exc.name else f"a package it could not import ({exc})"
        raise ModuleNotFoundError(f"payoff: {purpose} needs {what}, which payoff's {extra!r} extra installs: "
                                  f"pip install 'payoff[{extra}]'", name=exc.name) from exc
    except BaseException:
        forget_imported_since(before)
        raise


@contextlib.contextmanager
def imports_undone_if_cut() -> Iterator[None]:
    """What a block imported, forgotten where it was cut short (a Ctrl-C while a pool's start imports its
    backend): see :func:`forget_imported_since`."""
    before = set(sys.modules)
    try:
        yield
    except BaseException:
        forget_imported_since(before)
        raise


def forget_imported_since(before: set[str]) -> None:
    """The modules imported since ``before`` that an import cut short left unusable, dropped so that the next
    use imports them afresh: see :func:`_forget_orphans` and :func:`_forget_holders_of_half_made`."""
    _forget_orphans(before)
    _forget_holders_of_half_made(before)
    _forget_orphans(before)  # a package dropped as a holder leaves its submodules orphans


def _forget_holders_of_half_made(before: set[str]) -> None:
    """A module that bound a half-made one in a circular import (loky's ``synchronize`` binds
    ``resource_tracker`` while that one still imports) keeps it when the import is cut short, and every later
    use of it raised "partially initialized module ... has no attribute" (hunt 58: a Ctrl-C in a first joblib
    map broke the next ``submit``). Such holders, and in turn the modules imported since that hold them, are
    dropped; modules that finished and hold nothing dropped stay."""
    new = [name for name in set(sys.modules) - before if isinstance(sys.modules.get(name), ModuleType)]
    dropped = True
    while dropped:
        dropped = False
        for name in new:
            module = sys.modules.get(name)
            if module is not None and any(_dropped_since(value, before) for value in list(vars(module).values())):
                sys.modules.pop(name, None)
                dropped = True


def _dropped_since(value: object, before: set[str]) -> bool:
    """Whether ``value`` is a module whose import began since ``before`` and that ``sys.modules`` no longer
    holds: by the name it was imported under (its spec's), not its ``__name__`` (``_collections_abc`` calls
    itself ``collections.abc``: every finished module holding it was dropped, cloudpickle and joblib's 39 with
    it, in review)."""
    if not isinstance(value, ModuleType):
        return False
    name = getattr(getattr(value, "__spec__", None), "name", None)
    return isinstance(name, str) and name not in before and sys.modules.get(name) is not value


def _forget_orphans(before: set[str]) -> None:
    """An import cut short (a Ctrl-C while ``distributed`` imported) drops the package whose code was running,
    and keeps the submodules it had finished: imported again, the package lacks them as attributes, and every
    later dask call of the process failed with "module 'distributed' has no attribute 'utils'" (interrupts
    trial). Those submodules are dropped too, so the next call imports the package whole; packages that finished
    importing meanwhile (tornado, msgpack) are kept, as other modules may hold their objects already."""
    for name in set(sys.modules) - before:
        if name.partition(".")[0] not in sys.modules:
            sys.modules.pop(name, None)
