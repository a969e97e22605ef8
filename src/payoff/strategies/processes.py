"""Processes: ``concurrent.futures.ProcessPoolExecutor`` with pre-pickled chunks.

The parent pickles each chunk itself and the worker pickles its outcome, so
the bytes crossing the boundary are counted exactly and the pool only moves
opaque ``bytes`` (a memcpy, not a second pickling).
"""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures._base import CANCELLED
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from payoff import _by_value, _caller_state, _exit, _forks, _warning_filters
from payoff import _out_of_band as out_of_band
from payoff._costs import start_method
from payoff._crash_marks import CrashMarks
from payoff._globals_read import bindings, global_names
from payoff._native_threads import per_worker
from payoff._process_tree import descendants, signal_alive
from payoff._rescue import Rescue
from payoff._scratch import ScratchDir
from payoff._stop_marks import StopMarks
from payoff.errors import PoolStoppedError, RemoteTraceback, WorkerInitError
from payoff.strategies import SHIP_ONCE_BYTES
from payoff.strategies.base import CANCEL_ALL, ChunkTask, StartStop, Strategy, closed_pool, init_error
from payoff.strategies.main_guard import REFUSED, main_import_hint, spawned_workers_import_main, unguarded_main_hint
from payoff.strategies.reach import WorkerImports, send_by_value
from payoff.strategies.reloads import CodeWatch, Reload
from payoff.strategies.spawned_main import main_script_version, spawned_main_names
from payoff.strategies.start_failure import thread_refused
from payoff.worker import (
    SET_BY_INITIALIZER,
    CancelToken,
    ChunkOutcome,
    ShippedFn,
    arrived,
    call_outcome,
    delivering_for,
    first_unpicklable,
    init_process,
    ping,
    read_init_failure,
    received,
    run_pickled_call,
    run_pickled_chunk,
)

_KILL_GRACE_SECONDS = 1.0
_KEEP_SHIPPED = 8


