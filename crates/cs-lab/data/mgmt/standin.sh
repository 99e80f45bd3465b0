#!/bin/bash
# The management-server role of the cs-lab node stand-ins (see data/node/core.sh for what every
# node shares: systemctl, the package managers, java, ss). One script, called through links
# named after each program; the node's files are under $LAB/root, its state under $LAB/state.
#
# Starting cloudstack-management runs, in the background like the real JVM, a simulation of
# CloudStack's DatabaseUpgradeChecker against the lab database with the stock `mariadb` client
# (credentials in $LAB/state/db.cnf, never in argv), then marks the node's mshost row Up.
set -u
case $0 in */*) CORE=${0%/*}/.core.sh ;; *) CORE=./.core.sh ;; esac
# shellcheck source=../node/core.sh
. "$CORE"

CONF=$ROOT/etc/cloudstack/management
USAGECONF=$ROOT/etc/cloudstack/usage
MSLOG=$ROOT/var/log/cloudstack/management/management-server.log
USAGELOG=$ROOT/var/log/cloudstack/usage/usage.log
MSLIB=$ROOT/usr/share/cloudstack-management/lib
USAGELIB=$ROOT/usr/share/cloudstack-usage/lib
MS=cloudstack-management
USAGE=cloudstack-usage

startup() { put "$ST/startup" "$*"; }

# A management-server.log line, in CloudStack's log4j layout.
mslog() {
  mkdir -p "$(dirname "$MSLOG")"
  printf '%s %-5s [%s] (main:null) (logid:) %s\n' "$(date -u '+%F %T,%3N')" "$1" "$2" "$3" >>"$MSLOG"
}
CHECKER=c.c.u.DatabaseUpgradeChecker
SVTR=c.c.u.SystemVmTemplateRegistration

# A key of db.properties.
prop() { sed -n "s/^${1//./\\.}=//p" "$CONF/db.properties" 2>/dev/null | tail -n 1; }

# The stock client on the cloud schema; SQL on stdin (or -e), stdout: rows, tab-separated.
sql() {
  mariadb --defaults-file="$ST/db.cnf" --batch --skip-column-names --connect-timeout=5 -D "$CLOUD_DB" "$@"
}
has_table() { [ -n "$(sql -e "SHOW TABLES LIKE '$1'" </dev/null 2>/dev/null)" ]; }

# ---------------------------------------------------------------- management server start

# Ends a failed start: the unit is failed, nothing listens.
die() {
  set_state "$MS" failed
  rm -f "$ST/listening" "$ST/pids/$MS"
  startup "failed $1"
  mslog INFO o.a.c.ServerDaemon "cloudstack-management exited: $1"
  exit 1
}

owner_alive() { [ -d "$ST" ] && { [ -z "${OWNER:-}" ] || [ -e "/proc/$OWNER" ]; }; }

# The MgmtFault::Hang fault: the start never finishes (until stopped, or the lab goes away).
hang() {
  mslog DEBUG "$CHECKER" "$1"
  while owner_alive; do sleep 0.2; done
  exit 0
}

# The table a step's representative DDL creates in the cloud schema.
table_of() { echo "lab_$(echo "$1" | tr '[:upper:]' '[:lower:]')"; }

# Step number $1 from the fault file $2, or 0.
fault_step() { cat "$ST/faults/$1" 2>/dev/null || echo 0; }

# A statement that fails for real (MariaDB error 1060, like apache/cloudstack#7358).
failing_ddl() {
  if [ "$2" = NoopDbUpgrade ]; then
    echo "ALTER TABLE \`version\` ADD COLUMN \`step\` char(32);"
  else
    echo "ALTER TABLE \`$1\` ADD COLUMN \`public_mtu\` int NULL; ALTER TABLE \`$1\` ADD COLUMN \`public_mtu\` int NULL;"
  fi
}

script_failed() {
  mslog ERROR "$CHECKER" "Unable to execute upgrade script"
  printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Unable to execute upgrade script" \
    "Caused by: java.sql.SQLException: $1" >>"$MSLOG"
  mslog ERROR "$CHECKER" "Unable to upgrade the database"
  printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Unable to upgrade the database" >>"$MSLOG"
}

# One schema step, as DatabaseUpgradeChecker.upgrade runs it: the "Upgrade" transaction
# (prepare SQL + INSERT version row 'Upgrade'), then the "Cleanup" one (cleanup SQL, then
# UPDATE the row to 'Complete').
run_step() {
  local k=$1 class=$2 from=$3 to=$4 t prep clean err delay
  t=$(table_of "$class")
  mslog INFO "$CHECKER" "Running upgrade $class to upgrade from $from-$to to $to"
  prep=
  if [ "$class" != NoopDbUpgrade ]; then
    prep="CREATE TABLE \`$t\` (\`id\` bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, \`step\` varchar(64) NOT NULL, \`to_version\` varchar(40) NOT NULL) ENGINE=InnoDB;
INSERT INTO \`$t\` (\`step\`, \`to_version\`) VALUES ('$class', '$to');"
  fi
  [ "$(fault_step half-apply-at-step)" = "$k" ] && prep="$prep
$(failing_ddl "$t" "$class")"
  prep="$prep
START TRANSACTION;
INSERT INTO \`version\` (\`version\`, \`updated\`, \`step\`) VALUES ('$to', UTC_TIMESTAMP(), 'Upgrade');
COMMIT;"
  if ! err=$(printf '%s\n' "$prep" | sql 2>&1 >/dev/null); then
    script_failed "$err"
    return 1
  fi
  fault hang && hang "Upgrade of $class paused (cs-lab fault: hang)"
  delay=$(cat "$ST/step_delay" 2>/dev/null || echo 0)
  sleep "$delay"
  mslog INFO "$CHECKER" "Cleanup upgrade $class to upgrade from $from-$to to $to"
  clean=
  [ "$class" != NoopDbUpgrade ] && clean="ALTER TABLE \`$t\` ADD COLUMN \`cleaned_up\` tinyint(1) NOT NULL DEFAULT 1;"
  [ "$(fault_step fail-at-step)" = "$k" ] && clean="$clean
$(failing_ddl "$t" "$class")"
  clean="$clean
UPDATE \`version\` SET \`step\` = 'Complete', \`updated\` = UTC_TIMESTAMP() WHERE \`version\` = '$to' AND \`step\` = 'Upgrade';"
  if ! err=$(printf '%s\n' "$clean" | sql 2>&1 >/dev/null); then
    script_failed "$err"
    return 1
  fi
  mslog DEBUG "$CHECKER" "Cleanup script $class is executed successfully"
  mslog DEBUG "$CHECKER" "Upgrade completed for version $to"
}

# The migration the Rust side prepared for $1 -> $2 (one "class to-version" line per step),
# with CloudStack's NoopDbUpgrade tail when the steps stop short of the code version. Sets
# TEMPLATE_STEP when a step that updates the system VM templates ran: every UpgradeXtoY class
# of the releases the lab simulates implements DbUpgradeSystemVmTemplate; DatabaseUpgradeChecker's
# own NoopDbUpgrade does not.
TEMPLATE_STEP=
upgrade() {
  local from=$1 to=$2 list k=0 prev=$1 class ver last=$1
  list="$ST/migrations/$(pad "$from")_$(pad "$to")"
  if [ ! -f "$list" ]; then
    mslog ERROR "$CHECKER" "cs-lab: no migration prepared from $from to $to (MgmtNode::prepare_migration); refusing to start"
    return 2
  fi
  mslog INFO "$CHECKER" "Database upgrade must be performed from $from to $to"
  while read -r class ver <&3; do
    [ -n "$class" ] || continue
    k=$((k + 1))
    run_step "$k" "$class" "$prev" "$ver" || return 1
    TEMPLATE_STEP=$class
    prev=$ver
    last=$ver
  done 3<"$list"
  if [ "$(vcmp "$last" "$to")" != 0 ]; then
    k=$((k + 1))
    run_step "$k" NoopDbUpgrade "$last" "$to" || return 1
  fi
}

# ---------------------------------------------------------------- system VM templates

# What DatabaseUpgradeChecker.upgrade does after the last step is Complete:
# updateSystemVmTemplates of the newest step that implements DbUpgradeSystemVmTemplate, that is
# SystemVmTemplateRegistration.updateSystemVmTemplates (engine/schema/.../upgrade/), for the
# template of the version the installed package ships (metadata.ini: systemvm-kvm-X.Y.Z). The
# lab's clouds are KVM only, so only the KVM entry is acted on:
#  * a template of that name is registered: mark it SYSTEM (updateRegisteredTemplateDetails);
#  * it is not, and KVM is in use: registerTemplates, which for every zone with an NFS image
#    store (and a KVM cluster) seeds the template into that zone's first NFS store; the first
#    creates the vm_template row (routing-<id>, SYSTEM, guest OS 15, QCOW2, cross-zones) and
#    each a template_store_ref row, Ready once seeded; no zone with a store: nothing at all;
#  * it is not, and KVM is not in use: a warning and nothing else.
# Then router.template.kvm = the template's name, minreq.sysvmtemplate.version = X.Y.Z and
# VMInstanceDaoImpl.UPDATE_SYSTEM_VM_TEMPLATE_ID_FOR_HYPERVISOR points every non-User KVM VM
# that is not removed, whatever its state, at the template. All of it in one transaction.
sysvm_templates() {
  local ver=$1 name=systemvm-kvm-$1 inuse tid zones err kvm_zones url
  url="https://download.cloudstack.org/systemvm/$(line_of "$ver")/systemvmtemplate-$ver-kvm.qcow2.bz2"
  mslog DEBUG "$SVTR" "Updating System Vm template IDs"
  if ! inuse=$(sql -e "SELECT DISTINCT \`hypervisor_type\` FROM \`cluster\` WHERE \`removed\` IS NULL" </dev/null 2>&1); then
    mslog ERROR "$SVTR" "updateSystemVmTemplates: Exception caught while getting hypervisor types from clusters: $inuse"
    template_failed "updateSystemVmTemplates:Exception while getting hypervisor types from clusters" "$inuse"
    return 1
  fi
  mslog DEBUG "$SVTR" "Updating KVM System Vms"
  if ! tid=$(sql -e "SELECT \`id\` FROM \`vm_template\` WHERE \`name\` = '$name' AND \`removed\` IS NULL ORDER BY \`id\` DESC LIMIT 1" </dev/null 2>&1); then
    template_failed "updateSystemVmTemplates:Exception while getting ids of templates" "$tid"
    return 1
  fi
  # ConfigurationDaoImpl.update only updates; a real database has both rows (the configuration
  # keys are written on every start), the lab's 4.18 subset may lack the first.
  local config="INSERT INTO \`configuration\` (\`category\`, \`instance\`, \`component\`, \`name\`, \`value\`, \`description\`, \`default_value\`, \`scope\`, \`is_dynamic\`)
  VALUES ('Advanced', 'DEFAULT', 'NetworkOrchestrationService', 'minreq.sysvmtemplate.version', '$ver', 'What version should the Virtual Routers report', '4.10.0', 'zone', 1)
  ON DUPLICATE KEY UPDATE \`value\` = VALUES(\`value\`);
INSERT INTO \`configuration\` (\`category\`, \`instance\`, \`component\`, \`name\`, \`value\`, \`description\`, \`default_value\`)
  VALUES ('Advanced', 'DEFAULT', 'NetworkManager', 'router.template.kvm', '$name', 'Name of the default router template on KVM.', 'SystemVM Template (KVM)')
  ON DUPLICATE KEY UPDATE \`value\` = VALUES(\`value\`);
UPDATE \`vm_instance\` SET \`vm_template_id\` = @tid WHERE \`type\` <> 'User' AND \`hypervisor_type\` = 'KVM' AND \`removed\` IS NULL;"
  kvm_zones="SELECT \`c\`.\`data_center_id\` FROM \`cluster\` \`c\` WHERE \`c\`.\`hypervisor_type\` = 'KVM' AND \`c\`.\`removed\` IS NULL"
  if [ -n "$tid" ]; then
    err=$(printf '%s\n' "START TRANSACTION;" "SET @tid = $tid;" \
      "UPDATE \`vm_template\` SET \`type\` = 'SYSTEM' WHERE \`id\` = @tid;" "$config" "COMMIT;" | sql 2>&1 >/dev/null) || {
      template_failed "updateSystemVmTemplates:Exception while getting ids of templates" "$err"
      return 1
    }
  elif printf '%s\n' "$inuse" | grep -qx KVM; then
    mslog INFO "$SVTR" "Grabbing lock to register templates."
    if ! zones=$(sql -e "SELECT DISTINCT \`data_center_id\` FROM \`image_store\` WHERE \`protocol\` = 'nfs' AND \`removed\` IS NULL AND \`data_center_id\` IN ($kvm_zones)" </dev/null 2>&1); then
      template_failed "Failed to register systemVM template. Upgrade Failed" "$zones"
      return 1
    fi
    if [ -n "$zones" ]; then
      err=$(printf '%s\n' "START TRANSACTION;" "SET @tuuid = UUID();" \
        "INSERT INTO \`vm_template\` (\`unique_name\`, \`name\`, \`uuid\`, \`public\`, \`featured\`, \`type\`, \`hvm\`, \`bits\`, \`url\`, \`format\`, \`created\`, \`account_id\`, \`display_text\`, \`enable_password\`, \`guest_os_id\`, \`cross_zones\`, \`hypervisor_type\`, \`size\`, \`state\`, \`deploy_as_is\`)
  VALUES ('routing-', '$name', @tuuid, 0, 0, 'SYSTEM', 1, 64, '$url', 'QCOW2', UTC_TIMESTAMP(), 1, '$name', 0, 15, 1, 'KVM', 5368709120, 'Active', 0);" \
        "SET @tid = LAST_INSERT_ID();" \
        "UPDATE \`vm_template\` SET \`unique_name\` = CONCAT('routing-', @tid) WHERE \`id\` = @tid;" \
        "INSERT INTO \`template_store_ref\` (\`store_id\`, \`template_id\`, \`created\`, \`last_updated\`, \`download_pct\`, \`size\`, \`store_role\`, \`physical_size\`, \`download_state\`, \`install_path\`, \`url\`, \`state\`, \`destroyed\`, \`is_copy\`, \`update_count\`, \`ref_cnt\`)
  SELECT MIN(\`id\`), @tid, UTC_TIMESTAMP(), UTC_TIMESTAMP(), 100, 5368709120, 'Image', 561242112, 'DOWNLOADED', CONCAT('template/tmpl/1/', @tid, '/', @tuuid, '.qcow2'), '$url', 'Ready', 0, 0, 0, 0
  FROM \`image_store\` WHERE \`protocol\` = 'nfs' AND \`removed\` IS NULL AND \`data_center_id\` IN ($kvm_zones) GROUP BY \`data_center_id\`;" \
        "$config" "COMMIT;" | sql 2>&1 >/dev/null) || {
        template_failed "Failed to register systemVM template. Upgrade Failed" "$err"
        return 1
      }
    fi
  else
    mslog WARN "$SVTR" "$ver KVM SystemVm template not found. Cannot upgrade system Vms hypervisor is not used, so not failing upgrade"
  fi
  mslog DEBUG "$SVTR" "Updating System Vm Template IDs Complete"
}

# A failed template update: SystemVmTemplateRegistration throws, DatabaseUpgradeChecker logs
# "Unable to upgrade the database" and rethrows. Every version row is Complete by then.
template_failed() {
  mslog ERROR "$SVTR" "$1"
  printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: $1" "Caused by: java.sql.SQLException: $2" >>"$MSLOG"
  mslog ERROR "$CHECKER" "Unable to upgrade the database"
  printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Unable to upgrade the database" >>"$MSLOG"
}

mshost_up() {
  local msid uuid name ip port
  if ! has_table mshost; then
    mslog WARN c.c.c.ClusterManagerImpl "cs-lab: no mshost table in $CLOUD_DB; cluster membership not recorded"
    return 0
  fi
  read -r msid uuid name ip port <"$ST/mshost"
  sql -e "INSERT INTO \`mshost\` (\`msid\`, \`runid\`, \`name\`, \`uuid\`, \`state\`, \`version\`, \`service_ip\`, \`service_port\`, \`last_update\`, \`removed\`, \`alert_count\`)
VALUES ($msid, $(date +%s%3N), '$name', '$uuid', 'Up', '$1', '$ip', $port, UTC_TIMESTAMP(), NULL, 0)
ON DUPLICATE KEY UPDATE \`runid\` = VALUES(\`runid\`), \`state\` = 'Up', \`version\` = VALUES(\`version\`), \`last_update\` = UTC_TIMESTAMP(), \`removed\` = NULL" </dev/null
}

mshost_down() {
  local msid
  CLOUD_DB=$(prop db.cloud.name)
  [ -n "$CLOUD_DB" ] && has_table mshost || return 0
  read -r msid _ <"$ST/mshost"
  sql -e "UPDATE \`mshost\` SET \`state\` = 'Down', \`last_update\` = UTC_TIMESTAMP() WHERE \`msid\` = $msid" </dev/null 2>/dev/null
}

ms_daemon() {
  local code need have db any c err rc
  OWNER=$(cat "$ST/owner_pid" 2>/dev/null)
  mkdir -p "$ST/pids"
  put "$ST/pids/$MS" $$
  startup starting
  code=$(core "$(installed $MS)")
  mslog INFO o.a.c.ServerDaemon "Server configuration file found: /etc/cloudstack/management/server.properties"
  if fault dies-silently; then
    # The MgmtFault::DiesSilently fault: the JVM is killed from outside (the kernel's OOM killer
    # sends SIGKILL), so no Java code runs any more and the log simply stops here; systemd
    # records the main process as killed by signal 9 and the unit as failed.
    set_state "$MS" failed
    rm -f "$ST/listening" "$ST/pids/$MS"
    startup "failed status=9/KILL"
    exit 137
  fi
  need=11
  [ "$(vcmp "$code" 4.20.0.0)" != -1 ] && need=17
  have=$(cat "$ST/java_major" 2>/dev/null || echo 11)
  if [ "$have" -lt "$need" ]; then
    mslog ERROR o.a.c.ServerDaemon "Exception in thread \"main\" java.lang.UnsupportedClassVersionError: org/apache/cloudstack/ServerDaemon has been compiled by a more recent version of the Java Runtime (class file version $((need + 44)).0), this version of the Java Runtime only recognizes class file versions up to $((have + 44)).0"
    die "java.lang.UnsupportedClassVersionError"
  fi
  CLOUD_DB=$(prop db.cloud.name)
  [ -n "$CLOUD_DB" ] || { mslog ERROR "$CHECKER" "db.cloud.name missing from db.properties"; die "no db.cloud.name"; }
  mslog INFO "$CHECKER" "Grabbing lock to check for database upgrade."
  if ! db=$(sql -e "SELECT \`version\` FROM \`version\` WHERE \`step\` = 'Complete' ORDER BY \`id\` DESC LIMIT 1" </dev/null 2>&1); then
    mslog ERROR "$CHECKER" "Unable to get the current version"
    printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Unable to get the current version" "Caused by: java.sql.SQLException: $db" >>"$MSLOG"
    die "database not reachable"
  fi
  if [ -z "$db" ]; then
    any=$(sql -e "SELECT \`version\` FROM \`version\` ORDER BY \`id\` DESC LIMIT 1" </dev/null 2>/dev/null)
    if [ -n "$any" ]; then
      mslog ERROR "$CHECKER" "Version table contains records for which upgrade wasn't completed"
      printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Version table contains records for which upgrade wasn't completed" >>"$MSLOG"
      die "incomplete version records"
    fi
    mslog ERROR "$CHECKER" "Unable to determine the current version, version table exists and empty, nics table doesn't exist"
    die "empty version table"
  fi
  mslog INFO "$CHECKER" "DB version = $db Code Version = $code"
  c=$(vcmp "$db" "$code")
  if [ "$c" = 1 ]; then
    mslog ERROR "$CHECKER" "Database version $db is higher than management software version $code"
    printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Database version $db is higher than management software version $code" >>"$MSLOG"
    die "database newer than code"
  elif [ "$c" = 0 ]; then
    mslog INFO "$CHECKER" "DB version and code version matches so no upgrade needed."
    if [ "$(cat "$ST/faults/start-fails-at" 2>/dev/null)" = "$code" ]; then
      mslog ERROR "$CHECKER" "Unable to initialize the database encryptors due to Unable to decrypt the value of configuration 'init'. Please check if database encryption key and database encryptor version are correct."
      printf '%s\n' "com.cloud.utils.exception.CloudRuntimeException: Unable to initialize the database encryptors due to Unable to decrypt the value of configuration 'init'" >>"$MSLOG"
      die "Unable to initialize the database encryptors"
    fi
    fault hang && hang "Start paused (cs-lab fault: hang)"
  else
    upgrade "$db" "$code"
    rc=$?
    [ $rc = 2 ] && die "no migration prepared from $db to $code"
    [ $rc != 0 ] && die "Unable to upgrade the database"
    if [ -n "$TEMPLATE_STEP" ]; then
      sysvm_templates "$(echo "$code" | cut -d. -f1-3)" || die "Unable to upgrade the database"
    fi
  fi
  if ! err=$(mshost_up "$code" 2>&1); then
    mslog ERROR c.c.c.ClusterManagerImpl "Unable to register the management server: $err"
    die "mshost"
  fi
  : >"$ST/listening"
  # The log line first: whoever sees the node Up finds the whole start in the log.
  mslog INFO o.a.c.ServerDaemon "Started ServerConnector@lab{HTTP/1.1, (http/1.1)}{0.0.0.0:8080}"
  startup "up $code"
  rm -f "$ST/pids/$MS"
  exit 0
}

# Whether process $1 is gone (a zombie counts: PID 1 in containers reaps slowly).
gone() { [ ! -r "/proc/$1/status" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# Stops the background start if it still runs (it is in its own session: kill the group).
kill_daemon() {
  local pid i
  pid=$(cat "$ST/pids/$MS" 2>/dev/null)
  rm -f "$ST/pids/$MS"
  [ -n "$pid" ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q standin || return 0
  kill -TERM -- "-$pid" 2>/dev/null
  for i in $(seq 40); do gone "$pid" && return 0; sleep 0.05; done
  kill -KILL -- "-$pid" 2>/dev/null
}

# ---------------------------------------------------------------- the role's units

role_unit_start() {
  case "$1" in
  "$MS")
    kill_daemon
    rm -f "$ST/listening"
    startup starting
    mkdir -p "$ST/pids"
    setsid "$BIN/.standin" __ms-daemon </dev/null >>"$ST/daemon.out" 2>&1 &
    put "$ST/pids/$MS" $!
    ;;
  "$USAGE")
    mkdir -p "$(dirname "$USAGELOG")"
    echo "$(date -u '+%F %T,%3N') INFO  [cloud.usage.UsageServer] (main:null) (logid:) Usage server $(core "$(installed $USAGE)") started" >>"$USAGELOG"
    ;;
  esac
}

role_unit_stop() {
  case "$1" in
  "$MS")
    kill_daemon
    rm -f "$ST/listening"
    if [ "$2" != inactive ]; then
      mshost_down
      startup stopped
      mslog INFO o.a.c.ServerDaemon "Stopping CloudStack Management Server"
    fi
    ;;
  esac
}

# The MgmtFault::StopFails fault: the stop job of cloudstack-management fails.
role_refuse() {
  local verb=$1
  shift
  if [ "$verb" != start ] && fault stop-fails && in_list "$MS" "$*"; then
    echo "Job for $MS.service failed because the control process exited with error code." >&2
    echo "See \"systemctl status $MS.service\" and \"journalctl -xeu $MS.service\" for details." >&2
    return 1
  fi
  return 0
}

# What listens once the management server is Up: the API (8080), the agents' port (8250) and
# the cluster servlet (9090), bound to every address.
role_listening() {
  local p
  [ -e "$ST/listening" ] || return 0
  for p in 8080 8250 9090; do echo "4096 *:$p *:*"; done
}

# ---------------------------------------------------------------- the role's packages

# Installs the conffiles version $2 ships (packaged/$2/<path>) over those of version $1: a file
# the package did not change stays as it is; one the admin did not change is replaced; one both
# changed is kept, the new one going beside it. dpkg does this with --force-confold (the new one
# as .dpkg-dist); rpm does it for %config(noreplace) files (as .rpmnew).
conffiles() {
  local old=$ST/packaged/$1 new=$ST/packaged/$2 rel suffix=.dpkg-dist
  [ "$FAMILY" = rpm ] && suffix=.rpmnew
  [ -d "$new" ] || return 0
  (cd "$new" && find . -type f) | while read -r rel; do
    rel=${rel#./}
    if [ ! -e "$ROOT/$rel" ]; then
      mkdir -p "$(dirname "$ROOT/$rel")"
      cp "$new/$rel" "$ROOT/$rel"
    elif [ -f "$old/$rel" ] && cmp -s "$old/$rel" "$new/$rel"; then
      :
    elif [ -f "$old/$rel" ] && cmp -s "$old/$rel" "$ROOT/$rel"; then
      cp "$new/$rel" "$ROOT/$rel"
    elif ! cmp -s "$new/$rel" "$ROOT/$rel"; then
      cp "$new/$rel" "$ROOT/$rel$suffix"
    fi
  done
}

jars() {
  local dir=$1 v=$2 j
  shift 2
  mkdir -p "$dir"
  rm -f "$dir"/cloud-*.jar
  for j in "$@"; do : >"$dir/cloud-$j-$v.jar"; done
}

# What the usage package lays down. Its configuration links the management server's
# db.properties and key (the spec's %post usage; the deb's postinst does the same), and a new
# install gets the package's log4j configuration and /etc/default file.
usage_files() {
  local v=$1 log4j=$ST/packaged/$1/etc/cloudstack/management/log4j-cloud.xml
  mkdir -p "$USAGECONF" "$(dirname "$USAGELOG")"
  [ -e "$USAGECONF/db.properties" ] || ln -s ../management/db.properties "$USAGECONF/db.properties"
  [ -e "$USAGECONF/key" ] || ln -s ../management/key "$USAGECONF/key"
  [ -e "$USAGECONF/log4j-cloud.xml" ] || { [ -f "$log4j" ] && cp "$log4j" "$USAGECONF/log4j-cloud.xml"; }
  [ -e "$ROOT/etc/default/$USAGE" ] || {
    mkdir -p "$ROOT/etc/default"
    printf '%s\n' 'JAVA_OPTS="-Xms256m -Xmx2048m"' \
      'CLASSPATH="/usr/share/cloudstack-usage/lib/*:/etc/cloudstack/usage"' \
      'JAVA_CLASS=com.cloud.usage.UsageServer' >"$ROOT/etc/default/$USAGE"
  }
  [ -e "$USAGELOG" ] || : >"$USAGELOG"
  jars "$USAGELIB" "$v" usage utils
}

role_package() {
  case "$1" in
  "$MS")
    jars "$MSLIB" "$2" api server engine-schema utils plugin-hypervisor-kvm
    conffiles "$3" "$2"
    ;;
  "$USAGE") usage_files "$2" ;;
  esac
}

# ---------------------------------------------------------------- dispatch

role_main() {
  case "$1" in
  .standin)
    case "${2:-}" in
    __ms-daemon) ms_daemon ;;
    *) echo "cs-lab stand-in: unknown internal command ${2:-}" >&2; exit 2 ;;
    esac ;;
  *) echo "cs-lab stand-in: unknown program $1" >&2; exit 127 ;;
  esac
}

core_main "$@"
