"""Top-level task functions the tests send to worker processes."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def spin(x: int, n: int = 2000) -> int:
    total = 0
    for i in range(n):
        total += i ^ x
    return total


def grows(x: int) -> int:
    """Item ``x`` costs ~x squared: nearly free at the head of the input, ~0.3 ms at x = 1000 (pairwise work)."""
    return spin(x, x * x // 40)


def sleep_then_square(x: int, seconds: float = 0.002) -> int:
    time.sleep(seconds)
    return x * x


def long_task(x: int) -> int:
    time.sleep(30)
    return x


def die_in_worker(item: tuple[int, int]) -> int:
    """Kills the worker process on item 5, but only in a child, never in the parent."""
    i, parent = item
    if i == 5 and os.getpid() != parent:
        os._exit(3)
    return i * 10


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise KeyError(f"bad item {x}")
    return x


def failing_initializer(caller: int = -1) -> None:
    """Refuses to start in a worker: a process other than ``caller``, or a pool's thread. In ``caller``'s main
    thread it runs, as a serial fallback runs it before the items (the default ``caller`` refuses everywhere)."""
    if os.getpid() != caller or threading.current_thread() is not threading.main_thread():
        raise RuntimeError("initializer refuses to start")


def initializer_timing_out(caller: int = -1) -> None:
    """As :func:`failing_initializer`, with an error worded as dask words a worker it could not reach."""
    if os.getpid() != caller or threading.current_thread() is not threading.main_thread():
        raise OSError("Timed out trying to connect to the licence server")


def identity(x: Any) -> Any:
    return x


def identity_of_one_test(x: Any) -> Any:
    """``identity`` for a test whose first call must be the function's first in the process: the planner
    every executor shares learns ``identity`` from whichever tests ran it before in the same pytest worker."""
    return x


def pid_of(_: Any) -> int:
    return os.getpid()


def pid_after_spin(x: int) -> int:
    """Where an item of measurable work (~0.3 ms) ran."""
    spin(x, 5000)
    return os.getpid()


def die_once_in_worker(item: tuple[int, int, str]) -> int:
    """Kills its worker on item 5 the first time only (a marker file remembers): a crash that does not recur."""
    i, parent, marker = item
    if i == 5 and os.getpid() != parent and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(3)
    return i * 10


def stall_after_crash(marker: str, starting: str) -> None:
    """A worker initializer that stalls only in the fresh workers started after ``die_once_in_worker`` killed one
    (its marker exists): it writes ``starting`` first, so a test acts while the restart is under way, no timer."""
    if os.path.exists(marker):
        with open(starting, "w"):
            pass
        time.sleep(60)


def segfault_on_five(x: int) -> int:
    """Crashes the interpreter running it on item 5 (a real SIGSEGV, as broken native code would)."""
    if x == 5:
        import ctypes

        ctypes.string_at(0)
    return x * 10


def crash_or_square(x: int, crash: int, seconds: float) -> int:
    """``x * x`` after a nap; the item ``crash`` ends its worker process instead (``os._exit(7)``)."""
    time.sleep(seconds)
    if x == crash:
        os._exit(7)
    return x * x


def exit_on_five(x: int) -> int:
    if x == 5:
        os._exit(7)
    return x * 10


def exit_zero_on_five(x: int) -> int:
    if x == 5:
        os._exit(0)
    return x * 10


class TwoArgError(Exception):
    """An exception whose ``__init__`` does not take its own ``args``: it cannot be unpickled."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{why} (code {code})")
        self.code = code


def raise_two_arg(x: int) -> int:
    if x == 3:
        raise TwoArgError(42, "the user's message")
    return x


def user_frame_error(x: int) -> int:
    if x == 3:
        return _deep_user_helper(x)
    return x


def _deep_user_helper(x: int) -> int:
    raise ValueError(f"deep user failure on {x}")


def sleep_forever(x: int) -> int:
    time.sleep(3600)
    return x


def sleep_long_on_zero(x: int) -> int:
    if x == 0:
        time.sleep(30)
    return x


class HoldsALockError(Exception):
    """An exception carrying state pickle refuses (a lock): it travels without it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


def raise_unpicklable(x: int) -> int:
    if x == 3:
        raise HoldsALockError("the lock holder's message")
    return x


class TwoArgOSError(OSError):
    """An ``OSError`` (built in C, with fields of its own) whose ``__init__`` takes other arguments than its
    ``args``: neither pickle nor a copy made without ``__init__`` can rebuild it, so it travels as text."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{why} (code {code})")


def raise_two_arg_os_error(x: int) -> int:
    if x == 3:
        raise TwoArgOSError(7, "the os error's message")
    return x


def negate(x: int) -> int:
    """A trivial item: far cheaper than pickling it to a worker and its result back."""
    return -x


DEAR_FROM = 1960
"""Items from here on of ``cheap_then_dear_tail`` cost ~20 ms; the ones before ~50 us."""


DEAR_HEAD = 4
"""Items before this of ``dear_head_then_cheap`` cost ~100 ms; the rest ~50 us."""


def dear_head_then_cheap(x: int) -> int:
    """Largest first, as for longest-processing-time scheduling: a few dear items, then many cheap ones."""
    if x < DEAR_HEAD:
        time.sleep(0.1)
        return -x
    return spin(x, 1000)


