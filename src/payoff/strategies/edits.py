"""A module of the user's edited on disk and not loaded again here: its code goes to the workers by value.

Workers of a spawn, forkserver or loky pool import a user's module when a chunk first names it, from its file as
it is then (a forked worker too, for a module this process imported after the fork). After an edit saved but not
loaded here (no reload; IPython's ``%autoreload 1`` without ``%aimport``), such a worker ran the edited file while
this process ran the old code: wrong results without a word, in every run of a pool started after the edit or of
a worker replacing a crashed one (hunt 73). A fresh pool cannot help, its workers import the edited file too; so
the modules travel by value (cloudpickle's ``register_pickle_by_value``) until this process loads the file
again. The pool is kept, and a :class:`~payoff.errors.ModuleEditedWarning` says so once per edit.

Only the modules a call's function needs are checked: its own, and the user's modules reachable from it, which a
worker importing it by name imports too. Those are found once per module and kept until the module is executed
again here, so a call pays one ``stat`` per module it needs, however many modules the project has: checking every
one of the user's modules cost 0.84 ms a call with 262 of them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

from payoff._globals_read import bound_now
from payoff.strategies import reloads
from payoff.strategies.reloads import users_module

_DEPS: dict[str, tuple[Any, Any, tuple[str, ...] | None]] = {}
"""Module name to ``(its spec, its loaded record, the user's modules it names)`` as found (None: not the user's).
Found again once the module is executed again here (a new spec, or a new record: autoreload in place)."""

_LOCK = threading.Lock()
"""Guards the registrations below against another thread's: cloudpickle's registry is one set for the process."""

_SENT: set[str] = set()
"""The modules registered to travel by value for an edit, by this module (a foreign one is registered for good)."""

_TOLD: set[tuple[str, Any]] = set()
"""``(module, the version it was loaded from)`` of the edits told of."""


def needed(fn: Any) -> set[str]:
    """The user's modules a worker importing ``fn`` by name imports too (forked ones aside): ``fn``'s own module,
    the modules its import names, and theirs in turn."""
    found: set[str] = set()
    todo = list(_roots(fn))
    while todo:
        name = todo.pop()
        deps = _deps(name) if name not in found else None
        if deps is not None:
            found.add(name)
            todo.extend(deps)
    return found


def _roots(fn: Any) -> set[str]:
    """The modules pickle names for ``fn``: its own (a partial's function's and arguments', a bound method's
    object's), and for a function of ``__main__`` (which is not the user's module here: a script run again by
    spawned workers, or a notebook's cell sent by value) those of the globals it reads."""
    own = getattr(fn, "__module__", None) if type(fn) is types.FunctionType else None
    if isinstance(own, str) and own != "__main__":
        return {own}  # the common case, first: a plain function of a module
    parts = [fn.func, *fn.args, *fn.keywords.values()] if isinstance(fn, functools.partial) else [fn]
    out: set[str] = set()
    for part in parts:
        for obj in (part, getattr(part, "__self__", None)):
            name = _module_of(obj)
            if name == "__main__" and isinstance(obj, types.FunctionType):
                out |= _main_roots(obj)
            elif name is not None:
                out.add(name)
    return out


def _main_roots(fn: types.FunctionType, seen: set[int] | None = None) -> set[str]:
    """The modules of what a ``__main__`` function's globals are bound to now, through the ``__main__``
    functions it calls."""
    seen = seen if seen is not None else set()
    seen.add(id(fn))
    out: set[str] = set()
    for obj in bound_now(fn):
        name = _module_of(obj)
        if name == "__main__" and isinstance(obj, types.FunctionType) and id(obj) not in seen:
            out |= _main_roots(obj, seen)
        elif name is not None and name != "__main__":
            out.add(name)
    return out


def _module_of(obj: Any) -> str | None:
    """The module ``obj`` is, or is named from: a module's own name, a function's or class's (or an instance's
    class's) ``__module__``."""
    try:
        name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    except Exception:  # a lazy proxy whose attributes raise: nothing a worker would import by it
        return None
    return name if isinstance(name, str) else None


def _deps(name: str) -> tuple[str, ...] | None:
    """The user's modules the user's module ``name`` names (None: not the user's, or not imported here), kept
    until it is executed again here."""
    module = sys.modules.get(name)
    if module is None:
        return None
    spec, record = getattr(module, "__spec__", None), reloads.loaded(name)
    kept = _DEPS.get(name)
    if kept is not None and kept[0] is spec and kept[1] is record:
        return kept[2]
    deps = _named_by(name, module) if users_module(name, module) else None
    _DEPS[name] = (spec, record, deps)  # one assignment: a thread finding it meanwhile finds it alike
    return deps


def _named_by(name: str, module: types.ModuleType) -> tuple[str, ...]:
    """The user's modules a worker importing ``module`` imports too: its packages, and the modules of what its
    namespace holds (modules, functions, classes, instances)."""
    parts = name.split(".")
    found = {".".join(parts[:i]) for i in range(1, len(parts))}
    found.update(ref for ref in map(_module_of, list(vars(module).values())) if ref is not None)
    found.discard(name)
    modules = sys.modules
    return tuple(sorted(ref for ref in found if ref in modules and users_module(ref, modules[ref])))


def send_edited(edited: list[str], among: Iterable[str]) -> list[str]:
    """Register ``edited`` and the modules of ``among`` naming them, however indirectly (a worker importing
    those by name would import the edited files from disk), to travel by value; the edits not told of yet."""
    import cloudpickle

    with _LOCK:
        registered = cloudpickle.list_registry_pickle_by_value()
        for name in sorted(_leading_to(set(edited), among) - _SENT - registered):
            module = sys.modules.get(name)
            with contextlib.suppress(ValueError):  # gone from sys.modules meanwhile: it goes by name, as before
                if module is not None:
                    cloudpickle.register_pickle_by_value(module)
                    _SENT.add(name)
        marks = {(name, getattr(reloads.loaded(name), "version", None)) for name in edited}
        fresh = sorted(name for name, _ in marks - _TOLD)
        _TOLD.update(marks)
    return fresh


def _leading_to(edited: set[str], among: Iterable[str]) -> set[str]:
    """``edited``, and the modules of ``among`` naming one of them, however indirectly."""
    found, rest = set(edited), set(among) - edited
    grew = True
    while grew:
        leading = {name for name in rest if found.intersection(_deps(name) or ())}
        found, rest, grew = found | leading, rest - leading, bool(leading)
    return found


def unsend_loaded() -> None:
    """Stop sending by value the modules registered for edits once no edit is pending (loaded here since): from
    then on the workers import the file this process runs. Under the lock, so another thread's call that found
    an edit registers after this, never between its check and its unregistering."""
    if not _SENT:
        return
    import cloudpickle

    with _LOCK:
        if reloads.stale(sorted(_SENT)):
            return
        for name in sorted(_SENT):
            module = sys.modules.get(name)
            with contextlib.suppress(ValueError):
                if module is not None:
                    cloudpickle.unregister_pickle_by_value(module)
        _SENT.clear()


def keep_by_value(module: types.ModuleType) -> None:
    """Register ``module`` (out of the workers' reach) to travel by value for good: never unregistered for an
    edit loaded, even by a thread unregistering meanwhile (both under the lock)."""
    import cloudpickle

    with _LOCK, contextlib.suppress(ValueError):  # gone from sys.modules meanwhile: it goes by name, as before
        cloudpickle.register_pickle_by_value(module)  # a set: registering again changes nothing
        _SENT.discard(module.__name__)
