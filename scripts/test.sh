#!/usr/bin/env bash
# Sets up this machine (Debian packages, the virtualenv, a running dockerd) and runs every
# check: ruff, mypy, and the whole pytest suite (unit, integration and e2e).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
# Two workers: the tests that use the Docker Engine one after another on one (tests/conftest.py,
# ENGINE_DIRS), the rest beside them on the other. "-n 0" among the arguments runs serially.
exec .venv/bin/pytest -n 2 --dist loadgroup "$@"
