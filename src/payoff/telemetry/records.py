"""The records file: every MapRecord as one JSON line, for reports without Grafana.

Set ``PAYOFF_RECORDS=/path/calls.jsonl`` and each call appends its record;
``payoff report`` turns the file into one HTML page. A JSON line per call keeps
appends atomic enough for several processes sharing one file, and the file
readable with ``jq`` or pandas. Writing never raises into a map: a full disk
or a bad path costs the file a line, never the user their results. The file is
created private (0600) and never written through a symlink at its path.

Reading treats the file as untrusted input (see the section on reading below):
``read_records`` checks every field and skips a bad line, naming it, instead
of rejecting the whole file or letting a crafted value reach a report.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from payoff import _forks
from payoff.observers import CallInfo, Observer
from payoff.reasons import Reason
from payoff.record import OUTCOMES, ChunkStats, MapRecord, Summary, coarser_blocks

ENV_VAR = "PAYOFF_RECORDS"
FORMAT = "payoff.records/1"
"""Written in every line so a future layout can be told apart from this one."""

log = logging.getLogger("payoff")
_WRITE_LOCK = _forks.Lock()
"""One lock for every RecordsFile: lines from two executors sharing a path never interleave."""

_OPEN_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NONBLOCK", 0))
"""Append only; never through a symlink planted at the path (O_NOFOLLOW), never inherited by a child
process (O_CLOEXEC), never stuck opening a FIFO nobody reads (O_NONBLOCK fails with ENXIO instead;
it changes nothing for the regular file this must be)."""
FILE_BLOCKS = 64
"""Timing blocks a line keeps per chunk, neighbours summed: items of 0.3 ms or more are timed one by one, and a
call of 20,000 of them wrote a line of 225 KB. The percentiles the line carries are the whole record's."""
FILE_MODE = 0o600
"""Records name workloads, worker pids and timings: a new file is readable by its owner only."""


def record_line(record: MapRecord) -> str:
    """The record as one JSON line: ``to_dict()`` (derived values included, for readers) plus a format tag."""
    data = {"format": FORMAT, **record.to_dict()}
    for chunk in data["chunks"]:
        if len(chunk["durations_ns"]) > FILE_BLOCKS:
            chunk["durations_ns"], chunk["block_sizes"] = coarser_blocks(chunk["durations_ns"], chunk["block_sizes"],
                                                                         FILE_BLOCKS)
    return json.dumps(data, separators=(",", ":"), default=str) + "\n"


class RecordsFile(Observer):
    """Appends one JSON line per finished call to ``path``.

    A new file is created 0600. A symlink, FIFO or device at ``path`` is refused
    like any other OS error: logged once, the line dropped, the map unaffected.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._failed = False

    def __repr__(self) -> str:
        return f"RecordsFile({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordsFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash((RecordsFile, self.path))

    def map_finished(self, call: CallInfo, record: MapRecord, error: BaseException | None) -> None:
        try:
            self.append(record)
        except Exception as exc:  # a report line is never worth a failed map
            self._complain(exc)

    def append(self, record: MapRecord) -> None:
        """One ``write`` of the whole line in append mode, so concurrent writers never split a line."""
        data = record_line(record).encode("utf-8")
        with _WRITE_LOCK:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = _open_for_append(self.path)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)

    def _complain(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning("payoff could not append to the records file %s (further failures not logged): %r",
                        self.path, exc)


def _open_for_append(path: str) -> int:
    """An append descriptor for a regular file at ``path`` itself; OSError for a symlink, FIFO or device there."""
    try:
        fd = os.open(path, _OPEN_FLAGS, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "a symlink is at this path and records are never written through one",
                          path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def records_path_from_env() -> str:
    """``$PAYOFF_RECORDS``; "" when it is unset, empty or blank."""
    return os.environ.get(ENV_VAR, "").strip()


def records_observer_from_env() -> RecordsFile | None:
    """A RecordsFile for ``$PAYOFF_RECORDS``, or None when it is unset or empty."""
    path = records_path_from_env()
    return RecordsFile(path) if path else None


# -- reading: a records file is untrusted input --------------------------------------------------
#
# A records file travels: attached to an issue, copied off a shared disk, cut short by a full one.
# So every line is checked field by field before it becomes a MapRecord, and a bad line costs
# the report that line only. Checked records are what the renderers' arithmetic and markup rely
# on: ints are ints (never bools), counts and nanosecond stamps fit an int64, durations are finite
# and >= 0, strings are valid Unicode, reason codes and chunk kinds are known values.

_REASONS = {r.value: r for r in Reason}
WHERES = ("caller", "pool", "retry")
"""Where a chunk can run (``ChunkStats.where``); anything else is not a record this payoff wrote."""
MAX_COUNT = 2**63 - 1
"""Counts and nanosecond stamps fit an int64, so numpy summaries and float maths never overflow."""
MAX_UNIX_TIME = 253402214400.0
"""9999-12-31 UTC: the last day ``time.localtime`` and ``strftime`` handle on every platform."""
MAX_LINE_BYTES = 256 * 2**20
"""A longer line is skipped unread rather than held in memory (a real record is far smaller)."""
_SHOWN_CHARS = 40
_MISSING: Any = object()


class InvalidRecord(ValueError):
    """A line or dict is not a payoff record; ``field`` names the offending key (None: the line as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, str(self)))


