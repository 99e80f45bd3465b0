//! Property tests: generated files in the three formats round-trip through the parser, rewriting
//! is idempotent and reversible, and only lines of enabled CloudStack entries change.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::rewrite::reprint;
use crate::{Format, Rules, rewrite};

const LINES: &[&str] = &["4.9", "4.18", "4.19", "4.20", "4.23", "24.0", "25.1"];

/// One generated line and whether it may change (it holds an enabled CloudStack release token).
type Piece = (String, bool);

fn line_token() -> impl Strategy<Value = String> {
    prop::sample::select(LINES).prop_map(str::to_string)
}

fn ws() -> impl Strategy<Value = String> {
    prop::sample::select(&[" ", "  ", "\t", " \t "][..]).prop_map(str::to_string)
}

fn lead() -> impl Strategy<Value = String> {
    prop::sample::select(&["", "", " ", "\t"][..]).prop_map(str::to_string)
}

fn comment_text() -> impl Strategy<Value = String> {
    (
        "[ a-zA-Z:/.,()-]{0,30}",
        prop::option::of(line_token()),
        prop::option::of(Just("https://download.cloudstack.org/ubuntu noble")),
    )
        .prop_map(|(t, l, u)| {
            format!(
                "{t}{}{}",
                l.map(|l| format!(" {l}")).unwrap_or_default(),
                u.map(|u| format!(" see {u}")).unwrap_or_default()
            )
        })
}

/// apt one-line pieces; `rel` is the release of every enabled CloudStack entry.
fn apt_piece(rel: String) -> impl Strategy<Value = Vec<Piece>> {
    let opts = prop::sample::select(
        &[
            "",
            "[arch=amd64] ",
            "[ arch=amd64 signed-by=/etc/apt/keyrings/cs.gpg ] ",
            "[trusted=yes]\t",
        ][..],
    );
    let cs_uri = prop::sample::select(
        &[
            "https://download.cloudstack.org/ubuntu",
            "http://download.cloudstack.org/debian",
            "https://mirror.local/cloudstack/ubuntu",
        ][..],
    );
    let suite = prop::sample::select(&["noble", "jammy", "bookworm"][..]);
    let trailing = prop::sample::select(&["", " # CloudStack 4.18", "  #x"][..]);
    let r1 = rel.clone();
    let r2 = rel;
    prop_oneof![
        3 => (lead(), opts.clone(), cs_uri.clone(), ws(), suite.clone(), ws(), any::<bool>(), trailing.clone())
            .prop_map(move |(l, o, u, w1, s, w2, main, t)| {
                let extra = if main { " main" } else { "" };
                vec![(format!("{l}deb {o}{u}{w1}{s}{w2}{r1}{extra}{t}"), true)]
            }),
        1 => (lead(), ws(), trailing.clone()).prop_map(move |(l, w, t)| {
            vec![(format!("{l}deb{w}https://mirror.local/cloudstack/upstream/debian/{r2} ./{t}"), true)]
        }),
        2 => ("#{1,2}", lead(), opts.clone(), cs_uri, suite.clone(), line_token())
            .prop_map(|(h, l, o, u, s, r)| vec![(format!("{h}{l}deb {o}{u} {s} {r}"), false)]),
        2 => (lead(), opts, suite, line_token(), trailing)
            .prop_map(|(l, o, s, r, t)| {
                vec![(format!("{l}deb {o}http://archive.ubuntu.com/ubuntu {s} main {r}{t}"), false)]
            }),
        1 => Just(vec![("deb cdrom:[Ubuntu 24.04 LTS _Noble_]/ noble main".to_string(), false)]),
        2 => comment_text().prop_map(|c| vec![(format!("# {c}"), false)]),
        1 => lead().prop_map(|l| vec![(l, false)]),
    ]
}