def cheap_then_dear_tail(x: int) -> int:
    """A size-sorted input: cheap CPU work, then a short tail of dear items (waits: any backend overlaps them)."""
    if x >= DEAR_FROM:
        time.sleep(0.02)
        return -x
    return spin(x, 1000)


def slow_at_twenty(x: int) -> int:
    """One item of a second among 2 ms ones: the chunk holding it finishes long after all the others could."""
    time.sleep(1.0 if x == 20 else 0.002)
    return x


def spin_ignoring(item: Any) -> int:
    """CPU work whatever the item is (an int, or a lock no pickler can send): the item only travels."""
    return spin(0)


def spin_with(extra: Any, x: int) -> int:
    """CPU work on ``x``; ``extra`` is only carried, so ``partial(spin_with, a_lock)`` is a callable that cannot
    be pickled while ``partial(spin_with, 2)`` can."""
    return spin(x)


def spin_then_lock(x: int) -> Any:
    """CPU work whose result is a lock: neither pickle nor cloudpickle can send it back from a worker."""
    import threading

    spin(x)
    return threading.Lock()


def lock_if_negative(x: int) -> Any:
    """A lock for a negative item, else an int: whether results can be pickled depends on the call's items."""
    import threading

    spin(x)
    return threading.Lock() if x < 0 else x


def segfault_on_zero(x: int) -> int:
    """Crashes the interpreter running it on the very first item: the one a planner would like to measure."""
    if x == 0:
        import ctypes

        ctypes.string_at(0)
    return x * 10


def generator_exit_on_five(x: int) -> int:
    """An item raising GeneratorExit: payoff's own generators must not take it for their consumer closing them."""
    if x == 5:
        raise GeneratorExit("item five")
    return x


_MODEL: dict[str, int] | None = None
"""Set only by load_model: the documented worker_initializer pattern (load a model once per worker)."""


def load_model(scale: int) -> None:
    global _MODEL
    _MODEL = {"scale": scale}


def slow_load_model(scale: int, seconds: float) -> None:
    """A model that takes a while to load: a start bounded by a shorter pool_start_timeout never finishes it."""
    time.sleep(seconds)
    load_model(scale)


def predict(x: int) -> int:
    if _MODEL is None:
        raise RuntimeError("predict ran where load_model never did")
    return x * _MODEL["scale"]


def predict_or_lock(x: int) -> Any:
    """CPU work that needs ``load_model``: an int, or a lock for a negative item (whose result cannot travel)."""
    spin(x)
    return threading.Lock() if x < 0 else predict(x)


def lock_there_error_in(caller: int, x: int) -> Any:
    """CPU work; for a negative item a lock in a worker process, an error in the process ``caller``."""
    spin(x)
    if x >= 0:
        return x
    if os.getpid() == caller:
        raise ValueError(f"item {x} failed in the caller")
    return threading.Lock()


class Unsendable:
    """A value equal to any of the same number that pickle refuses, as it refuses a lock."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unsendable) and other.x == self.x

    def __hash__(self) -> int:
        return hash(self.x)

    def __reduce__(self) -> Any:
        raise TypeError("an Unsendable stays where it was made")


def spin_unsendable_if_negative(x: int) -> Any:
    spin(x)
    return Unsendable(x) if x < 0 else x


def unsendable_noting_reruns(item: tuple[int, int, str, float, int]) -> Any:
    """Item ``(i, caller, log, seconds, fail_at)``: sleeps, raises at ``fail_at``, and for a negative ``i``
    returns an ``Unsendable`` in a worker and, run in ``caller`` (a rerun), appends ``i`` to ``log`` first: a
    side effect a test reads."""
    i, caller, log, seconds, fail_at = item
    time.sleep(seconds)
    if i == fail_at:
        raise ValueError(f"item {i} raised")
    if i < 0 and os.getpid() == caller:
        with open(log, "a") as fh:
            fh.write(f"{i}\n")
    return Unsendable(i) if i < 0 else i


def unsendable_after_a_crash(item: tuple[int, int, str]) -> Any:
    """Item 5 kills its worker the first time (``die_once_in_worker``); item 40 returns an ``Unsendable``."""
    i = item[0]
    return Unsendable(i) if i == 40 else die_once_in_worker(item)


def lock_at_seven(x: int) -> Any:
    """A result pickle refuses, for item 7 only."""
    return threading.Lock() if x == 7 else x


def nap_len(data: bytes) -> int:
    """The length of a large item, after 0.1 s: its chunk stays in flight while the next ones are sent."""
    time.sleep(0.1)
    return len(data)


def bytes_behind(f: Any) -> int:
    """CPU work, then the size of an open file's file: ``fileno()`` is what an io.StringIO copy lacks."""
    spin(0, 20_000)
    return os.fstat(f.fileno()).st_size


def detail_of_a_map_here(strategy: str) -> tuple[str, str]:
    """A map made where this runs (a submitted task), as a program's own function would: its fallback."""
    import warnings

    from payoff import ParallelExecutor

    with ParallelExecutor(2, strategy) as ex, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.map(spin, range(40))
        record = ex.last_record
    assert record is not None
    return str(record.fallback_reason), record.fallback_detail


