"""Imports of optional dependencies: a missing one is reported with the extra that installs it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def extra_needed(extra: str, purpose: str) -> Iterator[None]:
    """Re-raise a ``ModuleNotFoundError`` inside as one that names ``pip install 'payoff[extra]'``.

    A pip user who reaches a feature without its extra got a bare "No module named 'distributed'" (or
    'opentelemetry.exporter', 'calibrated_explanations'), and had to guess which extra brings it.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        what = f"the {exc.name!r} package" if exc.name else f"a package it could not import ({exc})"
        raise ModuleNotFoundError(f"payoff: {purpose} needs {what}, which payoff's {extra!r} extra installs: "
                                  f"pip install 'payoff[{extra}]'", name=exc.name) from exc
