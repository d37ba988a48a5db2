#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with promptblame and its dev tools.
# Idempotent; re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
