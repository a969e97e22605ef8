"""Text and HTML reports of real map calls: verdicts, advice, and the per-worker task timeline."""

from __future__ import annotations

import dataclasses
import os
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from payoff import MapRecord, ParallelConfig, ParallelExecutor, ParallelFallbackWarning
from payoff.record import RecordBuilder, advice_of
from payoff.report import Report, record_html, record_text, render_html, render_text
from tests import tasks
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
FORCE = {"tiny_workload_threshold": 0.0}
"""Make every call parallel, whatever it costs: the report is under test, not the planner."""


class SvgCensus(HTMLParser):
    """Collects the timeline's worker rows and chunk rects, each chunk with the row it is drawn in."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.chunks: list[tuple[str, str]] = []
        self.waits: list[str] = []
        self.sections = 0
        self._row_stack: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("class") == "call":
            self.sections += 1
        if tag == "g":
            self._row_stack.append(a.get("data-worker") if a.get("class") == "worker-row" else None)
            if a.get("class") == "worker-row":
                self.rows.append(str(a["data-worker"]))
        if tag == "rect" and a.get("class") == "chunk":
            row = next((r for r in reversed(self._row_stack) if r is not None), "")
            self.chunks.append((str(a["data-chunk"]), row))
        if tag == "rect" and a.get("class") == "wait":
            self.waits.append(str(a["data-chunk"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._row_stack.pop()


def census(html: str) -> SvgCensus:
    parser = SvgCensus()
    parser.feed(html)
    parser.close()
    return parser


def run(strategy: str, fn: object, items: list[object], **config: object) -> tuple[MapRecord, list[int]]:
    """One real call; returns its record and the pool's worker pids seen while the pool was alive."""
    with ParallelExecutor(ParallelConfig(strategy=strategy, **config)) as ex:  # type: ignore[arg-type]
        ex.map(fn, items)  # type: ignore[arg-type]
        pids = ex.worker_pids()
        record = ex.last_record
    assert record is not None
    return record, pids


def expected_rows(record: MapRecord) -> set[str]:
    rows = {c.worker for c in record.chunks if c.where in ("pool", "retry")}
    if any(c.where == "caller" for c in record.chunks):
        rows.add("caller")
    return rows


def assert_timeline_matches(record: MapRecord, html: str) -> SvgCensus:
    found = census(html)
    assert len(found.rows) == len(set(found.rows)) == len(expected_rows(record))
    assert set(found.rows) == expected_rows(record)
    assert len(found.chunks) == record.n_chunks
    assert sorted(int(i) for i, _ in found.chunks) == sorted(c.index for c in record.chunks)
    rows_of: dict[str, set[str]] = {}  # a chunk that handed back items comes back in pieces of one index
    for c in record.chunks:
        rows_of.setdefault(str(c.index), set()).add(c.worker if c.where in ("pool", "retry") else "caller")
    for index, row in found.chunks:
        assert row in rows_of[index], f"chunk {index} drawn in the wrong row"
    assert len(found.waits) == sum(c.start_ns > c.submit_ns > 0 for c in record.chunks)
    return found


def assert_self_contained(html: str) -> None:
    lowered = html.lower()
    for banned in ("<script", "javascript:", "onload=", "onclick=", "<link", "@import", "src=", "http://",
                   "https://"):
        assert banned not in lowered, banned
    assert lowered.count("url(") == lowered.count("url(#"), "only in-document references (the hatch pattern)"


def test_processes_timeline_has_one_row_per_pool_worker_and_one_rect_per_chunk() -> None:
    record, pids = run("processes", tasks.sleep_then_square, list(range(200)), max_workers=2, **FORCE)
    assert record.selected_strategy == "processes"
    assert record.workers == 2
    pool_workers = {c.worker for c in record.chunks if c.where == "pool"}
    assert len(pool_workers) == 2, "sleeping items keep both workers busy"
    assert {w.split(":")[0] for w in pool_workers} == {str(p) for p in pids}
    html = record_html(record)
    found = assert_timeline_matches(record, html)
    assert len(found.rows) == 2 + any(c.where != "pool" for c in record.chunks)
    assert_self_contained(html)
    for pid in pids:
        assert f"pid {pid}" in html