@dataclass(frozen=True)
class LineProblem:
    """A skipped line of a records file: what ``payoff report`` prints as a one-line warning."""

    path: str
    lineno: int
    message: str
    """Names the field and what was wrong with it, e.g. ``n_items must be an int >= 0, got 'x'``."""
    field: str | None = None
    """The offending key (``n_items``, ``chunks[2].index``); None when the line is not a JSON record at all."""

    def __str__(self) -> str:
        return f"{self.path} line {self.lineno}: {self.message}"


class RecordsFileError(ValueError):
    """A line of a records file is not a payoff record; the message names the file and the line."""

    def __init__(self, problem: LineProblem) -> None:
        super().__init__(f"{problem.path}, line {problem.lineno}: not a payoff record: {problem.message}")
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem,))


class RecordsRead(NamedTuple):
    """What ``read_records`` found: the good records and the skipped lines, each in file order."""

    records: list[MapRecord]
    problems: list[LineProblem]


def _show(value: object) -> str:
    """A bad value as a message quotes it: one short line, JSON's names for JSON's types."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an int of {value.bit_length()} bits"
    text = repr(value[:_SHOWN_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def _count(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRecord(name, f"{name} must be an int >= 0, got {_show(value)}")
    if value > MAX_COUNT:
        raise InvalidRecord(name, f"{name} must be below 2**63, got {_show(value)}")
    return value


def _number(value: object, name: str, high: float = math.inf, what: str = "a finite number >= 0") -> float:
    """A float in [0, high], never NaN or infinite; a JSON int stands for its float (``1`` for ``1.0``)."""
    number = value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        number = float(value)
    if not isinstance(number, float) or not 0 <= number <= high or math.isinf(number):
        raise InvalidRecord(name, f"{name} must be {what}, got {_show(value)}")
    return number


def _contention(value: object, name: str) -> float:
    """Items' time side by side over their time alone: above 0 (it divides the estimate)."""
    number = _number(value, name, what="a finite number > 0")
    if number <= 0:
        raise InvalidRecord(name, f"{name} must be a finite number > 0, got {_show(value)}")
    return number


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(name, f"{name} must be a string, got {_show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: JSON allows "\ud800", no file or page can hold it
        raise InvalidRecord(name, f"{name} must be valid Unicode, got a lone surrogate at {exc.start}") from None
    return value


def _reason(value: object, name: str) -> Reason:
    if not isinstance(value, str) or value not in _REASONS:
        raise InvalidRecord(name, f"{name}: unknown reason code {_show(value)}")
    return _REASONS[value]


class _Fields:
    """Checked access to one JSON object's keys; every error names the key as ``label.key``."""

    def __init__(self, data: object, label: str = "") -> None:
        if not isinstance(data, dict):
            what = f"{label} must be a JSON object" if label else "expected a JSON object"
            raise InvalidRecord(label or None, f"{what}, got {_show(data)}")
        self.data: dict[str, Any] = data
        self.prefix = f"{label}." if label else ""

    def name(self, key: str) -> str:
        return self.prefix + key

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise InvalidRecord(self.name(key), f"missing key {self.name(key)!r}")
        return default

    def count(self, key: str, default: Any = _MISSING) -> int:
        return _count(self.raw(key, default), self.name(key))

    def seconds(self, key: str) -> float:
        return _number(self.raw(key), self.name(key))

    def text(self, key: str) -> str:
        return _text(self.raw(key), self.name(key))

    def optional_text(self, key: str) -> str | None:
        value = self.raw(key)
        return None if value is None else _text(value, self.name(key))

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise InvalidRecord(self.name(key), f"{self.name(key)} must be true or false, got {_show(value)}")
        return value

    def reason(self, key: str) -> Reason:
        return _reason(self.raw(key), self.name(key))

    def optional_reason(self, key: str) -> Reason | None:
        value = self.raw(key)
        return None if value is None else _reason(value, self.name(key))

    def counts(self, key: str) -> tuple[int, ...]:
        """A list of counts; absent means empty (lines from before timing blocks were recorded)."""
        value, name = self.raw(key, []), self.name(key)
        if not isinstance(value, list):
            raise InvalidRecord(name, f"{name} must be a list of ints >= 0, got {_show(value)}")
        return tuple(_count(v, f"{name}[{i}]") for i, v in enumerate(value))

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _MISSING) -> str:
        value, name = self.raw(key, default), self.name(key)
        if value not in allowed:
            raise InvalidRecord(name, f"{name} must be one of {', '.join(map(repr, allowed))}, got {_show(value)}")
        return str(value)


def reason(code: object) -> Reason:
    """The Reason a code names; ValueError for anything else (a number, an unknown or misspelt code)."""
    return _reason(code, "reason")


def chunk_from_dict(data: object, label: str = "chunk") -> ChunkStats:
    """Rebuild and check one ChunkStats; errors name the key as ``label.key`` (``chunks[2].index``)."""
    f = _Fields(data, label)
    chunk = ChunkStats(
        index=f.count("index"), first_item=f.count("first_item"), n_items=f.count("n_items"),
        worker=f.text("worker"), submit_ns=f.count("submit_ns"), start_ns=f.count("start_ns"),
        end_ns=f.count("end_ns"), cpu_ns=f.count("cpu_ns"), durations_ns=f.counts("durations_ns"),
        block_sizes=f.counts("block_sizes"), bytes_sent=f.count("bytes_sent"),
        bytes_received=f.count("bytes_received"), where=f.choice("where", WHERES), n_errors=f.count("n_errors", 0),
        runq_ns=f.count("runq_ns", 0), pieces=f.count("pieces", 1), warmup_ns=f.count("warmup_ns", 0),
        imports_ns=f.count("imports_ns", 0),
        blocked=None if f.raw("blocked", None) is None else f.count("blocked"),  # absent: unknown, or older lines
    )
    if chunk.pieces < 1:
        raise InvalidRecord(f.name("pieces"), f"{f.name('pieces')} must be at least 1 (the pieces a chunk stands "
                                              f"for), got {chunk.pieces}")
    if len(chunk.durations_ns) != len(chunk.block_sizes):  # item_times pairs them up
        raise InvalidRecord(f.name("block_sizes"), f"{f.name('block_sizes')} must hold one size per duration, got "
                                                   f"{len(chunk.block_sizes)} for {len(chunk.durations_ns)}")
    return chunk


def _chunks(value: object) -> tuple[ChunkStats, ...]:
    if not isinstance(value, list):
        raise InvalidRecord("chunks", f"chunks must be a list of chunk objects, got {_show(value)}")
    chunks = tuple(chunk_from_dict(c, f"chunks[{i}]") for i, c in enumerate(value))
    if sum(sum(c.block_sizes) for c in chunks) > MAX_COUNT:  # task_time sums them in an int64
        raise InvalidRecord("chunks", "chunks: the block_sizes add up to 2**63 items or more")
    return chunks


