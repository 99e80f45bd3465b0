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
    let mut h = Xxh64::new();
    scratch.clear();
    for v in values {
        match v {
            None => scratch.push(0xFF),
            Some(b) => {
                let mut head = [0x01; 9];
                head[1..].copy_from_slice(&(b.len() as u64).to_le_bytes());
                scratch.extend_from_slice(&head);
                if b.len() >= SCRATCH_FLUSH {
                    h.update(scratch);
                    scratch.clear();
                    h.update(b);
                } else {
                    scratch.extend_from_slice(b);
                    if scratch.len() >= SCRATCH_FLUSH {
                        h.update(scratch);
                        scratch.clear();
                    }
                }
            }
        }
    }
    h.update(scratch);
    h.digest()
}

const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

/// Streaming XXH64 with seed 0, as specified by the xxHash project (the same function as
/// `xxhsum -H1` and the content checksum of zstd frames).
struct Xxh64 {
    acc: [u64; 4],
    total: u64,
    buf: [u8; 32],
    buffered: usize,
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(PRIME64_2))
        .rotate_left(31)
        .wrapping_mul(PRIME64_1)
}

fn merge_round(h: u64, acc: u64) -> u64 {
    (h ^ round(0, acc))
        .wrapping_mul(PRIME64_1)
        .wrapping_add(PRIME64_4)
}

impl Xxh64 {
    fn new() -> Xxh64 {
        Xxh64 {
            acc: [
                PRIME64_1.wrapping_add(PRIME64_2),
                PRIME64_2,
                0,
                0u64.wrapping_sub(PRIME64_1),
            ],
            total: 0,
            buf: [0; 32],
            buffered: 0,
        }
    }

    fn stripe(acc: &mut [u64; 4], s: &[u8]) {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = round(*a, read_u64(&s[i * 8..]));
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buffered + data.len() < 32 {
            self.buf[self.buffered..self.buffered + data.len()].copy_from_slice(data);
            self.buffered += data.len();
            return;
        }
        if self.buffered > 0 {
            let take = 32 - self.buffered;
            self.buf[self.buffered..].copy_from_slice(&data[..take]);
            let buf = self.buf;
            Self::stripe(&mut self.acc, &buf);
            data = &data[take..];
            self.buffered = 0;
        }
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            Self::stripe(&mut self.acc, s);
        }
        let rest = stripes.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    fn digest(&self) -> u64 {
        let [a, b, c, d] = self.acc;
        let mut h = if self.total >= 32 {
            let h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            [a, b, c, d].into_iter().fold(h, merge_round)
        } else {
            PRIME64_5
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.buffered];
        while rest.len() >= 8 {
            h ^= round(0, read_u64(rest));
            h = h
                .rotate_left(27)
                .wrapping_mul(PRIME64_1)
                .wrapping_add(PRIME64_4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let mut w = [0u8; 4];
            w.copy_from_slice(&rest[..4]);
            h ^= u64::from(u32::from_le_bytes(w)).wrapping_mul(PRIME64_1);
            h = h
                .rotate_left(23)
                .wrapping_mul(PRIME64_2)
                .wrapping_add(PRIME64_3);
            rest = &rest[4..];
        }
        for &byte in rest {
            h ^= u64::from(byte).wrapping_mul(PRIME64_5);
            h = h.rotate_left(11).wrapping_mul(PRIME64_1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(PRIME64_2);
        h ^= h >> 29;
        h = h.wrapping_mul(PRIME64_3);
        h ^ (h >> 32)
    }
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
        let mut h = Xxh64::new();
        h.update(data);
        h.digest()
    }

    #[test]
    fn xxh64_matches_the_reference_implementation() {
        // Known answers of the C implementation (seed 0).
        assert_eq!(xxh64(b""), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(&[42]), 0x0a9e_dece_beb0_3ae4);
        assert_eq!(xxh64(b"Hello, world!\0"), 0x7b06_c531_ea43_e89f);
        let hundred: Vec<u8> = (0..100u8).collect();
        assert_eq!(xxh64(&hundred), 0x6ac1_e580_3216_6597);
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn xxh64_streams_like_one_shot(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut h = Xxh64::new();
            let mut at = 0;
            for c in cuts {
                h.update(&data[at..c]);
                at = c;
            }
            h.update(&data[at..]);
            proptest::prop_assert_eq!(h.digest(), xxh64(&data));
        }
    }
}