def test_threads_timeline_labels_threads_of_one_process() -> None:
    record, _ = run("threads", tasks.sleep_then_square, list(range(120)), max_workers=2, **FORCE)
    assert record.selected_strategy == "threads"
    html = record_html(record)
    assert_timeline_matches(record, html)
    assert "thread ..." in html
    assert_self_contained(html)


def test_serial_run_is_one_caller_row() -> None:
    record, _ = run("serial", tasks.spin, list(range(100)), **FORCE)
    found = assert_timeline_matches(record, record_html(record))
    assert found.rows == ["caller"]


def test_retry_after_a_dead_worker_goes_on_the_fresh_workers_rows(tmp_path: Path) -> None:
    items = [(i, os.getpid(), str(tmp_path / "died")) for i in range(40)]
    with pytest.warns(ParallelFallbackWarning, match="map_failure_retry"):
        record, _ = run("processes", tasks.die_once_in_worker, items, max_workers=2, **FORCE)  # type: ignore[arg-type]
    assert record.fallback_reason is not None
    assert record.fallback_reason.value == "map_failure_retry"
    retried = [c for c in record.chunks if c.where == "retry"]
    assert retried and all(int(c.worker.split(":")[0]) != os.getpid() for c in retried)
    html = record_html(record)
    assert_timeline_matches(record, html)
    assert "What to do:" in html


def test_a_call_that_recovered_from_a_dead_worker_is_not_reported_as_a_fallback(tmp_path: Path) -> None:
    """It stayed parallel (the retry ran in fresh workers): the reports say it recovered, not that it fell back.

    They used to count it among the calls that fell back ("1 parallel (1 paid off), 1 fell back") and give
    it the verdict "fell back: map_failure_retry" and a "Ran serially" box, though it ran on two workers.
    """
    items = [(i, os.getpid(), str(tmp_path / "died")) for i in range(40)]
    with pytest.warns(ParallelFallbackWarning, match="map_failure_retry"):
        record, _ = run("processes", tasks.die_once_in_worker, items, max_workers=2, **FORCE)  # type: ignore[arg-type]
    assert record.fallback_reason is not None and record.fallback_reason.value == "map_failure_retry"
    assert record.mode == "parallel" and not record.fell_back
    report = render_text([record])
    assert ", 0 fell back" in report and "1 recovered: map_failure_retry x1" in report
    assert "fell back:" not in report and "recovered:" in report
    assert "after map_failure_retry" in report  # the row's verdict names what it survived
    html = record_html(record)
    assert "fell back" not in html and "Ran serially" not in html
    assert "Recovered: map_failure_retry" in html and "What to do:" in html


def test_text_report_shows_verdict_and_fallback_advice() -> None:
    with pytest.warns(ParallelFallbackWarning, match="tiny_workload"):
        record, _ = run("processes", tasks.square, list(range(5)), tiny_workload_threshold=1.0)
    assert record.fallback_reason is not None, "five trivial items are a tiny workload"
    reason = record.fallback_reason
    report = render_text([record])
    assert record.summary() in report
    assert f"fallback: {reason.value} - {reason.meaning}" in report
    # the record's own advice: the reason's, or, where its items took 3x the cost earlier tests taught
    # (a stalled CI host), that the estimate was overturned
    assert f"advice:   {advice_of(record)}" in report
    assert f"1 call, 0 parallel (0 paid off), 1 fell back: {reason.value} x1" in report
    assert "<" not in report, "plain text, no markup"
    assert report.isascii()


def test_text_report_table_has_one_row_per_call_and_an_aggregate() -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.sleep_then_square, range(60))
        ex.map(tasks.spin, range(60), workload="spin")
    with ParallelExecutor(ParallelConfig(enabled=False)) as off:
        off.map(tasks.square, range(10))
    records = [*ex.records, *off.records]
    report = render_text(records)
    assert report.startswith("payoff report: 3 calls, 2 parallel (")
    assert "1 fell back: disabled x1" in report
    for record in records:
        assert record.summary() in report
        assert f"{record.speedup:.2f}x" in report
    table = report.split("\n\n")[1].splitlines()
    assert table[0].split()[:4] == ["call", "workload", "strategy", "workers"]
    assert len(table) == 2 + len(records)
    assert len(table[1]) == max(len(line) for line in table), "the rule spans the table"
    assert record_text(records[0]).splitlines()[0].startswith("call  workload")
    assert "overhead: " in record_text(records[0])


