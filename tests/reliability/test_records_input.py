"""Records files are untrusted input: ``payoff report`` must survive any file and never inject markup.

A records file can come from anywhere (an attachment on an issue, a shared
directory, a truncated write after a full disk), so every damaged or crafted
line must end in one of two outcomes: a report of the good lines with a
one-line warning per bad line, or a one-line error and exit status 2.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from payoff import MapRecord, ParallelConfig, ParallelExecutor
from payoff.report import cli, render_html, render_text
from payoff.report.cli import main_report
from payoff.telemetry import records as records_module
from payoff.telemetry.records import (
    InvalidRecord,
    LineProblem,
    RecordsFile,
    RecordsFileError,
    load_records,
    read_records,
    record_from_dict,
    record_line,
)
from tests import tasks

SCRIPT = "<script>alert(1)</script>"


@functools.cache
def real_lines() -> tuple[str, ...]:
    """Three real records (different item counts) as the writer writes them, without the newline."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        for n in (3, 5, 8):
            ex.map(tasks.square, range(n))
    return tuple(record_line(r).rstrip("\n") for r in ex.records)


def real_dict(i: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(real_lines()[i])
    return data


def changed(path: str, value: Any, i: int = 0) -> str:
    """A real record line with one field (``chunks.0.index`` style path) replaced."""
    data = real_dict(i)
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value
    return json.dumps(data)


def without(key: str) -> str:
    data = real_dict()
    del data[key]
    return json.dumps(data)


@dataclass
class Outcome:
    status: int
    out: str
    err: str
    html: str | None


def run_report(records: Path, *extra: str) -> Outcome:
    """``payoff report`` in-process; stdout and stderr captured without pytest fixtures (hypothesis-safe)."""
    html_path = records.with_suffix(".html")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        page = [] if "--text" in extra else ["-o", str(html_path)]  # the text report to standard output
        status = main_report([str(records), *page, *extra])
    html = html_path.read_text(encoding="utf-8") if html_path.exists() else None
    return Outcome(status, out.getvalue(), err.getvalue(), html)


def assert_allowed(outcome: Outcome) -> None:
    """A report (no script from the data), or a one-line error and status 2; each message one line."""
    lines = outcome.err.splitlines()
    assert "Traceback" not in outcome.err
    assert all(line.startswith("payoff report: ") for line in lines), lines
    if outcome.status == 0:
        assert outcome.html is not None or outcome.out.startswith("payoff report: "), "a page or the text report"
        assert "<script" not in (outcome.html or "").lower()
    else:
        assert outcome.status == 2
        assert lines[-1].startswith("payoff report: error: "), lines


def write(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines))
    return path


# -- fault 1: fields reach the HTML unescaped ----------------------------------------------------------

@pytest.mark.parametrize("field", ["call_id", "chunks.0.index"])
def test_crafted_number_fields_never_reach_html(tmp_path: Path, field: str) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], changed(field, f'1"><{SCRIPT[1:]}'))
    outcome = run_report(records)
    assert_allowed(outcome)
    assert outcome.status == 0, outcome.err
    assert "calls.jsonl line 2: " in outcome.err
    assert outcome.html is not None
    assert outcome.html.count('<section class="call"') == 1


@pytest.mark.parametrize("field", ["workload", "requested_strategy", "selected_strategy", "fallback_detail",
                                   "chunks.0.worker"])
def test_crafted_text_fields_are_escaped(tmp_path: Path, field: str) -> None:
    data = json.loads(changed(field, f'"><{SCRIPT[1:]}'))
    data["fallback_reason"] = "tiny_workload"  # so fallback_detail is shown
    records = write(tmp_path / "calls.jsonl", json.dumps(data))
    outcome = run_report(records)
    assert_allowed(outcome)
    assert outcome.status == 0, outcome.err
    assert "&lt;script&gt;" in (outcome.html or "")


