# Sourced by the scripts: one cargo target dir outside the clone, so repeated runs and CI reuse the build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XOV_CACHE:-$HOME/.cache/xov}/target}
mkdir -p "$CARGO_TARGET_DIR"
