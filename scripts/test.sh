#!/usr/bin/env bash
# Install what the tests need and run them: `bash scripts/test.sh [pytest args]`.
# Creates .venv, installs the project with its test extras, Debian's chromium (for the
# Web App browser tests) and nginx (for the deploy recipe test), starts PostgreSQL and Redis
# if they are installed but stopped, then runs ruff and pytest. Under CI=true a missing
# service is a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian chromium for the Web App browser tests…"
  as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || echo "warning: could not install chromium; browser tests will fail under CI" >&2
fi

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing Debian nginx for the deploy recipe test (tests/test_deploy.py)…"
  { as_root apt-get update -q >/dev/null \
      && { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null 2>&1 \
           || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null; }; } \
    || echo "warning: could not install nginx; the deploy tests will fail under CI" >&2
fi

# PostgreSQL at 127.0.0.1:5432, Redis at 127.0.0.1:6379: start them if installed but stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true; done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /tmp/vitte-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/vitte-redis --logfile /tmp/vitte-redis/redis.log || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
fi

.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
