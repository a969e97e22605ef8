"""The records file: every MapRecord as one JSON line, for reports without Grafana.

Set ``PAYOFF_RECORDS=/path/calls.jsonl`` and each call appends its record;
``payoff report`` turns the file into one HTML page. A JSON line per call keeps
appends atomic enough for several processes sharing one file, and the file
readable with ``jq`` or pandas. Writing never raises into a map: a full disk
or a bad path costs the file a line, never the user their results.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import fields
from typing import Any

from payoff.observers import CallInfo, Observer
from payoff.reasons import Reason
from payoff.record import ChunkStats, MapRecord

ENV_VAR = "PAYOFF_RECORDS"
FORMAT = "payoff.records/1"
"""Written in every line so a future layout can be told apart from this one."""

log = logging.getLogger("payoff")
_WRITE_LOCK = threading.Lock()
"""One lock for every RecordsFile: lines from two executors sharing a path never interleave."""

_RECORD_FIELDS = tuple(f.name for f in fields(MapRecord))
_CHUNK_FIELDS = tuple(f.name for f in fields(ChunkStats))


class RecordsFileError(ValueError):
    """A line of a records file is not a payoff record; the message names the file and the line."""


def record_line(record: MapRecord) -> str:
    """The record as one JSON line: ``to_dict()`` (derived values included, for readers) plus a format tag."""
    data = {"format": FORMAT, **record.to_dict()}
    return json.dumps(data, separators=(",", ":"), default=str) + "\n"


class RecordsFile(Observer):
    """Appends one JSON line per finished call to ``path``."""

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
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)

    def _complain(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning("payoff could not append to the records file %s (further failures not logged): %r",
                        self.path, exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def records_observer_from_env() -> RecordsFile | None:
    """A RecordsFile for ``$PAYOFF_RECORDS``, or None when it is unset or empty."""
    path = os.environ.get(ENV_VAR, "").strip()
    return RecordsFile(path) if path else None


_REASONS = {r.value: r for r in Reason}


def reason(code: object) -> Reason:
    if not isinstance(code, str) or code not in _REASONS:
        raise ValueError(f"unknown reason code {code!r}")
    return _REASONS[code]


def chunk_from_dict(data: dict[str, Any]) -> ChunkStats:
    values = {name: data[name] for name in _CHUNK_FIELDS if name in data}
    values["durations_ns"] = tuple(values.get("durations_ns", ()))
    values["block_sizes"] = tuple(values.get("block_sizes", ()))
    return ChunkStats(**values)


def record_from_dict(data: dict[str, Any]) -> MapRecord:
    """Rebuild a MapRecord from ``to_dict()`` output; derived keys (speedup, queue_wait, ...) are ignored."""
    values = {name: data[name] for name in _RECORD_FIELDS}
    values["decision_reason"] = reason(values["decision_reason"])
    fallback = values["fallback_reason"]
    values["fallback_reason"] = reason(fallback) if fallback is not None else None
    values["overhead_seconds"] = {str(k): float(v) for k, v in values["overhead_seconds"].items()}
    values["chunks"] = tuple(chunk_from_dict(c) for c in values["chunks"])
    return MapRecord(**values)


def parse_line(line: str) -> MapRecord:
    data = json.loads(line)
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"unknown format {data['format']!r} (this payoff reads {FORMAT!r})")
    return record_from_dict(data)


def load_records(path: str | os.PathLike[str]) -> list[MapRecord]:
    """Every record in a records file, in file order; blank lines are skipped.

    Raises FileNotFoundError for a missing file and RecordsFileError naming
    the line for anything that is not a record.
    """
    records = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                records.append(parse_line(raw.decode("utf-8")))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise RecordsFileError(f"{os.fspath(path)}, line {lineno}: not a payoff record: "
                                       f"{_describe(exc)}") from exc
    return records


def _describe(exc: Exception) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)


__all__ = ["ENV_VAR", "RecordsFile", "RecordsFileError", "load_records", "record_from_dict", "record_line",
           "records_observer_from_env"]
