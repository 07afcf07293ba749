//! `data_decoder`: see `smtps_fuzzing::data_decoder` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtps_fuzzing::data_decoder(data));
