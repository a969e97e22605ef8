"""Which modules a pool's workers can import by name, so a function travels by name only when they can.

Workers find a module by name on the ``sys.path`` they started with (a forked
worker also has every module imported before the fork). A module imported
later from a folder added to ``sys.path`` then (a notebook's
``sys.path.append("../src")``), or loaded from its file
(``importlib.util.spec_from_file_location``), is out of their reach: a function
of it sent by name fails there with ``ModuleNotFoundError``. Such a module is
registered with cloudpickle to travel by value, as ``__main__`` does, for the
rest of the process: every pool payoff starts later meets the same problem.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import threading
import types
from typing import Any


class WorkerImports:
    """What a pool's workers could import when they started."""

    def __init__(self, forked: bool) -> None:
        self._path = list(sys.path)
        self._modules = frozenset(sys.modules) if forked else frozenset()
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()

    def foreign(self, fn: Any) -> types.ModuleType | None:
        """The module of ``fn`` (or of the function a ``partial`` wraps) if the workers cannot import it."""
        name = getattr(getattr(fn, "func", fn), "__module__", None)
        if not isinstance(name, str) or name == "__main__":
            return None
        with self._lock:
            reachable = self._known.get(name)
            if reachable is None:
                reachable = self._known[name] = self._reachable(name)
        return None if reachable else sys.modules.get(name)

    def _reachable(self, name: str) -> bool:
        top = name.partition(".")[0]
        if name in self._modules or top in sys.builtin_module_names:
            return True
        for finder in list(sys.meta_path):  # editable installs bring finders of their own, beside sys.path's
            try:
                path = self._path if finder is importlib.machinery.PathFinder else None
                if finder.find_spec(top, path) is not None:
                    return True
            except Exception:  # a finder that fails: no worse than before, by name
                return True
        return False


def send_by_value(module: types.ModuleType) -> None:
    """From now on cloudpickle pickles ``module``'s functions and classes by value."""
    import cloudpickle

    with contextlib.suppress(ValueError):  # a module gone from sys.modules meanwhile: it goes by name, as before
        cloudpickle.register_pickle_by_value(module)  # a set: registering again changes nothing
