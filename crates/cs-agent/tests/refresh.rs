//! One host's refresh against lab KVM hosts (stand-in package manager and agent, a real
//! keystore), one test per fault, showing what the refresh does about each.

use std::sync::Arc;
use std::time::Duration;

use cs_agent::{Deps, Error, Node, RefreshContext, RefreshOptions, diff, refresh_host};
use cs_core::{CsVersion, NoProgress, StepOutcome};
use cs_lab::{KvmFault, KvmHost, KvmHostOptions, LabFamily, LabRepoSwitch};

struct Lab {
    host: KvmHost,
    cx: RefreshContext,
    journal: tempfile::TempDir,
}

fn lab_with(configure: impl FnOnce(&mut KvmHostOptions)) -> Lab {
    let mut o = KvmHostOptions::new("kvm1", "c1");
    o.ssh = false;
    configure(&mut o);
    let host = KvmHost::start(&o).expect("lab host (needs keytool: default-jre-headless)");
    let node = Node::new(host.local_host())
        .rerooted(host.root())
        .in_cluster("c1");
    let status = host.status();
    let deps = Deps {
        status: status.clone(),
        maintenance: Some(status),
        repo: Some(LabRepoSwitch::of([&host])),
    };
    let mut opts = RefreshOptions::new(CsVersion::parse("4.19.1.0").unwrap());
    opts.up_deadline = Duration::from_millis(600);
    opts.poll = Duration::from_millis(100);
    let cx = RefreshContext::new(node, opts, deps);
    Lab {
        host,
        cx,
        journal: tempfile::tempdir().unwrap(),
    }
}

fn lab() -> Lab {
    lab_with(|_| {})
}

impl Lab {
    async fn refresh(&self) -> cs_agent::Result<cs_agent::RefreshReport> {
        refresh_host(
            &self.cx,
            &self.journal.path().join("kvm1.jsonl"),
            true,
            &NoProgress,
        )
        .await
    }

    fn props(&self) -> String {
        std::fs::read_to_string(
            self.host
                .root()
                .join("etc/cloudstack/agent/agent.properties"),
        )
        .unwrap()
    }
}

fn failed_step(e: &Error) -> (String, String) {
    let Error::Refresh { source, .. } = e else {
        panic!("not a refresh error: {e}");
    };
    let report = source.report().expect("a report");
    (
        report.failed_step.clone().unwrap_or_default(),
        cs_core::error_chain(e),
    )
}

#[tokio::test]
async fn clean_refresh_upgrades_restarts_and_a_second_run_applies_nothing() {
    let lab = lab();
    let before = lab.props();
    let r = lab.refresh().await.unwrap();
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0")
    );
    assert_eq!(
        lab.host.installed("cloudstack-common").as_deref(),
        Some("4.19.1.0")
    );
    let h = lab.host.hypervisor();
    assert!(h.is_up(), "{h:?}");
    assert_eq!(h.version, CsVersion::parse("4.19.1.0").ok());
    assert!(!lab.host.in_maintenance());
    assert_eq!(lab.props(), before, "agent.properties untouched");
    assert!(r.restored.is_empty());
    assert_eq!(
        r.run.ids_with(StepOutcome::Applied),
        [
            "agent.snapshot",
            "agent.maintenance.enter",
            "agent.repo",
            "agent.install",
            "agent.restart",
            "agent.maintenance.leave"
        ]
    );
    // The lab's agent is Up at the target as soon as it restarts: nothing left to wait for.
    assert_eq!(
        r.run.ids_with(StepOutcome::Skipped),
        [
            "agent.jars",
            "agent.identity",
            "agent.keystore",
            "agent.wait_up"
        ]
    );
    assert_eq!(lab.host.systemctl_log(), ["restart cloudstack-agent"]);
    let again = lab.refresh().await.unwrap();
    assert!(
        again.run.ids_with(StepOutcome::Applied).is_empty(),
        "{}",
        again.run
    );
    assert_eq!(lab.host.systemctl_log().len(), 1, "no second restart");
}

