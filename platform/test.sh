#!/usr/bin/env bash
# Set up everything and run the whole test suite: lint, Django checks, then pytest on
# SQLite and again on PostgreSQL (each with its own private Redis and database server).
# SLIPWAY_TEST_DBS="sqlite" runs one pass; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash platform/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL

echo "slipway: lint"
ruff check .
ruff format --check .
echo "slipway: django checks"
check_dir=$(mktemp -d)
DEBUG=1 SLIPWAY_VAR_DIR="$check_dir" python manage.py check
DEBUG=1 SLIPWAY_VAR_DIR="$check_dir" python manage.py makemigrations --check --dry-run >/dev/null \
  || { echo "slipway: models changed without a migration (run makemigrations)"; exit 1; }
rm -rf "$check_dir"

status=0
for db in ${SLIPWAY_TEST_DBS:-sqlite postgres}; do
  echo "slipway: tests on $db"
  SLIPWAY_TEST_DB=$db python -m pytest "$@" || status=$?
done
exit $status
