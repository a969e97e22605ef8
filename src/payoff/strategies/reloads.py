"""Whether the user's code in this process changed since a pool's workers got it: a reload.

A function of an importable module travels to process workers by name, and
each worker holds the module as it imported it (a forked one: as the parent
had it at the fork). After ``importlib.reload(mylib)``, or IPython's
autoreload, the parent runs the new code and warm workers the old: a map
returned the old results while a loop returned the new, without a word. The
same goes for a function that only calls into the reloaded module. A pool
whose workers may hold old code is replaced (see ``PoolRegistry.lease``).

Two marks of a reload, both cheap enough to check before every call on a
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
  kept the old one (1,999 of 2,000 results wrong, hunt 66). So while it is
  loaded, a module whose file changed on disk (one ``stat`` a module a call)
  is read again, and a constant the edit changed that holds its new value
  here marks a reload (``_Constants``).

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

import ast
import contextlib
import importlib.util
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


_Stamp = tuple[int, int]

AUTORELOAD = "IPython.extensions.autoreload"
"""IPython's autoreload, the one thing that rebinds an edited constant in place: a program without it pays
no ``stat`` of its modules' files."""


def _stamp(path: str | None) -> _Stamp | None:
    """A file's modification time and size: what an edit changes."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:  # deleted or moved: nothing to compare
        return None
    return st.st_mtime_ns, st.st_size


def _read(path: str | None) -> str:
    """A module's source as the import system decodes it (its coding cookie: a latin-1 file read as UTF-8 was
    no source, and its edits went unseen, review 70); "" where it cannot be read."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            return importlib.util.decode_source(fh.read())
    except (OSError, ValueError, LookupError):  # gone, or an unknown or wrong encoding
        return ""


_NOT_A_LITERAL = object()


def _assigned(source: str) -> dict[str, tuple[str, Any]]:
    """Each name the module's top-level assignments bind: the expression's text, and its value where that is a
    literal (``_NOT_A_LITERAL`` otherwise: ``60 * 5``, a call). ``A, B = 1, 2`` binds each its own element."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # a file saved half-edited: nothing to read yet
        return {}
    out: dict[str, tuple[str, Any]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            out.update(_bound(target, value))
    return out


def _bound(target: ast.expr, value: ast.expr) -> dict[str, tuple[str, Any]]:
    if isinstance(target, ast.Name):
        return {target.id: (ast.dump(value), _literal(value))}
    if isinstance(target, ast.Tuple | ast.List):
        if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts):
            out: dict[str, tuple[str, Any]] = {}
            for t, v in zip(target.elts, value.elts, strict=True):
                out.update(_bound(t, v))
            return out
        whole = ast.dump(value)  # unpacked from one expression: each name's value is not read here
        return {n.id: (f"{whole}[{i}]", _NOT_A_LITERAL) for i, n in enumerate(target.elts) if isinstance(n, ast.Name)}
    return {}


def _literal(value: ast.expr) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_A_LITERAL


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a comparison that raises (a list holding arrays) tells nothing
        return False


class _Edit:
    """The mark of one edit of a module's file, the same for every pool that finds it (told once)."""


_EDITS: dict[tuple[str, _Stamp | None], _Edit] = {}


class _Constants:
    """The user's module files as the pool's workers got them, while IPython's autoreload is loaded.

    Its ``%autoreload 2`` runs an edited module's changed statements in the module's own namespace: an edited
    constant (``SCALE = 2``) is rebound in place, with no new ``__spec__`` and no function's code replaced, and
    the warm workers kept the old one (1,999 of 2,000 results wrong, hunt 66). So a module whose file changed
    is read again, once per edit, and it counts as reloaded once a name a top-level assignment the edit changed
    binds holds its new value here: the literal it now reads (``SCALE = 2``), or, for any other expression
    (``60 * 5``, ``A, B = f()``), another object than when noted. A global the program rebinds itself (a
    counter, a cache filled), or an edit not loaded again here, is no reload: counting either as one gave
    spawned workers the edited file while the caller ran the old code (review 69).
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[str | None, _Stamp | None, str | None, dict[str, int]]] = {}
        """Module name to its file, that file's stamp and source when noted (None: not yet read) and the
        identities of its globals then (ids only: nothing kept alive)."""
        self._edited: dict[tuple[str, _Stamp | None], dict[str, Any]] = {}
        """The names an edit of a module binds anew, each with its new literal (or ``_NOT_A_LITERAL``)."""

    def note(self, name: str, path: str | None, module: types.ModuleType) -> None:
        if AUTORELOAD not in sys.modules:
            self._files[name] = (path, None, None, {})
            return
        ids = {k: id(v) for k, v in list(vars(module).items()) if not k.startswith("__")}
        self._files[name] = (path, _stamp(path), _read(path), ids)

    def changed(self, modules: dict[str, Any], found: dict[str, Any]) -> None:
        """Add to ``found`` the modules whose edited constants autoreload rebound here."""
        if AUTORELOAD not in sys.modules:
            return
        for name, (path, stamp, source, ids) in list(self._files.items()):
            module = modules.get(name)
            if not isinstance(module, types.ModuleType):
                continue
            if source is None:  # autoreload was loaded after the pool started: as the file is now
                self.note(name, path, module)
                continue
            now = _stamp(path)
            if now == stamp or name in found:
                continue
            edited = self._edited.get((name, now))
            if edited is None:
                old, new = _assigned(source), _assigned(_read(path))
                edited = self._edited[(name, now)] = \
                    {k: v[1] for k, v in new.items() if old.get(k) != v} if old else {}  # unread then: unknown
            if any(_bound_anew(module, k, v, ids) for k, v in edited.items()):
                found[name] = _EDITS.setdefault((name, now), _Edit())


def _bound_anew(module: types.ModuleType, name: str, literal: Any, ids: dict[str, int]) -> bool:
    missing = object()
    here = getattr(module, name, missing)
    if here is missing:
        return False
    return _same(here, literal) if literal is not _NOT_A_LITERAL else id(here) != ids.get(name)


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
        self._constants = _Constants()
        self.note_new()

    def note_new(self) -> None:
        """Note the user's modules not seen before, as they are now."""
        modules = dict(sys.modules)  # another thread may import meanwhile
        self._count = len(modules)
        for name in modules.keys() - self._seen:
            self._seen.add(name)
            module = modules[name]
            if not users_module(name, module):
                continue
            spec = self._specs[name] = getattr(module, "__spec__", None)
            if isinstance(module, types.ModuleType):
                self._constants.note(name, spec.origin if spec is not None else module.__file__, module)
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
        self._constants.changed(modules, found)
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
