#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with promptblame and its dev tools.
# Idempotent; re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# GrowthBook's stats engine, a reference for tests/test_compare.py. Its metadata pins pandas<2
# (chdb needs >=2.1) though the frequentist code it is used for runs on today's pandas/numpy:
# installed without its dependencies (numpy, scipy, pandas, pydantic are already here).
.venv/bin/python -m pip install -q --no-deps 'gbstats==0.8.0'
# Debian packages: Chromium for the reports' browser tests (tests/test_reports_browser.py).
# Installed when missing and we can (root with apt-get); otherwise those tests skip, saying why.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "setup: could not install chromium; the browser tests will skip" >&2
  else
    echo "setup: chromium not found (install Debian packages chromium chromium-driver for the browser tests)" >&2
  fi
fi
