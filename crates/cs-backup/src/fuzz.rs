//! Fuzz target bodies: the crate's parsers of untrusted input, fed arbitrary bytes. Each
//! function panics only when a parser breaks a rule (a panic inside it, a hang, an
//! allocation past its cap, a round trip that is not one); malformed input must come back as
//! an error.
//!
//! The same bodies run under `cargo fuzz` (the `fuzz/` crate at the root of the repository,
//! with the `fuzzing` feature) and as proptest-driven tests on stable in `cargo test` (the
//! tests at the end of this file). Not part of the crate's API.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::manifest::Manifest;
use crate::sql;
use crate::wire::{self, Conn};

/// The packet parsers of the wire client on one payload: the handshake, OK, error and EOF
/// packets, column definitions and text rows (the first byte gives the number of columns).
pub fn wire_packets(data: &[u8]) {
    wire::fuzz_parse_packet(data);
}

/// A whole conversation of the wire client with a server that sends `data[1..]` and then
/// closes: the login, queries and their result sets, a prepared statement and a bulk insert,
/// or a `LOAD DATA LOCAL` exchange, as `data[0]` chooses. The client must end with an answer
/// or an error, and never hold more than its packet cap.
pub fn wire_conversation(data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    let Ok((mut conn, server)) = serve(script.to_vec()) else {
        return;
    };
    // Errors are what a hostile server is answered with; only panics count.
    let _ = wire::fuzz_conversation(&mut conn, mode);
    drop(conn);
    let _ = server.join();
}

/// A client connection to a server that sends `script` at once, then ends its side and reads
/// whatever the client sends until the client hangs up.
///
/// The connection is one end of a Unix socket pair handed to the client as its `TcpStream`
/// (reads, writes and timeouts behave the same): no port per run, so a fuzzer running
/// thousands a second never runs out of them.
fn serve(script: Vec<u8>) -> std::io::Result<(Conn, std::thread::JoinHandle<()>)> {
    let (client, mut server) = UnixStream::pair()?;
    // A bound on each read: a client waiting past it is reported as a hang.
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let handle = std::thread::spawn(move || {
        let _ = server.write_all(&script);
        let _ = server.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        while matches!(server.read(&mut sink), Ok(n) if n > 0) {}
    });
    let stream = TcpStream::from(OwnedFd::from(client));
    Ok((Conn::over(stream), handle))
}

/// A backup's `manifest.json`: parsed and checked as a restore does; a manifest that passes
/// must print to JSON that parses back to the same manifest.
pub fn manifest(data: &[u8]) {
    let path = Path::new("manifest.json");
    if let Ok(m) = Manifest::parse(path, data) {
        let again = Manifest::parse(path, m.to_json().as_bytes());
        assert_eq!(
            again.ok().as_ref(),
            Some(&m),
            "a manifest that does not round-trip"
        );
    }
}

/// A dump file as the restore reads it: split into statements as the stock `mysql` client
/// does (`DELIMITER`, quotes, comments), each statement looked at for the schemas it names,
/// `INSERT … VALUES` rows converted by the fast paths (to `LOAD DATA` text and to bulk
/// rows) and by the general parser, and `CREATE TABLE` keys split out. Reading through a
/// one-byte buffer must give the same statements as reading through a large one; where a fast
/// path reads the rows, the general parser must read as many.
pub fn dump_reader(data: &[u8]) {
    let whole = statements(BufReader::with_capacity(1 << 16, data));
    let bytewise = statements(BufReader::with_capacity(1, data));
    assert_eq!(
        whole, bytewise,
        "the statements depend on how the file is read"
    );
    for s in &whole {
        dump_statement(&s.text);
    }
}

fn statements(r: impl std::io::BufRead) -> Vec<sql::Statement> {
    let mut split = sql::Splitter::new(r);
    let mut out = Vec::new();
    // Reading from a slice cannot fail.
    while let Ok(Some(s)) = split.next_statement() {
        out.push(s);
    }
    out
}

