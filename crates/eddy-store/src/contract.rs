//! The contracts of the node's durable state: one async trait per area, each method's doc
//! comment saying what it promises. `sqlite.rs` implements them over SQLite, `postgres/`
//! over Postgres for nodes that share their state; the
//! conformance suite (`eddy_store::conformance`, feature `conformance`) checks that an
//! implementation keeps them, and runs unchanged against every backend.
//!
//! The traits are object safe (`async_trait`): a node holds each part as `Arc<dyn Trait>`,
//! bundled in [`Stores`], and hands each of its parts only the ones it uses.
//!
//! # Words the contracts use
//!
//! - **Atomic**: the call's effects are stored whole or not at all. Whatever the call
//!   returns as an error, nothing of it was stored (this holds for every method, atomic or
//!   not: a method that fails stores nothing).
//! - **Committed on return**: once the call returns `Ok`, every later call, on this handle or
//!   another of the same stores, sees its effects, and they survive the node stopping or
//!   dying (the stores opened again, see [`Stores`]). **Synced** promises more: the effects
//!   also survive the machine losing power. Every write of [`QueueBackend`] and
//!   [`TickStore`] is synced; the others are committed on return.
//! - **Linearizable**: concurrent calls on the same stores behave as if each took effect at
//!   one instant between its call and its return. Every method is.
//! - **Reads the clock**: the method takes "now" from the system clock (unix milliseconds)
//!   itself rather than from its caller. Each such place is named in its method's comment;
//!   they are what an injected clock will replace.
//!
//! # Errors
//!
//! Each method names the [`StoreError`] variants that are part of its contract and when it
//! returns them. Besides those, any method may fail because the backend did:
//! `StoreError::Full` (or an error whose [`StoreError::is_full`] is true) when the database or
//! its disk is full, `StoreError::Corrupt` when stored data breaks an invariant, and the
//! backend's own errors (`StoreError::Sqlite`, `StoreError::Postgres`, `StoreError::Io`), or
//! `StoreError::Unavailable` (or an error whose [`StoreError::is_unavailable`] is true) when
//! the database cannot be reached. Then, too, nothing of the call was stored.
//!
//! [`StoreError`]: crate::StoreError
//! [`StoreError::is_full`]: crate::StoreError::is_full
//! [`StoreError::is_unavailable`]: crate::StoreError::is_unavailable
//!
//! # What is not here
//!
//! Compiled code. The node compiles a version's component bytes with Wasmtime and keeps the
//! result in Wasmtime's on-disk compile cache (`eddy-runtime`), which is rebuilt from the
//! bytes when missing. The store holds only the component bytes, by digest.

use std::sync::Arc;

use async_trait::async_trait;

use crate::queues::{
    Claimed, ConsumerSettings, NewMessage, PeekedMessage, Published, QueueCounts, QueueLimits,
    QueueRecord, Settle,
};
use crate::{
    BudgetRecord, FunctionRecord, InvocationRecord, NewInvocation, NewVersion, QueueStore, Result,
    Retention, Rollup, Store, VersionRecord,
};

/// Functions, their immutable numbered versions, which version of each is live, and the
/// component bytes the versions run, stored under their digest.
///
/// A function exists from its first version until [`FunctionStore::remove_function`]; it
/// always has a live version. No two functions' live versions have the same route.
#[async_trait]
pub trait FunctionStore: Send + Sync {
    /// Stores `bytes` under `digest`; a no-op when bytes are stored under `digest` already.
    /// Committed on return.
    ///
    /// `Corrupt` if `digest` is not [`component_digest`] of `bytes` (nothing is stored).
    ///
    /// [`component_digest`]: crate::component_digest
    ///
    /// Bytes no version refers to may be deleted by a later
    /// [`FunctionStore::remove_function`]; prefer passing the bytes to
    /// [`FunctionStore::create_version`], which stores both at once.
    async fn put_component(&self, digest: &str, bytes: Vec<u8>) -> Result<()>;

    /// The bytes stored under `digest`, or `None`.
    ///
    /// `Corrupt` if the stored bytes no longer hash to `digest` (checked on every read).
    async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>>;

    /// Whether bytes are stored under `digest`.
    async fn has_component(&self, digest: &str) -> Result<bool>;

