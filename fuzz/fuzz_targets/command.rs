//! `command`: see `smtps_fuzzing::command` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtps_fuzzing::command(data));