def detail_of_a_map_in_a_thread_here(_: object) -> tuple[str, str]:
    """As :func:`detail_of_a_map_here`, from a thread this item starts (which inherits no mark of the item)."""
    got: list[tuple[str, str]] = []
    thread = threading.Thread(target=lambda: got.append(detail_of_a_map_here("processes")))
    thread.start()
    thread.join(60)
    return got[0]


class ReopenedByPath(io.TextIOWrapper):
    """A text file that pickles as its path and is opened again where it lands, as a library's may. Its own
    ``__reduce_ex__``: from Python 3.12 ``io.TextIOWrapper`` has one that refuses, which a ``__reduce__`` of a
    subclass never reaches (plain pickle raised ``TypeError: cannot pickle 'ReopenedByPath' instances``)."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        return reopened_by_path, (self.buffer.name,)


def reopened_by_path(path: str) -> ReopenedByPath:
    return ReopenedByPath(open(path, "rb"))


class Counted:
    """An iterator that says how far it has been read."""

    def __init__(self, inner: Iterator[Any]) -> None:
        self.inner, self.read = inner, 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Any:
        value = next(self.inner)
        self.read += 1
        return value


def fail_late_and_early(x: int) -> int:
    """Item 5 fails after 0.3 s, item 80 at once: the map's first failing item in input order is 5."""
    if x == 5:
        time.sleep(0.3)
        raise ValueError("item 5")
    if x == 80:
        raise KeyError("item 80")
    return x


def nap_ms(ms: int) -> int:
    """Sleeps ``ms`` milliseconds: an item of a chosen cost, on any backend."""
    time.sleep(ms / 1000)
    return ms


def meet_then_nap(item: tuple[str, str, str, int]) -> int:
    """Sleeps 30 ms; item 0 first marks its call's file in a folder and waits (10 s at most) for the other call's:
    two calls mapping it are both on their pool at once, on any backend."""
    folder, mine, other, i = item
    if i == 0:
        with open(os.path.join(folder, mine), "w"):
            pass
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(folder, other)) and time.monotonic() < deadline:
            time.sleep(0.002)
    time.sleep(0.03)
    return i


def exit_once_file_exists(path: str) -> int:
    """Crash the worker (``os._exit``) only when the test says so, to race the crash with something else."""
    while not os.path.exists(path):
        time.sleep(0.005)
    os._exit(7)


def square_once_file_exists(item: tuple[str, int]) -> int:
    """``x * x`` once the test creates the file (60 s at most): work held on its pool until the test says."""
    path, x = item
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return x * x


def square_after_saying_started(item: tuple[str, str, int]) -> int:
    """Creates ``started`` and then waits, as :func:`square_once_file_exists`, for ``release`` (60 s at most)."""
    started, release, x = item
    with open(started, "w"):
        pass
    return square_once_file_exists((release, x))


HANG_RELEASE = threading.Event()
"""Ends ``hang_on_zero``'s wait in this process (a test's probe threads); in a worker process nothing sets it."""


def hang_on_zero(x: int, **_options: object) -> int:
    """The first item hangs (until HANG_RELEASE, 30 s at most); options tell partials apart as functions."""
    if x == 0:
        HANG_RELEASE.wait(30)
    return x


def joblib_inside(x: int) -> int:
    """An item that runs ``joblib.Parallel`` itself (a scikit-learn ``n_jobs=-1`` fit does)."""
    import joblib

    return x + sum(joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(8)))