    /// Creates the next version of `new.function` and makes it live; creates the function if
    /// it does not exist. Atomic: the component bytes (if given), the version, the function
    /// and its live pointer are stored together or not at all. Committed on return.
    ///
    /// Versions of a function are numbered 1, 2, 3, … in creation order and a number is
    /// never given twice while the function exists (not after a rollback either; a function
    /// removed and created again starts at 1). Concurrent calls for one function get
    /// distinct numbers. The function's `updated_at_ms` becomes `new.created_at_ms`.
    ///
    /// Errors, each storing nothing:
    /// - `RouteTaken` if `new.config.route` is the live route of another function (a
    ///   function's own earlier route, or a route only non-live versions have, is free);
    /// - `NotFound` if `component_bytes` is `None` and no bytes are stored under
    ///   `new.digest`;
    /// - `Corrupt` if `component_bytes` do not hash to `new.digest`.
    async fn create_version(
        &self,
        new: NewVersion,
        component_bytes: Option<Vec<u8>>,
    ) -> Result<VersionRecord>;

    /// Every function with its live version, sorted by name.
    async fn list_functions(&self) -> Result<Vec<FunctionRecord>>;

    /// The function called `name` with its live version, if it exists.
    async fn function(&self, name: &str) -> Result<Option<FunctionRecord>>;

    /// Every version of `name`, newest (highest number) first.
    ///
    /// `NotFound` (what: "function `NAME`") if there is no such function.
    async fn versions(&self, name: &str) -> Result<Vec<VersionRecord>>;

    /// Version `version` of `name`, if both exist.
    async fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>>;

    /// Makes an existing version of `name` live (rollback, or roll forward); creates no
    /// version. Atomic; committed on return. Returns the function as it now is.
    ///
    /// If the version was live already nothing changes. Otherwise `updated_at_ms` becomes
    /// now: this **reads the clock**.
    ///
    /// Errors, each changing nothing:
    /// - `NotFound` (what: "function `NAME`") if there is no such function, or (what:
    ///   "version N of `NAME`") no such version;
    /// - `RouteTaken` if the version's route is the live route of another function.
    async fn set_live_version(&self, name: &str, version: u32) -> Result<FunctionRecord>;

    /// Deletes the function `name` with its versions, its invocation records and its rollups
    /// (see [`InvocationStore`]), then every component's bytes that those versions referred
    /// to and no remaining version does. Atomic; committed on return. `Ok(false)` if there
    /// was no such function.
    ///
    /// Not deleted: its budget ([`CostStore`]), its schedule's ticks ([`TickStore`]) and
    /// queue consumers naming it ([`QueueBackend`]); the caller removes those.
    async fn remove_function(&self, name: &str) -> Result<bool>;

    /// A number that grows with every change of what is served: each version created, live
    /// version changed (not a call that changed nothing) and function removed, made through
    /// this handle or any other of the same stores (another node's), and that never changes
    /// otherwise; it survives restarts. 0 before the first change. Nodes compare it with
    /// what they last saw to learn, cheaply, that another node changed something.
    async fn generation(&self) -> Result<i64>;
}

/// The hash of the node's admin token. The store keeps what it is given; the caller hashes
/// and compares.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The stored hash, or `None` if none was ever set.
    async fn admin_token_hash(&self) -> Result<Option<String>>;

    /// Stores `hash`, replacing any earlier one. Committed on return.
    async fn set_admin_token_hash(&self, hash: &str) -> Result<()>;

    /// Stores `hash` only if no hash is stored: `true` if it was stored, `false` (changing
    /// nothing) if one was already. Of any number of concurrent calls on a store without a
    /// hash, exactly one stores its own: how the first node of a cluster creates the token
    /// once. Committed on return.
    async fn init_admin_token_hash(&self, hash: &str) -> Result<bool>;
}

