//! Fuzz target body: the `ScriptRunner` splitter and the schema rewrite fed arbitrary text.
//! It panics only when a rule breaks: a panic or hang inside them, statements out of order
//! or holding a line end, or a rewrite that changes a statement naming no CloudStack schema.
//!
//! The same body runs under `cargo fuzz` (the `fuzz/` crate at the root of the repository,
//! with the `fuzzing` feature) and as proptest-driven tests on stable in `cargo test` (the
//! tests at the end of this file). Not part of the crate's API.

use crate::{SchemaMap, split};

/// `data` (as UTF-8, invalid sequences replaced) split as an upgrade script, and each
/// statement pointed at scratch schemas.
pub fn script(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let s = split(&text);
    // `LineNumberReader` lines: `\n`, `\r` or `\r\n` end one.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    let mut last_line = 0;
    for (i, st) in s.statements.iter().enumerate() {
        assert_eq!(st.index, i + 1, "statements numbered out of order");
        assert!(
            st.line > last_line && st.line <= lines,
            "statement {} starts on line {} after {last_line} of {lines}",
            st.index,
            st.line
        );
        last_line = st.line;
        assert!(
            !st.text.contains(['\n', '\r']),
            "a statement holds a line end"
        );
        assert!(
            st.text.ends_with(' '),
            "the runner ends every line with a space"
        );
    }
    if let Some(rest) = &s.unterminated {
        assert!(
            rest.chars().any(|c| c > ' '),
            "blank text left unterminated"
        );
    }
    let map = SchemaMap {
        cloud: "cloud__restore_1".into(),
        usage: "cloud_usage__restore_1".into(),
    };
    for st in &s.statements {
        let out = map.rewrite(&st.text);
        if !st.text.to_ascii_lowercase().contains("cloud") {
            assert_eq!(out, st.text, "a statement naming no schema was rewritten");
        }
    }
    let out = map.rewrite(&text);
    if !text.to_ascii_lowercase().contains("cloud") {
        assert_eq!(out, text, "a script naming no schema was rewritten");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEEDS: &[&str] = &[
        "-- Schema upgrade from 4.18.0.0 to 4.19.0.0\n--;\n\
         ALTER TABLE `cloud`.`vm_instance` -- why\n ADD COLUMN x INT;\r\n\
         CALL `cloud`.`IDEMPOTENT_ADD_COLUMN`('cloud.vm_instance', 'y', 'INT');\n\
         /* license\n header */\nUPDATE cloud_usage.usage_event SET v = 'a;b' WHERE s = \"cloud\";\n\
         # note\n   // note\nDROP PROCEDURE IF EXISTS `cloud`.`p`;\n\
         CREATE PROCEDURE `cloud`.`p` (IN a INT) BEGIN SELECT 1; SELECT 'x--y'; END;\n\
         SELECT * FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'cloud'\n",
        "DELIMITER $$\rINSERT INTO t VALUES ('x;\n');\nSELECT 1; -- one\nSELECT 2;",
    ];

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let special = b"\n\r\t ;-/#*'\"`\\.cloud_usage".to_vec();
        cs_lab::fuzz::mutated(cs_lab::fuzz::seeds(SEEDS), prop::sample::select(special), 8)
    }

    proptest! {
        #![proptest_config(cs_lab::fuzz::config(512))]

        #[test]
        fn scripts_mutated(data in mutated()) {
            script(&data);
        }

        #[test]
        fn scripts_of_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
            script(&data);
        }

        #[test]
        fn scripts_of_random_tokens(tokens in prop::collection::vec(prop::sample::select(&[
            "cloud", "cloud_usage", "`", "'", "\"", ".", ";", "--", "//", "#", "/*", "*/", "\\",
            " ", "\t", "\r", "\n", "\u{1}", "x", "\u{e9}",
        ][..]), 0..60)) {
            script(tokens.concat().as_bytes());
        }
    }

    #[test]
    fn the_seeds_split() {
        assert_eq!(split(SEEDS[0]).statements.len(), 5);
        for s in SEEDS {
            script(s.as_bytes());
        }
    }
}
