//! Fuzz target body: the three repository-file parsers and the rewrite, fed arbitrary text.
//! It panics only when a rule breaks: a panic or hang inside them, a parse that does not print
//! back to its input byte for byte, a rewrite that changes a file none of whose entries it
//! rewrites, that is not idempotent, or that cannot be undone by rewriting back.
//!
//! The same body runs under `cargo fuzz` (the `fuzz/` crate at the root of the repository,
//! with the `fuzzing` feature) and as proptest-driven tests on stable in `cargo test` (the
//! tests at the end of this file). Not part of the crate's API.

use crate::doc::Document;
use crate::{Format, Rules, rewrite, scan};

/// `data` (as UTF-8, invalid sequences replaced) read as an apt one-line file, a deb822 file
/// and a yum `.repo` file, and rewritten to `4.20` and `24.0`.
pub fn repo_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let mirror = Rules::default().with_mirror("https://mirror.local/cloudstack/upstream");
    let Ok(rules) = mirror else {
        unreachable!("a valid mirror prefix")
    };
    for format in [Format::AptList, Format::Deb822, Format::Yum] {
        let parsed = Document::parse(text, format);
        if let Ok(doc) = &parsed {
            assert_eq!(doc.print(), text, "{format}: parsing is not lossless");
        }
        let scanned = scan(text, format, &rules);
        assert_eq!(
            scanned.is_ok(),
            parsed.is_ok(),
            "{format}: scan and parse disagree"
        );
        // Nothing matches no rule: the text comes back as it was.
        if let Ok(out) = rewrite(text, format, "4.20", &Rules::none()) {
            assert!(
                out.is_noop() && out.text == text,
                "{format}: changed without a rule"
            );
        }
        for target in ["4.20", "24.0"] {
            let Ok(out) = rewrite(text, format, target, &rules) else {
                continue;
            };
            if out.is_noop() {
                assert_eq!(out.text, text, "{format}: text changed without a change");
                continue;
            }
            assert_eq!(
                out.text.split('\n').count(),
                text.split('\n').count(),
                "{format}: the rewrite added or removed lines"
            );
            let again = rewrite(&out.text, format, target, &rules);
            assert!(
                again
                    .as_ref()
                    .is_ok_and(|a| a.is_noop() && a.text == out.text),
                "{format}: rewriting to {target} twice is not a no-op: {again:?}"
            );
            let from = out.changes[0].from.clone();
            let back = rewrite(&out.text, format, &from, &rules);
            assert!(
                back.as_ref().is_ok_and(|b| b.text == text),
                "{format}: rewriting back to {from} does not give the input: {back:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every golden input of the rewrite's table tests.
    const SEEDS: &[&str] = &[
        include_str!("../tests/golden/01-apt-official.list"),
        include_str!("../tests/golden/03-apt-options.list"),
        include_str!("../tests/golden/05-apt-several-components.list"),
        include_str!("../tests/golden/06-apt-commented.list"),
        include_str!("../tests/golden/08-apt-flat-dot.list"),
        include_str!("../tests/golden/10-apt-cdrom.list"),
        include_str!("../tests/golden/12-apt-crlf.list"),
        include_str!("../tests/golden/13-apt-no-final-newline.list"),
        include_str!("../tests/golden/15-apt-new-scheme.list"),
        include_str!("../tests/golden/16-apt-deb-src.list"),
        include_str!("../tests/golden/20-apt-unterminated-options.list"),
        include_str!("../tests/golden/21-deb822-basic.sources"),
        include_str!("../tests/golden/22-deb822-paragraphs.sources"),
        include_str!("../tests/golden/23-deb822-multi-values.sources"),
        include_str!("../tests/golden/24-deb822-inline-key.sources"),
        include_str!("../tests/golden/26-deb822-enabled-no.sources"),
        include_str!("../tests/golden/27-deb822-flat.sources"),
        include_str!("../tests/golden/28-deb822-crlf.sources"),
        include_str!("../tests/golden/30-yum-install-guide.repo"),
        include_str!("../tests/golden/32-yum-several-baseurls.repo"),
        include_str!("../tests/golden/33-yum-mirrorlist.repo"),
        include_str!("../tests/golden/34-yum-centos7.repo"),
        include_str!("../tests/golden/37-yum-comments-crlf-no-final-newline.repo"),
        include_str!("../tests/golden/39-zypper-suse.repo"),
        include_str!("../tests/golden/42-apt-bom.list"),
        include_str!("../tests/golden/43-yum-release-in-query-only.repo"),
        include_str!("../tests/golden/44-deb822-new-scheme.sources"),
    ];

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let special = b"\n\r\t #[]=:/.-4.19 24.0 deb ./ Enabled: no enabled=0 baseurl=".to_vec();
        cs_lab::fuzz::mutated(cs_lab::fuzz::seeds(SEEDS), prop::sample::select(special), 6)
    }

    proptest! {
        #![proptest_config(cs_lab::fuzz::config(512))]

        #[test]
        fn repo_files_mutated(data in mutated()) {
            repo_file(&data);
        }

        #[test]
        fn repo_files_of_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
            repo_file(&data);
        }

        #[test]
        fn repo_files_of_random_lines(data in "(deb|Types: deb|URIs:|\\[cs\\]|baseurl=|#| |\t|\r?\n|https://download\\.cloudstack\\.org/(ubuntu|centos/7)|/?4\\.19/?|24\\.0| noble| \\./|\\[arch=amd64\\]|enabled=0|Enabled: no|Suites:|Components:){0,30}") {
            repo_file(data.as_bytes());
        }
    }

    #[test]
    fn the_seeds_rewrite() {
        let rules = Rules::default().with_mirror("https://mirror.local/cloudstack/upstream");
        let rules = rules.unwrap();
        let changed = SEEDS
            .iter()
            .filter(|s| {
                [Format::AptList, Format::Deb822, Format::Yum]
                    .into_iter()
                    .any(|f| rewrite(s, f, "4.20", &rules).is_ok_and(|o| !o.is_noop()))
            })
            .count();
        assert!(changed >= 15, "only {changed} seeds are rewritten");
        for s in SEEDS {
            repo_file(s.as_bytes());
        }
    }
}
