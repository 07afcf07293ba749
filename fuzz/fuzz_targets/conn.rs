//! `conn`: see `smtps_fuzzing::conn` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtps_fuzzing::conn(data));
