"""``payoff report``: turn a records file into one HTML page (or a text table).

For users without Grafana: run with ``PAYOFF_RECORDS=calls.jsonl``, then
``payoff report`` writes a page they can open, attach to an issue or mail.

The records file is untrusted input: a bad line is skipped with a one-line
warning naming the file, line and field, and the good lines are still
reported. Exit status 2 means no report at all (no file, no good record).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from payoff.cli import write_stdout
from payoff.report import render_html, render_text
from payoff.telemetry.records import ENV_VAR, LineProblem, RecordsRead, read_records

DEFAULT_OUTPUT = "payoff-report.html"
USAGE_ERROR = 2
MAX_WARNINGS = 20
"""Skipped lines named one by one; past this, one line counts the rest (a garbage file must not flood)."""


class ReportError(Exception):
    """A problem the user can fix (missing file, nothing to report); printed without a traceback."""


def _help_text() -> str:
    """The module docstring as ``--help`` shows it: without reStructuredText's double backquotes."""
    return (__doc__ or "").replace("``", "")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("records", nargs="?", default=None,
                        help=f"records file (JSON lines) written by PAYOFF_RECORDS; default: ${ENV_VAR}")
    parser.add_argument("-o", "--output", default=None,
                        help=f"file to write (default: {DEFAULT_OUTPUT}; with --text, standard output)")
    parser.add_argument("--text", action="store_true", help="the text report instead of an HTML page")
    parser.add_argument("--last", type=int, default=None, metavar="N", help="only the last N calls")
    parser.add_argument("--title", default="payoff report", help="title of the HTML page")
    parser.set_defaults(handler=run_report)
    return parser


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the ``payoff`` command's subparsers (``argparse._SubParsersAction``)."""
    parser = subparsers.add_parser("report", help="write a self-contained HTML report from a records file",
                                   description=_help_text())
    return configure(parser)


def records_path(args: argparse.Namespace) -> str:
    path = args.records or os.environ.get(ENV_VAR, "").strip()
    if not path:
        raise ReportError(f"no records file: pass its path or set {ENV_VAR}")
    return str(path)


def say(message: str, stream: TextIO | None = None) -> None:
    """Write to stderr (or ``stream``) only what it can encode, the rest as escapes: a report never dies printing."""
    stream = stream or sys.stderr
    stream.write(_encodable(message, stream))


def _encodable(message: str, stream: TextIO) -> str:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return message.encode(encoding, "backslashreplace").decode(encoding)


def _to_stdout(text: str) -> None:
    """The text report, flushed now: a standard output that cannot take it (a full disk) is one error line."""
    problem = write_stdout(_encodable(text, sys.stdout))
    if problem is not None:
        raise ReportError(f"{problem}; redirect it where there is room, or leave out --text to write an HTML page "
                          "with -o")


def plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def warn_skipped(path: str, problems: Sequence[LineProblem]) -> None:
    for problem in problems[:MAX_WARNINGS]:
        say(f"payoff report: {problem}\n")
    if len(problems) > MAX_WARNINGS:
        say(f"payoff report: {path}: {plural(len(problems) - MAX_WARNINGS, 'more bad line')} skipped\n")


def read(path: str) -> RecordsRead:
    """The good records of ``path``, skipped lines warned about; ReportError when there is nothing to report."""
    try:
        found = read_records(path)
    except FileNotFoundError:
        raise ReportError(f"records file not found: {path}") from None
    except IsADirectoryError:
        raise ReportError(f"records file is a directory: {path}") from None
    except OSError as exc:
        raise ReportError(f"cannot read records file {path}: {exc.strerror or exc}") from None
    warn_skipped(path, found.problems)
    if not found.records:
        skipped = f" ({plural(len(found.problems), 'bad line')} skipped)" if found.problems else ""
        raise ReportError(f"{path}: no payoff records{skipped}")
    return found


def write(path: str, content: str) -> None:
    try:
        with open(path, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(content)
    except OSError as exc:
        raise ReportError(f"cannot write report {path}: {exc.strerror or exc}") from None


def _not_the_records(output: str, records: str) -> None:
    """Writing the page over the records file would lose every record it reports on."""
    try:
        same = os.path.samefile(output, records)
    except OSError:  # one of them does not exist (yet): the read says so, or the page is a new file
        same = False
    if same:
        raise ReportError(f"the output {output} is the records file {records}: the page would replace the "
                          "records; pass another -o path")


def run_report(args: argparse.Namespace) -> int:
    """The handler ``payoff report`` dispatches to.

    Exit 0 when a report was written, even if bad lines were skipped (each
    warned about on stderr); exit 2 with one ``error:`` line when there is no
    report to write: no file, no good record, a bad option, an unwritable output.
    """
    try:
        if args.last is not None and args.last < 1:
            raise ReportError(f"--last must be at least 1, got {args.last}")
        path = records_path(args)
        if args.output is not None and not args.output.strip():
            raise ReportError(f"-o {args.output!r} is an empty path; give a file, or leave out -o for "
                              f"{DEFAULT_OUTPUT} (or, with --text, standard output)")
        output = args.output or (None if args.text else DEFAULT_OUTPUT)  # --text -o FILE was ignored (hunt 61)
        if output is not None:
            _not_the_records(output, path)
        found = read(path)
        records = found.records[-args.last:] if args.last else found.records
        if output is None:
            _to_stdout(render_text(records))
            return 0
        write(output, render_text(records) if args.text else render_html(records, title=args.title))
    except ReportError as exc:
        say(f"payoff report: error: {exc}\n")
        return USAGE_ERROR
    skipped = f", {plural(len(found.problems), 'bad line')} skipped" if found.problems else ""
    say(f"payoff report: wrote {output} ({plural(len(records), 'call')}{skipped})\n", sys.stdout)
    return 0


def main_report(argv: Sequence[str] | None = None) -> int:
    """``payoff report`` on its own, for tests and ``python -m payoff.report.cli``."""
    parser = configure(argparse.ArgumentParser(prog="payoff report", description=_help_text()))
    return run_report(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_report())