def joblib_then_sleep(folder: str) -> int:
    """Runs ``joblib.Parallel``, writes this worker's child processes (loky's workers and resource trackers) to
    ``folder`` (a file named by this worker's pid), then sleeps until the map is stopped."""
    import joblib

    joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(8))
    pids = []  # loky's workers and its resource trackers
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as children:
            pids += [int(pid) for pid in children.read().split()]
    path = os.path.join(folder, str(os.getpid()))
    with open(path + ".tmp", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.replace(path + ".tmp", path)
    time.sleep(60)
    return len(pids)


def payoff_inside(x: int) -> int:
    """An item that maps with a payoff process pool of its own."""
    from payoff import ParallelConfig, ParallelExecutor

    with ParallelExecutor(config=ParallelConfig(strategy="processes", max_workers=2)) as ex:
        return x + sum(ex.map(square, range(8)))


def native_threads(_: object) -> dict[str, Any]:
    """What a worker's loaded native libraries run (threadpoolctl), the thread variables it sees, and the CPUs
    ``joblib.Parallel(n_jobs=-1)`` would use there."""
    import joblib
    import numpy as np
    import threadpoolctl

    np.ones((64, 64)) @ np.ones((64, 64))  # OpenBLAS is loaded and used, not just imported
    return {"pid": os.getpid(),
            "libs": {lib["internal_api"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()},
            "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                                                            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                                                            "LOKY_MAX_CPU_COUNT")},
            "joblib_cpus": joblib.cpu_count()}


def threads_outside_python(_: object) -> int:
    """Threads of this process that Python did not start (a native library's: OpenBLAS's thread server)."""
    import threading

    return len(os.listdir("/proc/self/task")) - threading.active_count()


SAME_ERROR = ValueError("the same object every time")
"""One exception object raised again and again, as a module-level sentinel is."""


def raise_the_same_error(x: int) -> int:
    if x == 3:
        raise SAME_ERROR
    return x


def spin_in_two_children(_: object) -> int:
    """CPU work done in two child processes while this thread waits for them (as joblib.Parallel's items)."""
    import subprocess
    import sys

    code = "import time\nend = time.process_time() + 0.04\nwhile time.process_time() < end: pass"
    children = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(2)]
    return sum(child.wait() for child in children)


def wait_for_a_child(_: object) -> int:
    """Waiting work that starts a child which only sleeps: its little CPU must not make the item CPU-bound."""
    import subprocess

    return subprocess.call(["sleep", "0.05"])



def checked_add(x: int, y: int) -> int:
    """``x + y``, with a ValueError at x == 1234: an error of a star call."""
    if x == 1234:
        raise ValueError("x is 1234")
    return x + y


def stopping_add(x: int, y: int) -> int:
    """``x + y``, with a StopIteration at x == 900, which would end a ``starmap`` silently."""
    if x == 900:
        raise StopIteration
    return x + y


def stream_breaking_at(n: int, at: int | None = None) -> Iterator[int]:
    """``range(n)`` as a generator whose item ``at`` is never made: the input raises LookupError there."""
    for i in range(n):
        if i == at:
            raise LookupError(f"the input broke at {i}")
        yield i


def mark_started(item: tuple[str, int]) -> int:
    """Leave ``<folder>/<x>`` behind, so the caller sees which items have started, in any process."""
    folder, x = item
    Path(folder, str(x)).touch()
    return x


def dear_nap(x: int) -> int:
    """A dear waiting item (0.15 s): two of them are worth two threads."""
    time.sleep(0.15)
    return x


def dear_spin(x: int) -> int:
    """A dear CPU item (~0.25 s of pure Python): two of them are worth two processes."""
    return spin(x, 5_000_000)


def sys_exit_on_five(x: int) -> int:
    """An item that asks to end the program (a command-line helper reused as a library function)."""
    if x == 5:
        sys.exit(3)
    return x * 10


def spin_first_then_sleep(x: int) -> int:
    """Item 0 holds the CPU 15 ms before it sleeps 10 ms, the others only sleep: the probe's CPU share (item 0's,
    ~0.6) is not the rest's (~0.01). Sleeps this long keep a loaded machine's waits for a CPU at each wake-up
    (which may be GIL holding, for all a record can tell) a small part of the rest's time."""
    if x == 0:
        end = time.process_time() + 0.015
        while time.process_time() < end:
            pass
    time.sleep(0.010)
    return x


class ArrayHolder:
    """A callable's state as a model's is: a large array, which its method reads (and may write)."""

    def __init__(self, n: int) -> None:
        import numpy as np

        self.values = np.arange(n, dtype=np.float64)

    def at(self, i: int) -> float:
        return float(self.values[i])

    def bump(self, i: int) -> float:
        """Writes to its own array, as a worker's copy may: it must arrive writable."""
        self.values[i] += 1.0
        return float(self.values[i])

    def backing(self, _: int) -> tuple[str, int]:
        """What holds the array's memory in this process: the path of the file it is mapped from, or "" for
        memory of the process's own (``/proc/self/maps``); and this process's id."""
        address = self.values.ctypes.data
        with open("/proc/self/maps") as fh:
            for line in fh:
                span, _, _, _, inode, *path = line.split()
                lo, hi = (int(x, 16) for x in span.split("-"))
                if lo <= address < hi:
                    return (path[0] if path and inode != "0" else ""), os.getpid()
        return "", os.getpid()

    def private_after_reading(self, _: int) -> tuple[float, int, int]:
        """Reads the whole array, then says how much memory this process holds as its own (``Private_Dirty``
        of ``/proc/self/smaps_rollup``, bytes): pages of a file mapped and read are not, a copy's are."""
        total = float(self.values.sum())
        with open("/proc/self/smaps_rollup") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("Private_Dirty:"))
        return total, kib * 1024, os.getpid()


NAPS_FROM = 1990
"""Items from here on of ``naps_after_free_items`` wait 20 ms; the ones before cost nearly nothing."""


def naps_after_free_items(x: int) -> int:
    """A size-sorted input whose cheap part is nearly free: timing blocks grow to hundreds of items on it."""
    if x >= NAPS_FROM:
        time.sleep(0.02)
        return -x
    return x


def first_exits_once_file_exists(x: int, path: str) -> int:
    """Item 0 crashes its worker once the test creates ``path``; the others nap 2 ms and return ``x``."""
    if x == 0:
        exit_once_file_exists(path)
    time.sleep(0.002)
    return x


def count_then_exit(path: str) -> int:
    """Notes a run in ``path``, then ends with ``sys.exit(3)``."""
    with open(path, "a") as fh:
        fh.write("run\n")
    sys.exit(3)


def nap_then_die_once(item: tuple[int, str]) -> int:
    """Naps 20 ms; item 3 then kills its worker the first time only (``marker`` remembers)."""
    i, marker = item
    time.sleep(0.02)
    if i == 3 and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(3)
    return i * 10


