#!/usr/bin/env bash
# Install what Slipway needs on a Debian/Ubuntu machine: system packages, a virtualenv
# in .venv and the pinned Python requirements. Safe to run again: it only adds what is
# missing. Usage: platform/setup.sh run|test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=${1:-run}
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

packages=()
command -v python3 >/dev/null || packages+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
command -v git >/dev/null || packages+=(git)
command -v redis-server >/dev/null || packages+=(redis-server)
if [ "$mode" = test ]; then
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql)
  command -v psql >/dev/null || packages+=(postgresql-client)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  command -v runuser >/dev/null || packages+=(util-linux)
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "slipway: installing system packages: ${packages[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

requirements=requirements.txt
[ "$mode" = test ] && requirements=requirements-dev.txt
if [ ! -x .venv/bin/python ]; then
  echo "slipway: creating the virtualenv in .venv"
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "slipway: installing Python requirements ($requirements)"
  # Some machines configure extra (absent) package indexes: hide pip's noise about them.
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi
