"""A pool that cannot start for a reason outside the call: the record names that reason.

An ``init_failure`` fallback is right when the interpreter is shutting down (a
map in an ``atexit`` handler) or the OS refuses the semaphores worker
processes share (no usable ``/dev/shm``), but a detail or advice that blames a
``worker_initializer`` the call never had sends the user to the wrong place.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import payoff

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(payoff.__file__).resolve().parents[1]), str(ROOT)])}

REPORT = textwrap.dedent("""
    import sys, warnings
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    def run(strategy, initializer):
        config = ParallelConfig(strategy=strategy, max_workers=2, tiny_workload_threshold=0.0,
                                worker_initializer=initializer, worker_init_args=(3,) if initializer else ())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ParallelExecutor(config) as ex:
                out = ex.map(tasks.square, range(40))
                record = ex.last_record
        assert out == [x * x for x in range(40)]
        print("REASON", record.fallback_reason.value)
        print("DETAIL", record.fallback_detail)
        print("SUMMARY", record.summary())
        for w in caught:
            print("WARNING", str(w.message).replace("\\n", " "))
        sys.stdout.flush()
""")

AT_EXIT = REPORT + textwrap.dedent("""
    import atexit
    strategy, initializer = sys.argv[1], (tasks.load_model if sys.argv[2] == "init" else None)
    if __name__ == "__main__":
        atexit.register(run, strategy, initializer)
""")

NO_SHM = REPORT + textwrap.dedent("""
    if __name__ == "__main__":
        run(sys.argv[1], None)
""")

NO_DESCRIPTORS = REPORT + textwrap.dedent("""
    import os, resource
    import concurrent.futures.process, multiprocessing.synchronize, joblib  # imported before the limit

    def fill_but(free):
        \"\"\"Every file descriptor under a low limit taken but ``free``.\"\"\"
        opened = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (opened + 16, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for fd in held[:free]:
            os.close(fd)
        return held[free:]

    if __name__ == "__main__":
        strategy = sys.argv[1]
        held = fill_but(3)
        run(strategy, None)
        with ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2)) as ex:
            try:
                ex.submit(tasks.square, 3).result()
            except OSError as error:
                for note in getattr(error, "__notes__", []):
                    print("NOTE", note)
            else:
                print("NOTE none: the submit ran")
""")


def _lines(stdout: str, tag: str) -> list[str]:
    return [line.removeprefix(tag + " ") for line in stdout.splitlines() if line.startswith(tag + " ")]


def _told(stdout: str) -> str:
    """Everything the user is told about the fallback: detail, summary and warnings."""
    return "\n".join(_lines(stdout, "DETAIL") + _lines(stdout, "SUMMARY") + _lines(stdout, "WARNING"))


@pytest.mark.parametrize(("strategy", "initializer"), [("processes", "none"), ("processes", "init"),
                                                       ("threads", "none"), ("joblib", "none")])
def test_a_map_in_an_atexit_handler_says_the_interpreter_is_shutting_down(strategy: str, initializer: str) -> None:
    proc = subprocess.run([sys.executable, "-c", AT_EXIT, strategy, initializer], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "REASON") == ["init_failure"], proc.stdout + proc.stderr
    told = _told(proc.stdout)
    assert "shutting down" in _lines(proc.stdout, "DETAIL")[0], told
    assert "initializer" not in told, told


SUBMIT_AT_EXIT = textwrap.dedent("""
    import atexit, sys
    from payoff import ParallelConfig, ParallelExecutor
    from tests import tasks

    strategy, warm = sys.argv[1], sys.argv[2] == "warm"
    ex = ParallelExecutor(ParallelConfig(strategy=strategy, max_workers=2, worker_initializer=tasks.load_model,
                                         worker_init_args=(3,)))

    def at_exit():
        print("SUBMIT", ex.submit(tasks.predict, 5).result(timeout=60))
        sys.stdout.flush()

    if __name__ == "__main__":
        if warm:
            print("WARM", ex.submit(tasks.predict, 1).result(timeout=60))
        atexit.register(at_exit)
