#!/usr/bin/env bash
# Set up everything and run Slipway on its embedded default: SQLite and a private Redis
# under var/, with web, worker, beat and monitor. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash platform/setup.sh run
export PATH="$PWD/.venv/bin:$PATH"

mkdir -p var
if [ ! -f var/slipway.env ]; then
  # Keys made once per installation, kept private under var/.
  umask 077
  python - >var/slipway.env <<'PY'
import secrets
from cryptography.fernet import Fernet
print(f"SECRET_KEY={secrets.token_urlsafe(50)}")
print(f"SLIPWAY_ENCRYPTION_KEY={Fernet.generate_key().decode()}")
PY
  umask 022
fi
external_redis=${REDIS_URL:-}
set -a
# shellcheck disable=SC1091
. var/slipway.env
set +a

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ -z "$external_redis" ]; then
  port=${SLIPWAY_REDIS_PORT:-6479}
  export REDIS_URL="redis://127.0.0.1:$port/0"
  mkdir -p var/redis
  redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/var/redis" \
    --save 60 100 --appendonly no --loglevel warning --daemonize no &
  pids+=($!)
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

python manage.py check --fail-level ERROR >/dev/null
python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0
python manage.py bootstrap
echo "slipway: starting web, worker, beat and monitor (Ctrl-C stops them all)"
honcho -f platform/Procfile -d . start &
pids+=($!)
wait "${pids[-1]}"
