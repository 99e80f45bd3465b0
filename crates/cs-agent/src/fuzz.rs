//! Fuzz target body: the `agent.properties` parser fed arbitrary bytes. It panics only when a
//! rule breaks: a panic or hang inside the parser, a file that does not render back to the
//! same bytes, or an edit that does not read back as written.
//!
//! The same body runs under `cargo fuzz` (the `fuzz/` crate at the root of the repository,
//! with the `fuzzing` feature) and as proptest-driven tests on stable in `cargo test` (the
//! tests at the end of this file). Not part of the crate's API.

use crate::{Properties, diff};

/// `data` read as `agent.properties` (UTF-8, else ISO-8859-1, as the refresh reads it):
/// rendered unedited it gives `data` back; every key's value reads and types without a panic;
/// a key set to an awkward value, or removed, reads back so after a new parse, and no other
/// key changes.
pub fn properties(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Properties::parse(text)
    {
        assert_eq!(p.to_string(), text, "parse then render is not lossless");
    }
    let Ok(p) = Properties::from_bytes(data) else {
        return;
    };
    assert_eq!(p.to_bytes(), data, "read then write is not lossless");
    for key in p.keys() {
        let _ = (p.get(key), p.typed(key), p.get_secret(key));
    }
    let _ = p.duplicates();
    assert!(diff(&p, &p).is_empty(), "a file differs from itself");

    let value = "a=b: c\\ d\t\u{e9}\u{2603}\n# e ";
    for key in ["fuzz.key", "guid"] {
        let mut edited = p.clone();
        edited.set(key, value);
        let bytes = edited.to_bytes();
        assert!(
            Properties::from_bytes(&bytes).is_ok(),
            "an edited file does not parse"
        );
        // Read back as text: `from_bytes` picks UTF-8 or ISO-8859-1 per file, and an edit that
        // replaces the only bytes that are not UTF-8 changes its pick for the others (the
        // agent reads ISO-8859-1 always, and their bytes are unchanged).
        let again = Properties::parse(&edited.to_string());
        let Ok(again) = again else {
            panic!("an edited file does not parse: {again:?}");
        };
        assert_eq!(
            again.get(key),
            Some(value),
            "a set value does not read back from {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let changed: Vec<String> = diff(&p, &again).into_iter().map(|c| c.key).collect();
        assert!(
            changed.iter().all(|k| k == key),
            "setting {key} changed {changed:?}"
        );
        edited.remove(key);
        let again = Properties::parse(&edited.to_string());
        assert!(
            again.is_ok_and(|a| !a.contains(key)),
            "a removed key is still there"
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEEDS: &[&str] = &[
        "# The agent's settings\nguid=4f3c\\\n  -1b2a\nzone = 1\npod:2\ncluster 3\n\
         keystore.passphrase=s3cr\\u0065t\nhost=10.0.0.1\\\\\n! bang comment\n\
         private.network.device=cloudbr1\r\nworkers=5\rdomr.scripts.dir=scripts/network/domr/kvm",
        "a\\ key\\:x=v\\=w\\\\\n\\#notcomment=1\n  \t\x0c lead=trailing \\\n",
        "k=\u{e9}t\u{e9}\nguest.cpu.mode=host-passthrough\nhypervisor.type=kvm\n",
    ];

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let special = b"\\\n\r\t\x0c =:#!u0Ee\xe9\xc3\xa9".to_vec();
        cs_lab::fuzz::mutated(cs_lab::fuzz::seeds(SEEDS), prop::sample::select(special), 6)
    }

    proptest! {
        #![proptest_config(cs_lab::fuzz::config(512))]

        #[test]
        fn properties_mutated(data in mutated()) {
            properties(&data);
        }

        #[test]
        fn properties_of_random_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
            properties(&data);
        }

        #[test]
        fn properties_of_random_lines(data in "([a-z.]{0,6}|\\\\|\\\\u[0-9a-fA-F]{0,4}|[ =:\t]|\r?\n|\r|#|!|\u{e9}|\u{2603}){0,40}") {
            properties(data.as_bytes());
        }
    }

    #[test]
    fn utf8_files_keep_their_bytes() {
        // Found by the fuzz target: a UTF-8 file with an accent was written back as
        // ISO-8859-1, changing the bytes of a line nobody edited.
        let data = "# caf\u{e9}\nguid=1\n".as_bytes();
        let p = Properties::from_bytes(data).unwrap();
        assert_eq!(p.to_bytes(), data);
        let latin1 = b"# caf\xe9\nguid=1\n";
        assert_eq!(Properties::from_bytes(latin1).unwrap().to_bytes(), latin1);
    }

    #[test]
    fn a_key_without_a_separator_gets_one_when_set() {
        // Found by the fuzz target: `guid` alone on a line, set to `x`, became `guidx`.
        for text in ["guid", "guid\n", "  guid  \n", "gu\\\n  id"] {
            let mut p = Properties::parse(text).unwrap();
            p.set("guid", "x");
            let again = Properties::parse(&p.to_string()).unwrap();
            assert_eq!(again.keys(), ["guid"], "{text:?}");
            assert_eq!(again.get("guid"), Some("x"), "{text:?}");
        }
    }

    #[test]
    fn a_key_appended_after_a_trailing_continuation_stays_its_own() {
        // Found by the fuzz target: `a=b\` on the last line took the appended line in as its
        // continuation, so the new key vanished into `a`'s value.
        for text in ["a=b\\", "a=b\\\n", "a=b\\\r\n", "\\a\\\r"] {
            let before = Properties::parse(text).unwrap();
            let mut p = before.clone();
            p.set("guid", "x");
            let again = Properties::parse(&p.to_string()).unwrap();
            assert_eq!(again.get("guid"), Some("x"), "{text:?}");
            assert_eq!(diff(&before, &again).len(), 1, "{text:?}");
            assert!(p.to_string().starts_with(text));
        }
        for seed in SEEDS {
            properties(seed.as_bytes());
        }
    }
}
