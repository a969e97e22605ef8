"""What a loop's items see of the caller besides their arguments, sent with each chunk to worker processes.

A loop's items run in the caller's working directory, environment and context: its context variables, decimal's
context and numpy's error state among them. A warm process pool kept those of its start (a fresh interpreter
only its defaults), so after ``os.chdir``, a changed ``os.environ``, ``decimal.getcontext().prec = 50``,
``np.seterr(divide="raise")`` or a ``ContextVar`` set in the caller, 191-300 of 300 items returned what the old
state gave, with no error (hunt 76). Each chunk now carries that state, kept while it stays the same, and the
worker takes it on before the chunk's items run.

What travels: the directory; each environment variable the caller changed since payoff was imported (the ones
it never touched are the worker's own, and the thread limits payoff sets in workers stay theirs); decimal's
context and numpy's error state; and each context variable a module holds by name, with a value pickle can
send. Others (a variable an object holds, a value of a class defined in ``__main__``) are left out, not the
chunk. Values are compared by identity: an object the caller changes in place travels again only when the
variable is set again, as ``ContextVar`` asks. Dask's workers may be other machines: nothing travels there.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar, cast

from payoff import _relayed_logs
from payoff._native_threads import USER_SETS

T = TypeVar("T")

VALUE_BYTES = 64 << 10
"""A context variable's value pickled larger than this stays behind: each chunk carries the values (a loop's
items read them for nothing: a 0.5 MB value on each of 200 chunks made a map 0.07 s -> 0.31 s, review 83), and
a large one belongs in the items or the function. Pickling stops at the cap, and an array is not pickled."""
_NUMPY_VAR = "numpy.ufunc.extobj"
"""The name of numpy's (2.0+) context variable of its error state, whose value (a capsule) pickle cannot send."""


class State(NamedTuple):
    """The caller's state as a chunk carries it: plain values, so equal states compare equal in the worker."""

    cwd: str | None
    env: tuple[tuple[str, str | None], ...]
    context: tuple[bytes, ...]
    log_levels: tuple[tuple[str, int], ...] = ()


def _env_now() -> dict[Any, Any]:
    """The environment as ``os.environ`` holds it (encoded on POSIX): compared with one dict compare."""
    return dict(getattr(os.environ, "_data", os.environ))


def _decoded(key: Any) -> str:
    return os.fsdecode(key) if isinstance(key, bytes) else str(key)


class _Env:
    """The caller's changes to its environment since import, each key once changed shipped from then on (its
    value, or None once removed), so a worker that took a change also takes it back. Threads calling at once
    each build their own answer and swap in one tuple: a cache updated piece by piece handed one thread's
    state to another's chunks (review 83)."""

    def __init__(self) -> None:
        self.base = _env_now()
        self.last: tuple[Any, frozenset[Any], tuple[tuple[str, str | None], ...]] = (self.base, frozenset(), ())

    def now(self) -> tuple[tuple[str, str | None], ...]:
        seen, touched, shipped = self.last
        data = getattr(os.environ, "_data", None)
        if data is not None and data == seen:
            return shipped
        now = _env_now()
        if now == seen:
            return shipped
        base = self.base
        touched = touched | {key for key in now.keys() | base.keys() if now.get(key) != base.get(key)}
        names = sorted(_decoded(key) for key in touched)
        shipped = tuple((name, now_value) for name in names if name not in USER_SETS
                        for now_value in (os.environ.get(name),))
        self.last = (now, touched, shipped)
        return shipped


_ENV = _Env()

