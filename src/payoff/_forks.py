"""What a child made by ``os.fork`` inherits from payoff, and what it must leave alone.

The child gets copies of the parent's executors but not the threads and worker
processes behind their pools, so a call on an inherited pool waits for workers
that do not exist. Those pools still belong to the parent: closing them from
the child (its ``atexit``, a finalizer) would stop the parent's workers and
delete its files. And a lock another parent thread held at the fork stays held
in the child forever. So in the child every executor forgets its pools without
touching them, takes fresh locks, and starts new pools when it needs them.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

_inherited: list[object] = []
"""The parent's pools, kept referenced in the child: nothing there ever finalizes or closes them."""


def in_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every child forked from now on (where ``os.fork`` exists)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=hook)


_forked = False


def _note_forked() -> None:
    global _forked
    _forked = True


in_child(_note_forked)


_distributed_at_fork: tuple[str, ...] = ()


def _note_distributed_threads() -> None:
    """Before a fork: the threads of dask's ``distributed`` that run now (its event loop, its offload and
    callback pools), which the child will not have. Kept for the child's own children too."""
    global _distributed_at_fork
    if "distributed" in sys.modules and not _distributed_at_fork:
        _distributed_at_fork = tuple(t.name for t in threading.enumerate()
                                     if t.name == "IO loop" or t.name.startswith("Dask-"))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_note_distributed_threads)


def distributed_inherited() -> tuple[str, ...]:
    """In a process forked from one where ``distributed`` ran: the names of its threads there. Its client,
    event loop and thread pools are copies whose threads do not exist here: a dask call waits forever."""
    return _distributed_at_fork if _forked else ()


def forked() -> bool:
    """Whether this process began as an ``os.fork`` of one that had payoff imported: its module state is a copy."""
    return _forked


def keep(parent_owned: object) -> None:
    """Hold something of the parent's for the child's whole life, so that nothing in the child closes it."""
    _inherited.append(parent_owned)


def _forget_parent_processes() -> None:
    """The parent's worker processes are not the child's children: its exit must not join or stop them.

    ``multiprocessing`` resets this set in the children it forks itself, but not after a plain
    ``os.fork``; its exit handler then fails on every one ("can only join a child process").
    """
    process = sys.modules.get("multiprocessing.process")
    children = getattr(process, "_children", None)
    if isinstance(children, set):
        me = os.getpid()
        for proc in list(children):
            if getattr(proc, "_parent_pid", me) != me:
                children.discard(proc)


in_child(_forget_parent_processes)


class _Held(threading.local):
    n = 0
    """Locks of payoff's this thread holds or waits for."""


_held = _Held()


def holding_a_lock() -> bool:
    """Whether this thread is inside one of payoff's locks (``Lock``, taken or being taken). Code the garbage
    collector or a signal handler runs there, in the middle of it, must not take one again: they are not
    reentrant, and an ``imap`` a collection freed under the planner's lock hung its thread for good (hunt 74)."""
    return _held.n > 0


class Lock:
    """A lock that a child made by ``os.fork`` gets afresh, unlocked, and that counts who holds it.

    A parent thread inside payoff's bookkeeping at the fork (a planner
    update, a metrics batch) holds its lock in the child forever: that thread
    does not exist there, so the child's first map would wait for it. The
    child has one thread, so nothing it could wait for is lost. Each thread's
    count of the locks it holds is counted before a lock is taken and after it
    is let go, so ``holding_a_lock`` errs only towards yes.
    """

    __slots__ = ("__weakref__", "_lock", "_reentrant")

    def __init__(self, reentrant: bool = False) -> None:
        self._reentrant = reentrant
        self._lock: Any = threading.RLock() if reentrant else threading.Lock()
        _locks.add(self)

    def _renew(self) -> None:
        self._lock = threading.RLock() if self._reentrant else threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        _held.n += 1
        try:
            got = bool(self._lock.acquire(blocking, timeout))
        except BaseException:  # Ctrl-C while it waited
            _held.n -= 1
            raise
        if not got:
            _held.n -= 1
        return got

    def release(self) -> None:
        self._lock.release()
        _held.n -= 1

    def __enter__(self) -> bool:  # acquire() without its arguments' checks: 0.69 us a lock where calling it took 0.79
        _held.n += 1
        try:
            return bool(self._lock.acquire())
        except BaseException:
            _held.n -= 1
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()
        _held.n -= 1


_locks: weakref.WeakSet[Lock] = weakref.WeakSet()


def _renew_locks() -> None:
    """Every lock unlocked in the child, and its one thread holding none: a worker forked while its pool's start
    held the registry's lock would otherwise count it for its whole life (``holding_a_lock``)."""
    for lock in list(_locks):
        lock._renew()
    _held.n = 0


in_child(_renew_locks)


LOKY_PACKAGES = ("joblib.externals.loky", "loky")
"""joblib's vendored loky and the standalone package: each keeps its own reusable executor."""