fn dump_statement(text: &[u8]) {
    let _ = sql::schema_names(text);
    let _ = sql::use_target(text);
    crate::restore::fuzz_statement(text);
    let Some(head) = sql::insert_head(text) else {
        return;
    };
    let columns = head.columns.as_ref().map_or(3, Vec::len);
    // Binary columns: every other one, starting with the second.
    let hex: Vec<bool> = (0..columns).map(|i| i % 2 == 1).collect();
    let general = sql::for_each_row(text, &head, |_| {});
    for bulk in [false, true] {
        let mut out = b"kept".to_vec();
        let fast = if bulk {
            sql::rows_to_bulk(text, &head, &hex, &mut out)
        } else {
            sql::rows_to_tsv(text, &head, &hex, &mut out)
        };
        match fast {
            Some(rows) => assert_eq!(
                general.as_ref().ok(),
                Some(&rows),
                "the fast path (bulk: {bulk}) read rows the general parser does not"
            ),
            None => assert_eq!(out, b"kept", "a fast path that gave up left output behind"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A valid seed with a few edits of any byte.
    fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        cs_lab::fuzz::mutated(seeds, any::<u8>(), 6)
    }

    /// A packet: 3-byte length, sequence number, payload.
    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    }

    fn lenenc(out: &mut Vec<u8>, s: &[u8]) {
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }

    fn handshake() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.6-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"12345678\0");
        p.extend_from_slice(&0xF7FEu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81BFu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&0x1Fu32.to_le_bytes());
        p.extend_from_slice(b"9abcdefghijk\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];
    const EOF: &[u8] = &[0xFE, 0, 0, 2, 0];

    fn column(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "cloud", "t", "t", name, name] {
            lenenc(&mut p, s.as_bytes());
        }
        p.extend_from_slice(&[0x0C, 45, 0, 0, 1, 0, 0xFD, 0, 0, 0, 0, 0]);
        p
    }

    /// A result set of two columns and two rows, its packets numbered from `seq`.
    fn result_set(mut seq: u8) -> Vec<u8> {
        let mut row = Vec::new();
        lenenc(&mut row, b"42");
        row.push(0xFB);
        let mut long = vec![0xFC, 0x2C, 0x01];
        long.extend_from_slice(&[b'x'; 300]);
        lenenc(&mut long, b"");
        let payloads = [
            vec![2],
            column("id"),
            column("Create Table"),
            EOF.to_vec(),
            row,
            long,
            EOF.to_vec(),
        ];
        let mut out = Vec::new();
        for p in payloads {
            out.extend(packet(seq, &p));
            seq = seq.wrapping_add(1);
        }
        out
    }

    fn error_packet(seq: u8) -> Vec<u8> {
        let mut p = vec![0xFF, 0x15, 0x04, b'#'];
        p.extend_from_slice(b"28000Access denied");
        packet(seq, &p)
    }

    /// Whole conversations, one per mode, as a server would send them.
    fn conversations() -> Vec<Vec<u8>> {
        let mut login = handshake_packets();
        login.extend(result_set(1));
        login.extend(packet(1, OK));
        let mut query = vec![1];
        query.extend(result_set(1));
        query.extend(error_packet(1));
        let mut prepare = vec![2];
        let prep = vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        prepare.extend(packet(1, &prep));
        prepare.extend(packet(2, &column("?")));
        prepare.extend(packet(3, EOF));
        prepare.extend(packet(1, &[0, 5, 0, 2, 0, 0, 0]));
        let mut load = vec![3];
        load.extend(packet(1, &[0xFB, b'f']));
        load.extend(packet(4, OK));
        let mut login_load = handshake_packets();
        login_load[0] = 4;
        login_load.extend(packet(1, &[0xFB, b'f']));
        login_load.extend(packet(4, OK));
        vec![login, query, prepare, load, login_load]
    }

    fn handshake_packets() -> Vec<u8> {
        let mut out = vec![0];
        out.extend(packet(0, &handshake()));
        out.extend(packet(2, OK));
        out
    }

    fn packets() -> Vec<Vec<u8>> {
        let mut row = vec![3];
        lenenc(&mut row, b"abc");
        row.push(0xFB);
        row.extend_from_slice(&[0xFC, 3, 0, b'x', b'y', b'z']);
        let mut err = vec![0];
        err.extend_from_slice(&error_packet(0)[4..]);
        let mut col = vec![1];
        col.extend(column("name"));
        vec![
            [&[0][..], &handshake()].concat(),
            row,
            err,
            col,
            [&[0][..], OK].concat(),
            [&[0][..], EOF].concat(),
        ]
    }

    fn sample_manifest() -> Vec<u8> {
        br#"{"format":1,"tool":"cs-backup 0.1.0","engine":"native","options":{"threads":4},
"started":"2026-01-01T00:00:00Z","finished":"2026-01-01T00:01:00Z",
"server":{"version":"10.11.6-MariaDB","vendor":"MariaDB","binlog":null},
"layout":"per-table","checksum":"rowsum-xxh3-v3",
"schemas":[{"name":"cloud","charset":"utf8mb4","collation":"utf8mb4_general_ci",
"cloudstack_version":{"4.18.0.0":"2026-01-01"},
"tables":[{"name":"vm_instance","rows":3,"checksum":"00000000000000ff","files":["cloud/vm_instance.sql"]}],
"views":["v"],"routines":[{"kind":"PROCEDURE","name":"p"}],"triggers":[{"name":"tr","table":"vm_instance"}],
"events":[],"files":{"schema":"cloud/schema.sql","views":null,"routines":null}}],
"files":[{"path":"cloud/schema.sql","size":10,"sha256":"ab"},{"path":"cloud/vm_instance.sql","size":20,"sha256":"cd"},
{"path":"grants/users.sql","size":1,"sha256":"ef"}],
"grants_file":"grants/users.sql","notes":["n"]}"#
            .to_vec()
    }

    fn dumps() -> Vec<Vec<u8>> {
        vec![
            b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n/*M!999999\\- enable the sandbox mode */ \nUSE `cloud`;\nCREATE TABLE `t` (\n  `id` bigint NOT NULL,\n  `b` varbinary(8),\n  `c` text,\n  PRIMARY KEY (`id`),\n  KEY `i_c` (`c`(10)),\n  UNIQUE KEY `u_b` (`b`)\n) ENGINE=InnoDB;\nINSERT INTO `t` (`id`,`b`,`c`) VALUES (1,0x0102,'a\\'b'),(2,NULL,\"x;y\"),(3,'',-1.5e3);\n".to_vec(),
            b"DELIMITER ;;\nCREATE PROCEDURE `p`() BEGIN SELECT 1; SELECT `cloud`.`x`.y FROM `cloud_usage`.`z`; END ;;\nDELIMITER ;\n# comment\nCREATE DATABASE IF NOT EXISTS `cloud` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\nINSERT INTO t VALUES (b'101',X'ff','\\0\\n\\t\\Z'),(0,1,2);\n".to_vec(),
            b"CREATE TABLE `s` (`id` int DEFAULT nextval(`cloud`.`seq`)) /* plain */;\nREPLACE INTO `cloud`.`s` VALUE (1) ;\n".to_vec(),
        ]
    }

    proptest! {
        #![proptest_config(cs_lab::fuzz::config(512))]

        #[test]
        fn wire_packets_of_random_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
            wire_packets(&data);
        }

        #[test]
        fn wire_packets_mutated(data in mutated(packets())) {
            wire_packets(&data);
        }

        #[test]
        fn manifests_mutated(data in mutated(vec![sample_manifest()])) {
            manifest(&data);
        }

        #[test]
        fn manifests_of_random_text(data in "[{}\\[\\]\":,0-9a-z_ ./-]{0,200}") {
            manifest(data.as_bytes());
        }

        #[test]
        fn dumps_of_random_bytes(data in prop::collection::vec(
            prop::sample::select(b"\n\r\t ;'\"`\\/*!#-()0xXbB,NULelimtrDEIMT".to_vec()), 0..300)) {
            dump_reader(&data);
        }

        #[test]
        fn dumps_mutated(data in mutated(dumps())) {
            dump_reader(&data);
        }
    }

    proptest! {
        // A socket pair and a thread per case.
        #![proptest_config(cs_lab::fuzz::config(128))]

        #[test]
        fn wire_conversations_of_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
            wire_conversation(&data);
        }

        #[test]
        fn wire_conversations_mutated(data in mutated(conversations())) {
            wire_conversation(&data);
        }
    }

    #[test]
    fn the_seeds_are_valid() {
        // The mutations start from conversations the client completes: each seed is accepted.
        for (mode, seed) in conversations().into_iter().enumerate() {
            let (mut conn, server) = serve(seed[1..].to_vec()).unwrap();
            let outcome = wire::fuzz_conversation(&mut conn, seed[0]);
            drop(conn);
            server.join().unwrap();
            // Mode 1 ends with the server's refusal of its second query.
            assert!(
                outcome.is_ok()
                    || (mode == 1 && matches!(outcome, Err(wire::WireError::Server(_)))),
                "mode {mode}: {outcome:?}"
            );
        }
        assert!(Manifest::parse(Path::new("m"), &sample_manifest()).is_ok());
        for d in dumps() {
            let s = statements(&d[..]);
            assert!(s.len() >= 2, "{s:?}");
        }
    }
}
