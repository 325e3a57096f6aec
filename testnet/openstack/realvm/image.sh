#!/usr/bin/env bash
# Build a tiny CirrOS-style kernel + initramfs for the real-VM lab.
#
#   image.sh OUTDIR
#
# Writes OUTDIR/vmlinuz (Debian's linux-image-cloud-amd64 kernel, copied from /boot)
# and OUTDIR/initrd.img (busybox-static + dropbear, gzip'd newc cpio), plus
# OUTDIR/kernel-version and OUTDIR/cmdline (the command line to boot it with).
# Installs the Debian packages it needs when missing; skips the build when the
# outputs are newer than every input (this script, the kernel, modules, binaries).
# Set XOV_IMAGE_FORCE=1 to rebuild anyway.
set -euo pipefail

OUT=${1:?usage: image.sh OUTDIR}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
PKGS=(linux-image-cloud-amd64 busybox-static dropbear-bin cpio kmod)

log() { echo "image.sh: $*" >&2; }

# --- packages -------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing packages ${missing[*]} and not root"; exit 1; }
  log "installing ${missing[*]}"
  # None of these packages starts a service (dropbear-bin is the binaries only, without the
  # dropbear/dropbear-run init script), so no policy-rc.d guard is needed. The kernel package
  # pulls initramfs-tools and builds Debian's own initrd in /boot, which we do not use.
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
fi

# The kernel version the cloud meta-package points at (linux-image-6.1.0-NN-cloud-amd64).
KVER=$(dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 |
  grep -o 'linux-image-[0-9][^ ,]*-cloud-amd64' | head -n1 | sed 's/^linux-image-//')
[ -n "$KVER" ] || { log "cannot tell the kernel version of linux-image-cloud-amd64"; exit 1; }
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] && [ -d "$MODDIR" ] || { log "missing $KERNEL or $MODDIR"; exit 1; }

# Modules the guest needs (everything below is =m in the cloud kernel; devtmpfs, af_packet,
# unix, inet, 8250 serial console, the gzip/xz/zstd initramfs decompressors are built in).
# The cloud kernel has no AHCI driver at all (CONFIG_SATA_AHCI unset), so a config drive on
# a SATA cdrom (Nova's choice on q35 machines) is invisible: see README.md.
MODULES=(
  virtio_pci virtio_net virtio_blk virtio_scsi virtio_console virtio_rng  # virtio devices
  sd_mod sr_mod ata_piix ata_generic                                     # disks, IDE cdrom
  isofs vfat nls_cp437 nls_iso8859_1 nls_utf8                            # config drive fs
  button evdev                                                           # ACPI power button
)
BINS=(/usr/sbin/dropbear /usr/bin/dropbearkey /bin/busybox)

# --- up to date? ----------------------------------------------------------------------
if [ -z "${XOV_IMAGE_FORCE:-}" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] &&
   [ "$(cat "$OUT/kernel-version" 2>/dev/null)" = "$KVER" ]; then
  newer=$(find "$SELF" "$KERNEL" "$MODDIR/modules.dep" "${BINS[@]}" -newer "$OUT/initrd.img" 2>/dev/null | head -n1)
  if [ -z "$newer" ] && ! [ "$KERNEL" -nt "$OUT/vmlinuz" ]; then
    log "up to date: $OUT (kernel $KVER)"
    exit 0
  fi
fi

mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/realvm-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc/dropbear,proc,sys,dev,run,tmp,var/log,root,lib64,lib/x86_64-linux-gnu,usr/share/udhcpc,etc/acpi/PWRF,mnt/config}
chmod 700 "$R/root"
chmod 1777 "$R/tmp"
ln -s ../run "$R/var/run"

