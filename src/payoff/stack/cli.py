"""``payoff stack DIR``, ``payoff stack up|down [DIR]`` and ``payoff dashboards export DIR``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from payoff import stack

STACK_HELP = """\
payoff stack DIR           write the demo stack (compose file, Dockerfile, dashboards, alert rules,
                           Prometheus, Grafana, OTel collector and Tempo config) into DIR
payoff stack up [DIR]      write it if DIR has none, then `docker compose up -d --build` there
payoff stack down [DIR]    `docker compose down` there (--volumes also drops Prometheus' data)

DIR defaults to ./payoff-stack for up and down (a directory named "up" or "down" is written as ./up).
Existing files that differ are never overwritten without --force: without it, nothing is written and
the exit status is 1 (2 is a mistake in the command line). The app image installs the payoff you have
installed (repacked into DIR/wheels/) or the wheel given with --wheel; see DIR/README.md.
Without Docker, up and down say what to install and exit with status 2."""


def add_commands(sub: Any) -> None:
    """Add ``stack`` and ``dashboards`` to the ``payoff`` subparsers."""
    p = sub.add_parser("stack", help="write the docker-compose demo stack, or run it (up/down)",
                       description=STACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="[up|down] DIR", help="DIR, or up/down and an optional DIR")
    p.add_argument("--force", action="store_true", help="overwrite existing files that differ")
    p.add_argument("--wheel", type=_given_path, default=None,
                   help="a payoff wheel for the app image (default: the installed payoff, repacked)")
    p.add_argument("--volumes", action="store_true", help="with down: also remove the stack's volumes")
    p.set_defaults(handler=_stack, stack_parser=p)

    d = sub.add_parser("dashboards", help="the Grafana dashboards shipped with payoff")
    dsub = d.add_subparsers(dest="dashboards_command", metavar="COMMAND", required=True,
                            help="export (the only one)")
    e = dsub.add_parser("export", help="write the dashboards JSON into DIR (for a Grafana you already run)")
    e.add_argument("dir", type=_given_path, metavar="DIR", help="folder for the *.json files (created if missing)")
    e.add_argument("--force", action="store_true", help="overwrite existing files that differ")
    e.set_defaults(handler=_export)


def _given_path(text: str) -> Path:
    """A path as given, where an empty one is a mistake (an unset shell variable), not the current directory
    ``Path("")`` makes of it: ``payoff stack "$DIR"`` wrote its 13 files into the current directory (hunt 61)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({text!r}); give a directory, or '.' for the current one")
    return Path(text)


def _fail(message: str, code: int = 2) -> int:
    print(f"payoff: {message}", file=sys.stderr, flush=True)
    return code


def _stack(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words)
    parser: argparse.ArgumentParser = args.stack_parser
    action = words.pop(0) if words and words[0] in ("up", "down") else "write"
    if len(words) > 1:
        parser.error(f"one directory at most, got {' '.join(words)}; before DIR only up or down may come "
                     "(payoff stack DIR, payoff stack up|down [DIR])")
    if action == "write" and not words:
        parser.error("give a directory: payoff stack DIR (or payoff stack up|down [DIR])")
    try:
        target = _given_path(words[0]) if words else Path(stack.DEFAULT_DIR)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"DIR: {exc}")
    if args.volumes and action != "down":
        parser.error("--volumes goes with down")
    if (args.force or args.wheel is not None) and action == "down":
        parser.error("--force and --wheel go with writing the stack (payoff stack DIR)")
    try:
        if action == "write":
            done = stack.write_stack(target, force=args.force, wheel=args.wheel)
            _report(done, "the demo stack")
            there = shlex.quote(str(target))
            print(f"run it: payoff stack up {there}   (or: cd {there} && docker compose up -d --build)")
            return 0
        if action == "up":
            code, written = stack.up(target, force=args.force, wheel=args.wheel)
            if written is not None:
                _report(written, "the demo stack")
            if code == 0:
                there = shlex.quote(str(target))
                print(f"the stack is up: open {stack.GRAFANA_URL}; stop it with: payoff stack down {there}")
            return code
        return stack.down(target, volumes=args.volumes)
    except stack.FilesExist as exc:
        return _fail(str(exc), 1)
    except stack.StackError as exc:
        return _fail(f"stack {action}: {exc}" if action != "write" else str(exc))


def _export(args: argparse.Namespace) -> int:
    try:
        done = stack.export_dashboards(args.dir, force=args.force)
    except stack.FilesExist as exc:
        return _fail(str(exc), 1)
    except stack.StackError as exc:
        return _fail(str(exc))
    _report(done, "the dashboards")
    return 0


def _report(done: stack.Written, what: str) -> None:
    count = len(done.written) + len(done.unchanged)
    files = f"{count} file{'s' if count != 1 else ''}"
    if not done.written and not done.removed:  # "wrote ... (13 already up to date)" told of files it never wrote
        print(f"{what} in {done.target} is up to date: {files}, none written")
    else:
        unchanged = f" ({len(done.unchanged)} already up to date)" if done.unchanged else ""
        removed = f"; removed {', '.join(done.removed)}" if done.removed else ""
        print(f"wrote {what} to {done.target}: {files}{unchanged}{removed}")
    if done.note:
        print(done.note)
