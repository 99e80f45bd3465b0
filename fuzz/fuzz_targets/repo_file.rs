//! An apt, deb822 or yum repository file: parsed losslessly and rewritten.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_repo::fuzz::repo_file(data));