class _Homes:
    """Where each module-level context variable lives: one pass over every module's names finds them all (a
    Jupyter kernel's context holds 8 variables that no module holds, each of which a pass of its own took
    16 ms to look for), made again only when a variable not found yet meets more modules than the last pass."""

    def __init__(self) -> None:
        self.found: dict[contextvars.ContextVar[Any], tuple[str, str]] = {}
        self.modules = -1

    def of(self, var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
        """The module and name that hold ``var``; None when none does, or payoff does (its own variables
        describe this process, not the caller)."""
        if var not in self.found and len(sys.modules) != self.modules:
            self.modules = len(sys.modules)
            for name, module in list(sys.modules.items()):
                if module is not None and name != "payoff" and not name.startswith("payoff."):
                    for attr, value in _names(module):
                        if type(value) is contextvars.ContextVar:  # no isinstance: it reads a lazy object's __class__
                            self.found.setdefault(value, (name, attr))
        return self.found.get(var)


_HOMES = _Homes()


def _names(module: Any) -> list[tuple[str, Any]]:
    with contextlib.suppress(Exception):  # a module object whose __dict__ is odd, or changing under us
        return list(vars(module).items())
    return []


def _decimal_key(value: Any) -> tuple[Any, ...]:
    """A decimal context's settings: the object changes in place (``getcontext().prec = 50``)."""
    return (value.prec, value.rounding, value.Emin, value.Emax, value.capitals, value.clamp,
            tuple(value.traps.values()))


def _entry(var: contextvars.ContextVar[Any], value: Any) -> bytes | None:
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Context):
        sent = value.copy()
        sent.clear_flags()
        return pickle.dumps(("decimal", sent))
    if var.name == _NUMPY_VAR:
        numpy = sys.modules.get("numpy")
        return None if numpy is None else pickle.dumps(("numpy", numpy.geterr()))
    home = _HOMES.of(var)
    if home is None:
        return None
    if getattr(value, "nbytes", 0) > VALUE_BYTES:  # an array: not pickled to be found too large
        return None
    sink = _Capped(VALUE_BYTES)
    try:
        pickle.Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(("var", *home, value))
    except Exception:  # a value pickle cannot send, or too large: the worker's own value stands
        return None
    return b"".join(sink.parts)


class _Capped:
    """A pickle's output, refused past ``cap`` bytes: pickling a large value stops there."""

    def __init__(self, cap: int) -> None:
        self.cap, self.size, self.parts = cap, 0, cast("list[bytes]", [])

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.cap:
            raise ValueError("over the cap")
        self.parts.append(bytes(data))
        return len(data)


class _Context:
    """The caller's context variables, pickled again only when a variable or a value changed (each value once
    while it stays: a request id set per call no longer pickles the other variables' values again). Threads
    swap in one tuple, as ``_Env`` does."""

    def __init__(self) -> None:
        self.last: tuple[tuple[tuple[contextvars.ContextVar[Any], Any], ...], tuple[Any, ...], tuple[bytes, ...],
                         dict[tuple[int, int], bytes | None]] = ((), (), (), {})

    def now(self) -> tuple[bytes, ...]:
        items = tuple(contextvars.copy_context().items())
        decimal = sys.modules.get("decimal")
        settings = () if decimal is None else tuple(_decimal_key(value) for _, value in items
                                                    if isinstance(value, decimal.Context))
        last_items, last_settings, shipped, memo = self.last
        if settings == last_settings and _same(items, last_items):
            return shipped
        kept = {(id(var), id(value)): memo.get((id(var), id(value)), _UNSEEN) for var, value in items}
        entries = []
        for var, value in items:
            entry = kept[id(var), id(value)]
            if entry is _UNSEEN or (decimal is not None and isinstance(value, decimal.Context)):
                entry = kept[id(var), id(value)] = _entry(var, value)
            if entry is not None:
                entries.append(cast(bytes, entry))
        shipped = tuple(entries)
        self.last = (items, settings, shipped, cast("dict[tuple[int, int], bytes | None]", kept))
        return shipped


_UNSEEN: Any = object()


def _same(items: tuple[tuple[Any, Any], ...], last: tuple[tuple[Any, Any], ...]) -> bool:
    """By identity: values such as arrays have no ``==`` that answers yes or no."""
    return len(items) == len(last) and all(a is c and b is d for (a, b), (c, d) in zip(items, last, strict=True))


_CONTEXT = _Context()


