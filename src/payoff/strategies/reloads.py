"""Whether the user's code in this process changed since a pool's workers got it: a reload.

A function of an importable module travels to process workers by name, and
each worker holds the module as it imported it (a forked one: as the parent
had it at the fork). After ``importlib.reload(mylib)``, or IPython's
autoreload, the parent runs the new code and warm workers the old: a map
returned the old results while a loop returned the new, without a word. The
same goes for a function that only calls into the reloaded module. A pool
whose workers may hold old code is replaced (see ``PoolRegistry.lease``).

Three marks of a reload, all cheap enough to check before every call on a
process pool:

- a module executed again (``importlib.reload``, autoreload's
  ``superreload``, ``del sys.modules[name]`` and a new import) gets a new
  ``__spec__`` object, compared by identity;
- IPython 9's ``%autoreload 2`` patches the code of the module's functions in
  place (its "deduperreload") and leaves ``__spec__`` alone, so the code
  object of every function defined in the module (and in its classes) is
  compared too, all at once in C;
- that autoreload also runs an edited module's changed top-level statements
  in the module's namespace: a constant is rebound in place, and workers
  kept the old one (1,999 of 2,000 results wrong, hunt 66). So the version
  of the file autoreload last loaded each module from is compared too
  (``_Autoreloads``).

Only the user's own modules are watched: not the standard library, not
site-packages (an editable install's source folder is the user's), not payoff.
They are noted when the pool starts and, for modules imported later, when a
call first finds them (found by the size of ``sys.modules`` changing): the
workers import those by name from the same file, so a first import is no
reload. A global the program sets at run time (a cache filled, a counter,
``mylib.SCALE = 2``) is the program's own state, which warm workers never
shared, as with any process pool: not seen.
"""

from __future__ import annotations

import contextlib
import operator
import os
import site
import sys
import sysconfig
import types
import weakref
from typing import Any, NamedTuple

_code_of = operator.attrgetter("__code__")


class Reload(NamedTuple):
    """A module that changed, and what marks this change (its new spec or a new code object) to tell it once."""

    module: str
    mark: Any


def _library_dirs() -> tuple[str, ...]:
    """Folders of code that is not the user's: the standard library and every site-packages."""
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    with contextlib.suppress(AttributeError):  # an old virtualenv's site module has neither
        dirs |= {*site.getsitepackages(), site.getusersitepackages()}
    out = set()
    for d in dirs:
        if d:
            out |= {os.path.join(d, ""), os.path.join(os.path.realpath(d), "")}
    return tuple(sorted(out))


_LIBRARIES = _library_dirs()
_PACKAGE_FOLDERS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def users_module(name: str, module: Any) -> bool:
    """Whether ``module`` is the user's own Python source, which a user may edit and reload."""
    if name == "__main__" or name == "payoff" or name.startswith("payoff."):
        return False  # __main__: see ProcessStrategy; payoff's own code is not the user's
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else getattr(module, "__file__", None)
    if not isinstance(origin, str) or not origin.endswith(".py") or not os.path.isabs(origin):
        return False  # built-in, frozen, an extension module (which no reload runs again), a namespace package
    return not origin.startswith(_LIBRARIES) and not any(part in origin for part in _PACKAGE_FOLDERS)


def _functions(module: types.ModuleType) -> list[types.FunctionType]:
    """The functions ``module`` defines, and its classes' methods (one level): what autoreload patches."""
    out: list[types.FunctionType] = []
    for obj in list(vars(module).values()):
        try:
            out.extend(_defined(obj, module.__name__))
        except Exception:  # an object whose attributes raise (a lazy proxy): it has no code of the module's
            continue
    return out


def _defined(obj: Any, name: str) -> list[types.FunctionType]:
    if getattr(obj, "__module__", None) != name:
        return []  # imported from elsewhere: watched with its own module, if it is the user's
    if isinstance(obj, type):
        out: list[types.FunctionType] = []
        for member in list(vars(obj).values()):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            parts = (member.fget, member.fset, member.fdel) if isinstance(member, property) else (member,)
            out.extend(p for p in parts if isinstance(p, types.FunctionType))
        return out
    wrapped = getattr(obj, "__wrapped__", None)  # a decorator's wrapper (functools.wraps, lru_cache)
    return [f for f in (obj, wrapped) if isinstance(f, types.FunctionType)]


AUTORELOAD = "IPython.extensions.autoreload"
"""IPython's autoreload: the one thing that applies an edit of a constant in place."""


def _reloader() -> Any:
    """IPython's autoreload in this process, where one runs: its ``modules_mtimes`` say which version of each
    module's file it last loaded, and ``failed`` which of them it could not."""
    if AUTORELOAD not in sys.modules:
        return None
    get = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get() if callable(get) else None
    magics = getattr(getattr(shell, "magics_manager", None), "registry", {}).get("AutoreloadMagics")
    return getattr(magics, "_reloader", None)


class _Edit:
    """The mark of one edit autoreload applied to a module, the same for every pool that finds it (told once)."""


