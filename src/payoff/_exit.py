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
import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

from payoff._forks import LOKY_PACKAGES

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


_entry: object = None
"""The entry ``threading._register_atexit`` made for :func:`_run_early`: a ``functools.partial`` up to Python
3.12, a lambda from 3.13 on, so it is known by identity, not by its ``func``."""


def stay_first() -> None:
    """Make payoff's hook the latest ``threading`` exit hook, so it runs before the pools' joins."""
    global _entry
    _before_child_joins()
    register = getattr(threading, "_register_atexit", None)
    registered = getattr(threading, "_threading_atexits", None)
    if register is None or registered is None or (registered and _ours(registered[-1])):
        return
    with contextlib.suppress(RuntimeError):  # registration closes once shutdown has begun
        register(_run_early)
        if registered:
            _entry = registered[-1]


def _ours(entry: object) -> bool:
    return entry is _entry or getattr(entry, "func", None) is _run_early


_finalized_in: int | None = None
"""The ``multiprocessing`` child that registered :func:`_run_early` among its exit finalizers."""
FINALIZE_PRIORITY = 100
"""Above the queues' own exit finalizers (10), which stop a pool's feeder thread: the pools stop first."""


def _before_child_joins() -> None:
    """In a ``multiprocessing`` child, stop the pools before it joins its own children at exit.

    Such a child ends by running its exit finalizers and joining every child
    process it started, and only then runs ``threading``'s exit hooks: a pool
    nobody closed (``payoff.map``'s) kept its workers waiting for work, and the
    child, with its parent's ``join``, waited for ever.
    """
    global _finalized_in
    if _finalized_in == os.getpid():
        return
    import multiprocessing
    from multiprocessing import util

    if multiprocessing.parent_process() is None:
        return
    _finalized_in = os.getpid()
    util.Finalize(None, _stop_in_child, exitpriority=FINALIZE_PRIORITY)


_workers: weakref.WeakSet[object] = weakref.WeakSet()
"""The worker process objects payoff's pools started in this process: objects, not pids, since an ended
worker's pid may be the user's own process by the time the program ends."""
LEFTOVER_GRACE_SECONDS = 1.0


def note_worker(process: object) -> None:
    _workers.add(process)


def _stop_in_child() -> None:
    """The pools stop; workers of a pool already closed without waiting (its executor dropped) get a moment
    to leave and are then ended: the child's queues are closing, so the word to leave may never reach them."""
    import multiprocessing

    _run_early()
    leftovers = [p for p in multiprocessing.active_children() if p in _workers]
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    for proc in leftovers:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in leftovers:
        if proc.is_alive():
            proc.terminate()
            proc.join(LEFTOVER_GRACE_SECONDS)


def interrupted() -> bool:
    """Whether the program ends on a Ctrl-C it did not handle: then nothing more is waited for. An interactive
    session (the REPL, IPython) keeps the last error it showed, a Ctrl-C of long ago: there it tells nothing."""
    if hasattr(sys, "ps1") or sys.flags.interactive or "IPython" in sys.modules:
        return False
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


def say(text: str) -> None:
    """One line to stderr at the program's end, which may have closed it."""
    with contextlib.suppress(Exception):
        print(text, file=sys.stderr, flush=True)


def program_ending() -> bool:
    """Whether the program's end has begun: its exit hooks run (``threading``'s, where loky and
    ``concurrent.futures`` stop their pools) or its main thread has returned."""
    return bool(getattr(threading, "_SHUTTING_DOWN", False)) or not threading.main_thread().is_alive()


def ended_with_the_program(message: str) -> BaseException:
    """What a call stopped by the program's end raises: in a daemon thread ``SystemExit``, which ends the thread
    silently as the program's end would without payoff (a ``CancelledError`` was printed as "Exception in
    thread ..." for each request thread, on every stop of a service); elsewhere ``CancelledError``."""
    if threading.current_thread().daemon:
        return SystemExit(message)
    return CancelledError(message)


_CANCELLED_AT_EXIT = "payoff: the submitted call was cancelled: the program is ending"


_in_callback = threading.local()
"""``active`` while a done-callback of a :class:`QuietAtExit` future runs on this thread."""


class QuietAtExit(Future[Any]):
    """A future the program's end may cancel: a daemon thread that asks its ``result()`` then ends quietly (see
    :func:`ended_with_the_program`), whether it was waiting already or asked just after the cancel (a request
    thread that submitted while the end stopped the pools); the future itself is cancelled as any other. A
    done-callback reading it (on the pool's thread) gets ``CancelledError`` as ever: a ``SystemExit`` there
    escaped the callbacks' loop and left the other futures un-notified."""

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except CancelledError:
            if program_ending() and not getattr(_in_callback, "active", False):
                raise ended_with_the_program(_CANCELLED_AT_EXIT) from None
            raise

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        super().add_done_callback(functools.partial(_as_callback, fn))


def _as_callback(fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
    outer = getattr(_in_callback, "active", False)
    _in_callback.active = True
    try:
        fn(future)
    finally:
        _in_callback.active = outer


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


def stop_loky_before_joins() -> None:
    """In a payoff worker, stop loky's reusable executor (``joblib.Parallel``'s) before the worker joins its
    children at exit.

    A worker whose items ran ``joblib.Parallel`` started loky workers, which wait
    for more work for joblib's idle timeout (300 s). loky stops them from a
    ``threading`` exit hook, but a ``multiprocessing`` child joins its children
    first (see :func:`_before_child_joins`): the worker's exit, and with it the
    pool's ``shutdown``, waited those five minutes.
    """
    from multiprocessing import util

    util.Finalize(None, _stop_loky, exitpriority=FINALIZE_PRIORITY)


def _stop_loky() -> None:
    for package in LOKY_PACKAGES:
        executor = getattr(sys.modules.get(package + ".reusable_executor"), "_executor", None)
        if executor is not None:
            with contextlib.suppress(Exception):
                executor.shutdown(wait=True)
