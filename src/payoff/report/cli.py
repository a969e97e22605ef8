"""``payoff report``: turn a records file into one HTML page (or a text table).

For users without Grafana: run with ``PAYOFF_RECORDS=calls.jsonl``, then
``payoff report`` writes a page they can open, attach to an issue or mail.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from payoff.record import MapRecord
from payoff.report import render_html, render_text
from payoff.telemetry.records import ENV_VAR, RecordsFileError, load_records

DEFAULT_OUTPUT = "payoff-report.html"
USAGE_ERROR = 2


class ReportError(Exception):
    """A problem the user can fix (missing file, bad line); printed without a traceback."""


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("records", nargs="?", default=None,
                        help=f"records file (JSON lines) written by PAYOFF_RECORDS; default: ${ENV_VAR}")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"HTML file to write (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--text", action="store_true", help="print the text report instead of writing HTML")
    parser.add_argument("--last", type=int, default=None, metavar="N", help="only the last N calls")
    parser.add_argument("--title", default="payoff report", help="title of the HTML page")
    parser.set_defaults(handler=run_report)
    return parser


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the ``payoff`` command's subparsers (``argparse._SubParsersAction``)."""
    parser = subparsers.add_parser("report", help="write a self-contained HTML report from a records file",
                                   description=__doc__)
    return configure(parser)


def records_path(args: argparse.Namespace) -> str:
    path = args.records or os.environ.get(ENV_VAR, "").strip()
    if not path:
        raise ReportError(f"no records file: pass its path or set {ENV_VAR}")
    return str(path)


def read(path: str, last: int | None) -> list[MapRecord]:
    try:
        records = load_records(path)
    except FileNotFoundError:
        raise ReportError(f"records file not found: {path}") from None
    except IsADirectoryError:
        raise ReportError(f"records file is a directory: {path}") from None
    except RecordsFileError as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"cannot read records file {path}: {exc.strerror or exc}") from None
    return records[-last:] if last else records


def write(path: str, content: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
    except OSError as exc:
        raise ReportError(f"cannot write report {path}: {exc.strerror or exc}") from None


def run_report(args: argparse.Namespace) -> int:
    """The handler ``payoff report`` dispatches to; usage errors exit 2 with one clear line."""
    try:
        if args.last is not None and args.last < 1:
            raise ReportError(f"--last must be at least 1, got {args.last}")
        records = read(records_path(args), args.last)
        if args.text:
            sys.stdout.write(render_text(records))
            return 0
        write(args.output, render_html(records, title=args.title))
    except ReportError as exc:
        print(f"payoff report: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(f"payoff report: wrote {args.output} ({len(records)} calls)")
    return 0


def main_report(argv: Sequence[str] | None = None) -> int:
    """``payoff report`` on its own, for tests and ``python -m payoff.report.cli``."""
    parser = configure(argparse.ArgumentParser(prog="payoff report", description=__doc__))
    return run_report(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_report())