_EDITS: dict[tuple[str, float], _Edit] = {}


class _Autoreloads:
    """The version of each of the user's modules IPython's autoreload last loaded, as the pool's workers got them.

    Its ``%autoreload 2`` runs an edited module's changed statements in the module's own namespace: an edited
    constant (``SCALE = 2``) is rebound in place, with no new ``__spec__`` and no function's code replaced, and
    the warm workers kept the old one (1,999 of 2,000 results wrong, hunt 66). Autoreload notes the modification
    time of the file it loads; once that moved on since the pool started, it loaded an edit here that the
    workers do not have, whatever the edit was. Reading the edit from the files instead missed some (a constant
    a later line reassigns, one inside ``if``), and took a global the program rebound beside an edit it never
    loaded for a reload, sending spawned workers the edited file (reviews 69-71).
    """

    def __init__(self) -> None:
        self._loaded: dict[str, float | None] = {}
        """Module name to the modification time of the file autoreload last loaded it from (None: unknown)."""

    def note(self, name: str, module: types.ModuleType, reloader: Any) -> None:
        """As ``reloader`` (``_reloader()``) has the module now. One it has not seen yet (imported in the cell that
        started the pool) it is told of as its next check would be, the file as it is: else that check took the
        file's time unseen, the reload of an edit after it looked like that first sight, and the edit was
        missed."""
        loaded = getattr(reloader, "modules_mtimes", None)
        if isinstance(loaded, dict) and name not in loaded:
            with contextlib.suppress(Exception):  # another IPython than the one read here
                _, mtime = reloader.filename_and_mtime(module)
                if mtime is not None:
                    loaded.setdefault(name, mtime)
        self._loaded[name] = self._version(reloader, name)

    @staticmethod
    def _version(reloader: Any, name: str) -> float | None:
        loaded = getattr(reloader, "modules_mtimes", None)
        return loaded.get(name) if isinstance(loaded, dict) else None

    def changed(self, modules: dict[str, Any], found: dict[str, Any]) -> None:
        """Add to ``found`` the modules autoreload loaded an edit of since they were noted."""
        reloader = _reloader()
        if reloader is None:
            return
        failed = getattr(reloader, "failed", {})
        for name, before in list(self._loaded.items()):
            now = self._version(reloader, name)
            if now is None or before is None or now == before or name in found:
                continue
            if isinstance(failed, dict) and failed.get(getattr(modules.get(name), "__file__", None)) == now:
                continue  # that edit failed to load: the module here is as the workers have it
            found[name] = _EDITS.setdefault((name, now), _Edit())


class CodeWatch:
    """The user's modules and their functions' code as a pool's workers got them.

    Not thread-safe by itself: the pool registry checks it under its lock.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._count = -1
        self._specs: dict[str, Any] = {}
        """Module name to its ``__spec__`` when first seen."""
        self._functions: list[types.FunctionType] = []
        self._codes: list[types.CodeType] = []
        """Each function's code when first seen (the functions are held: their code is what is watched)."""
        self._owners: list[str] = []
        self._autoreloads = _Autoreloads()
        self.note_new()

    def note_new(self) -> None:
        """Note the user's modules not seen before, as they are now."""
        modules = dict(sys.modules)  # another thread may import meanwhile
        self._count = len(modules)
        reloader = _reloader()
        for name in modules.keys() - self._seen:
            self._seen.add(name)
            module = modules[name]
            if not users_module(name, module):
                continue
            self._specs[name] = getattr(module, "__spec__", None)
            if isinstance(module, types.ModuleType):
                self._autoreloads.note(name, module, reloader)
                for fn in _functions(module):
                    self._functions.append(fn)
                    self._codes.append(fn.__code__)
                    self._owners.append(name)

    def changed(self) -> list[Reload]:
        """The user's modules reloaded, or whose functions' code was replaced, since they were noted."""
        if len(sys.modules) != self._count:
            self.note_new()
        modules = sys.modules
        found: dict[str, Any] = {}
        for name, spec in self._specs.items():
            module = modules.get(name)
            if module is not None and getattr(module, "__spec__", None) is not spec:
                found[name] = module.__spec__
        if list(map(_code_of, self._functions)) != self._codes:  # equal code is the same code: no change
            for fn, code, owner in zip(self._functions, self._codes, self._owners, strict=True):
                if fn.__code__ != code:
                    found.setdefault(owner, fn.__code__)
        self._autoreloads.changed(modules, found)
        return [Reload(name, mark) for name, mark in found.items()]


_told: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
"""Marks of the changes told of, by identity (a spec is not hashable)."""


def first_told(reloads: list[Reload]) -> list[str]:
    """The modules of ``reloads`` whose change nobody was told of yet (two pools replaced for one reload: once)."""
    out = []
    for reload in reloads:
        if _told.get(id(reload.mark)) is reload.mark:
            continue
        with contextlib.suppress(TypeError):  # a mark with no weak reference (a reload that left no spec)
            _told[id(reload.mark)] = reload.mark
        out.append(reload.module)
    return out
