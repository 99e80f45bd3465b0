//! Reading the upgrade scripts out of `cloudstack-management` packages laid out as CloudStack's
//! (the lab builds them): `.deb` with `data.tar` in gzip, xz and zstd, `.rpm` with a gzip, xz
//! and zstd `cpio` payload, a directory; and refusing what is not a package.

use cs_core::CsVersion;
use cs_lab::packages::{PackageCompression, lab_scripts, management_deb, management_rpm};
use cs_rehearse::Scripts;

#[test]
fn every_package_form_gives_the_scripts_the_jar_carries() {
    let v: CsVersion = "4.19.0.0".parse().unwrap();
    let want = lab_scripts(&v).unwrap();
    assert!(want.contains_key("schema-41800to41810.sql"));
    assert!(want.contains_key("schema-41810to41900-cleanup.sql"));
    for c in [
        PackageCompression::Gzip,
        PackageCompression::Xz,
        PackageCompression::Zstd,
    ] {
        for (kind, data) in [
            ("deb", management_deb(&v, c).unwrap()),
            ("rpm", management_rpm(&v, c).unwrap()),
        ] {
            let s =
                Scripts::from_package(kind, &data).unwrap_or_else(|e| panic!("{kind} {c:?}: {e}"));
            assert_eq!(
                s.files.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{kind} {c:?}"
            );
            assert_eq!(s.files, want, "{kind} {c:?}");
            assert_eq!(
                s.jars,
                [
                    "./usr/share/cloudstack-management/lib/cloudstack-4.19.0.0.jar"
                        .trim_start_matches(if kind == "rpm" { "" } else { "./" })
                ]
            );
            assert_eq!(s.under("views"), ["views/cloud.lab_host_summary.sql"]);
            // A damaged package is an error, not a panic or an empty set.
            let cut = &data[..data.len() / 2];
            assert!(
                Scripts::from_package(kind, cut).is_err(),
                "{kind} {c:?} cut"
            );
        }
    }
    let err = Scripts::from_package("x", b"PK\x03\x04 not a package").unwrap_err();
    assert!(
        err.to_string().contains("neither a .deb nor an .rpm"),
        "{err}"
    );
}

#[test]
fn a_directory_of_scripts_reads_like_a_package() {
    let v: CsVersion = "4.19.0.0".parse().unwrap();
    let want = lab_scripts(&v).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &want {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::write(dir.path().join("README.txt"), "not sql").unwrap();
    let s = Scripts::from_dir(dir.path()).unwrap();
    assert_eq!(s.files, want);
    let err = s.get("schema-99999to100000.sql").unwrap_err();
    assert!(
        err.to_string().contains("schema-99999to100000.sql"),
        "{err}"
    );
}
