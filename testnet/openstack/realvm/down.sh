#!/usr/bin/env bash
# realvm/down.sh - stop the lab's real compute mode (realvm/up.sh) and remove its data plane.
#
# Invariants: stops only processes whose command line names the lab's state directory (PID files under
# run/realvm); destroys the libvirt domains Nova made (`instance-*`) before stopping libvirtd, so no QEMU is
# left behind; removes the agents' qrouter-/qdhcp- namespaces, `oslab-buyer` and `oslab-real` (netns.sh
# down). The control-plane records (the compute service, the agents, the aggregate) stay: the next up.sh
# brings the same host back, and while it is down Nova and Neutron see it as down and use it for nothing.
# Safe to run when nothing is up.
set -uo pipefail
LAB=${OSLAB_DIR:-/tmp/openstack-lab/state}
HERE=$(cd "$(dirname "$0")" && pwd)
NS=${OSLAB_REAL_NS:-oslab-real}
BUYER_NS=${OSLAB_BUYER_NS:-oslab-buyer}
RUN=$LAB/run/realvm
log() { echo "realvm/down.sh: $*"; }
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
alive() { pid_alive "$RUN" "$LAB" "$1"; }
stop() { pid_stop "$RUN" "$LAB" "$1" | sed 's/^/realvm\/down.sh: /'; }
# nova-compute first (it would restart what we destroy), then the VMs, then the rest
stop nova-compute
if alive libvirtd; then
  for d in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep '^instance-'); do
    virsh -c qemu:///system destroy "$d" >/dev/null 2>&1
    virsh -c qemu:///system undefine --nvram "$d" >/dev/null 2>&1 || virsh -c qemu:///system undefine "$d" >/dev/null 2>&1
    log "destroyed domain $d"
  done
fi
for s in neutron-l3-agent neutron-dhcp-agent neutron-linuxbridge-agent libvirtd virtlogd; do stop "$s"; done
# what the agents left: dnsmasq in qdhcp-*, and the namespaces themselves (made by the agents above; they
# run nowhere else on a lab machine)
agent_netns_clear "$LAB" qdhcp- qrouter- | sed 's/^/realvm\/down.sh: /'
[ -e "/run/netns/$BUYER_NS" ] && ip netns del "$BUYER_NS" && log "removed namespace $BUYER_NS"
"$HERE/netns.sh" down 2>&1 | sed 's/^/realvm\/down.sh: /'
rm -f "$LAB/real"