/// Invocation records (one per request: metadata and captured logs) and per-function,
/// per-minute rollups of invocations, which cost is computed from.
///
/// Records and rollups belong to a function: writes for a function that does not exist are
/// dropped silently (it was removed while the requests ran), and
/// [`FunctionStore::remove_function`] deletes them.
#[async_trait]
pub trait InvocationStore: Send + Sync {
    /// Appends `batch`, then applies `retention`. Atomic; committed on return.
    ///
    /// Each stored record gets an id greater than every id given before (across functions
    /// and calls, and never reused even after records are deleted), in batch order. Records
    /// of functions that do not exist are dropped.
    ///
    /// Retention: keeps the newest `retention.invocations_per_function_max` records of each
    /// function in the batch, and deletes every record, of any function, whose `at_ms` is
    /// before `now - retention.retention_ms`, where `now` is the later of the clock and the
    /// newest `at_ms` in the batch: this **reads the clock**. An empty batch does nothing.
    async fn append_invocations(
        &self,
        batch: Vec<NewInvocation>,
        retention: Retention,
    ) -> Result<()>;

    /// Deletes every record whose `at_ms` is before `now - retention.retention_ms` (for
    /// functions that had no traffic to trigger [`InvocationStore::append_invocations`]'s
    /// retention); how many. **Reads the clock**. Committed on return.
    async fn expire_invocations(&self, retention: Retention) -> Result<usize>;

