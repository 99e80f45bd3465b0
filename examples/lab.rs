//! The end-to-end demo on a throwaway local lab that behaves like CloudStack where an upgrade's
//! safety is decided: 2 management servers (the usage server on the first only) and 3 KVM hosts
//! at 4.18.0.0 on a real MariaDB, each node with its own sshd on 127.0.0.1, system VMs and a
//! router that keep their template until refreshed, and tenants at work.
//!
//! 1. pre-flight; 2. the upgrade to 4.19.0.0 while tenants start, stop, create and destroy VMs,
//!    with progress, its report and the post-flight proof (every guest on its host, the
//!    tenants' changes explained by their events); 3. a second upgrade, to 4.19.1.0, with a
//!    fault injected in the schema migration, before the point of no return: the automatic
//!    rollback leaves the databases, packages and hosts as they were; 4. everything is cleaned
//!    up.
//!
//! ```text
//! cargo run --example lab
//! ```
//!
//! Needs `mariadb-server` and `openssh-server` installed (nothing needs to run). Exit code 0
//! when the demo went as described, 2 otherwise (one line says what). Secrets are never
//! printed: the lab writes them to files of mode 0600 that the config points at.

#[path = "common/mod.rs"]
mod common;
#[path = "common/table.rs"]
mod table;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cs_core::{CsVersion, RunReport, StepOutcome};
use cs_lab::{Lab, MgmtFault};
use cs_upgrade::{Phase, UpgradeConfig};

/// Tables left out of the before/after comparison: `mshost` holds each management server's
/// state and heartbeat, which any stop and start rewrites.
const VOLATILE_TABLES: &[&str] = &["mshost"];

type DemoResult<T> = Result<T, String>;

/// The end-to-end demo on a throwaway local lab: pre-flight, an upgrade 4.18.0.0 -> 4.19.0.0
/// while tenants work, then a failed upgrade rolled back automatically. Needs `mariadb-server`
/// and `openssh-server` installed (nothing needs to run); everything is cleaned up after.
#[derive(Debug, Parser)]
#[command(after_help = common::cli::ACTION)]
struct Args {
    #[command(flatten)]
    verbosity: common::cli::Verbosity,
}

fn outcomes(report: &RunReport) -> String {
    let mut t = table::new_table(&["STEP", "OUTCOME", "TIME", "ERROR"]);
    for s in &report.steps {
        let time = s
            .apply_time
            .map(|t| format!("{:.1} s", t.as_secs_f64()))
            .unwrap_or_default();
        t.add_row(vec![
            comfy_table::Cell::new(&s.id),
            table::verdict(&s.outcome.to_string()),
            comfy_table::Cell::new(time),
            comfy_table::Cell::new(s.error.as_deref().unwrap_or_default()),
        ]);
    }
    format!("{}\n", table::indent(&table::render(&t), "  "))
}

fn lab_config(lab: &Lab, target: &CsVersion) -> DemoResult<UpgradeConfig> {
    let path = lab
        .write_config(target)
        .map_err(|e| format!("write the config: {}", cs_core::error_chain(&e)))?;
    let (config, _) = UpgradeConfig::load(&path).map_err(|e| cs_core::error_chain(&e))?;
    Ok(config)
}

fn versions(lab: &Lab) -> String {
    let mut parts: Vec<String> = lab
        .management_servers()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.name(),
                m.installed("cloudstack-management").unwrap_or_default()
            )
        })
        .collect();
    parts.extend(lab.kvm_hosts().iter().map(|h| {
        format!(
            "{} {}",
            h.name(),
            h.installed("cloudstack-agent").unwrap_or_default()
        )
    }));
    parts.join(", ")
}

