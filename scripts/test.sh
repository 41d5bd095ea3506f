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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