def test_crafted_overhead_phase_names_are_escaped(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", changed("overhead_seconds", {SCRIPT: 0.5}))
    outcome = run_report(records)
    assert outcome.status == 0, outcome.err
    assert "<script" not in (outcome.html or "<script")


# -- fault 2: damaged files crash with a traceback -----------------------------------------------------

DAMAGED: dict[str, Callable[[], str | bytes]] = {
    "n_items is a string": lambda: changed("n_items", "x"),
    "wall_seconds is null": lambda: changed("wall_seconds", None),
    "wall_seconds is NaN": lambda: changed("wall_seconds", float("nan")),
    "busy_seconds is Infinity": lambda: changed("busy_seconds", float("inf")),
    "cpu_seconds is negative": lambda: changed("cpu_seconds", -1.0),
    "workload is a dict": lambda: changed("workload", {"a": 1}),
    "workload is a list": lambda: changed("workload", [1, 2]),
    "call_id is a bool": lambda: changed("call_id", True),
    "call_id is a float": lambda: changed("call_id", 1.5),
    "n_chunks is negative": lambda: changed("n_chunks", -3),
    "start_ns is huge": lambda: changed("chunks.0.start_ns", 10**40),
    "end_ns is NaN": lambda: changed("chunks.0.end_ns", float("nan")),
    "chunk is a string": lambda: changed("chunks.0", "chunk"),
    "chunks is a dict": lambda: changed("chunks", {"0": {}}),
    "chunks is null": lambda: changed("chunks", None),
    "durations and block sizes differ in length": lambda: changed("chunks.0.block_sizes", [1]),
    "a duration is a string": lambda: changed("chunks.0.durations_ns", ["1", 2]),
    "chunk where is unknown": lambda: changed("chunks.0.where", "moon"),
    "overhead_seconds is a list": lambda: changed("overhead_seconds", [1, 2]),
    "an overhead is a string": lambda: changed("overhead_seconds", {"planning": "fast"}),
    "decision_reason is a number": lambda: changed("decision_reason", 7),
    "fallback_reason is unknown": lambda: changed("fallback_reason", "vibes"),
    "started_at is far future": lambda: changed("started_at", 1e300),
    "workload has a lone surrogate": lambda: changed("workload", "\ud800"),
    "int with 5000 digits": lambda: real_lines()[0].replace('"n_items":3', '"n_items":' + "9" * 5000),
    "deep list nesting": lambda: "[" * 100_000,
    "deep object nesting": lambda: '{"a":' * 100_000,
    "truncated line": lambda: real_lines()[0][: len(real_lines()[0]) // 2],
    "invalid UTF-8": lambda: b'{"workload": "\xff\xfe"}',
    "a JSON number": lambda: "42",
    "missing chunks": lambda: without("chunks"),
    "wrong format tag": lambda: changed("format", "payoff.records/99"),
}
"""Each a damaged line, built when a test runs (real records come from a real executor)."""


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_line_is_skipped_with_a_one_line_warning(tmp_path: Path, name: str) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], DAMAGED[name](), real_lines()[1])
    outcome = run_report(records)
    assert_allowed(outcome)
    assert outcome.status == 0, outcome.err
    warnings = outcome.err.splitlines()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"payoff report: {records} line 2: ")
    assert outcome.html is not None
    assert outcome.html.count('<section class="call"') == 2
    assert "(2 calls, 1 bad line skipped)" in outcome.out


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_file_of_only_damage_is_one_error_and_status_2(tmp_path: Path, name: str) -> None:
    records = write(tmp_path / "calls.jsonl", DAMAGED[name]())
    outcome = run_report(records)
    assert_allowed(outcome)
    assert outcome.status == 2
    assert outcome.html is None
    assert outcome.err.splitlines()[-1] == f"payoff report: error: {records}: no payoff records (1 bad line skipped)"


# -- fault 3: one bad line rejected the whole file; the message names file, line and field -------------

def test_a_bad_field_is_named_and_the_good_lines_are_still_reported(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], "", real_lines()[1], changed("n_items", "x"),
                    real_lines()[2])
    outcome = run_report(records)
    assert outcome.status == 0
    assert outcome.err == f"payoff report: {records} line 4: n_items must be an int >= 0, got 'x'\n"
    assert outcome.html is not None
    assert outcome.html.count('<section class="call"') == 3
    text = run_report(records, "--text")
    assert text.status == 0
    assert text.out.startswith("payoff report: 3 calls")


def test_chunk_fields_are_named_with_their_chunk(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], changed("chunks.0.index", SCRIPT))
    outcome = run_report(records)
    assert outcome.status == 0
    assert outcome.err == (f"payoff report: {records} line 2: chunks[0].index must be an int >= 0, "
                           f"got '<script>alert(1)</script>'\n")


