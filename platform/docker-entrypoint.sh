#!/usr/bin/env bash
# Entrypoint of Slipway's container image. The first argument chooses the process:
#
#   web | worker | beat | monitor   the command of that name in platform/Procfile (one
#                                   source of truth); extra arguments are appended, e.g.
#                                   `worker -Q default,gpu` or `web --workers 4`
#   migrate                         apply migrations, then `bootstrap --no-demo`
#   wait-migrations                 block until no migration is pending (init containers)
#   manage ARGS...                  python manage.py ARGS (createsuperuser, shell, ...)
#   healthcheck                     Docker HEALTHCHECK: /healthz for web, ok otherwise
#   anything else                   executed as given
set -euo pipefail
cd "${SLIPWAY_APP_DIR:-/app}"

export SLIPWAY_HOST="${SLIPWAY_HOST:-0.0.0.0}"
export SLIPWAY_PORT="${SLIPWAY_PORT:-8000}"
var_dir="${SLIPWAY_VAR_DIR:-/var/lib/slipway}"
role_file="${SLIPWAY_ROLE_FILE:-/tmp/slipway.role}"

procfile_command() {
  sed -n "s/^$1:[[:space:]]*//p" platform/Procfile | head -n 1
}

# STATIC_ROOT is $SLIPWAY_VAR_DIR/staticfiles; the image holds the collected files in
# /opt/slipway/staticfiles. Link them in when the var directory is fresh (an emptyDir,
# a new volume) or holds an older link; a real directory there is left alone.
link_static() {
  local collected="${SLIPWAY_COLLECTED_STATIC:-/opt/slipway/staticfiles}"
  [ -d "$collected" ] || return 0
  mkdir -p "$var_dir" 2>/dev/null || return 0
  if [ -L "$var_dir/staticfiles" ] || [ ! -e "$var_dir/staticfiles" ]; then
    ln -sfn "$collected" "$var_dir/staticfiles" 2>/dev/null || true
  fi
}

# Load the settings before starting anything: a missing or malformed one stops the
# container with the one line that names it (exit 2). Without this, `web --workers N`
# would restart children that die on it forever, and wait-migrations would wait out
# its timeout with the reason hidden.
check_settings() {
  python -c 'from config.env import check_settings; check_settings()'
}

run_process() {
  local role=$1 command
  shift
  command=$(procfile_command "$role")
  if [ -z "$command" ]; then
    echo "slipway: platform/Procfile has no '$role' process" >&2
    exit 64
  fi
  check_settings
  link_static
  printf '%s\n' "$role" >"$role_file" 2>/dev/null || true
  echo "slipway: starting $role"
  # The Procfile line is shell text (${VAR:-default} expansions), as honcho runs it.
  eval "exec $command \"\$@\""
}

healthcheck() {
  local role=""
  [ -r "$role_file" ] && role=$(cat "$role_file")
  if [ "$role" != web ]; then
    exit 0
  fi
  exec python - <<'PY'
import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('SLIPWAY_PORT', '8000')}/healthz"
request = urllib.request.Request(url, headers={"Host": "localhost"})
try:
    with urllib.request.urlopen(request, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

subcommand="${1:-web}"
[ $# -gt 0 ] && shift
case "$subcommand" in
  web | worker | beat | monitor)
    run_process "$subcommand" "$@"
    ;;
  migrate)
    python manage.py migrate --noinput "$@"
    # The admin user only: the demo repository is a git repository on local disk,
    # which this one-off container's workers would never see (platform/run.sh, on a
    # single machine, makes it).
    exec python manage.py bootstrap --no-demo
    ;;
  wait-migrations)
    check_settings
    timeout="${SLIPWAY_MIGRATION_WAIT_SECONDS:-600}"
    deadline=$((SECONDS + timeout))
    until python manage.py migrate --check >/dev/null 2>&1; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "slipway: migrations still pending after ${timeout}s (did the migrate job run?)" >&2
        python manage.py showmigrations --plan 2>&1 | grep -F '[ ]' | head -n 20 >&2 || true
        exit 1
      fi
      echo "slipway: waiting for migrations (the migrate job applies them)"
      sleep 5
    done
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  healthcheck)
    healthcheck
    ;;
  *)
    exec "$subcommand" "$@"
    ;;
esac
