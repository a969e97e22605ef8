#!/usr/bin/env bash
# Idempotent set-up shared by scripts/demo.sh and scripts/test.sh.
# Usage: source scripts/setup.sh EXTRAS [DEBIAN_PACKAGES...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="$1"; shift || true

need_apt=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.payoff-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # compiled at install (pip's default), not left to first imports: with PYTHONDONTWRITEBYTECODE set, as
  # on CI machines, every interpreter the tests start would compile what it imports again (+130 s a run)
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]"
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
