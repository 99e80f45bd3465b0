//! The per-table checksum: order-independent, computed the same way from live rows and from
//! dump files while they stream.
//!
//! A row is encoded canonically, column by column in table order over the stored
//! (non-generated) columns: `0xFF` for NULL, else `0x01`, the value's length as 8 bytes
//! little-endian, and the value's bytes as the server's text protocol gives them over a
//! `utf8mb4` connection with `time_zone = '+00:00'` (numbers and dates as text, strings in
//! UTF-8, binary columns raw). The table's checksum is the wrapping sum of the row hashes, so
//! it is independent of row order: chunks dumped in parallel combine by addition and tables
//! without a primary key need no ordering.
//!
//! Two row hashes exist, named in the manifest ([`Algorithm::name`]):
//! * `rowsum-xxh64-v2` (written by this version): XXH64 (seed 0) of the encoding, summed
//!   modulo 2^64, 16 hex digits. An accidental difference goes unnoticed with a chance of
//!   about 2^-64 (negligible, as 2^-128 is for the first version), and it costs a fraction of
//!   SHA-256's CPU time, which matters because every row is hashed on the dump's and on the
//!   restore's critical path. It is not meant to resist deliberate tampering.
//! * `rowsum-sha256-v1`: the first 16 bytes of SHA-256 of the encoding read as a
//!   little-endian integer, summed modulo 2^128, 32 hex digits. Still verified.

use std::hash::Hasher;

use sha2::{Digest, Sha256};

/// A row hash, as named in a manifest's `checksum` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// `rowsum-sha256-v1`.
    Sha256,
    /// `rowsum-xxh64-v2`.
    Xxh64,
}

impl Algorithm {
    /// What new backups use.
    pub(crate) const CURRENT: Algorithm = Algorithm::Xxh64;

    /// Every algorithm this crate verifies, newest first.
    pub(crate) const ALL: [Algorithm; 2] = [Algorithm::Xxh64, Algorithm::Sha256];

    /// The name recorded in manifests.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "rowsum-sha256-v1",
            Algorithm::Xxh64 => "rowsum-xxh64-v2",
        }
    }

    /// The algorithm a manifest names, `None` for one this crate does not know.
    pub(crate) fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A running table checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSum {
    algorithm: Algorithm,
    sum: u128,
    rows: u64,
}

impl Default for RowSum {
    fn default() -> Self {
        RowSum::new(Algorithm::CURRENT)
    }
}

impl RowSum {
    /// An empty checksum computed with `algorithm`.
    pub(crate) fn new(algorithm: Algorithm) -> RowSum {
        RowSum {
            algorithm,
            sum: 0,
            rows: 0,
        }
    }

    /// Adds one row given as its stored column values in table order.
    pub(crate) fn add<'a>(&mut self, values: impl IntoIterator<Item = Option<&'a [u8]>>) {
        match self.algorithm {
            Algorithm::Xxh64 => {
                let digest = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    xxh64_row(&mut scratch, values)
                });
                self.sum = u128::from((self.sum as u64).wrapping_add(digest));
            }
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                for v in values {
                    match v {
                        None => h.update([0xFF]),
                        Some(b) => {
                            h.update([0x01]);
                            h.update((b.len() as u64).to_le_bytes());
                            h.update(b);
                        }
                    }
                }
                let digest = h.finalize();
                let mut first = [0u8; 16];
                first.copy_from_slice(&digest[..16]);
                self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
            }
        }
        self.rows += 1;
    }

    /// Adds another partial checksum (of a different set of rows, same algorithm).
    pub(crate) fn merge(&mut self, other: &RowSum) {
        debug_assert_eq!(
            self.algorithm, other.algorithm,
            "checksums of one algorithm"
        );
        self.sum = match self.algorithm {
            Algorithm::Xxh64 => u128::from((self.sum as u64).wrapping_add(other.sum as u64)),
            Algorithm::Sha256 => self.sum.wrapping_add(other.sum),
        };
        self.rows += other.rows;
    }

    /// Rows added.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The checksum in lower-case hex: 16 digits for v2, 32 for v1.
    pub(crate) fn hex(&self) -> String {
        match self.algorithm {
            Algorithm::Xxh64 => format!("{:016x}", self.sum as u64),
            Algorithm::Sha256 => format!("{:032x}", self.sum),
        }
    }
}

