"""Imports of optional dependencies: a missing one is reported with the extra that installs it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


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
        _forget_imported_since(before)
        raise


def _forget_imported_since(before: set[str]) -> None:
    """An import cut short (a Ctrl-C while ``distributed`` imported) drops the package whose code was running,
    and keeps the submodules it had finished: imported again, the package lacks them as attributes, and every
    later dask call of the process failed with "module 'distributed' has no attribute 'utils'" (interrupts
    trial). Those submodules are dropped too, so the next call imports the package whole; packages that finished
    importing meanwhile (tornado, msgpack) are kept, as other modules may hold their objects already."""
    for name in set(sys.modules) - before:
        if name.partition(".")[0] not in sys.modules:
            sys.modules.pop(name, None)
