//! `repo.target.resolvable` against the cs-lab repository server on 127.0.0.1: apt pooled
//! (`Packages.xz`, `.gz`, plain) and flat repositories, yum `repomd.xml` + primary metadata,
//! a version that is not offered, and URLs that refuse or never answer.

use std::time::{Duration, Instant};

use cs_core::fake::FakeHost;
use cs_core::{Check, CsVersion, Finding, Host, Severity};
use cs_lab::RepoServer;
use cs_repo::{Rules, TargetResolvable};

const LIST: &str = "/etc/apt/sources.list.d/cloudstack.list";
const REPO: &str = "/etc/yum.repos.d/cloudstack.repo";

fn check(repo_url: &str, target: &str) -> TargetResolvable {
    let mut c = TargetResolvable::new(CsVersion::parse(target).unwrap());
    c.rules = Rules::default().with_mirror(repo_url).unwrap();
    c.timeout = Duration::from_secs(5);
    c
}

async fn run(c: &TargetResolvable, host: &FakeHost) -> Vec<Finding> {
    tokio::time::timeout(Duration::from_secs(60), c.run(host as &dyn Host))
        .await
        .expect("the check finishes")
        .unwrap()
}

#[tokio::test]
async fn apt_indexes_in_every_compression_offer_the_target() {
    let repo = RepoServer::start(&["4.19.1.0", "4.20.0.0", "4.20.1.0"])
        .await
        .unwrap();
    let url = repo.url();
    // The files still point at 4.19: the check looks at the repository they will point at.
    let list = format!(
        "deb [arch=amd64] {url}/ubuntu noble 4.19\n\
         deb {url}/ubuntu jammy 4.19 # gz\n\
         deb [ arch=amd64 trusted=yes ] {url}/ubuntu focal 4.19\n\
         deb-src {url}/ubuntu focal 4.19\n\
         deb {url}/cloudstack/upstream/debian/4.19 ./\n"
    );
    let host = FakeHost::new("kvm1").with_file(LIST, list);
    let findings = run(&check(&url, "4.20.1.0"), &host).await;
    assert_eq!(findings.len(), 4, "{findings:#?}");
    for f in &findings {
        assert_eq!(f.severity, Severity::Pass, "{f:#?}");
        assert!(
            f.message
                .ends_with("offers cloudstack-management, cloudstack-agent 4.20.1.0"),
            "{}",
            f.message
        );
    }
    let requests = repo.requests();
    for p in [
        "/ubuntu/dists/noble/4.20/binary-amd64/Packages.xz",
        "/ubuntu/dists/jammy/4.20/binary-amd64/Packages.gz",
        "/ubuntu/dists/focal/4.20/binary-amd64/Packages",
        "/cloudstack/upstream/debian/4.20/Packages.xz",
        "/cloudstack/upstream/debian/4.20/Packages.gz",
    ] {
        assert!(requests.iter().any(|r| r == p), "{p} not in {requests:?}");
    }
    assert!(!requests.iter().any(|r| r.contains("4.19")), "{requests:?}");
}

