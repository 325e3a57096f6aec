#!/usr/bin/env bash
# The main job: build xov and run a node in a fresh temporary data dir, in the foreground (Ctrl-C stops it).
# The lease-lifecycle work turns this into a whole local testnet (bitcoind, OpenStack lab, providers, a buyer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash testnet/setup.sh
source testnet/env.sh
cargo build --release --locked -p xov-node
xov="$CARGO_TARGET_DIR/release/xov"
datadir=$(mktemp -d -t xov-node.XXXXXX)
echo "data dir: $datadir   (in another terminal: $xov --datadir $datadir status)" >&2
exec "$xov" --datadir "$datadir" node run