# --- busybox and dropbear ---------------------------------------------------------------
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list-full); do
  [ -e "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done
cp /usr/sbin/dropbear "$R/usr/sbin/dropbear"
cp /usr/bin/dropbearkey "$R/usr/bin/dropbearkey"
for b in /usr/sbin/dropbear /usr/bin/dropbearkey; do
  ldd "$b" | grep -o '/[^ ]*' | while read -r lib; do
    real=$(readlink -f "$lib")
    mkdir -p "$R$(dirname "$lib")"
    [ -e "$R$lib" ] || cp "$real" "$R$lib"
  done
done

# --- kernel modules, in dependency order --------------------------------------------------
: > "$R/etc/xov-modules"
for m in "${MODULES[@]}"; do
  modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  rel=${ko#"$MODDIR"/}
  mkdir -p "$R$MODDIR/$(dirname "$rel")"
  cp "$ko" "$R$MODDIR/$rel"
  echo "$rel" >> "$R/etc/xov-modules"
done
cp "$MODDIR"/modules.builtin* "$MODDIR"/modules.order "$R$MODDIR/" 2>/dev/null || true
depmod -b "$R" "$KVER"   # so that busybox modprobe works for someone logged in
echo "$KVER" > "$R/etc/xov-kernel-version"

# --- /etc -------------------------------------------------------------------------------
cat > "$R/etc/passwd" <<'EOF'
root:*:0:0:root:/root:/bin/sh
sshd:*:100:65534:sshd:/run:/bin/false
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
printf '/bin/sh\n/bin/ash\n' > "$R/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$R/etc/hosts"
echo xov-vm > "$R/etc/hostname"
cat > "$R/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PS1='\u@\h:\w\$ '
EOF
# busybox init runs after /init has done everything: it only reaps and handles shutdown.
cat > "$R/etc/inittab" <<'EOF'
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/xov-say shutting down
::shutdown:/bin/umount -a -r
::restart:/sbin/init
EOF
# busybox acpid: the power button (what "nova stop" / libvirt shutdown presses) powers off.
printf '#!/bin/sh\nexec /sbin/poweroff\n' > "$R/etc/acpi/PWRF/00000080"
chmod 755 "$R/etc/acpi/PWRF/00000080"

cat > "$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# busybox udhcpc hook: $interface $ip $mask(prefix) $router $dns $domain $mtu $staticroutes
case "$1" in
deconfig)
  ip -4 addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound|renew)
  if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$mask "; then
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" ${broadcast:+broadcast "$broadcast"} dev "$interface"
  fi
  [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
  # RFC 3442 classless routes (Neutron sends one for 169.254.169.254 on isolated networks)
  if [ -n "$staticroutes" ]; then
    set -- $staticroutes
    while [ $# -ge 2 ]; do
      ip route replace "$1" via "$2" dev "$interface" 2>/dev/null ||
        ip route replace "$1" dev "$interface"
      shift 2
    done
  fi
  for r in $router; do
    ip route replace default via "$r" dev "$interface" && break
  done
  : > /etc/resolv.conf
  [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  echo "$ip" > /run/xov-ip
  ;;
esac
exit 0
EOF
chmod 755 "$R/usr/share/udhcpc/default.script"

# xov-say TEXT: "xov-image: TEXT" on every active console; xov-say - : copy stdin there.
# (/dev/console alone is not enough: with Nova's "console=tty0 console=ttyS0 console=hvc0"
# it is tty0, while the console log that Nova keeps is ttyS0.)
cat > "$R/bin/xov-say" <<'EOF'
#!/bin/sh
if [ "$1" = - ]; then text=$(cat); else text="xov-image: $* [$(cut -d' ' -f1 /proc/uptime)s]"; fi
cons=$(cat /sys/class/tty/console/active 2>/dev/null)
for c in ${cons:-console}; do
  [ -c "/dev/$c" ] && printf '\r\n%s\r\n' "$text" > "/dev/$c" 2>/dev/null
done
exit 0
EOF
chmod 755 "$R/bin/xov-say"

# --- /init ------------------------------------------------------------------------------
cat > "$R/init" <<'EOF'
#!/bin/sh
# xov tiny image: bring up network, install the instance's ssh key, start dropbear.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
exec </dev/console >/dev/console 2>&1

# Markers go to every active console: with Nova's console=tty0 console=ttyS0 console=hvc0,
# /dev/console ends up on tty0 (VGA), while the console log Nova keeps is ttyS0.
con() { /bin/xov-say -; }
say() { /bin/xov-say "$@"; }
say "init started, kernel $(uname -r)"
hostname -F /etc/hostname
ip link set lo up
MDURL=http://169.254.169.254
for a in $(cat /proc/cmdline); do
  case "$a" in
    xov.metadata_url=*) MDURL=${a#*=} ;;   # for tests: where the metadata service is
  esac
done

KVER=$(cat /etc/xov-kernel-version)
while read -r ko; do
  insmod "/lib/modules/$KVER/$ko" 2>/dev/null
done < /etc/xov-modules
say "modules loaded"
syslogd -C64
acpid 2>/dev/null

# Host key, in the background from now on: dropbearkey blocks in getrandom() until the kernel's
# random pool is initialised, which under TCG (no RDRAND, usually no virtio-rng) takes seconds;
# the wait then overlaps DHCP and the config drive instead of adding to them.
HK=/etc/dropbear/dropbear_ed25519_host_key
dropbearkey -t ed25519 -f $HK >/run/hostkey.log 2>&1 &
HKPID=$!

# --- network: DHCP on the first ethernet interface -------------------------------------
IF=
i=0
while [ $i -lt 100 ]; do
  for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] && continue
    [ "$(cat /sys/class/net/$n/type 2>/dev/null)" = 1 ] && { IF=$n; break; }
  done
  [ -n "$IF" ] && break
  sleep 0.1; i=$((i+1))
done
if [ -z "$IF" ]; then
  say "network FAILED: no ethernet interface"
else
  ip link set "$IF" up
  if udhcpc -i "$IF" -s /usr/share/udhcpc/default.script -O mtu -O staticroutes \
       -x hostname:"$(hostname)" -t 20 -T 2 -A 3 -n -S -p /run/udhcpc.pid; then
    say "network up $(cat /run/xov-ip 2>/dev/null) on $IF"
  else
    say "network FAILED: no DHCP lease on $IF (retrying in background)"
    udhcpc -i "$IF" -s /usr/share/udhcpc/default.script -O mtu -O staticroutes -b -S -p /run/udhcpc.pid
  fi
fi

# --- ssh key: config drive (label config-2), else the metadata service -----------------
mkdir -p /root/.ssh
chmod 700 /root /root/.ssh
AK=/root/.ssh/authorized_keys
: > $AK
chmod 600 $AK

# Values of the "public_keys" object of Nova's meta_data.json ({"name": "ssh-... \n", ...}).
json_keys() {
  tr -d '\r\n' < "$1" | awk '{
    i = index($0, "\"public_keys\""); if (!i) exit
    s = substr($0, i + 13); i = index(s, "{"); if (!i) exit
    s = substr(s, i + 1); j = index(s, "}"); s = substr(s, 1, j - 1)
    n = split(s, a, "\"")            # a[2]=name a[4]=key a[6]=name a[8]=key ...
    for (k = 4; k <= n; k += 4) { v = a[k]; gsub(/\\n/, "", v); gsub(/\\\//, "/", v); if (v != "") print v }
  }'
}
json_str() {  # json_str FILE KEY -> top-level string value (first match)
  tr -d '\r\n' < "$1" | sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" | head -n1
}

cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }   # uptime in centiseconds
CD=
t0=$(cs) tchange=$(cs) lastdevs= probed=" "
while :; do
  for lbl in config-2 CONFIG-2; do
    CD=$(findfs LABEL=$lbl 2>/dev/null) && break
  done
  [ -n "$CD" ] && break
  # no label match: probe each new cdrom/disk once by mounting it
  for d in /dev/sr[0-9] /dev/vd[a-z] /dev/sd[a-z] /dev/hd[a-z]; do
    [ -b "$d" ] || continue
    case "$probed" in *" $d "*) continue ;; esac
    probed="$probed$d "
    for t in iso9660 vfat; do
      if mount -r -t $t "$d" /mnt/config 2>/dev/null; then
        [ -f /mnt/config/openstack/latest/meta_data.json ] && CD=$d
        umount /mnt/config
        [ -n "$CD" ] && break 3
      fi
    done
  done
  # cdroms and disks show up asynchronously after ata_piix/sr_mod/virtio_blk load: give up
  # once the set of candidate devices has not changed for 1 s (and 1 s has passed), or at 5 s
  devs=$(ls /dev/sr[0-9] /dev/vd[a-z] /dev/sd[a-z] /dev/hd[a-z] 2>/dev/null | tr '\n' ' ')
  now=$(cs)
  [ "$devs" = "$lastdevs" ] || { lastdevs=$devs; tchange=$now; }
  [ $((now - t0)) -ge 100 ] && [ $((now - tchange)) -ge 100 ] && break
  [ $((now - t0)) -ge 500 ] && break
  sleep 0.2
done

SRC=
if [ -n "$CD" ]; then
  if mount -r -t iso9660 "$CD" /mnt/config 2>/dev/null || mount -r -t vfat "$CD" /mnt/config 2>/dev/null; then
    MD=/mnt/config/openstack/latest/meta_data.json
    if [ -f $MD ]; then
      cp $MD /run/meta_data.json
      json_keys $MD >> $AK
      # Nova's random_seed: mixed into the pool (not credited, so it does not unblock getrandom)
      json_str $MD random_seed | base64 -d > /dev/urandom 2>/dev/null
      h=$(json_str $MD hostname); h=${h%%.*}
      [ -n "$h" ] && hostname "$h" && echo "$h" > /etc/hostname
      SRC="config drive $CD"
    fi
    umount /mnt/config
  fi
  say "config drive found on $CD"
else
  say "no config drive"
fi
if ! [ -s $AK ]; then
  i=0
  while [ $i -lt 6 ]; do
    # (not wget -T: Debian 12's busybox-static 1.35 wget segfaults with it)
    if timeout 8 wget -q -O /run/ec2-key "$MDURL/latest/meta-data/public-keys/0/openssh-key" 2>/dev/null &&
       grep -q '^ssh-\|^ecdsa-' /run/ec2-key; then
      cat /run/ec2-key >> $AK; SRC="metadata service (ec2)"; break
    fi
    if timeout 8 wget -q -O /run/meta_data.json "$MDURL/openstack/latest/meta_data.json" 2>/dev/null; then
      json_keys /run/meta_data.json >> $AK
      [ -s $AK ] && { SRC="metadata service (openstack)"; break; }
    fi
    i=$((i+1)); sleep 2
  done
fi
if [ -s $AK ]; then
  say "key installed ($(grep -c . $AK) from $SRC)"
else
  say "key FAILED: no public key from config drive or metadata service"
fi

# --- dropbear ---------------------------------------------------------------------------
wait $HKPID
{ echo "-----BEGIN SSH HOST KEY KEYS-----"
  dropbearkey -y -f $HK 2>/dev/null | grep '^ssh-'
  echo "-----END SSH HOST KEY KEYS-----"; } | con
say "host key $(dropbearkey -y -f $HK 2>/dev/null | sed -n 's/^Fingerprint: //p')"
# -s: no password logins; root may log in with a key (no -w/-g); -R not needed (key made above)
dropbear -s -p 22 -r $HK -P /run/dropbear.pid
i=0
while [ $i -lt 100 ] && ! netstat -ltn 2>/dev/null | grep -q ':22 .*LISTEN'; do
  sleep 0.1; i=$((i+1))
done
if netstat -ltn 2>/dev/null | grep -q ':22 .*LISTEN'; then
  say "sshd ready on $(cat /run/xov-ip 2>/dev/null):22"
else
  say "sshd FAILED to listen"
fi
exec /sbin/init
EOF
chmod 755 "$R/init"

# --- pack -------------------------------------------------------------------------------
( cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible ) |
  gzip -n -9 > "$WORK/initrd.img"
cp "$KERNEL" "$WORK/vmlinuz"
echo "$KVER" > "$WORK/kernel-version"
# what Nova's libvirt driver passes for a kernel_id image (virt_type=qemu); our /init ignores root=
echo "root=/dev/vda console=tty0 console=ttyS0 console=hvc0 no_timer_check" > "$WORK/cmdline"
mv -f "$WORK/vmlinuz" "$OUT/vmlinuz"
mv -f "$WORK/kernel-version" "$WORK/cmdline" "$OUT/"
mv -f "$WORK/initrd.img" "$OUT/initrd.img"   # last: its mtime marks a complete build
log "built $OUT: vmlinuz $(stat -c %s "$OUT/vmlinuz") B, initrd.img $(stat -c %s "$OUT/initrd.img") B (kernel $KVER)"
