#!/usr/bin/env bash
# Self-test of image.sh without OpenStack: build the image, make a Nova-style config drive
# holding a fresh ed25519 key, boot it under QEMU/TCG the way Nova's libvirt driver would
# (kernel + initrd, Nova's kernel command line, config drive as an IDE cdrom on the 'pc'
# machine, virtio-net NIC), wait for the console markers, ssh in, check that another key
# and password logins are refused, then power it off through ACPI and clean up.
# Then two more boots: no config drive (key from a stand-in EC2 metadata service on 127.0.0.1),
# and a q35 machine with the config drive on a virtio-scsi cdrom.
#
#   selftest.sh            # exits 0 when every check passed
#   XOV_SELFTEST_KEEP=1    # keep the temp dir (console log, keys) for a look afterwards
#   XOV_SELFTEST_TIMEOUT   # seconds to wait for the sshd marker (default 300)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
TIMEOUT=${XOV_SELFTEST_TIMEOUT:-300}
T=$(mktemp -d /tmp/realvm-selftest.XXXXXX)
QPID=
HPID=
PASS=0
FAIL=0

cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$QPID" 2>/dev/null || true
  fi
  [ -z "$HPID" ] || kill "$HPID" 2>/dev/null || true
  if [ -n "${XOV_SELFTEST_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

ok()   { echo "ok   - $*"; PASS=$((PASS+1)); }
bad()  { echo "FAIL - $*"; FAIL=$((FAIL+1)); }
now()  { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- host packages: genisoimage, qemu ------------------------------------------------------
need=()
command -v genisoimage >/dev/null || need+=(genisoimage)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v ssh >/dev/null || need+=(openssh-client)
command -v socat >/dev/null || need+=(socat)
command -v python3 >/dev/null || need+=(python3)   # free port, QMP, stand-in metadata server
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "selftest: installing ${need[*]}"
  if ! apt-get install -y -q --no-install-recommends "${need[@]}"; then
    apt-get update -q
    if ! apt-get install -y -q --no-install-recommends "${need[@]}"; then
      # this project's machines carry qemu-utils 10 from bookworm-backports (see ../lib.sh)
      qemu_from_backports && bpo_install "${need[@]}"
    fi
  fi
fi

# --- image, keys, config drive ---------------------------------------------------------------
nice -n 10 "$HERE/image.sh" "$T/img"
ssh-keygen -q -t ed25519 -N '' -C xov-selftest -f "$T/key"
ssh-keygen -q -t ed25519 -N '' -C xov-other -f "$T/other"
PUB=$(cat "$T/key.pub")
mkdir -p "$T/cd/openstack/latest" "$T/cd/ec2/latest"
UUID=$(cat /proc/sys/kernel/random/uuid)
# Shaped like what Nova writes (json.dumps, one line; a Nova-generated key ends with "\n").
cat > "$T/cd/openstack/latest/meta_data.json" <<EOF
{"uuid": "$UUID", "meta": {}, "public_keys": {"xov-selftest": "$PUB\n"}, "keys": [{"name": "xov-selftest", "type": "ssh", "data": "$PUB\n"}], "hostname": "xov-selftest.novalocal", "name": "xov-selftest", "launch_index": 0, "availability_zone": "nova", "random_seed": "c2VsZnRlc3Q=", "project_id": "00000000000000000000000000000000", "devices": [], "dedicated_cpus": []}
EOF
echo '{"services": [], "links": [], "networks": []}' > "$T/cd/openstack/latest/network_data.json"
# Nova's own genisoimage call (nova/virt/configdrive.py, config_drive_format=iso9660)
genisoimage -o "$T/config.iso" -ldots -allow-lowercase -allow-multidot -l \
  -publisher "OpenStack Compute (xov selftest)" -quiet -J -r -V config-2 "$T/cd"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CMDLINE=$(cat "$T/img/cmdline")
truncate -s 1M "$T/root.raw"   # stands in for the instance's root disk (vda) that Nova attaches

# boot NAME EXTRA_CMDLINE QEMU_ARGS... : starts qemu in the background; sets QPID LOG QMP T0.
# The NIC: user-mode network, isolated (restrict=on), only 127.0.0.1:$PORT -> guest:22.
boot() {
  local name=$1 extra=$2; shift 2
  LOG=$T/console-$name.log
  : > "$LOG"
  T0=$(now)
  nice -n 10 qemu-system-x86_64 -accel tcg -machine "${MACHINE:-pc}" -m 256 -smp 1 \
    -display none -monitor none -serial "file:$LOG" \
    -qmp "unix:$T/qmp-$name.sock,server=on,wait=off" \
    -kernel "$T/img/vmlinuz" -initrd "$T/img/initrd.img" -append "$CMDLINE${extra:+ $extra}" \
    -drive "file=$T/root.raw,if=virtio,format=raw" \
    -device virtio-net-pci,netdev=n0 \
    "$@" > "$T/qemu-$name.out" 2>&1 &
  QPID=$!
  QMP=$T/qmp-$name.sock
  echo "selftest[$name]: qemu pid $QPID, ssh port $PORT, console $LOG"
}

wait_marker() {  # wait_marker REGEX -> 0 when it appears on the console, 1 on timeout/death
  local deadline=$(( $(date +%s) + TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -aq "$1" "$LOG" && return 0
    kill -0 "$QPID" 2>/dev/null || { echo "selftest: qemu exited"; cat "$T"/qemu-*.out; return 1; }
    grep -aq 'Kernel panic' "$LOG" && return 1
    sleep 0.2
  done
  return 1
}

SSHO=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
      -o IdentitiesOnly=yes -o ConnectTimeout=30 -o LogLevel=ERROR)
ssh_ok() {  # ssh_ok KEY CMD -> prints output; retries a few times
  local out
  for _ in 1 2 3 4 5; do
    if out=$(ssh -i "$1" -p "$PORT" "${SSHO[@]}" root@127.0.0.1 "$2" 2>"$T/ssh.err"); then
      echo "$out"; return 0
    fi
    sleep 1
  done
  return 1
}
ssh_refused() {  # ssh_refused KEY -> 0 when the server says Permission denied
  if ssh -i "$1" -p "$PORT" "${SSHO[@]}" root@127.0.0.1 true 2>"$T/ssh2.err"; then return 1; fi
  grep -q 'Permission denied' "$T/ssh2.err"
}
poweroff_vm() {  # ACPI power button through QMP (what libvirt's shutdown, hence 'nova stop', does)
  local t1 gone=
  t1=$(now)
  if ! kill -0 "$QPID" 2>/dev/null; then bad "ACPI power button: qemu was not running"; QPID=; return; fi
  python3 - "$QMP" <<'PY' || true
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush(); f.readline()
PY
  for _ in $(seq 600); do kill -0 "$QPID" 2>/dev/null || { gone=1; break; }; sleep 0.1; done
  if [ -n "$gone" ]; then
    ok "ACPI power button: guest powered off in $(since "$t1")s"; QPID=
  else
    bad "ACPI power button: guest still running after 60s"
    kill "$QPID"; wait "$QPID" 2>/dev/null || true; QPID=
  fi
}

# === 1. config drive (ISO9660 'config-2' on an IDE cdrom, as Nova does on the 'pc' machine) ===
PORT=$(free_port)
boot cd "" \
  -drive "file=$T/config.iso,media=cdrom,if=ide,readonly=on" \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22"
if wait_marker 'xov-image: sshd ready'; then
  T_SSHD=$(since "$T0"); ok "[config drive] sshd ready marker after ${T_SSHD}s"
else
  bad "[config drive] no sshd ready marker within ${TIMEOUT}s"; tail -n 60 "$LOG"; exit 1
fi
for m in 'xov-image: network up 10.0.2.15' 'xov-image: config drive found on /dev/sr' \
         'xov-image: key installed (1 from config drive' 'BEGIN SSH HOST KEY KEYS'; do
  if grep -aqF "$m" "$LOG"; then ok "[config drive] console: $m"; else bad "[config drive] console lacks: $m"; fi
done
if OUTP=$(ssh_ok "$T/key" 'uname -a'); then
  T_SSH=$(since "$T0"); ok "[config drive] ssh root@ with the config-drive key after ${T_SSH}s: $OUTP"
  who=$(ssh_ok "$T/key" 'id -un; hostname; cat /root/.ssh/authorized_keys') || true
  case "$who" in
    root*xov-selftest*"$PUB"*) ok "[config drive] root session, hostname from meta_data, key in authorized_keys" ;;
    *) bad "[config drive] unexpected session state: $who" ;;
  esac
else
  bad "[config drive] ssh with the config-drive key: $(cat "$T/ssh.err")"
fi
if ssh_refused "$T/other"; then
  ok "[config drive] a different key is refused: $(tr -d '\r' < "$T/ssh2.err" | tail -n1)"
else
  bad "[config drive] a different key: not refused as expected: $(cat "$T/ssh2.err")"
fi
if ssh -p "$PORT" "${SSHO[@]}" -o PubkeyAuthentication=no \
     -o PreferredAuthentications=password,keyboard-interactive root@127.0.0.1 true 2>"$T/ssh3.err"; then
  bad "[config drive] a login without key was accepted"
elif grep -q 'Permission denied (publickey)' "$T/ssh3.err"; then
  ok "[config drive] password logins are not offered (server offers publickey only)"
else
  bad "[config drive] password check: unexpected error $(cat "$T/ssh3.err")"
fi
poweroff_vm
grep -aq 'xov-image: shutting down' "$LOG" && ok "[config drive] clean shutdown marker" ||
  bad "[config drive] no shutdown marker"

# === 2. no config drive: the key comes from the EC2-style metadata service ====================
# A local HTTP server on 127.0.0.1 stands in for 169.254.169.254; slirp's guestfwd makes it
# 10.0.2.100:80 inside the guest (one socat per guest connection; a plain tcp: guestfwd would be a
# single stream opened at start) and xov.metadata_url= points the image at it (restrict=on keeps
# every other destination unreachable). It serves the *other* key.
mkdir -p "$T/md/latest/meta-data/public-keys/0"
cp "$T/other.pub" "$T/md/latest/meta-data/public-keys/0/openssh-key"
MDPORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$T/md" "$MDPORT" > "$T/md.log" 2>&1 &
HPID=$!
for _ in $(seq 100); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $MDPORT), 1)" 2>/dev/null && break
  sleep 0.1
