"""The task timeline: an inline SVG Gantt chart of one call, one row per worker.

Seeing chunks laid out per worker answers what a single speedup number cannot:
whether workers sat idle (too few chunks), waited in the queue (dispatch
overhead), or one straggler held the call up (unbalanced chunks). The SVG uses
presentation attributes rather than CSS so it renders the same when copied out
of the report, and carries no script so it is safe in any notebook or mail.
Every value from the record is escaped where it lands (text, ``<title>`` or
attribute), numbers included: records may come from an untrusted file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from payoff.record import ChunkStats, MapRecord
from payoff.report.text import seconds

WIDTH = 960
LABEL_W = 128
RIGHT_PAD = 18
ROW_H = 30
BAR_H = 20
TOP = 6
AXIS_H = 34
CALLER = "caller"

FILL = {"pool": "#2f6fdb", "caller": "#7c5cc4", "retry": "#e08a1e"}
ERROR_STROKE = "#c62828"
WAIT_BG = "#e7ebf2"
WARMUP_FILL = "#d9a441"
"""A worker's one-time imports before a chunk's first item: amber, apart from the wait it is part of."""
GRID = "#e3e6eb"
INK = "#2b2f36"
MUTED = "#6b7280"


def h(value: object) -> str:
    """Any value as SVG text or attribute content: escaped, quotes included."""
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Scale:
    """Maps monotonic nanoseconds to x pixels, with t0 at the plot's left edge."""

    t0: int
    span_ns: int
    plot_w: float = WIDTH - LABEL_W - RIGHT_PAD

    def x(self, ns: int) -> float:
        return LABEL_W + (ns - self.t0) / self.span_ns * self.plot_w


def row_key(chunk: ChunkStats) -> str:
    """Chunks run in the caller (probe, serial run) share one row; reruns after a crash sit on their worker's."""
    return chunk.worker if chunk.where in ("pool", "retry") else CALLER


def worker_rows(chunks: Sequence[ChunkStats]) -> list[str]:
    """Caller row first (the probe runs before the pool), then workers in order of first start."""
    first: dict[str, int] = {}
    for c in sorted(chunks, key=lambda c: c.start_ns):
        first.setdefault(row_key(c), c.start_ns)
    return sorted(first, key=lambda k: (k != CALLER, first[k]))


