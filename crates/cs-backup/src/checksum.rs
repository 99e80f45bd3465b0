//! The per-table checksum: order-independent, computed the same way from live rows and from
//! dump files while they stream.
//!
//! A row is hashed over its stored (non-generated) columns in table order, each value being
//! the bytes the server's text protocol gives over a `utf8mb4` connection with
//! `time_zone = '+00:00'` (numbers and dates as text, strings in UTF-8, binary columns raw).
//! The table's checksum is the wrapping sum of the row hashes, so it is independent of row
//! order: chunks dumped in parallel combine by addition and tables without a primary key need
//! no ordering.
//!
//! Three row hashes exist, named in the manifest ([`Algorithm::name`]):
//! * `rowsum-xxh3-v3` (written by this version): XXH3-64 (seed 0) of the row as the text
//!   protocol's row packet carries it: per value `0xFB` for NULL, else the length as a
//!   length-encoded integer in its shortest form (one byte below 251, else `0xFC` + 2 bytes,
//!   `0xFD` + 3, `0xFE` + 8, little-endian) and the bytes. Summed modulo 2^64, 16 hex digits.
//!   A row read by the crate's streaming client is hashed in the packet as received, without
//!   being copied. An accidental difference goes unnoticed with a chance of about 2^-64; the
//!   sum is not meant to resist deliberate tampering (the files' SHA-256 is).
//! * `rowsum-xxh64-v2`: XXH64 (seed 0) of the encoding `0xFF` for NULL, else `0x01`, the
//!   length as 8 bytes little-endian, and the bytes; summed modulo 2^64. Still verified.
//! * `rowsum-sha256-v1`: the first 16 bytes of SHA-256 of the v2 encoding read as a
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
    /// `rowsum-xxh3-v3`.
    Xxh3,
}

impl Algorithm {
    /// What new backups use.
    pub(crate) const CURRENT: Algorithm = Algorithm::Xxh3;

    /// Every algorithm this crate verifies, newest first.
    pub(crate) const ALL: [Algorithm; 3] = [Algorithm::Xxh3, Algorithm::Xxh64, Algorithm::Sha256];

    /// The name recorded in manifests.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "rowsum-sha256-v1",
            Algorithm::Xxh64 => "rowsum-xxh64-v2",
            Algorithm::Xxh3 => "rowsum-xxh3-v3",
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
            Algorithm::Xxh3 => {
                let digest = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    scratch.clear();
                    for v in values {
                        match v {
                            None => scratch.push(0xFB),
                            Some(b) => {
                                push_lenenc(&mut scratch, b.len() as u64);
                                scratch.extend_from_slice(b);
                            }
                        }
                    }
                    let digest = twox_hash::XxHash3_64::oneshot(&scratch);
                    // A row with big values does not keep its memory.
                    if scratch.capacity() > SCRATCH_FLUSH {
                        *scratch = Vec::new();
                    }
                    digest
                });
                self.add_digest(digest);
            }
            Algorithm::Xxh64 => {
                let digest = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    xxh64_row(&mut scratch, values)
                });
                self.add_digest(digest);
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
                self.rows += 1;
            }
        }
    }

    /// Adds one row given as the payload of a text-protocol row packet, which must hold the
    /// stored columns in table order with lengths in their shortest form (the v3 encoding),
    /// and as its `values`, used by the older algorithms.
    pub(crate) fn add_packet<'a>(
        &mut self,
        packet: &[u8],
        values: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) {
        match self.algorithm {
            Algorithm::Xxh3 => self.add_digest(twox_hash::XxHash3_64::oneshot(packet)),
            _ => self.add(values),
        }
    }

    /// Adds a 64-bit row hash.
    fn add_digest(&mut self, digest: u64) {
        self.sum = u128::from((self.sum as u64).wrapping_add(digest));
        self.rows += 1;
    }

    /// Adds another partial checksum (of a different set of rows, same algorithm).
    pub(crate) fn merge(&mut self, other: &RowSum) {
        debug_assert_eq!(
            self.algorithm, other.algorithm,
            "checksums of one algorithm"
        );
        self.sum = match self.algorithm {
            Algorithm::Xxh64 | Algorithm::Xxh3 => {
                u128::from((self.sum as u64).wrapping_add(other.sum as u64))
            }
            Algorithm::Sha256 => self.sum.wrapping_add(other.sum),
        };
        self.rows += other.rows;
    }

    /// Rows added.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The checksum in lower-case hex: 16 digits for v2 and v3, 32 for v1.
    pub(crate) fn hex(&self) -> String {
        match self.algorithm {
            Algorithm::Xxh64 | Algorithm::Xxh3 => format!("{:016x}", self.sum as u64),
            Algorithm::Sha256 => format!("{:032x}", self.sum),
        }
    }
}

