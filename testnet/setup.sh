#!/usr/bin/env bash
# Installs what building and testing xov needs on a fresh Debian 12 machine (run as root, or with sudo).
# Safe to re-run: installs only what is missing. Later steps (bitcoind, OpenStack lab) are added here as the
# features that need them land.
set -euo pipefail
# chromium, nodejs and npm: the dashboard's browser test (headless Chromium driven by playwright-core).
# dnsmasq-base: the internet test answers a seed name with it; nftables and iproute2: its NAT routers.
# python3-venv: Schemathesis, the API fuzzer of testnet/tests/api_schema.rs, is installed from PyPI into one.
need=(build-essential pkg-config clang libclang-dev openssh-client chromium dnsmasq-base nftables iproute2 python3-venv)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# A Node.js from elsewhere (e.g. NodeSource, which bundles npm) conflicts with Debian's npm: use what is there.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (https://rustup.rs), then re-run" >&2
  exit 1
fi
# Schemathesis (PyPI, pinned) in a virtualenv under the cache; the API test finds it there.
bash "$(dirname "$0")/schemathesis/install.sh" >/dev/null
