//! Fuzz target `manifest`: see `eddy_parse::fuzzing::manifest` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::manifest(data));
