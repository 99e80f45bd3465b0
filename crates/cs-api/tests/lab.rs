//! The client, health probes and inventory against the lab's API endpoint.

use std::time::Duration;

use cs_api::{
    Client, ClientConfig, Credentials, Error, HealthExpectations, HealthReport, Inventory,
    JobPolicy, Phase, RetryPolicy, SignatureMode, diff, wait_healthy,
};
use cs_core::{HostMaintenance, HostStatus, RecordingProgress, Secret, Severity};
use cs_lab::{CloudSpec, Fault, LabApi};

fn fast_config() -> ClientConfig {
    ClientConfig::default()
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::default()
                .retries(3)
                .initial_backoff(Duration::from_millis(10))
                .max_backoff(Duration::from_millis(50)),
        )
        .job(
            JobPolicy::default()
                .initial_interval(Duration::from_millis(10))
                .max_interval(Duration::from_millis(50))
                .deadline(Duration::from_secs(5)),
        )
}

fn lab() -> LabApi {
    let lab = LabApi::start().expect("lab API starts");
    lab.populate(&CloudSpec::default());
    lab
}

fn client_with(lab: &LabApi, config: ClientConfig) -> Client {
    Client::new(
        &lab.endpoint(),
        Credentials::api_key(lab.api_key(), lab.secret_key().clone()),
        config,
    )
    .expect("client builds")
}

fn client(lab: &LabApi) -> Client {
    client_with(lab, fast_config())
}

fn commands(lab: &LabApi) -> Vec<String> {
    lab.requests()
        .into_iter()
        .filter_map(|r| r.command)
        .collect()
}

#[tokio::test]
async fn signed_requests_are_accepted_and_typed() {
    let lab = lab();
    let c = client(&lab);
    let caps = c.list_capabilities().await.unwrap();
    assert_eq!(caps.cloudstackversion.as_deref(), Some("4.20.0.0"));
    let hosts = c.list_hosts(&[("type", "Routing")]).await.unwrap();
    assert_eq!(hosts.len(), 4);
    assert!(hosts.iter().all(|h| h.state.as_deref() == Some("Up")));
    let all_hosts = c.list_hosts(&[]).await.unwrap();
    assert_eq!(all_hosts.len(), 6, "SSVM and CPVM agents are hosts too");
    assert_eq!(c.list_zones(&[]).await.unwrap().len(), 1);
    assert_eq!(c.list_clusters(&[]).await.unwrap().len(), 2);
    assert_eq!(c.list_routers(&[]).await.unwrap().len(), 0);
    let r = lab.requests();
    let last = r.last().unwrap();
    assert_eq!(last.params["signatureVersion"], "3");
    assert_eq!(last.params["response"], "json");
    assert!(last.params.contains_key("expires"));
    assert!(lab.take_panics().is_empty());
}

#[tokio::test]
async fn legacy_signatures_and_special_values_verify() {
    let lab = lab();
    let config = fast_config().signature(SignatureMode::Legacy);
    let c = client_with(&lab, config);
    // The server signs values it decoded; every special character must survive the trip.
    for keyword in ["a b*c+d=e&f%g~h", "Ünïcödé ✓", "", "/?#[]@!$'()", "+++"] {
        let v = c
            .call(
                "listVirtualMachines",
                &[("keyword", keyword), ("Zeta", "X")],
            )
            .await
            .unwrap_or_else(|e| panic!("{keyword:?}: {e}"));
        assert_eq!(v["count"], 8, "{keyword:?}");
    }
    assert!(!lab.requests()[0].params.contains_key("expires"));
}

#[tokio::test]
async fn pages_are_fetched_until_count() {
    let lab = LabApi::start().unwrap();
    lab.populate(&CloudSpec {
        vms: 1234,
        ..CloudSpec::default()
    });
    let config = fast_config().page_size(100).page_concurrency(3);
    let c = client_with(&lab, config);
    let vms = c
        .list_virtual_machines(&[("listall", "true")])
        .await
        .unwrap();
    assert_eq!(vms.len(), 1234);
    let mut ids: Vec<&str> = vms.iter().map(|v| v.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1234, "no page twice");
    let pages = lab
        .requests()
        .iter()
        .filter(|r| r.command.as_deref() == Some("listVirtualMachines"))
        .count();
    assert_eq!(pages, 13);
}

