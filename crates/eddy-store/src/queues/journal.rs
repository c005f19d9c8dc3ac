//! The journal thread, which owns the queue database's connection: it takes every operation
//! waiting (up to `JOURNAL_OPS_PER_COMMIT_MAX`), runs each in a savepoint of one transaction,
//! writes the transaction's counter increments, commits once and only then answers each
//! caller (group commit). A `Job` is one operation; the `Memo` is what the journal keeps in
//! memory between them. The channel to the thread holds `JOURNAL_QUEUE_OPS_MAX` operations;
//! past it a caller waits for room (backpressure).

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::operations;
use crate::store::now_ms;
use crate::{Result, StoreError};

/// Operations one journal transaction takes at most; more wait for the next one.
pub const JOURNAL_OPS_PER_COMMIT_MAX: usize = 4096;
/// Operations waiting for the journal at most. Past it a caller waits for room (backpressure)
/// instead of queueing without bound while the disk is slow: what is queued is bounded by
/// this many operations, each bounded by its request.
pub const JOURNAL_QUEUE_OPS_MAX: usize = 2 * JOURNAL_OPS_PER_COMMIT_MAX;
/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// One operation: runs inside the journal's transaction and returns what to do once the
/// transaction's fate is known (answer the caller, or tell it the commit failed).
pub(super) type Job = Box<dyn FnOnce(&Connection, &mut Memo) -> Finish + Send>;
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What the journal keeps in memory: the depth of each queue, so a publish checks the
/// depth limit without counting rows.
#[derive(Default)]
pub(super) struct Memo {
    pub(super) depth: HashMap<String, u64>,
    /// Counter increments of this transaction, written before it commits.
    pub(super) counters: HashMap<String, Counters>,
}

/// Counter increments of one queue (see `QueueCounts`), kept until their transaction commits.
#[derive(Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) delivered: u64,
    pub(super) succeeded: u64,
    pub(super) failed_attempts: u64,
    pub(super) dead_lettered: u64,
}

impl Memo {
    /// The memo of a database just opened: the depth of each queue, counted.
    pub(super) fn load(conn: &Connection) -> Result<Memo> {
        let mut memo = Memo::default();
        let mut stmt = conn.prepare(
            "SELECT q.name, (SELECT COUNT(*) FROM messages m WHERE m.queue = q.name)
             FROM queues q",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        for row in rows {
            let (name, depth): (String, u64) = row?;
            memo.depth.insert(name, depth);
        }
        Ok(memo)
    }
}

/// Starts the journal thread on `conn`: the sender of its jobs, and the count of the
/// transactions it has committed.
pub(super) fn spawn(
    conn: Connection,
    memo: Memo,
) -> Result<(
    tokio::sync::mpsc::Sender<Job>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
)> {
    let (jobs, rx) = tokio::sync::mpsc::channel::<Job>(JOURNAL_QUEUE_OPS_MAX);
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = commits.clone();
    std::thread::Builder::new()
        .name("eddy-queue-journal".into())
        .spawn(move || journal(conn, memo, rx, &counted))
        .map_err(|source| StoreError::Io {
            path: "journal thread".into(),
            source,
        })?;
    Ok((jobs, commits))
}

/// `work` as a job: it runs in a savepoint of the journal's transaction, and its result goes
/// to `answer` once that transaction has committed (or as an error if it did not).
pub(super) fn job<T: Send + 'static>(
    work: impl FnOnce(&Connection, &mut Memo) -> Result<T> + Send + 'static,
    answer: oneshot::Sender<Result<T>>,
) -> Job {
    Box::new(move |conn, memo| {
        let result = in_savepoint(conn, memo, work);
        Box::new(move |commit_error: Option<&StoreError>| {
            let outcome = match (result, commit_error) {
                (Ok(value), None) => Ok(value),
                // Done in a transaction that did not commit: nothing of it is stored.
                (Ok(_), Some(e)) if e.is_full() => Err(StoreError::Full(e.to_string())),
                (Ok(_), Some(e)) => Err(StoreError::Corrupt(format!(
                    "the queue journal could not commit: {e}"
                ))),
                (Err(e), _) => Err(e),
            };
            let _ = answer.send(outcome);
        })
    })
}

