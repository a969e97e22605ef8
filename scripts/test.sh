#!/usr/bin/env bash
# The whole test suite: installs the test extras and the Debian packages the
# end-to-end tests drive for real (prometheus + promtool, chromium), then
# runs lint, types and pytest. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test prometheus chromium
cd "$ROOT"
ruff check src tests benchmarks dashboards
mypy
exec python -m pytest "$@"
