#!/usr/bin/env bash
# The hostile-input suite: schemathesis generates requests from the coordinator's own OpenAPI
# document (GET /api/v1/openapi.json) — valid ones and invalid ones — against a real
# `flotilla serve` holding a swarm, agents, tasks, a message and a checkpoint, and fails on any
# 5xx answer, any answer that does not match the document, a panic in the log, or a coordinator
# that is no longer alive at the end. scripts/test.sh runs it; it can also run alone.
#
# Environment: HOSTILE_EXAMPLES (cases per operation and phase, default 20), HOSTILE_SEED
# (default: fixed, so a failure reproduces), HOSTILE_MAX_TIME (seconds of fuzzing, default
# 180: the run stops there, every operation having been tried).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"

SCHEMATHESIS_VERSION=4.32.5
VENV="$HOME/.cache/flotilla/venv"
EXAMPLES="${HOSTILE_EXAMPLES:-20}"
SEED="${HOSTILE_SEED:-20261203}"
MAX_TIME="${HOSTILE_MAX_TIME:-180}"
started=$SECONDS

# schemathesis in a virtual environment of its own, pinned (its CLI changed between 3.x and 4.x).
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION in $VENV"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q python3-venv >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null); \
    else sudo apt-get install -y -q python3-venv >/dev/null; fi
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The binary scripts/test.sh's `cargo test` just built, unless a source is newer.
FLOTILLA="$CARGO_TARGET_DIR/debug/flotilla"
if [ ! -x "$FLOTILLA" ] || [ -n "$(find crates Cargo.lock web -newer "$FLOTILLA" -type f | head -1)" ]; then
  echo "== building flotilla"
  cargo build --locked -q -p flotilla-cli --bin flotilla
fi

WORK="$(mktemp -d /tmp/flotilla-hostile.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
"$FLOTILLA" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --rate-limit 0 \
  >"$WORK/serve.log" 2>&1 &
SERVER=$!
stop() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER" 2>/dev/null || true
  fi
}
trap stop EXIT
for _ in $(seq 200); do curl -sf "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "the coordinator did not start:"; cat "$WORK/serve.log"; exit 1; }
TOKEN="$(cat "$WORK/data/admin.token")"

