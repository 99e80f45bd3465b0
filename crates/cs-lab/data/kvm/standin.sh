#!/bin/bash
# The KVM-host role of the cs-lab node stand-ins (see data/node/core.sh for what every node
# shares: systemctl, the package managers, java, ss): the CloudStack agent, libvirt's guests
# (`virsh`) and `ip`. One script, called through links named after each program; the host's
# files are under $LAB/root, its state under $LAB/state. Faults are files in $LAB/state/faults.
set -u
case $0 in */*) CORE=${0%/*}/.core.sh ;; *) CORE=./.core.sh ;; esac
# shellcheck source=../node/core.sh
. "$CORE"

PROPS=$ROOT/etc/cloudstack/agent/agent.properties
LIB=$ROOT/usr/share/cloudstack-agent/lib
LOG=$ROOT/var/log/cloudstack/agent/agent.log
DOMAINS=$ST/domains

# A log line stamped as `date '+%F %T,%3N'` would, from bash's own clock and strftime.
agent_log() {
  local t=$EPOCHREALTIME ms
  [ -d "${LOG%/*}" ] || mkdir -p "${LOG%/*}"
  ms=${t#*[.,]}
  printf '%(%F %T)T,%s %s\n' "${t%[.,]*}" "${ms:0:3}" "$*" >>"$LOG"
}

agent_start() {
  local v
  v=$(core "$(installed cloudstack-agent)")
  if fault never-up; then
    agent_log "ERROR [cloud.agent.Agent] Unable to connect to the management server"
    echo "Disconnected $v" >"$ST/agent.status"
  elif ! has_line "$PROPS" keystore.passphrase=; then
    agent_log "ERROR [cloud.agent.Agent] Failed to find keystore passphrase"
    echo "Disconnected $v" >"$ST/agent.status"
  elif ! has_line "$PROPS" guid=; then
    agent_log "ERROR [cloud.agent.AgentShell] Unable to start agent: guid is not set"
    echo "Disconnected $v" >"$ST/agent.status"
  elif [ -s "$ST/up-delay" ]; then
    # KvmHost::set_up_delay: the agent reconnects after a while, the start returns at once.
    echo "Disconnected $v" >"$ST/agent.status"
    (
      slurp "$ST/up-delay"
      sleep "$REPLY"
      agent_log "INFO  [cloud.agent.Agent] Connected to the management server, version $v"
      echo "Up $v" >"$ST/agent.status"
    ) </dev/null >/dev/null 2>&1 &
  else
    agent_log "INFO  [cloud.agent.Agent] Connected to the management server, version $v"
    echo "Up $v" >"$ST/agent.status"
  fi
}

# Starting and stopping the agent never touches the guests: libvirt runs them, and the agent
# re-attaches to what libvirt reports when it connects again.
role_unit_start() {
  [ "$1" = cloudstack-agent ] && agent_start
  return 0
}

role_unit_stop() {
  [ "$1" = cloudstack-agent ] && echo "Disconnected $(core "$(installed cloudstack-agent)")" >"$ST/agent.status"
  return 0
}

# libvirtd listens for TLS on 16514 (listen_tls, set up by cloudstack-setup-agent) while it runs.
role_listening() {
  [ -e "$ST/libvirt-tls" ] && [ "$(unit_state libvirtd)" = active ] && echo "50 0.0.0.0:16514 0.0.0.0:*"
  return 0
}

# What installing the agent package does to the host, with the faults that make it go wrong.
role_package() {
  local j
  [ "$1" = cloudstack-agent ] || return 0
  mkdir -p "$LIB"
  fault mixed-jars || rm -f "$LIB"/cloud-*.jar
  for j in agent plugin-hypervisor-kvm utils; do : >"$LIB/cloud-$j-$2.jar"; done
  if fault overwrite-identity; then cp "$LAB/packaged/agent.properties" "$PROPS"; fi
  if fault drop-passphrase; then sed -i '/^keystore\.passphrase/d' "$PROPS"; fi
  # The KvmFault::StopsVms fault: the upgrade takes the guests down with it.
  if fault stops-vms; then rm -f "$DOMAINS"/*; fi
  return 0
}

# ---------------------------------------------------------------- virsh

# The guests libvirt runs: one file per running domain in state/domains, holding its id.
# CloudStack starts its guests as transient domains (LibvirtComputingResource calls
# domainCreateXML), so a destroyed one is gone from every list, `--all` included.
no_libvirtd() {
  echo "error: failed to connect to the hypervisor" >&2
  echo "error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory" >&2
  exit 1
}

virsh_main() {
  local cmd= a name= names=0 f
  local -a args=()
  for a in "$@"; do
    case "$a" in
    --name) names=1 ;;
    -c | --connect) ;;
    -*) ;;
    *) args+=("$a") ;;
    esac
  done
  cmd=${args[0]:-}
  [ "$(unit_state libvirtd)" = active ] || no_libvirtd
  case "$cmd" in
  list)
    if [ $names = 1 ]; then
      for f in "$DOMAINS"/*; do [ -e "$f" ] && echo "${f##*/}"; done
      echo
    else
      echo " Id   Name           State"
      echo "------------------------------"
      for f in "$DOMAINS"/*; do
        [ -e "$f" ] || continue
        slurp "$f"
        printf ' %-4s %-14s %s\n' "${REPLY%% *}" "${f##*/}" running
      done
      echo
    fi ;;
  domstate)
    name=${args[1]:-}
    if [ -n "$name" ] && [ -e "$DOMAINS/$name" ]; then
      echo running; echo
    else
      echo "error: failed to get domain '$name'" >&2
      exit 1
    fi ;;
  *) echo "virsh stand-in: unsupported command $cmd" >&2; exit 1 ;;
  esac
}

# ---------------------------------------------------------------- ip

ip_main() {
  local n a dev
  if [ "${1:-}" = -o ] && [ "${2:-}" = addr ]; then
    echo "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"
    n=2
    slurp "$ST/addresses"
    for a in $REPLY; do
      echo "$n: cloudbr0    inet $a/24 brd + scope global cloudbr0\\       valid_lft forever preferred_lft forever"; n=$((n+1))
    done
  elif [ "${1:-}" = -o ] && [ "${2:-}" = link ]; then
    dev=${5:-}
    if slurp "$ST/mtu/$dev"; then
      echo "7: $dev: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu $REPLY qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:00:00:01 brd ff:ff:ff:ff:ff:ff"
    else
      echo "Device \"$dev\" does not exist." >&2; exit 1
    fi
  else
    echo "ip stand-in: unsupported" >&2; exit 1
  fi
}

role_main() {
  local prog=$1
  shift
  case "$prog" in
  virsh) virsh_main "$@" ;;
  ip) ip_main "$@" ;;
  *) echo "cs-lab stand-in: unknown program $prog" >&2; exit 127 ;;
  esac
}

core_main "$@"
