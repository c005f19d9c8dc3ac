//! Fuzz target `api_bodies`: see `eddy_parse::fuzzing::api_bodies` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::api_bodies(data));
