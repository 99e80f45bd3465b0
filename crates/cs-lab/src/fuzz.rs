//! What the crates' proptest-driven fuzz tests share: their configuration and the mutation of
//! valid seeds (the same bodies run for hours under `cargo fuzz`, see `fuzz/README.md`).

use proptest::prelude::*;

/// `cases` cases, or `FUZZ_CASES` of them (longer runs by hand); failures are not persisted.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid seed with fewer than `edits` edits: bytes (drawn from `bytes`) replaced, inserted
/// or removed, or the end cut.
pub fn mutated(
    seeds: Vec<Vec<u8>>,
    bytes: impl Strategy<Value = u8>,
    edits: usize,
) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<usize>(), 0u8..4, bytes), 0..edits),
    )
        .prop_map(|(mut seed, edits)| {
            for (at, op, b) in edits {
                let i = at % (seed.len() + 1);
                match op {
                    0 if i < seed.len() => seed[i] = b,
                    1 => seed.insert(i, b),
                    2 if i < seed.len() => {
                        seed.remove(i);
                    }
                    3 => seed.truncate(i),
                    _ => {}
                }
            }
            seed
        })
}

/// Text seeds as bytes, for [`mutated`].
pub fn seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}