#[tokio::test]
async fn yum_metadata_offers_the_target() {
    let repo = RepoServer::start(&["4.19.1.0", "24.0.0"]).await.unwrap();
    let url = repo.url();
    let host = FakeHost::new("mgmt1")
        .with_file(
            "/etc/os-release",
            "NAME=\"Rocky Linux\"\nVERSION_ID=\"9.4\"\n",
        )
        .with_file(
            REPO,
            format!(
                "[cloudstack]\nname=CloudStack\nbaseurl={url}/centos/$releasever/4.19/\nenabled=1\n"
            ),
        );
    let findings = run(&check(&url, "24.0.0"), &host).await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].severity, Severity::Pass, "{findings:#?}");
    assert_eq!(findings[0].subject, format!("{url}/centos/9/24.0/"));
    let requests = repo.requests();
    assert_eq!(requests[0], "/centos/9/24.0/repodata/repomd.xml");
    assert!(
        requests[1].starts_with("/centos/9/24.0/repodata/")
            && requests[1].ends_with("-primary.xml.gz"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_version_that_is_not_offered_fails_naming_the_repository() {
    let repo = RepoServer::start(&["4.20.0.0"]).await.unwrap();
    let url = repo.url();
    let host = FakeHost::new("mgmt1")
        .with_file(LIST, format!("deb {url}/ubuntu noble 4.19\n"))
        .with_file(REPO, format!("[cs]\nbaseurl={url}/centos/8/4.19/\n"));
    let findings = run(&check(&url, "4.20.1.0"), &host).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    let apt = findings
        .iter()
        .find(|f| f.subject.contains("ubuntu"))
        .unwrap();
    assert_eq!(apt.severity, Severity::Fail);
    assert_eq!(apt.subject, format!("{url}/ubuntu noble 4.20"));
    assert_eq!(
        apt.message,
        format!(
            "{url}/ubuntu/dists/noble/4.20/binary-amd64/Packages.xz does not offer \
             cloudstack-management 4.20.1.0 (offers: 4.20.0.0); cloudstack-agent 4.20.1.0 (offers: 4.20.0.0)"
        )
    );
    let yum = findings
        .iter()
        .find(|f| f.subject.contains("centos"))
        .unwrap();
    assert_eq!(yum.severity, Severity::Fail);
    assert!(
        yum.message
            .contains("does not offer cloudstack-management 4.20.1.0"),
        "{}",
        yum.message
    );

    // A line the repository does not carry at all: the index is missing.
    let findings = run(&check(&url, "4.21.0.0"), &host).await;
    let apt = findings
        .iter()
        .find(|f| f.subject.contains("ubuntu"))
        .unwrap();
    assert_eq!(apt.severity, Severity::Fail);
    assert!(
        apt.message
            .contains("no Packages, Packages.gz or Packages.xz index there"),
        "{}",
        apt.message
    );
}

#[tokio::test]
async fn an_unreachable_repository_is_a_failure_not_a_hang() {
    // A port nobody listens on: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for addr in [closed, silent_addr] {
        let url = format!("http://{addr}");
        let host = FakeHost::new("kvm1").with_file(LIST, format!("deb {url}/ubuntu noble 4.19\n"));
        let mut c = check(&url, "4.20.0.0");
        c.timeout = Duration::from_secs(1);
        let started = Instant::now();
        let findings = run(&c, &host).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].severity, Severity::Fail);
        assert!(
            findings[0].message.starts_with(&format!(
                "cannot fetch {url}/ubuntu/dists/noble/4.20/binary-amd64/Packages.xz"
            )),
            "{}",
            findings[0].message
        );
        assert!(findings[0].remedy.is_some());
    }
    hold.abort();
}

#[tokio::test]
async fn nothing_to_fetch_is_a_failure() {
    let host = FakeHost::new("kvm1").with_file(
        LIST,
        "# deb https://download.cloudstack.org/ubuntu noble 4.19\n",
    );
    let c = TargetResolvable::new(CsVersion::parse("4.20.0.0").unwrap());
    let f = run(&c, &host).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Fail);
    assert_eq!(
        f[0].message,
        "no enabled CloudStack repository to fetch 4.20.0.0 from"
    );
}

#[tokio::test]
async fn mirror_lists_are_reported_not_followed() {
    let host = FakeHost::new("mgmt1").with_file(
        REPO,
        "[cs]\nmirrorlist=https://download.cloudstack.org/centos/$releasever/4.19/mirrors.txt\n",
    );
    let c = TargetResolvable::new(CsVersion::parse("4.20.0.0").unwrap());
    let f = run(&c, &host).await;
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Warn);
    assert_eq!(
        f[0].subject,
        "https://download.cloudstack.org/centos/$releasever/4.20/mirrors.txt"
    );
}
