//! The wire contract of eddy, and the parsers of everything it reads from outside: the
//! control API's request and response bodies (`api`, `responses`), which the node and the
//! CLI both serialize and deserialize with these very types; request paths and targets,
//! `eddy.toml` manifests (which become deploy requests), price sheets, sizes and durations,
//! and the `eddy.local` platform API. They live here, apart from Wasmtime and tokio, so a
//! fuzzer can link them alone (`fuzz/`, docs/fuzzing.md).

pub mod api;
pub mod fuzzing;
pub mod manifest;
pub mod platform;
pub mod responses;
pub mod routes;
pub mod schedule;
pub mod sheets;
pub mod units;