def test_an_empty_file_is_unusable(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", "", "  ")
    outcome = run_report(records)
    assert outcome.status == 2
    assert outcome.err == f"payoff report: error: {records}: no payoff records\n"


def test_many_bad_lines_are_counted_not_listed(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], *["garbage"] * (cli.MAX_WARNINGS + 5))
    outcome = run_report(records)
    assert outcome.status == 0
    lines = outcome.err.splitlines()
    assert len(lines) == cli.MAX_WARNINGS + 1
    assert lines[-1] == f"payoff report: {records}: 5 more bad lines skipped"
    assert f"(1 call, {cli.MAX_WARNINGS + 5} bad lines skipped)" in outcome.out


def test_an_overlong_line_is_skipped_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "MAX_LINE_BYTES", max(len(line) for line in real_lines()[:2]) + 10)
    records = write(tmp_path / "calls.jsonl", real_lines()[0], "x" * 100_000, real_lines()[1])
    found = read_records(records)
    assert len(found.records) == 2
    assert [(p.lineno, p.field) for p in found.problems] == [(2, None)]
    assert "longer than" in found.problems[0].message


def test_missing_files_and_directories_are_one_error(tmp_path: Path) -> None:
    for path, why in ((tmp_path / "nope.jsonl", "records file not found"), (tmp_path, "records file is a directory")):
        outcome = run_report(path)
        assert outcome.status == 2
        assert outcome.err == f"payoff report: error: {why}: {path}\n"


# -- the library API: read_records keeps going, load_records stays all-or-nothing -----------------------

