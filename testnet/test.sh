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
# The tests, in two groups at once: their binaries spend most of their time waiting on bitcoind, the lab and
# the nodes, so one after another they left a core idle for most of ~30 min. The slow end-to-end binaries
# (~14 min of the serial time) run beside all the others (~15 min). No binary shares anything with another
# that could collide (each test's lab resources, bitcoind, ports, namespaces are its own: bitcoind's ports come
# from below the kernel's ephemeral range, claimed by a lock, see free_port in testnet/src/bitcoind.rs, since
# a port picked from that range can be taken by another binary's listener before bitcoind binds it, the
# suspected cause of a light-client test's failure when the groups first ran side by side; the lab's quota is raised by up.sh); `reclaim` and `openstack`, which must not overlap, are both in the second group, which
# runs its binaries one after another. Both groups name `--workspace`, so features match the build above and
# nothing compiles again. The second group is every test target but the first's, read from cargo metadata.
slow=(api_schema settlement internet real_vm)
rest=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
slow = set(sys.argv[1:])
meta = json.load(sys.stdin)
names = {t["name"] for p in meta["packages"] for t in p["targets"] if "test" in t["kind"]}
missing = slow - names
if missing:
    sys.exit("test.sh: no test target named " + ", ".join(sorted(missing)))
print(" ".join("--test=" + n for n in sorted(names - slow)))
' "${slow[@]}")
read -r -a rest <<< "$rest"
status=0
set -m
cargo test --workspace --locked --no-fail-fast "${slow[@]/#/--test=}" > "$logs/tests-slow.log" 2>&1 &
slow_tests=$!; pids+=("$slow_tests")
set +m
cargo test --workspace --locked --no-fail-fast --lib --bins "${rest[@]}" || status=$?
wait "$slow_tests" || status=$?
echo "test.sh: the end-to-end group (${slow[*]}), run beside the above:" >&2
cat "$logs/tests-slow.log"
cargo test --workspace --locked --doc || status=$?
finish "$fuzz_build" "building the fuzz targets" "$logs/fuzz-build.log"
[[ $status == 0 ]] || exit "$status"
# Every fuzz target, briefly (cargo-fuzz on stable with RUSTC_BOOTSTRAP=1; a crash fails the run).
bash testnet/fuzz.sh 10
# The main job (testnet/run.sh) reuses this build: it compiles no dependency again.
bash testnet/build.sh --no-dependency
