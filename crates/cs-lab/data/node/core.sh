# shellcheck shell=bash
# The core every cs-lab node stand-in shares, sourced by the role scripts (data/mgmt/standin.sh
# for management servers, data/kvm/standin.sh for KVM hosts): the node's directories, state-file
# helpers, `systemctl`, both package-manager families (dpkg/apt and rpm/dnf), `java`, `ss`,
# `df` and `python3`.
# A behaviour both node kinds have is written here once; the role scripts keep only what their
# role does, through these hooks (each has a no-op default below):
#
#   role_unit_start UNIT       UNIT has just become active: start what the role runs in it
#   role_unit_stop UNIT WAS    UNIT is about to become inactive (WAS: its state before)
#   role_refuse VERB UNIT...   fail a start/stop/restart: print the error, return the exit code
#   role_package PKG NEW OLD   lay down the files package PKG ships at version NEW (OLD: the
#                              version it replaces, empty for a new package)
#   role_listening             one "backlog local-address peer-address" line per TCP listener
#   role_main PROGRAM ARGS...  the programs only the role has (ip, virsh, internal commands)
#
# Layout: the links named after each program live in $LAB/bin (next to this file), the node's
# files under $LAB/root, the stand-ins' state under $LAB/state (see src/node.rs). Faults are
# files in $LAB/state/faults.

