//! Durable state of an eddy node, each part behind an async trait whose contract is written
//! down (`contract.rs`): functions, their immutable numbered versions and the component bytes
//! they run ([`FunctionStore`]), the admin token's hash ([`TokenStore`]), invocation records
//! and rollups ([`InvocationStore`]), price sheets and budgets ([`CostStore`]), durable queues
//! ([`QueueBackend`]) and cron ticks ([`TickStore`]). [`Stores`] bundles them.
//!
//! The SQLite backend keeps the first four in one file ([`Store`]) and the last two in a
//! second ([`QueueStore`]). `Store`'s inherent methods are synchronous over one connection
//! behind a mutex; its trait implementations run them on tokio's blocking pool.
//!
//! The Postgres backend ([`postgres::PgStores`]) keeps all six in one database that several
//! nodes share.
//!
//! With the feature `conformance`, the module `conformance` is the test suite every backend
//! passes unchanged; `tests/conformance_sqlite.rs` and `tests/conformance_postgres.rs` run it
//! against each.
//!
//! The store knows nothing about HTTP or Wasmtime.

mod access;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod contract;
pub mod copy;
mod cost;
mod error;
mod invocations;
mod members;
pub mod postgres;
pub mod queues;
mod rollups;
mod schema;
mod sqlite;
mod store;
mod types;

pub use contract::{
    AccessStore, ArtifactStore, AuditRecord, ChangeHints, CostStore, FunctionStore,
    InvocationStore, MemberStore, NewAuditEntry, NoHints, NodeBeat, QueueBackend, RelayAction,
    RelayedBroadcast, SealedSecret, SocketRelay, Stores, TickStore, TokenRecord, TokenStore,
};
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
    ScheduleSettings, SecretBinding, VersionConfig, VersionRecord,
};

/// Result of every store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

#[cfg(test)]
mod tests;
