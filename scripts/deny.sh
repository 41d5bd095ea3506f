#!/usr/bin/env bash
# cargo deny (deny.toml): licenses, bans and sources always; advisories when the RustSec
# advisory database is on this machine. cargo deny fetches that database from github.com, which
# the project's machines cannot reach, and no crates.io, PyPI, npm or Debian package ships it;
# so the check runs with --disable-fetch on a database that is already there, and says so
# plainly when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "== installing cargo-deny"
  cargo install --locked cargo-deny
fi

DB_ROOT="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$DB_ROOT/*/crates" >/dev/null; then
  echo "== cargo deny check advisories licenses bans sources (advisory database in $DB_ROOT, not refreshed)"
  cargo deny --offline --locked check --hide-inclusion-graph advisories licenses bans sources
else
  echo "== cargo deny check licenses bans sources"
  cargo deny --locked check --hide-inclusion-graph licenses bans sources
  echo "cargo deny: advisories SKIPPED: there is no RustSec advisory database in $DB_ROOT, and"
  echo "  it cannot be fetched here (it lives on github.com, which this machine cannot reach; no"
  echo "  package registry this machine reaches ships it). Where github.com is reachable,"
  echo "  'cargo deny fetch' puts it there, and this script then checks it."
fi
