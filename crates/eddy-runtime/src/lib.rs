//! Runs WebAssembly HTTP components (`wasi:http/proxy`) with hard, per-invocation limits.
//!
//! The runtime owns one Wasmtime [`wasmtime::Engine`] per node: it validates and compiles
//! components (with an on-disk cache of compiled code), pre-links one instance template
//! per deployment, and runs every invocation in a fresh store with its own limits.
//!
//! Architecture invariant: this crate knows nothing about routing, the store (SQLite or
//! Postgres) or the control API. It takes an HTTP request for one deployment and gives back
//! an HTTP response plus an [`InvocationReport`].

mod body;
mod cache;
pub mod compiler;
pub mod destinations;
mod engine;
mod invoke;
pub mod limits;
mod log;
mod meter;
mod outbound;
mod reuse;

pub use body::ResponseBody;
pub use cache::{
    CacheStats, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ensure_private_dir, write_new_private,
};
pub use compiler::{CompileLimits, CompilerCommand};
pub use engine::{DeployError, Prepared, Runtime, RuntimeError};
pub use invoke::{Answer, Deployment, DeploymentSettings, Failure, InvocationReport, Outcome};
pub use limits::{FunctionLimits, OutboundConfig, PoolingConfig, ReuseConfig, RuntimeConfig};
pub use outbound::{AllowRule, InvalidAllowRule, PLATFORM_HOST, Platform};
/// The error of a [`PlatformBody`].
pub use wasmtime_wasi_http::Error as PlatformBodyError;
/// The body type of requests to and answers from [`Platform`].
pub use wasmtime_wasi_http::WasiBody as PlatformBody;