def test_a_report_of_two_executors_numbers_calls_in_order_in_table_text_and_html() -> None:
    """Call ids restart in every executor and process: a records file of two processes read 1, 2, 4, 3, 1 in the
    table while the sections said "Call 3 (call_id 4)". Rows and sections now show one numbering, with the
    call id beside it where they differ."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as first, \
            ParallelExecutor(ParallelConfig(strategy="serial")) as second:
        first.map(tasks.square, range(3))
        first.map(tasks.square, range(4))
        second.map(tasks.square, range(5))
    records = [*first.records, *second.records]
    assert [r.call_id for r in records] == [1, 2, 1]
    table = render_text(records).split("\n\n")[1].splitlines()[2:]
    assert [line.split()[0] for line in table] == ["1", "2", "3"]
    assert "call 3 (call_id 1): " in render_text(records)
    page = render_html(records)
    for i in range(3):
        assert f'<a href="#call-{i}">{i + 1}</a>' in page
        assert f"Call {i + 1} " in page


def test_two_report_fragments_in_one_notebook_link_each_to_its_own_sections() -> None:
    """Every report used ids ``call-0``, ``call-1``...: two reports shown in one notebook had the same ids, and
    a link in the second's table jumped to the first's section."""
    import re

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(3))
        ex.map(tasks.square, range(4))
    fragments = [render_html(ex.records, full_page=False) for _ in range(2)]
    ids = [set(re.findall(r' id="([^"]+)"', f)) - set(re.findall(r'id="(payoff-hatch-[^"]+)"', f))
           for f in fragments]  # a record's hatch pattern is the same drawing in both: one id for it is right
    links = [set(re.findall(r'href="#([^"]+)"', f)) for f in fragments]
    for own_ids, own_links in zip(ids, links, strict=True):
        assert len(own_links) == 2 and own_links <= own_ids  # each table links to its own sections
    assert not (ids[0] & ids[1]), ids


def test_html_report_has_verdict_table_sections_and_no_script() -> None:
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.sleep_then_square, range(100))
    with ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=1.0)) as fb, \
            pytest.warns(ParallelFallbackWarning):
        fb.map(tasks.square, range(5))
    records = [*ex.records, *fb.records]
    page = render_html(records)
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    found = census(page)
    assert found.sections == 2
    assert len(found.chunks) == sum(r.n_chunks for r in records)
    assert 'class="overview"' in page
    assert "fell back: tiny_workload" in page
    assert "does not pay off" in page or "pays off" in page


def test_user_text_is_escaped() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(3), workload="<img src=x onerror=alert(1)>&")
    record = ex.last_record
    assert record is not None
    for html in (record_html(record), render_html([record])):
        assert "<img" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;&amp;" in html


def test_a_librarys_words_for_its_items_are_on_the_items_card_and_in_the_text() -> None:
    """A CE record's head says "50 instances in 2 tasks"; its card said only "items 7" (the core's tasks)."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(7))
    record = ex.last_record
    assert record is not None
    said = dataclasses.replace(record, items_said="50 instances in 2 tasks")
    assert "50 instances in 2 tasks; 1 chunk of ~7" in record_html(said)
    assert "50 instances in 2 tasks" in record_text(said)


def test_report_object_for_notebooks_and_files(tmp_path: Path) -> None:
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE)) as ex:
        ex.map(tasks.sleep_then_square, range(40))
        ex.map(tasks.square, range(40))
    report = Report(ex.records, title="two calls")
    assert len(report) == 2
    assert list(report) == list(ex.records)
    assert str(report) == render_text(list(ex.records))
    fragment = report._repr_html_()
    assert fragment.startswith('<div class="payoff-report">')
    assert "<html" not in fragment
    assert census(fragment).sections == 2
    written = report.to_html(tmp_path / "report.html")
    page = Path(written).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>two calls</title>" in page
    assert repr(report) == str(report), "a plain python prompt shows the table"


@pytest.mark.parametrize("render", [render_text, render_html])
def test_empty_report_says_so(render: object) -> None:
    assert "No calls recorded" in render([]) or "no calls recorded" in render([])  # type: ignore[operator]


