"""Why a pool could not start, in words that send the user to the real cause.

A start fails for reasons of the call (a ``worker_initializer`` that raised)
and for reasons of the process or machine, which no setting of the call fixes:
the interpreter is shutting down (a map in an ``atexit`` handler, where no new
thread or process may start), or the OS refuses the semaphores that worker
processes share (``/dev/shm`` missing, read-only, full or not writable). The
backends report the latter only as a bare ``RuntimeError`` or ``OSError``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from payoff.errors import ClusterNotReadyError, WorkerInitError

SHUTDOWN_MESSAGES = ("interpreter shutdown", "atexit after shutdown")
"""What the stdlib raises when a thread, pool or exit hook is started as the interpreter shuts down."""


def interpreter_shutting_down(exc: BaseException) -> bool:
    """Whether ``exc`` is the stdlib refusing a thread, pool or task because the interpreter is shutting down."""
    return sys.is_finalizing() or any(_shutdown_error(e) for e in error_chain(exc))


def start_failure_detail(name: str, exc: BaseException) -> str:
    """The ``init_failure`` detail of a ``name`` pool whose start raised ``exc``."""
    if interpreter_shutting_down(exc):
        return (f"the {name} pool could not start because the interpreter is shutting down (a map in an atexit "
                f"handler or at exit), when no new thread or process may start ({exc!r}); run parallel work "
                "before the program exits")
    refused = next((e for e in error_chain(exc) if _semaphore_refused(e)), None)
    if refused is not None:
        return (f"the {name} pool could not start: the OS refused the semaphores its worker processes share "
                f"({refused!r}), so /dev/shm is missing, read-only, full or not writable here; give the process "
                "a writable /dev/shm (a container's --shm-size or a tmpfs mount), or use strategy='threads'")
    why = str(exc).removeprefix("payoff: ") if isinstance(exc, (WorkerInitError, ClusterNotReadyError)) else repr(exc)
    return f"the {name} pool failed to start: {why}"


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it: a backend may wrap the stdlib's error in its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _shutdown_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in SHUTDOWN_MESSAGES)


def _semaphore_refused(exc: BaseException) -> bool:
    """An ``OSError`` raised where multiprocessing (or loky) makes a semaphore, or a Python built without
    ``sem_open``: the OS gave no named semaphore, which lives in ``/dev/shm`` on Linux."""
    if isinstance(exc, ImportError):
        return "sem_open" in str(exc)
    if not isinstance(exc, OSError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("synchronize.py"):
            return True
        tb = tb.tb_next
    return False
