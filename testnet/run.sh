#!/usr/bin/env bash
# The main job: a whole local xov market — Bitcoin Core regtest, the OpenStack lab, two providers and a
# buyer — with one lease run end to end while you watch. Ctrl-C stops it. `--real`: the leased machine boots
# for real (the lab's real compute mode) and the buyer logs into it with `xov ssh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testnet/setup.sh
source testnet/env.sh
XOV_BITCOIND_DIR=$(bash testnet/bitcoind/build.sh | tail -n 1)
export XOV_BITCOIND_DIR
bash testnet/build.sh
exec "$CARGO_TARGET_DIR/debug/xov-testnet" up "$@"
