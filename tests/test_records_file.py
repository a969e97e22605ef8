"""The PAYOFF_RECORDS file: real calls appended as JSON lines, read back, and turned into a report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from payoff import MapRecord, ParallelConfig, ParallelExecutor
from payoff.report.cli import main_report
from payoff.telemetry.records import (
    RecordsFile,
    RecordsFileError,
    load_records,
    parse_line,
    record_from_dict,
    record_line,
    records_observer_from_env,
)
from tests import tasks

FORCE = {"tiny_workload_threshold": 0.0}
ROOT = Path(__file__).resolve().parents[1]


def recorded_calls(path: Path) -> list[MapRecord]:
    """Three real calls (processes, threads, a tiny-workload fallback) written through a RecordsFile."""
    sink = RecordsFile(path)
    records: list[MapRecord] = []
    with ParallelExecutor(ParallelConfig(strategy="processes", max_workers=2, **FORCE), observers=[sink]) as ex:
        ex.map(tasks.sleep_then_square, range(80))
        records.extend(ex.records)
    with ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE), observers=[sink]) as ex:
        ex.map(tasks.spin, range(80), workload="spin")
        records.extend(ex.records)
    with ParallelExecutor(ParallelConfig(strategy="processes", tiny_workload_threshold=1.0), observers=[sink]) as ex:
        ex.map(tasks.square, range(5))
        records.extend(ex.records)
    return records


def test_round_trip_rebuilds_equal_records(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    written = recorded_calls(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line, record in zip(lines, written, strict=True):
        data = json.loads(line)
        assert data["format"] == "payoff.records/1"
        assert data["speedup"] == record.speedup, "derived values are written for jq and pandas readers"
        assert len(data["chunks"]) == record.n_chunks
    loaded = load_records(path)
    assert loaded == written
    for got, want in zip(loaded, written, strict=True):
        assert got.queue_wait == want.queue_wait
        assert got.task_time == want.task_time
        assert got.summary() == want.summary()
        assert got.fallback_reason is want.fallback_reason
    assert loaded[2].fallback_reason is not None
    assert loaded[2].fallback_reason.value == "tiny_workload"


def test_a_librarys_words_for_its_items_survive_the_file(tmp_path: Path) -> None:
    """A calibrated-explanations call's record says "50 instances in 2 tasks"; read back it said "7 items"."""
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(7))
    said = dataclasses.replace(ex.records[-1], items_said="50 instances in 2 tasks")
    back = parse_line(record_line(said))
    assert back == said and back.summary().startswith("serial x1, 50 instances in 2 tasks (")
    old = json.loads(record_line(said))
    del old["items_said"]  # a line written before libraries said their items
    assert record_from_dict(old).items_said == ""


def test_observer_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("PAYOFF_RECORDS", str(path))
    observer = records_observer_from_env()
    assert observer == RecordsFile(path)
    assert observer is not None
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[observer]) as ex:
        ex.map(tasks.square, range(20))
    assert load_records(path) == list(ex.records)
    monkeypatch.setenv("PAYOFF_RECORDS", "  ")
    assert records_observer_from_env() is None
    monkeypatch.delenv("PAYOFF_RECORDS")
    assert records_observer_from_env() is None


def test_concurrent_calls_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "calls.jsonl"
    sinks = [RecordsFile(path), RecordsFile(path)]
    executors = [ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE), observers=[s])
                 for s in sinks]
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for _ in range(5):
            executors[n % 2].map(tasks.spin, range(40))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for ex in executors:
        ex.close()
    loaded = load_records(path)
    assert len(loaded) == 40
    assert sorted(r.call_id for r in loaded) == sorted([*range(1, 21), *range(1, 21)])


def test_an_unwritable_records_file_never_breaks_a_map(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    sink = RecordsFile(blocker / "calls.jsonl")
    with caplog.at_level(logging.WARNING, logger="payoff"), \
            ParallelExecutor(ParallelConfig(strategy="threads", max_workers=2, **FORCE), observers=[sink]) as ex:
        assert ex.map(tasks.square, range(30)) == [x * x for x in range(30)]
        assert ex.map(tasks.square, range(30)) == [x * x for x in range(30)]
    complaints = [r for r in caplog.records if "records file" in r.getMessage()]
    assert len(complaints) == 1, "logged once, not once per call"
    assert str(blocker) in complaints[0].getMessage()


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def a_record_line() -> str:
    with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
        ex.map(tasks.square, range(4))
    assert ex.last_record is not None
    return record_line(ex.last_record).rstrip("\n")


@pytest.mark.parametrize(("bad", "why"), [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "expected a JSON object"),
    ('{"call_id": 1}', "missing key"),
])
def test_a_bad_line_is_named(tmp_path: Path, bad: str, why: str) -> None:
    good = a_record_line()
    path = write_lines(tmp_path / "calls.jsonl", good, "", bad)
    with pytest.raises(RecordsFileError, match=rf"calls\.jsonl, line 3: not a payoff record: .*{why}"):
        load_records(path)


def test_an_unknown_reason_code_is_a_bad_line(tmp_path: Path) -> None:
    data = json.loads(a_record_line())
    data["decision_reason"] = "vibes"
    path = write_lines(tmp_path / "calls.jsonl", json.dumps(data))
    with pytest.raises(RecordsFileError, match=r"line 1: .*unknown reason code 'vibes'"):
        load_records(path)