done
PORT=$(free_port)
boot md "xov.metadata_url=http://10.0.2.100" \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$MDPORT"
if wait_marker 'xov-image: sshd ready'; then
  T_SSHD2=$(since "$T0"); ok "[metadata] sshd ready marker after ${T_SSHD2}s"
  grep -aqF 'xov-image: no config drive' "$LOG" && ok "[metadata] console: no config drive" ||
    bad "[metadata] console lacks 'no config drive'"
  grep -aqF 'xov-image: key installed (1 from metadata service (ec2))' "$LOG" &&
    ok "[metadata] console: key installed from the metadata service" || bad "[metadata] key marker missing"
  if OUTP=$(ssh_ok "$T/other" 'uname -a'); then
    ok "[metadata] ssh with the metadata key after $(since "$T0")s"
  else
    bad "[metadata] ssh with the metadata key: $(cat "$T/ssh.err")"
  fi
  if ssh_refused "$T/key"; then ok "[metadata] the config-drive key is refused"; else bad "[metadata] config-drive key not refused"; fi
else
  bad "[metadata] no sshd ready marker within ${TIMEOUT}s"; tail -n 40 "$LOG"
fi
poweroff_vm
kill "$HPID" 2>/dev/null || true; wait "$HPID" 2>/dev/null || true; HPID=

