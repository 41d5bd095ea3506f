#!/usr/bin/env bash
# Flotilla's quick start: a coordinator on the embedded default (SQLite in a fresh data
# directory), three connected agents running examples/agents/wordcount.py, and a file of 41
# tasks (the last depends on the other 40) run to completion with a progress bar.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c "import json,sys; print(json.load(sys.stdin)['target_directory'])")/release/flotilla"

export FLOTILLA_DATA_DIR="${FLOTILLA_DATA_DIR:-$(mktemp -d)/flotilla}"
export FLOTILLA_URL="${FLOTILLA_URL:-http://127.0.0.1:7171}"
server=""
workers=()
# Workers first (they unregister), then the coordinator.
cleanup() {
  [ ${#workers[@]} -gt 0 ] && kill -INT "${workers[@]}" 2>/dev/null && wait "${workers[@]}" 2>/dev/null
  [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null
  true
}
trap cleanup EXIT

"$bin" serve --listen "${FLOTILLA_URL#http://}" &
server=$!
for _ in $(seq 50); do curl -fs "$FLOTILLA_URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

for i in 1 2 3; do
  RUST_LOG=warn "$bin" worker --name "wordcount-$i" --capability text -- python3 examples/agents/wordcount.py &
  workers+=($!)
done

"$bin" run examples/tasks.jsonl
echo
"$bin" swarm show default
echo
echo "Data directory: $FLOTILLA_DATA_DIR (the admin token is in admin.token there)."