""")


@pytest.mark.parametrize(("strategy", "warm"), [("threads", "cold"), ("processes", "cold"), ("processes", "warm"),
                                                ("auto", "cold")])
def test_a_submit_in_an_atexit_handler_runs_in_the_caller_as_a_map_there_does(strategy: str, warm: str) -> None:
    """No pool may start (or take work) then: the call runs here, after the worker initializer, as a serial map."""
    proc = subprocess.run([sys.executable, "-c", SUBMIT_AT_EXIT, strategy, warm], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "SUBMIT") == ["15"], proc.stdout + proc.stderr


def _no_shm_command() -> list[str] | None:
    """A shell line that runs a command with a read-only ``/dev/shm`` of its own (root, a mount namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0 or not os.path.isdir("/dev/shm"):
        return None
    probe = subprocess.run([unshare, "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /dev/shm && touch /dev/shm/x"],
                           capture_output=True, text=True, timeout=60)
    if "Read-only" not in probe.stderr:
        return None
    return [unshare, "-m", "sh", "-c", 'mount -t tmpfs -o ro tmpfs /dev/shm && exec "$0" "$@"']


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_a_read_only_dev_shm_is_named_as_the_cause(strategy: str) -> None:
    prefix = _no_shm_command()
    if prefix is None:
        pytest.skip("needs root and unshare to give a child a read-only /dev/shm")
    proc = subprocess.run([*prefix, sys.executable, "-c", NO_SHM, strategy], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "REASON") == ["init_failure"], proc.stdout + proc.stderr
    told = _told(proc.stdout)
    assert "/dev/shm" in _lines(proc.stdout, "DETAIL")[0] and "semaphore" in told, told
    assert "initializer" not in told, told


def test_an_error_of_a_closed_pool_or_a_plain_os_error_is_not_given_a_guessed_cause() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from payoff.strategies.start_failure import start_failure_detail

    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(RuntimeError) as closed:
        pool.submit(print)
    with pytest.raises(FileNotFoundError) as missing:
        os.open(os.path.join(ROOT, "no-such-folder", "x"), os.O_RDONLY)
    for exc in (closed.value, missing.value):
        detail = start_failure_detail("processes", exc)
        assert detail == f"the processes pool failed to start: {exc!r}", detail


@pytest.mark.parametrize("strategy", ["processes", "joblib"])
def test_no_file_descriptor_left_is_named_as_the_cause(strategy: str) -> None:
    """An ``EMFILE`` where a semaphore is made was told as a missing ``/dev/shm``, and a ``submit`` raised the
    bare ``OSError`` (soak trial, ``ulimit -n 40``)."""
    proc = subprocess.run([sys.executable, "-c", NO_DESCRIPTORS, strategy], cwd=ROOT, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "REASON") == ["init_failure"], proc.stdout + proc.stderr
    detail = _lines(proc.stdout, "DETAIL")[0]
    assert "no file descriptor left" in detail and "ulimit -n" in detail, detail
    assert "/dev/shm" not in _told(proc.stdout), _told(proc.stdout)
    if strategy == "processes":
        notes = _lines(proc.stdout, "NOTE")
        assert any("no file descriptor left" in note for note in notes), proc.stdout + proc.stderr


def test_a_refused_new_process_is_told_apart_from_other_eagains() -> None:
    """Root here is not held to ``ulimit -u``, so the fork's refusal is raised where multiprocessing forks."""
    import errno

    from payoff.strategies.start_failure import start_failure_detail

    def raised_in(filename: str) -> OSError:
        code = compile("raise BlockingIOError(errno.EAGAIN, 'Resource temporarily unavailable')", filename, "exec")
        try:
            exec(code, {"errno": errno})
        except OSError as exc:
            return exc
        raise AssertionError("nothing raised")

    forked = start_failure_detail("processes", raised_in("/usr/lib/python3.11/multiprocessing/popen_fork.py"))
    assert "refused a new process" in forked and "ulimit -u" in forked, forked
    tracker = start_failure_detail("processes", _tracker_fork_refused())
    assert "refused a new process" in tracker and "/dev/shm" not in tracker, tracker
    elsewhere = raised_in("/tmp/socket_reader.py")
    assert start_failure_detail("processes", elsewhere) == f"the processes pool failed to start: {elsewhere!r}"


def _tracker_fork_refused() -> OSError:
    """The ``EAGAIN`` a spawned or forkserver pool met at the process limit: multiprocessing forks its resource
    tracker as the first semaphore is made, so the error passes through ``synchronize.py``, and was told as a
    missing ``/dev/shm`` (hunt 60)."""
    import errno

    scope: dict[str, object] = {"errno": errno}
    exec(compile("def spawnv_passfds(path, args, passfds):\n"
                 "    raise BlockingIOError(errno.EAGAIN, 'Resource temporarily unavailable')\n",
                 "/usr/lib/python3.11/multiprocessing/util.py", "exec"), scope)
    exec(compile("def make_semaphore():\n    spawnv_passfds('python', [], ())\n",
                 "/usr/lib/python3.11/multiprocessing/synchronize.py", "exec"), scope)
    try:
        scope["make_semaphore"]()  # type: ignore[operator]
    except OSError as exc:
        return exc
    raise AssertionError("nothing raised")


def test_an_initializers_own_emfile_is_its_error_not_the_pools_descriptors() -> None:
    """Any EMFILE in the chain was told as the pool's own want of descriptors, even a worker_initializer's
    error on a threads pool, with the advice to use the threads it ran on (review of the day's diff)."""
    import errno

    from payoff.errors import WorkerInitError
    from payoff.strategies.start_failure import start_failure_detail

    own = OSError(errno.EMFILE, "Too many open files", "/data/model.bin")
    wrapped = WorkerInitError("payoff: worker_initializer tests.init raised OSError(24) in a worker thread")
    wrapped.__cause__ = own
    detail = start_failure_detail("threads", wrapped)
    assert "worker_initializer" in detail and "no file descriptor left" not in detail, detail


FORKSERVER = REPORT.replace("tiny_workload_threshold=0.0,", "tiny_workload_threshold=0.0, start_method='forkserver',") \
    + textwrap.dedent("""
    if __name__ == "__main__":
        run("processes", None)
""")


@pytest.mark.parametrize("where", ["long", "unwritable"])
def test_a_temporary_directory_the_forkserver_cannot_use_is_named_with_what_to_do(where: str,
                                                                                 tmp_path: Path) -> None:
    """A forkserver start fell back right, but its detail was only ``OSError('AF_UNIX path too long')`` under a
    200-character TMPDIR, or ``No usable temporary directory found`` in a container whose /tmp is read-only;
    the warning promised the detail would say what to do (constrained trial). It now names TMPDIR."""
    if where == "long":
        tmp = tmp_path
        while len(str(tmp)) < 200:
            tmp = tmp / "abcdefghij"
        tmp.mkdir(parents=True)
        env = {**CHILD_ENV, "TMPDIR": str(tmp)}
    else:  # every candidate tempfile tries is unusable: TMPDIR missing, no /tmp, /var/tmp or /usr/tmp to write to
        env = {**CHILD_ENV, "TMPDIR": str(tmp_path / "missing")}
        prefix = _read_only_tmp_command()
        if prefix is None:
            pytest.skip("no private mount namespace here to make /tmp and /var/tmp read-only (needs unshare -m)")
    command = [sys.executable, "-c", FORKSERVER]
    # tempfile's last candidate is the working directory: /proc, which takes no file
    proc = subprocess.run(command if where == "long" else [*prefix, *command], cwd=ROOT if where == "long" else "/proc",
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "REASON") == ["init_failure"], proc.stdout + proc.stderr
    detail = _lines(proc.stdout, "DETAIL")[0]
    assert "TMPDIR" in detail, detail
    assert ("107 bytes" in detail) if where == "long" else ("writable temporary directory" in detail), detail


def _read_only_tmp_command() -> list[str] | None:
    """A prefix that runs a command with /tmp and /var/tmp read-only, as a container with a read-only root has
    them, in a mount namespace of its own (root, ``unshare``); None where that cannot be made."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return None
    script = "mount -o bind,ro /tmp /tmp && mount -o bind,ro /var/tmp /var/tmp && exec \"$@\""
    probe = subprocess.run([unshare, "-m", "sh", "-c", script + " && true", "sh", "true"], capture_output=True,
                           timeout=30)
    return [unshare, "-m", "sh", "-c", script, "sh"] if probe.returncode == 0 else None


def test_workers_that_died_starting_near_the_process_limit_are_put_down_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``ulimit -u 8`` a joblib pool's workers died importing (each starts threads), and the detail passed on
    loky's guess, "a segmentation fault ... or excessive memory usage", while ``submit`` raised it bare
    (constrained trial, 3 of 3). Near the limit the detail says so; away from it no cause is guessed."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from payoff.strategies import start_failure

    died = TerminatedWorkerError("A worker process managed by the executor was unexpectedly terminated. This could "
                                 "be caused by a segmentation fault ... The exit codes of the workers are "
                                 "{UNKNOWN(255), UNKNOWN(255)}")
    monkeypatch.setattr(start_failure, "_tasks_near_limit", lambda: (7, 8))
    told = start_failure.os_refusal("joblib", died)
    assert told is not None and "ulimit -u" in told and "7 processes and threads of the 8" in told, told
    monkeypatch.setattr(start_failure, "_tasks_near_limit", lambda: None)
    assert start_failure.os_refusal("joblib", died) is None


NEAR_LIMIT = textwrap.dedent("""
    import os, resource, sys
    from payoff.strategies import start_failure  # imported while the interpreter's files are readable
    os.setgid(65534)
    os.setuid(65534)  # a user the limit binds (root is not held to it)
    tasks = start_failure._tasks_near_limit()
    print("UNLIMITED", tasks)
    resource.setrlimit(resource.RLIMIT_NPROC, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NPROC)[1]))
    print("LIMITED", start_failure._tasks_near_limit())
