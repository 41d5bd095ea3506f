#!/usr/bin/env bash
# Everything CI runs: formatting, lints, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# A target directory outside the clone, shared between runs, keeps CI fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# The runtime's and managed agents' tests drive real tmux sessions.
if ! command -v tmux >/dev/null 2>&1; then
  echo "== installing tmux"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q tmux >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q tmux >/dev/null); \
  else sudo apt-get install -y -q tmux >/dev/null; fi
fi

# The dashboard's browser tests drive Debian's chromium with playwright-core (web/package.json;
# outside CI they skip when these are missing, under CI=true they must run).
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null); \
  else sudo apt-get install -y -q chromium >/dev/null; fi
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "== installing nodejs and npm"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q nodejs npm >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null); \
  else sudo apt-get install -y -q nodejs npm >/dev/null; fi
fi
if [ ! -d web/node_modules/playwright-core ]; then
  echo "== npm ci in web/"
  (cd web && npm ci --no-audit --no-fund >/dev/null)
fi

# The bus's tests run against Redis at 127.0.0.1:6379 (outside CI they skip when it is absent;
# under CI=true they must run): start it when it is installed but down, install it if missing.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q redis-server >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null); \
    else sudo apt-get install -y -q redis-server >/dev/null; fi
  fi
  echo "== starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/flotilla-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/flotilla-redis --logfile /tmp/flotilla-redis/redis.log
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

# The store's and the cluster's tests run against PostgreSQL at 127.0.0.1:5432 (database
# `test`, trust authentication; outside CI they skip when it is absent): start it when it is
# installed but down. The cluster test restarts it once under CI=true (pg_ctlcluster).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && command -v pg_lsclusters >/dev/null 2>&1; then
  echo "== starting PostgreSQL"
  pg_lsclusters --no-header | while read -r version cluster _; do
    pg_ctlcluster "$version" "$cluster" start || true
  done
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.1; done
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== hostile input: schemathesis against a real coordinator"
./scripts/hostile.sh
echo "== cargo deny"
./scripts/deny.sh
