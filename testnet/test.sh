#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testnet/setup.sh
source testnet/env.sh
# Real Bitcoin Core for the wallet's regtest tests (built once from crates.io sources, ~5 min; cached).
XOV_BITCOIND_DIR=$(bash testnet/bitcoind/build.sh | tail -n 1)
export XOV_BITCOIND_DIR
# The real OpenStack lab for the provisioner and lease tests (installs Debian packages the first time).
bash testnet/openstack/up.sh
cargo fmt --all -- --check
cargo test --workspace --locked --no-fail-fast
# Every fuzz target, briefly (cargo-fuzz on stable with RUSTC_BOOTSTRAP=1; a crash fails the run).
bash testnet/fuzz.sh 10