@pytest.mark.parametrize("contention", [0, -1, "fast"])
def test_a_factor_side_by_side_of_zero_or_less_is_a_bad_line(tmp_path: Path, contention: object) -> None:
    """``MapRecord.contention`` divides the estimate: 1.0 (none measured), a slowdown or a speed-up."""
    data = json.loads(a_record_line())
    data["contention"] = contention
    path = write_lines(tmp_path / "calls.jsonl", json.dumps(data))
    with pytest.raises(RecordsFileError, match=r"line 1: .*contention must be a finite number > 0"):
        load_records(path)
    data["contention"] = 1.25
    assert load_records(write_lines(tmp_path / "ok.jsonl", json.dumps(data)))[0].contention == 1.25


def test_report_command_writes_one_self_contained_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "calls.jsonl"
    written = recorded_calls(records)
    out = tmp_path / "report.html"
    assert main_report([str(records), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert page.count('<section class="call"') == len(written)
    assert f"wrote {out} (3 calls)" in capsys.readouterr().out


def test_report_command_text_and_environment_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "calls.jsonl"
    written = recorded_calls(records)
    monkeypatch.setenv("PAYOFF_RECORDS", str(records))
    assert main_report(["--text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("payoff report: 3 calls")
    for record in written:
        assert record.summary() in out
    assert main_report(["--text", "--last", "1"]) == 0
    assert capsys.readouterr().out.startswith("payoff report: 1 call, 0 parallel (0 paid off), 1 fell back")
    text = tmp_path / "report.txt"  # -o with --text was ignored without a word (hunt 61)
    assert main_report(["--text", "-o", str(text)]) == 0
    assert text.read_text(encoding="utf-8") == out and f"wrote {text} (3 calls)" in capsys.readouterr().out
    assert main_report(["--text", "-o", str(records)]) == 2 and records.read_text().count("\n") == 3
    assert "is the records file" in capsys.readouterr().err
    assert main_report(["-o", ""]) == 2 and "empty path" in capsys.readouterr().err  # wrote ./payoff-report.html


def test_report_command_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PAYOFF_RECORDS", raising=False)
    missing = tmp_path / "nope.jsonl"
    assert main_report([str(missing)]) == 2
    assert f"records file not found: {missing}" in capsys.readouterr().err
    assert main_report([]) == 2
    assert "PAYOFF_RECORDS" in capsys.readouterr().err
    bad = write_lines(tmp_path / "bad.jsonl", a_record_line(), a_record_line(), "garbage")
    out = tmp_path / "report.html"
    assert main_report([str(bad), "-o", str(out)]) == 0, "a bad line is skipped, the good ones reported"
    err = capsys.readouterr().err
    assert err.startswith(f"payoff report: {bad} line 3: not valid JSON")
    assert "Traceback" not in err
    assert out.read_text(encoding="utf-8").count('<section class="call"') == 2
    garbage = write_lines(tmp_path / "garbage.jsonl", "garbage", "more garbage")
    never = tmp_path / "never.html"
    assert main_report([str(garbage), "-o", str(never)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"payoff report: error: {garbage}: no payoff records (2 bad lines skipped)"
    assert not never.exists()


def run_command(*args: str, env_records: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PAYOFF_RECORDS"}
    if env_records is not None:
        env["PAYOFF_RECORDS"] = str(env_records)
    return subprocess.run([sys.executable, "-m", "payoff.report.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT, check=False)


def test_report_command_as_a_process(tmp_path: Path) -> None:
    records = tmp_path / "calls.jsonl"
    recorded_calls(records)
    out = tmp_path / "out.html"
    done = run_command("-o", str(out), env_records=records)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").count('<section class="call"') == 3
    failed = run_command(str(tmp_path / "missing.jsonl"))
    assert failed.returncode == 2
    assert "missing.jsonl" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_report_command_refuses_to_write_over_its_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``payoff report calls.jsonl -o calls.jsonl`` replaced the records with the page and said "wrote"
    (helper 27, fault 6); a link to the records file is the same file."""
    records = tmp_path / "calls.jsonl"
    recorded_calls(records)
    before = records.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(records)
    for out in (records, link):
        assert main_report([str(records), "-o", str(out)]) == 2
        assert "is the records file" in capsys.readouterr().err
    assert records.read_bytes() == before


def test_a_line_keeps_a_bounded_number_of_timing_blocks_per_chunk(tmp_path: Path) -> None:
    """Items of 0.3 ms or more are timed one by one: a call of 20,000 wrote a line of 225 KB (the quickstart said
    2-5 KB a call), and a service's file grew by that per call. A line keeps at most ``FILE_BLOCKS`` blocks a
    chunk, neighbours summed (every item and nanosecond still counted); the percentiles written with it are the
    whole record's."""
    from payoff.telemetry.records import FILE_BLOCKS

    path = tmp_path / "calls.jsonl"
    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[RecordsFile(path)]) as ex:
        ex.map(tasks.nap_ms, [0.3] * 999 + [50])  # one dear item among them: the max a fold would average away
        record = ex.last_record
    assert record is not None and max(len(c.block_sizes) for c in record.chunks) > FILE_BLOCKS
    line = path.read_text(encoding="utf-8")
    data = json.loads(line)
    for written, chunk in zip(data["chunks"], record.chunks, strict=True):
        assert len(written["block_sizes"]) == len(written["durations_ns"]) <= FILE_BLOCKS
        assert sum(written["block_sizes"]) == sum(chunk.block_sizes) == chunk.n_items
        assert sum(written["durations_ns"]) == sum(chunk.durations_ns)
    assert data["task_time"] == dataclasses.asdict(record.task_time)
    assert len(line) < 20_000, len(line)
    loaded = load_records(path)[0]
    assert (loaded.n_items, loaded.n_chunks, loaded.serial_estimate_seconds) == \
        (record.n_items, record.n_chunks, record.serial_estimate_seconds)
    assert record.task_time.max >= 0.05
    assert loaded.task_time == record.task_time, "the report reads the line's percentiles, not the folded blocks'"