#[tokio::test]
async fn identity_keys_the_package_overwrote_are_restored_and_reported() {
    let lab = lab();
    lab.host.inject(KvmFault::OverwriteIdentity).unwrap();
    let before = cs_agent::Properties::parse(&lab.props()).unwrap();
    let r = lab.refresh().await.unwrap();
    let keys: Vec<&str> = r.restored.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "guid",
            "local.storage.uuid",
            "host",
            "zone",
            "pod",
            "cluster",
            "keystore.passphrase",
            "public.network.device",
            "private.network.device"
        ]
    );
    let guid = r.restored.iter().find(|k| k.key == "guid").unwrap();
    assert_eq!(guid.package_value.as_deref(), Some(""));
    let after = cs_agent::Properties::parse(&lab.props()).unwrap();
    for key in cs_agent::IDENTITY_KEYS {
        assert_eq!(after.get(key), before.get(key), "{key}");
    }
    // Non-identity keys keep the package's text (its comments included).
    assert!(
        lab.props()
            .contains("#host= The IP address of management server")
    );
    assert!(
        diff(&before, &after).is_empty(),
        "{:?}",
        diff(&before, &after)
    );
    assert!(lab.host.hypervisor().is_up());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(
            lab.host
                .root()
                .join("etc/cloudstack/agent/agent.properties"),
        )
        .unwrap()
        .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_dropped_passphrase_is_put_back_before_the_restart() {
    let lab = lab();
    lab.host.inject(KvmFault::DropPassphrase).unwrap();
    let r = lab.refresh().await.unwrap();
    assert_eq!(r.restored.len(), 1);
    assert_eq!(r.restored[0].key, "keystore.passphrase");
    assert_eq!(r.restored[0].package_value, None);
    assert!(r.summary().contains("restored keystore.passphrase"));
    assert!(lab.props().contains(&format!(
        "keystore.passphrase={}",
        lab.host.passphrase().expose()
    )));
    assert!(lab.host.hypervisor().is_up());
    let debug = format!("{r:?}");
    assert!(
        !debug.contains(lab.host.passphrase().expose()),
        "passphrase leaked"
    );
}

#[tokio::test]
async fn stale_jars_left_by_the_package_are_removed() {
    let lab = lab();
    lab.host.inject(KvmFault::MixedJars).unwrap();
    let r = lab.refresh().await.unwrap();
    let mut removed = r.removed_jars.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            "cloud-agent-4.18.0.0.jar",
            "cloud-plugin-hypervisor-kvm-4.18.0.0.jar",
            "cloud-utils-4.18.0.0.jar"
        ]
    );
    let lib = lab.host.root().join("usr/share/cloudstack-agent/lib");
    assert!(lib.join("cloud-agent-4.19.1.0.jar").exists());
    assert!(lib.join("commons-io-2.8.0.jar").exists(), "other jars stay");
}

#[tokio::test]
async fn a_failed_install_rolls_back_repo_and_maintenance() {
    let lab = lab();
    lab.host.inject(KvmFault::InstallFails).unwrap();
    let list = lab
        .host
        .root()
        .join("etc/apt/sources.list.d/cloudstack.list");
    let list_before = std::fs::read_to_string(&list).unwrap();
    let e = lab.refresh().await.unwrap_err();
    let (step, chain) = failed_step(&e);
    assert_eq!(step, "agent.install");
    assert!(chain.contains("dpkg returned an error code"), "{chain}");
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.18.0.0")
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), list_before);
    assert!(!lab.host.in_maintenance());
    assert!(lab.host.hypervisor().is_up());
}

#[tokio::test]
async fn an_agent_that_never_comes_up_is_rolled_back_to_the_previous_version() {
    let lab = lab();
    lab.host.inject(KvmFault::OverwriteIdentity).unwrap();
    lab.host.inject(KvmFault::NeverUp).unwrap();
    let before = lab.props();
    let e = lab.refresh().await.unwrap_err();
    let (step, chain) = failed_step(&e);
    assert_eq!(step, "agent.wait_up");
    assert!(chain.contains("not Up at 4.19.1.0"), "{chain}");
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.18.0.0")
    );
    assert_eq!(lab.props(), before, "snapshot restored byte for byte");
    assert!(!lab.host.in_maintenance());
    // Once the cause is gone, the same journal resumes and finishes.
    lab.host.clear(KvmFault::NeverUp).unwrap();
    lab.host.clear(KvmFault::OverwriteIdentity).unwrap();
    lab.refresh().await.unwrap();
    assert!(lab.host.hypervisor().is_up());
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0")
    );
}