def test_read_records_returns_the_good_records_and_each_problem(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", real_lines()[0], changed("chunks.0.where", "moon"), "{", "",
                    real_lines()[2])
    found = read_records(records)
    assert [r.n_items for r in found.records] == [3, 8]
    assert found.problems == [
        LineProblem(str(records), 2, "chunks[0].where must be one of 'caller', 'pool', 'retry', got 'moon'",
                    "chunks[0].where"),
        LineProblem(str(records), 3, "not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ]
    assert str(found.problems[1]).startswith(f"{records} line 3: not valid JSON")
    with pytest.raises(RecordsFileError, match=r"line 2: not a payoff record: chunks\[0\]\.where") as caught:
        load_records(records)
    assert caught.value.problem == found.problems[0]


def test_record_from_dict_names_the_bad_field() -> None:
    data = real_dict()
    assert record_from_dict(data).n_items == 3
    data["chunks"][0]["durations_ns"] = [1, True]
    with pytest.raises(InvalidRecord, match=r"chunks\[0\]\.durations_ns\[1\] must be an int >= 0, got true") as caught:
        record_from_dict(data)
    assert caught.value.field == "chunks[0].durations_ns[1]"


def test_a_json_int_is_read_as_seconds_and_a_bool_is_not() -> None:
    assert record_from_dict({**real_dict(), "wall_seconds": 2}).wall_seconds == 2.0
    with pytest.raises(InvalidRecord, match="wall_seconds must be a finite number >= 0, got true"):
        record_from_dict({**real_dict(), "wall_seconds": True})


# -- text output cannot be steered by control characters ------------------------------------------------

def test_control_characters_do_not_reach_the_terminal(tmp_path: Path) -> None:
    records = write(tmp_path / "calls.jsonl", changed("workload", "\x1b[2J\rfake\nline\u202e"))
    outcome = run_report(records, "--text")
    assert outcome.status == 0
    assert "\x1b" not in outcome.out
    assert "\r" not in outcome.out
    assert "\u202e" not in outcome.out
    assert "fake\nline" not in outcome.out
    assert "\\x1b[2J\\rfake\\nline\\u202e" in outcome.out


def test_text_report_survives_a_terminal_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = write(tmp_path / "calls.jsonl", changed("workload", "donn\u00e9es"))
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    assert main_report([str(records), "--text"]) == 0
    stream.flush()
    assert "donn\\xe9es" in raw.getvalue().decode("ascii")


# -- renderers escape whatever a library caller hands them ---------------------------------------------

def test_renderers_escape_values_whatever_their_type() -> None:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(4))
    record = ex.records[0]
    chunk = replace(record.chunks[0], index=SCRIPT)  # type: ignore[arg-type]  # deliberately mistyped
    hostile = replace(record, call_id=SCRIPT, chunks=(chunk,), n_errors=SCRIPT)  # type: ignore[arg-type]
    page = render_html([hostile])
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page


def test_calls_from_several_executors_get_distinct_titles() -> None:
    records: list[MapRecord] = []
    for _ in range(2):
        with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
            ex.map(tasks.square, range(4))
        records.extend(ex.records)
    assert [r.call_id for r in records] == [1, 1]
    page = render_html(records)
    assert "<h2>Call 1 <" in page
    assert "<h2>Call 2 <" in page


# -- fault 4: the writer creates the file 0600 and refuses symlinks -------------------------------------

def one_call(sink: RecordsFile) -> list[int]:
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[sink]) as ex:
        return ex.map(tasks.square, range(4))


def test_the_records_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    one_call(RecordsFile(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(load_records(path)) == 1


def test_a_symlink_at_the_path_is_not_written_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "calls.jsonl"
    link.symlink_to(target)
    sink = RecordsFile(link)
    with caplog.at_level(logging.WARNING, logger="payoff"):
        assert one_call(sink) == [0, 1, 4, 9]
        assert one_call(sink) == [0, 1, 4, 9]
    assert target.read_text() == "keep me\n"
    assert link.is_symlink()
    complaints = [r for r in caplog.records if "records file" in r.getMessage()]
    assert len(complaints) == 1


def test_a_fifo_at_the_path_never_blocks_a_map(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / "calls.jsonl"
    os.mkfifo(fifo)
    results: list[list[int]] = []
    with caplog.at_level(logging.WARNING, logger="payoff"):
        thread = threading.Thread(target=lambda: results.append(one_call(RecordsFile(fifo))), daemon=True)
        thread.start()
        thread.join(timeout=120)  # a safety net for the old behaviour (blocked forever), not a timing assertion
    assert results == [[0, 1, 4, 9]]
    assert any("records file" in r.getMessage() for r in caplog.records)


# -- fault 5: fuzzing ----------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from([SCRIPT, '"><script>x</script>', "</title><script>", "'><svg onload=alert(1)>",
                                "\x1b[31m", "\ud800", "a\nb", "&amp;"])
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.just("__HUGE_INT__"),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), HOSTILE_TEXT,
)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=3), max_leaves=6)


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    """One line: a real record with a field dropped or replaced, or broken text, or left as it was."""
    data = real_dict(draw(st.integers(0, 2)))
    kind = draw(st.sampled_from(["keep", "drop", "replace", "chunk", "truncate", "bytes", "nest", "utf8"]))
    event(f"line: {kind}")
    if kind == "drop":
        del data[draw(st.sampled_from(sorted(data)))]
    elif kind == "replace":
        data[draw(st.sampled_from(sorted(data)))] = draw(VALUES)
    elif kind == "chunk":
        data["chunks"][0][draw(st.sampled_from(sorted(data["chunks"][0])))] = draw(VALUES)
    line = json.dumps(data).replace('"__HUGE_INT__"', "7" * 5000).encode("utf-8", "surrogatepass")
    if kind == "truncate":
        return line[: draw(st.integers(0, len(line) - 1))]
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if kind == "nest":
        return draw(st.sampled_from([b"[", b'{"a":', b'{"chunks":['])) * draw(st.integers(1, 100_000))
    if kind == "utf8":
        cut = draw(st.integers(0, len(line)))
        return line[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + line[cut:]
    return line


def load_leniently(path: Path) -> list[Any]:
    try:
        return list(load_records(path))
    except RecordsFileError:
        return []


@settings(max_examples=600, deadline=1000, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(mutated_line(), min_size=1, max_size=4))
def test_fuzzed_records_files_give_a_report_or_one_error(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = write(Path(tmp) / "calls.jsonl", *lines)
        loaded = load_leniently(records)
        assert all(line.isprintable() for line in render_text(loaded).split("\n"))
        assert "<script" not in render_html(loaded).lower()
        outcome = run_report(records)
        assert_allowed(outcome)
        assert_allowed(run_report(records, "--text"))
        event(f"exit status {outcome.status}")
