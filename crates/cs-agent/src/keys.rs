//! The `agent.properties` keys the KVM agent reads, with their types and defaults.
//!
//! Data from `AgentProperties.java` in apache/cloudstack at commit
//! 3d6cafe1936ed2403a1031cd5ad42dd205934412 (defaults as the code computes them: `60 * 60 * 72`
//! is written as `259200`, `30000L` as `30000`).

use serde::Serialize;

/// The Java type the agent reads a key as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum KeyKind {
    /// `String`.
    Str,
    /// `Integer`.
    Int,
    /// `Long`.
    Long,
    /// `Boolean`.
    Bool,
}

/// One key the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key (`guid`).
    pub key: &'static str,
    /// Its type.
    pub kind: KeyKind,
    /// The default in the agent's code, when there is one.
    pub default: Option<&'static str>,
}

/// Every key the agent reads, in `AgentProperties.java` order.
pub fn known_keys() -> &'static [KeyInfo] {
    KEYS
}

pub(crate) fn key_info(key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.key == key)
}

#[rustfmt::skip]
const KEYS: &[KeyInfo] = &[
    KeyInfo { key: "guid", kind: KeyKind::Str, default: None },
    KeyInfo { key: "resource", kind: KeyKind::Str, default: Some("com.cloud.hypervisor.kvm.resource.LibvirtComputingResource") },
    KeyInfo { key: "workers", kind: KeyKind::Int, default: Some("5") },
    KeyInfo { key: "host", kind: KeyKind::Str, default: Some("localhost") },
    KeyInfo { key: "host.lb.check.interval", kind: KeyKind::Long, default: None },
    KeyInfo { key: "port", kind: KeyKind::Int, default: Some("8250") },
    KeyInfo { key: "cluster", kind: KeyKind::Str, default: Some("default") },
    KeyInfo { key: "pod", kind: KeyKind::Str, default: Some("default") },
    KeyInfo { key: "zone", kind: KeyKind::Str, default: Some("default") },
    KeyInfo { key: "public.network.device", kind: KeyKind::Str, default: Some("cloudbr0") },
    KeyInfo { key: "private.network.device", kind: KeyKind::Str, default: Some("cloudbr1") },
    KeyInfo { key: "guest.network.device", kind: KeyKind::Str, default: None },
    KeyInfo { key: "local.storage.path", kind: KeyKind::Str, default: Some("/var/lib/libvirt/images/") },
    KeyInfo { key: "qemu.sockets.path", kind: KeyKind::Str, default: Some("/var/lib/libvirt/qemu") },
    KeyInfo { key: "local.storage.uuid", kind: KeyKind::Str, default: None },
    KeyInfo { key: "domr.scripts.dir", kind: KeyKind::Str, default: Some("scripts/network/domr") },
    KeyInfo { key: "cmds.timeout", kind: KeyKind::Int, default: Some("7200") },
    KeyInfo { key: "qcow2.delta.merge.timeout", kind: KeyKind::Int, default: Some("259200") },
    KeyInfo { key: "vm.migrate.speed", kind: KeyKind::Int, default: Some("-1") },
    KeyInfo { key: "vm.migrate.downtime", kind: KeyKind::Int, default: Some("-1") },
    KeyInfo { key: "vm.migrate.pauseafter", kind: KeyKind::Int, default: Some("-1") },
    KeyInfo { key: "vm.migrate.wait", kind: KeyKind::Int, default: Some("-1") },
    KeyInfo { key: "agent.hooks.basedir", kind: KeyKind::Str, default: Some("/etc/cloudstack/agent/hooks") },
    KeyInfo { key: "agent.hooks.libvirt_vm_xml_transformer.script", kind: KeyKind::Str, default: Some("libvirt-vm-xml-transformer.groovy") },
    KeyInfo { key: "agent.hooks.libvirt_vm_xml_transformer.shell_script", kind: KeyKind::Str, default: Some("libvirt-vm-xml-transformer.sh") },
    KeyInfo { key: "agent.hooks.libvirt_vm_xml_transformer.method", kind: KeyKind::Str, default: Some("transform") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_start.script", kind: KeyKind::Str, default: Some("libvirt-vm-state-change.groovy") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_start.shell_script", kind: KeyKind::Str, default: Some("libvirt-vm-state-change.sh") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_start.method", kind: KeyKind::Str, default: Some("onStart") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_stop.script", kind: KeyKind::Str, default: Some("libvirt-vm-state-change.groovy") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_stop.shell_script", kind: KeyKind::Str, default: Some("libvirt-vm-state-change.sh") },
    KeyInfo { key: "agent.hooks.libvirt_vm_on_stop.method", kind: KeyKind::Str, default: Some("onStop") },
    KeyInfo { key: "network.bridge.type", kind: KeyKind::Str, default: Some("native") },
    KeyInfo { key: "libvirt.vif.driver", kind: KeyKind::Str, default: None },
    KeyInfo { key: "network.direct.source.mode", kind: KeyKind::Str, default: None },
    KeyInfo { key: "network.direct.device", kind: KeyKind::Str, default: None },
    KeyInfo { key: "openvswitch.dpdk.enabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "openvswitch.dpdk.ovs.path", kind: KeyKind::Str, default: None },
    KeyInfo { key: "hypervisor.type", kind: KeyKind::Str, default: Some("kvm") },
    KeyInfo { key: "direct.download.temporary.download.location", kind: KeyKind::Str, default: Some("/var/lib/libvirt/images") },
    KeyInfo { key: "host.cache.location", kind: KeyKind::Str, default: Some("/var/cache/cloud") },
    KeyInfo { key: "rolling.maintenance.hooks.dir", kind: KeyKind::Str, default: None },
    KeyInfo { key: "rolling.maintenance.service.executor.disabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "hypervisor.uri", kind: KeyKind::Str, default: None },
    KeyInfo { key: "guest.cpu.mode", kind: KeyKind::Str, default: None },
    KeyInfo { key: "guest.cpu.model", kind: KeyKind::Str, default: None },
    KeyInfo { key: "guest.cpu.arch", kind: KeyKind::Str, default: None },
    KeyInfo { key: "guest.cpu.features", kind: KeyKind::Str, default: None },
    KeyInfo { key: "vm.memballoon.disable", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "vm.diskactivity.checkenabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "vm.diskactivity.checktimeout_s", kind: KeyKind::Int, default: Some("120") },
    KeyInfo { key: "vm.diskactivity.inactivetime_ms", kind: KeyKind::Long, default: Some("30000") },
    KeyInfo { key: "kvmclock.disable", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "vm.rng.enable", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "vm.rng.model", kind: KeyKind::Str, default: Some("random") },
    KeyInfo { key: "vm.rng.path", kind: KeyKind::Str, default: Some("/dev/random") },
    KeyInfo { key: "vm.rng.rate.bytes", kind: KeyKind::Int, default: Some("2048") },
    KeyInfo { key: "vm.rng.rate.period", kind: KeyKind::Int, default: Some("1000") },
    KeyInfo { key: "router.aggregation.command.each.timeout", kind: KeyKind::Long, default: None },
    KeyInfo { key: "host.overcommit.mem.mb", kind: KeyKind::Int, default: Some("0") },
    KeyInfo { key: "host.reserved.mem.mb", kind: KeyKind::Int, default: Some("1024") },
    KeyInfo { key: "host.reserved.cpu.count", kind: KeyKind::Int, default: Some("0") },
    KeyInfo { key: "vm.watchdog.model", kind: KeyKind::Str, default: Some("i6300esb") },
    KeyInfo { key: "vm.watchdog.action", kind: KeyKind::Str, default: Some("none") },
    KeyInfo { key: "iscsi.session.cleanup.enabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "heartbeat.update.timeout", kind: KeyKind::Long, default: Some("60000") },
    KeyInfo { key: "vm.migrate.domain.retrieve.timeout", kind: KeyKind::Int, default: Some("10") },
    KeyInfo { key: "reboot.host.and.alert.management.on.heartbeat.timeout", kind: KeyKind::Bool, default: Some("true") },
    KeyInfo { key: "enable.manually.setting.cpu.topology.on.kvm.vm", kind: KeyKind::Bool, default: Some("true") },
    KeyInfo { key: "host.cpu.manual.speed.mhz", kind: KeyKind::Int, default: Some("0") },
    KeyInfo { key: "hypervisor.scripts.dir", kind: KeyKind::Str, default: Some("scripts/vm/hypervisor") },
    KeyInfo { key: "kvm.scripts.dir", kind: KeyKind::Str, default: Some("scripts/vm/hypervisor/kvm") },
    KeyInfo { key: "private.macaddr.start", kind: KeyKind::Str, default: Some("00:16:3e:77:e2:a0") },
    KeyInfo { key: "private.ipaddr.start", kind: KeyKind::Str, default: Some("192.168.166.128") },
    KeyInfo { key: "private.bridge.name", kind: KeyKind::Str, default: None },
    KeyInfo { key: "private.network.name", kind: KeyKind::Str, default: None },
    KeyInfo { key: "network.scripts.dir", kind: KeyKind::Str, default: Some("scripts/vm/network/vnet") },
    KeyInfo { key: "storage.scripts.dir", kind: KeyKind::Str, default: Some("scripts/storage/qcow2") },
    KeyInfo { key: "stop.script.timeout", kind: KeyKind::Int, default: Some("120") },
    KeyInfo { key: "agent.script.timeout", kind: KeyKind::Int, default: Some("60") },
    KeyInfo { key: "vm.video.hardware", kind: KeyKind::Str, default: None },
    KeyInfo { key: "vm.video.ram", kind: KeyKind::Int, default: Some("0") },
    KeyInfo { key: "systemvm.iso.path", kind: KeyKind::Str, default: None },
    KeyInfo { key: "developer", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "libvirt.events.enabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "instance", kind: KeyKind::Str, default: None },
    KeyInfo { key: "mount.path", kind: KeyKind::Str, default: Some("/mnt") },
    KeyInfo { key: "consoleproxy.httpListenPort", kind: KeyKind::Int, default: Some("443") },
    KeyInfo { key: "ping.retries", kind: KeyKind::Int, default: Some("5") },
    KeyInfo { key: "vm.memballoon.stats.period", kind: KeyKind::Int, default: Some("0") },
    KeyInfo { key: "iothreads", kind: KeyKind::Int, default: Some("1") },
    KeyInfo { key: "virtv2v.verbose.enabled", kind: KeyKind::Bool, default: Some("false") },
    KeyInfo { key: "convert.instance.env.tmpdir", kind: KeyKind::Str, default: None },
    KeyInfo { key: "convert.instance.env.virtv2v.tmpdir", kind: KeyKind::Str, default: None },
    KeyInfo { key: "control.cidr", kind: KeyKind::Str, default: Some("169.254.0.0/16") },
    KeyInfo { key: "kvm.heartbeat.update.frequency", kind: KeyKind::Long, default: Some("60000") },
    KeyInfo { key: "kvm.heartbeat.update.max.tries", kind: KeyKind::Long, default: Some("5") },
    KeyInfo { key: "kvm.heartbeat.update.retry.sleep", kind: KeyKind::Long, default: Some("10000") },
    KeyInfo { key: "kvm.heartbeat.checker.timeout", kind: KeyKind::Long, default: Some("360000") },
    KeyInfo { key: "keystore.passphrase", kind: KeyKind::Str, default: None },
    KeyInfo { key: "host.tags", kind: KeyKind::Str, default: None },
    KeyInfo { key: "ssl.handshake.timeout", kind: KeyKind::Int, default: Some("30") },
    KeyInfo { key: "incremental.snapshot.timeout", kind: KeyKind::Int, default: Some("10800") },
    KeyInfo { key: "revert.snapshot.timeout", kind: KeyKind::Int, default: Some("10800") },
    KeyInfo { key: "create.full.clone", kind: KeyKind::Bool, default: Some("false") },
];