class PickledPoolStrategy(Strategy):
    """Shared machinery of the process-based pools.

    A shipped function's file is needed until the last chunk that names it
    has run: a worker loads it when the chunk starts, which for a queued chunk
    is long after its call shipped it. So each file counts its holders (the
    call's :class:`ShippedFn` while the call lives, and every submitted chunk
    until it is done), and only files nobody holds are pruned, oldest first,
    beyond the _KEEP_SHIPPED most recently used ones.
    """

    crosses_processes = True
    _ship_dir: ScratchDir | None = None
    _seen: dict[int, Any] | None = None

    def __init__(self, workers: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), start_method: str | None = None) -> None:
        super().__init__(workers, initializer, initargs, start_method)
        self._ship_lock = threading.RLock()  # re-entrant: a ShippedFn's finalizer may run inside a held section
        self._shipped: dict[str, str] = {}
        """Digest to path of the files on disk, least recently shipped first."""
        self._holders: Counter[str] = Counter()
        self._stop_keys: weakref.WeakKeyDictionary[CancelToken, tuple[StopMarks, int]] = weakref.WeakKeyDictionary()
        """Each call's key in the pool's file of stopped calls (``_stop_for``)."""
        _POOL_STRATEGIES.add(self)

    _imports: WorkerImports | None = None
    _code: CodeWatch | None = None

    def start(self, stop: StartStop | None = None) -> float:
        self._code = CodeWatch()  # before the workers start: what they import is no older than this
        return super().start(stop)

    def outdated(self) -> list[Reload]:
        return self._code.changed() if self._code is not None else []

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        self._by_value_if_foreign(fn)
        return self._ship_blob(fn, self._dumps_fn(fn))

    def _by_value_if_foreign(self, fn: Callable[[Any], Any]) -> bool:
        """Whether ``fn``'s module is out of the workers' reach; if so it travels by value from now on."""
        module = self._imports.foreign(fn) if self._imports is not None else None
        if module is None:
            return False
        send_by_value(module)
        return True

    def _ship_blob(self, fn: Callable[[Any], Any], blob: out_of_band.OutOfBand) -> Any:
        """``fn`` itself when small; a :class:`ShippedFn` naming a file holding ``blob`` when large.

        The file only saves sending ``fn`` with every chunk: where it cannot be written (a full or
        read-only temp folder, a file size limit), ``fn`` travels with its chunks, as a stdlib pool sends it.
        """
        if blob.size < SHIP_ONCE_BYTES:
            return fn
        digest = blob.digest()
        with self._ship_lock:
            path = self._shipped.pop(digest, None)
            if path is None or not os.path.exists(path):  # a temp cleaner may have taken it
                try:
                    path = self._write_shipped(digest, blob)
                except OSError:
                    return fn
                self.versions_written += 1
            self._shipped[digest] = path
            self._hold(digest)
            self._prune_shipped()
        shipped = ShippedFn(digest, path, blob.size)
        weakref.finalize(shipped, self._release, digest)
        return shipped

    def _write_shipped(self, digest: str, blob: out_of_band.OutOfBand) -> str:
        self._ship_dir = _renewed(self._ship_dir, lambda: ScratchDir("payoff-ship-"))
        path = os.path.join(self._ship_dir.path, digest + ".pkl")
        tmp = path + f".{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                blob.write_to(fh)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a part written before the disk filled
            raise
        return path

    def _hold(self, digest: str) -> None:
        with self._ship_lock:
            self._holders[digest] += 1

    def _release(self, digest: str) -> None:
        with self._ship_lock:
            self._holders[digest] -= 1
            if self._holders[digest] <= 0:
                del self._holders[digest]

    def _prune_shipped(self) -> None:
        extra = len(self._shipped) - _KEEP_SHIPPED
        idle = [digest for digest in self._shipped if not self._holders.get(digest)]
        for digest in idle[:max(0, extra)]:
            with contextlib.suppress(OSError):
                os.unlink(self._shipped.pop(digest))

    def _dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def _dumps_fn(self, fn: Any) -> out_of_band.OutOfBand:
        """The function as ``_dumps`` pickles it, its large buffers (a model's arrays) left where they are."""
        return out_of_band.dumps(fn, pickle.dumps)

    def _dumps_noting(self, obj: Any) -> tuple[bytes, bool]:
        """``obj`` pickled as ``_dumps`` pickles it, and whether it holds a ``__main__`` function or class the
        workers cannot find by name (then it must go by value)."""
        return self._dumps(obj), False

    _init_dir: ScratchDir | None = None

    def _init_args(self, parent: int | None, owner: int | None = None) -> tuple[Any, ...]:
        """``init_process``'s arguments; a pool with an initializer gets a folder its workers report to, and every
        pool its workers' native thread limit (decided now, from the CPU capacity of now).

        Where no folder can be made (a read-only or full temp folder), the pool starts without it: a worker
        whose initializer fails then breaks the pool with less to say, as a stdlib pool's would.
        """
        if self.initializer is not None and self._init_dir is None:
            with contextlib.suppress(OSError):
                self._init_dir = ScratchDir("payoff-init-")
        return (self.initializer, self.initargs, parent, None if self._init_dir is None else self._init_dir.path,
                owner, per_worker(self.inner_threads, self.workers))

    def _init_error(self) -> WorkerInitError | None:
        report = read_init_failure(self._init_dir.path) if self._init_dir is not None else None
        if report is None:
            return None
        pid, raised, text = report
        return init_error(self.initializer, raised, f"worker process {pid}", pid, RemoteTraceback(text))

    _marks: CrashMarks | None = None
    _stops: StopMarks | None = None
    marks_submits = True

    def _marks_for(self, task: ChunkTask) -> tuple[str, int] | None:
        """Where a chunk rerun after a crash marks each item it runs, and its call (its cancel token's id, the
        call's own while it runs); None for a first run (or no folder)."""
        return self._mark_in(id(task.cancel)) if task.retry else None

    def _stop_for(self, task: ChunkTask) -> tuple[str, int] | None:
        """Where the chunk's worker reads whether its call stopped: the pool's file of stopped calls and the call's
        key there, given once per call (its token writes the key when set); None without a token or a folder."""
        token = task.cancel
        if token is None or self._pool is None:  # a closed pool: its send fails, and no folder is made again
            return None
        with self._ship_lock:
            marks = self._marks_folder()
            if marks is None:
                return None
            if self._stops is None or self._stops.folder != marks.path:
                try:
                    self._stops = StopMarks(marks.path)
                except OSError:
                    return None
            stops = self._stops
            known = self._stop_keys.get(token)
            if known is None or known[0] is not stops:
                known = self._stop_keys[token] = (stops, stops.key())
                token.when_set(functools.partial(stops.stop, known[1]))
        return stops.path, known[1]

    def _mark_in(self, call: int | None) -> tuple[str, int] | None:
        """The pool's crash-mark folder and ``call``; None for no call (or no folder)."""
        if call is None:
            return None
        with self._ship_lock:
            marks = self._marks_folder()
            return None if marks is None else (marks.path, call)

    def _marks_folder(self) -> CrashMarks | None:
        """The pool's crash-mark folder, made again where a temp cleaner took it; None where none can be made.
        Called under ``_ship_lock``."""
        try:
            self._marks = _renewed(self._marks, CrashMarks)
        except OSError:
            return None
        return self._marks

    def where_the_dead_stood(self, call: int) -> list[int]:
        """Where the workers that died stood, those payoff stopped (:meth:`kill`) left out: a map that saw the
        pool break kills the survivors while the pool may still be failing its calls one by one."""
        with self._ship_lock:
            marks = self._marks
        return [] if marks is None else marks.where_the_dead_stood(call, spare=self._killed)

    _killed: frozenset[int] = frozenset()

    def _remove_files(self) -> None:
        """The pool's shipped functions, initializer reports and crash marks: they live as long as the pool."""
        with self._ship_lock:
            ship_dir, self._ship_dir = self._ship_dir, None
            init_dir, self._init_dir = self._init_dir, None
            marks, self._marks = self._marks, None
            self._shipped.clear()
        for folder in (ship_dir, init_dir, marks):
            if folder is not None:
                folder.remove()

    def _warm_up(self) -> None:
        assert self._pool is not None
        pings = [self._pool.submit(ping) for _ in range(self.workers)]
        self._remember_processes()  # a start that times out kills the workers it has
        self._await_ready(pings)
        self._remember_processes()

    def cancel_queued(self) -> None:
        """Cancel the work items no worker has taken: what ``shutdown(cancel_futures=True)`` does in
        ``concurrent.futures`` and loky, without shutting down. Their manager threads drop a cancelled item
        when they meet it."""
        self._cancel_queued_of(self._pool)

    @staticmethod
    def _cancel_queued_of(pool: Any) -> None:
        items = getattr(pool, "_pending_work_items", None)
        if not items:
            return
        for item in list(items.values()):
            future = getattr(item, "future", None)
            if isinstance(future, Future):
                future.cancel()  # fails, as it should, for one a worker has taken

    def _remember_processes(self) -> None:
        """Keep every worker's process object: the pool forgets the dead, but their exit codes name a crash."""
        if self._seen is None:
            self._seen = {}
        for pid, proc in list((getattr(self._pool, "_processes", None) or {}).items()):
            if pid not in self._seen:
                self._seen[pid] = proc
                _exit.note_worker(proc)

    retires_idle_workers: bool = False
    """Whether the pool ends idle workers with a clean exit (loky does): such an exit then names no crash."""

    def lost_a_worker(self) -> bool:
        """One system call, never a wait (it runs as a call leases the pool): the pool's own broken flag, or a
        worker's sentinel ready (its process has ended, reaped or not)."""
        pool = self._pool
        if getattr(pool, "_broken", False) or getattr(getattr(pool, "_flags", None), "broken", None):
            return True  # the stdlib pool's message, loky's error: it saw a worker die (and may have forgotten it)
        procs = list((getattr(pool, "_processes", None) or {}).values())
        try:
            ended = set(multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0))
        except (ValueError, OSError):  # a process object closed meanwhile: the pool is being torn down
            return False
        if not ended or not self.retires_idle_workers:
            return bool(ended)
        # loky ends idle workers itself, cleanly; a kill it has not seen yet shows in the exit code
        return any(p.exitcode not in (None, 0) for p in procs if p.sentinel in ended)

    def _start_broken(self) -> BaseException | None:
        """The pool's manager thread, which hands the workers their pings, ended with them unanswered: it died of
        an exception, as "can't start new thread" under a tight ``ulimit -u``, which counts threads, and the start
        waited out pool_start_timeout (300 s) for answers nobody would give (hostile trial 44 on processes;
        constrained trial on joblib, whose loky manager dies the same way, 5 runs of 10 at ``ulimit -u 7``)."""
        manager = getattr(self._pool, "_executor_manager_thread", None)
        if not isinstance(manager, threading.Thread) or manager.is_alive():
            return None
        return BrokenProcessPool(f"the {self.name} pool's manager thread ended before its workers answered: "
                                 + thread_refused(self.name))

    def exit_codes(self, broke: BaseException | None = None) -> list[int]:
        """The ended workers' codes, the likeliest crash first.

        After a crash the pool stops the other workers (``concurrent.futures``
        with SIGTERM, loky with SIGKILL), so those signals name the crash only
        when nothing else does (SIGKILL alone is the kernel's OOM killer). A
        clean exit is an item's ``os._exit(0)``, unless this pool retires idle
        workers that way.
        """
        codes = _exit_codes(list((self._seen or {}).values()))
        return self.likeliest_first([code for code in codes if code is not None])

    @classmethod
    def likeliest_first(cls, codes: list[int]) -> list[int]:
        stops = {-int(signal.SIGKILL): 2, -int(signal.SIGTERM): 3}
        clean = 4 if cls.retires_idle_workers else 1
        return sorted(codes, key=lambda code: clean if code == 0 else stops.get(code, 0))

    def submit(self, fn: Callable[[Any], Any], task: ChunkTask) -> Future[Any]:
        body = (task.items, task.first, task.index, task.budget_ns, self._marks_for(task), task.check_each,
                self._stop_for(task), _warning_filters.shipped(), _caller_state.shipped())
        sent = self._send(fn, body, run_pickled_chunk, lambda dumps, fn: _unsendable_part(dumps, fn, task))
        task.encode_ns, task.bytes_sent, task.submit_ns = sent.encode_ns, sent.n_bytes, sent.submit_ns
        return sent.future

    def submit_call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.submit_marked(None, fn, args, kwargs)

    def submit_marked(self, tag: int | None, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any], into: Future[Any] | None = None,
                      rescue: Rescue | None = None) -> Future[Any]:
        """A submitted call travels as a map's chunk does (the function shipped as a map ships it, by value
        when the workers' ``__main__`` does not hold it as it is now), and its outcome comes back as bytes:
        an exception the parent cannot rebuild arrives as a ``RemoteError`` instead of breaking the pool.
        What cannot be pickled fails the future, as the stdlib pool does, not ``submit``. ``tag``: the call
        marks its worker's crash mark with it while it runs; ``into``: the future of the call's earlier run,
        which this run ends; ``rescue``: what takes the call over if the pool breaks under it
        (``payoff._rescue``)."""
        pool = self._pool
        if pool is None:
            raise closed_pool(self.name)
        try:
            shipped = self.ship(fn)
            body = (args, kwargs, self._mark_in(tag), _warning_filters.shipped(), _caller_state.shipped())
            payload, pickler, _ = self._encode(shipped, body, _unsendable_call)
        except Exception as exc:
            if into is not None:
                raise
            failed: Future[Any] = Future()
            failed.set_exception(exc)
            return failed
        remote = self._dispatch(pool, shipped, payload, pickler, run_pickled_call)
        return _call_outcome(remote, lambda: self.stopped_by, into if isinstance(into, _Relayed) else None, rescue,
                             pool=id(self))

    def _send(self, fn: Any, body: tuple[Any, ...], entry: Callable[[bytes, str], bytes],
              describe: Callable[[Callable[[Any], bytes], Any], str]) -> _Sent:
        """Pickle ``(fn, *body)`` and submit it to ``entry``."""
        pool = self._pool
        if pool is None:
            raise closed_pool(self.name)
        payload, pickler, encode_ns = self._encode(fn, body, describe)
        submit_ns = time.monotonic_ns()
        return _Sent(self._dispatch(pool, fn, payload, pickler, entry), len(payload), encode_ns, submit_ns)

    def _dispatch(self, pool: Any, fn: Any, payload: bytes, pickler: str,
                  entry: Callable[[bytes, str], bytes]) -> Future[Any]:
        """Submit an encoded payload; a shipped file (sent by value or not) stays until its work is done."""
        future = self._submit_payload(pool, fn.fn if isinstance(fn, ByValue) else fn, payload, pickler, entry)
        self._remember_processes()
        return future

    def _encode(self, fn: Any, body: tuple[Any, ...],
                describe: Callable[[Callable[[Any], bytes], Any], str]) -> tuple[bytes, str, int]:
        """``(fn, *body)`` pickled, the pickler the worker answers with, and the time it took. ``body[0]``
        holds the data that may be of classes defined in ``__main__``; ``describe`` names the part that failed
        to pickle, in a note on the error."""
        by_value = isinstance(fn, ByValue)
        if isinstance(fn, ByValue):
            fn = fn.fn
        t0 = time.perf_counter_ns()
        dumps = _by_value.dumps if by_value else self._dumps
        try:
            if by_value:
                payload = dumps((fn, *body))
            else:
                payload, unknown = self._dumps_noting((fn, *body))
                if unknown:  # data of a class (or holding a function) the workers cannot look up
                    by_value, dumps = True, _by_value.dumps
                    payload = dumps((fn, *body))
        except Exception as exc:
            with contextlib.suppress(Exception):  # the user's own exception arrives whatever its notes allow
                exc.add_note(f"payoff: {describe(dumps, fn)} cannot be pickled for {self.name}")
            raise
        return payload, "cloudpickle" if by_value else self.pickler, time.perf_counter_ns() - t0

    def _submit_payload(self, pool: Any, fn: Any, payload: bytes, pickler: str,
                        entry: Callable[[bytes, str], bytes]) -> Future[Any]:
        """A chunk naming a shipped file holds it until the chunk is done, however its call ended."""
        sent = _SentOnce(payload)
        if not isinstance(fn, ShippedFn):
            return self._into(pool, entry, sent, pickler)
        digest = fn.digest
        self._hold(digest)
        try:
            future = self._into(pool, entry, sent, pickler)
        except BaseException:
            self._release(digest)
            raise
        future.add_done_callback(lambda _: self._release(digest))
        return future

    def _into(self, pool: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super()._into(pool, fn, *args, **kwargs)
        if type(future) is Future:  # the stdlib pool's; loky's own Future subclass is left as it is
            future.__class__ = _PoolFuture
            future._pool = weakref.ref(pool)  # type: ignore[attr-defined]
        return future

    def collect(self, raw: Any, task: ChunkTask) -> ChunkOutcome:
        outcome = received(raw)
        outcome.bytes_received = len(raw)
        outcome.bytes_sent = task.bytes_sent + outcome.fn_bytes_loaded
        return arrived(outcome)

    def process_ids(self) -> list[int]:
        procs = getattr(self._pool, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.pid is not None]

    def kill(self) -> None:
        """Terminate the workers, and the processes they started (``joblib.Parallel``'s loky workers, an item's
        subprocess): a running chunk cannot be interrupted any other way, and what it started would otherwise
        run on, adopted by init, for nobody (see :mod:`payoff._process_tree`)."""
        self._remember_processes()
        procs = [p for p in list((self._seen or {}).values()) if p.exitcode is None]
        self._killed = self._killed | {p.pid for p in procs if p.pid is not None}
        pipe, manager = _internals(self._pool)  # the pool's shutdown forgets them
        stdlib = isinstance(self._pool, ProcessPoolExecutor)
        self.shutdown(wait=False)  # first: queued futures are cancelled before the pool sees its workers die
        started = descendants(p.pid for p in procs if p.pid is not None)  # now: a dead worker's are init's
        _signal_all(procs, signal.SIGTERM)
        signal_alive(started, signal.SIGTERM)
        _signal_all(procs, signal.SIGCONT)  # a stopped worker (a debugger, kill -STOP) acts on SIGTERM only once woken
        signal_alive(started, signal.SIGCONT)
        deadline = time.monotonic() + _KILL_GRACE_SECONDS
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        _signal_all([p for p in procs if p.exitcode is None], signal.SIGKILL)
        signal_alive(started, signal.SIGKILL)
        for proc in procs:
            proc.join(0.5)
        if not isinstance(manager, threading.Thread) or manager.ident is None:
            manager = None  # it never started (a thread the OS refused): nothing reads the pipe, nothing to join
        if all(_ended(p) for p in procs):
            if stdlib:
                _end_result_pipe(pipe)
            elif manager is not None:
                _unstick_later(manager, pipe)
        if stdlib and manager is not None and manager is not threading.current_thread():
            manager.join(_KILL_GRACE_SECONDS)  # see _internals


class _PoolFuture(Future[Any]):
    """A stdlib pool's future that a broken pool's manager thread may fail after it was cancelled or failed.

    ``terminate_broken`` calls ``set_exception`` on every future still in its pending work items, a
    cancelled one too (payoff's cancel of a queued call, a racing ``cancel()``): ``InvalidStateError``
    killed the thread, leaving the later futures never done and its queue feeder thread and pipes leaked.
    So did one :func:`_fail_orphans` failed first: it waits for the manager it read off the pool, which a
    pool stopped by another call's timeout no longer names (a service with one request type timing out:
    a thread and ~7 fds leaked per stop, still there after ``shutdown()``). The first one failed as broken
    sends for :func:`_fail_orphans`.
    """

    _pool: weakref.ref[Any] | None = None

    def set_exception(self, exception: BaseException | None) -> None:
        try:  # a cancel, or payoff's reaper (``_fail_orphans``), may end it first: only the failed set tells
            super().set_exception(exception)
        except InvalidStateError:
            if not self.done():
                raise
        pool = None if self._pool is None else self._pool()
        if isinstance(exception, BrokenExecutor) and pool is not None:
            _reap_orphans(pool)


_reaped: weakref.WeakSet[Any] = weakref.WeakSet()
_POOL_STRATEGIES: weakref.WeakSet[PickledPoolStrategy] = weakref.WeakSet()


def _disarm_parent_pools() -> None:
    """In a child made by ``os.fork``: the parent's pools (kept, see ``_forks.keep``) must not call back.

    Each pool's manager thread holds a weak reference to it whose callback wakes that thread when the pool
    is collected; the thread is the parent's, and at the child's exit the callback met a torn-down
    ``multiprocessing`` (``AttributeError: 'NoneType' object has no attribute 'util'`` on stderr, on every
    exit of a child forked after a map on processes or joblib). Dropped first, the reference never calls.
    """
    for strategy in list(_POOL_STRATEGIES):
        thread = getattr(getattr(strategy, "_pool", None), "_executor_manager_thread", None)
        if thread is not None and hasattr(thread, "executor_reference"):
            thread.executor_reference = None


_forks.in_child(_disarm_parent_pools)

_reaped_lock = _forks.Lock()


def _reap_orphans(pool: Any) -> None:
    """Once per broken pool: :func:`_fail_orphans` on a thread of its own, which waits for the pool's manager
    (the thread failing its calls, most often this one). Its pending calls are held, not the pool: a call that
    lets go of the pool (a map's recovery, a cancel) frees it at once, and its late call would be lost."""
    with _reaped_lock:
        if pool in _reaped:
            return
        _reaped.add(pool)
    manager = getattr(pool, "_executor_manager_thread", None)
    items = getattr(pool, "_pending_work_items", None)
    with contextlib.suppress(RuntimeError):  # no thread can start (the interpreter exits): the manager goes on
        threading.Thread(target=_fail_orphans, args=(items, manager), name="payoff-orphans", daemon=True).start()


def _fail_orphans(items: dict[int, Any] | None, manager: threading.Thread | None) -> None:
    """Fail what a broken pool left pending once its manager thread has ended: nothing else ever will.

    Python 3.11's ``terminate_broken`` marks the pool broken outside the lock ``submit`` holds, so a call that
    passed ``submit``'s "broken?" check just before is put among the pending calls after they were failed and
    cleared (or while they are iterated, which kills the manager thread before it fails the rest, some of them
    running on the workers it killed): its future was never completed, and a map whose chunk it was waited for
    it for good.
    """
    if manager is not None and manager.ident is not None and manager is not threading.current_thread():
        manager.join()
    for item in list((items or {}).values()):
        future = getattr(item, "future", None)
        if isinstance(future, Future) and not future.done():
            with contextlib.suppress(InvalidStateError):  # cancelled or ended meanwhile
                future.set_exception(BrokenProcessPool(
                    "payoff: the process pool broke (a worker died) as this call was sent or while it ran: "
                    "its result never came back"))


class _SentOnce:
    """A payload the pool lets go of once its queue has pickled it for the worker.

    The stdlib's and loky's pools keep a call's arguments until its result is
    back: a chunk's pickle stayed in the caller while the worker ran it, and a
    call of 500 MB arrays held about six of them beside the input (3 GB more,
    where ``ProcessPoolExecutor``, which keeps only the items, held one; hunt 64).
    The worker receives the bytes themselves (``bytes`` of bytes is the same object).
    """

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload: bytes | None = payload

    def __reduce__(self) -> tuple[Any, ...]:
        payload, self.payload = self.payload, None
        if payload is None:
            raise RuntimeError("payoff: a chunk's payload was pickled a second time, after it was sent")
        return bytes, (payload,)


class _Sent(NamedTuple):
    future: Future[Any]
    n_bytes: int
    encode_ns: int
    submit_ns: int


def _unsendable_call(dumps: Callable[[Any], bytes], fn: Any) -> str:
    """Which part of a submitted call failed to pickle, for the error's note."""
    if first_unpicklable([fn], dumps) is not None:
        return "the submitted function"
    return "the submitted call's arguments"


def _call_outcome(remote: Future[Any], stopped: Callable[[], str | None], into: _Relayed | None = None,
                  rescue: Rescue | None = None, pool: int = 0) -> Future[Any]:
    """The submitted call's own result or exception, read from the bytes its worker sent back.

    Cancelling it cancels the call where the pool still can; a cancel from the pool (``shutdown`` with
    ``cancel_futures``, ``ex.cancel()``'s kill) ends it cancelled and notified, so ``wait`` and ``as_completed``
    see it done. A pool payoff stopped on purpose fails the calls it ran or had queued as "terminated
    abruptly", but nothing crashed: see :func:`_stopped_outcome`. A pool that broke hands the call to its
    ``rescue``, which may run it again (``into``: the future of its earlier run, which this run ends).
    """
    local = _Relayed(remote) if into is None else into.relink(remote)
    if rescue is not None:
        local.rescue = rescue

    def done(f: Future[Any]) -> None:
        try:
            settle(f)
        finally:
            if local._remote is f:  # the pool's future and this one held each other: freed now, not by the GC
                local._remote = None

    def settle(f: Future[Any]) -> None:
        if local.done():  # cancelled while it waited to run again: this run's end is nobody's
            return
        by = stopped() if f.cancelled() or isinstance(f.exception(), BrokenExecutor) else None
        if f.cancelled() or by is not None:
            _stopped_outcome(local, by)
            return
        try:
            error = f.exception()
            if error is not None and local.rescue is not None:
                error = local.rescue(local, error)  # None: it runs again
                if error is None:
                    return
            ok, value = (False, error) if error is not None else call_outcome(f.result())
        except BaseException as exc:  # bytes the parent could not read
            ok, value = False, exc
        if local.set_running_or_notify_cancel():
            with delivering_for(pool):  # its done-callbacks run on this pool's own thread
                local.set_result(value) if ok else local.set_exception(value)

    remote.add_done_callback(done)
    return local


def _stopped_outcome(local: _Relayed, by: str | None) -> None:
    """A call stopped with its pool: cancelled when it was cancelled (its own ``cancel()``, ``ex.cancel()``, a
    cancelling shutdown); when another call stopped the pool (its timeout, Ctrl-C), this call asked for nothing
    of the kind, so it fails with :class:`PoolStoppedError` naming that call, not as if it had been cancelled."""
    if by is None or by == CANCEL_ALL or local.cancelling:
        local.cancel_here()  # not cancel(): the remote one may be done, not cancelled
        return
    local.set_running_or_notify_cancel()
    local.set_exception(PoolStoppedError(
        f"payoff: this submitted call's pool was stopped by {by} while the call waited or ran on it (its work was "
        "lost; nothing crashed and the call was not cancelled): submit it again to run it on fresh workers",
        stopped_by=by))


class _Relayed(_exit.QuietAtExit):
    """A future whose ``cancel`` reaches the pool's own future (a call not started yet does not run)."""

    def __init__(self, remote: Future[Any]) -> None:
        super().__init__()
        self._remote: Future[Any] | None = remote
        """The pool's future of the call's current run; None while it waits to run again."""
        self.cancelling = False
        """Its own ``cancel()`` is under way: the pool's future it cancels ends this one cancelled."""
        self.rescue: Rescue | None = None
        """Given the error of a pool that broke under the call: None when it takes the call over (to run it
        again), else the error the call fails with (``payoff._rescue``)."""

    def cancel_here(self) -> bool:
        """Cancelled and notified, done for ``wait()`` and ``as_completed()``, with no pool future asked; False
        when it ended otherwise."""
        if not Future.cancel(self):
            return False
        with self._condition:  # a second cancel finds it notified already
            if self._state == CANCELLED:
                self.set_running_or_notify_cancel()
        return True

    def relink(self, remote: Future[Any]) -> _Relayed:
        self._remote = remote
        return self

    def running(self) -> bool:
        """Running while the pool's future is: this one's own state stays pending until the call ends, so that
        a call waiting to run again after a broken pool can still be cancelled."""
        remote = self._remote
        return super().running() or (remote is not None and remote.running() and not self.done())

    def cancel(self) -> bool:
        rescue = self.rescue
        if rescue is None:
            return self._cancel()
        with rescue.lock:  # a run being sent again: this waits for it, and cancels it where the pool still can
            return self._cancel()

    def _cancel(self) -> bool:
        remote = self._remote
        if remote is None:  # waiting to run again (or ended): nothing of it runs anywhere
            return self.cancel_here()
        self.cancelling = True
        if not remote.cancel() and not remote.cancelled():
            self.cancelling = False
            return False
        return super().cancel()


def _unsendable_part(dumps: Callable[[Any], bytes], fn: Any, task: ChunkTask) -> str:
    """Which part of a chunk failed to pickle, for the error's note: found only once it failed."""
    item = first_unpicklable(task.items, dumps)
    if item is not None:
        return f"item {task.first + item[0]} of the map (chunk {task.index})"
    if first_unpicklable([fn], dumps) is not None:
        return "the function"
    return f"chunk {task.index} (items {task.first} to {task.first + len(task.items) - 1})"


def _internals(pool: Any) -> tuple[Any, Any]:
    """The write end of a pool's result pipe and its manager thread, which :meth:`PickledPoolStrategy.kill` ends.

    The manager closes its wake-up pipe as it ends, and the standard library's
    exit hook writes to that pipe unlocked (Python 3.11): a manager still
    closing it then failed a program's exit with ``EBADF``. ``kill`` waits for
    the thread, bounded, so a stopped pool's manager has ended before that hook. Not loky's, whose exit hook
    wakes its managers under their pools' shutdown locks and joins them itself: waiting for it held a call's
    ``timeout=`` on joblib up to 0.1 s past its deadline (telemetry trial). Its result pipe is ended later,
    and only under a manager still reading it (``_unstick_later``).
    """
    return getattr(getattr(pool, "_result_queue", None), "_writer", None), getattr(pool, "_executor_manager_thread",
                                                                                   None)


_closing_managers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
"""Manager threads of stdlib pools payoff shut down without waiting (a dropped executor, a retired or idle
pool): each closes its wake-up pipe as it ends, which ``concurrent.futures``' exit hook may be writing to."""


def _join_closing_managers() -> None:
    """At the program's end, before ``concurrent.futures``' exit hook (payoff's hooks run first): let the
    managers of pools shut down without waiting end first, bounded, as :meth:`PickledPoolStrategy.kill` does.

    That hook wakes every live manager through its wake-up pipe, unlocked up to Python 3.13.0 and 3.12.7
    (CPython gh-125451): a manager closing that pipe at the same moment failed the exit with ``EBADF``. Since
    Python 3.13 a ``multiprocessing`` child runs ``threading``'s exit hooks right after its target returns,
    before its own finalizers, so an executor dropped there as the target returned (``ParallelExecutor(...)
    .map(...)`` in it) left its pool's manager closing that pipe just then: the child exited with code 1
    (12 of 240 runs under load, 0 of 120 each on 3.11.7 and 3.12.1).
    """
    deadline = time.monotonic() + _KILL_GRACE_SECONDS
    me = threading.current_thread()
    for manager in list(_closing_managers):
        if manager is not me and manager.ident is not None:
            manager.join(max(0.0, deadline - time.monotonic()))


_exit.at_exit(_join_closing_managers)


def _unstick_later(manager: threading.Thread, writer: Any) -> None:
    """loky's manager ends by itself once its workers are dead, closing its result pipe as it goes: closed here
    at the same moment, the pipe's descriptor was closed twice and the manager died of EBADF, its clean-up
    skipped (2 kills in 60: review). One reading half a result a killed worker left reads forever, and loky's
    exit hook joins it: the program never exited (interrupts trial). So a thread of its own waits for the
    manager as a kill's grace allows, and ends the pipe only under a manager still reading it."""
    def unstick() -> None:
        if manager is threading.current_thread():  # a kill from the manager's own callback: it reads nothing now
            return
        manager.join(_KILL_GRACE_SECONDS)
        if manager.is_alive():
            _end_result_pipe(writer)

    try:
        threading.Thread(target=unstick, name="payoff-unstick", daemon=True).start()
    except RuntimeError:  # no thread to spare (the limit that may have broken the pool): the wait is the kill's
        unstick()


def _end_result_pipe(writer: Any) -> None:
    """A worker killed while it wrote a result leaves half a message in the pool's result pipe: the pool's
    manager thread then reads it forever, and ``concurrent.futures`` (or loky) joins that thread at interpreter
    exit (a test run hung there after its last test; a joblib map stopped by Ctrl-C, 3 runs of 6). With every
    worker dead, the parent's own copy of the write end is the last: closing it ends the read, the manager sees
    a broken pool and ends."""
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.close()


_REAPED_WAIT_SECONDS = 1.0


def _ended(proc: Any) -> bool:
    """Whether a worker has ended, even while the pool's own thread is still reaping it (see :func:`_exit_codes`)."""
    if proc.exitcode is not None:
        return True
    try:
        return bool(multiprocessing.connection.wait([proc.sentinel], 0))
    except (OSError, ValueError, AttributeError):
        return False


def _exit_codes(procs: list[Any]) -> list[int | None]:
    """The workers' exit codes, in order; None for one that runs.

    A worker that has ended may not show its code yet: the pool's own thread
    can be reaping it at that moment (our poll then finds no child to wait for,
    and its code lands on the process object a moment later). Reading too soon
    left only the survivors' SIGTERM codes, naming the wrong cause of a crash.
    All of them wait out one ``_REAPED_WAIT_SECONDS``: a code that never lands
    (a program's own SIGCHLD handler reaped the worker) cost that wait once per
    dead worker before.
    """
    codes: list[int | None] = [None if (code := proc.exitcode) is None else int(code) for proc in procs]
    if all(code is not None for code in codes) or signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        return codes  # SIGCHLD ignored (as daemons do): the kernel reaped them, no code will ever land
    waiting = [i for i, proc in enumerate(procs) if codes[i] is None and _ended(proc)]
    deadline = time.monotonic() + _REAPED_WAIT_SECONDS
    while waiting and time.monotonic() < deadline:
        time.sleep(0.002)
        for i in list(waiting):
            if (code := procs[i].exitcode) is not None:
                codes[i] = int(code)
                waiting.remove(i)
    return codes


def _signal_all(procs: list[Any], sig: signal.Signals) -> None:
    """By pid: loky's process objects do not all have ``kill()``, and one may have gone already."""
    for proc in procs:
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, sig)