def _overhead(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        raise InvalidRecord("overhead_seconds", f"overhead_seconds must be an object of phase: seconds, "
                                                f"got {_show(value)}")
    return {_text(k, "overhead_seconds key"): _number(v, f"overhead_seconds[{_show(k)}]") for k, v in value.items()}


def _unix_time(value: object) -> float:
    return _number(value, "started_at", MAX_UNIX_TIME, f"a Unix time from 0 to {MAX_UNIX_TIME:.0f} (year 9999)")


def _check_format(f: _Fields) -> None:
    tag = f.raw("format", FORMAT)
    if tag != FORMAT:
        raise InvalidRecord("format", f"unknown format {_show(tag)} (this payoff reads {FORMAT!r})")


def record_from_dict(data: object) -> MapRecord:
    """Rebuild and check a MapRecord from ``to_dict()`` output; derived keys (speedup, ...) are recomputed,
    except ``task_time``: a line's timing blocks may be folded (``FILE_BLOCKS``), and the percentiles written
    with it are the whole record's (read back from the folded blocks, a 0.1 s item among 1 ms ones read 13 ms).

    Raises InvalidRecord (a ValueError) naming the first missing, mistyped or out-of-range field.
    """
    f = _Fields(data)
    _check_format(f)
    record = _record(f)
    written = f.raw("task_time", None)
    if isinstance(written, dict) and written.get("count") == sum(sum(c.block_sizes) for c in record.chunks):
        with contextlib.suppress(TypeError, ValueError):
            record.__dict__["task_time"] = Summary(
                count=_count(written["count"], "task_time.count"),
                **{k: _number(written.get(k), f"task_time.{k}") for k in ("mean", "p50", "p95", "max")})
    return record


def _record(f: _Fields) -> MapRecord:
    return MapRecord(
        call_id=f.count("call_id"), workload=f.text("workload"), requested_strategy=f.text("requested_strategy"),
        selected_strategy=f.text("selected_strategy"), decision_reason=f.reason("decision_reason"),
        fallback_reason=f.optional_reason("fallback_reason"), fallback_detail=f.text("fallback_detail"),
        granularity=f.optional_text("granularity"), n_items=f.count("n_items"), n_chunks=f.count("n_chunks"),
        chunk_size=f.count("chunk_size"), workers=f.count("workers"), pool_started=f.flag("pool_started"),
        pool_start_failed=f.flag("pool_start_failed"), pool_start_seconds=f.seconds("pool_start_seconds"),
        pool_reused=f.flag("pool_reused"), probe_items=f.count("probe_items"),
        wall_seconds=f.seconds("wall_seconds"), busy_seconds=f.seconds("busy_seconds"),
        cpu_seconds=f.seconds("cpu_seconds"), serial_estimate_seconds=f.seconds("serial_estimate_seconds"),
        overhead_seconds=_overhead(f.raw("overhead_seconds")), bytes_sent=f.count("bytes_sent"),
        bytes_received=f.count("bytes_received"), n_errors=f.count("n_errors"),
        started_at=_unix_time(f.raw("started_at")), chunks=_chunks(f.raw("chunks")),
        outcome=f.choice("outcome", OUTCOMES, "ok"),  # absent in lines written before outcomes were recorded
        consumer_seconds=_number(f.raw("consumer_seconds", 0.0), f.name("consumer_seconds")),
        input_seconds=_number(f.raw("input_seconds", 0.0), f.name("input_seconds")),  # absent before it was timed
        pool_shared=f.flag("pool_shared", False),  # absent in lines written before shared pools were recorded
        shared_seconds=_number(f.raw("shared_seconds", 0.0), f.name("shared_seconds")),
        pool_starts=f.count("pool_starts", 0),  # absent in lines written before restarts were counted
        gil_priced=f.flag("gil_priced", False),  # absent in lines written before GIL waits were sampled
        items_said=_text(f.raw("items_said", ""), f.name("items_said")),  # absent before libraries said items
        contention=_contention(f.raw("contention", 1.0), f.name("contention")),  # absent before it was measured
    )


def parse_line(line: str | bytes) -> MapRecord:
    """One line's record; InvalidRecord says why not (encoding, JSON syntax, nesting, or a field)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecord(None, f"not UTF-8 text (byte {line[exc.start]:#04x} at offset {exc.start})"
                                ) from None
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRecord(None, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidRecord(None, "not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an int past Python's digit limit
        raise InvalidRecord(None, f"not valid JSON: {str(exc).split(';')[0]}") from None
    return record_from_dict(data)


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) with the line ending dropped; None for a line over MAX_LINE_BYTES, skipped unread."""
    lineno = 0
    while line := fh.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield lineno, line.rstrip(b"\r\n")
            continue
        while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield lineno, None


def read_records(path: str | os.PathLike[str]) -> RecordsRead:
    """Every good record of a records file, and a LineProblem for every line skipped, in file order.

    Blank lines are skipped silently. Only a file that cannot be read at all
    raises (OSError: missing, a directory, no permission): one bad line never
    costs the rest of the file.
    """
    name = os.fspath(path)
    result = RecordsRead([], [])
    with open(path, "rb") as fh:
        for lineno, line in _lines(fh):
            if line is not None and not line.strip():
                continue
            try:
                if line is None:
                    raise InvalidRecord(None, f"longer than {MAX_LINE_BYTES:,} bytes")
                result.records.append(parse_line(line))
            except InvalidRecord as exc:
                result.problems.append(LineProblem(name, lineno, str(exc), exc.field))
    return result


def load_records(path: str | os.PathLike[str]) -> list[MapRecord]:
    """Every record in a records file, in file order, or an error: for callers that want all or nothing.

    Raises FileNotFoundError for a missing file and RecordsFileError naming
    the first bad line; ``read_records`` reports bad lines and keeps the rest.
    """
    records, problems = read_records(path)
    if problems:
        raise RecordsFileError(problems[0])
    return records


__all__ = ["ENV_VAR", "InvalidRecord", "LineProblem", "RecordsFile", "RecordsFileError", "RecordsRead",
           "load_records", "read_records", "record_from_dict", "record_line", "records_observer_from_env"]