/// deb822 paragraphs (each followed by a blank line by the caller).
fn deb822_piece(rel: String) -> impl Strategy<Value = Vec<Piece>> {
    let name = |n: &'static str| {
        prop::sample::select(vec![
            n.to_string(),
            n.to_ascii_lowercase(),
            n.to_ascii_uppercase(),
        ])
    };
    let key = prop::sample::select(
        &[
            "",
            "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGabc\n -----END PGP PUBLIC KEY BLOCK-----",
            "Signed-By: /etc/apt/keyrings/cloudstack.gpg",
        ][..],
    );
    let r1 = rel.clone();
    let r2 = rel;
    prop_oneof![
        3 => (name("Types"), name("URIs"), name("Suites"), name("Components"), key.clone(), any::<bool>(), any::<bool>())
            .prop_map(move |(t, u, s, c, k, two_uris, enabled_yes)| {
                let mut v = vec![(format!("{t}: deb"), false)];
                if two_uris {
                    v.push((format!("{u}: https://download.cloudstack.org/ubuntu"), false));
                    v.push(("  https://mirror.local/cloudstack/ubuntu".into(), false));
                } else {
                    v.push((format!("{u}: https://download.cloudstack.org/ubuntu"), false));
                }
                v.push((format!("{s}: noble jammy"), false));
                v.push((format!("{c}: {r1}"), true));
                if enabled_yes {
                    v.push(("Enabled: yes".into(), false));
                }
                v.extend(k.lines().filter(|l| !l.is_empty()).map(|l| (l.to_string(), false)));
                v
            }),
        1 => Just(()).prop_map(move |()| vec![
            ("Types: deb".to_string(), false),
            (format!("URIs: https://mirror.local/cloudstack/upstream/debian/{r2}"), true),
            ("Suites: ./".to_string(), false),
        ]),
        2 => (line_token(), key).prop_map(|(r, k)| {
            let mut v = vec![
                ("Types: deb deb-src".to_string(), false),
                ("URIs: https://download.cloudstack.org/ubuntu".to_string(), false),
                ("Suites: noble".to_string(), false),
                (format!("Components: {r}"), false),
                ("Enabled: no".to_string(), false),
            ];
            v.extend(k.lines().filter(|l| !l.is_empty()).map(|l| (l.to_string(), false)));
            v
        }),
        2 => line_token().prop_map(|r| vec![
            ("# Ubuntu".to_string(), false),
            ("Types: deb".to_string(), false),
            ("URIs: http://archive.ubuntu.com/ubuntu".to_string(), false),
            ("Suites: noble noble-updates".to_string(), false),
            (format!("Components: main {r}"), false),
        ]),
        1 => comment_text().prop_map(|c| vec![(format!("# {c}"), false)]),
    ]
}

/// yum sections.
fn yum_piece(rel: String) -> impl Strategy<Value = Vec<Piece>> {
    let id = "[a-z][a-z0-9-]{0,10}";
    let eq = prop::sample::select(&["=", " = ", "= "][..]);
    let r1 = rel;
    prop_oneof![
        3 => (id, eq.clone(), any::<bool>(), any::<bool>(), prop::sample::select(&["centos/$releasever", "rhel/8", "centos7"][..]))
            .prop_map(move |(id, eq, cont, enabled1, tree)| {
                let mut v = vec![
                    (format!("[{id}]"), false),
                    ("name=Apache CloudStack".to_string(), false),
                    (format!("baseurl{eq}http://download.cloudstack.org/{tree}/{r1}/"), true),
                ];
                if cont {
                    v.push((format!("        https://mirror.local/cloudstack/centos/$releasever/{r1}/"), true));
                }
                if enabled1 {
                    v.push(("enabled=1".to_string(), false));
                }
                v.push(("gpgcheck=0".to_string(), false));
                v
            }),
        2 => (id, line_token()).prop_map(|(id, r)| vec![
            (format!("[{id}]"), false),
            (format!("baseurl=http://download.cloudstack.org/centos/$releasever/{r}/"), false),
            ("enabled=0".to_string(), false),
        ]),
        2 => (id, line_token()).prop_map(|(id, r)| vec![
            (format!("[{id}]"), false),
            (format!("baseurl=http://vault.centos.org/{r}/BaseOS/$basearch/os/"), false),
            ("mirrorlist=http://mirrorlist.centos.org/?release=$releasever".to_string(), false),
        ]),
        1 => comment_text().prop_map(|c| vec![(format!("# {c}"), false)]),
        1 => comment_text().prop_map(|c| vec![(format!("; {c}"), false)]),
    ]
}

