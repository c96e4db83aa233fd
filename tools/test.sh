#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine: a virtual environment with stationd and its test extras,
# Debian's Chromium for the dashboard's browser test and Debian's PostgreSQL server programs for the fleet tests
# (installed when running as root; otherwise those tests are skipped with the reason; the tests start and stop
# their own throw-away cluster, so no server is left running). Lint (ruff), format (ruff format --check) and types
# (mypy) are checked first; the tests run only when they pass. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: Chromium is not installed; the dashboard browser test will be skipped (sudo apt-get install chromium)"
    fi
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "note: PostgreSQL is not installed; the fleet tests will be skipped (sudo apt-get install postgresql)"
    fi
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