#[allow(clippy::print_stdout)] // An example owns its terminal.
async fn demo(bars: &Arc<dyn cs_core::Progress>) -> DemoResult<()> {
    let started = Instant::now();
    let v4190: CsVersion = "4.19.0.0".parse().map_err(|e| format!("{e}"))?;
    let v4191: CsVersion = "4.19.1.0".parse().map_err(|e| format!("{e}"))?;

    println!("== starting a lab: 2 management servers (usage on mgmt1), 3 KVM hosts at 4.18.0.0");
    let lab = tokio::task::spawn_blocking(|| {
        Lab::builder()
            .name("demo")
            .management_servers(2)
            .kvm_hosts(3)
            .offer("4.19", &["4.19.0.0", "4.19.1.0"])
            .start()
    })
    .await
    .map_err(|e| format!("lab start-up: {e}"))?
    .map_err(|e| format!("start the lab: {}", cs_core::error_chain(&e)))?;
    println!(
        "   up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        versions(&lab)
    );
    tokio::task::block_in_place(|| lab.prepare_upgrade(&v4190, false))
        .map_err(|e| format!("prepare: {}", cs_core::error_chain(&e)))?;
    let config = lab_config(&lab, &v4190)?;

    println!("\n== pre-flight (the upgrade runs it again as its gate)");
    let report = cs_upgrade::preflight(&config, Phase::Pre, &[]).await;
    print!("{}", table::report(&report));
    if report.exit_code() > 1 {
        return Err("pre-flight found failures".into());
    }

    println!("\n== upgrade to 4.19.0.0, while tenants work");
    let mut options = cs_lab::TenantOptions::default();
    options.interval = Duration::from_millis(500);
    let tenants = lab
        .start_tenants(options)
        .map_err(|e| format!("tenants: {}", cs_core::error_chain(&e)))?;
    let t = Instant::now();
    let result = cs_upgrade::apply(&config, bars.clone()).await;
    let changes = tenants.stop();
    let report = result.map_err(|e| format!("the upgrade failed: {}", cs_core::error_chain(&e)))?;
    println!("   done in {:.1} s", t.elapsed().as_secs_f64());
    print!("{}", outcomes(&report));
    println!("   now: {}", versions(&lab));
    println!(
        "   tenants: {} change(s) while it ran ({} of their jobs failed)",
        changes.len(),
        changes.iter().filter(|c| !c.ok).count()
    );
    let evidence = cs_upgrade::postflight_evidence(&cs_upgrade::run_dir(&config))
        .ok_or("no post-flight evidence")?;
    println!("   post-flight: {}", evidence.summary);
    for a in &evidence.proof.explained {
        println!(
            "     {} {}: {}",
            a.name,
            a.change,
            a.cause.as_deref().unwrap_or_default()
        );
    }
    if !evidence.verified {
        return Err("post-flight is not verified".into());
    }

    println!(
        "\n== upgrade to 4.19.1.0 with a fault in the schema migration (mgmt1, step 1), before \
         the point of no return"
    );
    tokio::task::block_in_place(|| lab.prepare_upgrade(&v4191, false))
        .map_err(|e| format!("prepare: {}", cs_core::error_chain(&e)))?;
    let config = lab_config(&lab, &v4191)?;
    let sums = tokio::task::block_in_place(|| lab.checksums(VOLATILE_TABLES))
        .map_err(|e| cs_core::error_chain(&e))?;
    let was = versions(&lab);
    let first = &lab.management_servers()[0];
    first
        .inject(MgmtFault::FailAtStep(1))
        .map_err(|e| cs_core::error_chain(&e))?;
    let result = cs_upgrade::apply(&config, bars.clone()).await;
    first.clear_faults().map_err(|e| cs_core::error_chain(&e))?;
    let err = match result {
        Ok(_) => return Err("the upgrade with a fault succeeded".into()),
        Err(e) => e,
    };
    println!("   failed as it should: {}", cs_core::error_chain(&err));
    if let Some(report) = &err.report {
        print!("{}", outcomes(report));
        if !report.ids_with(StepOutcome::RollbackFailed).is_empty() {
            return Err("a rollback failed".into());
        }
    }
    tokio::task::block_in_place(|| lab.wait_all_up("4.19.0.0", Duration::from_secs(60)))
        .map_err(|e| cs_core::error_chain(&e))?;
    let now = versions(&lab);
    let sums_now = tokio::task::block_in_place(|| lab.checksums(VOLATILE_TABLES))
        .map_err(|e| cs_core::error_chain(&e))?;
    println!("   packages: {now}");
    if now != was {
        return Err(format!("packages changed: {was} -> {now}"));
    }
    if sums_now != sums {
        return Err("the databases differ from before the failed upgrade".into());
    }
    println!(
        "   databases: all {} tables identical to before (mshost aside: it holds heartbeats)",
        sums.len()
    );
    println!("   every host and management server Up at 4.19.0.0 again");

    println!("\n== cleaning up");
    tokio::task::spawn_blocking(move || drop(lab))
        .await
        .map_err(|e| format!("clean-up: {e}"))?;
    println!("   demo done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[allow(clippy::print_stderr)] // An example owns its terminal.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args: Args = common::cli::parse();
    args.verbosity.init();
    let bars = args.verbosity.progress();
    match demo(&bars).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("lab: {line}");
            ExitCode::from(2)
        }
    }
}
