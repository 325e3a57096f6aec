#!/usr/bin/env bash
# realvm/up.sh - the lab's real compute mode (issue 17): a second Nova compute host, `oslab-real`, whose
# libvirt boots real VMs under QEMU's software emulation (TCG), with Neutron's linuxbridge, DHCP and L3 agents
# giving them DHCP, a router and floating IPs a buyer can ssh to. Run after up.sh (`up.sh --real` does both).
#
# Invariants:
# - The whole data plane lives in namespaces this script makes and down.sh removes: libvirtd, virtlogd,
#   nova-compute and the three agents run inside `oslab-real` (so their bridges and taps are made there, and
#   the agents' qdhcp-/qrouter- namespaces from there); the external network `xov-public` is a veth from
#   `oslab-real` to `oslab-buyer`, which holds its gateway 198.18.10.1 and is where a buyer's ssh starts. The
#   control plane stays on the root namespace's 127.0.0.1, reached from inside through netns.sh's unix-socket
#   forwarders. No address outside these namespaces and 127.0.0.1 is used.
# - Only images that ask for it land on the real host, and it takes no others: its Placement provider has
#   the trait CUSTOM_XOV_REAL (a provider config file), the image `xov-tiny` requires it (glance.sh), and the
#   host sits in the aggregate `xov-real` whose metadata requires it (isolated aggregate filtering, set in
#   up.sh's nova.conf). The fake compute host and every other image and flavor are untouched.
# - Idempotent: a running service whose configuration did not change is left alone; one-time objects
#   (aggregate, DHCP on xov-tenant) are created when missing.
# - Exits 0 only when a VM can be scheduled there: nova-compute `oslab-real` up and mapped, its provider
#   holds the trait and sits in the aggregate, and the three agents are alive. Otherwise exits 2 with why
#   on the last line (`realvm: cannot start: ...`), and leaves the fake mode as it was.
# Usage: realvm/up.sh
set -eEuo pipefail
LAB=${OSLAB_DIR:-/tmp/openstack-lab/state}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NS=${OSLAB_REAL_NS:-oslab-real}
BUYER_NS=${OSLAB_BUYER_NS:-oslab-buyer}
HOST=oslab-real
ETC=$LAB/etc/real DATA=$LAB/data/real LOGD=$LAB/log/real RUN=$LAB/run/realvm BIN=$LAB/bin
PY=/usr/bin/python3
SERVICE_PASSWORD=${OSLAB_SERVICE_PASSWORD:-service}
ADMIN_PASSWORD=${OSLAB_ADMIN_PASSWORD:-admin}
RABBIT_PORT=${OSLAB_RABBIT_PORT:-5672}
KS=http://127.0.0.1:5000/v3 NOVA=http://127.0.0.1:8774/v2.1 PLACEMENT=http://127.0.0.1:8778
NEUTRON=http://127.0.0.1:9696/v2.0
T0=$(date +%s)
log() { printf '[realvm %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
# A reason the real mode cannot run on this machine (not a bug of ours): exit 2, the caller falls back.
cannot() { echo "realvm: cannot start: $*" >&2; exit 2; }
die() { echo "realvm: ERROR: $*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR
[ "$(id -u)" = 0 ] || cannot "needs root (namespaces, libvirtd)"
[ -c /dev/net/tun ] || cannot "/dev/net/tun is missing (the VMs' taps need it)"
curl -sf -o /dev/null "$KS" || cannot "the lab does not answer at $KS: run up.sh first (or up.sh --real)"
mkdir -p "$ETC" "$DATA"/{nova/instances,nova/tmp,neutron/tmp} "$LOGD" "$RUN"

# ---------------------------------------------------------------- packages
# qemu and libvirt come from bookworm-backports where the machine's qemu-utils does (this project's machines
# carry qemu-utils 10 from there, which Breaks bookworm's qemu-system-common 7.2), else from bookworm.
PKGS="python3-libvirt python3-os-vif dnsmasq-base iptables ipset ebtables conntrack iproute2 procps sudo
      genisoimage socat openssh-client busybox-static dropbear-bin linux-image-cloud-amd64 cpio kmod"
VIRT="qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing="" vmissing=""
for p in $PKGS; do installed "$p" || missing="$missing $p"; done
for p in $VIRT; do installed "$p" || vmissing="$vmissing $p"; done
if [ -n "$missing$vmissing" ]; then
  log "installing:$missing$vmissing"
  export DEBIAN_FRONTEND=noninteractive
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # libvirt's postinst must not start daemons (we run our own)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  {
    apt-get update -q
    [ -z "$missing" ] || apt-get install -y -q --no-install-recommends $missing
    if [ -n "$vmissing" ]; then
      if qemu_from_backports; then
        bpo_install $vmissing
      else
        apt-get install -y -q --no-install-recommends $vmissing
      fi
    fi
  } >"$LOGD/apt-get.out" 2>&1 || { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; tail -20 "$LOGD/apt-get.out" >&2
                                   cannot "installing$missing$vmissing failed (see $LOGD/apt-get.out)"; }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
fi
command -v qemu-system-x86_64 >/dev/null || cannot "qemu-system-x86_64 is not installed"

# ---------------------------------------------------------------- the image (in seconds, from Debian packages)
nice -n 5 "$HERE/image.sh" "$DATA/image" >>"$LOGD/image.out" 2>&1 || die "image.sh failed (see $LOGD/image.out)"
IMAGE_ID=$("$HERE/glance.sh" "$DATA/image" 2>>"$LOGD/image.out" | tail -n1)
log "image xov-tiny $IMAGE_ID"

# ---------------------------------------------------------------- namespaces and the external network's wire
"$HERE/netns.sh" up 2>>"$LOGD/netns.out" || die "netns.sh up failed (see $LOGD/netns.out)"
[ -e "/run/netns/$BUYER_NS" ] || ip netns add "$BUYER_NS"
ip -n "$BUYER_NS" link set lo up
if ! ip -n "$NS" link show xov-pub0 >/dev/null 2>&1; then
  ip -n "$BUYER_NS" link del xov-pub1 2>/dev/null || true
  ip link add xov-pub0 netns "$NS" type veth peer name xov-pub1 netns "$BUYER_NS"
fi
ip -n "$NS" link set xov-pub0 up
ip -n "$BUYER_NS" addr replace 198.18.10.1/24 dev xov-pub1
ip -n "$BUYER_NS" link set xov-pub1 up
# bridged traffic goes through iptables (the agent's security groups), routing in the router's namespace
ip netns exec "$NS" sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 \
  net.ipv4.ip_forward=1
log "namespaces $NS and $BUYER_NS; xov-public's wire xov-pub0 <-> xov-pub1 (198.18.10.1)"

# ---------------------------------------------------------------- configs
mkdir -p "$ETC/provider_config"
cat > "$ETC/nova.conf" <<EOF
[DEFAULT]
host = $HOST
my_ip = 127.0.0.1
state_path = $DATA/nova
instances_path = $DATA/nova/instances
transport_url = rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/
compute_driver = libvirt.LibvirtDriver
force_config_drive = True
mkisofs_cmd = genisoimage
heal_instance_info_cache_interval = -1
resume_guests_state_on_host_boot = False
[libvirt]
virt_type = qemu
cpu_mode = none
[workarounds]
disable_rootwrap = True
[oslo_concurrency]
lock_path = $DATA/nova/tmp
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[compute]
provider_config_location = $ETC/provider_config/
[glance]
region_name = RegionOne
valid_interfaces = internal
$(svc_auth placement nova "$KS" "$SERVICE_PASSWORD")
$(svc_auth neutron nova "$KS" "$SERVICE_PASSWORD")
EOF
cat > "$ETC/provider_config/real.yaml" <<'EOF'
# The real compute host: images that require this trait land here (and only they: aggregate xov-real).
meta:
  schema_version: '1.0'
providers:
  - identification:
      uuid: '$COMPUTE_NODE'
    traits:
      additional:
        - CUSTOM_XOV_REAL
EOF
cat > "$ETC/neutron.conf" <<EOF
[DEFAULT]
host = $HOST
state_path = $DATA/neutron
transport_url = rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/
[experimental]
linuxbridge = true
[agent]
root_helper =
report_interval = 5
[oslo_concurrency]
lock_path = $DATA/neutron/tmp
[oslo_messaging_notifications]
driver = noop
EOF
cat > "$ETC/linuxbridge_agent.ini" <<EOF
[linux_bridge]
physical_interface_mappings = public:xov-pub0
[vxlan]
enable_vxlan = false
[agent]
polling_interval = 1
[securitygroup]
enable_security_group = true
firewall_driver = iptables
EOF
cat > "$ETC/dhcp_agent.ini" <<EOF
[DEFAULT]
interface_driver = linuxbridge
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = false
force_metadata = false
EOF
cat > "$ETC/l3_agent.ini" <<EOF
[DEFAULT]
interface_driver = linuxbridge
agent_mode = legacy
enable_metadata_proxy = false
EOF
mk() { # name module
  printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$PY" "$2" > "$BIN/$1"; chmod +x "$BIN/$1"
}
mk neutron-linuxbridge-agent neutron.cmd.eventlet.plugins.linuxbridge_neutron_agent
mk neutron-dhcp-agent neutron.cmd.eventlet.agents.dhcp
mk neutron-l3-agent neutron.cmd.eventlet.agents.l3

# ---------------------------------------------------------------- processes (inside the namespace)
alive() { pid_alive "$RUN" "$LAB" "$1"; }   # lib.sh
stop() { pid_stop "$RUN" "$LAB" "$1" >/dev/null; }
sum_of() { { printf '%s\n' "$@"; cat "$ETC"/*.conf "$ETC"/*.ini "$ETC"/provider_config/* 2>/dev/null; } | sha256sum | cut -d' ' -f1; }
run() { # name cmd... : started in its own session inside the namespace, restarted when its config changed
  local name=$1 sum; shift
  sum=$(sum_of "$@")
  if alive "$name"; then
    [ "$(cat "$RUN/$name.sum" 2>/dev/null)" = "$sum" ] && return 0
    log "$name: configuration changed, restarting"; stop "$name"
  fi
  # a starting agent's namespaces of an earlier run are dead (their mounts went with it): clear them
  case $name in
    neutron-dhcp-agent) agent_netns_clear "$LAB" qdhcp- | while read -r l; do log "$l"; done;;
    neutron-l3-agent) agent_netns_clear "$LAB" qrouter- | while read -r l; do log "$l"; done;;
  esac
  setsid ip netns exec "$NS" "$@" >>"$LOGD/$name.out" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"; echo "$sum" > "$RUN/$name.sum"
  log "started $name (pid $!)"
}
# libvirt: its daemons' own PID files and sockets are the system's defaults (/run/libvirt), one libvirtd
# per machine; refuse to share one we did not start.
if ! alive libvirtd && pgrep -x libvirtd >/dev/null; then
  cannot "a libvirtd not started by the lab runs (pid $(pgrep -x libvirtd | head -1)); stop it first"
fi
# libvirt's own NAT network (virbr0, 192.168.122.0/24) is not wanted: Neutron plugs the VMs
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
run virtlogd /usr/sbin/virtlogd --pid-file "$RUN/virtlogd.pidfile"
run libvirtd /usr/sbin/libvirtd --pid-file "$RUN/libvirtd.pidfile"
for i in $(seq 1 100); do virsh -c qemu:///system version >/dev/null 2>&1 && break; alive libvirtd || break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null 2>&1 || cannot "libvirtd did not answer (see $LOGD/libvirtd.out)"
virsh -c qemu:///system net-destroy default >/dev/null 2>&1 || true
virsh -c qemu:///system domcapabilities --virttype qemu >/dev/null 2>&1 \
  || cannot "libvirt has no QEMU/TCG (virsh domcapabilities --virttype qemu failed)"
NC="--config-file $ETC/neutron.conf"
run neutron-linuxbridge-agent "$BIN/neutron-linuxbridge-agent" $NC --config-file "$ETC/linuxbridge_agent.ini" \
  --log-file "$LOGD/neutron-linuxbridge-agent.log"
run neutron-dhcp-agent "$BIN/neutron-dhcp-agent" $NC --config-file "$ETC/dhcp_agent.ini" --log-file "$LOGD/neutron-dhcp-agent.log"
run neutron-l3-agent "$BIN/neutron-l3-agent" $NC --config-file "$ETC/l3_agent.ini" --log-file "$LOGD/neutron-l3-agent.log"
run nova-compute "$BIN/nova-compute" --config-file "$ETC/nova.conf" --log-file "$LOGD/nova-compute.log"

# ---------------------------------------------------------------- control-plane objects
TOKEN=$(admin_token "$KS" "$ADMIN_PASSWORD") || true
[ -n "$TOKEN" ] || die "no admin token from $KS"
ks() { curl -sf -H "X-Auth-Token: $TOKEN" "$@"; }
ksj() { curl -sf -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' "$@"; }
pl() { ks -H 'OpenStack-API-Version: placement 1.6' "$@"; }

# DHCP on the tenant network (the VM takes its address that way); harmless to the fake mode
SUB=$(ks "$NEUTRON/subnets?name=xov-tenant-v4" | jq -r '.subnets[0].id // empty')
[ -n "$SUB" ] || die "subnet xov-tenant-v4 missing (run up.sh)"
if [ "$(ks "$NEUTRON/subnets/$SUB" | jq -r .subnet.enable_dhcp)" != true ]; then
  ksj -X PUT "$NEUTRON/subnets/$SUB" -d '{"subnet":{"enable_dhcp":true}}' >/dev/null
  log "DHCP enabled on xov-tenant-v4"
fi

# wait: the agents alive, the compute service up, its provider with the trait
agents_alive() {
  local a; a=$(ks "$NEUTRON/agents?host=$HOST") || return 1
  for t in "Linux bridge agent" "DHCP agent" "L3 agent"; do
    # alive, and heard from since this run began (a stopped agent counts as alive for 75 s)
    [ "$(echo "$a" | jq -r --arg t "$t" --argjson t0 "$T0" '[.agents[] | select(.agent_type==$t and .alive==true)
      | select((.heartbeat_timestamp | sub(" ";"T") | sub("\\..*$";"") + "Z" | fromdateiso8601) >= $t0)] | length')" -ge 1 ] || return 1
  done
}
compute_up() {
  [ "$(ks "$NOVA/os-services?host=$HOST&binary=nova-compute" | jq -r --argjson t0 "$T0" '.services[0] | select(.state == "up")
    | select((.updated_at | sub("\\..*$";"") + "Z" | fromdateiso8601) >= $t0) | .state')" = up ] || return 1
  # the provider is the compute node, named after libvirt's hostname (not the service's host)
  RP=$(ks -H 'X-OpenStack-Nova-API-Version: 2.53' "$NOVA/os-hypervisors/detail" \
    | jq -r --arg h "$HOST" '[.hypervisors[] | select(.service.host == $h)][0].id // empty')
  [ -n "$RP" ] && pl "$PLACEMENT/resource_providers/$RP/traits" | jq -e '.traits | index("CUSTOM_XOV_REAL")' >/dev/null
}
for i in $(seq 1 180); do
  agents_alive && compute_up && break
  for s in libvirtd virtlogd neutron-linuxbridge-agent neutron-dhcp-agent neutron-l3-agent nova-compute; do
    alive "$s" || { tail -15 "$LOGD/$s.log" "$LOGD/$s.out" 2>/dev/null >&2; die "$s died (see $LOGD)"; }
  done
  sleep 1
done
agents_alive || die "the neutron agents on $HOST are not alive after 180 s (see $LOGD)"
compute_up || die "nova-compute $HOST not up with trait CUSTOM_XOV_REAL after 180 s (see $LOGD/nova-compute.log)"
log "agents alive; nova-compute $HOST up, provider $RP has CUSTOM_XOV_REAL"
# map the host into cell1
NM="$BIN/nova-manage --config-file $LAB/etc/nova/nova.conf"
for i in $(seq 1 10); do
  $NM cell_v2 list_hosts 2>/dev/null | grep -c " $HOST " >/dev/null && break
  $NM cell_v2 discover_hosts >>"$LOGD/nova-manage.out" 2>&1 || true
  sleep 2
done
$NM cell_v2 list_hosts 2>/dev/null | grep -c " $HOST " >/dev/null || die "host $HOST not mapped to cell1"
# the aggregate that keeps other images off the real host
AGG=$(ks "$NOVA/os-aggregates" | jq -r '.aggregates[] | select(.name=="xov-real") | .id' | head -n1)
if [ -z "$AGG" ]; then
  AGG=$(ksj -X POST "$NOVA/os-aggregates" -d '{"aggregate":{"name":"xov-real"}}' | jq -r .aggregate.id)
fi
agg=$(ks "$NOVA/os-aggregates/$AGG")
if ! echo "$agg" | jq -e --arg h "$HOST" '.aggregate.hosts | index($h)' >/dev/null; then
  ksj -X POST "$NOVA/os-aggregates/$AGG/action" -d "{\"add_host\":{\"host\":\"$HOST\"}}" >/dev/null
fi
if [ "$(echo "$agg" | jq -r '.aggregate.metadata["trait:CUSTOM_XOV_REAL"] // empty')" != required ]; then
  ksj -X POST "$NOVA/os-aggregates/$AGG/action" \
    -d '{"set_metadata":{"metadata":{"trait:CUSTOM_XOV_REAL":"required"}}}' >/dev/null
fi
# Nova mirrors the aggregate into Placement; the isolation filter reads it there
AGG_UUID=$(ks "$NOVA/os-aggregates/$AGG" -H 'X-OpenStack-Nova-API-Version: 2.41' | jq -r .aggregate.uuid)
pl "$PLACEMENT/resource_providers/$RP/aggregates" | jq -e --arg u "$AGG_UUID" '.aggregates | index($u)' >/dev/null \
  || die "aggregate xov-real ($AGG_UUID) is not mirrored to provider $RP in Placement"
log "aggregate xov-real ($AGG_UUID) holds $HOST and requires CUSTOM_XOV_REAL"
printf 'image=%s\nbuyer_ns=%s\nhost=%s\n' "$IMAGE_ID" "$BUYER_NS" "$HOST" > "$LAB/real"   # read by the tests' harness
log "real mode up: image xov-tiny boots on $HOST; ssh to floating IPs from 'ip netns exec $BUYER_NS'"
