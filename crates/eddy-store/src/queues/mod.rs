//! Durable queues: named queues with their dead-letter queues, consumer bindings, messages
//! and idempotency keys, in a SQLite file of their own (`queues.db`).
//!
//! Every operation goes to one journal thread that owns the connection. It takes every
//! operation waiting, runs them in one transaction (each inside a savepoint, so one failing
//! operation leaves the others' effects), commits with `synchronous = FULL` (one fsync for
//! the whole group) and only then answers each caller. An answered publish is therefore on
//! disk, whatever happens to the process next, and a burst of publishes costs one fsync,
//! not one each (group commit).
//!
//! A message is *ready* when `leased = 0` and `visible_at_ms` has passed, *delayed* when
//! `leased = 0` and it has not (a retry waiting out its backoff), and *in flight* when
//! `leased = 1` (claimed for a delivery). Its attempt count is raised when it is claimed, in
//! the same commit, so a delivery the process dies during still counts.
//!
//! This module holds the public types and `QueueStore`'s methods, each of which hands its
//! work to the journal (`run`). `journal.rs` is the journal thread (group commit, savepoints,
//! backpressure); `operations.rs` is the SQL of each operation; `recovery.rs` is what opening
//! the database does to messages left in flight; `migrations.rs` is the tables.

mod journal;
mod migrations;
pub(crate) mod operations;
mod recovery;
#[cfg(test)]
mod tests;

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::store::now_ms;
use crate::{Result, StoreError, schema};
pub use journal::{JOURNAL_OPS_PER_COMMIT_MAX, JOURNAL_QUEUE_OPS_MAX};
use journal::{Job, Memo};

/// Suffix of the dead-letter queue created with every queue.
pub const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// A queue as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    pub name: String,
    /// The queue's own dead-letter queue (`NAME-dlq`); `None` for a dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// For a dead-letter queue: the queue it belongs to.
    pub dead_letter_of: Option<String>,
    /// A message published again with the same idempotency key within this window is
    /// acknowledged and dropped.
    pub idempotency_window_ms: u64,
    pub created_at_ms: i64,
    pub consumer: Option<ConsumerSettings>,
}

/// How a function consumes a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSettings {
    pub function: String,
    /// Messages per delivery (one POST).
    pub batch_size: u32,
    /// Deliveries running at once at most (adaptive concurrency grows back to this).
    pub max_concurrency: u32,
    /// How long a claimed message stays invisible to other deliveries.
    pub visibility_timeout_ms: u64,
    /// Deliveries of one message at most; then it goes to `dead_letter`.
    pub max_attempts: u32,
    /// Backoff before the second attempt; it doubles per attempt (full jitter).
    pub backoff_base_ms: u64,
    /// Longest backoff.
    pub backoff_max_ms: u64,
    /// Where messages go after `max_attempts` failed deliveries.
    pub dead_letter: String,
    /// Request path of deliveries; `None`: the function's route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A message to publish.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub body: Vec<u8>,
    pub content_type: String,
    pub idempotency_key: Option<String>,
}

/// What a publish did with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's id (for a duplicate: the id of the message first published with its key).
    pub id: String,
    /// The idempotency key was seen within the window: nothing was enqueued.
    pub duplicate: bool,
}

/// A message claimed for a delivery.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Row id: what settles it.
    pub row: i64,
    /// The message id consumers see (`ce-id`), kept across dead-lettering and redrive.
    pub id: String,
    pub body: Vec<u8>,
    pub content_type: String,
    /// This delivery's attempt number, from 1.
    pub attempt: u32,
    /// When it entered this queue.
    pub enqueued_at_ms: i64,
    /// When it was first published (before any dead-lettering and redrive).
    pub first_enqueued_at_ms: i64,
}

/// How a delivery of a claimed message ended.
#[derive(Clone, Debug)]
///
/// Each names the lease it settles (the `lease_until_ms` of its claim): a settlement that
/// comes after the lease ran out and the message was claimed again does nothing.
pub enum Settle {
    /// Delivered and acknowledged: the message is deleted.
    Ack { row: i64, lease_until_ms: i64 },
    /// Failed: visible again at `visible_at_ms`.
    Retry {
        row: i64,
        lease_until_ms: i64,
        visible_at_ms: i64,
        error: String,
    },
    /// Failed for the last time: moved to the queue `to`.
    DeadLetter {
        row: i64,
        lease_until_ms: i64,
        to: String,
        error: String,
    },
}

