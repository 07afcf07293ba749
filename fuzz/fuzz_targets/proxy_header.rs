//! `proxy_header`: see `smtps_fuzzing::proxy_header` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtps_fuzzing::proxy_header(data));