@dataclass(frozen=True)
class ByValue:
    """A call's function (or its :class:`ShippedFn`) that travels by value: chunks and results go through
    cloudpickle, as on joblib. Never pickled itself: ``submit`` unwraps it."""

    fn: Any


_Folder = TypeVar("_Folder", bound=ScratchDir)


def _renewed(folder: _Folder | None, make: Callable[[], _Folder]) -> _Folder:
    """``folder``, or a new one where there is none or a temp cleaner took it (letting go of the old lock)."""
    if folder is not None and folder.exists():
        return folder
    if folder is not None:
        folder.remove()
    return make()


def _cloudpickle_fn(fn: Any) -> out_of_band.OutOfBand:
    return out_of_band.dumps(fn, _by_value.dumps)


_NAMED = (types.FunctionType, type, _by_value.CACHED)
"""What pickle sends by its name: functions, classes and a cached function's wrapper (``functools.cache``)."""


class _MainFinder(pickle.Pickler):
    """Pickles like ``pickle.dumps`` and notes the first function or class of ``__main__`` the workers
    cannot find by name: a chunk's payload itself (``payload``), or a function read for its names only, its
    large buffers (a model's arrays) left out."""

    def __init__(self, file: io.BytesIO, known: Callable[[Any], bool], payload: bool = False) -> None:
        """``payload``: the pickle is the one sent (``_dumps``'s: buffers in band), not only read for names."""
        if payload:
            super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            super().__init__(file, protocol=5, buffer_callback=lambda _: None)
        self.known = known
        self.missing: Any = None

    def reducer_override(self, obj: Any) -> Any:
        # called for nearly every object sent: by exact type (an isinstance read each object's ``__class__``, which
        # a lazy proxy may refuse, and cost a sixth more on 100,000 small objects: review 64)
        kind = type(obj)
        if self.missing is None and (kind is types.FunctionType or kind is _by_value.CACHED or issubclass(kind, type)) \
                and getattr(obj, "__module__", None) == "__main__" and not self.known(obj):
            self.missing = obj
        return NotImplemented


