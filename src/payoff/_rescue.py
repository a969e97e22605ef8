"""Submitted calls lost with a process pool another call broke run again on fresh workers.

``concurrent.futures`` and loky fail every call queued or running on a pool
whose worker died, and nothing names the call that killed it: ten calls, the
fourth calling ``os._exit``, lost six innocent ones. Here every call a broken
pool lost runs again on fresh workers, marked this time: it marks its worker's
crash-mark file while it runs (``payoff._crash_marks``; a first run never
marks, so a call that breaks nothing pays nothing for it). Both pools fail their
calls' futures before they stop the surviving workers (their
``terminate_broken``), so when a lost call's future fails, the dead workers are
the ones that crashed: a marked call one of them stood on fails, named as the
crash, and every other lost call runs again, up to ``MAX_ATTEMPTS`` runs in all.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future
from typing import Any

from payoff import _forks
from payoff.errors import WorkerCrashedError, describe_exit

MAX_ATTEMPTS = 4
"""Runs of one submitted call, the first included, before a crash it had no part in fails it too."""
STOOD_ON_TO_BLAME = 2
"""Marked runs of a call a dead worker stood on before the call is named as the crash: a worker killed from
outside (the OOM killer, an operator) stands on whatever it ran, and a second such kill, 0.6 s after a first
whose lost calls all ran again marked, failed an innocent call as having killed its worker (4 of 4). A call
that crashes its worker does so on every run: it is named on its third (its first is unmarked)."""

_tags = itertools.count(1)  # a map's chunks mark with an object's address: never this small


class Rescue:
    """Set as a submitted call's ``rescue`` (see ``processes._Relayed``); holds the lease of its current run.

    ``lease()`` leases the call's pool (a fresh one: the broken one is marked broken) and ``send(lease, tag,
    future)`` sends the call to it, marked with ``tag`` and ending ``future``; ``give_back(lease, broken)``
    releases a lease (marking its pool broken); ``epoch`` counts the executor's cancels: a call lost after
    one came since its run was sent is not sent again. The broken pool's lease is held until the next run's
    is taken, so ``shutdown(wait=True)``, which waits for the pools' leases, waits for the call.
    """

    def __init__(self, lease: Any, *, relay: tuple[Callable[[], Any], Callable[[Any, int, Future[Any]], object]],
                 give_back: Callable[[Any, bool], None], epoch: Callable[[], int]) -> None:
        self._lease = lease  # not the future: a cycle through every submitted call's future kept the GC busy
        (self._lease_pool, self._send), self._give_back, self._epoch = relay, give_back, epoch
        self.lock = threading.RLock()
        """Held while a run is sent, and by the future's ``cancel``: a cancel then waits for the send and
        cancels the new run where its pool still can (a cancel that returned True never lets it run)."""
        self.attempts = 1
        self._stood_on = 0
        self._tag: int | None = None
        self._sent_at = epoch()

    def take_lease(self) -> Any:
        """The current run's lease, taken (once): whoever takes it gives it back."""
        with self.lock:
            lease, self._lease = self._lease, None
        return lease

    def __call__(self, future: Future[Any], error: BaseException) -> BaseException | None:
        """In the broken pool's manager thread, before it stops the surviving workers: None when the call runs
        again (``future``, its future, then waits for it), else the error it fails with."""
        if not isinstance(error, BrokenExecutor):  # the call's own error (a SystemExit that reached the pool)
            return error
        with self.lock:
            pool = None if self._lease is None else self._lease.pool
            if pool is None or not pool.marks_submits:
                return error
            if self._tag is not None and pool.where_the_dead_stood(self._tag):
                self._stood_on += 1
                if self._stood_on >= STOOD_ON_TO_BLAME:
                    codes = pool.exit_codes(error)
                    crash = _crashed(codes[0] if codes else None, self.attempts)
                    crash.__cause__ = error
                    return crash
            if self.attempts >= MAX_ATTEMPTS or self._epoch() != self._sent_at:
                return error
            future._remote = None  # type: ignore[attr-defined]  # waiting to run again: a cancel ends it here
            pool.broken = True  # its lease is kept until the next run's is taken: a shutdown waits for that run
        _rescuer().put(functools.partial(self._again, future, error))
        return None

    def _again(self, future: Future[Any], lost: BaseException) -> None:
        """On the rescue thread: the call sent again, to a fresh pool (the broken one was marked broken)."""
        with self.lock:
            if not future.done() and self._epoch() != self._sent_at:  # cancels since: it waits no more
                future.cancel()
            if future.done():
                return
            self.attempts += 1
            self._tag = tag = next(_tags)
            try:
                lease = self._lease_pool()
            except BaseException as exc:  # no fresh pool (its start failed): its end gives the broken one back
                self._fail(future, exc, lost)
                return
            broken, self._lease, self._sent_at = self._lease, lease, self._epoch()
            if broken is not None:
                self._give_back(broken, True)
            try:
                self._send(lease, tag, future)
            except BrokenExecutor as broke:  # the fresh pool broke already: lost again before it ran
                lease.pool.broken = True
                if self.attempts >= MAX_ATTEMPTS:
                    self._fail(future, broke, lost)
                    return
                future._remote = None  # type: ignore[attr-defined]
                _rescuer().put(functools.partial(self._again, future, broke))
            except BaseException as exc:
                self._fail(future, exc, lost)

    @staticmethod
    def _fail(future: Future[Any], error: BaseException, lost: BaseException) -> None:
        """Ends the call with ``error``; its future's end gives back the lease it holds."""
        error.__cause__ = error.__cause__ or lost
        with contextlib.suppress(RuntimeError):  # cancelled meanwhile
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


def _crashed(exitcode: int | None, attempts: int) -> WorkerCrashedError:
    return WorkerCrashedError(
        f"payoff: this submitted call killed the worker process running it ({describe_exit(exitcode)}), on its "
        f"run {attempts}: lost with a broken pool, it ran again on fresh workers and broke them too; the other "
        "calls lost with it ran again", item_index=None, chunk_index=None, exitcode=exitcode, completed={})


_queue: queue.SimpleQueue[Callable[[], None]] | None = None
_thread: threading.Thread | None = None
_pid = 0
_start_lock = _forks.Lock()


def _rescuer() -> queue.SimpleQueue[Callable[[], None]]:
    """The process's rescue thread's queue: sending again cannot run in the broken pool's own manager thread,
    which must go on to stop the pool's workers before a fresh pool's start can be waited for."""
    global _queue, _thread, _pid
    with _start_lock:
        if _queue is None or _thread is None or _pid != os.getpid() or not _thread.is_alive():
            _queue, _pid = queue.SimpleQueue(), os.getpid()
            _thread = threading.Thread(target=_serve, args=(_queue,), name="payoff-rescue", daemon=True)
            _thread.start()
        return _queue


def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        job = jobs.get()
        with contextlib.suppress(Exception):  # each job settles its own future; the thread serves the next
            job()