def sleep_then_collect(x: int) -> int:
    """A 2 ms wait, then a collection of whatever heap the process holds (as an allocation can set one off)."""
    import gc

    time.sleep(0.002)
    gc.collect()
    return x


def thread_name(_: Any) -> str:
    return threading.current_thread().name


def spin_rounds(n: int) -> int:
    """An item whose cost is its argument: ~50 ns a round, so the same function is cheap or dear by its items."""
    return spin(0, n)


def stamped_nap(x: int) -> tuple[int, float, float]:
    """``(x, start, end)`` of a 10 ms sleep, in wall-clock seconds: which items ran at once, across processes."""
    start = time.time()
    time.sleep(0.01)
    return x, start, time.time()


def draw_after_spin(x: int) -> int:
    """A draw from numpy's global generator, after ~1 ms of work so that every worker takes items."""
    import numpy as np

    spin(x, 20_000)
    return int(np.random.randint(0, 2**62))


def crash_once_main_returned(item: tuple[str, int, int]) -> int:
    """``spin(x)``, except item ``crash``: it waits (20 s at most) for the file the main thread writes as it
    returns, then for a second more, then ends its worker process (``os._exit(7)``): a crash while the
    program ends."""
    path, crash, x = item
    if x == crash:
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(1.0)
        os._exit(7)
    return spin(x)


def rows_dot(x: Any, y: Any) -> float:
    return float(x @ y)


def row_score(row: Any) -> float:
    """A float from an array's row (or element): CPU work in Python on what ``map`` over an array reads."""
    import numpy as np

    total = 0.0
    for v in np.ravel(row).tolist():
        total += v * v
    return total + spin(0, 200)


def row_kind(row: Any) -> tuple[str, tuple[int, ...], bool]:
    """What an item of an array is: its type, shape and whether it is writable (a view of the input in a loop)."""
    return type(row).__name__, tuple(getattr(row, "shape", ())), bool(getattr(getattr(row, "flags", None),
                                                                              "writeable", False))


class Reply(Exception):
    """An exception returned as a value (a result type), whose ``__init__`` takes two arguments: it pickles,
    but unpickling it calls ``Reply(*args)`` with its one ``arg`` and fails."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code)
        self.detail = detail


def reply_on_five(x: int) -> Any:
    return Reply(x, "bad") if x == 5 else x


def _too_large_here() -> None:
    raise MemoryError("no room for this result here")


class TooLargeHere:
    """A result that pickles in a worker and, unpickled in the caller, runs out of memory."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _too_large_here, ()


def too_large_on_three(x: int) -> Any:
    return TooLargeHere() if x == 3 else x


def _rebuild_refused() -> None:
    raise ValueError("this function cannot be rebuilt in a worker")


class RefusesRebuild:
    """A callable that pickles in the caller and fails to unpickle wherever it is sent."""

    def __call__(self, x: int) -> int:
        return x

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _rebuild_refused, ()


def nested_sum(n: int) -> int:
    """An item that maps itself (a nested map: it runs serially where the item runs)."""
    import payoff

    return sum(payoff.map(abs, range(1, n + 1)))


SHARED_ERROR = LookupError("not found")
"""One exception object raised by several items (a module's sentinel error)."""
STARTED_17 = threading.Event()
LATE_17 = threading.Event()


def raise_shared(x: int) -> int:
    """Items 7 and 17 raise the same object: 7 once 17 has started, 17 only when the test lets it (after the
    map raised 7's)."""
    if x == 17:
        STARTED_17.set()
        LATE_17.wait(30)
        raise SHARED_ERROR
    if x == 7:
        STARTED_17.wait(30)
        raise SHARED_ERROR
    return x


SLOW_RELEASE = threading.Event()
SLOW_DONE = threading.Event()


def slow_once(x: int) -> int:
    """A service's handler whose item -1 is slow (a backend that answers late), not hung: it ends when the
    test lets it."""
    if x < 0:
        try:
            SLOW_RELEASE.wait(30)
        finally:
            SLOW_DONE.set()
    return 2 * x


def no_setup() -> None:
    """A worker initializer that does nothing: with one set, no item of the call runs in the caller."""


def _rebuild_token(v: int) -> Token:
    if v == 13:
        raise ValueError("cannot rebuild token 13")
    return Token(v)


