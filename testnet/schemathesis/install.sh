#!/usr/bin/env bash
# Installs Schemathesis (the OpenAPI fuzzer testnet/tests/api_schema.rs runs against a node) from PyPI into
# a virtualenv under the cache, once. Prints the path of its executable. Pinned: a newer release may check
# more, and that is a change to make on purpose.
set -euo pipefail
version=4.32.5
venv=${XOV_CACHE:-$HOME/.cache/xov}/st-venv
bin=$venv/bin/schemathesis
if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
echo "$bin"
