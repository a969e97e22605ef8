"""Why a pool could not start, in words that send the user to the real cause.

A start fails for reasons of the call (a ``worker_initializer`` that raised)
and for reasons of the process or machine, which no setting of the call fixes:
the interpreter is shutting down (a map in an ``atexit`` handler, where no new
thread or process may start), or the OS refuses the semaphores that worker
processes share (``/dev/shm`` missing, read-only, full or not writable), the
file descriptors a worker's pipes take (``ulimit -n``), or a new process
(``ulimit -u``, a container's pids limit, memory). The backends report these
only as a bare ``RuntimeError`` or ``OSError``; an ``EMFILE`` where a semaphore
is made is the descriptors', not ``/dev/shm``'s.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor
from types import CodeType
from typing import Any

from payoff.errors import ClusterNotReadyError, WorkerInitError

SHUTDOWN_MESSAGES = ("interpreter shutdown", "atexit after shutdown")
"""What the stdlib raises when a thread, pool or exit hook is started as the interpreter shuts down."""


def interpreter_shutting_down(exc: BaseException) -> bool:
    """Whether ``exc`` is the stdlib refusing a thread, pool or task because the interpreter is shutting down."""
    return sys.is_finalizing() or any(_shutdown_error(e) for e in error_chain(exc))


class ProcessesRefused(BlockingIOError):
    """A pool start not tried: the OS refused the last one a new process (``EAGAIN``, ``ENOMEM``) moments ago.
    Each such try leaves the two pipes of the fork it failed open (CPython's ``popen_fork``): a service at its
    process limit mapping on lost 4 descriptors a call, 6 to 247 in 60 calls, until its own ``open()`` failed
    (hunt 60). Tried again after ``seconds``, doubling while it is refused."""

    def __init__(self, detail: str, seconds: float) -> None:
        super().__init__(errno.EAGAIN, detail)  # what the OS said last time, as a submit raises it (an OSError)
        self.detail, self.seconds = detail, seconds

    def __str__(self) -> str:
        return f"{self.detail} (not tried again for {self.seconds:g} s: each try costs the program descriptors)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.seconds))


REFUSED_RETRY_SECONDS = 10.0
REFUSED_RETRY_MAX_SECONDS = 600.0


def processes_refused(exc: BaseException) -> bool:
    """A start the OS refused a new process (``_process_refused`` anywhere in its chain)."""
    return any(_process_refused(e) for e in error_chain(exc))


def start_failure_detail(name: str, exc: BaseException) -> str:
    """The ``init_failure`` detail of a ``name`` pool whose start raised ``exc``."""
    if isinstance(exc, ProcessesRefused):
        return str(exc)
    if interpreter_shutting_down(exc):
        return (f"the {name} pool could not start because the interpreter is shutting down (a map in an atexit "
                f"handler or at exit), when no new thread or process may start ({exc!r}); run parallel work "
                "before the program exits")
    known = os_refusal(name, exc)
    if known is not None:
        return known
    why = str(exc).removeprefix("payoff: ") if isinstance(exc, (WorkerInitError, ClusterNotReadyError)) else repr(exc)
    return f"the {name} pool failed to start: {why}"


def os_refusal(name: str, exc: BaseException) -> str | None:
    """What the OS refused a ``name`` pool's start (``exc``) and what to do about it; None when ``exc`` is not
    one of the refusals told apart here."""
    chain = list(error_chain(exc))
    if any(isinstance(e, WorkerInitError) for e in chain):
        return None  # the user's initializer raised it: its own error, named as such (review)
    out = next((e for e in chain if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE)), None)
    if out is not None:
        return _no_descriptors(name, out)
    forked = next((e for e in chain if _process_refused(e)), None)
    if forked is not None:
        return (f"the {name} pool could not start: the OS refused a new process ({forked!r}): the limit of "
                "processes per user (ulimit -u) or of the container (its pids limit), or memory, is reached; "
                "raise the limit, end processes the program keeps, use fewer workers (max_workers), or use "
                "strategy='threads'")
    thread = next((e for e in chain if thread_refused_error(e)), None)
    if thread is not None:
        return f"the {name} pool could not start: a thread it needs could not start ({thread!r}): " \
            + thread_refused(name)
    socket = next((e for e in chain if isinstance(e, OSError) and "AF_UNIX path too long" in str(e)), None)
    if socket is not None:
        return (f"the {name} pool could not start: the socket its forkserver listens on is made in the temporary "
                f"directory, whose path is too long for one ({socket!r}; the temporary directory is {_tmpdir()}, "
                "and a socket's whole path may have at most 107 bytes); set TMPDIR to a short directory (/tmp; "
                "or tempfile.tempdir, where the program set it), or use start_method='spawn'")
    no_temp = next((e for e in chain if isinstance(e, FileNotFoundError) and "No usable temporary directory" in str(e)),
                   None)
    if no_temp is not None:
        return (f"the {name} pool could not start: it needs a writable temporary directory and found none "
                f"({no_temp!r}; TMPDIR is {_variable('TMPDIR')}); point TMPDIR at a writable directory (a tmpfs "
                "mount in a container with a read-only root), or use strategy='threads'")
    too_large = next((e for e in chain if isinstance(e, OSError) and e.errno == errno.EFBIG), None)
    if too_large is not None:
        return (f"the {name} pool could not start: the OS refused to write a file it needs ({too_large!r}): the "
                "limit on the size of files this process writes (ulimit -f) is reached; raise it, or use "
                "strategy='threads'")
    refused = next((e for e in chain if _semaphore_refused(e)), None)
    if refused is not None:
        return (f"the {name} pool could not start: the OS refused the semaphores its worker processes share "
                f"({refused!r}), so /dev/shm is missing, read-only, full or not writable here; give the process "
                "a writable /dev/shm (a container's --shm-size or a tmpfs mount), or use strategy='threads'")
    broken = next((e for e in chain if isinstance(e, BrokenExecutor)), None)
    near = _tasks_near_limit() if broken is not None else None
    if near is not None:
        return (f"the {name} pool could not start: its worker processes died as they started ({broken!r}); this "
                f"user runs {near[0]:,} processes and threads of the {near[1]:,} its limit allows (ulimit -u, which "
                "counts threads), and a worker whose imports start threads (a BLAS library's) dies when it meets "
                "it; raise the limit, use fewer workers (max_workers), or use strategy='threads'")
    return None


TASK_HEADROOM = 32
"""Processes and threads short of ``ulimit -u`` at which workers that died as they started are put down to it:
a pool's workers each start a few threads as they import (loky's and BLAS's), and met the limit of 7-10 there,
where loky said "a segmentation fault ... or excessive memory usage" (constrained trial)."""


def _tasks_near_limit() -> tuple[int, int] | None:
    """(processes and threads of this user, its ``ulimit -u``) when that limit binds this process and is within
    ``TASK_HEADROOM`` of them; else None (root is not held to it)."""
    soft = _soft_limit("RLIMIT_NPROC")
    if soft is None or soft == math.inf or os.geteuid() == 0 or not os.path.isdir("/proc"):
        return None
    uid, tasks = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    tasks += len(os.listdir(f"/proc/{entry}/task"))
    return (tasks, int(soft)) if tasks + TASK_HEADROOM >= soft else None


def thread_refused_error(exc: BaseException) -> bool:
    """The ``RuntimeError`` ``Thread.start`` raises where the OS gives no more threads."""
    return isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)


def thread_refused(name: str) -> str:
    """Which limits refuse a ``name`` pool's threads, as they stand in this process, and what to do.

    The limit of processes per user counts threads; so does a container's pids limit; and under an address space
    limit (``ulimit -v``) each thread's stack takes its share (8 MB by default), which ran out first at 200 MB
    (constrained trial). A threads pool is not sent to threads.
    """
    limits = [f"the limit of processes per user (ulimit -u{_limit('RLIMIT_NPROC', 1)}), which counts threads too",
              "the container's pids limit"]
    space = _limit("RLIMIT_AS", 1 << 20, " MB")
    if space:
        limits.append(f"the address space (ulimit -v{space}), of which each thread's stack takes its share")
    instead = "strategy='serial'" if name == "threads" else "strategy='threads'"
    return f"{', or '.join(limits)}, is reached; raise the limit, use fewer workers (max_workers), or use {instead}"


def _tmpdir() -> str:
    """The directory ``tempfile`` makes its files in, which the program may have set itself (``tempfile.tempdir``)
    or taken from TMPDIR, TEMP or TMP: naming TMPDIR alone blamed a variable that was not the one used."""
    try:
        path = tempfile.gettempdir()
    except OSError:
        return "none usable"
    return f"{path!r} ({len(path.encode())} bytes; TMPDIR is {_variable('TMPDIR')})"


def _variable(name: str) -> str:
    value = os.environ.get(name)
    return "not set" if value is None else repr(value)


def _limit(which: str, unit: int, suffix: str = "") -> str:
    """``: now N`` for a finite soft limit (in ``unit``), else nothing."""
    soft = _soft_limit(which)
    return "" if soft is None or soft == math.inf else f": now {int(soft) // unit:,}{suffix}"


def _soft_limit(which: str) -> float | None:
    """The soft ``resource`` limit named ``which`` (``RLIMIT_NOFILE``...): ``math.inf`` for none, None where the
    platform cannot tell (no ``resource`` module)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft = resource.getrlimit(getattr(resource, which))[0]
    return math.inf if soft == resource.RLIM_INFINITY else soft


def _no_descriptors(name: str, exc: OSError) -> str:
    if exc.errno == errno.ENFILE:
        return (f"the {name} pool could not start: the system's table of open files is full ({exc!r}); close "
                "files here or in other programs, raise the system's limit (fs.file-max), or use "
                "strategy='threads'")
    return (f"the {name} pool could not start: this process has no file descriptor left ({exc!r}; its limit, "
            f"ulimit -n, is {_descriptor_limit()}), and each worker process takes a few (pipes, a semaphore); "
            "raise the limit (ulimit -n, or resource.setrlimit(resource.RLIMIT_NOFILE, ...)), close files the "
            "program keeps open, use fewer workers (max_workers), or use strategy='threads'")


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


def _descriptor_limit() -> str:
    soft = _soft_limit("RLIMIT_NOFILE")
    return "unknown" if soft is None else "no limit" if soft == math.inf else f"{int(soft):,}"


FORKS = frozenset({"spawnv_passfds", "fork_exec"})
"""Where multiprocessing forks a helper process, its resource tracker's (and loky's, and the forkserver's):
an ``EAGAIN`` there, met while making a semaphore, was told as a missing ``/dev/shm`` (hunt 60)."""


def _process_refused(exc: BaseException) -> bool:
    """An ``EAGAIN`` or ``ENOMEM`` where multiprocessing (or loky) forks or spawns a worker or helper process."""
    return isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.ENOMEM) \
        and _raised_in(exc, lambda code: "popen_" in os.path.basename(code.co_filename) or code.co_name in FORKS)


def _raised_in(exc: BaseException, where: Callable[[CodeType], bool]) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if where(tb.tb_frame.f_code):
            return True
        tb = tb.tb_next
    return False


def _semaphore_refused(exc: BaseException) -> bool:
    """An ``OSError`` raised where multiprocessing (or loky) makes a semaphore, or a Python built without
    ``sem_open``: the OS gave no named semaphore, which lives in ``/dev/shm`` on Linux."""
    if isinstance(exc, ImportError):
        return "sem_open" in str(exc)
    return isinstance(exc, OSError) and _raised_in(exc, lambda code: code.co_filename.endswith("synchronize.py"))
