"""Scripts without an ``if __name__ == '__main__':`` guard, under the ``spawn`` and ``forkserver`` starts.

Such workers import the user's script before they take any work. A script
whose map is not under the guard maps again in each of them: ``multiprocessing``
refuses to start processes there, and payoff used to take that refusal for a
failed start and run the whole script's work serially in every worker (and its
side effects) before the parent's map could begin. Now a pool start refuses
for good there, so the worker dies as ``multiprocessing`` means it to, and the
parent, whose pool then fails to start, says which script lacks the guard.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys

REFUSED: dict[tuple[str, str, int], str] = {}
"""Per pool kind and start method, and version of the main script, why its workers died importing it (not a
file, no guard): while the script stays as it is, later starts fail at once, saying why, instead of each
spawning workers that die (~0.1-0.25 s and two workers' tracebacks a call: environments trial, 5 of 5 calls; a
dask LocalCluster's ~1.7 s). A script edited since (a guard added, in a session that runs it again) is tried
afresh."""


class ImportingMainError(RuntimeError):
    """A process pool asked for while this process imports the main script to become a worker: never a
    reason to fall back and run the script's work here."""


def importing_main() -> bool:
    """True in a spawned or forkserver worker while it imports the parent's main script."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def refuse_while_importing_main(name: str) -> None:
    if importing_main():
        raise ImportingMainError(
            f"payoff: a {name} pool was asked for while this worker process imports the main script, so the "
            "script maps at import: put its work under `if __name__ == '__main__':` (spawn and forkserver "
            "workers import the script)")


def spawned_workers_import_main() -> bool:
    """Whether a fresh worker interpreter (spawn, forkserver) runs the program's ``__main__`` again, so its
    functions and classes can travel by name: from its file, or by its module's name (``python -m pkg.mod``);
    never a package's ``__main__`` (``python -m pkg``) or a zipapp's, which ``multiprocessing`` leaves out."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    return bool(getattr(main, "__file__", None))


def unguarded_main_hint(start_method: str) -> str | None:
    """Why a ``spawn`` or ``forkserver`` pool's workers died at start, when the main script is the reason."""
    if start_method not in ("spawn", "forkserver"):
        return None
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return None
    if not os.path.isfile(path):  # python - < script.py: __main__ says <stdin>, which no worker can open
        return (f"{start_method} workers import the main script, but it is {path!r}, not a file they can "
                "read (a script piped or typed into python): run it from a file, or use start_method='fork'")
    if _has_guard(path):
        return None
    return (f"{start_method} workers import the main script {path}, which has no "
            "`if __name__ == '__main__':` guard, so each worker ran the script's own map and was refused. Put "
            "the script's work under that guard, or use start_method='fork'")


def _has_guard(path: str) -> bool:
    """An unreadable script is given the benefit of the doubt: the hint would be a guess."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return True
    return any(isinstance(node, ast.If) and names_main(node.test) for node in tree.body)


def names_main(test: ast.expr) -> bool:
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    values = {n.value for n in ast.walk(test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in values