class Token:
    """An item that pickles everywhere and unpickles everywhere but for the value 13."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_token, (self.v,)


def token_value(t: Token) -> int:
    return t.v


def first_element(a: Any) -> float:
    return float(a[0])


class HoldsItsExecutor:
    """The pattern of a model or pipeline object that owns its executor and maps its own method: the bound
    method sends the instance, and with it the executor, to worker processes."""

    def __init__(self, strategy: str) -> None:
        from payoff import ParallelExecutor

        self.ex = ParallelExecutor(strategy=strategy, max_workers=2)
        self.scale = 3

    def score(self, x: int) -> tuple[int, int]:
        spin(x, 5000)
        return x * self.scale, os.getpid()

    def nested(self, x: int) -> tuple[list[int], str, str]:
        """A map on the executor the item carries, inside a worker."""
        squares = self.ex.map(square, [x, x + 1])
        record = self.ex.last_record
        assert record is not None and record.fallback_reason is not None
        return squares, record.selected_strategy, record.fallback_reason.value


def tiny_map_under_error_filter(x: int) -> list[int]:
    """A task of the user's own pool, run under ``-W error``: payoff's fallback warning raises out of it."""
    import warnings

    from payoff import ParallelExecutor

    warnings.simplefilter("error")
    with ParallelExecutor() as ex:
        return ex.map(square, range(x))


def nap_then_write(item: tuple[str, int]) -> int:
    """A submitted task whose only result is a file: ``folder/i`` after a 50 ms nap."""
    folder, i = item
    time.sleep(0.05)
    Path(folder, str(i)).write_text(str(i))
    return i


def note_pid_in(folder: str) -> None:
    """A worker_initializer that leaves one file per run in ``folder``, named by its process and run."""
    Path(folder, f"{os.getpid()}-{time.monotonic_ns()}").touch()


class HoldsItsInitializedExecutor(HoldsItsExecutor):
    """As :class:`HoldsItsExecutor`, with a worker_initializer that notes each run."""

    def __init__(self, folder: str) -> None:
        from payoff import ParallelConfig, ParallelExecutor

        self.ex = ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, worker_initializer=note_pid_in,
                                                  worker_init_args=(folder,)))
        self.scale = 1

    def nested_empty_then_submitted(self, x: int) -> tuple[int, int, list[int], int]:
        """A map over nothing and a submitted call on the executor the item carries, inside a worker."""
        import multiprocessing

        nothing = self.ex.map(square, [])
        return os.getpid(), self.ex.submit(os.getpid).result(), nothing, len(multiprocessing.active_children())


class NotesRaise(Exception):
    """An exception reading its attributes from its payload: ``__notes__`` too, which it lacks (a KeyError)."""

    def __getattr__(self, name: str) -> Any:
        return self.args[0][name]


def raise_notes_raise_on_three(x: int) -> int:
    if x == 3:
        raise NotesRaise({"code": 42})
    return x


class Model:
    """A fitted model sent as the function: ~400 KB (shipped once per worker and version), 5 ms to load."""

    def __init__(self, seed: int) -> None:
        self.weights = bytes(range(256)) * 1600
        self.seed = seed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        time.sleep(0.005)  # rebuilding an index on load

    def __call__(self, x: int) -> int:
        return spin(x) + self.weights[x % 256] + self.seed


class SlowToLoad:
    """An item that takes 20 ms to unpickle (a large array rebuilt, say): every call's cost, never a warm-up."""

    def __init__(self) -> None:
        self.size = 1  # a state to set: pickle calls no __setstate__ for an empty one

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        time.sleep(0.02)


def its_type(item: object) -> str:
    return type(item).__name__


class ItemBaseError(BaseException):
    """A user's exception outside ``Exception`` (as a framework's control-flow signal may be)."""


OUTSIDE_EXCEPTION: dict[str, type[BaseException]] = {
    "generator_exit": GeneratorExit, "base": ItemBaseError, "sys_exit": SystemExit, "timeout": TimeoutError}
"""Exceptions an item may raise that a pool's worker must not take for its own end (``TimeoutError``: an item's
own, not the call's ``timeout=``), by the name the tests give them."""


def fail_slowly_at_two_exit_at_six(item: tuple[int, str]) -> int:
    """Item 2 fails after 0.3 s with a ValueError; item 6 at once with a ``kind`` outside ``Exception``."""
    x, kind = item
    if x == 2:
        time.sleep(0.3)
        raise ValueError("item 2 failed first in input order", x)
    if x == 6:
        raise OUTSIDE_EXCEPTION[kind](f"item {x}")
    return x


def slow_then_exit_at_six(item: tuple[int, str]) -> int:
    """Items 0-4 take 50 ms each; item 6 raises a ``kind`` outside ``Exception``."""
    x, kind = item
    if x < 5:
        time.sleep(0.05)
    if x == 6:
        raise OUTSIDE_EXCEPTION[kind](f"item {x}")
    return x


def fail_at_two(x: int) -> int:
    if x == 2:
        raise ValueError("fn failed at item", x)
    return x



def raise_at_zero_else_nap(item: tuple[int, str]) -> int:
    """Item 0 raises a ``kind`` at once; the others take 0.3 s, so they still run (or wait) when it does."""
    x, kind = item
    if x == 0:
        raise OUTSIDE_EXCEPTION[kind]("item 0")
    time.sleep(0.3)
    return x


def raise_at_three(item: tuple[int, str]) -> int:
    x, kind = item
    if x == 3:
        raise OUTSIDE_EXCEPTION[kind]("item 3")
    return x


def spin_beside(data: object, x: int) -> int:
    """``spin`` carrying ``data`` it never reads: a ``partial`` over a large array, the usual way to hand data
    to per-fold or bootstrap items."""
    return spin(x, 20_000)