/// Runs `work` in a savepoint: its writes are undone if it fails, the others' kept.
fn in_savepoint<T>(
    conn: &Connection,
    memo: &mut Memo,
    work: impl FnOnce(&Connection, &mut Memo) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("SAVEPOINT op")?;
    match work(conn, memo) {
        Ok(value) => {
            conn.execute_batch("RELEASE op")?;
            Ok(value)
        }
        Err(e) => {
            // A full database may have made SQLite roll the whole transaction back, savepoint
            // and all: then there is nothing to roll back to, and `e` says why.
            match conn.execute_batch("ROLLBACK TO op; RELEASE op") {
                Err(rollback) if !conn.is_autocommit() => Err(rollback.into()),
                _ => Err(e),
            }
        }
    }
}

/// The journal thread: group commits until every `QueueStore` handle is gone.
fn journal(
    conn: Connection,
    mut memo: Memo,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    commits: &std::sync::atomic::AtomicU64,
) {
    let mut last_prune = std::time::Instant::now();
    // Operations of a transaction SQLite rolled back before they ran: first in the next one.
    let mut carried: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(job) => job,
            None => match jobs.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < JOURNAL_OPS_PER_COMMIT_MAX {
            match carried
                .pop_front()
                .map_or_else(|| jobs.try_recv().ok(), Some)
            {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        let depth_before = memo.depth.clone();
        let mut finishes = Vec::with_capacity(batch.len());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the batch closes each caller's answer channel: each gets an error.
            tracing::error!(error = %e, ops = batch.len(), "the queue journal could not begin a transaction");
            continue;
        }
        let mut rolled_back = false;
        let mut batch = batch.into_iter();
        for job in batch.by_ref() {
            finishes.push(job(&conn, &mut memo));
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a full database or disk can make
                // it): none of it is stored, whatever the operations that ran think.
                rolled_back = true;
                break;
            }
        }
        carried.extend(batch);
        let mut outcome = if rolled_back {
            Err(StoreError::Full(
                "SQLite rolled the transaction back (the database or the disk is full)".into(),
            ))
        } else {
            write_counters(&conn, &mut memo)
        };
        if outcome.is_ok() && last_prune.elapsed() >= IDEMPOTENCY_PRUNE_INTERVAL {
            last_prune = std::time::Instant::now();
            outcome = operations::prune_idempotency_keys(&conn, now_ms());
        }
        let outcome = outcome.and_then(|()| conn.execute_batch("COMMIT").map_err(StoreError::from));
        let error = match outcome {
            Ok(()) => {
                commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                memo.depth = depth_before;
                memo.counters.clear();
                Some(e)
            }
        };
        debug_assert!(conn.is_autocommit(), "a transaction outlived its batch");
        for finish in finishes {
            finish(error.as_ref());
        }
    }
}

/// Adds this transaction's counter increments to the stored counters.
fn write_counters(conn: &Connection, memo: &mut Memo) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO queue_counters (queue, delivered, succeeded, failed_attempts, dead_lettered)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM queues WHERE name = ?1)
         ON CONFLICT (queue) DO UPDATE SET delivered = delivered + excluded.delivered,
             succeeded = succeeded + excluded.succeeded,
             failed_attempts = failed_attempts + excluded.failed_attempts,
             dead_lettered = dead_lettered + excluded.dead_lettered",
    )?;
    for (queue, c) in memo.counters.drain() {
        stmt.execute(params![
            queue,
            c.delivered,
            c.succeeded,
            c.failed_attempts,
            c.dead_lettered
        ])?;
    }
    Ok(())
}
