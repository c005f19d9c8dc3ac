//! Sizes and durations as users type them and as the CLI shows them; the parsing lives in
//! `eddy-parse`, where it is fuzzed.

pub use eddy_parse::units::*;
