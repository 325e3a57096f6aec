#!/usr/bin/env bash
# glance.sh IMAGEDIR - register the tiny image (image.sh's vmlinuz and initrd.img) in the lab's Glance the way
# CirrOS-style images are: the kernel as `aki`, the initramfs as `ari`, and a 1 MiB raw root disk `xov-tiny`
# whose properties `kernel_id` and `ramdisk_id` name them, so Nova's libvirt driver boots the kernel directly.
#
# Invariants: idempotent by name (`xov-tiny-kernel`, `xov-tiny-ramdisk`, `xov-tiny`); an image whose upload
# did not finish (status `queued`) is uploaded again; images whose content changed (another checksum) are
# replaced: the new ones are made first, then the new root disk, and only then are the older versions
# deleted, so any `xov-tiny` names a kernel and ramdisk that exist. Prints the id of
# `xov-tiny` on the last line. Talks to the lab's plain-http Glance and Keystone on 127.0.0.1 only.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(cd "$(dirname "$0")" && pwd)/../lib.sh"
DIR=${1:?usage: glance.sh IMAGEDIR (made by image.sh)}
LAB=${OSLAB_DIR:-/tmp/openstack-lab/state}
KS=http://127.0.0.1:5000/v3 GLANCE=http://127.0.0.1:9292
PASSWORD=${OSLAB_ADMIN_PASSWORD:-admin}
log() { echo "glance.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for f in vmlinuz initrd.img; do [ -s "$DIR/$f" ] || die "$DIR/$f missing: run image.sh $DIR first"; done

TOKEN=$(admin_token "$KS" "$PASSWORD") || true
[ -n "$TOKEN" ] || die "no token from $KS (is the lab up? sudo bash testnet/openstack/up.sh)"
g() { curl -sf -H "X-Auth-Token: $TOKEN" "$@"; }

# ensure NAME FILE DISK_FORMAT CONTAINER_FORMAT: the id of an active image NAME holding FILE
ensure() {
  local name=$1 file=$2 dfmt=$3 cfmt=$4 sum id status
  sum=$(md5sum "$file" | cut -d' ' -f1)
  id=$(g "$GLANCE/v2/images?name=$name" | jq -r --arg s "$sum" '.images[] | select(.checksum == $s or .status == "queued") | .id' | head -n1)
  if [ -z "$id" ]; then
    id=$(g -X POST -H 'Content-Type: application/json' "$GLANCE/v2/images" \
      -d "{\"name\":\"$name\",\"disk_format\":\"$dfmt\",\"container_format\":\"$cfmt\",\"visibility\":\"public\"}" | jq -r .id)
    [ -n "$id" ] && [ "$id" != null ] || die "cannot create image $name"
  fi
  status=$(g "$GLANCE/v2/images/$id" | jq -r .status)
  if [ "$status" = queued ]; then
    g -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$file" "$GLANCE/v2/images/$id/file" >/dev/null
    status=$(g "$GLANCE/v2/images/$id" | jq -r .status)
    log "uploaded $name ($id, $(stat -c %s "$file") B)"
  fi
  [ "$status" = active ] || die "image $name ($id) is $status"
  echo "$id"
}

# prune NAME KEEP: delete the other images called NAME (older versions)
prune() {
  g "$GLANCE/v2/images?name=$1" | jq -r --arg id "$2" '.images[] | select(.id != $id) | .id' |
    while read -r old; do g -X DELETE "$GLANCE/v2/images/$old" >/dev/null && log "removed an older $1 ($old)"; done
}

KERNEL=$(ensure xov-tiny-kernel "$DIR/vmlinuz" aki aki)
RAMDISK=$(ensure xov-tiny-ramdisk "$DIR/initrd.img" ari ari)
root=$(mktemp)
trap 'rm -f "$root"' EXIT
truncate -s 1M "$root"
# the root disk is ignored by the image (everything runs from the initramfs); a new kernel or ramdisk makes
# a new root disk image, since its properties name them
cur=$(g "$GLANCE/v2/images?name=xov-tiny" | jq -r --arg k "$KERNEL" --arg r "$RAMDISK" \
  '.images[] | select(.kernel_id == $k and .ramdisk_id == $r and (.status == "active" or .status == "queued")) | .id' | head -n1)
if [ -z "$cur" ]; then
  cur=$(g -X POST -H 'Content-Type: application/json' "$GLANCE/v2/images" -d "{\"name\":\"xov-tiny\",\"disk_format\":\"raw\",
    \"container_format\":\"bare\",\"visibility\":\"public\",\"kernel_id\":\"$KERNEL\",\"ramdisk_id\":\"$RAMDISK\",\"hw_machine_type\":\"pc\"}" | jq -r .id)
  [ -n "$cur" ] && [ "$cur" != null ] || die "cannot create image xov-tiny"
fi
if [ "$(g "$GLANCE/v2/images/$cur" | jq -r .status)" = queued ]; then
  g -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$root" "$GLANCE/v2/images/$cur/file" >/dev/null
  log "uploaded xov-tiny ($cur, 1 MiB root disk)"
fi
[ "$(g "$GLANCE/v2/images/$cur" | jq -r .status)" = active ] || die "image xov-tiny ($cur) is not active"
# Only the real compute host (realvm/up.sh) can boot it: Placement picks a host with this trait, and the
# host's aggregate isolates it from images that do not ask for it.
g -X PATCH -H 'Content-Type: application/openstack-images-v2.1-json-patch' "$GLANCE/v2/images/$cur" \
  -d '[{"op":"add","path":"/trait:CUSTOM_XOV_REAL","value":"required"}]' >/dev/null \
  || die "cannot set trait:CUSTOM_XOV_REAL on xov-tiny ($cur)"
prune xov-tiny "$cur"
prune xov-tiny-kernel "$KERNEL"
prune xov-tiny-ramdisk "$RAMDISK"
log "xov-tiny $cur boots kernel $KERNEL with ramdisk $RAMDISK"
echo "$cur"