""")


def test_the_tasks_near_the_process_limit_are_read_for_a_user_it_binds() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user, whom ulimit -u binds")
    proc = subprocess.run([sys.executable, "-c", NEAR_LIMIT, "20"], cwd="/", env=CHILD_ENV, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["UNLIMITED"] == "None", proc.stdout  # the limit as root's shell set it: far away, or none
    tasks, limit = ast.literal_eval(lines["LIMITED"])  # (this user's processes and threads, 20)
    assert limit == 20 and 1 <= tasks <= 20, proc.stdout


def test_the_temporary_directory_named_is_the_one_tempfile_uses(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """A program that set ``tempfile.tempdir`` (or a long TEMP or TMP) was told "TMPDIR is not set ... set TMPDIR
    to a short directory" for a forkserver socket path too long (review): the directory tempfile uses is named."""
    import tempfile

    from payoff.strategies.start_failure import os_refusal

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("x" * 120)))
    monkeypatch.delenv("TMPDIR", raising=False)
    told = os_refusal("processes", OSError("AF_UNIX path too long"))
    assert told is not None and repr(str(tmp_path / ("x" * 120))) in told and "tempfile.tempdir" in told, told


def test_a_start_the_os_refused_a_process_is_not_tried_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the process limit every map tried a new pool, and each try left the failed fork's pipes open: a
    service lost 4 descriptors a call, 6 to 247 in 60 calls, each call a quiet fallback (hunt 60). After a
    refusal the next calls fall back without trying, for 10 s at first."""
    import errno

    from payoff import ParallelConfig, ParallelExecutor, Reason
    from tests import tasks

    tries: list[int] = []

    def refused() -> int:
        tries.append(1)
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    config = ParallelConfig(strategy="processes", max_workers=2, start_method="fork", tiny_workload_threshold=0)
    with ParallelExecutor(config) as ex:
        details, starts = [], []
        for _ in range(5):
            assert ex.map(tasks.square, range(20)) == [x * x for x in range(20)]
            record = ex.last_record
            assert record is not None and record.fallback_reason is Reason.INIT_FAILURE, record
            details.append(record.fallback_detail)
            starts.append(record.pool_starts)
        with pytest.raises(OSError, match="not tried again"):  # an OSError, as a refused start's (review 61)
            ex.submit(tasks.square, 3)
    assert len(tries) == 1, f"{len(tries)} forks tried"
    assert starts == [1, 0, 0, 0, 0], "a start not tried is no failed start"
    assert "refused a new process" in details[0] and "not tried again" not in details[0], details[0]
    assert all("refused a new process" in d and "not tried again for 10 s" in d for d in details[1:]), details
