"""Self-contained HTML reports: verdict, numbers and task timeline of map calls.

One file a user can open or mail without Grafana, and a fragment a notebook
can show. Inline CSS scoped under ``.payoff-report`` and inline SVG only: no
JavaScript and no external resource, so the report renders offline, inside
sandboxed notebook outputs, and in mail clients that strip scripts.

Records may come from an untrusted file, so every value taken from a record
goes through ``h`` (HTML-escaped, quotes included) wherever it lands, text or
attribute, whatever its declared type: a number field is escaped too, since a
library caller can build a MapRecord holding anything.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from html import escape

from payoff.record import MapRecord, Summary, advice_of
from payoff.report import text
from payoff.report.timeline import ERROR_STROKE, FILL, WAIT_BG, WARMUP_FILL, timeline_svg

ARROW = " \u2192 "
"""Replaces the text report's ``->`` (requested -> selected strategy); HTML is UTF-8."""

STYLE = """
.payoff-report{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;
 max-width:1100px;margin:0 auto;padding:8px 4px}
.payoff-report h1{font-size:22px;margin:8px 0 2px}
.payoff-report h2{font-size:17px;margin:0}
.payoff-report h3{font-size:13px;margin:18px 0 6px;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.payoff-report .sub{color:#57606a;margin:0 0 14px}
.payoff-report .call{border:1px solid #d8dee4;border-radius:10px;padding:16px 18px;margin:18px 0;
 box-shadow:0 1px 2px rgba(31,35,40,.06)}
.payoff-report .call>header{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.payoff-report .workload{font-weight:400;color:#57606a;font-size:14px}
.payoff-report .call-id{font-weight:400;color:#57606a;font-size:12px}
.payoff-report .when{margin-left:auto;color:#57606a;font-size:12px}
.payoff-report .badge{display:inline-block;border-radius:999px;padding:2px 10px;font-size:12px;font-weight:600;
 border:1px solid transparent;white-space:nowrap}
.payoff-report .good{background:#dafbe1;color:#116329;border-color:#aceebb}
.payoff-report .bad{background:#ffebe9;color:#a40e26;border-color:#ffcecb}
.payoff-report .warn{background:#fff8c5;color:#7d4e00;border-color:#f5e0a0}
.payoff-report .neutral{background:#eef1f4;color:#424a53;border-color:#d8dee4}
.payoff-report .summary{margin:8px 0 12px;color:#24292f}
.payoff-report .facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:8px;margin:0 0 4px}
.payoff-report .fact{background:#f6f8fa;border-radius:8px;padding:8px 10px}
.payoff-report .fact b{display:block;font-size:19px;font-variant-numeric:tabular-nums}
.payoff-report .fact span{font-size:11px;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.payoff-report .fact.good b{color:#116329}
.payoff-report .fact.bad b{color:#a40e26}
.payoff-report .fact small{display:block;color:#57606a;font-size:11px}
.payoff-report .fallback{border-left:4px solid #d4a72c;background:#fff8c5;padding:8px 12px;margin:12px 0;
 border-radius:0 8px 8px 0}
.payoff-report .fallback p{margin:2px 0}
.payoff-report table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
.payoff-report th,.payoff-report td{padding:5px 9px;border-bottom:1px solid #eaeef2;text-align:right;
 white-space:nowrap}
.payoff-report .scroll{overflow-x:auto}
.payoff-report .overview td,.payoff-report .overview th{padding:5px 6px}
.payoff-report th{background:#f6f8fa;color:#424a53;font-weight:600;font-size:12px}
.payoff-report th:first-child,.payoff-report td:first-child,.payoff-report .left{text-align:left}
.payoff-report .split{display:grid;grid-template-columns:1fr 1fr;gap:18px}
.payoff-report .legend{display:flex;gap:16px;flex-wrap:wrap;font-size:12px;color:#57606a;margin:6px 0 0}
.payoff-report .sw{display:inline-block;width:14px;height:10px;border-radius:2px;margin-right:5px;
 vertical-align:-1px}
.payoff-report a{color:#0969da;text-decoration:none}
.payoff-report svg.timeline{display:block;border:1px solid #eaeef2;border-radius:6px}
"""


def h(value: object) -> str:
    """Any value as HTML text or attribute content: escaped, quotes included, never trusted as markup."""
    return escape(str(value), quote=True)


def seconds(value: float) -> str:
    """Like the text report, with a real micro sign (HTML is UTF-8; terminals may not be)."""
    return text.seconds(value).replace(" us", " \u00b5s")


def tone(record: MapRecord) -> str:
    """Colour says the verdict at a glance: green pays off, red does not, amber fell back or did not complete.

    A call that recovered (lost chunks rerun in fresh workers) ran where it was planned: coloured by its speedup.
    """
    if not record.completed or record.fell_back:
        return "warn"
    if record.mode == "serial" or record.speedup <= 0:
        return "neutral"
    return "good" if record.pays_off else "bad"


