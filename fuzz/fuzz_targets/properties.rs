//! agent.properties: read then written unchanged, edits read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_agent::fuzz::properties(data));
