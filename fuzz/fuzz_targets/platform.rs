//! Fuzz target `platform`: see `eddy_parse::fuzzing::platform` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::platform(data));