# Every fact-gathering call starts here, so the common case (an absolute, normalised $0, which a
# PATH lookup gives) is worked out with parameter expansion instead of a basename and two
# dirname processes; anything else goes the long way.
self=${0##*/}
case $0 in
  [!/]* | */./* | */../* | *//*) BIN=$(cd "$(dirname "$0")" && pwd) ;;
  *) BIN=${0%/*}; BIN=${BIN:-/} ;;
esac
LAB=${BIN%/*}; LAB=${LAB:-/}
ROOT=$LAB/root
ST=$LAB/state

# ---------------------------------------------------------------- state files

# Puts file $1 into $REPLY as $(cat "$1" 2>/dev/null) would, but without a subshell or a cat
# (bash reads $(< file) itself); fails, with REPLY empty, when $1 is not a readable file.
slurp() { REPLY=; [ -f "$1" ] && [ -r "$1" ] && REPLY=$(< "$1"); }
# Writes file $1 atomically (readers poll these files).
put() { echo "$2" >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"; }
fault() { [ -e "$ST/faults/$1" ]; }
# Whether file $1 has a line starting with $2 and at least one more character, as
# `grep -q "^$2.."` would tell (a regular expression there; a plain prefix here), without a grep.
has_line() {
  local l
  [ -f "$1" ] && [ -r "$1" ] || return 1
  while IFS= read -r l || [ -n "$l" ]; do
    case $l in "$2"?*) return 0 ;; esac
  done <"$1"
  return 1
}
installed() { slurp "$ST/installed/$1"; [ -n "$REPLY" ] && echo "$REPLY"; }

slurp "$ST/family"; FAMILY=${REPLY:-deb}

# The upstream version in a package version: 4.19.1.0-1 -> 4.19.1.0, 1:4.19.1.0 -> 4.19.1.0.
core() { local v=${1#*:}; echo "${v%%-*}"; }
line_of() { local IFS=.; set -- $1; echo "$1.$2"; } # 4.19.1.0 -> 4.19

# CloudStack's el8 spec (packaging/el8/cloud.spec) builds `Release: %{_rel}` with no %{dist}
# and package.sh passes `-D_rel 1`, so the rpms are cloudstack-agent-4.19.0.0-1.noarch
# (`BuildArch: noarch`). The debs carry the upstream version as it is.
RPM_RELEASE=1
RPM_ARCH=noarch
pkgver() { if [ "$FAMILY" = rpm ]; then echo "$1-$RPM_RELEASE"; else echo "$1"; fi; }

# A version padded to four parts (4.2.0 -> 4.2.0.0), as CloudStackVersion compares them.
pad() {
  local IFS=.
  # shellcheck disable=SC2086
  set -- $1
  echo "${1:-0}.${2:-0}.${3:-0}.${4:-0}"
}

# Prints -1, 0 or 1 as $1 is lower than, equal to or higher than $2.
vcmp() {
  local IFS=. i
  local -a x y
  read -r -a x <<<"$(pad "$(core "$1")")"
  read -r -a y <<<"$(pad "$(core "$2")")"
  for i in 0 1 2 3; do
    if ((10#${x[i]} < 10#${y[i]})); then echo -1; return; fi
    if ((10#${x[i]} > 10#${y[i]})); then echo 1; return; fi
  done
  echo 0
}

# ---------------------------------------------------------------- role hooks (defaults)

role_unit_start() { :; }
role_unit_stop() { :; }
role_refuse() { return 0; }
role_package() { :; }
role_listening() { :; }
role_main() { echo "cs-lab stand-in: unknown program $1" >&2; exit 127; }

# ---------------------------------------------------------------- systemd

# A unit exists when a package installed its unit file: state/services/<unit> holds its state
# (active, inactive or failed).
known_unit() { [ -e "$ST/services/$1" ]; }
unit_state() { if slurp "$ST/services/$1"; then echo "${REPLY:-inactive}"; else echo inactive; fi; }
set_state() { [ -d "$ST/services" ] || mkdir -p "$ST/services"; put "$ST/services/$1" "$2"; }
syslog() { echo "$*" >>"$ST/systemctl.log"; }

# Starting an active unit is a no-op, as with systemd.
svc_start() {
  [ "$(unit_state "$1")" = active ] && return 0
  set_state "$1" active
  role_unit_start "$1"
}

svc_stop() {
  local was
  was=$(unit_state "$1")
  role_unit_stop "$1" "$was"
  set_state "$1" inactive
}

core_systemctl() {
  local verb= a u s rc=0
  local -a units=()
  for a in "$@"; do
    case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$a; else units+=("${a%.service}"); fi ;;
    esac
  done
  # The calls that change something are recorded (queries are not).
  case "$verb" in
  start | stop | restart | enable | disable | daemon-reload | reset-failed)
    syslog "$verb${units[*]:+ ${units[*]}}" ;;
  esac
  case "$verb" in
  daemon-reload) return 0 ;;
  is-active)
    # systemd says "inactive" (exit 3) for a unit it does not know, too.
    for u in "${units[@]}"; do s=$(unit_state "$u"); echo "$s"; [ "$s" = active ] || rc=3; done
    return $rc ;;
  is-failed)
    for u in "${units[@]}"; do s=$(unit_state "$u"); echo "$s"; [ "$s" = failed ] || rc=1; done
    return $rc ;;
  is-enabled)
    for u in "${units[@]}"; do
      if known_unit "$u"; then echo enabled
      else echo "Failed to get unit file state for $u.service: No such file or directory" >&2; rc=1; fi
    done
    return $rc ;;
  enable | disable)
    for u in "${units[@]}"; do
      known_unit "$u" || { echo "Failed to $verb unit: Unit file $u.service does not exist." >&2; rc=1; }
    done
    return $rc ;;
  reset-failed)
    for u in "${units[@]}"; do
      if ! known_unit "$u"; then
        echo "Failed to reset failed state of unit $u.service: Unit $u.service not loaded." >&2; rc=1
      elif [ "$(unit_state "$u")" = failed ]; then
        set_state "$u" inactive
      fi
    done
    return $rc ;;
  start | stop | restart)
    # systemd's bus_unit_queue_job (src/core/dbus-unit.c): a stop of a unit that has no unit
    # file is "Unit X not loaded."; start and restart load it first and fail with "Unit X not
    # found." Both are BUS_ERROR_NO_SUCH_UNIT, which systemctl exits with as 5 (EXIT_NOTINSTALLED).
    for u in "${units[@]}"; do
      if ! known_unit "$u"; then
        if [ "$verb" = stop ]; then
          echo "Failed to stop $u.service: Unit $u.service not loaded." >&2
        else
          echo "Failed to $verb $u.service: Unit $u.service not found." >&2
        fi
        return 5
      fi
    done
    role_refuse "$verb" "${units[@]}" || return $?
    for u in "${units[@]}"; do
      case "$verb" in
      start) svc_start "$u" ;;
      stop) svc_stop "$u" ;;
      restart) svc_stop "$u"; svc_start "$u" ;;
      esac
    done
    return 0 ;;
  status)
    for u in "${units[@]}"; do
      if ! known_unit "$u"; then echo "Unit $u.service could not be found." >&2; rc=4; continue; fi
      s=$(unit_state "$u")
      case "$s" in
      active) a="active (running)" ;;
      failed) a="failed (Result: exit-code)"; rc=3 ;;
      *) a="inactive (dead)"; rc=3 ;;
      esac
      echo "* $u.service - $u (cs-lab stand-in)"
      echo "     Loaded: loaded (/lib/systemd/system/$u.service; enabled; vendor preset: enabled)"
      echo "     Active: $a"
    done
    return $rc ;;
  *) echo "systemctl stand-in: unsupported verb $verb" >&2; return 1 ;;
  esac
}

# ---------------------------------------------------------------- packages

# The packages CloudStack's repositories publish: debian/control for the debs,
# packaging/el8/cloud.spec for the rpms.
if [ "$FAMILY" = rpm ]; then
  REPO_PACKAGES="cloudstack-common cloudstack-management cloudstack-agent cloudstack-baremetal-agent cloudstack-usage cloudstack-ui cloudstack-marvin cloudstack-integration-tests"
  # `Requires: %{name}-common = %{_ver}` in the spec: management and agent, not usage.
  NEEDS_COMMON="cloudstack-management cloudstack-agent"
else
  REPO_PACKAGES="cloudstack-common cloudstack-management cloudstack-agent cloudstack-usage cloudstack-ui cloudstack-docs cloudstack-marvin cloudstack-integration-tests"
  # `Depends: cloudstack-common (= ${source:Version})` in debian/control.
  NEEDS_COMMON="cloudstack-management cloudstack-agent cloudstack-usage"
fi
in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

# The unit file a package ships (none for the others).
unit_of() {
  case "$1" in
  cloudstack-management | cloudstack-agent | cloudstack-usage) echo "$1" ;;
  esac
}

# The words of the apt entry's first `deb ` line, split on blanks as awk splits them, in WORDS;
# fails when there is none. Read by bash itself: every `apt-cache` and `apt-get` asks for it.
deb_words() {
  local list=$ROOT/etc/apt/sources.list.d/cloudstack.list line
  WORDS=()
  [ -f "$list" ] && [ -r "$list" ] || return 1
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in "deb "*) read -r -a WORDS <<<"$line"; return 0 ;; esac
  done <"$list"
  return 1
}

# The release line the repository file points at.
repo_line() {
  if [ "$FAMILY" = rpm ]; then
    sed -n 's#^baseurl=.*/\([0-9][0-9]*\.[0-9][0-9]*\)/*$#\1#p' "$ROOT/etc/yum.repos.d/cloudstack.repo" 2>/dev/null | head -n 1
  else
    deb_words && echo "${WORDS[-1]}"
  fi
}

# The URL and suite of the apt entry, for apt-cache's output.
apt_source() {
  deb_words && echo "${WORDS[1]:-} ${WORDS[2]:-}"
}

# The release line the package index holds. apt reads the lists of the last `apt-get update`.
# dnf keeps its metadata cache per repository *and baseurl* (libdnf names the cache directory
# after a hash of the baseurl), so a repo file pointing at another line has no cache yet and
# dnf fetches that line's metadata by itself.
index_line() {
  if [ "$FAMILY" = rpm ]; then
    repo_line
  else
    slurp "$ST/index"; echo "$REPLY"
  fi
}

# Upstream versions in the package index, one a line.
index_versions() {
  local l
  l=$(index_line)
  [ -n "$l" ] && slurp "$ST/repo/$l" && { [ -z "$REPLY" ] || printf '%s\n' "$REPLY"; }
}
candidate() { index_versions | sort -V | tail -n 1; }

# The transaction in progress: package -> package version to install.
declare -A WANT=()

install_failed() {
  if [ "$FAMILY" = rpm ]; then
    echo "Error: Transaction failed" >&2
    exit 1
  fi
  echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
  exit 100
}

not_found() { # $1 package, $2 the argument as given, $3 version or empty
  if [ "$FAMILY" = rpm ]; then
    echo "No match for argument: $2" >&2
    echo "Error: Unable to find a match: $2" >&2
    exit 1
  fi
  if [ -n "$3" ]; then echo "E: Version '$3' for '$1' was not found" >&2
  elif in_list "$1" "$REPO_PACKAGES"; then echo "E: Package '$1' has no installation candidate" >&2
  else echo "E: Unable to locate package $1" >&2; fi
  exit 100
}

# Adds package $1 at requested version $2 (empty: the candidate) to WANT; $3 is the argument as
# given on the command line.
want() {
  local p=$1 v=$2 arg=$3 up rel
  in_list "$p" "$REPO_PACKAGES" || not_found "$p" "$arg" ""
  if [ -z "$v" ]; then
    up=$(candidate)
    [ -n "$up" ] || not_found "$p" "$arg" ""
  else
    v=${v%."$RPM_ARCH"}
    up=$(core "$v")
    index_versions | grep -qxF "$up" || not_found "$p" "$arg" "$v"
    if [ "$FAMILY" = rpm ]; then
      # dnf takes name-version or name-version-release.
      if [ "$v" != "${v%%-*}" ]; then
        rel=${v#*-}
        [ "$rel" = "$RPM_RELEASE" ] || not_found "$p" "$arg" "$v"
      fi
    else
      # apt wants the version exactly as the index has it.
      [ "$v" = "$up" ] || not_found "$p" "$arg" "$v"
    fi
  fi
  WANT[$p]=$(pkgver "$up")
}

# The version package $1 has once the transaction is done (empty: not installed).
final() { if [ -n "${WANT[$1]:-}" ]; then echo "${WANT[$1]}"; else installed "$1"; fi; }

deps_broken() { # prints the first dependent whose cloudstack-common would not match, or fails
  local p v c
  c=$(final cloudstack-common)
  for p in $NEEDS_COMMON; do
    v=$(final "$p")
    if [ -n "$v" ] && [ "$(core "$v")" != "$(core "$c")" ]; then echo "$p $v $c"; return 0; fi
  done
  return 1
}

# Runs the transaction in WANT, as apt/dpkg or dnf/rpm would: checks holds, dependencies and
# downgrades, then installs each changed package (cloudstack-common first) with its scripts.
# $1: 1 when held packages may change (apt's --allow-change-held-packages), $2: 1 when
# downgrades are allowed.
transaction() {
  local allow_held=$1 allow_down=$2 p v old broken dep dv c
  local -a order=() changed=()
  fault install-fails && install_failed
  for p in "${!WANT[@]}"; do
    old=$(installed "$p")
    if [ -e "$ST/held/$p" ] && [ "$old" != "${WANT[$p]}" ]; then
      if [ "$FAMILY" = rpm ]; then
        # dnf's versionlock plugin excludes every other version of a locked package.
        echo "All matches were filtered out by exclude filtering for argument: $p-${WANT[$p]}" >&2
        echo "Error: Unable to find a match: $p-${WANT[$p]}" >&2
        exit 1
      elif [ "$allow_held" = 0 ]; then
        echo "E: Held packages were changed and -y was used without --allow-change-held-packages." >&2
        exit 100
      fi
    fi
  done
  if broken=$(deps_broken); then
    read -r dep dv c <<<"$broken"
    c=${c:-(none)}
    if [ "$FAMILY" = rpm ] && [ -z "${WANT[cloudstack-common]:-}" ] && [ ! -e "$ST/held/cloudstack-common" ] &&
      index_versions | grep -qxF "$(core "$dv")"; then
      # dnf resolves `Requires: cloudstack-common = X` by upgrading (or downgrading) it.
      WANT[cloudstack-common]=$(pkgver "$(core "$dv")")
    fi
    if broken=$(deps_broken); then
      read -r dep dv c <<<"$broken"
      if [ "$FAMILY" = rpm ]; then
        echo "Error: " >&2
        echo " Problem: package $dep-$dv.$RPM_ARCH requires cloudstack-common = $(core "$dv"), but none of the providers can be installed" >&2
        exit 1
      fi
      echo "The following packages have unmet dependencies:" >&2
      echo " $dep : Depends: cloudstack-common (= $dv) but ${c:-(none)} is to be installed" >&2
      echo "E: Unable to correct problems, you have held broken packages." >&2
      exit 100
    fi
  fi
  for p in cloudstack-common $REPO_PACKAGES; do
    [ -n "${WANT[$p]:-}" ] || continue
    in_list "$p" "${order[*]:-}" && continue
    order+=("$p")
  done
  for p in "${order[@]}"; do
    old=$(installed "$p")
    if [ "$old" = "${WANT[$p]}" ]; then
      if [ "$FAMILY" = rpm ]; then echo "Package $p-${WANT[$p]}.$RPM_ARCH is already installed."
      else echo "$p is already the newest version (${WANT[$p]})."; fi
      continue
    fi
    if [ "$FAMILY" = deb ] && [ -n "$old" ] && [ "$(vcmp "${WANT[$p]}" "$old")" = -1 ] && [ "$allow_down" = 0 ]; then
      echo "E: Packages were downgraded and -y was used without --allow-downgrades." >&2
      exit 100
    fi
    changed+=("$p")
  done
  if [ ${#changed[@]} = 0 ]; then
    [ "$FAMILY" = rpm ] && { echo "Dependencies resolved."; echo "Nothing to do."; echo "Complete!"; }
    return 0
  fi
  for p in "${changed[@]}"; do
    old=$(installed "$p")
    v=${WANT[$p]}
    if [ "$FAMILY" = rpm ] && [ -n "$old" ] && [ -n "$(unit_of "$p")" ] && known_unit "$(unit_of "$p")"; then
      # The old package's %preun runs on an upgrade too: the el8 spec stops the service there
      # (`systemctl stop cloudstack-management`, `service cloudstack-agent stop`, `service
      # cloudstack-usage stop`).
      syslog "stop $(unit_of "$p")"
      svc_stop "$(unit_of "$p")"
    fi
    if [ "$FAMILY" = rpm ]; then echo "  Installing       : $p-$v.$RPM_ARCH"
    else echo "Setting up $p ($v) ..."; fi
    put "$ST/installed/$p" "$v"
    # A package brings its unit file; neither family starts a new unit: debian/rules runs
    # dh_installinit --no-start, the spec's %post only enables.
    if [ -n "$(unit_of "$p")" ] && ! known_unit "$(unit_of "$p")"; then
      set_state "$(unit_of "$p")" inactive
    fi
    role_package "$p" "$(core "$v")" "$(core "$old")"
    echo "$p=$v" >>"$ST/install.log"
    if [ "$FAMILY" = rpm ] && [ "$p" = cloudstack-agent ] && known_unit libvirtd; then
      # The spec's %posttrans agent: `systemctl restart libvirtd` (the guests keep running).
      syslog "restart libvirtd"
      svc_stop libvirtd
      svc_start libvirtd
    fi
  done
  [ "$FAMILY" = rpm ] && echo "Complete!"
  return 0
}

# dpkg-query -W [-f FORMAT] PACKAGE...
core_dpkg_query() {
  local fmt='${Package}\t${Version}\n' p v ab stat out rc=0
  local -a pkgs=()
  [ "${1:-}" = --version ] && { echo "Debian dpkg-query package management program version 1.21.1 (amd64)."; return 0; }
  while [ $# -gt 0 ]; do
    case "$1" in
    -W | --show) ;;
    -f | --showformat) fmt=${2:-}; shift ;;
    -f=* | --showformat=*) fmt=${1#*=} ;;
    -f*) fmt=${1#-f} ;;
    -*) ;;
    *) pkgs+=("$1") ;;
    esac
    shift
  done
  for p in "${pkgs[@]}"; do
    v=$(installed "$p")
    if [ -z "$v" ]; then echo "dpkg-query: no packages found matching $p" >&2; rc=1; continue; fi
    if [ -e "$ST/held/$p" ]; then ab="hi "; stat="hold ok installed"; else ab="ii "; stat="install ok installed"; fi
    out=${fmt//'${Package}'/$p}
    out=${out//'${binary:Package}'/$p}
    out=${out//'${Version}'/$v}
    out=${out//'${db:Status-Abbrev}'/$ab}
    out=${out//'${Status}'/$stat}
    printf '%b' "$out"
  done
  return $rc
}

core_apt_get() {
  local allow_held=0 allow_down=0 cmd= a pv p
  local -a args=()
  for a in "$@"; do
    case "$a" in
    --allow-change-held-packages) allow_held=1 ;;
    --allow-downgrades) allow_down=1 ;;
    Dpkg::* | APT::*) ;;
    -*) ;;
    update | install) if [ -z "$cmd" ]; then cmd=$a; else args+=("$a"); fi ;;
    *) args+=("$a") ;;
    esac
  done
  case "$cmd" in
  update)
    put "$ST/index" "$(repo_line)"
    echo "Hit:1 $(apt_source) InRelease"
    echo "Reading package lists... Done" ;;
  install)
    echo "Reading package lists..."
    for pv in "${args[@]}"; do
      p=${pv%%=*}
      if [ "$p" = "$pv" ]; then want "$p" "" "$pv"; else want "$p" "${pv#*=}" "$pv"; fi
    done
    transaction "$allow_held" "$allow_down" ;;
  *) echo "apt-get stand-in: unsupported command" >&2; return 100 ;;
  esac
}

core_apt_cache() {
  local v src
  case "${1:-}" in
  madison)
    in_list "${2:-}" "$REPO_PACKAGES" || return 0
    src=$(apt_source)
    index_versions | sort -r -V | while read -r v; do
      echo " $2 | $v | ${src% *} ${src#* }/$(line_of "$v") amd64 Packages"
    done ;;
  policy)
    v=$(installed "${2:-}")
    echo "$2:"
    echo "  Installed: ${v:-(none)}"
    if in_list "$2" "$REPO_PACKAGES"; then v=$(candidate); else v=; fi
    echo "  Candidate: ${v:-(none)}" ;;
  *) echo "apt-cache stand-in: unsupported" >&2; return 100 ;;
  esac
}

core_apt_mark() {
  local verb=${1:-} p
  mkdir -p "$ST/held"
  shift
  case "$verb" in
  hold) for p in "$@"; do : >"$ST/held/$p"; echo "$p set on hold."; done ;;
  unhold) for p in "$@"; do rm -f "$ST/held/$p"; echo "Canceled hold on $p."; done ;;
  showhold) ls "$ST/held" ;;
  *) echo "apt-mark stand-in: unsupported" >&2; return 100 ;;
  esac
}

# An rpm query format with the tags the lab knows (rpm's tags are case-insensitive).
qf() { # $1 format, $2 name, $3 version-release
  local out=$1 ver=${3%%-*} rel=${3#*-} t
  for t in NAME name; do out=${out//"%{$t}"/$2}; done
  for t in VERSION version; do out=${out//"%{$t}"/$ver}; done
  for t in RELEASE release; do out=${out//"%{$t}"/$rel}; done
  for t in ARCH arch; do out=${out//"%{$t}"/$RPM_ARCH}; done
  for t in EPOCH epoch; do out=${out//"%{$t}"/(none)}; done
  printf '%b' "$out"
}

core_rpm() {
  local fmt= p v rc=0
  local -a pkgs=()
  [ "${1:-}" = --version ] && { echo "RPM version 4.16.1.3"; return 0; }
  while [ $# -gt 0 ]; do
    case "$1" in
    --qf | --queryformat) fmt=${2:-}; shift ;;
    --qf=* | --queryformat=*) fmt=${1#*=} ;;
    -*) ;;
    *) pkgs+=("$1") ;;
    esac
    shift
  done
  for p in "${pkgs[@]}"; do
    v=$(installed "$p")
    if [ -z "$v" ]; then echo "package $p is not installed"; rc=1; continue; fi
    if [ -n "$fmt" ]; then qf "$fmt" "$p" "$v"; else echo "$p-$v.$RPM_ARCH"; fi
  done
  return $rc
}

core_dnf() {
  local fmt= a spec p v found
  local -a args=()
  while [ $# -gt 0 ]; do
    case "$1" in
    --qf | --queryformat) fmt=${2:-}; shift ;;
    --qf=* | --queryformat=*) fmt=${1#*=} ;;
    -*) ;;
    *) args+=("$1") ;;
    esac
    shift
  done
  case "${args[0]:-}" in
  makecache)
    put "$ST/index" "$(repo_line)"
    echo "Metadata cache created." ;;
  repoquery)
    for p in "${args[@]:1}"; do
      in_list "$p" "$REPO_PACKAGES" || continue
      index_versions | sort -V | while read -r v; do
        if [ -n "$fmt" ]; then qf "$fmt" "$p" "$(pkgver "$v")"
        else echo "$p-0:$(pkgver "$v").$RPM_ARCH"; fi
      done
    done ;;
  versionlock)
    mkdir -p "$ST/held"
    case "${args[1]:-list}" in
    list)
      for a in "$ST"/held/*; do
        [ -e "$a" ] || continue
        p=${a##*/}; slurp "$a"
        echo "$p-0:${REPLY:-$(installed "$p")}.*"
      done ;;
    add)
      for p in "${args[@]:2}"; do
        v=$(installed "$p")
        put "$ST/held/$p" "$v"
        echo "Adding versionlock on: $p-0:$v.*"
      done ;;
    delete)
      for p in "${args[@]:2}"; do
        [ -e "$ST/held/$p" ] && echo "Deleting versionlock for: $p-0:$(installed "$p").*"
        rm -f "$ST/held/$p"
      done ;;
    esac ;;
  install)
    for spec in "${args[@]:1}"; do
      found=
      for p in $REPO_PACKAGES; do
        if [ "$spec" = "$p" ]; then want "$p" "" "$spec"; found=1; break; fi
        case "$spec" in
        "$p"-[0-9]* | "$p"-0:[0-9]*)
          v=${spec#"$p"-}; want "$p" "${v#0:}" "$spec"; found=1; break ;;
        esac
      done
      [ -n "$found" ] || not_found "$spec" "$spec" ""
    done
    echo "Dependencies resolved."
    transaction 0 1 ;;
  *) echo "dnf stand-in: unsupported command ${args[0]:-}" >&2; return 2 ;;
  esac
}

