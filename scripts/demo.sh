#!/usr/bin/env bash
# The main job: install what the demo needs, then run it. Extra arguments go to `payoff demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" demo
exec payoff demo "${@:---quick}"
