"""The HTML report in a real browser: headless Chromium renders it, and the screenshot shows the timeline."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from payoff import ParallelConfig, ParallelExecutor, ParallelFallbackWarning
from payoff.report import Report
from payoff.report.timeline import FILL
from tests import tasks
from tests.conftest import require

FORCE = {"tiny_workload_threshold": 0.0}
WIDTH, HEIGHT = 1280, 900
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.slow


def screenshot(html: Path, png: Path, profile: Path) -> None:
    """One headless Chromium run, its own process group, killed by PID if it hangs."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
           "--hide-scrollbars", html.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the chromium we started, nothing else
        proc.communicate()
        pytest.fail("chromium did not finish the screenshot in 90 s")
    assert png.exists(), out.decode(errors="replace")[-2000:]


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of raw pixel bytes) of an 8-bit RGB or RGBA PNG, decoded with the stdlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and colour in (2, 6), f"unexpected PNG layout {depth=} {colour=}"
    return width, height, unfilter(zlib.decompress(bytes(idat)), width, height, 4 if colour == 6 else 3)


def unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    stride = width * bpp
    rows, prior = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + predict(kind, a, b, c)) & 0xFF
        rows.append(bytes(line))
        prior = line
    return rows


def predict(kind: int, a: int, b: int, c: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def colours(rows: list[bytes], bpp: int) -> Counter[tuple[int, int, int]]:
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        counts.update(zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True))
    return counts


def hex_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    require(os.path.exists(CHROMIUM), "chromium (Debian package `chromium`) for the browser check")
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.sleep_then_square, range(200))
    with ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=1.0)) as fb, \
            pytest.warns(ParallelFallbackWarning):
        fb.map(tasks.square, range(5))
    html = Path(Report([*ex.records, *fb.records]).to_html(tmp_path / "report.html"))
    png = tmp_path / "report.png"
    screenshot(html, png, tmp_path / "profile")
    width, height, rows = png_pixels(png)
    assert (width, height) == (WIDTH, HEIGHT)
    bpp = len(rows[0]) // width
    counts = colours(rows, bpp)
    white = counts[(255, 255, 255)]
    assert white < width * height * 0.97, "the page is (nearly) blank"
    assert len(counts) > 50, f"only {len(counts)} distinct colours: text and chart did not render"
    assert counts[hex_rgb(FILL["pool"])] > 2000, "the timeline's pool-worker bars are not on screen"