# === 3. q35: config drive on a virtio-scsi cdrom ============================================
# On q35 Nova puts the config drive on SATA, and the cloud kernel has no AHCI driver; with the
# image properties hw_cdrom_bus=scsi + hw_scsi_model=virtio-scsi libvirt gives it this shape.
PORT=$(free_port)
MACHINE=q35 boot q35 "" \
  -device virtio-scsi-pci,id=scsi0 \
  -drive "file=$T/config.iso,media=cdrom,if=none,id=cd0,readonly=on" -device scsi-cd,bus=scsi0.0,drive=cd0 \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22"
if wait_marker 'xov-image: sshd ready'; then
  T_SSHD3=$(since "$T0"); ok "[q35 virtio-scsi] sshd ready marker after ${T_SSHD3}s"
  grep -aqF 'xov-image: key installed (1 from config drive' "$LOG" &&
    ok "[q35 virtio-scsi] key from the config drive" || bad "[q35 virtio-scsi] key marker missing"
  if ssh_ok "$T/key" true >/dev/null; then ok "[q35 virtio-scsi] ssh with the config-drive key"
  else bad "[q35 virtio-scsi] ssh: $(cat "$T/ssh.err")"; fi
else
  bad "[q35 virtio-scsi] no sshd ready marker within ${TIMEOUT}s"; tail -n 40 "$LOG"
fi
poweroff_vm

echo
echo "config drive boot: qemu start -> sshd marker ${T_SSHD:-?} s, -> first successful ssh ${T_SSH:-?} s"
echo "metadata boot:     qemu start -> sshd marker ${T_SSHD2:-?} s"
echo "q35 virtio-scsi:   qemu start -> sshd marker ${T_SSHD3:-?} s"
echo "sizes: vmlinuz $(stat -c %s "$T/img/vmlinuz") B, initrd.img $(stat -c %s "$T/img/initrd.img") B"
grep -a 'xov-image:' "$T/console-cd.log" | tr -d '\r' | sed 's/^/  console[cd]| /'
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