def limit_address_space(extra: int) -> None:
    """A worker initializer: this process may map ``extra`` bytes more than it has (``RLIMIT_AS``), as under
    ``ulimit -v`` or a container's limit. numpy is loaded first, as a forked worker has it: a fresh one loading
    it under the limit saw OpenBLAS fail to allocate its buffers and exit the process with code 1."""
    import resource

    import numpy  # noqa: F401

    with open("/proc/self/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (kib * 1024 + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))


def add_to_first(a: Any, i: int) -> float:
    """``a[0] + i``: a function that carries ``a`` (in a ``partial``) and does almost nothing with it."""
    return float(a[0] + i)


def note_then_raise_at_five(item: tuple[int, str]) -> int:
    """Writes a file named for the item into the folder ``item[1]`` as it starts; item 5 raises, the others take
    10 ms: the files tell which items ran, and when, after the map had raised."""
    x, folder = item
    Path(folder, str(x)).touch()
    if x == 5:
        raise ValueError("item 5 failed")
    time.sleep(0.01)
    return x


def raise_outside_exception(kind: str) -> int:
    """Raises the ``OUTSIDE_EXCEPTION`` (or ``KeyboardInterrupt``) named ``kind``, as a submitted call's own."""
    raise (KeyboardInterrupt if kind == "keyboard_interrupt" else OUTSIDE_EXCEPTION[kind])(kind)


def work_of_kind(x: int, kind: str) -> int:
    """Items of one source line whose kind of work is an argument: ``wait`` sleeps 4 ms, ``cpu`` computes
    ~1.4 ms, ``small_cpu`` ~0.2 ms, ``mixed`` computes ~1.4 ms and sleeps 3 ms, ``set_up_first`` computes ~3 ms
    in item 0 only (a connection opened) and sleeps 2 ms in each item."""
    if kind == "wait":
        time.sleep(0.004)
    elif kind == "cpu":
        spin(x, 40_000)
    elif kind == "small_cpu":
        spin(x, 6_000)
    elif kind == "set_up_first":
        if x == 0:
            spin(x, 90_000)
        time.sleep(0.002)
    else:
        spin(x, 40_000)
        time.sleep(0.003)
    return x


def burn_cpu(seconds: float, x: int) -> int:
    """``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        x ^= 1
    return x


def burn_then_echo(seconds: float, x: int) -> int:
    """``x``, after ``seconds`` of this thread's CPU time (holding the GIL)."""
    burn_cpu(seconds, x)
    return x


def closure_of_kind(kind: str) -> Callable[[int], int]:
    """A closure per kind, all of one code object: what a factory of work functions hands out."""
    def item(x: int) -> int:
        return work_of_kind(x, kind)
    return item


DEAR_LOCKS_FROM = 300
"""Items from here on of ``dear_then_locks`` and ``dear_of_first`` cost 0.4 ms; the ones before nearly nothing."""


def dear_then_locks(x: int) -> Any:
    """Free, then dear items whose results are locks, which pickle refuses: a serial run kept for its free head
    can outgrow its estimate only once its latest results are locks (the test's budget cannot be met before)."""
    if x < DEAR_LOCKS_FROM:
        return x
    burn_cpu(0.0004, x)
    return threading.Lock()


NAPS_AFTER_FREE_FROM = 3000
"""Items from here on of ``naps_after_3000_free`` sleep 10 ms; the ones before cost nearly nothing."""


def naps_after_3000_free(x: int) -> int:
    """A free head long enough that a probe never reaches the naps: a serial plan, outgrown by its run."""
    if x >= NAPS_AFTER_FREE_FROM:
        time.sleep(0.01)
    return x


NAPS_AFTER_100_FREE_FROM = 100
"""Items from here on of ``naps_after_100_free`` sleep 10 ms; the 100 before cost nearly nothing."""


def naps_after_100_free(x: int) -> int:
    """A free head so short that the blocks a serial run times its items in are small when the naps begin."""
    if x >= NAPS_AFTER_100_FREE_FROM:
        time.sleep(0.01)
    return x


BURNS_FROM = 3000
"""Items from here on of ``burns_from`` cost 50 us of CPU each; the ones before nearly nothing."""


def burns_from(x: int) -> int:
    """A stream whose dearer part starts late: an ``imap`` kept here checks it at its first dear items."""
    if x >= BURNS_FROM:
        burn_cpu(0.00005, x)
    return x


def dear_of_first(item: tuple[int, Any]) -> int:
    """``item[0]``, after 0.4 ms of CPU from ``DEAR_LOCKS_FROM`` on; ``item[1]`` travels with it, if it can (a
    lock cannot)."""
    if item[0] >= DEAR_LOCKS_FROM:
        burn_cpu(0.0004, item[0])
    return item[0]


def grows_carrying(item: tuple[int, bytes]) -> int:
    """``grows`` of ``item[0]``; ``item[1]`` only travels (a record's payload, empty or megabytes)."""
    x, payload = item
    return grows(x) + len(payload)


def warn_then_square(x: int) -> int:
    """Warns, as a library deprecating an argument does, then squares: the warning goes by the caller's filters."""
    import warnings

    warnings.warn(f"item {x} warns", UserWarning, stacklevel=1)
    return spin(x, 20_000) * 0 + x * x


def warn_the_same(x: int) -> int:
    """The same warning from one place for every item: shown once under the "default" action."""
    import warnings

    warnings.warn("the same warning", UserWarning, stacklevel=1)
    return x


def warn_a_seventh(x: int) -> int:
    """Warns one of seven texts from one place: a "default" filter shows each once."""
    import warnings

    warnings.warn(f"a seventh {x % 7}", UserWarning, stacklevel=1)
    return x


def raise_on_three(x: int) -> int:
    """Items 0-2 run, item 3 raises ``ValueError``."""
    if x == 3:
        raise ValueError("item 3")
    return x


def pid_and_main_thread(_: object) -> tuple[int, bool]:
    """Where an item ran: the process, and whether on its main thread (where ``signal.signal`` works)."""
    return os.getpid(), threading.current_thread() is threading.main_thread()


def import_then_spin(item: tuple[str, int]) -> int:
    """Imports module ``item[0]`` in its body (as worker functions often do), then spins ``item[1]`` rounds."""
    __import__(item[0])
    return spin(0, item[1])


def looks_up_modules(x: int) -> int:
    """Imports in its body modules loaded long before: each ``import`` is a lookup."""
    import math
    from os import path

    return x + int(math.pi) + len(path.sep)


def holds_a_payoff_lock(_: int) -> bool:
    """Whether the thread running the item counts one of payoff's locks as held (``_forks.holding_a_lock``)."""
    from payoff import _forks

    return _forks.holding_a_lock()


_CONNECTIONS: dict[str, Any] = {}


def queries_a_connection_of_its_thread(x: int) -> int:
    """Waits 5 ms, then asks an sqlite3 connection made by the first thread that ran this function: the thread
    that made a connection is the only one that may use it (``ProgrammingError`` elsewhere), as a loop does."""
    import sqlite3

    conn = _CONNECTIONS.get("conn")
    if conn is None:
        conn = _CONNECTIONS["conn"] = sqlite3.connect(":memory:")
    time.sleep(0.005)
    return int(conn.execute("select ?", (x,)).fetchone()[0])


def naps_then_refuses_a_thread_count(x: int) -> int:
    """Waits 5 ms; item 25 raises an error of its own that happens to name a thread."""
    time.sleep(0.005)
    if x == 25:
        raise ValueError("a thread count of 0 is not allowed")
    return x


CALLER_VAR: ContextVar[Any] = ContextVar("CALLER_VAR", default="default")
"""A context variable a module holds by name, as a user's code would: set in the caller, a loop's items see it."""


def in_caller_state(name: str) -> tuple[int, Any]:
    """This process, and what an item sees of the caller's state named ``name``: a file read from the working
    directory, an environment variable, ``CALLER_VAR``, decimal's precision at work, numpy's error state."""
    if name == "file":
        seen: Any = Path("state.txt").read_text()
    elif name == "var":
        value = CALLER_VAR.get()
        seen = value if isinstance(value, str) else type(value).__name__
    elif name == "decimal":
        import decimal

        seen = str(decimal.Decimal(1) / decimal.Decimal(7))
    elif name == "numpy":
        import numpy

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                numpy.float64(1.0) / numpy.float64(0.0)
            except FloatingPointError:
                seen = "raised"
            else:
                seen = "no error"
    else:
        seen = os.environ.get(name)
    return os.getpid(), seen


def logs_then_square(x: int) -> int:
    """Logs each item at INFO on ``tests.items``, item 3 at WARNING too, with an argument that cannot be pickled
    and an ``extra=`` attribute; item 5 logs an exception with its traceback."""
    log = logging.getLogger("tests.items")
    log.info("item %d ran", x, extra={"item": x})
    if x == 3:
        log.warning("item %d holds %s", x, threading.Lock())
    if x == 5:
        try:
            raise ValueError("inside item 5")
        except ValueError:
            log.exception("item %d failed", x)
    return x * x


def logs_as_a_library(x: int) -> int:
    """Logs a WARNING on ``tests.library``, whose level the first item in a process sets to ERROR, as a library
    sets its own logger's level when it is imported."""
    log = logging.getLogger("tests.library")
    if not getattr(log, "configured", False):
        log.setLevel(logging.ERROR)
        log.configured = True  # type: ignore[attr-defined]
    log.warning("library warns on %d", x)
    return x


def log_to_a_file_per_worker(folder: str) -> None:
    """A ``worker_initializer`` that sends each worker's records at INFO to a file of its own."""
    logging.basicConfig(filename=os.path.join(folder, f"{os.getpid()}.log"), level=logging.INFO, force=True)


def pin_worker_state(folder: str) -> None:
    """A ``worker_initializer`` that gives each worker a directory and an environment variable of its own."""
    os.chdir(folder)
    os.environ["PAYOFF_PINNED"] = f"worker {os.getpid()}"


def where_and_pinned(_: int) -> tuple[str, str | None]:
    return os.getcwd(), os.environ.get("PAYOFF_PINNED")


def warns_then_hangs(x: int) -> int:
    logging.getLogger("tests.items").warning("item %d starts and hangs", x)
    time.sleep(60)
    return x


def caller_var_head(_: int) -> Any:
    """The first element of ``CALLER_VAR``'s value (a tuple naming who set it)."""
    return CALLER_VAR.get()[0]
