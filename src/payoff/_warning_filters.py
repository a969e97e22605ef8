"""The caller's warning filters, sent with each chunk to worker processes that did not inherit them.

A loop's items warn under the program's filters; a forked worker has the filters of the moment it forked, and
a fresh interpreter (joblib's loky workers, ``spawn``, ``forkserver``) only its own defaults. A program that set
``warnings.simplefilter("ignore")`` (or ran under ``python -W error``) saw its items' warnings printed once per
worker on joblib, and a nested map's fallback warning each time (hunt 55, F3). Each filter travels pickled on
its own: one the worker cannot load (a warning class defined in ``__main__``) is left out, not the chunk.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings

_last: tuple[tuple[object, ...], tuple[bytes, ...]] | None = None


def shipped() -> tuple[bytes, ...]:
    """The filters in force now, each pickled (kept while they stay the same: a chunk pays a tuple's compare)."""
    global _last
    now = tuple(warnings.filters)
    last = _last
    if last is not None and last[0] == now:
        return last[1]
    entries = []
    for entry in now:
        with contextlib.suppress(Exception):  # a filter of a class pickle cannot name: the worker keeps its own
            entries.append(pickle.dumps(entry))
    _last = (now, tuple(entries))
    return _last[1]


_adopted: tuple[bytes, ...] | None = None


def adopt(entries: tuple[bytes, ...] | None) -> None:
    """Make the caller's filters (``shipped``) this worker process's own; None: keep its own.

    Set once for as long as they stay the same, not around each chunk: each change of the filters clears what
    the registries of "shown once" hold, and a nested map's warning, shown once a worker, printed once a chunk
    (25 times for 25 chunks) when they were set afresh for each one."""
    global _adopted
    if entries is None or entries == _adopted:
        return
    warnings.resetwarnings()
    for blob in entries:
        try:
            action, message, category, module, lineno = pickle.loads(blob)
        except Exception:  # its class is not importable here
            continue
        warnings.filterwarnings(action, getattr(message, "pattern", ""), category, getattr(module, "pattern", ""),
                                lineno, append=True)
    _adopted = entries
