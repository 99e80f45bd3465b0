//! Over real SSH: facts from several lab hosts, and a fleet refresh from a hosts file with a
//! canary, cluster batches, stop on the first failure, and a resume through the journal.

use std::sync::Arc;
use std::time::Duration;

use cs_agent::fleet::{self, FleetOptions, Outcome, Target};
use cs_agent::{Deps, Node, RefreshContext, RefreshOptions, collect_facts, refresh_host};
use cs_core::{CsVersion, Host, NoProgress};
use cs_lab::{KvmFault, KvmHost, LabRepoSwitch, LabStatus, start_kvm_hosts};

fn hosts(n: usize) -> Vec<KvmHost> {
    start_kvm_hosts(n, 2, |_| {}).expect("lab hosts (openssh-server, default-jre-headless)")
}

/// Connects to the lab host behind a target (matched by port), as an example binary would.
async fn node_for(lab: &[KvmHost], t: &Target) -> Result<Node, String> {
    let Some(h) = lab
        .iter()
        .find(|h| h.ssh().map(|s| s.port()) == Some(t.port))
    else {
        // Not a lab host: try it anyway, as the example binaries would.
        let any = lab[0].ssh().expect("lab hosts have sshd");
        let ssh = cs_core::SshHost::builder(t.addr())
            .user(t.user.clone())
            .key_file(any.client_key())
            .known_hosts(any.known_hosts())
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| cs_core::error_chain(&e))?;
        return Ok(Node::new(Arc::new(ssh)));
    };
    let ssh = h.connect().await.map_err(|e| cs_core::error_chain(&e))?;
    let host: Arc<dyn Host> = Arc::new(ssh);
    Ok(Node::new(host)
        .rerooted(h.root())
        .in_cluster(h.cluster())
        .with_key(h.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_come_back_from_every_host() {
    let lab = hosts(3);
    let file: String = lab
        .iter()
        .filter_map(|h| h.hosts_line())
        .map(|l| l + "\n")
        .collect();
    let targets = fleet::parse_hosts(&file).unwrap();
    let results = fleet::for_each(&targets, 3, &NoProgress, |t| {
        let lab = &lab;
        async move {
            let node = node_for(lab, &t).await?;
            collect_facts(&node)
                .await
                .map_err(|e| cs_core::error_chain(&e))
        }
    })
    .await;
    assert_eq!(results.len(), 3);
    for (t, r, _) in results {
        let f = r.unwrap_or_else(|e| panic!("{}: {e}", t.label()));
        assert_eq!(f.agent_version(), Some("4.18.0.0"));
        assert_eq!(f.java_major, Some(17));
        assert_eq!(f.keystore.opens, Some(true));
        assert_eq!(
            f.identity.get("keystore.passphrase").map(String::as_str),
            Some("***")
        );
        assert_eq!(f.jars.versions(), ["4.18.0.0"]);
        let json = serde_json::to_string(&f).unwrap();
        assert!(
            !json.contains(lab[0].passphrase().expose()),
            "passphrase leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_refresh_stops_on_a_failure_and_resumes_from_the_journal() {
    let lab = hosts(4);
    lab[2].inject(KvmFault::InstallFails).unwrap();
    let mut file: String = lab
        .iter()
        .filter_map(|h| h.hosts_line())
        .map(|l| l + "\n")
        .collect();
    file.push_str("root@127.0.0.1:1 cluster=c2\n"); // Nothing listens there: unreachable.
    let targets = fleet::parse_hosts(&file).unwrap();
    let status = LabStatus::of(&lab);
    let repo = LabRepoSwitch::of(&lab);
    let dir = tempfile::tempdir().unwrap();
    let opts = FleetOptions::default()
        .batch(fleet::BatchSize::Count(2))
        .parallel(2)
        .journal(Some(dir.path().join("fleet.jsonl")));
    let run = || {
        fleet::run_fleet(&targets, &opts, &NoProgress, |t| {
            let (lab, status, repo, dir) = (&lab, status.clone(), repo.clone(), dir.path());
            async move {
                let node = node_for(lab, &t).await?;
                let mut o = RefreshOptions::new(CsVersion::parse("4.19.1.0").unwrap());
                o.up_deadline = Duration::from_secs(2);
                o.poll = Duration::from_millis(100);
                let deps = Deps {
                    status: status.clone(),
                    maintenance: Some(status),
                    repo: Some(repo),
                };
                let cx = RefreshContext::new(node, o, deps);
                let journal = dir.join(format!("{}.jsonl", t.port));
                refresh_host(&cx, &journal, true, &NoProgress)
                    .await
                    .map(|r| r.summary())
                    .map_err(|e| cs_core::error_chain(&e))
            }
        })
    };
    let report = run().await.unwrap();
    let outcomes: Vec<Outcome> = report.hosts.iter().map(|h| h.outcome).collect();
    // Canary kvm1 (c1); then the cap of 2 goes to c2, the cluster with the most queued: kvm3
    // (fails) and kvm4 in one batch. The failure stops new work (kvm2, the unreachable host);
    // kvm4, already running, finishes.
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::NotStarted,
            Outcome::Failed,
            Outcome::Ok,
            Outcome::NotStarted
        ],
        "{}",
        report.to_table()
    );
    let table = report.to_table();
    assert!(table.contains("dpkg returned an error code"), "{table}");
    assert!(table.contains("stopped: 1 host(s) failed"), "{table}");
    assert_eq!(
        lab[2].installed("cloudstack-agent").as_deref(),
        Some("4.18.0.0")
    );
    assert!(lab[2].hypervisor().is_up(), "rolled back and Up");

    lab[2].clear(KvmFault::InstallFails).unwrap();
    let report = run().await.unwrap();
    let outcomes: Vec<Outcome> = report.hosts.iter().map(|h| h.outcome).collect();
    // The journal skips kvm1 and kvm4; kvm2 is the canary, then kvm3 and the unreachable host.
    assert_eq!(
        outcomes,
        [
            Outcome::AlreadyDone,
            Outcome::Ok,
            Outcome::Ok,
            Outcome::AlreadyDone,
            Outcome::Failed
        ],
        "{}",
        report.to_table()
    );
    assert!(
        report.to_table().contains("cannot connect"),
        "{}",
        report.to_table()
    );
    for h in &lab {
        assert_eq!(h.installed("cloudstack-agent").as_deref(), Some("4.19.1.0"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refresh_runs_as_a_non_root_operator_through_sudo() {
    let lab = hosts(1);
    let h = &lab[0];
    let ssh = h
        .connect_as_operator()
        .await
        .unwrap_or_else(|e| panic!("operator login: {}", cs_core::error_chain(&e)));
    assert_eq!(ssh.user(), cs_lab::OPERATOR_USER);
    let node = Node::new(Arc::new(ssh))
        .rerooted(h.root())
        .in_cluster(h.cluster())
        .with_key(h.name());
    let facts = collect_facts(&node).await.expect("facts through sudo");
    assert_eq!(facts.agent_version(), Some("4.18.0.0"));
    assert_eq!(
        facts.keystore.opens,
        Some(true),
        "the keystore opens through sudo"
    );
    let status = LabStatus::of(&lab);
    let mut o = RefreshOptions::new(CsVersion::parse("4.19.1.0").unwrap());
    o.up_deadline = Duration::from_secs(10);
    o.poll = Duration::from_millis(100);
    let deps = Deps {
        status: status.clone(),
        maintenance: Some(status),
        repo: Some(LabRepoSwitch::of(&lab)),
    };
    let cx = RefreshContext::new(node, o, deps);
    let dir = tempfile::tempdir().unwrap();
    let report = refresh_host(&cx, &dir.path().join("j.jsonl"), true, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("refresh as the operator: {}", cs_core::error_chain(&e)));
    assert_eq!(
        h.installed("cloudstack-agent").as_deref(),
        Some("4.19.1.0"),
        "{}",
        report.summary()
    );
    assert!(h.hypervisor().is_up(), "Up after the refresh");
    // The files it rewrote stay root's, as they were.
    let props = h.root().join("etc/cloudstack/agent/agent.properties");
    let meta = std::fs::metadata(&props).expect("agent.properties");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
}