thread_local! {
    /// The encoding of the row being hashed, reused from row to row.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends `n` as a length-encoded integer in its shortest form.
pub(crate) fn push_lenenc(out: &mut Vec<u8>, n: u64) {
    if n < 251 {
        out.push(n as u8);
    } else if n < 1 << 16 {
        out.push(0xFC);
        out.extend_from_slice(&n.to_le_bytes()[..2]);
    } else if n < 1 << 24 {
        out.push(0xFD);
        out.extend_from_slice(&n.to_le_bytes()[..3]);
    } else {
        out.push(0xFE);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Rows are encoded into a buffer and hashed in large pieces: feeding XXH64 a few bytes at a
/// time (a 9-byte header, then a short value) costs more in copying than the hash itself.
/// Values of at least this size go to the hash directly, which also bounds the buffer.
const SCRATCH_FLUSH: usize = 1 << 16;

fn xxh64_row<'a>(scratch: &mut Vec<u8>, values: impl IntoIterator<Item = Option<&'a [u8]>>) -> u64 {
    // Most rows fit the buffer and are hashed in one call, which is cheaper than the
    // streaming hasher; a row with big values streams.
    let mut streaming: Option<twox_hash::XxHash64> = None;
    scratch.clear();
    for v in values {
        match v {
            None => scratch.push(0xFF),
            Some(b) => {
                let mut head = [0x01; 9];
                head[1..].copy_from_slice(&(b.len() as u64).to_le_bytes());
                scratch.extend_from_slice(&head);
                if b.len() >= SCRATCH_FLUSH {
                    let h = streaming.get_or_insert_with(|| twox_hash::XxHash64::with_seed(0));
                    h.write(scratch);
                    scratch.clear();
                    h.write(b);
                } else {
                    scratch.extend_from_slice(b);
                    if scratch.len() >= SCRATCH_FLUSH {
                        let h = streaming.get_or_insert_with(|| twox_hash::XxHash64::with_seed(0));
                        h.write(scratch);
                        scratch.clear();
                    }
                }
            }
        }
    }
    match streaming {
        None => twox_hash::XxHash64::oneshot(0, scratch),
        Some(mut h) => {
            h.write(scratch);
            h.finish()
        }
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
        assert_eq!(RowSum::new(Algorithm::Xxh3).hex().len(), 16);
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

    #[test]
    fn version_three_checksums_are_pinned() {
        // Known answers of the reference implementation (`xxhsum -H3`).
        assert_eq!(twox_hash::XxHash3_64::oneshot(b""), 0x2d06_8005_38d3_94c2);
        let hundred: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            twox_hash::XxHash3_64::oneshot(&hundred),
            0x004e_4f92_1a64_bd1c
        );
        // Manifests record these sums; cross-checked with Python's `xxhash` package.
        let a: &[Option<&[u8]>] = &[Some(b"1"), None, Some(b"abc")];
        let b: &[Option<&[u8]>] = &[Some(b""), Some("é".as_bytes())];
        assert_eq!(sum(Algorithm::Xxh3, &[a, b]).hex(), "dc0a1326c8c472d8");
        // Lengths of 300 and 70000 bytes take the 2- and 3-byte length forms.
        let c: &[Option<&[u8]>] = &[Some(&[b'x'; 300]), Some(&[b'y'; 70_000]), None];
        assert_eq!(sum(Algorithm::Xxh3, &[c]).hex(), "429d27c94ad8c975");
    }

    #[test]
    fn a_row_packet_hashes_like_its_values() {
        let big = vec![3u8; 1 << 24];
        for row in [
            &[Some(&b"1"[..]), None, Some(b"")][..],
            &[Some(&[b'x'; 251][..]), Some(&[0u8; 65_536][..])][..],
            &[Some(&big[..]), None][..],
        ] {
            let mut packet = Vec::new();
            for v in row {
                match v {
                    None => packet.push(0xFB),
                    Some(b) => {
                        push_lenenc(&mut packet, b.len() as u64);
                        packet.extend_from_slice(b);
                    }
                }
            }
            for alg in Algorithm::ALL {
                let mut from_packet = RowSum::new(alg);
                from_packet.add_packet(&packet, row.iter().copied());
                assert_eq!(from_packet, sum(alg, &[row]), "{alg:?}");
            }
        }
        for (n, width) in [
            (250u64, 1),
            (251, 3),
            (65_535, 3),
            (65_536, 4),
            ((1 << 24) - 1, 4),
            (1 << 24, 9),
        ] {
            let mut out = Vec::new();
            push_lenenc(&mut out, n);
            assert_eq!(out.len(), width, "{n}");
        }
    }
}
