# Shared by scripts/dev and scripts/test: a virtualenv with the project installed, and a Redis that answers.

ensure_venv() {
  local python=${PYTHON:-python3}
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "meetbridge needs Python 3.11 or newer as '$python' (set PYTHON=... to choose another)" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  # Reinstall when the dependencies changed since the last install: exactly the pinned, hash-checked versions of
  # requirements-dev.lock (scripts/lock regenerates it), then the project itself without dependencies.
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ requirements-dev.lock -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements-dev.lock
    .venv/bin/python -m pip install --quiet --no-deps -e .
    touch .venv/.installed
  fi
}

redis_answers() {
  .venv/bin/python - "$1" <<'PY'
import sys, redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
except redis.RedisError:
    sys.exit(1)
PY
}

# ensure_redis URL: start a local redis-server on URL's port when nothing answers there.
ensure_redis() {
  local url=$1
  if redis_answers "$url"; then
    return
  fi
  local port
  port=$(.venv/bin/python -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 6379)' "$url")
  if ! command -v redis-server >/dev/null; then
    echo "No Redis answers at $url and redis-server is not installed (apt install redis-server)." >&2
    exit 1
  fi
  mkdir -p var/redis
  echo "Starting redis-server on 127.0.0.1:$port (data in var/redis)" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$PWD/var/redis" \
    --appendonly yes --maxmemory-policy noeviction --logfile "$PWD/var/redis/redis.log"
  for _ in $(seq 50); do
    redis_answers "$url" && return
    sleep 0.1
  done
  echo "redis-server did not come up; see var/redis/redis.log" >&2
  exit 1
}

# ensure_debian_tool COMMAND PACKAGE WHY: a Debian package a test needs (chromium for the host page's browser
# test, prometheus for promtool), installed quietly when COMMAND is missing and this runs as root (or sudo can);
# otherwise says how. The tests fail under CI without it and skip elsewhere.
ensure_debian_tool() {
  local command=$1 package=$2 why=$3
  if command -v "$command" >/dev/null; then
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "$command is not installed: $why needs it (as root: apt-get install -y $package)" >&2
      return
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "$command is not installed and there is no apt-get here: install $package for $why" >&2
    return
  fi
  echo "Installing $package for $why (apt-get)" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "$package"; } >/dev/null 2>&1; then
    echo "apt-get could not install $package: $why needs it (apt-get install -y $package)" >&2
  fi
}

# Playwright's own browser download does not work on these machines: the browser test drives Debian's chromium.
ensure_browser() { ensure_debian_tool chromium chromium "the host page's browser test"; }

ensure_promtool() { ensure_debian_tool promtool prometheus "the alert rules' check (promtool)"; }
