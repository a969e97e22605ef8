"""The ``payoff`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from payoff.demo import run_demo

    return run_demo(args)


def _metrics_doc(args: argparse.Namespace) -> int:
    from payoff.telemetry.metrics import metrics_reference_markdown

    text = metrics_reference_markdown()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payoff", description="A parallel executor that proves "
                                     "whether parallelism pays off.")
    from payoff._version import __version__

    parser.add_argument("--version", action="version", version=f"payoff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an explanation workload under every strategy and compare")
    demo.add_argument("--quick", action="store_true", help="a small workload that finishes in under a minute")
    demo.add_argument("--loop", action="store_true", help="keep producing traffic (for the dashboards)")
    demo.add_argument("--pause", type=float, default=5.0, help="seconds between rounds with --loop")
    demo.add_argument("--dask", action="store_true",
                      help="also run on dask (CE_PARALLEL address=..., or a LocalCluster; extra [dask])")
    demo.add_argument("--ce", action="store_true",
                      help="also explain with calibrated-explanations, alone and on payoff (extra [ce])")
    demo.add_argument("--metrics-port", type=int, default=None,
                      help="serve /metrics on this port (default 9464, or $PAYOFF_METRICS_PORT; 0 picks a free one)")
    demo.add_argument("--metrics-addr", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")
    demo.set_defaults(handler=_demo)
    doc = sub.add_parser("metrics-doc", help="write the metrics reference (docs/metrics.md) from the code")
    doc.add_argument("-o", "--output", help="file to write (default: standard output)")
    doc.set_defaults(handler=_metrics_doc)
    from payoff.report.cli import add_report_command

    add_report_command(sub)
    from payoff.stack.cli import add_commands as add_stack_commands

    add_stack_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
