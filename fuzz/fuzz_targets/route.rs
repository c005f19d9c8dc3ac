//! Fuzz target `route`: see `eddy_parse::fuzzing::route` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::route(data));
