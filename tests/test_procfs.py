"""The ``/proc`` reader the probe's CPU readings go through: whole files, errors as ``Path`` raises them, no
descriptor left open (it is read hundreds of times a call in a program with pools alive)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from payoff import _procfs


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 50_000])
def test_a_file_is_read_whole_at_every_size_around_the_read_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(i % 251 for i in range(size)))
    assert _procfs.read(path) == path.read_bytes()
    assert _procfs.read(str(path)) == path.read_bytes()


def test_a_missing_file_raises_as_path_does_and_leaves_no_descriptor(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd")) if sys.platform.startswith("linux") else set()
    for _ in range(200):
        with pytest.raises(FileNotFoundError):
            _procfs.read(tmp_path / "gone")
        _procfs.read(__file__)
    if sys.platform.startswith("linux"):  # one left open is a leak; one an earlier test's pool closed meanwhile
        # (a pipe finalized in the background: fd 26 in a clean-clone CI run) is not this read's
        assert not set(os.listdir("/proc/self/fd")) - before


def test_text_that_is_not_utf8_is_read_with_replacements(tmp_path: Path) -> None:
    path = tmp_path / "cmdline"
    path.write_bytes(b"python\x00\xff\xfeitem\x00")
    assert _procfs.read_text(path) == "python\x00\ufffd\ufffditem\x00"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_this_threads_schedstat_reads_as_the_kernel_writes_it() -> None:
    fields = _procfs.read(f"/proc/self/task/{os.getpid()}/schedstat").split()
    assert len(fields) == 3 and all(f.isdigit() for f in fields), fields
    stat = _procfs.read_text(f"/proc/{os.getpid()}/stat")
    assert stat.startswith(f"{os.getpid()} (") and stat.rpartition(")")[2].split()[0] in "RSD"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_short_read_is_no_end_of_file() -> None:
    """``/proc/<pid>/task/<tid>/children`` hands out whole records only: past ~4 KB its first read stopped short
    and the rest was dropped (181 of 1,000 children missed: review). A pipe read through /proc gives short reads
    the same way: what its writer sends in two writes is read whole."""
    import threading
    import time

    r, w = os.pipe()

    def write() -> None:
        os.write(w, b"a" * 100)
        time.sleep(0.05)
        os.write(w, b"b" * 100)
        os.close(w)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert _procfs.read(f"/proc/self/fd/{r}") == b"a" * 100 + b"b" * 100
    finally:
        writer.join()
        os.close(r)
