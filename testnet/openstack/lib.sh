# lib.sh - shell functions the lab's scripts share (sourced, not run). Each prints what it makes on stdout
# and changes nothing else of the caller's but what its comment says.
#
# The scripts run with `set -o pipefail`: a test like `cmd | grep -q X` fails when grep exits at the first
# match and cmd, still writing, dies of SIGPIPE (seen with nova-manage under load). Use `grep -c X >/dev/null`,
# which reads all of its input.

# svc_auth SECTION USER AUTH_URL PASSWORD: an oslo config section for a service user's password auth,
# reaching the other services on the catalog's internal (http) endpoints.
svc_auth() {
cat <<EOF
[$1]
auth_type = password
auth_url = $3
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $4
region_name = RegionOne
valid_interfaces = internal
endpoint_type = internal
EOF
}

# admin_token KEYSTONE_URL PASSWORD: a token of the lab's admin for the admin project; empty when Keystone
# does not give one.
admin_token() {
  curl -sf -i -H 'Content-Type: application/json' -d @- "$1/auth/tokens" <<EOF | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r'
{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"$2"}}},
 "scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}
EOF
}

# qemu_from_backports: true when this machine's qemu-utils comes from bookworm-backports (this project's
# machines carry qemu-utils 10 from there, which Breaks bookworm's qemu-system-common 7.2), so QEMU and
# libvirt must come from there too.
qemu_from_backports() {
  dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo12
}

# bpo_install PACKAGE...: apt-get install from bookworm-backports through a private sources list under
# /tmp/realvm-bpo (the same Debian mirror), leaving the system's apt configuration alone.
bpo_install() {
  local B=/tmp/realvm-bpo
  mkdir -p $B/lists/partial $B/archives/partial
  { cat /etc/apt/sources.list 2>/dev/null || true
    echo "deb http://deb.debian.org/debian bookworm main"
    echo "deb http://deb.debian.org/debian bookworm-updates main"
    echo "deb http://deb.debian.org/debian-security bookworm-security main"
    echo "deb http://deb.debian.org/debian bookworm-backports main"; } > $B/sources.list
  local O=(-o Dir::Etc::sourcelist=$B/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::lists=$B/lists
           -o Dir::Cache::archives=$B/archives)
  apt-get "${O[@]}" update -q &&
    apt-get "${O[@]}" install -y -q --no-install-recommends -t bookworm-backports "$@"
}

# pid_alive DIR LAB NAME: DIR/NAME.pid names a live process whose command line names LAB (the lab's state
# directory), so a PID reused by another program is never taken for ours.
pid_alive() {
  local p; p=$(cat "$1/$3.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$2"
}

# pid_stop DIR LAB NAME: TERM to that process, KILL after 20 s, waiting on the process itself (the machine's
# PID 1 may not reap); removes DIR/NAME.pid and DIR/NAME.sum. Prints "stopped NAME (pid P)" or "killed ...",
# nothing when it was not running.
pid_stop() {
  local p i; p=$(cat "$1/$3.pid" 2>/dev/null) || return 0
  if pid_alive "$1" "$2" "$3"; then
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -KILL "$p" 2>/dev/null; then echo "killed $3 (pid $p)"; else echo "stopped $3 (pid $p)"; fi
  fi
  rm -f "$1/$3.pid" "$1/$3.sum"
}

# agent_netns_clear LAB PREFIX...: removes the named network namespaces (qdhcp-, qrouter-) the realvm
# agents made, and the dnsmasq they left. The agents run under `ip netns exec`, whose mount namespace is a
# slave of the machine's: their namespaces' bind mounts live only there, while the files in /run/netns stay.
# Once the agent is gone the file outlives its mount; an agent started later finds the name, takes the
# namespace as made, and fails every action with "failed to open netns". Call it before an agent starts
# (its old namespaces are dead then by construction) and on down.
agent_netns_clear() {
  local lab=$1 f p n pre; shift
  for f in "$lab"/data/real/neutron/dhcp/*/pid; do
    [ -e "$f" ] || continue
    p=$(cat "$f" 2>/dev/null) && [ -n "$p" ] && { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | grep dnsmasq >/dev/null \
      && kill "$p" 2>/dev/null
  done
  for n in $(ls /run/netns 2>/dev/null); do
    for pre in "$@"; do
      case $n in
        "$pre"*)
          ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null
          ip netns del "$n" 2>/dev/null || rm -f "/run/netns/$n"
          echo "removed namespace $n";;
      esac
    done
  done
}