thread_local! {
    /// The encoding of the row being hashed, reused from row to row.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows are encoded into a buffer and hashed in large pieces: feeding XXH64 a few bytes at a
/// time (a 9-byte header, then a short value) costs more in copying than the hash itself.
/// Values of at least this size go to the hash directly, which also bounds the buffer.
const SCRATCH_FLUSH: usize = 1 << 16;

fn xxh64_row<'a>(scratch: &mut Vec<u8>, values: impl IntoIterator<Item = Option<&'a [u8]>>) -> u64 {
    let mut h = twox_hash::XxHash64::with_seed(0);
    scratch.clear();
    for v in values {
        match v {
            None => scratch.push(0xFF),
            Some(b) => {
                let mut head = [0x01; 9];
                head[1..].copy_from_slice(&(b.len() as u64).to_le_bytes());
                scratch.extend_from_slice(&head);
                if b.len() >= SCRATCH_FLUSH {
                    h.write(scratch);
                    scratch.clear();
                    h.write(b);
                } else {
                    scratch.extend_from_slice(b);
                    if scratch.len() >= SCRATCH_FLUSH {
                        h.write(scratch);
                        scratch.clear();
                    }
                }
            }
        }
    }
    h.write(scratch);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(algorithm: Algorithm, rows: &[&[Option<&[u8]>]]) -> RowSum {
        let mut s = RowSum::new(algorithm);
        for r in rows {
            s.add(r.iter().copied());
        }
        s
    }

    #[test]
    fn order_independent_and_mergeable() {
        let a: &[Option<&[u8]>] = &[Some(b"1"), None];
        let b: &[Option<&[u8]>] = &[Some(b"2"), Some(b"")];
        for alg in Algorithm::ALL {
            let ab = sum(alg, &[a, b]);
            assert_eq!(ab, sum(alg, &[b, a]));
            let mut merged = sum(alg, &[a]);
            merged.merge(&sum(alg, &[b]));
            assert_eq!(merged, ab);
            assert_eq!(ab.rows(), 2);
        }
    }

    #[test]
    fn null_empty_and_boundaries_differ() {
        let null: &[Option<&[u8]>] = &[None];
        let empty: &[Option<&[u8]>] = &[Some(b"")];
        let ab_c: &[Option<&[u8]>] = &[Some(b"ab"), Some(b"c")];
        let a_bc: &[Option<&[u8]>] = &[Some(b"a"), Some(b"bc")];
        for alg in Algorithm::ALL {
            assert_ne!(sum(alg, &[null]), sum(alg, &[empty]));
            assert_ne!(sum(alg, &[ab_c]), sum(alg, &[a_bc]));
            // Duplicate rows count twice (no XOR cancellation).
            assert_ne!(sum(alg, &[empty, empty]), RowSum::new(alg));
        }
    }

    #[test]
    fn names_round_trip_and_hex_widths_differ() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("rowsum-md5-v0"), None);
        assert_eq!(RowSum::new(Algorithm::Xxh64).hex().len(), 16);
        assert_eq!(RowSum::new(Algorithm::Sha256).hex().len(), 32);
    }

    #[test]
    fn version_one_checksums_are_unchanged() {
        // Backups written before v2 must keep verifying: a known answer pins v1.
        let row: &[Option<&[u8]>] = &[Some(b"1"), None, Some(b"abc")];
        let mut h = Sha256::new();
        h.update([0x01]);
        h.update(1u64.to_le_bytes());
        h.update(b"1");
        h.update([0xFF, 0x01]);
        h.update(3u64.to_le_bytes());
        h.update(b"abc");
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        assert_eq!(
            sum(Algorithm::Sha256, &[row]).hex(),
            format!("{:032x}", u128::from_le_bytes(first))
        );
    }

    fn xxh64(data: &[u8]) -> u64 {
        twox_hash::XxHash64::oneshot(0, data)
    }

    #[test]
    fn version_two_is_xxh64_with_seed_zero() {
        // Known answers of the reference C implementation (`xxhsum -H1`).
        assert_eq!(xxh64(b""), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(&[42]), 0x0a9e_dece_beb0_3ae4);
        assert_eq!(xxh64(b"Hello, world!\0"), 0x7b06_c531_ea43_e89f);
        let hundred: Vec<u8> = (0..100u8).collect();
        assert_eq!(xxh64(&hundred), 0x6ac1_e580_3216_6597);
    }

    #[test]
    fn version_two_checksums_are_pinned() {
        // Manifests record these sums: a change here breaks every existing backup.
        let a: &[Option<&[u8]>] = &[Some(b"1"), None, Some(b"abc")];
        let b: &[Option<&[u8]>] = &[Some(b""), Some("é".as_bytes())];
        // Cross-checked with Python's `xxhash` package.
        assert_eq!(sum(Algorithm::Xxh64, &[a, b]).hex(), "9588e8787070e757");
    }

    #[test]
    fn big_values_hash_like_the_plain_encoding() {
        let big = vec![7u8; SCRATCH_FLUSH * 2 + 5];
        let mid = vec![9u8; SCRATCH_FLUSH - 3];
        let row: &[Option<&[u8]>] = &[Some(b"x"), Some(&big), None, Some(&mid), Some(&mid)];
        let mut plain = Vec::new();
        for v in row {
            match v {
                None => plain.push(0xFF),
                Some(b) => {
                    plain.push(0x01);
                    plain.extend_from_slice(&(b.len() as u64).to_le_bytes());
                    plain.extend_from_slice(b);
                }
            }
        }
        let mut scratch = Vec::new();
        assert_eq!(xxh64_row(&mut scratch, row.iter().copied()), xxh64(&plain));
        assert!(scratch.capacity() < 4 * SCRATCH_FLUSH);
    }
}
