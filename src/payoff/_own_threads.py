"""Which threads are payoff's own pools': another call's pool threads are no item's work (``_delegated_cpu``).

Marked on the thread object, not read from its name: a user's pool named "payoff..." is the items' (review).
"""

from __future__ import annotations

import threading

_OWN = "_payoff_pool_thread"


def mark_own(thread: threading.Thread) -> threading.Thread:
    setattr(thread, _OWN, True)
    return thread


def is_own(thread: threading.Thread) -> bool:
    return getattr(thread, _OWN, False) is True