def shipped() -> State:
    """The caller's state now, for a chunk about to be sent (in the caller's thread: its context is the one)."""
    return State(_cwd(), _ENV.now(), _CONTEXT.now(), _relayed_logs.levels())


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed after the process went there
        return None


_CWD_AT_IMPORT = _getcwd()
_cwd_moved = False


def _cwd() -> str | None:
    """The caller's directory once it has left the one it had at import (its workers started in that one), and
    from then on; else None, the workers' own (one a ``worker_initializer`` chose stays: review 83). None too
    where the caller's directory is gone: the workers keep theirs."""
    global _cwd_moved
    now = _getcwd()
    if not _cwd_moved and now != _CWD_AT_IMPORT and now is not None:
        _cwd_moved = True
    return now if _cwd_moved else None


# ---------------------------------------------------------------------------------------------- in the worker

_loaded: tuple[tuple[bytes, ...], list[Callable[[], object]]] = ((), [])


def _setter(blob: bytes) -> Callable[[], object] | None:
    """What sets one shipped entry in the chunk's context; None when this process cannot take it."""
    try:
        kind, *rest = pickle.loads(blob)
    except Exception:  # a class this worker cannot import
        return None
    if kind == "decimal":
        import decimal

        return lambda: decimal.setcontext(rest[0].copy())
    if kind == "numpy":
        import numpy

        return lambda: numpy.seterr(**rest[0])
    module, name, value = rest
    var = _var_in(module, name)
    return None if var is None else (lambda: var.set(value))


def _var_in(module: str, name: str) -> contextvars.ContextVar[Any] | None:
    try:
        held = getattr(sys.modules.get(module) or importlib.import_module(module), name, None)
    except Exception:  # not importable here (a script run as __main__ that a fresh worker does not have)
        return None
    return held if isinstance(held, contextvars.ContextVar) else None


def _setters(context: tuple[bytes, ...]) -> list[Callable[[], object]]:
    global _loaded
    if context != _loaded[0]:
        _loaded = (context, [setter for setter in map(_setter, context) if setter is not None])
    return _loaded[1]


_initializers: tuple[bool, frozenset[str]] = (False, frozenset())
"""Whether this worker's ``worker_initializer`` changed its directory, and the environment variables it set:
the worker's own from then on, not the caller's (one that pins a GPU per worker kept it: review 83)."""


def before_initializer() -> tuple[str | None, dict[str, str]]:
    """In a worker, before the user's ``worker_initializer``: what it may change."""
    return _getcwd(), dict(os.environ)


def after_initializer(before: tuple[str | None, dict[str, str]]) -> None:
    global _initializers
    cwd, env = before
    now = dict(os.environ)
    _initializers = (_getcwd() != cwd, frozenset(k for k in now.keys() | env.keys() if now.get(k) != env.get(k)))


def _take_env(env: Iterable[tuple[str, str | None]]) -> None:
    own = _initializers[1]
    for name, value in env:
        if name in own:
            continue
        if value is None:
            os.environ.pop(name, None)
        elif os.environ.get(name) != value:
            os.environ[name] = value


def _take_cwd(cwd: str | None) -> None:
    with contextlib.suppress(OSError):  # removed since, or not here: the items find out as a loop's would
        if cwd is not None and not _initializers[0] and os.getcwd() != cwd:
            os.chdir(cwd)


def within(state: State | None, run: Callable[[], T]) -> T:
    """``run()`` in the caller's state: its directory and environment for this process from now on (as a
    loop's items leave them to the next), its context variables for this chunk only (set in a copy of this
    worker's context, so one the caller no longer sets is not left behind). None: this process's own."""
    if state is None:
        return run()
    cwd, env, context, log_levels = state
    _take_cwd(cwd)
    _take_env(env)
    _relayed_logs.take_levels(log_levels)
    setters = _setters(context)
    if not setters:
        return run()
    return contextvars.copy_context().run(_set_then, setters, run)


def _set_then(setters: list[Callable[[], object]], run: Callable[[], T]) -> T:
    for setter in setters:
        with contextlib.suppress(Exception):  # a numpy whose seterr takes other names, say
            setter()
    return run()
