#!/usr/bin/env bash
# Everything CI runs: formatting, lints, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# A target directory outside the clone, shared between runs, keeps CI fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
