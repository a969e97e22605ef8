"""The errors a map can raise besides the user's own.

A user's exception from a worker arrives as itself, with the worker's
formatted traceback as its ``__cause__`` (as ``concurrent.futures`` does), so
the frames of the user's code are never lost. What cannot be re-created in
the parent arrives as :class:`RemoteError`. A worker that keeps dying is
narrowed to the item that kills it and reported as
:class:`WorkerCrashedError`, never rerun blind in the caller's process.
"""

from __future__ import annotations

import signal
from concurrent.futures import BrokenExecutor
from typing import Any


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in another process; shown as the ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RemoteError(Exception):
    """A worker's exception that could not be re-created in the parent (its class does not unpickle).

    It keeps what the original said: the class name, the message and the traceback.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(type_name, message, traceback_text)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class WorkerCrashedError(BrokenExecutor):
    """An item killed the worker process running it, again after a rerun in fresh workers.

    ``item_index`` is the position of that item in the input, ``exitcode`` the
    worker's exit status (negative: the signal that ended it), ``chunk_index``
    the chunk it was in, and ``completed`` maps input positions to the results
    that were finished before payoff gave up.
    """

    def __init__(self, message: str, *, item_index: int | None, chunk_index: int | None,
                 exitcode: int | None, completed: dict[int, Any]) -> None:
        super().__init__(message)
        self.item_index = item_index
        self.chunk_index = chunk_index
        self.exitcode = exitcode
        self.completed = completed

    @property
    def signal_name(self) -> str | None:
        """``SIGSEGV`` for a worker killed by signal 11, None for a plain exit."""
        if self.exitcode is None or self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_crash, (str(self), self.item_index, self.chunk_index, self.exitcode, self.completed))


def _rebuild_crash(message: str, item_index: int | None, chunk_index: int | None, exitcode: int | None,
                   completed: dict[int, Any]) -> WorkerCrashedError:
    return WorkerCrashedError(message, item_index=item_index, chunk_index=chunk_index, exitcode=exitcode,
                              completed=completed)


def describe_exit(exitcode: int | None) -> str:
    """``killed by SIGSEGV`` or ``exit code 3``: how a worker ended, in words."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class ChunkKilledWorkers(BrokenExecutor):
    """The pool's own scheduler ran a chunk again and again, and every worker that ran it died (dask's
    ``KilledWorker``): the chunk is the cause, already confirmed. Narrowed down further, each try of each
    half cost the cluster that many workers again (20 deaths for one item that called ``os._exit``, which can
    leave a user's cluster with none), so the call fails with it at once, naming the chunk's items."""


class PoolStoppedError(BrokenExecutor):
    """Another call stopped the pool this submitted call ran on (its timeout, Ctrl-C): nothing crashed, and this
    call was not cancelled, but its work was lost with the pool. ``stopped_by`` names that call."""

    def __init__(self, message: str, *, stopped_by: str) -> None:
        super().__init__(message)
        self.stopped_by = stopped_by

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_stopped, (str(self), self.stopped_by))


def _rebuild_stopped(message: str, stopped_by: str) -> PoolStoppedError:
    return PoolStoppedError(message, stopped_by=stopped_by)


class PoolStartTimeoutError(TimeoutError):
    """A pool did not finish starting in time: its workers (usually the ``worker_initializer``) had not all
    answered when the call's timeout ran out, or after ``ParallelConfig.pool_start_timeout``.

    The half-started pool has been stopped (worker processes killed); the next call starts a fresh one.
    ``by_call`` is True when the call's own timeout ended the wait.
    """

    def __init__(self, message: str, *, by_call: bool = False) -> None:
        super().__init__(message)
        self.by_call = by_call

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_start_timeout, (str(self), self.by_call))


def _rebuild_start_timeout(message: str, by_call: bool) -> PoolStartTimeoutError:
    return PoolStartTimeoutError(message, by_call=by_call)


class ClusterNotReadyError(RuntimeError):
    """The dask cluster payoff was given cannot take work: it has no workers (none came up within the bounded
    wait), or the ``Client`` passed as ``strategy`` was closed. The message says which and what to do; a map
    falls back with it as its ``init_failure`` detail, a ``submit`` raises it."""


class ClusterUnreachableError(ConnectionError, ClusterNotReadyError):
    """The dask scheduler could not be reached (or could not answer) within the connect timeout.

    A ``ClusterNotReadyError`` too: code that catches the documented class for a cluster that cannot take work
    missed a scheduler that was gone (on an address, or while a user's Client tried to reconnect; hunt 65, F3),
    and a ``ConnectionError``, as it was first."""


class WorkerInitError(BrokenExecutor):
    """A worker's ``worker_initializer`` raised, so its pool could not start.

    The message names the initializer and what it raised; ``__cause__`` is that
    exception (threads) or its traceback text from the worker (processes, where
    the pool itself only reports that a worker ended). ``pid`` is the process
    the initializer ran in. Under ``force_serial_on_failure`` the call runs
    serially instead, with this message as its ``init_failure`` detail.
    """

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_init_error, (str(self), self.pid))


def _rebuild_init_error(message: str, pid: int | None) -> WorkerInitError:
    return WorkerInitError(message, pid=pid)


class StuckThreadsWarning(RuntimeWarning):
    """Thread tasks still run after a cancel or timeout: Python cannot stop a thread from outside.

    They finish in the background (daemon threads, so they never keep the
    interpreter from exiting); the executor replaced the pool and stays usable.
    """


class ModuleReloadedWarning(UserWarning):
    """A module of the user's was reloaded (``importlib.reload``, IPython's autoreload) after a process pool's
    workers started: they hold the old code, so the pool was replaced by fresh workers before the call.

    Said once per reload; the call's record shows the fresh pool's start as its ``pool_start`` overhead.
    """


class EventLoopBlockedWarning(RuntimeWarning):
    """A ``map`` ran straight in a coroutine (or a callback) of a running asyncio event loop, so no other task
    of that loop ran until it returned: a service's other requests waited for it. An ``imap`` consumed there
    is said once its waits for results add up past the same bar.

    Said once per call site, when the call held the loop longer than the loop's ``slow_callback_duration``
    (asyncio's own bar for a slow step, 0.1 s unless set); never for a notebook cell, which runs inside the
    kernel's loop and is meant to block. ``await asyncio.to_thread(ex.map, fn, items)`` runs the map in a thread
    and leaves the loop free (docs/quickstart.md, "From asyncio code").
    """


__all__ = ["ClusterNotReadyError", "ClusterUnreachableError", "EventLoopBlockedWarning", "ModuleReloadedWarning",
           "PoolStartTimeoutError", "PoolStoppedError", "RemoteError", "RemoteTraceback", "StuckThreadsWarning",
           "WorkerCrashedError", "WorkerInitError", "describe_exit"]
