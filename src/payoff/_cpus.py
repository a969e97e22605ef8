"""How many CPUs this process can use: its CPU affinity, and the CPU quota of its cgroups.

A container limited to one CPU (``docker --cpus=1``, a Kubernetes CPU limit) on a
many-core host still sees every core in its affinity: a pool of one worker per core
there only takes turns at the quota, slower than a loop. The quota is the CFS
bandwidth of the process's cgroup and of every ancestor (the tightest counts):
``cpu.max`` under cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1.
It is read from the cgroup path in ``/proc/self/cgroup``, placed under the mount
that holds it (``/proc/self/mountinfo``), so it holds both inside a container's
cgroup namespace and for a cgroup on a host.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

QUOTA_TTL_SECONDS: Final = 5.0
"""A quota is re-read at most this often: it rarely changes (a resized pod), and reading it costs file opens."""


class _Mount(NamedTuple):
    root: str
    """The cgroup path the mount shows at its mount point (``/`` unless bind-mounted from deeper)."""
    point: Path


def cpu_quota(proc: Path = Path("/proc/self")) -> float | None:
    """The tightest CPU quota over this process's cgroups, in CPUs, or None when none limits it."""
    quotas = [q for q in (_v2_quota(proc), _v1_quota(proc)) if q is not None]
    return min(quotas) if quotas else None


def cpus_allowed(affinity: int, quota: float | None) -> int:
    """CPUs a pool can keep busy: a fractional quota's last CPU counts, as part of one still runs a worker."""
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota - 1e-9)))


class _QuotaCache:
    """The quota of now, read again after :data:`QUOTA_TTL_SECONDS` (and in a forked child, whose cgroup may differ)."""

    def __init__(self) -> None:
        self._at = -math.inf
        self._pid = -1
        self._quota: float | None = None

    def get(self) -> float | None:
        now = time.monotonic()
        if now - self._at > QUOTA_TTL_SECONDS or self._pid != os.getpid():
            self._quota = cpu_quota()
            self._at, self._pid = now, os.getpid()
        return self._quota


quota_now: Final = _QuotaCache()


def _cgroup_lines(proc: Path) -> list[tuple[str, str, str]]:
    """``(hierarchy id, controllers, path)`` for each line of ``/proc/<pid>/cgroup``."""
    lines = []
    for line in _read(proc / "cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            lines.append((parts[0], parts[1], parts[2]))
    return lines


def _mounts(proc: Path, wanted: str) -> list[_Mount]:
    """Cgroup mounts: of type ``cgroup2`` for ``wanted == ""``, else v1 mounts whose options name ``wanted``."""
    found = []
    for line in _read(proc / "mountinfo").splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        if (wanted == "" and after[0] == "cgroup2") or (
            wanted and after[0] == "cgroup" and wanted in after[2].split(",")
        ):
            found.append(_Mount(_unescape(fields[3]), Path(_unescape(fields[4]))))
    return found


def _read(path: Path) -> str:
    """A kernel file's text; empty where it is missing or unreadable (no cgroup, another OS)."""
    try:
        return path.read_text()
    except OSError:
        return ""


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _directories(mount: _Mount, cgroup_path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount point, deepest first."""
    root = mount.root.rstrip("/")
    shown = cgroup_path == root or cgroup_path.startswith(root + "/")
    relative = cgroup_path[len(root):].strip("/") if shown else ""  # unshown: only the mount point's own limit
    parts = [p for p in relative.split("/") if p]
    return [mount.point.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_quota(proc: Path) -> float | None:
    return _hierarchy_quota(proc, "", lambda hid, _: hid == "0", _v2_limit)


def _v1_quota(proc: Path) -> float | None:
    return _hierarchy_quota(proc, "cpu", lambda _, controllers: "cpu" in controllers.split(","), _v1_limit)


def _hierarchy_quota(proc: Path, controller: str, belongs: Callable[[str, str], bool],
                     limit: Callable[[Path], float | None]) -> float | None:
    """The tightest limit on the path of this process's cgroup in one hierarchy (v2: ``controller`` "")."""
    paths = [path for hid, controllers, path in _cgroup_lines(proc) if belongs(hid, controllers)]
    if not paths:
        return None
    return _tightest([limit(d) for m in _mounts(proc, controller) for d in _directories(m, paths[0])])


def _v2_limit(directory: Path) -> float | None:
    """``cpu.max`` is ``"<quota> <period>"`` in microseconds, or ``"max <period>"`` for no limit."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _v1_limit(directory: Path) -> float | None:
    """``cpu.cfs_quota_us`` is -1 for no limit."""
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    return q / p if q > 0 and p > 0 else None


def _tightest(limits: list[float | None]) -> float | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None
