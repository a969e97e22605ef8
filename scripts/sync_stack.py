#!/usr/bin/env python3
"""Copy the demo stack's sources into the package, so that a pip install carries the whole product.

    python scripts/sync_stack.py           # rewrite src/payoff/stack/files/ from the sources
    python scripts/sync_stack.py --check   # exit 1, naming the files, if the copies drifted

The sources stay where they are edited: ``deploy/`` (alert rules and their promtool tests, Prometheus,
Grafana provisioning, OTel collector, Tempo), ``dashboards/json/*.json`` (written by
``python dashboards/build.py``) and ``docker-compose.yml``. The copies are byte-equal, except that the
compose file gets the stack folder's header comment: ``payoff stack DIR`` writes the same layout
(``deploy/``, ``dashboards/json/``) next to its own ``Dockerfile`` (src/payoff/stack/templates/), so
every path in the compose file holds outside the repository too. tests/test_package.py fails when the
copies differ from what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "src" / "payoff" / "stack" / "files"
COMPOSE = "docker-compose.yml"

STACK_HEADER = """\
# payoff demo stack: demo app + Prometheus + Grafana + OTel collector + Tempo.
# Written by `payoff stack DIR`; generated from payoff's docker-compose.yml by scripts/sync_stack.py.
#   payoff stack up DIR      (or: docker compose up -d --build, in DIR), then open http://127.0.0.1:3000
# The app image is built from ./Dockerfile, which installs the payoff wheel in ./wheels/ (README.md).
# Every published port binds 127.0.0.1 only; every image is pinned.
"""


def compose_for_package(text: str) -> str:
    """The repository's compose file with the stack folder's header instead of its own."""
    lines = text.splitlines(keepends=True)
    body = 0
    while body < len(lines) and lines[body].startswith("#"):
        body += 1
    rest = "".join(lines[body:])
    for needed in ("context: .\n", "dockerfile: Dockerfile\n", "./deploy/", "./dashboards/json:"):
        if needed not in rest:
            raise SystemExit(f"docker-compose.yml no longer contains {needed.strip()!r}: "
                             "update scripts/sync_stack.py and the stack layout together")
    return STACK_HEADER + rest


def expected(root: Path = ROOT) -> dict[str, bytes]:
    """Relative path (posix) -> bytes, for every file under src/payoff/stack/files/."""
    out: dict[str, bytes] = {}
    for path in sorted((root / "deploy").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    for path in sorted((root / "dashboards" / "json").glob("*.json")):
        out[path.relative_to(root).as_posix()] = path.read_bytes()
    compose = (root / COMPOSE).read_text(encoding="utf-8")
    out[COMPOSE] = compose_for_package(compose).encode("utf-8")
    return out


def current(target: Path = TARGET) -> dict[str, bytes]:
    if not target.is_dir():
        return {}
    return {p.relative_to(target).as_posix(): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}


def drift(root: Path = ROOT, target: Path = TARGET) -> list[str]:
    """What differs between the copies and the sources, one line per file; empty when in step."""
    want, have = expected(root), current(target)
    problems = [f"missing: {name}" for name in sorted(want.keys() - have.keys())]
    problems += [f"differs: {name}" for name in sorted(want.keys() & have.keys()) if want[name] != have[name]]
    problems += [f"not from a source: {name}" for name in sorted(have.keys() - want.keys())]
    return problems


def write(root: Path = ROOT, target: Path = TARGET) -> list[str]:
    """Make the copies equal to the sources; returns what changed."""
    changes = drift(root, target)
    want = expected(root)
    for name in current(target).keys() - want.keys():
        (target / name).unlink()
    for name, data in want.items():
        path = target / name
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for directory in sorted((d for d in target.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        if not any(directory.iterdir()):
            directory.rmdir()
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for line in problems:
            print(f"src/payoff/stack/files: {line}")
        if problems:
            print("run: python scripts/sync_stack.py", file=sys.stderr)
        return 1 if problems else 0
    for line in write():
        print(f"updated src/payoff/stack/files: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