def forget_inherited_loky() -> None:
    """Let ``joblib.Parallel`` in a forked payoff worker start its own executor instead of the parent's copy.

    loky keeps one reusable executor per process in module globals. A fork copies
    that object but not its manager thread or its worker processes, so joblib in
    the child reuses it (same arguments, not marked broken or shut down) and
    queues work nobody will ever take: the call never returns. In the child the
    executor is forgotten, kept referenced so nothing here closes what is the
    parent's, and the locks a parent thread may have held at the fork are new:
    ``_executor_lock`` (held while the parent resolved or resized its executor)
    and ``_global_shutdown_lock`` (held while it joined a manager thread). Both are
    only ever held by a loky thread of this process, and this worker has no other
    thread yet, so a fresh lock loses nothing. ``_threads_wakeups`` names the
    parent's manager threads, which do not run here: loky's exit handler would
    wake them under their executors' locks, so it is emptied (``multiprocessing``
    does so in its own children already). joblib's note of the last executor's
    arguments goes too: with no executor it decides nothing.

    Called by payoff's worker start-up only, never for every fork of the program.
    """
    for package in LOKY_PACKAGES:
        reusable = _module_state(package + ".reusable_executor")
        if "_executor" in reusable:
            if reusable["_executor"] is not None:
                keep(reusable["_executor"])
            reusable.update(_executor=None, _executor_kwargs=None, _executor_lock=threading.RLock())
        executor = _module_state(package + ".process_executor")
        if "_global_shutdown_lock" in executor:
            executor["_global_shutdown_lock"] = threading.Lock()
            wakeups = executor.get("_threads_wakeups")
            if isinstance(wakeups, weakref.WeakKeyDictionary):
                wakeups.clear()
    memmapping = _module_state("joblib.executor")
    if "_executor_args" in memmapping:
        memmapping["_executor_args"] = None


def _module_state(name: str) -> dict[str, Any]:
    """A loaded module's globals; empty for one not loaded (then nothing of it was inherited)."""
    module = sys.modules.get(name)
    return vars(module) if module is not None else {}


def forget_unfinished_imports() -> None:
    """Let a forked child import afresh a module another parent thread was importing at the fork.

    While a module's code runs, the importing thread holds that module's import
    lock and the half-made module sits in ``sys.modules``. A fork copies both
    but not the thread: every later import of the module in the child waits
    for a lock nobody will release, so an item that imports it (or a function
    of it, unpickled by name) hangs its worker for good; Python resets only its
    global import lock after a fork. Here, still the worker's only thread, the
    half-made module and its lock are dropped, so the next import runs the
    module's code again, as a spawned worker would. An import of this thread's
    own (the pool started from a module's import) is left alone: it goes on, as
    does one of a thread an earlier at-fork hook started in the child.
    """
    bootstrap = sys.modules.get("importlib._bootstrap")
    locks = getattr(bootstrap, "_module_locks", None)
    if not isinstance(locks, dict):
        return
    here = {thread.ident for thread in threading.enumerate()}  # this one, and any an earlier fork hook started
    for name, ref in list(locks.items()):
        lock = ref() if callable(ref) else None
        owner = getattr(lock, "owner", None)
        if owner is None or owner in here:
            continue
        locks.pop(name, None)
        module = sys.modules.get(name)
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            del sys.modules[name]


in_child(forget_unfinished_imports)
"""In every child forked once payoff is imported, the user's own (``os.fork``, a ``multiprocessing`` Process or
Pool) as well as payoff's workers. payoff loads its names and backends on first use: a thread's first
``payoff.map`` runs ~100 ms of imports (joblib's 120 ms more), and a child forked meanwhile waited for good in
its first payoff call, ``timeout=`` or not (hunt 63). A module another thread was importing cannot be imported
in the child otherwise: its lock's holder is gone there."""


_MACHINERY = ("concurrent.futures", "multiprocessing")
"""The modules whose own threads (pool managers, queue feeders) a forked worker never waits for."""


def threads_beside() -> tuple[str, ...]:
    """The names of the threads, other than this one, whose locks a child forked now inherits held.

    payoff's own threads are left out (its locks are renewed in a child), and so
    are the standard library's pool machinery threads, whose locks a worker never
    takes. What is left is the program's: a lock one of them holds at the fork
    is held in the child for good, since its holder does not exist there.
    """
    me = threading.current_thread()
    return tuple(t.name for t in threading.enumerate()
                 if t is not me and not t.name.startswith("payoff") and t.name != "QueueFeederThread"
                 and not type(t).__module__.startswith(_MACHINERY))


def held_at_fork_hint(threads: tuple[str, ...]) -> str:
    """What to tell a user whose forked workers did not answer in time, when other threads ran at the fork."""
    if not threads:
        return ""
    shown = ", ".join(repr(name) for name in threads[:5]) + (f" and {len(threads) - 5} more" if len(threads) > 5
                                                              else "")
    return (f". Its workers were forked while other threads of this program ran ({shown}): a lock one of them "
            "held at that moment stays held in every worker, so an item or initializer that takes it waits for "
            "good; ParallelConfig(start_method='forkserver') (PAYOFF_PARALLEL=start_method=forkserver) starts workers "
            "that inherit no such lock")
