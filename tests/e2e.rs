//! End to end on one lab cloud (2 management servers, the usage server on the first only, and 3
//! KVM hosts at 4.18.0.0, target 4.19.0.0), scenario after scenario so the lab starts once:
//! pre-flight; the plan; the pre-flight gate refusing before any change; a fault in the schema
//! migration rolls everything back automatically; the upgrade with tenants at work the whole
//! time, after which every guest is on its host, post-flight is verified with its evidence, and
//! a second apply changes nothing; a rollback that is refused until told what it discards.
//! Faults at the other stages are in `e2e_faults.rs` and `e2e_after.rs`, killed runs in
//! `e2e_resume.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{StageFault, snapshot};
use cs_core::{CsVersion, NoProgress, Severity, StepOutcome, error_chain};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_scenarios_on_one_lab() {
    let (lab, config, path) = common::lab_for_upgrade("e2e").await;
    let old = lab.initial_version();
    let target = common::target();

    preflight_passes(&config, Phase::Pre).await;
    plan_lists_schema_steps_and_hops(&config).await;
    the_gate_refuses_before_any_change(&lab, &config, &path).await;
    failed_migration_rolls_back(&lab, &config).await;
    let before = snapshot(&lab).await;
    let tenants =
        happy_path_with_tenants_then_apply_is_a_no_op(&lab, &config, &path, &target).await;
    preflight_passes(&config, Phase::Post).await;
    rollback_is_refused_then_restores_the_old_version(&lab, &config, &old, &before, &tenants).await;
    examples_on_the_lab(&lab, &path);
    hardening_report_and_fix(&lab, &config, &path).await;
}

/// `path`'s config with the entry of KVM host `name` reaching it at `port` instead, written
/// beside it.
fn config_with_port(path: &Path, name: &str, port: u16) -> (UpgradeConfig, PathBuf) {
    let text = std::fs::read_to_string(path).expect("config");
    let marker = format!("name = \"{name}\"\naddress = \"127.0.0.1\"\nport = ");
    let at = text.find(&marker).expect("the host's entry") + marker.len();
    let end = at + text[at..].find('\n').expect("end of line");
    let changed = format!("{}{port}{}", &text[..at], &text[end..]);
    let out = path.with_file_name(format!("{name}-port-{port}.toml"));
    std::fs::write(&out, changed).expect("write");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (UpgradeConfig::load(&out).expect("config").0, out)
}

