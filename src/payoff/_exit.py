"""Stopping payoff's pools when the program ends, before the standard library waits for them.

``concurrent.futures`` and loky stop their process pools at exit with hooks
registered by ``threading._register_atexit``. CPython's ``threading._shutdown``
runs those hooks, latest first, before it joins the program's threads and long
before ``atexit`` handlers; each hook joins its pool's manager thread, which
waits for every task still queued. A plain ``atexit`` handler of payoff's ran
after that wait: a program ending with minutes of submitted work queued took
minutes to exit, even after Ctrl-C.

So payoff's exit hooks run in that same phase and are kept the latest
registered (loky registers its hook when its first pool starts, so every pool
start calls :func:`stay_first`). They wait if another thread of the program is
still running (other than the process pools' own manager threads), since it
may still be using payoff: that thread keeps the program alive anyway, and
the ``atexit`` handler stops the pools after it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable

_hooks: list[Callable[[], None]] = []
_ran_in: int | None = None
"""The process that ran the hooks: a forked child inherits the flag but must run its own."""
_JOINED_AT_EXIT = ("concurrent.futures.process", "joblib.externals.loky.process_executor")
"""Modules whose process pools' manager threads are joined by their own exit hooks (``_threads_wakeups``)."""


def at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` once when the program ends, before ``concurrent.futures`` waits for queued process work."""
    if not _hooks:
        atexit.register(_run)
    _hooks.append(hook)
    stay_first()


def stay_first() -> None:
    """Make payoff's hook the latest ``threading`` exit hook, so it runs before the pools' joins."""
    register = getattr(threading, "_register_atexit", None)
    registered = getattr(threading, "_threading_atexits", None)
    if register is None or registered is None or (registered and getattr(registered[-1], "func", None)
                                                  is _run_early):
        return
    with contextlib.suppress(RuntimeError):  # registration closes once shutdown has begun
        register(_run_early)


def _run_early() -> None:
    if not _others_running():
        _run()


def _others_running() -> bool:
    me, machinery = threading.current_thread(), _pool_managers()
    return any(t is not me and not t.daemon and t not in machinery and t.is_alive() for t in threading.enumerate())


def _pool_managers() -> set[object]:
    managers: set[object] = set()
    for name in _JOINED_AT_EXIT:
        managers.update(getattr(sys.modules.get(name), "_threads_wakeups", None) or ())
    return managers


def _run() -> None:
    global _ran_in
    if _ran_in == os.getpid():
        return
    _ran_in = os.getpid()
    for hook in _hooks:
        with contextlib.suppress(Exception):
            hook()