#[tokio::test]
async fn an_unusable_keystore_stops_the_refresh_before_the_restart() {
    let lab = lab();
    // Corrupt the store: the passphrase no longer opens it.
    let jks = lab.host.root().join("etc/cloudstack/agent/cloud.jks");
    let mut bytes = std::fs::read(&jks).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&jks, bytes).unwrap();
    let e = lab.refresh().await.unwrap_err();
    let (step, chain) = failed_step(&e);
    assert_eq!(step, "agent.keystore");
    assert!(chain.contains("does not open cloud.jks"), "{chain}");
    assert!(
        lab.host
            .systemctl_log()
            .iter()
            .all(|l| l == "restart cloudstack-agent")
    );
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.18.0.0")
    );
}

#[tokio::test]
async fn rpm_hosts_refresh_through_dnf_with_holds_kept() {
    let lab = lab_with(|o| o.family = LabFamily::Rpm);
    let host = lab.cx.node.host.clone();
    cs_agent::packages::hold(
        host.as_ref(),
        cs_agent::packages::Family::Rpm,
        &["cloudstack-agent"],
    )
    .await
    .unwrap();
    let r = lab.refresh().await.unwrap();
    assert!(r.restored.is_empty());
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0-1")
    );
    let (_, pkgs) = cs_agent::agent_packages(host.as_ref()).await.unwrap();
    assert!(pkgs.iter().all(|p| p.held), "{pkgs:?}");
    let repo =
        std::fs::read_to_string(lab.host.root().join("etc/yum.repos.d/cloudstack.repo")).unwrap();
    assert!(repo.contains("/4.19/"), "{repo}");
    let _: Arc<dyn cs_core::Host> = host;
}

/// A host that records the program of every command it runs.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn cs_core::Host>,
    programs: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl cs_core::Host for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn run(&self, cmd: &cs_core::Cmd) -> Result<cs_core::Output, cs_core::HostError> {
        self.programs.lock().unwrap().push(
            std::iter::once(cmd.program())
                .chain(cmd.argv())
                .collect::<Vec<_>>()
                .join(" "),
        );
        self.inner.run(cmd).await
    }
    async fn read(&self, path: &std::path::Path) -> Result<Vec<u8>, cs_core::HostError> {
        self.inner.read(path).await
    }
    async fn write_atomic(
        &self,
        path: &std::path::Path,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), cs_core::HostError> {
        self.inner.write_atomic(path, data, mode).await
    }
    async fn stat(&self, path: &std::path::Path) -> Result<cs_core::FileMeta, cs_core::HostError> {
        self.inner.stat(path).await
    }
    async fn list_dir(
        &self,
        path: &std::path::Path,
    ) -> Result<Vec<cs_core::DirEntry>, cs_core::HostError> {
        self.inner.list_dir(path).await
    }
    async fn create_dir_all(
        &self,
        path: &std::path::Path,
        mode: u32,
    ) -> Result<(), cs_core::HostError> {
        self.inner.create_dir_all(path, mode).await
    }
    async fn remove_file(&self, path: &std::path::Path) -> Result<(), cs_core::HostError> {
        self.inner.remove_file(path).await
    }
}

/// What one step learnt is not asked again by the next: the snapshot's package query answers
/// the install step's first check, and the repository step's check the install's version
/// lookup. Each step's check after its apply still asks the host.
#[tokio::test]
async fn a_refresh_asks_the_package_database_and_the_index_twice_each() {
    let mut lab = lab();
    let counting = Arc::new(Counting {
        inner: lab.cx.node.host.clone(),
        programs: std::sync::Mutex::new(Vec::new()),
    });
    let node = Node::new(counting.clone())
        .rerooted(lab.host.root())
        .in_cluster("c1");
    lab.cx = RefreshContext::new(node, lab.cx.options.clone(), lab.cx.deps.clone());
    lab.refresh().await.unwrap();
    assert_eq!(
        lab.host.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0")
    );
    let programs = counting.programs.lock().unwrap().clone();
    let count = |prefix: &str| programs.iter().filter(|p| p.starts_with(prefix)).count();
    // Before: one query for the snapshot, one for the install check, one for its re-check.
    assert_eq!(count("dpkg-query"), 2, "{programs:#?}");
    // Before: the repository check, its re-check, and the install's own lookup.
    assert_eq!(count("apt-cache madison"), 2, "{programs:#?}");
    assert_eq!(count("apt-get -q update"), 1, "{programs:#?}");
}
