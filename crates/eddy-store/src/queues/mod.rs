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

mod journal;
mod migrations;
mod recovery;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::store::now_ms;
use crate::{Result, StoreError, schema};
use journal::{Counters, Job, Memo};
pub use journal::{JOURNAL_OPS_PER_COMMIT_MAX, JOURNAL_QUEUE_OPS_MAX};

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
        self.run(move |conn, _| {
            let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (bytes_max / page_size).max(1);
            let set: u64 =
                conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })?;
            Ok(set * page_size)
        })
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
            let dlq = format!("{name}{DEAD_LETTER_SUFFIX}");
            for taken in [&name, &dlq] {
                if queue_exists(conn, taken)? {
                    return Err(StoreError::AlreadyExists {
                        what: format!("queue `{taken}`"),
                    });
                }
            }
            let now = now_ms();
            let mut insert = conn.prepare_cached(
                "INSERT INTO queues (name, dead_letter_of, idempotency_window_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            insert.execute(params![name, None::<String>, idempotency_window_ms, now])?;
            insert.execute(params![dlq, Some(&name), idempotency_window_ms, now])?;
            memo.depth.insert(name.clone(), 0);
            memo.depth.insert(dlq.clone(), 0);
            Ok(QueueRecord {
                name,
                dead_letter_queue: Some(dlq),
                dead_letter_of: None,
                idempotency_window_ms,
                created_at_ms: now,
                consumer: None,
            })
        })
        .await
    }

    /// Deletes a queue with its messages, its consumer binding and its dead-letter queue.
    /// A dead-letter queue goes only with its queue. `Ok(false)` if there is no such queue.
    pub async fn delete_queue(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |conn, memo| {
            let Some(queue) = load_queue(conn, &name)? else {
                return Ok(false);
            };
            if let Some(of) = queue.dead_letter_of {
                return Err(StoreError::Conflict(format!(
                    "`{name}` is the dead-letter queue of `{of}`; it is deleted with `{of}`"
                )));
            }
            let users: Vec<String> = {
                let mut stmt = conn.prepare(
                    "SELECT queue FROM consumers WHERE queue <> ?1
                     AND json_extract(settings, '$.dead_letter') IN (?1, ?1 || ?2)",
                )?;
                stmt.query_map(params![name, DEAD_LETTER_SUFFIX], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            if let Some(user) = users.first() {
                return Err(StoreError::Conflict(format!(
                    "the consumer of `{user}` dead-letters into `{name}`; change or remove that consumer first"
                )));
            }
            for doomed in [name.clone(), format!("{name}{DEAD_LETTER_SUFFIX}")] {
                conn.execute("DELETE FROM messages WHERE queue = ?1", [&doomed])?;
                conn.execute("DELETE FROM idempotency WHERE queue = ?1", [&doomed])?;
                conn.execute("DELETE FROM queues WHERE name = ?1", [&doomed])?;
                memo.depth.remove(&doomed);
                memo.counters.remove(&doomed);
            }
            Ok(true)
        })
        .await
    }

    /// Every queue, sorted by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueRecord>> {
        self.run(|conn, _| {
            let mut stmt = conn.prepare_cached(&format!("{QUEUE_SELECT} ORDER BY q.name"))?;
            let rows = stmt.query_map([], queue_row)?;
            rows.map(|row| row?.decode()).collect()
        })
        .await
    }

    /// The queue called `name`, if it exists.
    pub async fn queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        let name = name.to_string();
        self.run(move |conn, _| load_queue(conn, &name)).await
    }

    /// Binds a consumer to `queue`, replacing any binding it had. `NotFound` if the queue
    /// or the dead-letter queue does not exist.
    pub async fn set_consumer(&self, queue: &str, settings: ConsumerSettings) -> Result<()> {
        let queue = queue.to_string();
        self.run(move |conn, _| {
            ensure_queue(conn, &queue)?;
            ensure_queue(conn, &settings.dead_letter)?;
            if settings.dead_letter == queue {
                return Err(StoreError::Conflict(format!(
                    "`{queue}` cannot be its own dead-letter queue"
                )));
            }
            let json = serde_json::to_string(&settings)
                .map_err(|e| StoreError::Corrupt(format!("consumer settings: {e}")))?;
            conn.execute(
                "INSERT INTO consumers (queue, settings) VALUES (?1, ?2)
                 ON CONFLICT (queue) DO UPDATE SET settings = excluded.settings",
                params![queue, json],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes `queue`'s consumer binding. `Ok(false)` if it had none.
    pub async fn remove_consumer(&self, queue: &str) -> Result<bool> {
        let queue = queue.to_string();
        self.run(move |conn, _| {
            ensure_queue(conn, &queue)?;
            Ok(conn.execute("DELETE FROM consumers WHERE queue = ?1", [&queue])? > 0)
        })
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
        let QueueLimits {
            depth_max,
            bytes_max,
        } = limits;
        self.run(move |conn, memo| {
            let (window, bytes): (i64, u64) = conn
                .query_row(
                    "SELECT idempotency_window_ms, bytes FROM queues WHERE name = ?1",
                    [&queue],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| no_queue(&queue))?;
            let mut added_bytes = 0u64;
            let now = now_ms();
            let mut find_key = conn.prepare_cached(
                "SELECT message_id FROM idempotency
                 WHERE queue = ?1 AND key = ?2 AND expires_at_ms > ?3",
            )?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO messages (queue, body, content_type, enqueued_at_ms,
                     first_enqueued_at_ms, attempts, visible_at_ms, leased)
                 VALUES (?1, ?2, ?3, ?4, ?4, 0, ?4, 0) RETURNING id",
            )?;
            let mut remember = conn.prepare_cached(
                "INSERT INTO idempotency (queue, key, message_id, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (queue, key) DO UPDATE SET message_id = excluded.message_id,
                     expires_at_ms = excluded.expires_at_ms",
            )?;
            let depth = memo.depth.get(&queue).copied().unwrap_or(0);
            let mut added = 0u64;
            let mut published = Vec::with_capacity(messages.len());
            for message in &messages {
                if let Some(key) = &message.idempotency_key {
                    let seen: Option<String> = find_key
                        .query_row(params![queue, key, now], |row| row.get(0))
                        .optional()?;
                    if let Some(id) = seen {
                        published.push(Published {
                            id,
                            duplicate: true,
                        });
                        continue;
                    }
                }
                if depth + added >= depth_max {
                    return Err(StoreError::DepthLimit {
                        queue: queue.clone(),
                        depth,
                        depth_max,
                    });
                }
                added_bytes += message.body.len() as u64;
                if bytes + added_bytes > bytes_max {
                    return Err(StoreError::BytesLimit {
                        queue: queue.clone(),
                        bytes,
                        bytes_max,
                    });
                }
                let row: i64 = insert.query_row(
                    params![queue, message.body, message.content_type, now],
                    |row| row.get(0),
                )?;
                let id = message_id(row);
                if let Some(key) = &message.idempotency_key {
                    remember.execute(params![queue, key, id, now + window])?;
                }
                added += 1;
                published.push(Published {
                    id,
                    duplicate: false,
                });
            }
            *memo.depth.entry(queue).or_default() += added;
            Ok(published)
        })
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
        self.run(move |conn, memo| {
            let now = now_ms();
            let mut stmt = conn.prepare_cached(
                "UPDATE messages SET attempts = attempts + 1, leased = 1, visible_at_ms = ?4
                 WHERE id IN (SELECT id FROM messages
                     WHERE queue = ?1 AND visible_at_ms <= ?2
                     ORDER BY visible_at_ms, id LIMIT ?3)
                 RETURNING id, ce_id, body, content_type, attempts, enqueued_at_ms,
                     first_enqueued_at_ms",
            )?;
            let mut claimed = stmt
                .query_map(params![queue, now, n, lease_until_ms], |row| {
                    let row_id: i64 = row.get(0)?;
                    let ce_id: Option<String> = row.get(1)?;
                    Ok(Claimed {
                        row: row_id,
                        id: ce_id.unwrap_or_else(|| message_id(row_id)),
                        body: row.get(2)?,
                        content_type: row.get(3)?,
                        attempt: row.get(4)?,
                        enqueued_at_ms: row.get(5)?,
                        first_enqueued_at_ms: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            claimed.sort_by_key(|c| c.row);
            let next = if claimed.len() < n as usize {
                conn.prepare_cached("SELECT MIN(visible_at_ms) FROM messages WHERE queue = ?1")?
                    .query_row([&queue], |row| row.get(0))?
            } else {
                None
            };
            memo.counters.entry(queue).or_default().delivered += claimed.len() as u64;
            Ok((claimed, next))
        })
        .await
    }

    /// Records how deliveries of claimed messages of `queue` ended. A settlement of a
    /// message no longer leased (purged meanwhile) is ignored.
    pub async fn settle(&self, queue: &str, settlements: Vec<Settle>) -> Result<()> {
        let queue = queue.to_string();
        self.run(move |conn, memo| {
            let now = now_ms();
            let mut ack = conn.prepare_cached(
                "DELETE FROM messages WHERE id = ?1 AND leased = 1 AND visible_at_ms = ?2",
            )?;
            let mut retry = conn.prepare_cached(
                "UPDATE messages SET leased = 0, visible_at_ms = ?3, last_error = ?4
                 WHERE id = ?1 AND leased = 1 AND visible_at_ms = ?2",
            )?;
            let mut move_out = conn.prepare_cached(
                "INSERT INTO messages (queue, ce_id, body, content_type, enqueued_at_ms,
                     first_enqueued_at_ms, attempts, visible_at_ms, leased, last_error)
                 SELECT ?2, COALESCE(ce_id, 'm' || id), body, content_type, ?3,
                     first_enqueued_at_ms, attempts, ?3, 0, ?4
                 FROM messages WHERE id = ?1 AND leased = 1 AND visible_at_ms = ?5",
            )?;
            let mut c = Counters::default();
            let mut left = 0u64;
            let mut moved: HashMap<String, u64> = HashMap::new();
            for settlement in &settlements {
                match settlement {
                    Settle::Ack {
                        row,
                        lease_until_ms,
                    } => {
                        if ack.execute(params![row, lease_until_ms])? > 0 {
                            c.succeeded += 1;
                            left += 1;
                        }
                    }
                    Settle::Retry {
                        row,
                        lease_until_ms,
                        visible_at_ms,
                        error,
                    } => {
                        if retry.execute(params![row, lease_until_ms, visible_at_ms, error])? > 0 {
                            c.failed_attempts += 1;
                        }
                    }
                    Settle::DeadLetter {
                        row,
                        lease_until_ms,
                        to,
                        error,
                    } => {
                        if !queue_exists(conn, to)? {
                            return Err(no_queue(to));
                        }
                        if move_out.execute(params![row, to, now, error, lease_until_ms])? > 0 {
                            ack.execute(params![row, lease_until_ms])?;
                            c.failed_attempts += 1;
                            c.dead_lettered += 1;
                            left += 1;
                            *moved.entry(to.clone()).or_default() += 1;
                        }
                    }
                }
            }
            let counters = memo.counters.entry(queue.clone()).or_default();
            counters.succeeded += c.succeeded;
            counters.failed_attempts += c.failed_attempts;
            counters.dead_lettered += c.dead_lettered;
            let depth = memo.depth.entry(queue).or_default();
            *depth = depth.saturating_sub(left);
            for (to, n) in moved {
                *memo.depth.entry(to).or_default() += n;
            }
            Ok(())
        })
        .await
    }

    /// Up to `limit` messages of `queue`, oldest first, without claiming them.
    pub async fn peek(&self, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>> {
        let queue = queue.to_string();
        self.run(move |conn, _| {
            ensure_queue(conn, &queue)?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, ce_id, body, content_type, attempts, enqueued_at_ms,
                     first_enqueued_at_ms, visible_at_ms, leased, last_error
                 FROM messages WHERE queue = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![queue, limit], |row| {
                let row_id: i64 = row.get(0)?;
                let ce_id: Option<String> = row.get(1)?;
                Ok(PeekedMessage {
                    id: ce_id.unwrap_or_else(|| message_id(row_id)),
                    body: row.get(2)?,
                    content_type: row.get(3)?,
                    attempts: row.get(4)?,
                    enqueued_at_ms: row.get(5)?,
                    first_enqueued_at_ms: row.get(6)?,
                    visible_at_ms: row.get(7)?,
                    in_flight: row.get::<_, i64>(8)? != 0,
                    last_error: row.get(9)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Deletes every message of `queue` that is not in flight; how many.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_string();
        self.run(move |conn, memo| {
            ensure_queue(conn, &queue)?;
            let purged = conn.execute(
                "DELETE FROM messages WHERE queue = ?1 AND leased = 0",
                [&queue],
            )? as u64;
            let depth = memo.depth.entry(queue).or_default();
            *depth = depth.saturating_sub(purged);
            Ok(purged)
        })
        .await
    }

    /// Moves the messages of `from` (a dead-letter queue) to `to`, ready at once with their
    /// attempts reset; how many.
    pub async fn redrive(&self, from: &str, to: &str) -> Result<u64> {
        let (from, to) = (from.to_string(), to.to_string());
        self.run(move |conn, memo| {
            ensure_queue(conn, &from)?;
            ensure_queue(conn, &to)?;
            let now = now_ms();
            let moved = conn.execute(
                "INSERT INTO messages (queue, ce_id, body, content_type, enqueued_at_ms,
                     first_enqueued_at_ms, attempts, visible_at_ms, leased, last_error)
                 SELECT ?2, COALESCE(ce_id, 'm' || id), body, content_type, ?3,
                     first_enqueued_at_ms, 0, ?3, 0, last_error
                 FROM messages WHERE queue = ?1 AND leased = 0 ORDER BY id",
                params![from, to, now],
            )? as u64;
            conn.execute(
                "DELETE FROM messages WHERE queue = ?1 AND leased = 0",
                [&from],
            )?;
            let depth = memo.depth.entry(from).or_default();
            *depth = depth.saturating_sub(moved);
            *memo.depth.entry(to).or_default() += moved;
            Ok(moved)
        })
        .await
    }

    /// The counts of `queue` now.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let queue = queue.to_string();
        self.run(move |conn, memo| {
            ensure_queue(conn, &queue)?;
            let now = now_ms();
            let (depth, in_flight, ready, oldest) = conn
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(leased), 0),
                         COALESCE(SUM(leased = 0 AND visible_at_ms <= ?2), 0), MIN(enqueued_at_ms)
                     FROM messages WHERE queue = ?1",
                )?
                .query_row(params![queue, now], |row| {
                    Ok((
                        row.get::<_, u64>(0)?,
                        row.get::<_, u64>(1)?,
                        row.get::<_, u64>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                })?;
            let bytes: u64 = conn
                .prepare_cached("SELECT bytes FROM queues WHERE name = ?1")?
                .query_row([&queue], |row| row.get(0))?;
            let stored = conn
                .prepare_cached(
                    "SELECT delivered, succeeded, failed_attempts, dead_lettered
                     FROM queue_counters WHERE queue = ?1",
                )?
                .query_row([&queue], |row| {
                    Ok(Counters {
                        delivered: row.get(0)?,
                        succeeded: row.get(1)?,
                        failed_attempts: row.get(2)?,
                        dead_lettered: row.get(3)?,
                    })
                })
                .optional()?
                .unwrap_or_default();
            let pending = memo.counters.get(&queue).copied().unwrap_or_default();
            Ok(QueueCounts {
                depth,
                bytes,
                ready,
                in_flight,
                delayed: depth - in_flight - ready,
                delivered: stored.delivered + pending.delivered,
                succeeded: stored.succeeded + pending.succeeded,
                failed_attempts: stored.failed_attempts + pending.failed_attempts,
                dead_lettered: stored.dead_lettered + pending.dead_lettered,
                oldest_enqueued_at_ms: oldest,
            })
        })
        .await
    }
}

impl QueueStore {
    /// The last claimed tick of `function`'s schedule; a schedule seen for the first time
    /// starts at `now_ms` (no ticks before it are owed).
    pub async fn last_tick(&self, function: &str, now_ms: i64) -> Result<i64> {
        let function = function.to_string();
        self.run(move |conn, _| {
            conn.execute(
                "INSERT INTO schedules (function, last_tick_ms) VALUES (?1, ?2)
                 ON CONFLICT (function) DO NOTHING",
                params![function, now_ms],
            )?;
            Ok(conn.query_row(
                "SELECT last_tick_ms FROM schedules WHERE function = ?1",
                [&function],
                |row| row.get(0),
            )?)
        })
        .await
    }

    /// Claims the tick at `tick_ms` of `function`'s schedule, durably, before it runs:
    /// `false` if it (or a later one) was claimed already, so a tick never runs twice.
    pub async fn claim_tick(&self, function: &str, tick_ms: i64) -> Result<bool> {
        let function = function.to_string();
        self.run(move |conn, _| {
            let changed = conn.execute(
                "INSERT INTO schedules (function, last_tick_ms) VALUES (?1, ?2)
                 ON CONFLICT (function) DO UPDATE SET last_tick_ms = excluded.last_tick_ms
                 WHERE last_tick_ms < excluded.last_tick_ms",
                params![function, tick_ms],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    /// Forgets `function`'s schedule state (the function was removed).
    pub async fn forget_schedule(&self, function: &str) -> Result<()> {
        let function = function.to_string();
        self.run(move |conn, _| {
            conn.execute("DELETE FROM schedules WHERE function = ?1", [&function])?;
            Ok(())
        })
        .await
    }
}

/// The id consumers see for the message in row `row`.
fn message_id(row: i64) -> String {
    format!("m{row}")
}

fn no_queue(name: &str) -> StoreError {
    StoreError::NotFound {
        what: format!("queue `{name}`"),
    }
}

fn queue_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM queues WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn ensure_queue(conn: &Connection, name: &str) -> Result<()> {
    if queue_exists(conn, name)? {
        Ok(())
    } else {
        Err(no_queue(name))
    }
}

const QUEUE_SELECT: &str = "SELECT q.name, q.dead_letter_of, q.idempotency_window_ms,
        q.created_at_ms, c.settings,
        (SELECT d.name FROM queues d WHERE d.dead_letter_of = q.name)
    FROM queues q LEFT JOIN consumers c ON c.queue = q.name";

struct QueueRow {
    name: String,
    dead_letter_of: Option<String>,
    idempotency_window_ms: u64,
    created_at_ms: i64,
    consumer: Option<String>,
    dead_letter_queue: Option<String>,
}

impl QueueRow {
    fn decode(self) -> Result<QueueRecord> {
        let consumer = self
            .consumer
            .map(|json| {
                serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("consumer of queue `{}`: {e}", self.name))
                })
            })
            .transpose()?;
        Ok(QueueRecord {
            name: self.name,
            dead_letter_queue: self.dead_letter_queue,
            dead_letter_of: self.dead_letter_of,
            idempotency_window_ms: self.idempotency_window_ms,
            created_at_ms: self.created_at_ms,
            consumer,
        })
    }
}

fn queue_row(row: &Row<'_>) -> rusqlite::Result<QueueRow> {
    Ok(QueueRow {
        name: row.get(0)?,
        dead_letter_of: row.get(1)?,
        idempotency_window_ms: row.get(2)?,
        created_at_ms: row.get(3)?,
        consumer: row.get(4)?,
        dead_letter_queue: row.get(5)?,
    })
}

fn load_queue(conn: &Connection, name: &str) -> Result<Option<QueueRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{QUEUE_SELECT} WHERE q.name = ?1"))?;
    let row = stmt.query_row([name], queue_row).optional()?;
    row.map(QueueRow::decode).transpose()
}

/// The journal's own behaviour: backpressure, a full database, group commit. The contracts of
/// `QueueBackend` are tested by the conformance suite.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Limits of a test about depth (or about neither).
    fn depth(depth_max: u64) -> QueueLimits {
        QueueLimits {
            depth_max,
            ..QueueLimits::NONE
        }
    }

    fn message(body: &str, key: Option<&str>) -> NewMessage {
        NewMessage {
            body: body.as_bytes().to_vec(),
            content_type: "text/plain".into(),
            idempotency_key: key.map(str::to_string),
        }
    }

    /// While the journal is held up (a slow disk), operations queue up to
    /// `JOURNAL_QUEUE_OPS_MAX`; callers past it wait for room instead of queueing more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_journal_queue_is_bounded_and_callers_wait_for_room() -> Result<()> {
        let store = std::sync::Arc::new(QueueStore::open_in_memory()?);
        store.create_queue("jobs", 0).await?;
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .run(move |_, _| {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            })
        };
        // The journal is inside the blocker (and has taken nothing else) before any publish.
        tokio::task::spawn_blocking(move || running.recv())
            .await
            .unwrap()
            .unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let extra = 5;
        let mut tasks = Vec::new();
        for _ in 0..JOURNAL_QUEUE_OPS_MAX + extra {
            let (store, done) = (store.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .publish("jobs", vec![message("m", None)], depth(u64::MAX))
                    .await?;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, StoreError>(())
            }));
        }
        // The channel fills to its bound; nothing more is queued and nothing completes.
        while store.jobs.capacity() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.jobs.capacity(), 0);
        assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(tasks.iter().filter(|t| !t.is_finished()).count() >= JOURNAL_QUEUE_OPS_MAX + extra);
        release.send(()).unwrap();
        blocker.await.unwrap()?;
        for task in tasks {
            task.await.unwrap()?;
        }
        assert_eq!(
            store.counts("jobs").await?.depth,
            (JOURNAL_QUEUE_OPS_MAX + extra) as u64
        );
        Ok(())
    }

    /// A full database (here its size limit; a full disk answers the same) loses nothing it
    /// acknowledged and acknowledges nothing it lost, however the publishes share commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_database_reports_exactly_what_it_stored() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(QueueStore::open(&dir.path().join("queues.db"))?);
        store.create_queue("jobs", 0).await?;
        let allowed = store.limit_bytes(512 * 1024).await?;
        assert!(allowed <= 512 * 1024 + 4096, "{allowed}");
        let body = "m".repeat(20_000);
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let store = store.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .publish("jobs", vec![message(&body, None)], depth(1_000_000))
                    .await
            }));
        }
        let mut stored = 0;
        let mut full = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => stored += 1,
                Err(e) if e.is_full() => full += 1,
                Err(e) => panic!("not a full database: {e:?}"),
            }
        }
        assert!(stored > 0 && full > 0, "{stored} stored, {full} full");
        assert_eq!(store.counts("jobs").await?.depth, stored);
        // Nothing is lost on the way back either: the stored ones can be claimed.
        let (claimed, _) = store.claim("jobs", 1000, now_ms() + 60_000).await?;
        assert_eq!(claimed.len() as u64, stored);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_publishes_share_commits() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let store = QueueStore::open(&dir.path().join("queues.db"))?;
        store.create_queue("jobs", 0).await?;
        let before = store.commits();
        let publishes = (0..2000)
            .map(|i| store.publish("jobs", vec![message(&i.to_string(), None)], depth(10_000)));
        let results = futures::future::join_all(publishes).await;
        assert!(results.iter().all(Result::is_ok));
        let commits = store.commits() - before;
        assert!(
            commits <= 500,
            "2000 concurrent publishes took {commits} commits"
        );
        assert_eq!(store.counts("jobs").await?.depth, 2000);
        Ok(())
    }
}
