//! An upgrade script split as CloudStack's ScriptRunner splits it, then pointed at scratch schemas.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cs_rehearse::fuzz::script(data));
