//! A backup's manifest.json, checked as a restore checks it; accepted ones round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_backup::fuzz::manifest(data));
