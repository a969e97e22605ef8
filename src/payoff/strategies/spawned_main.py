"""What a spawned worker finds when it looks up a ``__main__`` name: the script run again, up to its guard.

A ``spawn`` or ``forkserver`` worker imports the main script as ``__mp_main__``
and runs its top level, but not its ``if __name__ == "__main__":`` block. So a
function or class defined under the guard is not there (unpickling it failed
with "Can't get attribute 'work' on <module '__mp_main__'>"), and a setting
the guard binds again (``SCALE = float(sys.argv[1])``, the argparse pattern)
keeps its top-level value there: by name, a function reading it computed with
the old one and returned wrong results without a word. Read from the script's
syntax (cached per file version), such objects travel by value instead.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
from typing import NamedTuple

from payoff.strategies.main_guard import names_main


class MainNames(NamedTuple):
    defined: frozenset[str]
    """Names the script binds at its top level, outside its guard: the worker's ``__mp_main__`` has them."""
    rebound: frozenset[str]
    """Names the parent may hold another object under: those bound under the guard. A ``global`` statement is
    not counted: the usual one loads a model once per worker (``global _model``), and sent by value for it the
    function loaded it again on every chunk."""


def main_script_version() -> tuple[str, int]:
    """The main script's path and modification time: ``("", -1)`` without a script, ``-1`` if it cannot be read."""
    path = str(getattr(sys.modules.get("__main__"), "__file__", None) or "")
    try:
        return path, os.stat(path).st_mtime_ns if path else -1
    except OSError:
        return path, -1


def spawned_main_names() -> MainNames | None:
    """What the workers' ``__mp_main__`` defines; None when the script cannot be read (then nothing is known)."""
    path, version = main_script_version()
    return _read(path, version) if version >= 0 else None


@functools.lru_cache(maxsize=8)
def _read(path: str, version: int) -> MainNames | None:
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    defined: set[str] = set()
    rebound: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.If) and names_main(statement.test):
            rebound |= _bound(statement.body)
            defined |= _bound(statement.orelse)
        else:
            defined |= _bound([statement])
    return MainNames(frozenset(defined), frozenset(rebound))


def _bound(statements: list[ast.stmt]) -> set[str]:
    """Names these statements bind in their own scope (not inside the functions and classes they define)."""
    names: set[str] = set()
    pending: list[ast.AST] = list(statements)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            pending.extend(node.decorator_list)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        if isinstance(node, ast.Lambda):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return names
