#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `bash testnet/fuzz.sh [SECONDS_PER_TARGET]` (default 10).
# cargo-fuzz (crates.io, 0.13) is installed once into the cache; it runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (libFuzzer needs -Z flags). Each target starts from its seed corpus in the repository
# (read-only here: what libFuzzer finds goes to a temporary directory) and fails the run on a crash, leak or
# timeout, printing the input that did it. A long campaign: `bash testnet/fuzz.sh 3600`. Crates: protocol/fuzz
# and node/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
source testnet/env.sh
# `fuzz.sh --build-only [SECONDS]`: install cargo-fuzz and build the targets as a run of SECONDS would, run
# nothing (the test command builds them while the tests run).
build_only=""
if [[ ${1:-} == --build-only ]]; then build_only=1; shift; fi
secs=${1:-10}
tools=${XOV_CACHE:-$HOME/.cache/xov}/tools
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13'; then
  echo "installing cargo-fuzz 0.13 into $tools (once, about 2 minutes)" >&2
  cargo install cargo-fuzz --version '^0.13' --locked --root "$tools" --quiet
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
# Each crate with a fuzz/ directory: its targets, built once into its own target dir (fuzz-<crate>). The node's
# cold build is long (RocksDB's C++; see docs/benchmarks.md): XOV_FUZZ_CRATES=protocol skips it.
for crate in ${XOV_FUZZ_CRATES:-protocol node}; do
  targets=$(cd "$crate" && cargo fuzz list)
  mode=()
  timeout=10
  if [[ $crate == node ]]; then
    # RocksDB's C++ is most of the node's cold build and is not instrumented anyway: link the archive the
    # workspace's test build already made, when there is one (the test command runs the tests first).
    lib=$(ls -t "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
    if [[ -n $lib ]]; then
      export ROCKSDB_LIB_DIR=$(dirname "$lib") ROCKSDB_STATIC=1
    fi
    # Short runs (CI's smoke test) build without optimisation: minutes less to build, and 10 s of a slow
    # target finds what a fast one would in a short run; campaigns (over a minute a target) build optimised.
    # (Unoptimised, one lease_machine script with many settled leases can take tens of seconds: a hang is
    # still one that takes over two minutes.)
    if (( secs <= 60 )); then mode=(--dev); timeout=120; fi
  fi
  (cd "$crate" && cargo fuzz build "${mode[@]}" --target-dir "$CARGO_TARGET_DIR/fuzz-$crate" >&2)
  [[ -n $build_only ]] && continue
  for t in $targets; do
    work="$scratch/$crate-$t"
    mkdir -p "$work" "$crate/fuzz/corpus/$t"
    log="$work.log"
    if ! (cd "$crate" && cargo fuzz run "${mode[@]}" --target-dir "$CARGO_TARGET_DIR/fuzz-$crate" "$t" \
      "$work" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout="$timeout" -print_final_stats=1 \
      -artifact_prefix="$work-") >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "fuzz target $crate/$t FAILED; the input is in:" >&2
      ls "$work-"* >&2 || true
      for a in "$work-"*; do [[ -f $a ]] && base64 -w0 "$a" >&2 && echo >&2; done
      exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
    summary+=("fuzz: $crate/$t runs=$runs cov=$cov secs=$secs")
  done
done
if [[ -n $build_only ]]; then echo "fuzz: targets of ${XOV_FUZZ_CRATES:-protocol node} built"; exit 0; fi
printf '%s\n' "${summary[@]}"
