#!/usr/bin/env bash
# The main job's binaries (xov, xov-testnet), built with the test build's features (xov-node's `sim`; the
# rest is unified in testnet/Cargo.toml), so that `testnet/test.sh` and `testnet/run.sh` reuse each other's
# dependencies whichever runs first. Prints how many crates it compiled.
# --no-dependency: fail if any crate outside this workspace had to be compiled (test.sh's last check).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --locked -p xov-node -p xov-testnet --features xov-node/sim 2>&1 | tee "$log" >&2
root=$(pwd)
compiled=$(grep -cE '^ *Compiling ' "$log" || true)
deps=$(grep -E '^ *Compiling ' "$log" | grep -vF "($root/" || true)
ndeps=$(printf '%s' "$deps" | grep -c . || true)
echo "build.sh: $compiled crates compiled ($ndeps dependencies, the rest this workspace's)" >&2
if [[ ${1:-} == --no-dependency && $ndeps != 0 ]]; then
  printf '%s\n' "$deps" >&2
  echo "build.sh: the main job's build compiled $ndeps dependencies again after the test build: a dev-dependency turns on a feature the normal build lacks (compare 'cargo tree -e features' of both; name the feature in testnet/Cargo.toml)" >&2
  exit 1
fi
