//! Fuzz target `price_sheet`: see `eddy_parse::fuzzing::price_sheet` for what it feeds and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_parse::fuzzing::price_sheet(data));
