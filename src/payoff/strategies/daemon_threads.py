"""A thread pool whose threads never keep the interpreter alive.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so one
task stuck in a ``sleep`` or a blocking call keeps Ctrl-C and the end of the
program waiting for it. Python cannot stop a thread from outside; what payoff
can do is let a cancelled or timed-out task finish in the background without
holding the process: these threads are daemons.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from payoff._exit import QuietAtExit
from payoff._own_pools import mark_own

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """``ThreadPoolExecutor``'s contract (submit, shutdown, initializer) on daemon threads."""

    def __init__(self, workers: int, name: str = "payoff", initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._broken = ""
        self._running = 0
        self.init_error: BaseException | None = None
        """What the initializer raised first, in any thread."""
        self._threads = [threading.Thread(target=self._work, args=(initializer, initargs), name=f"{name}-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            mark_own(thread)
            thread.start()

    @property
    def running(self) -> int:
        """Tasks executing right now (they go on after ``shutdown``; nothing can stop them)."""
        return self._running

    def owns(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of this pool's workers."""
        return thread in self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenThreadPool(self._broken)
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[Any] = QuietAtExit()
            self._jobs.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            already, self._closed = self._closed, True
        if cancel_futures:
            self._drain(_cancel)
        if not already:
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def cancel_queued(self) -> None:
        """Cancel every task no thread has taken yet (``shutdown(cancel_futures=True)`` without the shutdown)."""
        self._drain(_cancel)

    def _work(self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException as exc:
                with self._lock:
                    if self.init_error is None:
                        self.init_error = exc
                self._break(f"a thread initializer failed: {exc!r}")
                return
        while (job := self._jobs.get()) is not None:
            self._run(job)
            del job

    def _run(self, job: _Job) -> None:
        future, fn, args, kwargs = job
        if not future.set_running_or_notify_cancel():
            return
        with self._lock:
            self._running += 1
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            with self._lock:
                self._running -= 1

    def _break(self, why: str) -> None:
        with self._lock:
            self._broken = why
        self._drain(lambda f: f.set_exception(BrokenThreadPool(why)) if f.set_running_or_notify_cancel() else None)

    def _drain(self, settle: Callable[[Future[Any]], object]) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.put(None)
                return
            settle(job[0])


def _cancel(future: Future[Any]) -> None:
    """Cancelled and notified: ``concurrent.futures.wait`` and ``as_completed`` count only a notified
    cancel as done (``Future.cancel`` alone leaves them waiting for ever)."""
    if future.cancel():
        future.set_running_or_notify_cancel()
