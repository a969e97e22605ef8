"""Whether this process is a worker of another library's process pool, and how many CPUs that leaves it.

A map inside a task of a ``ProcessPoolExecutor``, a joblib (loky) or an mpire pool
ran as if it had the machine: each outer worker started a pool of one process per
core, so 2 outer workers on 2 cores ran 4 CPU-bound processes (up to 16 descendants)
and took up to 3.5x a plain loop's time, while each inner record measured a gain.
Those workers are not daemonic (a ``multiprocessing.Pool``'s are, which
``planning`` tells from the process alone), and a user's own long-lived
``multiprocessing.Process`` is not daemonic either and may well run a pool of its
own. What tells a pool worker apart is its worker loop: every such pool runs its
tasks from a loop function on the worker process's main thread, so its frame is
on that thread's stack for as long as a task runs, whichever thread of the task
calls the map. A loop of the same code on another thread (``ThreadPool``, mpire's
threading workers) is a pool of threads in this process, and does not count.

The pool's size, where its worker loop's arguments tell it (a ``ProcessPoolExecutor``'s
call queue, an mpire worker's), is how many workers share the CPUs. Elsewhere
(loky) the workers are counted as the children of this one's parent (the caller's
process, or the forkserver) in ``/proc``: helpers of the parent (a resource tracker,
a forkserver) and children that run another program are not counted; other worker
processes of the same program are, whichever pool they belong to, as they take
the same cores.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Final

from payoff import _forks, _procfs
from payoff._imported import imported


def _futures_pool_size(names: dict[str, Any]) -> int | None:
    """A ``ProcessPoolExecutor`` sizes its call queue ``max_workers + EXTRA_QUEUED_CALLS`` (1)."""
    maxsize = getattr(names.get("call_queue"), "_maxsize", None)
    return maxsize - 1 if isinstance(maxsize, int) and maxsize > 1 else None


def _mpire_pool_size(names: dict[str, Any]) -> int | None:
    size = getattr(getattr(names.get("self"), "worker_comms", None), "n_jobs", None)
    return size if isinstance(size, int) and size > 0 else None


def _uncounted(names: dict[str, Any]) -> int | None:
    """loky's call queue is no measure of its pool (a reused executor resizes without a new queue)."""
    return None


WORKER_LOOPS: Final[tuple[tuple[str, str, str, Callable[[dict[str, Any]], int | None]], ...]] = (
    ("concurrent.futures.process", "_process_worker", "a concurrent.futures process pool", _futures_pool_size),
    ("joblib.externals.loky.process_executor", "_process_worker", "a joblib (loky) process pool", _uncounted),
    ("loky.process_executor", "_process_worker", "a loky process pool", _uncounted),
    ("mpire.worker", "AbstractWorker.run", "an mpire WorkerPool", _mpire_pool_size),
    ("multiprocessing.pool", "worker", "a multiprocessing.Pool", _uncounted),
)
"""(module, qualified name, what the pool is called, its size read from the loop's arguments) of each pool's
worker loop. A module not imported is no pool of this process, so nothing is imported to look. Where the loop
does not tell the pool's size, its worker processes are counted in ``/proc``."""

HELPERS: Final = (b"resource_tracker", b"semaphore_tracker", b"multiprocessing.forkserver")
"""Markers in the command line of a parent's helper processes, which run no tasks."""

SIBLINGS_TTL_SECONDS: Final = 2.0
"""The number of a pool's workers is re-read at most this often: a pool starts its workers as tasks come
(a ``ProcessPoolExecutor`` under spawn, one a submit) and replaces those that end, but rarely resizes."""


