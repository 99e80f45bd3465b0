//! Keystores made with the real `keytool` (PKCS#12 and JKS): the native integrity check agrees
//! with the host's `keytool`, and the checks read the certificate and file modes.

use cs_agent::checks::KeystoreCheck;
use cs_agent::keystore::{self, Opener, StoreFormat};
use cs_agent::{Node, verify_native};
use cs_core::{Secret, Severity};
use cs_lab::{KvmHost, KvmHostOptions, StoreKind};

fn host(store: StoreKind) -> KvmHost {
    let mut o = KvmHostOptions::new("kvm1", "c1");
    o.ssh = false;
    o.store = store;
    KvmHost::start(&o).expect("lab host (keytool from default-jre-headless, openssl)")
}

#[tokio::test]
async fn native_check_and_keytool_agree_on_both_formats() {
    for (kind, format) in [
        (StoreKind::Pkcs12, StoreFormat::Pkcs12),
        (StoreKind::Jks, StoreFormat::Jks),
    ] {
        let lab = host(kind);
        let node = Node::new(lab.local_host()).rerooted(lab.root());
        let jks = std::fs::read(node.layout.agent_conf_dir.join("cloud.jks")).unwrap();
        assert_eq!(keystore::store_format(&jks), format);
        assert_eq!(
            verify_native(&jks, lab.passphrase()),
            Some(true),
            "{kind:?}"
        );
        assert_eq!(
            verify_native(&jks, &Secret::new("wrong")),
            Some(false),
            "{kind:?}"
        );
        for opener in [Opener::Native, Opener::HostKeytool] {
            let right = keystore::inspect(
                node.host.as_ref(),
                &node.layout,
                Some(lab.passphrase()),
                opener,
            )
            .await
            .unwrap();
            assert_eq!(right.opens, Some(true), "{kind:?} {opener:?}");
            let wrong = keystore::inspect(
                node.host.as_ref(),
                &node.layout,
                Some(&Secret::new("wrong")),
                opener,
            )
            .await
            .unwrap();
            assert_eq!(wrong.opens, Some(false), "{kind:?} {opener:?}");
        }
    }
}

#[tokio::test]
async fn the_certificate_and_modes_are_read_from_the_host() {
    let lab = host(StoreKind::Pkcs12);
    let node = Node::new(lab.local_host()).rerooted(lab.root());
    let st = keystore::inspect(
        node.host.as_ref(),
        &node.layout,
        Some(lab.passphrase()),
        Opener::Native,
    )
    .await
    .unwrap();
    let cert = st.cert.as_ref().unwrap();
    assert!(cert.subject.contains("CN=kvm.lab"), "{}", cert.subject);
    assert_eq!(
        cert.san_ips,
        ["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(cert.days_left(0) > 10_000);
    assert!(
        st.files.iter().all(|f| f.mode == Some(0o600)),
        "{:?}",
        st.files
    );
    let findings = KeystoreCheck::default().findings(&node).await.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Pass);

    // A loose mode and a missing passphrase are reported; the passphrase never is.
    let conf = node.layout.agent_conf_dir.clone();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(conf.join("cloud.key"))
            .unwrap()
            .permissions(),
        0o644,
    );
    std::fs::set_permissions(
        conf.join("cloud.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let props = std::fs::read_to_string(conf.join("agent.properties")).unwrap();
    let without: String = props
        .lines()
        .filter(|l| !l.starts_with("keystore.passphrase"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(conf.join("agent.properties"), without).unwrap();
    let findings = KeystoreCheck::default().findings(&node).await.unwrap();
    let text = format!("{findings:?}");
    assert!(text.contains("keystore.passphrase is missing"), "{text}");
    assert!(text.contains("cloud.key has mode 0644"), "{text}");
    assert!(!text.contains(lab.passphrase().expose()));
}
