"""CPUs a pool can use: the CPU affinity and the cgroup CPU quota (a container's CPU limit).

The parsing tests lay out ``/proc/self/{cgroup,mountinfo}`` and the cgroup files as
the kernel writes them for the set-ups met in practice (a cgroup v2 container, a v1
container that bind-mounts its own cgroup, a host cgroup under systemd); the last
test puts a real process in a real cgroup with a quota, where this machine allows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from payoff import _cpus

V2_MOUNT = "30 23 0:26 / {point} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_CPU_MOUNT = "32 31 0:29 {root} {point} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"


def _layout(tmp: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    proc = tmp / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo.format(point=tmp / "fs", root="/"))
    for name, text in files.items():
        path = tmp / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc


def test_a_v2_container_limit_is_read_at_its_cgroup_namespace_root(tmp_path: Path) -> None:
    proc = _layout(tmp_path, "0::/\n", V2_MOUNT, {"cpu.max": "150000 100000\n"})
    assert _cpus.cpu_quota(proc) == 1.5


def test_an_unlimited_v2_cgroup_has_no_quota(tmp_path: Path) -> None:
    proc = _layout(tmp_path, "0::/user.slice/app\n", V2_MOUNT,
                   {"user.slice/app/cpu.max": "max 100000\n", "user.slice/cpu.max": "max 100000\n"})
    assert _cpus.cpu_quota(proc) is None


def test_an_ancestors_tighter_v2_limit_wins(tmp_path: Path) -> None:
    proc = _layout(tmp_path, "0::/kubepods/pod1/c1\n", V2_MOUNT, {
        "kubepods/pod1/c1/cpu.max": "max 100000\n",
        "kubepods/pod1/cpu.max": "50000 100000\n",
        "kubepods/cpu.max": "400000 100000\n",
    })
    assert _cpus.cpu_quota(proc) == 0.5


def test_a_v1_container_that_bind_mounts_its_own_cgroup_is_read_at_the_mount_point(tmp_path: Path) -> None:
    cgroup = "4:cpu,cpuacct:/docker/0123abcd\n3:memory:/docker/0123abcd\n0::/\n"
    mountinfo = V1_CPU_MOUNT.replace("{root}", "/docker/0123abcd")
    proc = _layout(tmp_path, cgroup, mountinfo, {"cpu.cfs_quota_us": "200000\n", "cpu.cfs_period_us": "100000\n"})
    assert _cpus.cpu_quota(proc) == 2.0


def test_a_v1_quota_of_minus_one_is_no_limit(tmp_path: Path) -> None:
    proc = _layout(tmp_path, "2:cpu:/\n", V1_CPU_MOUNT, {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
    assert _cpus.cpu_quota(proc) is None


def test_unreadable_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    assert _cpus.cpu_quota(proc) is None
    (proc / "cgroup").write_text("0::/a\n")
    (proc / "mountinfo").write_text("garbage line\n")
    assert _cpus.cpu_quota(proc) is None


@pytest.mark.parametrize(("affinity", "quota", "allowed"), [
    (8, None, 8), (8, 1.0, 1), (8, 1.5, 2), (8, 0.25, 1), (2, 16.0, 2), (4, 2.5, 3), (4, 3.0, 3),
])
def test_a_fractional_quota_keeps_its_last_cpu(affinity: int, quota: float | None, allowed: int) -> None:
    assert _cpus.cpus_allowed(affinity, quota) == allowed


def _cpu_cgroup_parent() -> Path | None:
    """A cgroup directory this test may create a child in: the v1 ``cpu`` hierarchy or a v2 one with ``cpu``."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        kind, options = tail.split()[0], tail.split()[2] if len(tail.split()) > 2 else ""
        point = Path(head.split()[4])
        if kind == "cgroup" and "cpu" in options.split(",") and os.access(point, os.W_OK):
            return point
        if kind == "cgroup2" and os.access(point, os.W_OK) \
                and "cpu" in (point / "cgroup.subtree_control").read_text().split():
            return point
    return None


def test_a_process_in_a_real_cgroup_with_a_one_cpu_quota_plans_one_worker() -> None:
    parent = _cpu_cgroup_parent()
    if parent is None or os.geteuid() != 0:
        pytest.skip("needs root and a writable cgroup cpu controller to make a cgroup with a CPU quota")
    group = parent / f"payoff-test-{os.getpid()}"
    group.mkdir()
    try:
        if (group / "cpu.max").exists():
            (group / "cpu.max").write_text("100000 100000")
        else:
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text("100000")
        script = ("import os; from payoff.config import usable_cpus, cpus_described;"
                  "print(usable_cpus(), len(os.sched_getaffinity(0)), cpus_described(), sep='|')")
        # the child joins the cgroup before importing payoff: write its pid there from a shell first
        shell = f'echo $$ > {group}/cgroup.procs && exec "{sys.executable}" -c "{script}"'
        out = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        group.rmdir()
    usable, affinity, described = out.strip().split("|")
    assert usable == "1", out
    if int(affinity) > 1:
        assert "cgroup CPU quota of 1 CPU" in described, described
