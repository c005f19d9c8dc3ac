//! Fuzz target `units`: see `eddy_parse::fuzzing::units` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::units(data));
