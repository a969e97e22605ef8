"""A pool's temp folders, which an owner killed with SIGKILL cannot leave behind for good.

A pool keeps shipped functions (which can hold a model of many megabytes) and
its workers' initializer reports in folders of its own, removed when the pool
stops. SIGKILL (a restarted notebook kernel, the OOM killer) runs no clean-up,
so those folders stayed in the temp folder until the machine was wiped.

Each folder holds a lock file whose ``flock`` its owner keeps for as long as it
lives; forked workers share that lock, and the kernel lets it go when the last
of them dies, however it dies. The first folder a process makes sweeps the temp
folder once for payoff folders whose lock is free. ``flock`` needs no process
id, so owners in other PID namespaces sharing ``/tmp`` are seen alive too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile

from payoff import _forks

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: folders are removed by their owner only
    fcntl = None  # type: ignore[assignment]

PREFIXES = ("payoff-ship-", "payoff-init-", "payoff-marks-")
_LOCK_NAME = ".owner"
_NEW_LOCK_NAME = ".owner-new"

_swept = False
_sweep_lock = _forks.Lock()


class ScratchDir:
    """A folder in the temp folder, locked as its owner's for as long as the owner (or a fork of it) lives."""

    def __init__(self, prefix: str) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"payoff: scratch folders are named {PREFIXES}, not {prefix!r}")
        _sweep_once()
        self.path = tempfile.mkdtemp(prefix=prefix)
        self._fd: int | None = _lock(self.path)

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def remove(self) -> None:
        """The folder first, then the lock: a sweeper never finds the folder unlocked while its owner lives."""
        shutil.rmtree(self.path, ignore_errors=True)
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _lock(path: str) -> int | None:
    """Lock a file under a name sweepers ignore, then rename it to the one they check: the folder is never
    seen with an unlocked lock file, even in the moment it is made."""
    if fcntl is None:
        return None
    new = os.path.join(path, _NEW_LOCK_NAME)
    fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:  # a file system without locks (some network mounts): the folder is never swept, as before
        os.close(fd)
        os.unlink(new)
        return None
    os.rename(new, os.path.join(path, _LOCK_NAME))
    return fd


def _unswept() -> None:
    """In a forked child: a worker of a pre-fork server lives on and makes folders while its siblings are killed
    and leave theirs, which it then sweeps once (with ``preload_app`` every worker had the master's sweep
    behind it, and a killed worker's folders stayed for good: pre-fork trial 44)."""
    global _swept
    _swept = False


_forks.in_child(_unswept)


def _sweep_once() -> None:
    """Once per process."""
    global _swept
    with _sweep_lock:
        if _swept or fcntl is None:
            return
        _swept = True
    with contextlib.suppress(OSError):
        sweep(tempfile.gettempdir())


def sweep(folder: str) -> list[str]:
    """Remove this user's payoff folders in ``folder`` whose owner is gone; returns what it removed.

    A folder without a lock file is left alone: it is being made, or it was made
    by a payoff that did not lock its folders.
    """
    removed: list[str] = []
    uid = os.getuid()
    for name in os.listdir(folder):
        if not name.startswith(PREFIXES):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and _owner_gone(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _owner_gone(path: str) -> bool:
    assert fcntl is not None
    try:
        fd = os.open(os.path.join(path, _LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