# ---------------------------------------------------------------- java, ss

# `java -version` writes to standard error, in the distribution's build strings.
core_java() {
  local m
  if slurp "$ST/java_major"; then m=$REPLY; else m=11; fi
  if [ "$FAMILY" = rpm ]; then
    echo "openjdk version \"$m.0.24\" 2024-07-16 LTS" >&2
    echo "OpenJDK Runtime Environment (Red_Hat-$m.0.24.0.8-1) (build $m.0.24+8-LTS)" >&2
    echo "OpenJDK 64-Bit Server VM (Red_Hat-$m.0.24.0.8-1) (build $m.0.24+8-LTS, mixed mode, sharing)" >&2
  else
    echo "openjdk version \"$m.0.24\" 2024-07-16" >&2
    echo "OpenJDK Runtime Environment (build $m.0.24+8-post-Ubuntu-1ubuntu322.04)" >&2
    echo "OpenJDK 64-Bit Server VM (build $m.0.24+8-post-Ubuntu-1ubuntu322.04, mixed mode, sharing)" >&2
  fi
}

# ss -ltn [-H] [FILTER]: the listeners role_listening names; a filter `sport = :N` or `:N`
# keeps port N.
core_ss() {
  local header=1 only= a backlog local peer
  for a in "$@"; do
    case "$a" in
    --no-header) header=0 ;;
    --*) ;;
    -*H*) header=0 ;;
    esac
    case "$a" in
    *:[0-9]*) only=${a##*:}; only=${only%%[!0-9]*} ;;
    esac
  done
  [ $header = 1 ] && echo "State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process"
  role_listening | while read -r backlog local peer; do
    [ -z "$only" ] || [ "$only" = "${local##*:}" ] || continue
    printf 'LISTEN 0      %-6s %18s %18s\n' "$backlog" "$local" "$peer"
  done
  return 0
}

