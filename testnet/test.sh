#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace against the real parts, then every fuzz target.
# On 2 cores the slow steps overlap where one leaves a core idle: Bitcoin Core's C++ build and the lab's
# installs run while cargo compiles the workspace (cargo's single-crate and link phases use one core), and
# the fuzz targets are built at the lowest priority while the end-to-end tests, mostly waiting on bitcoind,
# the lab and the nodes, run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testnet/setup.sh
source testnet/env.sh
logs=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
# waits for a background step; on failure shows its log and stops
finish() { # pid name log
  if ! wait "$1"; then tail -n 60 "$3" >&2; echo "test.sh: $2 failed (log above)" >&2; exit 1; fi
  echo "test.sh: $2 done" >&2
}
cargo fmt --all -- --check
# Real Bitcoin Core for the wallet's regtest tests (built once from crates.io sources, ~9 min; cached), then
# the real OpenStack lab for the provisioner and lease tests (installs Debian packages the first time).
set -m   # each background step in its own process group, so the trap can stop it whole
( XOV_BITCOIND_DIR=$(nice -n 5 bash testnet/bitcoind/build.sh | tail -n 1) \
    && echo "$XOV_BITCOIND_DIR" > "$logs/bitcoind-dir" && bash testnet/openstack/up.sh --real ) > "$logs/parts.log" 2>&1 &
parts=$!; pids+=("$parts")
set +m
nice -n 5 cargo test --workspace --locked --no-fail-fast --no-run
finish "$parts" "Bitcoin Core and the OpenStack lab" "$logs/parts.log"
XOV_BITCOIND_DIR=$(cat "$logs/bitcoind-dir")
export XOV_BITCOIND_DIR
# The fuzz targets build (nice 19: the tests come first) while the tests run; fuzz.sh below then only runs them.
set -m
nice -n 19 bash testnet/fuzz.sh --build-only 10 > "$logs/fuzz-build.log" 2>&1 &
fuzz_build=$!; pids+=("$fuzz_build")
set +m
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
finish "$fuzz_build" "building the fuzz targets" "$logs/fuzz-build.log"
[[ $status == 0 ]] || exit "$status"
# Every fuzz target, briefly (cargo-fuzz on stable with RUSTC_BOOTSTRAP=1; a crash fails the run).
bash testnet/fuzz.sh 10
# The main job (testnet/run.sh) reuses this build: it compiles no dependency again.
bash testnet/build.sh --no-dependency