#[tokio::test]
async fn reads_are_retried_after_5xx_and_dropped_connections() {
    let lab = lab();
    let c = client(&lab);
    lab.inject(Some("listHosts"), 1, Fault::Status(503));
    lab.inject(Some("listHosts"), 1, Fault::Drop);
    let hosts = c.list_hosts(&[("type", "Routing")]).await.unwrap();
    assert_eq!(hosts.len(), 4);
    assert_eq!(commands(&lab), ["listHosts", "listHosts", "listHosts"]);
}

#[tokio::test]
async fn retries_give_up_with_the_last_error() {
    let lab = lab();
    let c = client(&lab);
    lab.inject(Some("listZones"), 10, Fault::Status(502));
    let e = c.list_zones(&[]).await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 502, .. }), "{e:?}");
    assert_eq!(commands(&lab).len(), 4, "first try + 3 retries");
}

#[tokio::test]
async fn writes_are_never_retried() {
    let lab = lab();
    let c = client(&lab);
    lab.inject(Some("updateConfiguration"), 1, Fault::Status(503));
    let e = c
        .update_configuration("integration.api.port", "0")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Http { status: 503, .. }), "{e:?}");
    assert_eq!(commands(&lab), ["updateConfiguration"]);
    lab.inject(Some("updateConfiguration"), 1, Fault::Drop);
    let e = c
        .update_configuration("integration.api.port", "0")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert_eq!(commands(&lab).len(), 2);
}

#[tokio::test]
async fn slow_replies_time_out() {
    let lab = lab();
    let config = fast_config().timeout(Duration::from_millis(200));
    let c = client_with(&lab, config);
    lab.inject(None, 1, Fault::Delay(Duration::from_secs(2)));
    let e = c.list_capabilities().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        e.to_string().contains("did not answer listCapabilities"),
        "{e}"
    );
}

#[tokio::test]
async fn refused_signatures_say_what_to_check_and_leak_nothing() {
    let lab = lab();
    let wrong = Client::new(
        &lab.endpoint(),
        Credentials::api_key(lab.api_key(), Secret::new("not-the-secret")),
        fast_config(),
    )
    .unwrap();
    let e = wrong.list_zones(&[]).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    let text = format!("{e} {e:?} {}", cs_core::error_chain(&e));
    assert!(
        text.contains("clock") && text.contains("secret key"),
        "{text}"
    );
    let sent = lab.requests()[0].params["signature"].clone();
    for secret in [
        lab.secret_key().expose(),
        "not-the-secret",
        sent.as_str(),
        "signature=",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
    assert!(!format!("{wrong:?}").contains(lab.api_key()));
}

#[tokio::test]
async fn expired_requests_are_refused() {
    let lab = lab();
    let c = client(&lab);
    lab.set_clock_skew(11 * 60);
    let e = c.list_zones(&[]).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    lab.set_clock_skew(0);
    c.list_zones(&[]).await.unwrap();
}

#[tokio::test]
async fn api_errors_keep_code_and_text() {
    let lab = lab();
    let c = client(&lab);
    let e = c
        .update_configuration("no.such.setting", "1")
        .await
        .unwrap_err();
    match &e {
        Error::Api {
            errorcode: 431,
            http_status: 431,
            cserrorcode: Some(4350),
            errortext,
            ..
        } => assert!(errortext.contains("no.such.setting")),
        other => panic!("{other:?}"),
    }
    let e = c.call("createVPC", &[]).await.unwrap_err();
    assert!(
        matches!(e, Error::Unauthorized { .. }),
        "unknown commands are refused: {e:?}"
    );
    lab.inject(None, 1, Fault::Malformed);
    let e = c.list_capabilities().await.unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
    let updated = c
        .update_configuration("integration.api.port", "8096")
        .await
        .unwrap();
    assert_eq!(updated.value.as_deref(), Some("8096"));
    let cfg = c
        .list_configurations(&[("name", "integration.api.port")])
        .await
        .unwrap();
    assert_eq!(cfg[0].value.as_deref(), Some("8096"));
}

#[tokio::test]
async fn enforced_post_is_followed() {
    let lab = lab();
    lab.enforce_post(true);
    let c = client(&lab);
    c.list_zones(&[]).await.unwrap();
    c.list_hosts(&[]).await.unwrap();
    let methods: Vec<String> = lab.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "POST", "POST"]);
    let long = "x".repeat(5000);
    lab.enforce_post(false);
    let c = client(&lab);
    c.call("listZones", &[("keyword", &long)]).await.unwrap();
    assert_eq!(lab.requests().last().unwrap().method, "POST");
}

