//! Durable state of an eddy node: functions, their immutable numbered versions, content-addressed
//! component bytes, the admin token hash and invocation records, kept in one SQLite file;
//! and durable queues, in a second file ([`QueueStore`]).
//!
//! The store knows nothing about HTTP or Wasmtime. Its API is synchronous over one connection
//! behind a mutex; async callers wrap calls in `tokio::task::spawn_blocking`.

mod cost;
mod error;
mod invocations;
pub mod queues;
mod rollups;
mod schema;
mod store;
mod types;

pub use cost::BudgetRecord;
pub use error::StoreError;
pub use queues::{
    Claimed, ConsumerSettings, NewMessage, PeekedMessage, Published, QueueCounts, QueueLimits,
    QueueRecord, QueueStore, Settle,
};
pub use store::{Store, component_digest};
pub use types::{
    FunctionRecord, INVOCATION_RETENTION_MS, INVOCATIONS_PER_FUNCTION_MAX, InvocationRecord,
    LatencyHistogram, Missed, NewInvocation, NewVersion, Overlap, Retention, ReuseSettings, Rollup,
    ScheduleSettings, VersionConfig, VersionRecord,
};

/// Result of every store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

#[cfg(test)]
mod tests;