def test_report_displays_as_html_in_a_real_notebook() -> None:
    try:
        import nbclient
        import nbformat
    except ImportError:
        nbclient = nbformat = None
    require(nbclient is not None, "nbclient + ipykernel (the notebook extra) to execute a notebook")
    source = ("from payoff import ParallelConfig, ParallelExecutor\n"
              "from payoff.report import Report\n"
              "from tests import tasks\n"
              "config = ParallelConfig(strategy='threads', max_workers=2, tiny_workload_threshold=0.0)\n"
              "with ParallelExecutor(config) as ex:\n"
              "    ex.map(tasks.sleep_then_square, range(40))\n"
              "Report(ex.records)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = nb.cells[0].outputs
    html = next(o["data"]["text/html"] for o in outputs if o.get("output_type") == "execute_result")
    assert html.startswith('<div class="payoff-report">')
    assert census(html).sections == 1
    assert "<script" not in html


def _timed_out_record() -> MapRecord:
    """A processes call whose timeout struck before any chunk came back (what the executor records)."""
    rec = RecordBuilder(7, "slow", "processes", None, 4, time.monotonic_ns(), time.time())
    rec.selected, rec.workers = "processes", 2
    return rec.build(TimeoutError("payoff: the map did not finish within timeout=0.2 s"))


def test_text_report_does_not_judge_a_call_that_timed_out() -> None:
    record = _timed_out_record()
    report = render_text([record])
    row = report.split("\n\n")[1].splitlines()[2]
    assert "timed out" in row, row
    assert "pay off" not in report, "a call that did not complete is neither a gain nor a loss"
    assert "0.00x" not in row and "infx" not in report
    assert record.summary() in report
    assert "1 call, 1 parallel (0 paid off), 0 fell back; 1 did not complete: timeout x1" in report


def test_html_report_does_not_judge_a_call_that_timed_out() -> None:
    record = _timed_out_record()
    page = render_html([record])
    assert "pay off" not in page
    assert "timed out" in page
    assert 'class="badge bad"' not in page and 'class="fact bad"' not in page and 'class="fact good"' not in page
    assert "0.00x" not in page and "infx" not in page
    assert_self_contained(page)


def test_a_parallel_call_with_no_measured_work_is_not_judged() -> None:
    """No chunk came back (a record from before the executor said why): no evidence either way."""
    rec = RecordBuilder(8, "none", "processes", None, 4, time.monotonic_ns(), time.time())
    rec.selected, rec.workers = "processes", 2
    record = rec.build()
    assert "pay off" not in render_text([record]) and "pay off" not in render_html([record])
    assert "no work measured" in render_text([record])


def test_an_executors_report_can_show_only_its_last_calls() -> None:
    """A notebook cell showing ``ex.report()`` after 300 maps held 3.4 MB of HTML (notebook trial); the
    command line had ``--last N``, the method had only ``title=``."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for n in range(1, 8):
            ex.map(tasks.square, range(n))
        short, whole = ex.report(last=3), ex.report()
        with pytest.raises(ValueError, match="last must be an int >= 1"):
            ex.report(last=0)
    assert [r.n_items for r in short.records] == [5, 6, 7] and len(whole.records) == 7
    assert len(short._repr_html_()) < len(whole._repr_html_())


def test_a_notebooks_report_details_its_last_calls_and_lists_them_all() -> None:
    """``ex.report()`` in a notebook cell after 300 maps held 3.5 MB of HTML, ~14 KB a call, saved in the
    notebook (hunt 71). The cell's table lists every call; its sections, with their timelines, are the last
    calls'; the page ``to_html`` writes keeps them all."""
    from payoff.report.html import NOTEBOOK_SECTIONS

    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for n in range(NOTEBOOK_SECTIONS + 5):
            ex.map(tasks.square, range(n + 1))
        report = ex.report()
    fragment = report._repr_html_()
    assert census(fragment).sections == NOTEBOOK_SECTIONS
    assert fragment.count("<tr>") - 1 >= NOTEBOOK_SECTIONS + 5  # the overview's rows, its header not counted
    assert "to_html" in fragment
    assert census(render_html(report.records)).sections == NOTEBOOK_SECTIONS + 5
