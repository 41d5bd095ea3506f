#!/bin/sh
# A daemon-mode agent for Flotilla's quick start (examples/quickstart.toml).
#
# The coordinator starts this once per agent with FLOTILLA_URL, FLOTILLA_AGENT_ID and
# FLOTILLA_TOKEN in the environment; `flotilla worker --agent-from-env` acts as that agent
# (heartbeats, takes tasks, reports results) and runs `cat` for each task, so a task's result
# is its payload.
#
# Which flotilla: $FLOTILLA_BIN if set (`flotilla up` and `flotilla serve` set it to
# themselves), else `flotilla` on PATH, else this repository's build in target/.
set -eu

bin="${FLOTILLA_BIN:-}"
if [ -z "$bin" ]; then
  if command -v flotilla >/dev/null 2>&1; then
    bin=flotilla
  else
    here=$(cd "$(dirname "$0")" && pwd)
    for candidate in "$here/../../target/release/flotilla" "$here/../../target/debug/flotilla"; do
      if [ -x "$candidate" ]; then
        bin=$candidate
        break
      fi
    done
  fi
fi
if [ -z "$bin" ]; then
  echo "echo-daemon.sh: cannot find flotilla: set FLOTILLA_BIN to its path or put it on PATH" >&2
  exit 127
fi

exec "$bin" worker --agent-from-env -- cat