def badge(record: MapRecord, *, with_speedup: bool = True) -> str:
    kind = tone(record)
    label = text.verdict(record)
    if with_speedup and kind in ("good", "bad"):
        label += f": {record.speedup:.2f}x"
    return f'<span class="badge {kind}">{escape(label)}</span>'


def fact(label: str, value: str, note: str = "", tone: str = "") -> str:
    small = f"<small>{escape(note)}</small>" if note else ""
    return f'<div class="fact {tone}"><span>{escape(label)}</span><b>{escape(value)}</b>{small}</div>'


def pool_note(record: MapRecord) -> str:
    if record.pool_reused:
        return "warm pool"
    if record.pool_start_failed:
        return "pool failed to start"
    return "new pool" if record.pool_started else "no pool"


def utilization_note(record: MapRecord) -> str:
    """Busy time; on a shared pool, the worker time that was other calls' (their chunks, their share of idle
    workers), counted out of this call's capacity."""
    busy = f"busy {seconds(record.busy_seconds)}"
    return f"{busy}; pool shared, other calls had {seconds(record.shared_seconds)}" if record.pool_shared else busy


def chunks_note(record: MapRecord) -> str:
    cut = record.chunks_cut
    pieces = f" ({record.n_chunks:,} pieces)" if record.n_chunks > cut else ""
    return f"{cut:,} chunk{'' if cut == 1 else 's'} of ~{record.chunk_size:,}{pieces}"


def speedup_fact(record: MapRecord) -> str:
    if not record.completed:
        return fact("speedup (est.)", "-", f"the call {text.verdict(record)}: no verdict")
    return fact("speedup (est.)", f"{record.speedup:.2f}x", f"efficiency {record.efficiency:.0%}", tone(record))


def facts(record: MapRecord) -> str:
    strategy = text.strategy_label(record)
    cards = [
        speedup_fact(record),
        fact("utilization", f"{record.utilization:.0%}", utilization_note(record)),
        fact("wall time", seconds(record.wall_seconds), f"serial est. {seconds(record.serial_estimate_seconds)}"),
        fact("strategy", strategy.replace("->", ARROW), record.decision_reason.value),
        fact("workers", str(record.workers), pool_note(record)),
        fact("items", f"{record.n_items:,}", "; ".join(filter(None, (record.items_said, chunks_note(record))))),
    ]
    return f'<div class="facts">{"".join(cards)}</div>'


def fallback_box(record: MapRecord) -> str:
    reason = record.fallback_reason
    if reason is None:
        return ""
    detail = f"<p>{escape(record.fallback_detail)}</p>" if record.fallback_detail else ""
    title = "Recovered" if reason.recovered else "Ran serially"
    return (f'<div class="fallback"><p><b>{title}: {escape(reason.value)}</b> - {escape(reason.meaning)}</p>'
            f"{detail}<p><b>What to do:</b> {escape(advice_of(record))}</p></div>")


def summary_rows(name: str, summary: Summary) -> str:
    if not summary.count:
        return f"<tr><td>{escape(name)}</td><td>-</td><td>-</td><td>-</td><td>-</td></tr>"
    cells = "".join(f"<td>{seconds(v)}</td>" for v in (summary.p50, summary.p95, summary.max))
    return f"<tr><td>{escape(name)}</td><td>{summary.count:,}</td>{cells}</tr>"


def latency_table(record: MapRecord) -> str:
    head = "<tr><th>per</th><th>count</th><th>p50</th><th>p95</th><th>max</th></tr>"
    body = summary_rows("queue wait (chunk)", record.queue_wait) + summary_rows("task time (item)", record.task_time)
    return f"<table>{head}{body}</table>"


def overhead_table(record: MapRecord) -> str:
    phases = sorted(record.overhead_seconds.items(), key=lambda kv: -kv[1])
    rows = "".join(f"<tr><td>{h(k)}</td><td>{h(seconds(v))}</td></tr>" for k, v in phases)
    traffic = (f"<tr><td>bytes sent / received</td><td>{h(f'{record.bytes_sent:,} / {record.bytes_received:,}')}"
               "</td></tr>" if record.bytes_sent or record.bytes_received else "")
    return f"<table><tr><th>overhead phase</th><th>time</th></tr>{rows}{traffic}</table>"


def legend() -> str:
    items = [(f"background:{FILL['pool']}", "compute in a pool worker"),
             (f"background:{FILL['caller']}", "compute in the caller (probe or serial)"),
             (f"background:{FILL['retry']}", "rerun in a fresh worker after a crash"),
             (f"background:repeating-linear-gradient(45deg,#9aa5b8 0 2px,{WAIT_BG} 2px 5px)", "queue wait"),
             (f"background:{WARMUP_FILL}", "worker warm-up (one-time imports)"),
             (f"border:2px solid {ERROR_STROKE};box-sizing:border-box", "chunk with an error")]
    return '<div class="legend">' + "".join(f'<span><i class="sw" style="{s}"></i>{escape(t)}</span>'
                                             for s, t in items) + "</div>"


