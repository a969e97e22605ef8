"""The ``payoff`` command line.

A mistake the user can fix (a bad value, a path that cannot be written) is one
line on stderr naming the value and what is accepted, and exit status 2, as
``argparse`` itself and ``payoff report`` do: never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import sys
import warnings
from collections.abc import Iterator, Sequence

USAGE_ERROR = 2
READER_LEFT = 141
"""A command whose reader left early (``payoff demo | head``): 128 + SIGPIPE, what ``yes | head`` ends with."""
DEFAULT_METRICS_ADDR = "127.0.0.1"
_WRITES_INTO_DIR = {
    "stack": "DIR must be a directory payoff can create or write into",
    "dashboards": "DIR must be a directory payoff can create or write into",
}
"""What each subcommand that writes files needs from its path, for the one-line error."""


class UsageError(Exception):
    """A problem with the command line or the paths it names; ``main`` prints it in one line and exits 2."""


def _port(text: str) -> int:
    """``--metrics-port``: ASCII digits 0-65535, as ``PAYOFF_METRICS_PORT`` (``int()`` takes '٣' or '-5')."""
    from payoff.telemetry.server import parse_port

    try:
        return parse_port(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use ASCII digits 0-65535 (0 picks a free one)"
                                         ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _addr(text: str) -> str:
    """An empty or blank ``--metrics-addr`` (``--metrics-addr "$UNSET"``) is the default, never every interface."""
    return text if text.strip() else DEFAULT_METRICS_ADDR


def _demo(args: argparse.Namespace) -> int:
    from payoff.demo import run_demo

    return run_demo(args)


def _metrics_doc(args: argparse.Namespace) -> int:
    from payoff.telemetry.metrics import metrics_reference_markdown

    text = metrics_reference_markdown()
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write -o {args.output}: {exc.strerror or exc}; give a file in an existing, "
                             "writable directory, or leave out -o for standard output") from None
    else:
        problem = write_stdout(text)
        if problem is not None:
            raise UsageError(f"{problem}; redirect it where there is room, or give -o FILE")
    return 0


def write_stdout(text: str) -> str | None:
    """Standard output now, flushed; what stopped it (a full disk) in words for the command's one error line, or
    None. A reader that left (BrokenPipeError) goes on to :func:`main`, which ends quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        return f"cannot write standard output: {exc.strerror or exc}"
    return None


def _stdout_gone() -> bool:
    """Whether standard output is a pipe its reader closed (``poll`` reports an error on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fd (a replaced sys.stdout), or no poll on this platform
        return False


def _silence_stdout() -> None:
    """What is still buffered for the gone reader goes nowhere, instead of failing again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payoff", description="A parallel executor that proves "
                                     "whether parallelism pays off.")
    from payoff._version import __version__

    parser.add_argument("--version", action="version", version=f"payoff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an explanation workload under every strategy and compare",
                          epilog="With OTEL_EXPORTER_OTLP_ENDPOINT set (extra [otlp]) it exports spans and metrics "
                                 "over OTLP/HTTP; OTEL_TRACES_EXPORTER=none or OTEL_METRICS_EXPORTER=none "
                                 "leaves that signal out.")
    demo.add_argument("--quick", action="store_true", help="a small workload that finishes in under a minute")
    demo.add_argument("--loop", action="store_true", help="keep producing traffic (for the dashboards)")
    demo.add_argument("--pause", type=_seconds, default=5.0, help="seconds between rounds with --loop")
    demo.add_argument("--dask", action="store_true",
                      help="also run on dask (CE_PARALLEL address=..., or a LocalCluster; extra [dask])")
    demo.add_argument("--ce", action="store_true",
                      help="also explain with calibrated-explanations, alone and on payoff (extra [ce])")
    demo.add_argument("--metrics-port", type=_port, default=None,
                      help="serve /metrics on this port (default 9464, or $PAYOFF_METRICS_PORT; 0 picks a free one)")
    demo.add_argument("--metrics-addr", type=_addr, default=DEFAULT_METRICS_ADDR,
                      help=f"address for /metrics (default {DEFAULT_METRICS_ADDR}; empty means the default)")
    demo.set_defaults(handler=_demo)
    doc = sub.add_parser("metrics-doc", help="write the metrics reference (docs/metrics.md) from the code")
    doc.add_argument("-o", "--output", help="file to write (default: standard output)")
    doc.set_defaults(handler=_metrics_doc)
    from payoff.report.cli import add_report_command

    add_report_command(sub)
    from payoff.stack.cli import add_commands as add_stack_commands

    add_stack_commands(sub)
    _own_parsers(sub)
    return parser


def _own_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Each subcommand's arguments are refused by its own parser, whose usage lists them (argparse leaves an
    unknown one to the top-level parser, whose usage lists only the subcommands)."""
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _own_parsers(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    handler = args.handler
    command = " ".join(filter(None, (args.command, getattr(args, "dashboards_command", None))))
    try:
        with _warnings_said_by(command):
            return int(handler(args))
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe of the command's (a socket, a worker's): a real failure
            raise
        _silence_stdout()
        return READER_LEFT
    except UsageError as exc:
        message = str(exc)
    except OSError as exc:
        if exc.filename is None:  # not a path the user gave (a socket, a pipe): a real failure, shown as such
            raise
        hint = _WRITES_INTO_DIR.get(args.command)
        problem = f"{exc.filename}: {exc.strerror or exc}"
        message = f"cannot write {problem}; {hint}" if hint else problem
    print(f"payoff {command}: error: {message}", file=sys.stderr, flush=True)
    return USAGE_ERROR


@contextlib.contextmanager
def _warnings_said_by(command: str) -> Iterator[None]:
    """A warning is one line of the command's, as its errors are: the place Python names for it is the console
    script's ``sys.exit(main())``, which points the user at nothing of theirs."""
    before = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], *_where: object, **_line: object) -> str:
        return f"payoff {command}: {category.__name__}: {str(message).removeprefix('payoff: ')}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