# df: the real one, unless the fault `disk-full` is on, when every filesystem has 512 KiB
# left (coreutils' `df -P` columns: Filesystem, 1024-blocks, Used, Available, Capacity, Mounted on).
core_df() {
  local a real
  if fault disk-full; then
    echo "Filesystem     1024-blocks    Used Available Capacity Mounted on"
    for a in "$@"; do
      case "$a" in -*) continue ;; esac
      echo "/dev/lab          1048576 1048064       512     100% /"
    done
    return 0
  fi
  for real in /usr/bin/df /bin/df; do [ -x "$real" ] && exec "$real" "$@"; done
  echo "df: command not found" >&2
  return 127
}

# python3: `-c "import mysql.connector"` succeeds where MySQL's Python connector is installed
# (the deb's python3-mysql.connector, or the wheel the el8 package's %post installs with pip
# from /usr/share/cloudstack-management/setup/wheel); anything else is the real python3.
core_python3() {
  local real w
  if [ "${1:-}" = -c ] && [ "${2:-}" = "import mysql.connector" ]; then
    installed python3-mysql.connector >/dev/null && return 0
    for w in "$ROOT"/usr/share/cloudstack-management/setup/wheel/mysql_connector_python-*.whl; do
      [ -e "$w" ] && return 0
    done
    echo "ModuleNotFoundError: No module named 'mysql'" >&2
    return 1
  fi
  for real in /usr/bin/python3 /bin/python3; do [ -x "$real" ] && exec "$real" "$@"; done
  echo "python3: command not found" >&2
  return 127
}

# ---------------------------------------------------------------- dispatch

core_main() {
  case "$self" in
  systemctl) core_systemctl "$@" ;;
  dpkg-query) core_dpkg_query "$@" ;;
  apt-get) core_apt_get "$@" ;;
  apt-cache) core_apt_cache "$@" ;;
  apt-mark) core_apt_mark "$@" ;;
  rpm) core_rpm "$@" ;;
  dnf) core_dnf "$@" ;;
  java) core_java "$@" ;;
  ss) core_ss "$@" ;;
  df) core_df "$@" ;;
  python3) core_python3 "$@" ;;
  *) role_main "$self" "$@" ;;
  esac
}