@dataclass(frozen=True)
class OuterPool:
    """The foreign pool this process is a worker of."""

    name: str
    workers: int | None
    """Worker processes sharing the CPUs, this one included; None where they cannot be counted (no ``/proc``)."""

    def cpus_left(self, cpus: int) -> int:
        """This worker's share of ``cpus``; uncounted workers are taken to fill them (one a core, as pools do)."""
        return 1 if self.workers is None else max(1, cpus // self.workers)

    def described(self, cpus: str) -> str:
        """Where the map runs, for a record's detail: ``cpus`` says what limits the CPUs (``cpus_described``)."""
        if self.workers is None:
            return f"map called inside a worker of {self.name}, whose workers could not be counted here, on {cpus}"
        return f"map called inside a worker of {self.name} with {self.workers} worker processes on {cpus}"


_codes: dict[CodeType, tuple[str, Callable[[dict[str, Any]], int | None]]] = {}
_resolved: set[str] = set()


def outer_pool() -> OuterPool | None:
    """The pool whose worker loop runs on this process's main thread, or None: this is no such worker.

    Measured on the 2-core machine: 2.3 us from a shallow stack, 11 us from 60 frames deep, 6 to 8 us in
    a worker (counting its pool's workers in ``/proc`` takes 0.2-0.4 ms, kept for 2 s). The planner asks
    only when a call would start processes, after a probe that costs far more.
    """
    codes = _loop_codes()
    if not codes:
        return None
    frame: object = _main_thread_frame()
    while isinstance(frame, FrameType):  # another thread's stack, read as it runs: before Python 3.12 a frame it
        # popped meanwhile may hand back any object as its ``f_back`` (a bool, in the suite): the walk ends there
        loop = codes.get(frame.f_code)
        if loop is not None:
            name, size_of = loop
            try:
                size = size_of(frame.f_locals)
            except Exception:  # another version's internals: count the workers instead
                size = None
            return OuterPool(name, size if size is not None else _siblings.get())
        frame = frame.f_back
    return None


def _loop_codes() -> dict[CodeType, tuple[str, Callable[[dict[str, Any]], int | None]]]:
    """Code objects of the worker loops of the pool modules imported so far (each looked up once)."""
    for module_name, qualname, name, size_of in WORKER_LOOPS:
        if module_name in _resolved:
            continue
        module = imported(module_name)
        if module is None:
            continue
        _resolved.add(module_name)
        target: object = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        code = getattr(target, "__code__", None)
        if isinstance(code, CodeType):
            _codes[code] = (name, size_of)
    return _codes


def _main_thread_frame() -> FrameType | None:
    main = threading.main_thread()
    if threading.current_thread() is main:
        return sys._getframe()
    return _current_frames().get(main.ident) if main.ident is not None else None


_FRAMES_LOCK = _forks.Lock()


def _current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()`` with the garbage collector held off.

    Before Python 3.12 it holds the interpreter's thread-list lock while it makes its dict and frame objects;
    a collection they set off that frees a ``threading.local`` takes that lock again, and the process hangs
    for good (CPython gh-106883): a call planned on a request thread froze a whole test run. One thread at a
    time, so that none turns the collector back on while another is inside.
    """
    with _FRAMES_LOCK:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


class _Siblings:
    """The worker processes of this one's parent, read again after :data:`SIBLINGS_TTL_SECONDS` (and in a new
    process, a forked one's parent and siblings being others)."""

    def __init__(self) -> None:
        self._lock = _forks.Lock()  # a lock held at a fork is taken afresh in the child
        self._at = -float("inf")
        self._pid = -1
        self._count: int | None = None

    def get(self) -> int | None:
        with self._lock:
            now = time.monotonic()
            if now - self._at > SIBLINGS_TTL_SECONDS or self._pid != os.getpid():
                self._count = count_siblings(os.getpid(), os.getppid())
                self._at, self._pid = now, os.getpid()
            return self._count


_siblings: Final = _Siblings()


def count_siblings(pid: int, parent: int, proc: Path = Path("/proc")) -> int | None:
    """Children of ``parent`` running the program ``pid`` runs, ``pid`` included; None where ``/proc`` cannot tell."""
    children = _children(parent, proc)
    if children is None or pid not in children:
        return None
    exe, own = _exe(pid, proc), _cmdline(pid, proc)
    count = 0
    for child in children:
        if child == pid:
            count += 1
            continue
        if exe is None or _exe(child, proc) != exe:  # another program, or ended (a zombie has no exe)
            continue
        line = _cmdline(child, proc)
        if line != own and any(marker in line for marker in HELPERS):
            continue
        count += 1
    return count


def _children(parent: int, proc: Path) -> set[int] | None:
    """The children of ``parent``: each thread's ``children`` file, or, on a kernel without them, every
    process's parent (``/proc/<pid>/stat``)."""
    try:
        tasks = os.listdir(f"{proc}/{parent}/task")
    except OSError:
        return None
    children: set[int] = set()
    for tid in tasks:
        try:
            text = _procfs.read(f"{proc}/{parent}/task/{tid}/children")
        except FileNotFoundError:
            return _children_by_scan(parent, proc)
        except OSError:
            continue
        children.update(int(word) for word in text.split())
    return children


def _children_by_scan(parent: int, proc: Path) -> set[int] | None:
    children: set[int] = set()
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = _procfs.read_text(f"{proc}/{entry}/stat")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
        if len(fields) > 1 and fields[1] == str(parent):
            children.add(int(entry))
    return children


def _exe(pid: int, proc: Path) -> str | None:
    try:
        return os.readlink(proc / str(pid) / "exe")
    except OSError:
        return None


def _cmdline(pid: int, proc: Path) -> bytes:
    try:
        return _procfs.read(f"{proc}/{pid}/cmdline")
    except OSError:
        return b""