/// A generated file: text, format, release of its enabled CloudStack entries, and the indices
/// of the lines that may change.
fn file() -> impl Strategy<Value = (String, Format, String, BTreeSet<usize>)> {
    (
        line_token(),
        prop::sample::select(&[Format::AptList, Format::Deb822, Format::Yum][..]),
    )
        .prop_flat_map(|(rel, format)| {
            let pieces = match format {
                Format::AptList => prop::collection::vec(apt_piece(rel.clone()), 0..8).boxed(),
                Format::Deb822 => prop::collection::vec(deb822_piece(rel.clone()), 0..5)
                    .prop_map(|ps| {
                        ps.into_iter()
                            .map(|mut p| {
                                p.push((String::new(), false));
                                p
                            })
                            .collect()
                    })
                    .boxed(),
                _ => prop::collection::vec(yum_piece(rel.clone()), 0..5)
                    .prop_map(|ps| {
                        ps.into_iter()
                            .map(|mut p| {
                                p.push((String::new(), false));
                                p
                            })
                            .collect()
                    })
                    .boxed(),
            };
            (
                Just(rel),
                Just(format),
                pieces,
                prop::sample::select(&["\n", "\r\n"][..]),
                any::<bool>(),
            )
        })
        .prop_map(|(rel, format, pieces, eol, final_newline)| {
            let lines: Vec<Piece> = pieces
                .into_iter()
                .flatten()
                .flat_map(|(text, may)| {
                    // A piece may hold several physical lines (an inline key).
                    text.split('\n')
                        .map(|l| (l.to_string(), may))
                        .collect::<Vec<_>>()
                })
                .collect();
            let may_change = lines
                .iter()
                .enumerate()
                .filter(|(_, (_, m))| *m)
                .map(|(i, _)| i)
                .collect();
            let mut text = lines
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(eol);
            if final_newline && !lines.is_empty() {
                text.push_str(eol);
            }
            (text, format, rel, may_change)
        })
}

fn split(text: &str) -> Vec<&str> {
    text.split('\n').collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_then_print_is_byte_identical((text, format, _rel, _) in file()) {
        prop_assert_eq!(reprint(&text, format).unwrap(), text);
    }

    #[test]
    fn rewriting_is_idempotent_and_touches_only_cloudstack_lines(
        (text, format, rel, may_change) in file(),
        target in line_token(),
    ) {
        let rules = Rules::default().with_mirror("https://mirror.local/cloudstack").unwrap();
        let once = rewrite(&text, format, &target, &rules).unwrap();
        let twice = rewrite(&once.text, format, &target, &rules).unwrap();
        prop_assert_eq!(&twice.text, &once.text);
        prop_assert!(twice.changes.is_empty());

        let (old, new) = (split(&text), split(&once.text));
        prop_assert_eq!(old.len(), new.len());
        for (i, (a, b)) in old.iter().zip(&new).enumerate() {
            if a != b {
                prop_assert!(may_change.contains(&i), "line {} changed: {:?} -> {:?}", i + 1, a, b);
            }
        }
        let expected_changes = if rel == target { 0 } else { may_change.len() };
        prop_assert_eq!(once.changes.len(), expected_changes);
        for c in &once.changes {
            prop_assert_eq!(&c.from, &rel);
            prop_assert_eq!(&c.to, &target);
        }
    }

    #[test]
    fn rewriting_to_another_line_and_back_restores_the_text(
        (text, format, rel, _) in file(),
        target in line_token(),
    ) {
        let rules = Rules::default().with_mirror("https://mirror.local/cloudstack").unwrap();
        let there = rewrite(&text, format, &target, &rules).unwrap();
        let back = rewrite(&there.text, format, &rel, &rules).unwrap();
        prop_assert_eq!(back.text, text);
    }

    #[test]
    fn arbitrary_text_never_panics_and_round_trips_when_it_parses(
        text in "([#;\\[\\] =:a-z0-9./\t\r]|deb |\n|baseurl=|Types: ){0,80}",
        format in prop::sample::select(&[Format::AptList, Format::Deb822, Format::Yum][..]),
    ) {
        if let Ok(printed) = reprint(&text, format) {
            prop_assert_eq!(printed, text.clone());
        }
        if let Ok(out) = rewrite(&text, format, "4.20", &Rules::default()) {
            prop_assert_eq!(reprint(&out.text, format).unwrap(), out.text);
        }
    }
}
