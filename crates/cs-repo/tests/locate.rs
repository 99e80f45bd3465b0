//! `locate_package` + `download_package` against the cs-lab repository server: the
//! `cloudstack-management` package found through apt pooled, apt flat and yum indexes (files
//! still pointing at the current release), downloaded and checked; a tampered index entry and
//! a version not offered are refused.

use std::time::Duration;

use cs_core::CsVersion;
use cs_lab::RepoServer;
use cs_repo::{Error, Format, LocateOptions, Rules, download_package, locate_package};

fn options(url: &str) -> LocateOptions {
    let mut o = LocateOptions::default();
    o.rules = Rules::default().with_mirror(url).unwrap();
    o.timeout = Duration::from_secs(5);
    o
}

#[tokio::test]
async fn finds_downloads_and_checks_the_management_package_in_every_form() {
    let repo = RepoServer::start(&["4.18.0.0", "4.19.0.0"]).await.unwrap();
    let url = repo.url();
    let target: CsVersion = "4.19.0.0".parse().unwrap();
    let cases = [
        (
            format!("deb [arch=amd64] {url}/ubuntu noble 4.18\n"),
            Format::AptList,
            format!("{url}/ubuntu/pool/4.19/cloudstack-management_4.19.0.0_all.deb"),
            &b"!<arch>\n"[..],
        ),
        (
            format!("deb {url}/cloudstack/upstream/debian/4.18 ./\n"),
            Format::AptList,
            format!("{url}/cloudstack/upstream/debian/4.19/cloudstack-management_4.19.0.0_all.deb"),
            &b"!<arch>\n"[..],
        ),
        (
            format!(
                "[cloudstack]\nname=cloudstack\nbaseurl={url}/centos/$releasever/4.18/\nenabled=1\ngpgcheck=0\n"
            ),
            Format::Yum,
            format!("{url}/centos/8/4.19/cloudstack-management-4.19.0.0-1.noarch.rpm"),
            &[0xed, 0xab, 0xee, 0xdb][..],
        ),
    ];
    for (text, format, want_url, magic) in cases {
        let loc = locate_package(
            &text,
            format,
            &target,
            "cloudstack-management",
            &options(&url),
        )
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(loc.url, want_url);
        assert_eq!(loc.shown_url(), want_url);
        assert_eq!(loc.sha256.len(), 64);
        let body = download_package(&loc, 64 << 20, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(body.len() as u64, loc.size);
        assert!(body.starts_with(magic), "{want_url}");

        let mut tampered = loc.clone();
        tampered.sha256 = "0".repeat(64);
        let err = download_package(&tampered, 64 << 20, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
        let mut short = loc.clone();
        short.size -= 1;
        let err = download_package(&short, 64 << 20, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        let err = download_package(&loc, 16, Duration::from_secs(10))
            .await
            .unwrap_err();
        let chain = cs_core::error_chain(&err);
        assert!(chain.contains("more than 16"), "{chain}");
    }
    let missing = locate_package(
        &format!("deb {url}/ubuntu noble 4.18\n"),
        Format::AptList,
        &"4.20.0.0".parse().unwrap(),
        "cloudstack-management",
        &options(&url),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            missing,
            Error::PackageNotOffered { .. } | Error::Fetch { .. }
        ),
        "{missing}"
    );
}

#[test]
fn credentials_in_a_package_url_are_masked_when_shown() {
    let loc = cs_repo::PackageLocation {
        package: "cloudstack-management".into(),
        version: "4.19.0.0".into(),
        url: "https://user:s3cret@mirror.example/pool/x.deb".into(),
        size: 1,
        sha256: "0".repeat(64),
        index_url: String::new(),
    };
    assert_eq!(loc.shown_url(), "https://***@mirror.example/pool/x.deb");
}