def _main_snapshot() -> dict[str, weakref.ref[Any]]:
    """The functions and classes ``__main__`` holds now, which workers forked now inherit by name."""
    main = sys.modules.get("__main__")
    out: dict[str, weakref.ref[Any]] = {}
    for name, obj in list(vars(main).items() if main is not None else ()):
        if isinstance(obj, _NAMED):
            with contextlib.suppress(TypeError):
                out[name] = weakref.ref(obj)
    return out


def _spawned_workers_know(obj: Any, top: str) -> bool:
    """Spawned workers run the script's top level again: they know a name it binds outside its guard, unless
    the guard may have bound it, or a global the function reads, to another object
    here (:mod:`payoff.strategies.spawned_main`). Without a script to import (a notebook, ``python -c``), none."""
    names = spawned_main_names() if spawned_workers_import_main() else None
    if names is None or top not in names.defined or top in names.rebound:
        return False
    code = _code_of(obj)
    return not (code is not None and global_names(code) & names.rebound)


def _asked_key(fn: Any) -> tuple[int, tuple[int, ...] | None] | None:
    """What a plain function's way to the workers depends on: the object its whole name in ``__main__`` leads to
    (a method replaced on its class: its top-level name alone kept the old answer, review 71), and the objects
    the globals it reads are; None for any other callable (asked afresh)."""
    if not isinstance(fn, types.FunctionType):
        return None
    found: Any = sys.modules.get("__main__")
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    return id(found), bindings(fn)


