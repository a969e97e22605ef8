"""cloudpickle, with a cached function (``functools.cache``, ``lru_cache``) of ``__main__`` sent by value too.

cloudpickle sends a ``__main__`` function by value, but the cache's wrapper pickles itself by name (its own
``__reduce__``), so a worker that never ran the cell defining it (joblib's, dask's, a pool forked before it)
raised ``AttributeError: Can't get attribute``, and one forked before the cell ran again computed with the
old body, silently. Such a wrapper travels as the function it wraps and is wrapped again in the worker, with
the same ``maxsize`` and ``typed``. Its cache there starts empty with each chunk: the function arrives with
its chunk, and globals of its own, and a cache kept across chunks could answer with what older globals gave.

cloudpickle also names the code it sends ``<dynamic-code>``, to keep its payload alike wherever the function was
defined; a worker's traceback then named neither the script nor the line's source. The code keeps its file's
name here: a payload differs only between functions of different files, and a worker on this machine reads
the line from the file.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
import types
from typing import Any

OPEN_TEXT_FILE = ("an open text file reaches a worker as cloudpickle sends it, an io.StringIO copy of its text: not "
                  "the file a loop gives the function (no fileno(), writes and reads never reach the file)")
"""Why payoff's cloudpickle refuses one: auto sent such items to joblib, where ``f.fileno()`` raised (hunt 63).
Only the exact type, which cloudpickle copies: a subclass with a ``__reduce__`` of its own travels as it says."""

CACHED = type(functools.cache(lambda: None))
"""The type ``functools.cache`` and ``functools.lru_cache`` wrap a function in."""

_ANONYMOUS = "<dynamic-code>"
"""The file name cloudpickle gives the code it sends (3.1)."""


def dumps(obj: Any, protocol: int | None = None, buffer_callback: Any = None) -> bytes:
    """``cloudpickle.dumps``, except for ``__main__``'s (and by-value modules') cached functions."""
    file = io.BytesIO()
    _pickler()(file, protocol=protocol or pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return file.getvalue()


def travels_by_value(module: str | None) -> bool:
    """Whether cloudpickle sends ``module``'s functions by value: ``__main__``, and the modules registered
    (payoff registers those its workers cannot import, :mod:`payoff.strategies.reach`), with their submodules,
    as cloudpickle itself reads its registry."""
    import cloudpickle

    if module is None:
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    return module == "__main__" or any(".".join(parts[:n]) in registered for n in range(1, len(parts) + 1))


def rewrapped(fn: Any, maxsize: int | None, typed: bool) -> Any:
    """In the worker: the sent function in a cache of its own, as the caller's was."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)


@functools.cache
def _pickler() -> type:
    import cloudpickle

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no type hints
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is CACHED and travels_by_value(getattr(obj, "__module__", None)):
                settings = obj.cache_parameters()
                return rewrapped, (obj.__wrapped__, settings["maxsize"], settings["typed"])
            if type(obj) is io.TextIOWrapper and obj is not sys.stdout and obj is not sys.stderr:
                raise pickle.PicklingError(OPEN_TEXT_FILE)
            reduce = self.dispatch_table.get(types.CodeType) if type(obj) is types.CodeType else None
            if reduce is not None:
                return _named(reduce(obj), obj.co_filename)
            return super().reducer_override(obj)

    return Pickler


def _named(reduced: tuple[Any, tuple[Any, ...]], filename: str) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of a code object with its file's name back; as it was when it names none, or
    when no argument alone is the name it gives (another cloudpickle)."""
    make, args = reduced
    at = [i for i, arg in enumerate(args) if arg == _ANONYMOUS]
    if len(at) != 1:
        return reduced
    return make, (*args[:at[0]], filename, *args[at[0] + 1:])