    /// Records of `function` with `id > after_id`, oldest (lowest id) first, at most `limit`.
    /// Empty if the function does not exist. A cursor: pass the last id seen to get what
    /// came after it.
    async fn invocations_after(
        &self,
        function: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>>;

    /// The newest `limit` records of `function`, oldest first. Empty if the function does
    /// not exist.
    async fn invocations_tail(&self, function: &str, limit: usize)
    -> Result<Vec<InvocationRecord>>;

    /// Adds each `(function, minute_ms, totals)` to the stored rollup of that function and
    /// minute with [`Rollup::merge`] (a missing one counts as empty), then deletes every
    /// function's rollups of minutes before `cutoff_ms`. Atomic; committed on return.
    /// Rollups of functions that do not exist are dropped.
    async fn add_rollups(&self, rollups: Vec<(String, i64, Rollup)>, cutoff_ms: i64) -> Result<()>;

    /// The stored rollups of `function` from `since_minute_ms` on, oldest minute first.
    async fn rollups(&self, function: &str, since_minute_ms: i64) -> Result<Vec<(i64, Rollup)>>;

    /// Every function's stored rollups from `since_minute_ms` on, whole, as `(function,
    /// minute_ms, rollup)` ordered by function then minute: what [`InvocationStore::rollups`]
    /// gives each function, in one read (the console's overview of every function).
    async fn every_rollup(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>>;

    /// Each node's share of `function`'s stored rollups from `since_minute_ms` on, as
    /// `(node, totals)` sorted by node, with only the counts of [`Rollup::share`] filled in.
    /// The shares sum to the rollups' totals of those counts: each added rollup counts once,
    /// for the node that added it. A store only one node uses (SQLite) answers one share
    /// named `""` (that node's), if there is anything to share.
    async fn rollup_shares(
        &self,
        function: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, Rollup)>>;

    /// What [`InvocationStore::cost_totals`] returns, for each node's share: `(node,
    /// function, since_minute_ms, totals)` per node, function and memory limit, ordered that
    /// way; the shares of each function and memory limit sum to its cost totals. A store only
    /// one node uses (SQLite) answers its cost totals under the node `""`.
    async fn cost_shares(&self, since_minute_ms: i64)
    -> Result<Vec<(String, String, i64, Rollup)>>;

    /// Every function's stored rollups from `since_minute_ms` on as `(function, minute_ms,
    /// rollup)`, ordered by minute then function, with only what prices them filled in:
    /// `invocations`, `wall_us`, `cpu_us`, `billed_ms` and `memory_limit_bytes` (the other
    /// fields are their defaults).
    async fn cost_minutes(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>>;

    /// What [`InvocationStore::cost_minutes`] returns, summed per function and memory limit
    /// (prices are linear in each): one `(function, since_minute_ms, totals)` per pair,
    /// ordered by function then `memory_limit_bytes`.
    async fn cost_totals(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>>;
}

/// User price sheets (TOML text) and budgets (JSON settings plus the alert state of the
/// month). The node parses both; the store keeps the text as given.
#[async_trait]
pub trait CostStore: Send + Sync {
    /// Adds the price sheet `name`, or replaces its text. Committed on return.
    async fn put_price_sheet(&self, name: &str, toml: &str, now_ms: i64) -> Result<()>;

    /// Every price sheet as `(name, toml)`, sorted by name.
    async fn price_sheets(&self) -> Result<Vec<(String, String)>>;

    /// Removes the price sheet `name`; `false` if there was none. Committed on return.
    async fn remove_price_sheet(&self, name: &str) -> Result<bool>;

    /// Adds the budget of `scope` (`""`: the whole node; else a function name), or replaces
    /// its settings. Either way its alert state starts afresh: `alerted_month` empty and
    /// `alerted_percent` 0. Committed on return.
    async fn put_budget(&self, scope: &str, settings: &str) -> Result<()>;

    /// Every budget, sorted by scope (so the node's, `""`, first).
    async fn budgets(&self) -> Result<Vec<BudgetRecord>>;

    /// The budget of `scope`, if there is one.
    async fn budget(&self, scope: &str) -> Result<Option<BudgetRecord>>;

    /// Removes the budget of `scope`; `false` if there was none. Committed on return.
    async fn remove_budget(&self, scope: &str) -> Result<bool>;

    /// Records that alerts up to `percent` are sent for `scope` in `month`, if the budget's
    /// settings are still `settings` (as the caller read them) and no alert of `percent`
    /// or more is recorded for `month` yet, nor any for a later month (months `YYYY-MM`
    /// compare as text; a node whose clock is still in the last month changes nothing): a budget put again meanwhile keeps its fresh
    /// alert state, and a missing one stays missing. `true` when this call recorded it.
    /// Atomic (compare and set): of callers racing with the same alert (the nodes of a
    /// cluster), exactly one gets `true`, and only it sends the alert. Committed on return.
    async fn set_budget_alerted(
        &self,
        scope: &str,
        settings: &str,
        month: &str,
        percent: f64,
    ) -> Result<bool>;
}

/// Durable queues: each queue `NAME` comes with its dead-letter queue `NAME-dlq`; a queue
/// may have one consumer binding; messages are published, claimed for a delivery under a
/// lease, and settled.
///
/// A message is *ready* when it is not leased, or its lease has run out, and its visible
/// time has passed; *delayed* when not leased and its visible time has not passed (a retry
/// waiting out its backoff); *in flight* when leased. Whether a time "has passed" **reads
/// the clock**.
///
/// Every write is atomic and synced on return.
///
/// # Opening
///
/// Opening the stores (after a restart) makes every message that was in flight ready
/// again, except one whose attempt count reached its queue consumer's `max_attempts`: it
/// moves to the consumer's `dead_letter` queue, keeping its id and attempts, and counts as a
/// failed attempt and a dead letter. An attempt that may have run counts.
///
/// Where several nodes share the stores (Postgres), "in flight" means held by the node
/// opening them (the same node name as before its restart); the leases of other nodes are
/// left to run out.
///
/// The consumer, not the store, decides when a delivery was the last one: it settles
/// [`Settle::DeadLetter`] instead of [`Settle::Retry`].
#[async_trait]
pub trait QueueBackend: Send + Sync {
    /// Creates queue `name` and its dead-letter queue `name-dlq`, both empty, without a
    /// consumer, with `idempotency_window_ms`. `created_at_ms` is now: **reads the clock**.
    ///
    /// `AlreadyExists` if either name is a queue.
    async fn create_queue(&self, name: &str, idempotency_window_ms: u64) -> Result<QueueRecord>;

    /// Deletes queue `name` with its dead-letter queue, their messages, consumer bindings,
    /// idempotency keys and counters; `Ok(false)` if there is no such queue. A queue created
    /// again under the name starts empty.
    ///
    /// `Conflict` if `name` is a dead-letter queue (it goes with its queue), or if another
    /// queue's consumer dead-letters into `name` or its dead-letter queue.
    async fn delete_queue(&self, name: &str) -> Result<bool>;

    /// Every queue, dead-letter queues included, sorted by name.
    async fn list_queues(&self) -> Result<Vec<QueueRecord>>;

    /// The queue called `name`, if it exists.
    async fn queue(&self, name: &str) -> Result<Option<QueueRecord>>;

    /// Binds a consumer to `queue`, replacing any binding it had.
    ///
    /// `NotFound` if `queue` or `settings.dead_letter` is not a queue; `Conflict` if they
    /// are the same queue.
    async fn set_consumer(&self, queue: &str, settings: ConsumerSettings) -> Result<()>;

    /// Removes `queue`'s consumer binding; `Ok(false)` if it had none. Its messages stay.
    ///
    /// `NotFound` if `queue` is not a queue.
    async fn remove_consumer(&self, queue: &str) -> Result<bool>;

    /// Enqueues `messages` on `queue`, all or none, ready now (**reads the clock**), in the
    /// order given. Returns what happened to each, in order.
    ///
    /// A message whose idempotency key was published on this queue (not another) less than
    /// the queue's `idempotency_window_ms` ago, measured from that first publish, is not
    /// enqueued: it is answered `duplicate` with the first message's id. A window of 0
    /// remembers nothing. Every other message gets an id no other message of the stores has
    /// had, which it keeps through dead-lettering and redrive.
    ///
    /// Errors, each enqueuing nothing:
    /// - `NotFound` if `queue` is not a queue;
    /// - `DepthLimit` if the messages would take the queue's depth (ready, delayed and in
    ///   flight) past `limits.depth_max`; its `depth` is the depth before the call;
    /// - `BytesLimit` if their bodies would take the queue's body bytes past
    ///   `limits.bytes_max`; its `bytes` is the bytes before the call.
    async fn publish(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        limits: QueueLimits,
    ) -> Result<Vec<Published>>;

    /// Claims up to `n` ready messages of `queue`, taken in the order they became visible,
    /// then the order they entered the queue. Each is leased until `lease_until_ms` (its
    /// visibility timeout; a lease already over makes it ready again at once), its attempt
    /// count is raised by one and it counts as delivered, in the same commit. The claimed are
    /// returned in the order they entered the queue.
    ///
    /// Also returns, when fewer than `n` were ready, the earliest time a message of the queue
    /// becomes visible (a delayed message's visible time, or a lease's end), or `None` if the
    /// queue is empty.
    ///
    /// An unknown queue has no ready messages: `Ok((vec![], None))`.
    async fn claim(
        &self,
        queue: &str,
        n: u32,
        lease_until_ms: i64,
    ) -> Result<(Vec<Claimed>, Option<i64>)>;

    /// Records how deliveries of messages claimed from `queue` ended. Atomic over the whole
    /// list.
    ///
    /// Each settlement names the lease it settles (the `lease_until_ms` of its claim) and
    /// applies only while the message is still held under that lease, even after it ran
    /// out, as long as no later claim took the message; otherwise (claimed again, purged,
    /// settled already) it is ignored and counts nothing.
    /// - `Ack`: the message is deleted; counts as succeeded.
    /// - `Retry`: it is no longer in flight and becomes visible at `visible_at_ms` (delayed
    ///   until then); `error` becomes its last error; counts as a failed attempt.
    /// - `DeadLetter`: it moves to queue `to`, ready now (**reads the clock**), keeping its id,
    ///   attempts and first publish time, with `error` as its last error; counts as a
    ///   failed attempt and a dead letter of `queue`.
    ///
    /// `NotFound` if a `DeadLetter`'s `to` is not a queue.
    async fn settle(&self, queue: &str, settlements: Vec<Settle>) -> Result<()>;

    /// Up to `limit` messages of `queue`, in the order they entered it (ready, delayed and in
    /// flight alike), without claiming them.
    ///
    /// `NotFound` if `queue` is not a queue.
    async fn peek(&self, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>>;

    /// Deletes every message of `queue` that is not in flight; how many.
    ///
    /// `NotFound` if `queue` is not a queue.
    async fn purge(&self, queue: &str) -> Result<u64>;

    /// Moves every message of `from` (usually a dead-letter queue) that is not in flight to
    /// `to`, in order, ready now (**reads the clock**) with attempts reset to 0, keeping
    /// their ids, first publish times and last errors; how many.
    ///
    /// `NotFound` if `from` or `to` is not a queue.
    async fn redrive(&self, from: &str, to: &str) -> Result<u64>;

    /// The counts of `queue` now (which messages are ready **reads the clock**). The
    /// counters (`delivered`, `succeeded`, `failed_attempts`, `dead_lettered`) count since
    /// the queue was created, across restarts.
    ///
    /// `NotFound` if `queue` is not a queue.
    async fn counts(&self, queue: &str) -> Result<QueueCounts>;
}

/// The last claimed tick of each function's cron schedule, so that a tick is claimed once
/// however many nodes or restarts see it, and the ticks claimed and not yet finished, each
/// under a lease, so that one whose runner died is run again. Every write is atomic and
/// synced on return.
#[async_trait]
pub trait TickStore: Send + Sync {
    /// The last claimed tick of `function`'s schedule. A schedule seen for the first time
    /// starts at `now_ms`, which is stored (no tick before it is owed); later calls return
    /// the stored value whatever their `now_ms`.
    async fn last_tick(&self, function: &str, now_ms: i64) -> Result<i64>;

    /// Claims the tick at `tick_ms` of `function`'s schedule before it runs: `true` if
    /// `tick_ms` is later than the last claimed tick (or none was), and it becomes the last
    /// claimed tick, running under a lease until `lease_until_ms`; `false`, changing
    /// nothing, otherwise. Of any number of concurrent calls for one tick, exactly one gets
    /// `true`.
    async fn claim_tick(&self, function: &str, tick_ms: i64, lease_until_ms: i64) -> Result<bool>;

    /// The claimed tick `tick_ms` of `function` is done (run, or dropped by its policy): it
    /// is never claimed again. A no-op for a tick not running.
    async fn finish_tick(&self, function: &str, tick_ms: i64) -> Result<()>;

    /// Claims again the earliest tick of `function` that was claimed and never finished
    /// and whose lease ended before now (**reads the clock**): its runner died. It runs
    /// under a new lease until `lease_until_ms`. `Some(tick)` for exactly one of any number
    /// of concurrent callers; `None` if no tick was abandoned.
    async fn reclaim_abandoned_tick(
        &self,
        function: &str,
        lease_until_ms: i64,
    ) -> Result<Option<i64>>;

    /// Whether a tick of `function` earlier than `tick_ms` is claimed, not finished, and
    /// under a lease that has not ended (**reads the clock**): a run of it is going on, on
    /// some node. What `overlap = skip` asks before a tick runs. (Later ticks do not count:
    /// two nodes checking at once must not skip each other's tick.)
    async fn another_tick_running(&self, function: &str, tick_ms: i64) -> Result<bool>;

    /// Forgets `function`'s schedule state (the function was removed), its running ticks
    /// with it: the next [`TickStore::last_tick`] starts afresh.
    async fn forget_schedule(&self, function: &str) -> Result<()>;
}

/// A broadcast to a function's WebSocket channel, or an operation on one of its
/// connections, handed from the node that received it to the others (each holds its own
/// connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedBroadcast {
    /// The node it came from (which delivered it to its own connections already).
    pub origin: String,
    pub function: String,
    /// The channel broadcast to; empty for any other action (an older node reads every
    /// relayed row as a broadcast to it, which then reaches no connection).
    pub channel: String,
    /// A binary message (else UTF-8 text).
    pub binary: bool,
    /// The message; for a close, its reason; for a membership, the channel (UTF-8).
    pub body: Vec<u8>,
    /// What the nodes do with it.
    pub action: RelayAction,
}

/// What a relayed message asks of the nodes: each acts on the connections it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RelayAction {
    /// Send the body to every connection in the channel.
    #[default]
    Broadcast,
    /// Send the body to this connection, wherever it is held.
    Send { connection: String },
    /// Close this connection with `code`, the body its reason.
    Close { connection: String, code: u16 },
    /// This connection joins (`true`) or leaves the channel named by the body.
    Membership { connection: String, join: bool },
}

/// WebSocket broadcasts that reach every node of a cluster. Only a backend that several
/// nodes share provides it ([`Stores::relay`]).
#[async_trait]
pub trait SocketRelay: Send + Sync {
    /// Hands `broadcasts` (of one origin) to the other nodes, in order, in one transaction:
    /// each node receives each once through [`SocketRelay::subscribe`] if it
    /// listens when they are sent (a node that is down or cut off misses them: broadcasts
    /// are not queued).
    async fn relay(&self, broadcasts: Vec<RelayedBroadcast>) -> Result<()>;

    /// Broadcasts other nodes relay, as they arrive (this node's own are left out).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RelayedBroadcast>;
}

/// What a node says of itself in a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBeat {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// Its eddy version.
    pub version: String,
    /// Its public and control API addresses, as it reports them.
    pub public_url: String,
    pub admin_addr: String,
    /// When it started (unix milliseconds).
    pub started_at_ms: i64,
    /// When it beat (unix milliseconds): "last seen".
    pub seen_at_ms: i64,
    /// Its load when it beat: invocations running, its concurrency limit, live instances,
    /// functions it serves.
    pub in_flight: u64,
    pub concurrency_max: u64,
    pub instances: u64,
    pub functions: u64,
    /// Whether it stopped (a graceful shutdown says so in a last beat).
    pub stopped: bool,
}

/// The nodes that share the store, as their heartbeats tell (`eddy nodes`).
#[async_trait]
pub trait MemberStore: Send + Sync {
    /// Records `beat` as its node's latest, replacing the one before. Committed on return.
    async fn beat(&self, beat: NodeBeat) -> Result<()>;

    /// Every node's latest beat, sorted by name.
    async fn members(&self) -> Result<Vec<NodeBeat>>;

    /// Forgets nodes whose latest beat is older than `before_ms`; how many.
    async fn forget_members(&self, before_ms: i64) -> Result<u64>;
}

/// Compiled code shared by the nodes of a cluster: one artifact per component and engine (a
/// CPU class: the runtime's compatibility key), with the MAC that authenticates it. Only a
/// backend that several nodes share provides it ([`Stores::artifacts`]). The store keeps the
/// bytes and the MAC as given and checks neither: the node does, with a key the store never
/// sees.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores the artifact of component `digest` for `engine`, replacing any (a node that
    /// found one that did not verify stores its own). Dropped silently if no component is
    /// stored under `digest` (it was removed meanwhile); deleted with the component.
    /// Committed on return.
    async fn put_artifact(
        &self,
        digest: &str,
        engine: &str,
        artifact: Vec<u8>,
        mac: Vec<u8>,
    ) -> Result<()>;

    /// The artifact of `digest` for `engine` and its MAC, if one is stored.
    async fn artifact(&self, digest: &str, engine: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
}

/// Wake-ups telling a node that another node may have changed what is served, sooner than
/// polling [`FunctionStore::generation`] would find out. Hints only: a node that misses one
/// still learns of the change by polling, so no contract depends on them.
pub trait ChangeHints: Send + Sync {
    /// A receiver whose value changes when a hint arrives, and when the backend regains its
    /// way of hearing them after losing it (anything may have changed meanwhile).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The hints of a backend no other node shares: there are none.
pub struct NoHints(tokio::sync::watch::Sender<u64>);

impl Default for NoHints {
    fn default() -> Self {
        NoHints(tokio::sync::watch::Sender::new(0))
    }
}

impl ChangeHints for NoHints {
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Every part of a node's durable state, each behind its contract.
///
/// Opening a backend's stores again after every handle of an earlier opening was dropped is
/// a restart: the new handles see everything the old ones committed.
#[derive(Clone)]
pub struct Stores {
    pub functions: Arc<dyn FunctionStore>,
    pub token: Arc<dyn TokenStore>,
    pub access: Arc<dyn AccessStore>,
    pub invocations: Arc<dyn InvocationStore>,
    pub cost: Arc<dyn CostStore>,
    pub queues: Arc<dyn QueueBackend>,
    pub ticks: Arc<dyn TickStore>,
    pub hints: Arc<dyn ChangeHints>,
    pub members: Arc<dyn MemberStore>,
    /// Compiled code shared between nodes; `None` where no other node shares the store.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
    /// WebSocket broadcasts to the other nodes; `None` where no other node shares the store.
    pub relay: Option<Arc<dyn SocketRelay>>,
}

impl Stores {
    /// The SQLite backend: `store` (one database file) holds functions, the token,
    /// invocations and cost; `queues` (a second file) holds queues and schedule ticks.
    pub fn sqlite(store: Store, queues: QueueStore) -> Stores {
        let store = Arc::new(store);
        let queues = Arc::new(queues);
        Stores {
            functions: store.clone(),
            token: store.clone(),
            access: store.clone(),
            invocations: store.clone(),
            members: store.clone(),
            cost: store,
            queues: queues.clone(),
            ticks: queues,
            hints: Arc::new(NoHints::default()),
            artifacts: None,
            relay: None,
        }
    }
}

/// A named credential of the control API. Only the SHA-256 of the token is stored; the
/// token itself is shown once, when it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique name: what `eddy token ls` and the audit trail show.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// `admin`, `deployer`, `reader` or `publisher`: the node gives it meaning.
    pub role: String,
    /// Functions the token may touch; empty: every function.
    pub functions: Vec<String>,
    /// Queues the token may touch; empty: every queue.
    pub queues: Vec<String>,
    /// Secrets the token may bind; empty: every secret.
    pub secrets: Vec<String>,
    pub created_at_ms: i64,
    /// After this the token is refused; `None`: never.
    pub expires_at_ms: Option<i64>,
    /// The last time the token was accepted (kept coarsely: see
    /// [`AccessStore::touch_token`]).
    pub last_used_at_ms: Option<i64>,
}

/// One change attempted through the control API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at_ms: i64,
    /// The name of the token that made it (`admin` for the bootstrap token).
    pub token: String,
    /// The client's address.
    pub source: String,
    /// `METHOD /v1/path`.
    pub request: String,
    /// What it did, in the words of the permission it needed (`functions:deploy`).
    pub action: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, or the error's code and message.
    pub outcome: String,
}

/// A stored audit entry: the entry and its id, which grows with every entry appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: NewAuditEntry,
}

/// One version of a secret as the store keeps it: sealed. The store never sees the value or
/// the key; the node seals and opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: String,
    /// 1 for the first value set, one more for each value set after it.
    pub version: u32,
    /// Which key sealed it (an identifier derived from the key, never the key).
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at_ms: i64,
}