def _code_of(obj: Any) -> types.CodeType | None:
    """A function's code, a cached function's too (the function its wrapper holds); None for a class."""
    fn = obj.__wrapped__ if type(obj) is _by_value.CACHED else obj
    return fn.__code__ if isinstance(fn, types.FunctionType) else None


class ProcessStrategy(PickledPoolStrategy):
    """Functions travel by reference (``pickle``), except those the workers cannot look up by name, which
    travel by value through cloudpickle: a lambda or closure, which has no name; and in a notebook or
    script, a function defined (or defined again with a new body) after the workers forked, and any
    ``__main__`` function when workers start from a fresh interpreter that has no file to import it from
    (a notebook, ``python -c``)."""

    name = "processes"
    pickler = "pickle"
    _forked_main: dict[str, weakref.ref[Any]] | None = None
    """``__main__``'s functions and classes when the (forked) workers started; None: not forked."""
    _forked_globals: dict[str, int] | None = None
    """The identity of every ``__main__`` global when the workers forked (ids only: nothing kept alive)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asked: weakref.WeakKeyDictionary[Any, tuple[tuple[int, tuple[int, ...] | None], bool]] = \
            weakref.WeakKeyDictionary()
        """``sends_by_value``'s answers, per plain function, with what they hold for."""

    def ship(self, fn: Callable[[Any], Any]) -> Any:
        blob = self._by_name(fn)
        if blob is None:
            return ByValue(self._ship_blob(fn, _cloudpickle_fn(fn)))
        return self._ship_blob(fn, blob)

    def sends_by_value(self, fn: Callable[[Any], Any]) -> bool:
        """Asked by auto's planning on every call of a ``__main__`` function (about 40 us: a fifth of it): a plain
        function's answer is kept while its name in ``__main__`` and the globals it reads stay bound as now."""
        key = _asked_key(fn)
        kept = self._asked.get(fn) if key is not None else None
        if kept is not None and kept[0] == key:
            return kept[1]
        answer = self._by_name(fn) is None
        if key is not None:
            self._asked[fn] = (key, answer)
        return answer

    def _by_name(self, fn: Callable[[Any], Any]) -> out_of_band.OutOfBand | None:
        """``fn`` pickled by name where the workers can look it up so; None where it must travel by value."""
        if self._by_value_if_foreign(fn):
            return None
        try:
            blob = self._dumps_fn(fn)
        except (pickle.PicklingError, TypeError, AttributeError):  # a lambda, a closure: no name to send
            return None
        if not blob.holds(b"__main__"):
            return blob
        finder = _MainFinder(io.BytesIO(), self._workers_know)
        finder.dump(fn)
        return blob if finder.missing is None else None

    def _dumps_noting(self, obj: Any) -> tuple[bytes, bool]:
        """A later notebook cell's class as the items of a function the workers know: by name, unpickling them
        in a worker failed with "Can't get attribute 'Point' on <module '__main__'>"; a function redefined or a
        setting rebound since the workers forked, held in an item, ran its old self there. The pickle that is
        sent notes them as it goes, every item of the chunk: a second pickling to look for them doubled the
        serialization of a script's dataclass rows (60,000 rows: 137-142 ms a call against 63-66 ms, hunt 60),
        and three shortcuts that spared it by trusting a chunk's end items, or by comparing ``__main__`` with
        the fork, missed items between or names they reach (reviews 61-63)."""
        out = io.BytesIO()
        noting = _MainFinder(out, self._workers_know, payload=True)
        noting.dump(obj)
        return out.getvalue(), noting.missing is not None

    def _workers_know(self, obj: Any) -> bool:
        """Whether the workers' ``__main__`` resolves ``obj``'s name to ``obj`` itself, with the globals it
        reads bound as they are here."""
        top = obj.__qualname__.split(".", 1)[0]
        if self._forked_main is None:
            return _spawned_workers_know(obj, top)
        ref = self._forked_main.get(top)
        main = sys.modules.get("__main__")
        same = ref is not None and ref() is not None and ref() is getattr(main, top, None)
        return same and not self._globals_rebound(obj)

    def _globals_rebound(self, obj: Any) -> bool:
        """A ``__main__`` global the function reads was bound to another object after the workers forked.

        A notebook's "change a setting, run the cell again": the forked workers
        still hold the old value, so by name the function would compute with it
        and return wrong results without a word. Rebinding is seen (by object
        identity); a change inside a mutable object (a dict's item) is not.
        """
        seen, main, code = self._forked_globals, sys.modules.get("__main__"), _code_of(obj)
        if seen is None or main is None or code is None:
            return False
        now = vars(main)
        own = SET_BY_INITIALIZER if self.initializer is not None else frozenset()  # the workers ran it too
        return any(name in now and name not in own and seen.get(name) != id(now[name])
                   for name in global_names(code))

    def _start(self) -> None:
        ctx = multiprocessing.get_context(start_method(self.start_method))  # named: the program's default stays unset
        method = ctx.get_start_method()
        self._imports = WorkerImports(forked=method == "fork")
        self._asked.clear()  # answers about workers gone
        if method == "fork":
            self.forked_beside = _forks.threads_beside()
            self._forked_main = _main_snapshot()
            self._forked_globals = {name: id(obj) for name, obj in list(vars(sys.modules["__main__"]).items())} \
                if "__main__" in sys.modules else None
        forkserver = method == "forkserver"  # the forkserver forks those, and they watch this process too
        parent, owner = (None, os.getpid()) if forkserver else (os.getpid(), None)
        refused = REFUSED.get((method, *main_script_version()))
        if refused is not None:  # the script is what it was: this start would fail as the last one did
            raise BrokenProcessPool(refused)
        try:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                             initializer=init_process, initargs=self._init_args(parent, owner))
            self._warm_up()
        except (BrokenExecutor, EOFError, OSError) as exc:
            hint = unguarded_main_hint(method)
            if hint is None:
                if isinstance(exc, BrokenExecutor) and self._a_worker_raised() and (maybe := main_import_hint(method)):
                    raise BrokenProcessPool(f"{exc} {maybe}") from exc
                raise
            why = f"payoff: the {self.name} pool's workers died as they started: {hint}"
            REFUSED[(method, *main_script_version())] = why
            raise BrokenProcessPool(why) from exc

    def _a_worker_raised(self) -> bool:
        """Whether a worker of the pool that failed to start exited with status 1, a Python exception's (importing
        the main script, say), not killed by a signal (the OOM killer), about which its code has nothing to say."""
        self._remember_processes()  # the pool forgets the dead ones as it breaks: those seen at its start stay
        return 1 in _exit_codes(list((self._seen or {}).values()))  # one may be being reaped

    def shutdown(self, wait: bool = True) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            manager = getattr(pool, "_executor_manager_thread", None)  # the pool's shutdown forgets it
            pool.shutdown(wait=wait, cancel_futures=True)
            if not wait and isinstance(pool, ProcessPoolExecutor) and isinstance(manager, threading.Thread):
                _closing_managers.add(manager)
        self._remove_files()
