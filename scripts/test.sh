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
# Two pytest workers (pytest-xdist): most tests wait (for children to start, pools to stop, timeouts to
# strike); one at a time the suite took 562 s, two at a time 334 s (496 s of CPU). Tests that price work against
# the loop are built to run beside other programs' load. Add `-n 0` to run them one at a time. The suite uses about
# 1,000 s of CPU (user and sys of the whole tree), so two cores bound it near 500 s: `-n 3` gained little (643 s),
# and xdist's work stealing none (730 s against 637 s with the default scheduling).
exec env -u PYTHONDONTWRITEBYTECODE python -m pytest -n 2 "$@"