/// A closed port on 127.0.0.1 (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The gate: a configured host CloudStack does not know, an unknown skip id, and a KVM host it
/// cannot reach each refuse the upgrade before anything changes.
async fn the_gate_refuses_before_any_change(lab: &Lab, config: &UpgradeConfig, path: &Path) {
    let run_dir = cs_upgrade::run_dir(config);
    let unchanged = |what: &str| {
        assert!(!run_dir.join("db").exists(), "{what}: a backup was taken");
        assert!(
            cs_core::applied_steps(&run_dir.join("journal.jsonl"))
                .expect("journal")
                .is_empty(),
            "{what}: a step was applied"
        );
        for m in lab.management_servers() {
            assert!(m.service_active(cs_upgrade::MANAGEMENT_UNIT), "{what}");
        }
    };
    // A name CloudStack does not know.
    let text = std::fs::read_to_string(path).expect("config");
    let typo = path.with_file_name("typo.toml");
    std::fs::write(
        &typo,
        text.replace(
            "[repositories]",
            "[[hosts]]\nname = \"kvm9\"\naddress = \"127.0.0.1\"\n\n[repositories]",
        ),
    )
    .expect("write");
    std::fs::set_permissions(&typo, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (with_typo, _) = UpgradeConfig::load(&typo).expect("config");
    let err = cs_upgrade::apply(&with_typo, Arc::new(NoProgress))
        .await
        .expect_err("the gate refuses");
    let message = error_chain(&err);
    assert!(
        matches!(err.kind, cs_upgrade::UpgradeErrorKind::Preflight(_))
            && message.contains("hosts.known kvm9"),
        "{message}"
    );
    unchanged("unknown host");

    // An unknown skip id is an error, not ignored.
    let err = cs_upgrade::apply_with(
        config,
        &cs_upgrade::ApplyOptions::skipping(&["no.such.check"]),
        Arc::new(NoProgress),
    )
    .await
    .expect_err("unknown id");
    assert!(
        matches!(err.kind, cs_upgrade::UpgradeErrorKind::UnknownCheck(_)),
        "{}",
        error_chain(&err)
    );

    // A host CloudStack knows that the upgrade cannot reach.
    let (unreachable, _) = config_with_port(path, "kvm3", closed_port());
    let err = cs_upgrade::apply(&unreachable, Arc::new(NoProgress))
        .await
        .expect_err("the gate refuses");
    let message = error_chain(&err);
    assert!(
        message.contains("node.reachable kvm3") && message.contains("cannot be reached"),
        "{message}"
    );
    // The dry run shows what the gate would say.
    let plan = cs_upgrade::plan(&unreachable).await.expect("plan");
    assert!(
        plan.to_text().contains("pre-flight gate: would refuse"),
        "{}",
        plan.to_text()
    );
    unchanged("unreachable host");
}

/// Runs an example; its exit code, stdout and stderr. Neither output may hold the lab's
/// database password or API secret.
fn run_example(lab: &Lab, name: &str, args: &[&str]) -> (i32, String, String) {
    #[allow(clippy::disallowed_methods)] // the test runs the operator's binaries
    let out = std::process::Command::new(common::example(name))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    for secret in [
        lab.db_url().password.expose().to_string(),
        lab.api().secret_key().expose().to_string(),
    ] {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "{name} printed a secret"
        );
    }
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The operator's binaries against the lab (at the old version, after the rollback): the
/// dry run, a refused `--resume`, pre-flight as JSON, and `diagnose`.
fn examples_on_the_lab(lab: &Lab, path: &Path) {
    let config = path.to_str().expect("a UTF-8 path");
    let (code, out, err) = run_example(lab, "upgrade", &["--config", config, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("upgrade 4.18.0.0 -> 4.19.0.0"), "{out}");

    // The same plan as one JSON document.
    let (code, out, err) =
        run_example(lab, "upgrade", &["--config", config, "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(plan["from"], "4.18.0.0", "{plan:#}");
    assert_eq!(plan["target"], "4.19.0.0", "{plan:#}");
    assert!(
        plan["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "{plan:#}"
    );

    let (code, out, err) = run_example(lab, "upgrade", &["--config", config, "--resume"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("nothing to resume: the last run finished"),
        "{err}"
    );

    let (code, out, err) = run_example(lab, "preflight", &["--config", config, "--json"]);
    assert!(code <= 1, "exit {code}: {out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("pre-flight JSON");
    let findings = json["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["id"] == "db.version.sane"),
        "{out}"
    );

    // The failed migration of the first scenario is still in the first server's log.
    let (code, out, err) = run_example(lab, "diagnose", &["--config", config]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("diagnose.db.upgrade.failed"), "{out}");
    let (code, out, err) = run_example(lab, "diagnose", &["--config", config, "--json"]);
    assert_eq!(code, 2, "{out}{err}");
    let found: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert!(
        found["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["id"] == "diagnose.db.upgrade.failed")),
        "{found:#}"
    );
}

/// The hardening report on a stock lab has nothing above information; with secret files
/// opened up on one server and the integration port on, it warns about each, `harden` fixes
/// the modes (and only them), and the report says so.
async fn hardening_report_and_fix(lab: &Lab, config: &UpgradeConfig, path: &Path) {
    let report = cs_upgrade::hardening_report(config).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert!(report.worst() <= Severity::Info, "{}", report.to_table());
    for id in [
        cs_upgrade::SECRET_FILES_CHECK,
        cs_upgrade::FIREWALL_CHECK,
        "ms.heap",
    ] {
        assert!(
            report.findings.iter().any(|f| f.id == id),
            "no {id}:\n{}",
            report.to_table()
        );
    }

    let conf = lab.management_servers()[1]
        .root()
        .join("etc/cloudstack/management");
    let (props, key) = (conf.join("db.properties"), conf.join("key"));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    let set_mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    let (props_was, key_was) = (mode(&props), mode(&key));
    set_mode(&props, 0o644);
    set_mode(&key, 0o666);
    lab.api().set_config("integration.api.port", "8096");

    let report = cs_upgrade::hardening_report(config).await;
    let warned = |subject: &dyn Fn(&str) -> bool| {
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warn && subject(&f.subject))
    };
    for file in ["/db.properties", "/key"] {
        assert!(
            warned(&|s| s.starts_with("mgmt2:") && s.ends_with(file)),
            "{file}:\n{}",
            report.to_table()
        );
    }
    assert!(
        !warned(&|s| s.starts_with("mgmt1:")),
        "{}",
        report.to_table()
    );
    assert!(
        warned(&|s| s.ends_with("integration.api.port")),
        "{}",
        report.to_table()
    );

    let config_path = path.to_str().expect("a UTF-8 path");
    let (code, out, err) = run_example(lab, "harden", &["--config", config_path, "--fix", "--yes"]);
    // The integration port is reported, not changed: still a warning.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("db.properties mode 0644 -> 0640") && out.contains("key mode 0666 -> 0640"),
        "{out}"
    );
    assert_eq!((mode(&props), mode(&key)), (0o640, 0o640));
    let report = cs_upgrade::hardening_report(config).await;
    let secret_warnings = report
        .findings
        .iter()
        .filter(|f| f.id == cs_upgrade::SECRET_FILES_CHECK && f.severity > Severity::Info)
        .count();
    assert_eq!(secret_warnings, 0, "{}", report.to_table());
    assert_eq!(
        cs_upgrade::harden(config).await.expect("harden again"),
        [],
        "a second fix changes nothing"
    );

    lab.api().set_config("integration.api.port", "0");
    set_mode(&props, props_was);
    set_mode(&key, key_was);
}

/// Pre-flight warns at most; post-flight after the upgrade passes (information aside).
async fn preflight_passes(config: &UpgradeConfig, phase: Phase) {
    let report = cs_upgrade::preflight(config, phase, &[]).await;
    let table = report.to_table();
    assert!(report.broken.is_empty(), "{phase:?}:\n{table}");
    let worst_allowed = match phase {
        Phase::Pre => Severity::Warn,
        _ => Severity::Info,
    };
    assert!(report.worst() <= worst_allowed, "{phase:?}:\n{table}");
    // Every part ran: a management server, the database, a KVM host and the API.
    for id in [
        "ms.java.compat",
        "db.version.sane",
        "agent.keystore",
        "net.agent.reach",
        "api.hosts.up",
    ] {
        assert!(
            report.findings.iter().any(|f| f.id == id),
            "{phase:?}: no {id}:\n{table}"
        );
    }
    // The repositories: before, the lab's repository server offers the target to every node
    // (management servers and KVM hosts); after, every entry points at the target line.
    let repo_check = match phase {
        Phase::Pre => "repo.target.resolvable",
        _ => "repo.target.configured",
    };
    let passed = report
        .findings
        .iter()
        .filter(|f| f.id == repo_check && f.severity == Severity::Pass)
        .count();
    assert_eq!(passed, 5, "{phase:?}:\n{table}");
}

/// The dry run names the hop, its schema steps and every step of the run, and changes nothing.
async fn plan_lists_schema_steps_and_hops(config: &UpgradeConfig) {
    let plan = cs_upgrade::plan(config)
        .await
        .unwrap_or_else(|e| panic!("plan: {}", error_chain(&e)));
    let text = plan.to_text();
    assert_eq!(plan.record.hops, [config.target], "{text}");
    assert!(
        text.starts_with("upgrade 4.18.0.0 -> 4.19.0.0 in 1 hop(s)\n"),
        "{text}"
    );
    let (hop, steps) = &plan.schema_steps[0];
    assert_eq!(*hop, config.target);
    assert!(!steps.is_empty(), "{text}");
    assert!(
        text.contains(&format!("  hop to 4.19.0.0: {}", steps.join(", "))),
        "{text}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("Upgrade41810to41900 (4.18.1.0 -> 4.19.0.0)")),
        "{text}"
    );
    assert!(
        text.contains("migrate@4.19.0.0       would apply   <- point of no return"),
        "{text}"
    );
    assert!(text.contains("pre-flight gate: passes"), "{text}");
    assert!(
        text.contains("KVM hosts: kvm1 (c1), kvm2 (c1), kvm3 (c2)"),
        "{text}"
    );
    for id in common::ONE_HOP_STEPS {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(id) && l.contains(" would apply")),
            "{id}: {text}"
        );
    }
}

/// A rollback after the finished upgrade: refused without the flag, with what it would
/// discard (the VMs tenants made since the backup among it); with it, everything is back at
/// the old version, and the tenants' VMs made since are unknown to CloudStack while their guests
/// still run on the hypervisors.
async fn rollback_is_refused_then_restores_the_old_version(
    lab: &Lab,
    config: &UpgradeConfig,
    old: &CsVersion,
    before: &common::Snapshot,
    tenants: &[cs_lab::TenantChange],
) {
    let (since, loss) = cs_upgrade::loss_report(config)
        .await
        .expect("loss report")
        .expect("past the point of no return");
    let deployed_since: Vec<&str> = tenants
        .iter()
        .filter(|c| c.ok && c.action == "deploy" && c.at.as_str() > since.as_str())
        .map(|c| c.vm.as_str())
        .collect();
    for vm in &deployed_since {
        assert!(
            loss.new_vms.iter().any(|v| v.name == *vm)
                || tenants
                    .iter()
                    .any(|c| c.vm == *vm && c.action == "destroy" && c.ok),
            "{vm} is not in the loss report: {loss:#?}"
        );
    }
    assert!(
        loss.tables
            .iter()
            .any(|t| t.table.ends_with(".event") && t.created > 0),
        "{loss:#?}"
    );
    let report = common::rollback_discarding(config).await;
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in ["agents", "migrate@4.19.0.0", "packages@4.19.0.0", "quiesce"] {
        assert!(
            rolled_back.contains(&id),
            "{id} not rolled back: {report:#?}"
        );
    }
    common::settle_at(lab, old).await;
    // The tenants wrote while the upgrade ran: the databases are the backup's, the files and
    // packages as they were before.
    let after = snapshot(lab).await;
    assert_eq!(before.files, after.files);
    // A VM made after the backup is unknown now; its guest still runs on its hypervisor.
    lab.sync();
    let listed: Vec<String> = lab.api().vms().into_iter().map(|v| v.name).collect();
    for v in loss.new_vms.iter().filter(|v| v.state == "Running") {
        assert!(!listed.contains(&v.name), "{} is still known", v.name);
        let host = v.host.as_deref().expect("a running VM has a host");
        let node = lab
            .kvm_hosts()
            .iter()
            .find(|h| h.name() == host)
            .expect("a lab host");
        assert!(
            !node.domains().is_empty(),
            "{host} has no guests left, {} should still run there",
            v.name
        );
    }

    // Nothing is left to roll back.
    let again = cs_upgrade::rollback(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second rollback: {}", error_chain(&e)));
    assert!(again.ids_with(StepOutcome::RolledBack).is_empty());
}

/// A fault in the schema migration: `apply` fails with the runner's report, everything is
/// rolled back automatically and the cloud is as it was; `diagnose` says why.
async fn failed_migration_rolls_back(lab: &Lab, config: &UpgradeConfig) {
    let report = common::fault_rolls_back(
        lab,
        config,
        StageFault {
            step: "migrate@4.19.0.0",
            says: &[
                "the schema migration on mgmt1 failed",
                "Unable to execute upgrade script",
            ],
            inject: Box::new(|lab| {
                lab.management_servers()[0]
                    .inject(MgmtFault::FailAtStep(1))
                    .expect("inject");
            }),
            clear: Box::new(|lab| lab.management_servers()[0].clear_faults().expect("clear")),
        },
    )
    .await;
    let rolled_back = report.ids_with(StepOutcome::RolledBack);
    for id in [
        "migrate@4.19.0.0",
        "packages@4.19.0.0",
        "repos@4.19.0.0",
        "quiesce",
    ] {
        assert!(rolled_back.contains(&id), "{id}: {:#?}", report.step(id));
    }

    // The logs say why: `diagnose` finds the failed upgrade script on the first server.
    let sources = cs_upgrade::log_sources(config)
        .await
        .unwrap_or_else(|e| panic!("log sources: {}", error_chain(&e)));
    // management-server.log of 2 servers, usage.log of the usage server, agent.log of 3 hosts.
    assert_eq!(sources.len(), 6);
    let report = cs_upgrade::diagnose(&sources, cs_upgrade::DEFAULT_TAIL_BYTES).await;
    assert!(report.broken.is_empty(), "{}", report.to_table());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.id == "diagnose.db.upgrade.failed" && f.subject.starts_with("mgmt1:")),
        "{}",
        report.to_table()
    );
}

/// The upgrade with tenants changing the cloud the whole time. A KVM host it cannot reach,
/// let through the gate by skipping `node.reachable`, fails the backup, before any change; then
/// the upgrade runs through and ends with every guest the tenants left alone on the host it
/// started on, post-flight verified (the tenants' changes explained by their events) and its
/// evidence written. A second apply changes nothing. Returns the tenants' changes.
async fn happy_path_with_tenants_then_apply_is_a_no_op(
    lab: &Lab,
    config: &UpgradeConfig,
    path: &Path,
    target: &CsVersion,
) -> Vec<cs_lab::TenantChange> {
    let hosts_before: Vec<(String, Option<String>)> = lab
        .api()
        .vms()
        .into_iter()
        .filter(|v| v.kind == "User")
        .map(|v| (v.name, v.host))
        .collect();
    let mut options = cs_lab::TenantOptions::default();
    options.interval = Duration::from_millis(400);
    let actor = lab.start_tenants(options).expect("tenants");

    // Skipping `node.reachable` lets an unreachable host through the gate; the backup of its
    // repository files then fails, before anything changed, and is rolled back.
    let (unreachable, _) = config_with_port(path, "kvm3", closed_port());
    let err = cs_upgrade::apply_with(
        &unreachable,
        &cs_upgrade::ApplyOptions::skipping(&[cs_upgrade::NODE_REACHABLE]),
        Arc::new(NoProgress),
    )
    .await
    .expect_err("kvm3 cannot be reached");
    let message = error_chain(&err);
    assert!(
        matches!(
            err.kind,
            cs_upgrade::UpgradeErrorKind::Run(cs_core::RunError::StepFailed { .. })
        ),
        "{message}"
    );
    assert_eq!(
        err.report.as_ref().and_then(|r| r.failed_step.as_deref()),
        Some("backup"),
        "{message}"
    );
    assert!(message.contains("kvm3"), "{message}");

    // The upgrade, while the tenants work.
    let report = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("upgrade: {}\n{:?}", error_chain(&e), e.report));
    assert!(report.failed_step.is_none());
    // The backup of the failed attempts predates the services' restart: a new one is taken.
    assert!(
        report.ids_with(StepOutcome::Applied).contains(&"backup"),
        "{report:#?}"
    );
    assert!(
        report
            .ids_with(StepOutcome::Applied)
            .contains(&"postflight"),
        "post-flight is a verification, never skipped: {report:#?}"
    );
    let changes = actor.stop();
    assert!(
        changes.iter().filter(|c| c.ok).count() >= 3,
        "the tenants were not at work: {changes:?}"
    );
    common::assert_everything_at(lab, target).await;

    // Every guest the tenants left alone is on the host it started on.
    let touched = |name: &str| changes.iter().any(|c| c.vm == name);
    for (name, host) in &hosts_before {
        if touched(name) {
            continue;
        }
        let now = lab.api().vm(name).expect("still known");
        assert_eq!(&now.host, host, "{name} moved");
        assert_eq!(now.state, "Running", "{name}");
    }
    // The evidence: verified, and the tenants' changes are information with their events.
    let evidence =
        cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(config)).expect("postflight.json");
    assert!(evidence.verified, "{:#?}", evidence.proof);
    assert!(
        evidence.summary.starts_with("verified, "),
        "{}",
        evidence.summary
    );
    // A VM Running in the inventory that a tenant stopped (and did nothing else to) after the
    // inventory and before the proof is one the proof must explain with its event. Times are
    // compared in whole seconds, the boundary seconds left out.
    let inventory: cs_api::Inventory = serde_json::from_slice(
        &std::fs::read(cs_upgrade::run_dir(config).join("inventory-before.json"))
            .expect("inventory"),
    )
    .expect("inventory json");
    let seconds = |rfc3339: &str| {
        rfc3339
            .replacen('T', " ", 1)
            .chars()
            .take(19)
            .collect::<String>()
    };
    let (from, to) = (seconds(&inventory.taken_at), seconds(&evidence.taken_at));
    for c in changes.iter().filter(|c| c.ok && c.action == "stop") {
        let only_this = changes.iter().filter(|d| d.ok && d.vm == c.vm).count() == 1;
        let was_running = inventory
            .vms
            .iter()
            .any(|v| v.name == c.vm && v.state == "Running");
        if only_this && was_running && c.at > from && c.at < to {
            assert!(
                evidence.proof.explained.iter().any(
                    |a| a.name == c.vm && a.cause.as_deref().is_some_and(|w| w.contains("VM."))
                ),
                "{c:?} is not explained: {:#?}",
                evidence.proof
            );
        }
    }

    // Sealed: applying again changes nothing, whatever the tenants did since.
    let actor = lab
        .start_tenants({
            let mut o = cs_lab::TenantOptions::default();
            o.interval = Duration::from_millis(100);
            o.seed = 11;
            o
        })
        .expect("tenants");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut all = changes;
    all.extend(actor.stop());
    let again = cs_upgrade::apply(config, Arc::new(NoProgress))
        .await
        .unwrap_or_else(|e| panic!("second apply: {}", error_chain(&e)));
    assert!(
        again.ids_with(StepOutcome::Applied).is_empty(),
        "{:?}",
        again.ids_with(StepOutcome::Applied)
    );
    assert!(cs_upgrade::sealed(config).is_some());
    all
}