#[tokio::test]
async fn password_login_uses_a_session() {
    let lab = lab();
    lab.add_user("admin", "p@ss word");
    let c = Client::new(
        &lab.endpoint(),
        Credentials::password("admin", "p@ss word"),
        fast_config(),
    )
    .unwrap();
    assert_eq!(c.list_hosts(&[("type", "Routing")]).await.unwrap().len(), 4);
    c.list_zones(&[]).await.unwrap();
    assert_eq!(commands(&lab), ["login", "listHosts", "listZones"]);
    assert!(lab.requests()[1].params.contains_key("sessionkey"));
    let bad = Client::new(
        &lab.endpoint(),
        Credentials::password("admin", "wrong"),
        fast_config(),
    )
    .unwrap();
    let e = bad.list_zones(&[]).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrong"), "{e:?}");
}

#[tokio::test]
async fn async_jobs_succeed_or_fail_with_their_text() {
    let lab = lab();
    lab.set_job_polls(3);
    let c = client(&lab);
    c.enter("kvm0001").await.unwrap();
    let h = c.hypervisor("kvm0001").await.unwrap().unwrap();
    assert_eq!(h.resource_state.as_deref(), Some("Maintenance"));
    c.leave("kvm0001").await.unwrap();
    assert_eq!(
        c.hypervisor("kvm0001")
            .await
            .unwrap()
            .unwrap()
            .resource_state
            .as_deref(),
        Some("Enabled")
    );
    lab.fail_next_job("Failed to migrate vm00001 off the host");
    let host = c.find_host("kvm0002").await.unwrap().unwrap();
    let e = c.prepare_host_for_maintenance(&host.id).await.unwrap_err();
    match e {
        Error::JobFailed {
            errorcode,
            errortext,
            ..
        } => {
            assert_eq!(errorcode, 530);
            assert_eq!(errortext, "Failed to migrate vm00001 off the host");
        }
        other => panic!("{other:?}"),
    }
    let polls = commands(&lab)
        .iter()
        .filter(|c| *c == "queryAsyncJobResult")
        .count();
    assert!(polls >= 12, "{polls}");
}

#[tokio::test]
async fn jobs_time_out_at_their_deadline() {
    let lab = lab();
    lab.set_job_polls(1000);
    let c = client(&lab);
    let host = c.find_host("kvm0001").await.unwrap().unwrap();
    let v = c
        .call("prepareHostForMaintenance", &[("id", &host.id)])
        .await
        .unwrap();
    let jobid = v["jobid"].as_str().unwrap();
    let e = c
        .wait_job(
            jobid,
            "prepareHostForMaintenance",
            Duration::from_millis(150),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::JobTimeout { .. }), "{e:?}");
}

#[tokio::test]
async fn host_status_finds_hosts_by_id_name_or_address() {
    let lab = lab();
    let c = client(&lab);
    let by_name = c.hypervisor("kvm0003").await.unwrap().unwrap();
    assert!(by_name.is_up());
    assert_eq!(by_name.version.unwrap().to_string(), "4.20.0.0");
    let by_id = c.hypervisor(&by_name.id).await.unwrap().unwrap();
    assert_eq!(by_id.name, "kvm0003");
    assert!(c.hypervisor("nope").await.unwrap().is_none());
    lab.set_host_state("kvm0003", "Disconnected");
    assert!(!c.hypervisor("kvm0003").await.unwrap().unwrap().is_up());
}

