//! A whole conversation of the wire client with a server sending these bytes (first byte: what the client does).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_backup::fuzz::wire_conversation(data));
