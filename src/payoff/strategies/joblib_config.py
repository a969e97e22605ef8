"""The workers a ``joblib.parallel_config`` (or ``parallel_backend``) around a call asks for.

A scikit-learn user limits joblib's workers with ``with parallel_config(n_jobs=2):``; payoff's ``joblib``
strategy ran on every CPU inside it (interop trial). Read without importing joblib: a program that never
imported ``joblib.parallel`` set no such context.
"""

from __future__ import annotations

import numbers
import sys


def asked_n_jobs(cpus: int) -> int | None:
    """The worker count the active joblib context asks for, in joblib's terms (``-1``: every CPU, ``-2``: all
    but one), as at least 1; None when no context set ``n_jobs`` (or it asks for 0, which joblib refuses)."""
    parallel = sys.modules.get("joblib.parallel")
    get_active = getattr(parallel, "get_active_backend", None)
    if get_active is None:
        return None
    try:
        _, n_jobs = get_active()
    except Exception:  # a joblib whose context cannot be read: payoff's own count
        return None
    if not isinstance(n_jobs, numbers.Integral) or isinstance(n_jobs, bool) or n_jobs == 0:
        return None  # numpy's integers are Integral: a count read from an array is one
    n = int(n_jobs)
    return n if n > 0 else max(1, cpus + 1 + n)
