//! A dump file as the restore reads it: statements, schema names, INSERT rows, keys.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_backup::fuzz::dump_reader(data));