/// Access to the control API: scoped tokens, the audit trail and secrets. What a node shares
/// with the whole cluster, so a token revoked or a secret set on one node holds on every
/// node.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new token. `AlreadyExists` if a token of that name exists (nothing changes).
    /// Committed on return.
    async fn create_token(&self, token: TokenRecord) -> Result<()>;

    /// Every token, sorted by name.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// The token whose hash is `hash`, expired or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Deletes the token `name`: `false` if there was none. Committed on return: from then
    /// on [`AccessStore::token_by_hash`] does not find it.
    async fn remove_token(&self, name: &str) -> Result<bool>;

    /// Records that token `name` was used at `at_ms` (never moving the time back). A token
    /// removed meanwhile stays removed.
    async fn touch_token(&self, name: &str, at_ms: i64) -> Result<()>;

    /// Appends `entry` to the audit trail and deletes entries older than `keep_after_ms`;
    /// the new entry's id, greater than every id before. Committed on return.
    async fn append_audit(&self, entry: NewAuditEntry, keep_after_ms: i64) -> Result<i64>;

    /// Up to `limit` entries with `at_ms >= since_ms` and an id above `after_id`, oldest
    /// first.
    async fn audit(&self, since_ms: i64, after_id: i64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Stores a new version of secret `name` (version 1 if there is none) sealed as given;
    /// returns the version. Earlier versions are kept until the secret is removed.
    async fn put_secret(
        &self,
        name: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        at_ms: i64,
    ) -> Result<u32>;

    /// Every version of every secret, by name then version.
    async fn secrets(&self) -> Result<Vec<SealedSecret>>;

    /// Version `version` of secret `name`, or its latest when `version` is `None`.
    async fn secret(&self, name: &str, version: Option<u32>) -> Result<Option<SealedSecret>>;

    /// Deletes every version of secret `name`: `false` if there was none.
    async fn remove_secret(&self, name: &str) -> Result<bool>;

    /// Replaces the sealing of one version of a secret (a key rotation), only if it is
    /// still sealed by `old_key_id`: `false` (changing nothing) otherwise or if it is gone.
    async fn reseal_secret(
        &self,
        name: &str,
        version: u32,
        old_key_id: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<bool>;
}
