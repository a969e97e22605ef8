"""Plain-text reports: what a terminal or a log file can show about map calls.

Everything here reads a :class:`~payoff.record.MapRecord` and nothing else, so
the text report can never disagree with the metrics, spans or the HTML report.
Output is ASCII so it survives any terminal, log collector or CI console.
Strings from a record (workload, strategy names, fallback detail) may come
from an untrusted records file, so control characters in them are shown as
escapes: a crafted name cannot send terminal escape sequences or fake a line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from payoff.record import MapRecord, Summary, advice_of

COLUMNS: tuple[tuple[str, str], ...] = (
    ("call", ">"), ("workload", "<"), ("strategy", "<"), ("workers", ">"), ("items", ">"), ("chunks", ">"),
    ("wall", ">"), ("speedup", ">"), ("util", ">"), ("queue p50/p95", ">"), ("task p50/p95", ">"),
    ("verdict", "<"),
)


def printable(value: object) -> str:
    """``value`` as text with every non-printable character (ESC, newline, bidi override) shown as its escape."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def seconds(value: float) -> str:
    """A duration in the unit a person reads fastest (us, ms or s)."""
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def pair(summary: Summary) -> str:
    return f"{seconds(summary.p50)} / {seconds(summary.p95)}" if summary.count else "-"


ENDED = {"timeout": "timed out", "cancelled": "cancelled", "error": "failed"}
"""The verdict cell of a call that did not complete, by ``MapRecord.outcome``: no judgement of its speed."""


def verdict(record: MapRecord) -> str:
    """The short verdict a table cell has room for; ``record.summary()`` is the long one."""
    if not record.completed:
        return ENDED.get(record.outcome, "did not complete")
    if record.fell_back and record.fallback_reason is not None:
        return f"fell back: {record.fallback_reason.value}"
    # A call that recovered (lost chunks rerun in fresh workers) stayed where it ran: judged as such, naming it.
    after = f" after {record.fallback_reason.value}" if record.fallback_reason is not None else ""
    if record.mode == "serial":  # a pool of one worker process ran its items one at a time, not in the caller
        return f"{'serial' if record.selected_strategy == 'serial' else 'one worker'}{after}"
    if record.speedup <= 0:  # no chunk measured any work: nothing to judge
        return f"no work measured{after}"
    return ("pays off" if record.pays_off else "does not pay off") + after


def speedup(record: MapRecord) -> str:
    """The speedup cell: none for a call that did not complete (its work and wall time are not the call's)."""
    return f"{record.speedup:.2f}x" if record.completed else "-"


def strategy_label(record: MapRecord) -> str:
    if record.requested_strategy in (record.selected_strategy, "custom"):
        return record.selected_strategy
    return f"{record.requested_strategy}->{record.selected_strategy}"


def row(record: MapRecord, position: int | None = None) -> list[str]:
    """``position``: the call's place in a report of many (call ids restart in every executor and process)."""
    cells = [
        str(record.call_id if position is None else position), record.workload, strategy_label(record),
        str(record.workers), f"{record.n_items:,}",
        str(record.chunks_cut), seconds(record.wall_seconds), speedup(record), f"{record.utilization:.0%}",
        pair(record.queue_wait), pair(record.task_time), verdict(record),
    ]
    return [printable(cell) for cell in cells]


def table(records: Sequence[MapRecord], numbered: bool = False) -> str:
    """``numbered``: the first column counts the calls in order instead of showing each one's call id."""
    rows = [[name for name, _ in COLUMNS], *(row(r, i + 1 if numbered else None) for i, r in enumerate(records))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(_cell(cell, width, align) for cell, width, (_, align) in zip(r, widths, COLUMNS, strict=True))
             .rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(text: str, width: int, align: str) -> str:
    return text.rjust(width) if align == ">" else text.ljust(width)


def overhead(record: MapRecord) -> str:
    """Overhead phases, largest first, so the phase to fix is read first."""
    phases = sorted(record.overhead_seconds.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {seconds(value)}" for name, value in phases) or "-"


def details(record: MapRecord, position: int | None = None) -> list[str]:
    name = f"call {record.call_id}" if position is None else f"call {position} (call_id {record.call_id})"
    lines = [f"{name}: {record.summary()}", f"  overhead: {overhead(record)}"]
    if record.fallback_reason is not None:
        reason = record.fallback_reason
        label = "recovered" if reason.recovered else "fallback"
        lines.append(f"  {label}: {reason.value} - {reason.meaning}")
        if record.fallback_detail:
            lines.append(f"  detail:   {record.fallback_detail}")
        lines.append(f"  advice:   {advice_of(record)}")
    if record.n_errors:
        lines.append(f"  errors:   {record.n_errors} item(s) raised")
    return [printable(line) for line in lines]


def aggregate(records: Sequence[MapRecord]) -> str:
    """One line over all calls: how many ran parallel, paid off, why the rest fell back, and which did not complete.

    A call that recovered from a dead worker or a stopped pool stayed where it ran: it is counted among the
    parallel calls and named apart (``1 recovered: map_failure_retry x1``), never among those that fell back.
    """
    parallel = sum(r.mode == "parallel" for r in records)
    paid = sum(r.pays_off for r in records)
    reasons = Counter(r.fallback_reason.value for r in records if r.fell_back and r.fallback_reason is not None)
    recovered = Counter(r.fallback_reason.value for r in records
                        if r.fallback_reason is not None and r.fallback_reason.recovered)
    calls = "1 call" if len(records) == 1 else f"{len(records)} calls"
    line = f"{calls}, {parallel} parallel ({paid} paid off), {sum(reasons.values())} fell back"
    if reasons:
        line += ": " + ", ".join(f"{code} x{n}" for code, n in reasons.most_common())
    if recovered:
        line += f", {sum(recovered.values())} recovered: " + ", ".join(
            f"{code} x{n}" for code, n in recovered.most_common())
    ended = Counter(r.outcome for r in records if not r.completed)
    if ended:
        line += f"; {sum(ended.values())} did not complete: " + ", ".join(f"{k} x{n}" for k, n in ended.most_common())
    return line


def record_text(record: MapRecord) -> str:
    """The text report of one call (``print(record)``-style detail)."""
    return "\n".join([table([record]), "", *details(record)])


def render_text(records: Sequence[MapRecord]) -> str:
    """Aggregate line, one table row per call, then each call's verdict, overhead and advice."""
    records = list(records)
    if not records:
        return "payoff report: no calls recorded\n"
    parts = [f"payoff report: {aggregate(records)}", "", table(records, numbered=True), ""]
    for i, record in enumerate(records):
        parts.extend(details(record, i + 1))
    return "\n".join(parts) + "\n"
