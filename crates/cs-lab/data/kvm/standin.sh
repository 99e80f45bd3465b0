#!/bin/bash
# Stand-in for systemctl, apt-get, apt-cache, apt-mark, dpkg-query, rpm, dnf, java, ip and ss on
# a cs-lab KVM host (one script, called through links named after each program). The host's
# files are under $LAB/root, its state under $LAB/state, where $LAB is this script's parent's
# parent directory. Faults are files in $LAB/state/faults.
set -u
# Every fact-gathering call starts here, so the common case (an absolute, normalised $0, which
# a PATH lookup gives) is worked out with parameter expansion instead of a basename and two
# dirname processes; anything else goes the long way.
self=${0##*/}
case $0 in
  [!/]* | */./* | */../* | *//*) BIN=$(cd "$(dirname "$0")" && pwd) ;;
  *) BIN=${0%/*}; BIN=${BIN:-/} ;;
esac
LAB=${BIN%/*}; LAB=${LAB:-/}
ROOT=$LAB/root
ST=$LAB/state
PROPS=$ROOT/etc/cloudstack/agent/agent.properties
LIB=$ROOT/usr/share/cloudstack-agent/lib
LOG=$ROOT/var/log/cloudstack/agent/agent.log
RPM_REL=-1.el8

fault() { [ -e "$ST/faults/$1" ]; }
installed() { cat "$ST/installed/$1" 2>/dev/null; }
# Puts file $1 into $REPLY as $(cat "$1" 2>/dev/null) would, but without a subshell or a cat
# (bash reads $(< file) itself); fails, with REPLY empty, when $1 is not a readable file.
slurp() { REPLY=; [ -f "$1" ] && [ -r "$1" ] && REPLY=$(< "$1"); }
core() { echo "${1%%-*}"; }              # 4.19.1.0-1.el8 -> 4.19.1.0
line_of() { echo "$1" | cut -d. -f1,2; } # 4.19.1.0 -> 4.19

# The release line the repository files point at.
repo_line() {
  local f=$ROOT/etc/apt/sources.list.d/cloudstack.list
  if [ -f "$f" ]; then
    awk '/^deb /{print $NF; exit}' "$f"
  else
    sed -n 's#^baseurl=.*/\([0-9][0-9]*\.[0-9][0-9]*\)/*$#\1#p' "$ROOT/etc/yum.repos.d/cloudstack.repo" | head -n 1
  fi
}

# Versions in the package index (as of the last update).
index_versions() {
  local l
  l=$(cat "$ST/index" 2>/dev/null)
  [ -n "$l" ] && [ -f "$ST/repo/$l" ] && cat "$ST/repo/$l"
}

agent_log() { mkdir -p "$(dirname "$LOG")"; echo "$(date '+%F %T,%3N') $*" >>"$LOG"; }

agent_start() {
  local v
  v=$(core "$(installed cloudstack-agent)")
  if fault never-up; then
    agent_log "ERROR [cloud.agent.Agent] Unable to connect to the management server"
    echo "Disconnected $v" >"$ST/agent.status"
  elif ! grep -q '^keystore\.passphrase=..*' "$PROPS"; then
    agent_log "ERROR [cloud.agent.Agent] Failed to find keystore passphrase"
    echo "Disconnected $v" >"$ST/agent.status"
  elif ! grep -q '^guid=..*' "$PROPS"; then
    agent_log "ERROR [cloud.agent.AgentShell] Unable to start agent: guid is not set"
    echo "Disconnected $v" >"$ST/agent.status"
  else
    agent_log "INFO  [cloud.agent.Agent] Connected to the management server, version $v"
    echo "Up $v" >"$ST/agent.status"
  fi
}

# Installs "$pkg" at "$ver" for each pkg=ver argument, as the package scripts would.
do_install() {
  if fault install-fails; then
    echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
    exit 100
  fi
  local pv p v
  for pv in "$@"; do
    p=${pv%%=*}; v=${pv#*=}
    index_versions | grep -qx "$(core "$v")" || {
      echo "E: Version '$v' for '$p' was not found" >&2; exit 100; }
  done
  for pv in "$@"; do
    p=${pv%%=*}; v=${pv#*=}
    echo "$v" >"$ST/installed/$p"
  done
  v=$(core "$(installed cloudstack-agent)")
  mkdir -p "$LIB"
  fault mixed-jars || rm -f "$LIB"/cloud-*.jar
  for j in agent plugin-hypervisor-kvm utils; do : >"$LIB/cloud-$j-$v.jar"; done
  if fault overwrite-identity; then cp "$LAB/packaged/agent.properties" "$PROPS"; fi
  if fault drop-passphrase; then sed -i '/^keystore\.passphrase/d' "$PROPS"; fi
  echo "$v" >>"$ST/install.log"
}

case "$self" in
systemctl)
  verb=${1:-}; unit=${2:-}
  mkdir -p "$ST/services"
  case "$verb" in
    is-active)
      s=$(cat "$ST/services/$unit" 2>/dev/null || echo inactive); echo "$s"; [ "$s" = active ] ;;
    start|restart)
      echo active >"$ST/services/$unit"
      [ "$unit" = cloudstack-agent ] && agent_start
      echo "$verb $unit" >>"$ST/systemctl.log"; exit 0 ;;
    stop)
      echo inactive >"$ST/services/$unit"
      [ "$unit" = cloudstack-agent ] && echo "Disconnected $(core "$(installed cloudstack-agent)")" >"$ST/agent.status"
      echo "stop $unit" >>"$ST/systemctl.log"; exit 0 ;;
    *) echo "systemctl stand-in: unsupported verb $verb" >&2; exit 1 ;;
  esac ;;
dpkg-query)
  [ "${1:-}" = --version ] && { echo "Debian dpkg-query (cs-lab stand-in)"; exit 0; }
  shift 2 # -W -f=...
  rc=0
  for p in "$@"; do
    slurp "$ST/installed/$p"; v=$REPLY
    if [ -n "$v" ]; then
      if [ -e "$ST/held/$p" ]; then printf '%s\t%s\thi \thold ok installed\n' "$p" "$v"
      else printf '%s\t%s\tii \tinstall ok installed\n' "$p" "$v"; fi
    else echo "dpkg-query: no packages found matching $p" >&2; rc=1; fi
  done
  exit $rc ;;
apt-get)
  allow_held=0; args=(); cmd=
  for a in "$@"; do
    case "$a" in
      --allow-change-held-packages) allow_held=1 ;;
      -o) ;; Dpkg::*) ;; -*) ;;
      update|install) cmd=$a ;;
      *) args+=("$a") ;;
    esac
  done
  case "$cmd" in
    update) repo_line >"$ST/index"; echo "Reading package lists... Done" ;;
    install)
      for pv in "${args[@]}"; do
        p=${pv%%=*}
        if [ -e "$ST/held/$p" ] && [ $allow_held = 0 ]; then
          echo "E: Held packages were changed and -y was used without --allow-change-held-packages." >&2; exit 100
        fi
      done
      do_install "${args[@]}" ;;
    *) echo "apt-get stand-in: unsupported" >&2; exit 100 ;;
  esac ;;
apt-cache)
  case "${1:-}" in
    madison) index_versions | sort -r -V | while read -r v; do
        echo " $2 | $v | http://download.cloudstack.org/ubuntu jammy/$(line_of "$v") amd64 Packages"; done ;;
    policy)
      c=$(index_versions | sort -V | tail -n 1)
      echo "$2:"; echo "  Installed: $(installed "$2" || true)"; echo "  Candidate: ${c:-(none)}" ;;
  esac ;;
apt-mark)
  mkdir -p "$ST/held"; verb=$1; shift
  for p in "$@"; do
    if [ "$verb" = hold ]; then : >"$ST/held/$p"; echo "$p set on hold."
    else rm -f "$ST/held/$p"; echo "Canceled hold on $p."; fi
  done ;;
rpm)
  [ "${1:-}" = --version ] && { echo "RPM version 4.16.1.3"; exit 0; }
  shift 3 # -q --qf FMT
  rc=0
  for p in "$@"; do
    slurp "$ST/installed/$p"; v=$REPLY
    if [ -n "$v" ]; then printf '%s\t%s\n' "$p" "$v"; else echo "package $p is not installed"; rc=1; fi
  done
  exit $rc ;;
dnf)
  args=(); for a in "$@"; do case "$a" in -*) ;; *) args+=("$a") ;; esac; done
  case "${args[0]:-}" in
    makecache) repo_line >"$ST/index" ;;
    repoquery) index_versions | sort -V | sed "s/\$/$RPM_REL/" ;;
    versionlock)
      mkdir -p "$ST/held"
      case "${args[1]:-}" in
        list) for f in "$ST"/held/*; do [ -e "$f" ] && p=$(basename "$f") && echo "$p-0:$(installed "$p").*"; done; exit 0 ;;
        add) for p in "${args[@]:2}"; do : >"$ST/held/$p"; done ;;
        delete) for p in "${args[@]:2}"; do rm -f "$ST/held/$p"; done ;;
      esac ;;
    install)
      pairs=()
      for nv in "${args[@]:1}"; do
        for p in cloudstack-common cloudstack-agent; do
          case "$nv" in "$p"-[0-9]*) pairs+=("$p=${nv#"$p"-}") ;; esac
        done
      done
      for pv in "${pairs[@]}"; do
        [ -e "$ST/held/${pv%%=*}" ] && { echo "Error: package ${pv%%=*} is excluded by versionlock" >&2; exit 1; }
      done
      do_install "${pairs[@]}" ;;
  esac ;;
java)
  if slurp "$ST/java_major"; then m=$REPLY; else m=17; fi
  echo "openjdk version \"$m.0.15\" 2025-04-15" >&2
  echo "OpenJDK Runtime Environment (cs-lab stand-in)" >&2 ;;
ip)
  if [ "${1:-}" = -o ] && [ "${2:-}" = addr ]; then
    echo "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"
    n=2
    for a in $(cat "$ST/addresses" 2>/dev/null); do
      echo "$n: cloudbr0    inet $a/24 brd + scope global cloudbr0\\       valid_lft forever preferred_lft forever"; n=$((n+1))
    done
  elif [ "${1:-}" = -o ] && [ "${2:-}" = link ]; then
    dev=${5:-}
    if [ -f "$ST/mtu/$dev" ]; then
      echo "7: $dev: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu $(cat "$ST/mtu/$dev") qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:00:00:01 brd ff:ff:ff:ff:ff:ff"
    else
      echo "Device \"$dev\" does not exist." >&2; exit 1
    fi
  else
    echo "ip stand-in: unsupported" >&2; exit 1
  fi ;;
ss)
  [ -e "$ST/libvirt-tls" ] && echo "LISTEN 0      50           0.0.0.0:16514      0.0.0.0:*"
  exit 0 ;;
*) echo "cs-lab stand-in: unknown program $self" >&2; exit 127 ;;
esac
