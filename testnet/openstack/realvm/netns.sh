#!/usr/bin/env bash
# netns.sh up|down|check - the network namespace of the lab's real compute mode (issue 17), and its bridge to
# the lab's control plane.
#
# The real compute host's data plane (libvirtd and its VMs' taps, the Neutron agents' bridges, their qdhcp- and
# qrouter- namespaces) is to live in namespaces the lab makes and removes, so nothing it does reaches any
# other network. Its services still need the control plane, which listens on the root namespace's 127.0.0.1:
# inside the namespace, 127.0.0.1:<port> of Keystone, Nova, Glance, Placement, Neutron and RabbitMQ is joined
# to the same port outside by two socat processes and a unix socket (mode 0600) between them. No address
# outside the namespaces the lab made is used.
#
# Invariants: `up` is idempotent (a live forwarder is left alone, a dead one restarted); `down` removes the
# namespace and everything `up` started, and nothing else (PIDs are checked against their socket path);
# `check` exits 0 only when every port answers from inside.
set -euo pipefail
LAB=${OSLAB_DIR:-/tmp/openstack-lab/state}
NS=${OSLAB_REAL_NS:-oslab-real}
RUN=$LAB/run/realvm
# Keystone, Nova, Glance, Placement, Neutron (plain http: the catalog's internal endpoints), RabbitMQ
PORTS=(5000 8774 9292 8778 9696 "${OSLAB_RABBIT_PORT:-5672}")
log() { echo "netns.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (ip netns)"

# the PID file's process is alive and is the forwarder of that socket (not a reused PID)
alive() { # pidfile sock
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$2"
}

answers_inside() { # port
  ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

up() {
  command -v socat >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends socat >&2
  mkdir -p "$RUN"
  ip netns list | grep -qw "^$NS" || ip netns add "$NS"
  ip -n "$NS" link set lo up
  local p sock i
  for p in "${PORTS[@]}"; do
    sock=$RUN/fwd-$p.sock
    if ! alive "$RUN/out-$p.pid" "$sock"; then
      rm -f "$sock"
      setsid socat "UNIX-LISTEN:$sock,fork,mode=600" "TCP:127.0.0.1:$p" </dev/null >>"$RUN/forward.log" 2>&1 &
      echo $! > "$RUN/out-$p.pid"
    fi
    if ! alive "$RUN/in-$p.pid" "$sock"; then
      setsid ip netns exec "$NS" socat "TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$sock" \
        </dev/null >>"$RUN/forward.log" 2>&1 &
      echo $! > "$RUN/in-$p.pid"
    fi
  done
  # ready when every port answers from inside (the listeners start in well under a second)
  for p in "${PORTS[@]}"; do
    for i in $(seq 1 50); do answers_inside "$p" && break; sleep 0.1; done
    answers_inside "$p" || die "127.0.0.1:$p does not answer inside $NS (see $RUN/forward.log)"
  done
  log "namespace $NS up; inside it 127.0.0.1:{${PORTS[*]}} reach the lab"
}

down() {
  local f p
  for f in "$RUN"/in-*.pid "$RUN"/out-*.pid; do
    [ -e "$f" ] || continue
    p=${f##*/}; p=${p#*-}; p=${p%.pid}
    if alive "$f" "$RUN/fwd-$p.sock"; then kill "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
  rm -f "$RUN"/fwd-*.sock
  if ip netns list | grep -qw "^$NS"; then ip netns del "$NS"; fi
  log "namespace $NS and its forwarders removed"
}

check() {
  local p bad=0
  for p in "${PORTS[@]}"; do
    if answers_inside "$p"; then log "127.0.0.1:$p answers inside $NS"; else log "127.0.0.1:$p does NOT answer inside $NS"; bad=1; fi
  done
  return $bad
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) check ;;
  *) echo "usage: netns.sh up|down|check" >&2; exit 2 ;;
esac
