//! `tls_transport`: see `smtps_fuzzing::tls_transport` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtps_fuzzing::tls_transport(data));
