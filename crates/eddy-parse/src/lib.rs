//! The parsers of everything eddy reads from outside: request paths and targets, `eddy.toml`
//! manifests, price sheets, sizes and durations, the `eddy.local` platform API and the control
//! API's JSON bodies. They live here, apart from Wasmtime and tokio, so a fuzzer can link
//! them alone (`fuzz/`, docs/fuzzing.md); the node and the CLI use these very functions.

pub mod api;
pub mod fuzzing;
pub mod manifest;
pub mod platform;
pub mod routes;
pub mod schedule;
pub mod sheets;
pub mod units;