# What the ids in paths can name: a second swarm, a connected agent holding a running task, a
# managed exec pool whose agent echoes, tasks in several states, a message, a checkpoint.
api() { # METHOD PATH [BODY] -> the answer's body; fails on an error status
  local body="${3:-}"
  if [ -n "$body" ]; then
    curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$body" "$BASE/api/v1$2"
  else
    curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $TOKEN" "$BASE/api/v1$2"
  fi
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api POST /swarms '{"name": "hostile", "description": "for the fuzzer"}' >/dev/null
api PUT /swarms/default/pools/echo '{"min_agents": 1, "max_agents": 2, "capabilities": ["echo"], "agent": {"command": "echo", "args": ["{{payload.text}}"], "mode": "exec"}}' >/dev/null
REG="$(api POST /swarms/default/agents '{"name": "manual", "capabilities": ["manual"]}')"
AGENT="$(echo "$REG" | field '["agent_id"]')"
AGENT_TOKEN="$(echo "$REG" | field '["token"]')"
T1="$(api POST /swarms/default/tasks '{"type": "note", "payload": {"text": "one"}, "required_capabilities": ["manual"]}' | field '["id"]')"
T2="$(api POST /swarms/default/tasks '{"type": "note", "payload": {"text": "two"}, "required_capabilities": ["manual"], "depends_on": ["'"$T1"'"]}' | field '["id"]')"
T3="$(api POST /swarms/default/tasks '{"type": "echo", "payload": {"text": "three"}, "required_capabilities": ["echo"]}' | field '["id"]')"
T4="$(api POST /swarms/hostile/tasks '{"type": "queued", "priority": 9}' | field '["id"]')"
curl -sS --fail-with-body -H "Authorization: Bearer $AGENT_TOKEN" "$BASE/api/v1/agents/$AGENT/tasks/next?wait=5" >/dev/null
MESSAGE="$(api POST "/agents/$AGENT/messages" '{"body": {"hello": "agent"}}' | field '["id"]')"
CHECKPOINT="$(api POST "/agents/$AGENT/checkpoints" '{"description": "before the fuzzer"}' | field '["id"]')"
curl -sS -o /dev/null --fail-with-body -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/tasks/$T3?wait=10"

# Path parameters are drawn half the time from what exists (ids of the right kind for each
# path), else generated.
cat >"$WORK/schemathesis.toml" <<EOF
[dictionaries.swarms]
values = ["default", "hostile"]
[dictionaries.agents]
values = ["$AGENT"]
[dictionaries.tasks]
values = ["$T1", "$T2", "$T3", "$T4"]
[dictionaries.messages]
values = ["$MESSAGE"]
[dictionaries.pools]
values = ["echo"]
[dictionaries.checkpoints]
values = ["$CHECKPOINT"]

[parameters]
"path.swarm" = { dictionary = "swarms", probability = 0.5 }
"path.pool" = { dictionary = "pools", probability = 0.5 }
"path.checkpoint" = { dictionary = "checkpoints", probability = 0.5 }

[[operations]]
include-path-regex = "^/api/v1/agents/"
parameters = { "path.id" = { dictionary = "agents", probability = 0.5 } }

[[operations]]
include-path-regex = "^/api/v1/tasks/"
parameters = { "path.id" = { dictionary = "tasks", probability = 0.5 } }

[[operations]]
include-path-regex = "^/api/v1/messages/"
parameters = { "path.id" = { dictionary = "messages", probability = 0.5 } }
EOF

echo "== schemathesis $SCHEMATHESIS_VERSION against $BASE/api/v1/openapi.json (setup took $((SECONDS - started)) s)"
# Server-sent event streams never end by themselves: they are left out here and covered by
# crates/flotilla-server/tests/hostile.rs. Long polls and log follows are bounded by the hooks.
set +e
# From $WORK, where schemathesis keeps its cache (.schemathesis/), not in the clone.
(cd "$WORK" && PYTHONPATH="$REPO/scripts" SCHEMATHESIS_HOOKS=hostile_hooks \
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
  --url "$BASE" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --max-time "$MAX_TIME" \
  --seed "$SEED" \
  --request-timeout 20 \
  --workers 2 \
  --exclude-path-regex '/stream$' \
  --suppress-health-check all \
  --no-color \
  --report ndjson --report-dir "$WORK/report" \
  2>&1) | tee "$WORK/schemathesis.out"
status=${PIPESTATUS[0]}
set -e

alive=yes
if ! kill -0 "$SERVER" 2>/dev/null || [ "$(curl -s -m 5 "$BASE/healthz")" != ok ]; then alive=no; fi
panics="$(grep -c -i 'panicked' "$WORK/serve.log" || true)"
fives="$(grep -c '"status":5[0-9][0-9]\|status=5[0-9][0-9]' "$WORK/serve.log" || true)"
tested="$(grep -E '^ *Tested: [0-9]+' "$WORK/schemathesis.out" | grep -oE '[0-9]+' | head -1 || true)"
cases="$(grep -E '^ *[0-9]+ generated' "$WORK/schemathesis.out" | sed 's/^ *//' || true)"
echo "== hostile: ${tested:-?} operations tested; test cases: ${cases:-?}"
echo "== hostile: schemathesis exit $status, coordinator alive: $alive, panics in its log: $panics, 5xx in its log: $fives, $((SECONDS - started)) s in all"
if [ "$status" != 0 ] || [ "$alive" != yes ] || [ "$panics" != 0 ]; then
  echo "hostile: FAILED (the coordinator's log: $WORK/serve.log; schemathesis's report: $WORK/report)"
  grep -i -B2 -A8 'panicked' "$WORK/serve.log" | head -60 || true
  trap - EXIT
  stop
  exit 1
fi
stop
trap - EXIT
rm -rf "$WORK"