#[tokio::test]
async fn every_hypervisor_comes_from_one_paged_listing() {
    let lab = lab();
    let c = client_with(&lab, fast_config().page_size(3));
    lab.set_host_state("kvm0002", "Disconnected");
    let all = c
        .hypervisors()
        .await
        .unwrap()
        .expect("cs-api lists in bulk");
    assert_eq!(all.len(), 4);
    // Two pages of `listHosts`, nothing else.
    assert_eq!(commands(&lab), ["listHosts", "listHosts"]);
    let h2 = all.iter().find(|h| h.matches("kvm0002")).unwrap();
    assert!(!h2.is_up());
    // The address is a key too, as for `hypervisor`.
    let addr = h2.address.clone().expect("listHosts gives ipaddress");
    assert!(all.iter().filter(|h| h.matches(&addr)).count() == 1);
    assert_eq!(c.hypervisor(&addr).await.unwrap().unwrap().name, "kvm0002");
}

#[tokio::test]
async fn health_report_reflects_the_cloud() {
    let lab = lab();
    lab.add_management_server("ms2", "PreparingToShutDown", "4.20.0.0");
    lab.set_host_state("kvm0002", "Disconnected");
    // Below `minreq.sysvmtemplate.version` (4.20.0) and at it.
    lab.add_router("net-old", "4.19.0");
    lab.add_router("net-new", "4.20.0");
    let c = client(&lab);
    let report = HealthReport::collect(&c).await.unwrap();
    assert_eq!(report.routers_needing_upgrade.len(), 1);
    assert_eq!(report.integration_api_port.as_deref(), Some("0"));
    let expect = HealthExpectations {
        phase: Phase::Post,
        version: Some("4.20.0.0".parse().unwrap()),
    };
    let r = report.report(&expect);
    assert_eq!(r.exit_code(), 2);
    let fails: Vec<&str> = r
        .at_least(Severity::Fail)
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(fails, ["ms2", "kvm0002"]);
    let pre = report.report(&HealthExpectations {
        phase: Phase::Pre,
        ..expect
    });
    assert_eq!(pre.exit_code(), 1);
}

#[tokio::test]
async fn wait_healthy_waits_for_a_host_to_come_back() {
    let lab = lab();
    lab.set_host_state("kvm0004", "Disconnected");
    let c = client(&lab);
    let progress = RecordingProgress::default();
    let expect = HealthExpectations::default();
    let e = wait_healthy(&c, &expect, Duration::from_millis(300), &progress)
        .await
        .unwrap_err();
    match &e {
        Error::NotHealthy { reason, report, .. } => {
            assert!(reason.contains("kvm0004"), "{reason}");
            assert!(report.is_some());
        }
        other => panic!("{other:?}"),
    }
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let progress = RecordingProgress::default();
            let r = wait_healthy(
                &c,
                &HealthExpectations::default(),
                Duration::from_secs(10),
                &progress,
            )
            .await;
            (r, progress.updates())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    lab.set_host_state("kvm0004", "Up");
    let (r, updates) = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unwrap().hosts_up(), 4);
    let last = updates.last().unwrap();
    assert!(last.finished && last.done == 4 && last.total == Some(4));
    assert!(updates.iter().any(|u| u.done == 3));
}