def nice_step(span_ms: float, target: int = 7) -> float:
    """A 1-2-5 tick step giving about ``target`` ticks over the span."""
    raw = max(span_ms, 1e-6) / target
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def tick_label(ms: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{ms:,.{decimals}f}"


def scale_for(chunks: Sequence[ChunkStats]) -> Scale:
    t0 = min(min(c.submit_ns, c.start_ns) if c.submit_ns > 0 else c.start_ns for c in chunks)
    t1 = max(c.end_ns for c in chunks)
    return Scale(t0, max(1, t1 - t0))


def ticks(scale: Scale) -> list[tuple[float, str]]:
    """(x, label) of each tick, in milliseconds from the call's first stamp."""
    span_ms = scale.span_ns / 1e6
    step = nice_step(span_ms)
    count = int(span_ms / step + 1e-9) + 1
    return [(scale.x(scale.t0 + round(i * step * 1e6)), tick_label(i * step, step)) for i in range(count)]


def grid(scale: Scale, height: float) -> list[str]:
    """Drawn under the bars so ticks never hide a short chunk."""
    lines = (f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{height + 4:.1f}" stroke="{GRID}"/>'
             for x, _ in ticks(scale))
    return ['<g class="grid">', *lines, "</g>"]


def axis(scale: Scale, height: float) -> list[str]:
    out = [f'<g class="axis" font-size="11" fill="{MUTED}">',
           f'<line x1="{LABEL_W}" y1="{height + 4:.1f}" x2="{WIDTH - RIGHT_PAD}" y2="{height + 4:.1f}" '
           f'stroke="#b8bec8"/>']
    out.extend(f'<text x="{x:.1f}" y="{height + 18:.1f}" text-anchor="middle">{label}</text>'
               for x, label in ticks(scale))
    out.append(f'<text x="{WIDTH - RIGHT_PAD}" y="{height + 32:.1f}" text-anchor="end">'
               f"ms since the first chunk was submitted</text></g>")
    return out


def caller_role(chunks: Sequence[ChunkStats]) -> str:
    """What the caller did: probed before a pool ran, or ran the call serially."""
    wheres = {c.where for c in chunks}
    return ("probe" if wheres & {"pool", "retry"} else "serial run") if "caller" in wheres else ""


def row_labels(rows: Sequence[str], chunks: Sequence[ChunkStats]) -> list[tuple[str, str]]:
    """(label, sublabel) per row: pids when workers are processes, a thread id tail when they share one."""
    workers = [r for r in rows if r != CALLER]
    by_process = len({r.partition(":")[0] for r in workers}) > 1
    labels = []
    for key in rows:
        if key == CALLER:
            labels.append(("caller", caller_role(chunks)))
            continue
        pid, _, tid = key.partition(":")
        sub = f"pid {pid}" if by_process or not tid else f"thread ...{tid[-5:]}"
        labels.append((f"worker {workers.index(key) + 1}", sub))
    return labels


def chunk_title(c: ChunkStats) -> str:
    last = c.first_item + c.n_items - 1
    text = (f"chunk {c.index} ({c.where}): items {c.first_item}-{last} ({c.n_items})\n"
            f"queue wait {seconds(c.queue_wait_seconds)}, compute {seconds(c.busy_seconds)}, "
            f"cpu {seconds(c.cpu_seconds)}\nworker {c.worker}")
    if c.warmup_ns:
        text += f"\nof the wait, worker warm-up {seconds(c.warmup_ns / 1e9)} (one-time imports)"
    if c.bytes_sent or c.bytes_received:
        text += f"\nsent {c.bytes_sent:,} B, received {c.bytes_received:,} B"
    if c.n_errors:
        text += f"\n{c.n_errors} item raised"
    return escape(text)


def wait_svg(c: ChunkStats, scale: Scale, y: float, hatch: str) -> str:
    if c.submit_ns <= 0 or c.start_ns <= c.submit_ns:
        return ""
    x0, x1 = scale.x(c.submit_ns), scale.x(c.start_ns)
    return (f'<rect class="wait" data-chunk="{h(c.index)}" x="{x0:.2f}" y="{y + 4:.1f}" '
            f'width="{max(x1 - x0, 0.5):.2f}" height="{BAR_H - 8}" fill="url(#{hatch})">'
            f"<title>{chunk_title(c)}</title></rect>")


def warmup_svg(c: ChunkStats, scale: Scale, y: float) -> str:
    """The end of a chunk's wait its worker spent importing what it needed once (``ChunkStats.warmup_ns``)."""
    if not c.warmup_ns or c.start_ns <= 0:
        return ""
    x0, x1 = scale.x(max(c.submit_ns, c.start_ns - c.warmup_ns)), scale.x(c.start_ns)
    return (f'<rect class="warmup" data-chunk="{h(c.index)}" x="{x0:.2f}" y="{y + 4:.1f}" '
            f'width="{max(x1 - x0, 0.5):.2f}" height="{BAR_H - 8}" fill="{WARMUP_FILL}">'
            f"<title>{chunk_title(c)}</title></rect>")


def compute_svg(c: ChunkStats, scale: Scale, y: float) -> str:
    x0, x1 = scale.x(c.start_ns), scale.x(c.end_ns)
    width = max(x1 - x0, 1.5)
    stroke = f' stroke="{ERROR_STROKE}" stroke-width="2"' if c.n_errors else ' stroke="#ffffff" stroke-width="0.6"'
    bar = (f'<rect class="chunk" data-chunk="{h(c.index)}" data-where="{h(c.where)}" x="{x0:.2f}" y="{y:.1f}" '
           f'width="{width:.2f}" height="{BAR_H}" rx="2" fill="{FILL.get(c.where, MUTED)}"{stroke}>'
           f"<title>{chunk_title(c)}</title></rect>")
    if width < 8 * len(str(c.index)) + 8:
        return bar
    return bar + (f'<text class="chunk-label" x="{x0 + width / 2:.2f}" y="{y + BAR_H / 2 + 3.5:.1f}" '
                  f'text-anchor="middle" font-size="10" fill="#ffffff" pointer-events="none">{h(c.index)}</text>')


def row_svg(key: str, labels: tuple[str, str], chunks: Sequence[ChunkStats], scale: Scale, y: float,
            hatch: str) -> list[str]:
    busy = sum(c.busy_seconds for c in chunks)
    out = [f'<g class="worker-row" data-worker="{h(key)}" data-chunks="{len(chunks)}">',
           f"<title>{h(key)}: {len(chunks)} chunks, busy {seconds(busy)}</title>"]
    out.append(f'<text x="8" y="{y + 9:.1f}" font-size="12" font-weight="600" fill="{INK}">'
               f"{h(labels[0])}</text>")
    out.append(f'<text x="8" y="{y + 21:.1f}" font-size="10" fill="{MUTED}">{h(labels[1])}</text>')
    out.extend(w for w in (wait_svg(c, scale, y, hatch) for c in chunks) if w)  # waits under the bars they precede
    out.extend(w for w in (warmup_svg(c, scale, y) for c in chunks) if w)
    out.extend(compute_svg(c, scale, y) for c in chunks)
    out.append("</g>")
    return out


def hatch_defs(pattern_id: str) -> str:
    return (f'<defs><pattern id="{pattern_id}" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{WAIT_BG}"/>'
            f'<line x1="0" y1="0" x2="0" y2="6" stroke="#9aa5b8" stroke-width="2"/></pattern></defs>')


def bands(n_rows: int) -> list[str]:
    """Zebra stripes keep a bar readable against its row label across a wide chart."""
    return [f'<rect class="row-band" x="0" y="{TOP + i * ROW_H:.1f}" width="{WIDTH}" height="{ROW_H}" '
            f'fill="#f5f7fa"/>' for i in range(0, n_rows, 2)]


def id_token(value: object) -> str:
    """``value`` reduced to characters safe inside an id and a ``url(#...)`` reference."""
    return re.sub(r"[^0-9A-Za-z]", "_", str(value).split(".")[0])


def timeline_svg(record: MapRecord) -> str:
    """The call's Gantt chart; a short note instead when the call ran no chunk."""
    if not record.chunks:
        return '<p class="timeline-empty">No chunks ran in this call, so there is no timeline.</p>'
    scale = scale_for(record.chunks)
    rows = worker_rows(record.chunks)
    height = TOP + ROW_H * len(rows)
    pattern_id = f"payoff-hatch-{id_token(record.call_id)}-{id_token(record.started_at * 1e6)}"
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height + AXIS_H}" width="100%" role="img" '
           f'font-family="system-ui, -apple-system, Segoe UI, sans-serif" '
           f'aria-label="task timeline of call {h(record.call_id)}">', hatch_defs(pattern_id),
           *bands(len(rows)), *grid(scale, height)]
    for i, (key, labels) in enumerate(zip(rows, row_labels(rows, record.chunks), strict=True)):
        mine = [c for c in record.chunks if row_key(c) == key]
        out.extend(row_svg(key, labels, mine, scale, TOP + 5 + i * ROW_H, pattern_id))
    out.extend(axis(scale, height))
    out.append("</svg>")
    return "\n".join(out)
