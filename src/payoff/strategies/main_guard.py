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
from types import FrameType

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
    """Why a ``spawn`` or ``forkserver`` pool's workers died at start, when the main script surely is the reason:
    kept (``REFUSED``) while the script stays as it is."""
    path = _main_file(start_method)
    if path is None:
        return None
    if not os.path.isfile(path):  # python - < script.py: __main__ says <stdin>, which no worker can open
        return (f"{start_method} workers import the main script, but it is {path!r}, not a file they can "
                "read (a script piped or typed into python): run it from a file, or use start_method='fork'")
    guards = _guards(path)
    if guards is None:
        return None
    line = _running_line(path)
    if line is not None and not any(first <= line <= last for first, last in guards):
        return (f"{start_method} workers import the main script {path}, whose line {line}, which led to this "
                "map, is at its top level, not under its `if __name__ == '__main__':` guard: they ran it again as "
                "they started, and died doing so. Put the script's work under that guard, or use "
                "start_method='fork'")
    if guards or line is not None:  # the map is guarded (or runs in a thread: its line is not known)
        return None
    return (f"{start_method} workers import the main script {path}, which has no "
            "`if __name__ == '__main__':` guard, so each worker ran the script's code again and died doing so. Put "
            "the script's work under that guard, or use start_method='fork'")


def main_import_hint(start_method: str) -> str:
    """Where a guarded script's ``spawn`` or ``forkserver`` workers most likely died as they started: a hint, not
    kept, since something else (the system, out of memory) may have killed them."""
    path = _main_file(start_method)
    if path is None or not os.path.isfile(path):
        return ""
    return (f"The {start_method} workers import the main script {path} as they start and run its code outside "
            "`if __name__ == '__main__':` (and the modules it imports): their tracebacks on stderr say where they "
            "died. What must run once (multiprocessing.set_start_method, the script's work) goes under the guard")


def _main_file(start_method: str) -> str | None:
    if start_method not in ("spawn", "forkserver"):
        return None
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path if isinstance(path, str) and path else None


def _guards(path: str) -> list[tuple[int, int]] | None:
    """The lines of the script's top-level ``if __name__ == '__main__':`` bodies; None for a script that cannot
    be read, given the benefit of the doubt (a hint would be a guess)."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    return [(node.body[0].lineno, node.body[-1].end_lineno or node.lineno) for node in tree.body
            if isinstance(node, ast.If) and names_main(node.test)]


def _running_line(path: str) -> int | None:
    """The top-level line of the main script this thread runs (the statement that led to this pool's start);
    None from another thread, whose stack does not reach the script's top level."""
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_code.co_filename == path:
            return frame.f_lineno
        frame = frame.f_back
    return None


def names_main(test: ast.expr) -> bool:
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    values = {n.value for n in ast.walk(test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in values