def when(record: MapRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))


def heading(record: MapRecord, position: int | None) -> str:
    """``Call 3 (call_id 1)`` in a report: call ids restart at 1 in every executor, positions do not."""
    if position is None:
        return f"Call {h(record.call_id)}"
    return f'Call {position} <span class="call-id">(call_id {h(record.call_id)})</span>'


def section(record: MapRecord, anchor: str = "", position: int | None = None) -> str:
    """One call: verdict, key figures, fallback advice, latency and overhead tables, timeline."""
    id_attr = f' id="{h(anchor)}"' if anchor else ""
    errors = f'<span class="badge bad">{h(record.n_errors)} error(s)</span>' if record.n_errors else ""
    return (f'<section class="call"{id_attr} data-call="{h(record.call_id)}"><header>'
            f'<h2>{heading(record, position)} <span class="workload">{h(record.workload)}</span></h2>'
            f'{badge(record)}{errors}<span class="when">{h(when(record))}</span></header>'
            f'<p class="summary">{escape(record.summary())}</p>{facts(record)}{fallback_box(record)}'
            f'<div class="split"><div><h3>Latency</h3>{latency_table(record)}</div>'
            f"<div><h3>Overhead</h3>{overhead_table(record)}</div></div>"
            f"<h3>Task timeline</h3>{timeline_svg(record)}{legend()}</section>")


def cell(value: str, align: str) -> str:
    css = ' class="left"' if align == "<" else ""
    return f"<td{css}>{escape(value.replace('->', ARROW))}</td>"


def overview(records: Sequence[MapRecord], anchor: str = "call", linked_from: int = 0) -> str:
    """The text report's table, with each call from ``linked_from`` on linking to its section (call ids repeat
    across executors)."""
    head = "".join(f'<th class="{"left" if a == "<" else ""}">{escape(n)}</th>' for n, a in text.COLUMNS)
    rows = []
    for i, r in enumerate(records):
        cells = text.row(r, i + 1)  # the position its section's heading shows
        first = f'<td><a href="#{anchor}-{i}">{escape(cells[0])}</a></td>' if i >= linked_from \
            else f"<td>{escape(cells[0])}</td>"
        middle = "".join(cell(c, a) for c, (_, a) in zip(cells[1:-1], text.COLUMNS[1:-1], strict=True))
        rows.append(f'<tr>{first}{middle}<td class="left">{badge(r, with_speedup=False)}</td></tr>')
    return f'<div class="scroll"><table class="overview"><tr>{head}</tr>{"".join(rows)}</table></div>'


def record_html(record: MapRecord) -> str:
    """A notebook-ready fragment for one call (what ``MapRecord._repr_html_`` shows)."""
    return f'<div class="payoff-report"><style>{STYLE}</style>{section(record)}</div>'


NOTEBOOK_SECTIONS = 10
"""The calls a notebook's report details (their sections and timelines): the last ones. Every call detailed,
a cell showing ``ex.report()`` after 300 maps held 3.5 MB of HTML, ~14 KB a call, saved in the notebook
(hunt 71); its table still lists every call."""


def body(records: Sequence[MapRecord], title: str, anchor: str = "call", sections: int | None = None) -> str:
    """``sections``: detail only the last so many calls (None: all), and say so under the table."""
    if not records:
        return f"<h1>{escape(title)}</h1><p class=\"sub\">No calls recorded.</p>"
    first = 0 if sections is None else max(0, len(records) - sections)
    said = "" if not first else (
        f'<p class="sub">Details of the last {len(records) - first} of {len(records)} calls below: a notebook '
        "saves every byte of a cell's output. <code>report.to_html(path)</code> writes a page with them all, "
        "<code>ex.records[i]</code> shows any one.</p>")
    return (f"<h1>{escape(title)}</h1><p class=\"sub\">{escape(text.aggregate(records))}</p>"
            f"{overview(records, anchor, first)}{said}"
            f"{''.join(section(r, f'{anchor}-{i}', i + 1) for i, r in enumerate(records) if i >= first)}")


_FRAGMENTS = itertools.count(1)
"""Numbers the fragments of this process: two reports shown in one notebook had the same ids (``call-0``...),
and a link in the second's table jumped to the first's section."""


def render_html(records: Sequence[MapRecord], *, title: str = "payoff report", full_page: bool = True) -> str:
    """The report of many calls: a whole page by default, a fragment for notebooks with ``full_page=False``."""
    records = list(records)
    if not full_page:
        anchor = f"payoff-report-{next(_FRAGMENTS)}-call"
        inner = body(records, title, anchor, NOTEBOOK_SECTIONS)
        return f'<div class="payoff-report"><style>{STYLE}</style>{inner}</div>'
    fragment = f'<div class="payoff-report"><style>{STYLE}</style>{body(records, title)}</div>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title></head><body style=\"margin:0;background:#fff\">{fragment}</body></html>\n")
