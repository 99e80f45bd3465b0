//! The wire client's packet parsers: handshake, OK, error and EOF packets, column definitions, rows.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_backup::fuzz::wire_packets(data));