/// What one queue may hold; a publish past either is refused whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages: ready, delayed and in flight.
    pub depth_max: u64,
    /// Bytes of message bodies.
    pub bytes_max: u64,
}

impl QueueLimits {
    /// No limit: what a test that is not about limits uses.
    pub const NONE: QueueLimits = QueueLimits {
        depth_max: u64::MAX,
        bytes_max: u64::MAX,
    };
}

/// Counts of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Every message in the queue: ready, delayed and in flight.
    pub depth: u64,
    /// Bytes of the bodies of those messages.
    pub bytes: u64,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Deliveries started (a message retried twice counts three).
    pub delivered: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// When the oldest message entered the queue.
    pub oldest_enqueued_at_ms: Option<i64>,
}

/// A message as `peek` shows it.
#[derive(Clone, Debug)]
pub struct PeekedMessage {
    pub id: String,
    pub body: Vec<u8>,
    pub content_type: String,
    pub attempts: u32,
    pub enqueued_at_ms: i64,
    pub first_enqueued_at_ms: i64,
    pub visible_at_ms: i64,
    pub in_flight: bool,
    pub last_error: Option<String>,
}

/// Handle to the queue database; cheap to share behind an `Arc`.
pub struct QueueStore {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Transactions the journal has committed.
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl QueueStore {
    /// Opens or creates the queue database at `path` and starts its journal thread.
    ///
    /// Messages in flight when the node last stopped are made visible again; one whose last
    /// allowed attempt was in flight goes to its dead-letter queue (an attempt that may have
    /// run counts).
    pub fn open(path: &Path) -> Result<QueueStore> {
        QueueStore::start(schema::open_file(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<QueueStore> {
        QueueStore::start(Connection::open_in_memory()?)
    }

    fn start(mut conn: Connection) -> Result<QueueStore> {
        // Every commit reaches the disk before a publish is answered.
        schema::prepare(&mut conn, migrations::MIGRATIONS, schema::Synchronous::Full)?;
        let memo = {
            let tx = conn.transaction()?;
            recovery::recover(&tx, now_ms())?;
            let memo = Memo::load(&tx)?;
            tx.commit()?;
            memo
        };
        let (jobs, commits) = journal::spawn(conn, memo)?;
        Ok(QueueStore { jobs, commits })
    }

    /// Keep the database within `bytes_max` (SQLite's `max_page_count`; never below what it
    /// holds now): past it an operation fails with `StoreError::Full` and stores nothing.
    /// Returns the bytes the limit allows.
    pub async fn limit_bytes(&self, bytes_max: u64) -> Result<u64> {
        self.run(move |conn, _| operations::limit_bytes(conn, bytes_max))
            .await
    }

    /// Transactions committed since the store was opened (each one fsync).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Run `work` in the journal's next transaction; its result once that has committed.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &mut Memo) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job = journal::job(work, tx);
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Corrupt("the queue journal has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Corrupt(
                "the queue journal dropped the operation; the node's log says why".into(),
            )
        })?
    }

    /// Creates queue `name` and its dead-letter queue `name-dlq`. `AlreadyExists` if
    /// either exists.
    pub async fn create_queue(
        &self,
        name: &str,
        idempotency_window_ms: u64,
    ) -> Result<QueueRecord> {
        let name = name.to_string();
        self.run(move |conn, memo| {
            operations::create_queue(conn, memo, name, idempotency_window_ms)
        })
        .await
    }

    /// Deletes a queue with its messages, its consumer binding and its dead-letter queue.
    /// A dead-letter queue goes only with its queue. `Ok(false)` if there is no such queue.
    pub async fn delete_queue(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |conn, memo| operations::delete_queue(conn, memo, &name))
            .await
    }

