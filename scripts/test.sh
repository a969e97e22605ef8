#!/usr/bin/env bash
# The whole test suite: installs the test extras and the Debian packages the
# end-to-end tests drive for real (prometheus + promtool, chromium), then
# runs lint, types and pytest. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test prometheus chromium
cd "$ROOT"
ruff check src tests benchmarks dashboards
mypy
# Bytecode is written for the checkout's own modules (src/, tests/) and pytest's rewritten test files: with
# PYTHONDONTWRITEBYTECODE set, as on CI machines, each of the hundreds of interpreters the tests start (child
# programs, spawned and loky workers) compiled payoff from source again, and pytest rewrote every test file
# (15% of the CPU time of the files that start children). Stale bytecode is never used: Python checks it
# against the source's modification time and size.
# Two pytest workers (pytest-xdist), one a core: the suite uses about 1,000 s of CPU (user and sys of the whole
# tree: the packaging and README-demo tests install and run payoff afresh, the rest start pools and children), so
# two cores bound it near 500 s; it takes 640-730 s. `-n 3` gained little (643 s), xdist's work stealing none
# (730 s against 637 s with the default scheduling). Tests that price work against the loop are built to run
# beside other programs' load. Add `-n 0` to run them one at a time.
exec env -u PYTHONDONTWRITEBYTECODE python -m pytest -n 2 "$@"