#[tokio::test]
async fn inventory_diff_is_the_proof() {
    let lab = lab();
    let c = client(&lab);
    let before = Inventory::snapshot(&c).await.unwrap();
    assert_eq!((before.hosts.len(), before.vms.len()), (4, 8));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("before.json");
    before.save(&path).unwrap();
    let loaded = Inventory::load(&path).unwrap();
    let same = Inventory::snapshot(&c).await.unwrap();
    assert!(diff(&loaded, &same).is_clean());
    lab.set_vm("vm00001", "Running", Some("kvm0004"));
    lab.set_vm("vm00002", "Stopped", None);
    lab.remove_vm("vm00003");
    lab.add_vm("vm-new", "Running", Some("kvm0001"));
    lab.set_host_state("kvm0003", "Alert");
    let after = Inventory::snapshot(&c).await.unwrap();
    let d = diff(&loaded, &after);
    assert_eq!(d.moved.len(), 1);
    assert_eq!(
        (d.moved[0].from.as_str(), d.moved[0].to.as_str()),
        ("kvm0001", "kvm0004")
    );
    assert_eq!(d.stopped[0].name, "vm00002");
    assert_eq!(d.missing[0].name, "vm00003");
    assert_eq!(d.new[0].name, "vm-new");
    assert_eq!(d.hosts_not_up[0].name, "kvm0003");
    let check = cs_api::InventoryUnchanged { before: loaded };
    let report = cs_core::run_checks(&[&check as &dyn cs_core::Check<Client>], &c, &[]).await;
    assert_eq!(report.exit_code(), 2);
}

#[tokio::test]
async fn handler_panics_are_surfaced() {
    let lab = lab();
    let c = client(&lab);
    lab.inject(Some("updateConfiguration"), 1, Fault::Panic);
    let e = c
        .update_configuration("integration.api.port", "0")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Api {
                http_status: 530,
                ..
            }
        ),
        "{e:?}"
    );
    let panics = lab.take_panics();
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert!(panics[0].starts_with("updateConfiguration"), "{panics:?}");
    // Unread panics fail the test when the lab is dropped.
    lab.inject(None, 1, Fault::Panic);
    let _ = c.list_zones(&[]).await;
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(lab)));
    assert!(dropped.is_err());
}

#[tokio::test]
async fn replies_longer_than_the_cap_are_refused() {
    let lab = lab();
    let c = client_with(&lab, fast_config().max_reply_bytes(512));
    let err = c.list_hosts(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("max_reply_bytes"), "{err}");
    // Small replies still pass under the same cap.
    assert!(c.list_routers(&[]).await.unwrap().is_empty());
}

/// An endpoint that answers every request with a chunked body that never ends.
async fn endless_endpoint() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                while sock.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}/client/api")
}

#[tokio::test]
async fn an_endless_reply_ends_at_the_cap() {
    let endpoint = endless_endpoint().await;
    let c = Client::new(
        &endpoint,
        Credentials::api_key("k", Secret::new("s")),
        fast_config()
            .max_reply_bytes(4 << 20)
            .retry(RetryPolicy::default().retries(0)),
    )
    .unwrap();
    let err = c.list_capabilities().await.unwrap_err();
    assert!(err.to_string().contains("the reply goes on"), "{err}");
}

/// The example on [`Client`] (its doc comment), with the lab's endpoint and keys: the secret
/// as a [`cs_api::Secret`] (re-exported), the KVM hosts all Up and a health report without
/// failures.
#[tokio::test]
async fn the_client_doc_example_runs_against_the_lab() {
    use cs_api::Secret as ReExported;
    let lab = lab();
    let secret = ReExported::new(lab.secret_key().expose());
    let client = Client::new(
        &lab.endpoint(),
        Credentials::api_key(lab.api_key(), secret),
        ClientConfig::default(),
    )
    .unwrap();
    let version = client.list_capabilities().await.unwrap().cloudstackversion;
    let hosts = client
        .list_hosts(&[("type", "Routing"), ("hypervisor", "KVM")])
        .await
        .unwrap();
    let up = hosts
        .iter()
        .filter(|h| h.state.as_deref() == Some("Up"))
        .count();
    assert_eq!(version.as_deref(), Some("4.20.0.0"));
    assert_eq!((up, hosts.len()), (4, 4));
    let health = HealthReport::collect(&client).await.unwrap();
    let report = health.report(&HealthExpectations::default());
    let table = report.to_table();
    assert!(table.contains("api."), "{table}");
    assert!(report.worst() < Severity::Fail, "{table}");
    assert!(lab.take_panics().is_empty());
}