    /// Every queue, sorted by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueRecord>> {
        self.run(|conn, _| operations::list_queues(conn)).await
    }

    /// The queue called `name`, if it exists.
    pub async fn queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        let name = name.to_string();
        self.run(move |conn, _| operations::load_queue(conn, &name))
            .await
    }

    /// Binds a consumer to `queue`, replacing any binding it had. `NotFound` if the queue
    /// or the dead-letter queue does not exist.
    pub async fn set_consumer(&self, queue: &str, settings: ConsumerSettings) -> Result<()> {
        let queue = queue.to_string();
        self.run(move |conn, _| operations::set_consumer(conn, &queue, &settings))
            .await
    }

    /// Removes `queue`'s consumer binding. `Ok(false)` if it had none.
    pub async fn remove_consumer(&self, queue: &str) -> Result<bool> {
        let queue = queue.to_string();
        self.run(move |conn, _| operations::remove_consumer(conn, &queue))
            .await
    }

    /// Enqueues `messages` on `queue` (all or none). `NotFound` for an unknown queue,
    /// `DepthLimit` when they would take it past `limits.depth_max` messages, `BytesLimit`
    /// past `limits.bytes_max` bytes of bodies. A message whose idempotency key was used on
    /// this queue within its window is acknowledged and dropped.
    pub async fn publish(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        limits: QueueLimits,
    ) -> Result<Vec<Published>> {
        let queue = queue.to_string();
        self.run(move |conn, memo| operations::publish(conn, memo, queue, &messages, limits))
            .await
    }

    /// Claims up to `n` ready messages of `queue`, oldest first, invisible until
    /// `lease_until_ms`, raising their attempt counts. A message whose lease ran out without
    /// being settled is ready again. Also returns when the next message becomes visible, if
    /// fewer than `n` were ready.
    pub async fn claim(
        &self,
        queue: &str,
        n: u32,
        lease_until_ms: i64,
    ) -> Result<(Vec<Claimed>, Option<i64>)> {
        let queue = queue.to_string();
        self.run(move |conn, memo| operations::claim(conn, memo, queue, n, lease_until_ms))
            .await
    }

    /// Records how deliveries of claimed messages of `queue` ended. A settlement of a
    /// message no longer leased (purged meanwhile) is ignored.
    pub async fn settle(&self, queue: &str, settlements: Vec<Settle>) -> Result<()> {
        let queue = queue.to_string();
        self.run(move |conn, memo| operations::settle(conn, memo, queue, &settlements))
            .await
    }

    /// Up to `limit` messages of `queue`, oldest first, without claiming them.
    pub async fn peek(&self, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>> {
        let queue = queue.to_string();
        self.run(move |conn, _| operations::peek(conn, &queue, limit))
            .await
    }

    /// Deletes every message of `queue` that is not in flight; how many.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_string();
        self.run(move |conn, memo| operations::purge(conn, memo, queue))
            .await
    }

    /// Moves the messages of `from` (a dead-letter queue) to `to`, ready at once with their
    /// attempts reset; how many.
    pub async fn redrive(&self, from: &str, to: &str) -> Result<u64> {
        let (from, to) = (from.to_string(), to.to_string());
        self.run(move |conn, memo| operations::redrive(conn, memo, from, to))
            .await
    }

    /// The counts of `queue` now.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let queue = queue.to_string();
        self.run(move |conn, memo| operations::counts(conn, memo, &queue))
            .await
    }
}

impl QueueStore {
    /// The last claimed tick of `function`'s schedule; a schedule seen for the first time
    /// starts at `now_ms` (no ticks before it are owed).
    pub async fn last_tick(&self, function: &str, now_ms: i64) -> Result<i64> {
        let function = function.to_string();
        self.run(move |conn, _| operations::last_tick(conn, &function, now_ms))
            .await
    }

    /// Claims the tick at `tick_ms` of `function`'s schedule, durably, before it runs:
    /// `false` if it (or a later one) was claimed already, so a tick never runs twice.
    pub async fn claim_tick(
        &self,
        function: &str,
        tick_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool> {
        let function = function.to_string();
        self.run(move |conn, _| operations::claim_tick(conn, &function, tick_ms, lease_until_ms))
            .await
    }

    /// The claimed tick `tick_ms` is done: never claimed again.
    pub async fn finish_tick(&self, function: &str, tick_ms: i64) -> Result<()> {
        let function = function.to_string();
        self.run(move |conn, _| operations::finish_tick(conn, &function, tick_ms))
            .await
    }

    /// Claims again the earliest tick whose lease ended unfinished (its runner died).
    pub async fn reclaim_abandoned_tick(
        &self,
        function: &str,
        lease_until_ms: i64,
    ) -> Result<Option<i64>> {
        let function = function.to_string();
        self.run(move |conn, _| operations::reclaim_abandoned_tick(conn, &function, lease_until_ms))
            .await
    }

    /// Whether another tick of `function` runs under a lease that has not ended.
    pub async fn another_tick_running(&self, function: &str, tick_ms: i64) -> Result<bool> {
        let function = function.to_string();
        self.run(move |conn, _| operations::another_tick_running(conn, &function, tick_ms))
            .await
    }

    /// Forgets `function`'s schedule state (the function was removed).
    pub async fn forget_schedule(&self, function: &str) -> Result<()> {
        let function = function.to_string();
        self.run(move |conn, _| operations::forget_schedule(conn, &function))
            .await
    }
}
