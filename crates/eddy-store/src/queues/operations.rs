//! The SQL of each queue operation: creating, deleting and listing queues, binding
//! consumers, publishing, claiming, settling, peeking, purging, redriving, counting, and the
//! ticks of cron schedules. Each function is the work of the `QueueStore` method of the same
//! name (documented there), run by the journal in a savepoint of its transaction; it keeps
//! the journal's `Memo` in step with what it changes.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::journal::{Counters, Memo};
use super::{
    Claimed, ConsumerSettings, DEAD_LETTER_SUFFIX, NewMessage, PeekedMessage, Published,
    QueueCounts, QueueLimits, QueueRecord, Settle,
};
use crate::store::now_ms;
use crate::{Result, StoreError};

pub(super) fn limit_bytes(conn: &Connection, bytes_max: u64) -> Result<u64> {
    let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = (bytes_max / page_size).max(1);
    let set: u64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })?;
    Ok(set * page_size)
}

pub(super) fn create_queue(
    conn: &Connection,
    memo: &mut Memo,
    name: String,
    idempotency_window_ms: u64,
) -> Result<QueueRecord> {
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
}

pub(super) fn delete_queue(conn: &Connection, memo: &mut Memo, name: &str) -> Result<bool> {
    let Some(queue) = load_queue(conn, name)? else {
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
    for doomed in [name.to_string(), format!("{name}{DEAD_LETTER_SUFFIX}")] {
        conn.execute("DELETE FROM messages WHERE queue = ?1", [&doomed])?;
        conn.execute("DELETE FROM idempotency WHERE queue = ?1", [&doomed])?;
        conn.execute("DELETE FROM queues WHERE name = ?1", [&doomed])?;
        memo.depth.remove(&doomed);
        memo.counters.remove(&doomed);
    }
    Ok(true)
}

pub(super) fn list_queues(conn: &Connection) -> Result<Vec<QueueRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{QUEUE_SELECT} ORDER BY q.name"))?;
    let rows = stmt.query_map([], queue_row)?;
    rows.map(|row| row?.decode()).collect()
}

pub(super) fn set_consumer(
    conn: &Connection,
    queue: &str,
    settings: &ConsumerSettings,
) -> Result<()> {
    ensure_queue(conn, queue)?;
    ensure_queue(conn, &settings.dead_letter)?;
    if settings.dead_letter == queue {
        return Err(StoreError::Conflict(format!(
            "`{queue}` cannot be its own dead-letter queue"
        )));
    }
    let json = serde_json::to_string(settings)
        .map_err(|e| StoreError::Corrupt(format!("consumer settings: {e}")))?;
    conn.execute(
        "INSERT INTO consumers (queue, settings) VALUES (?1, ?2)
         ON CONFLICT (queue) DO UPDATE SET settings = excluded.settings",
        params![queue, json],
    )?;
    Ok(())
}

pub(super) fn remove_consumer(conn: &Connection, queue: &str) -> Result<bool> {
    ensure_queue(conn, queue)?;
    Ok(conn.execute("DELETE FROM consumers WHERE queue = ?1", [queue])? > 0)
}

pub(super) fn publish(
    conn: &Connection,
    memo: &mut Memo,
    queue: String,
    messages: &[NewMessage],
    limits: QueueLimits,
) -> Result<Vec<Published>> {
    let QueueLimits {
        depth_max,
        bytes_max,
    } = limits;
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
    for message in messages {
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
}

pub(super) fn claim(
    conn: &Connection,
    memo: &mut Memo,
    queue: String,
    n: u32,
    lease_until_ms: i64,
) -> Result<(Vec<Claimed>, Option<i64>)> {
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
}

pub(super) fn settle(
    conn: &Connection,
    memo: &mut Memo,
    queue: String,
    settlements: &[Settle],
) -> Result<()> {
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
    for settlement in settlements {
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
}

pub(super) fn peek(conn: &Connection, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>> {
    ensure_queue(conn, queue)?;
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
}

pub(super) fn purge(conn: &Connection, memo: &mut Memo, queue: String) -> Result<u64> {
    ensure_queue(conn, &queue)?;
    let purged = conn.execute(
        "DELETE FROM messages WHERE queue = ?1 AND leased = 0",
        [&queue],
    )? as u64;
    let depth = memo.depth.entry(queue).or_default();
    *depth = depth.saturating_sub(purged);
    Ok(purged)
}

pub(super) fn redrive(conn: &Connection, memo: &mut Memo, from: String, to: String) -> Result<u64> {
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
}

pub(super) fn counts(conn: &Connection, memo: &Memo, queue: &str) -> Result<QueueCounts> {
    ensure_queue(conn, queue)?;
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
        .query_row([queue], |row| row.get(0))?;
    let stored = conn
        .prepare_cached(
            "SELECT delivered, succeeded, failed_attempts, dead_lettered
             FROM queue_counters WHERE queue = ?1",
        )?
        .query_row([queue], |row| {
            Ok(Counters {
                delivered: row.get(0)?,
                succeeded: row.get(1)?,
                failed_attempts: row.get(2)?,
                dead_lettered: row.get(3)?,
            })
        })
        .optional()?
        .unwrap_or_default();
    let pending = memo.counters.get(queue).copied().unwrap_or_default();
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
}

pub(super) fn last_tick(conn: &Connection, function: &str, now_ms: i64) -> Result<i64> {
    conn.execute(
        "INSERT INTO schedules (function, last_tick_ms) VALUES (?1, ?2)
         ON CONFLICT (function) DO NOTHING",
        params![function, now_ms],
    )?;
    Ok(conn.query_row(
        "SELECT last_tick_ms FROM schedules WHERE function = ?1",
        [function],
        |row| row.get(0),
    )?)
}

pub(super) fn claim_tick(
    conn: &Connection,
    function: &str,
    tick_ms: i64,
    lease_until_ms: i64,
) -> Result<bool> {
    let changed = conn.execute(
        "INSERT INTO schedules (function, last_tick_ms) VALUES (?1, ?2)
         ON CONFLICT (function) DO UPDATE SET last_tick_ms = excluded.last_tick_ms
         WHERE last_tick_ms < excluded.last_tick_ms",
        params![function, tick_ms],
    )?;
    if changed > 0 {
        conn.execute(
            "INSERT OR REPLACE INTO running_ticks (function, tick_ms, lease_until_ms)
             VALUES (?1, ?2, ?3)",
            params![function, tick_ms, lease_until_ms],
        )?;
    }
    Ok(changed > 0)
}

pub(super) fn finish_tick(conn: &Connection, function: &str, tick_ms: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM running_ticks WHERE function = ?1 AND tick_ms = ?2",
        params![function, tick_ms],
    )?;
    Ok(())
}

pub(super) fn reclaim_abandoned_tick(
    conn: &Connection,
    function: &str,
    lease_until_ms: i64,
) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "UPDATE running_ticks SET lease_until_ms = ?3
             WHERE function = ?1 AND tick_ms = (
                 SELECT MIN(tick_ms) FROM running_ticks
                 WHERE function = ?1 AND lease_until_ms < ?2)
             RETURNING tick_ms",
            params![function, now_ms(), lease_until_ms],
            |row| row.get(0),
        )
        .optional()?)
}

pub(super) fn another_tick_running(
    conn: &Connection,
    function: &str,
    tick_ms: i64,
) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM running_ticks
             WHERE function = ?1 AND tick_ms < ?2 AND lease_until_ms >= ?3)",
        params![function, tick_ms, now_ms()],
        |row| row.get(0),
    )?)
}

pub(super) fn forget_schedule(conn: &Connection, function: &str) -> Result<()> {
    conn.execute("DELETE FROM schedules WHERE function = ?1", [function])?;
    conn.execute("DELETE FROM running_ticks WHERE function = ?1", [function])?;
    Ok(())
}

/// Deletes the idempotency keys whose window had passed by `now`.
pub(super) fn prune_idempotency_keys(conn: &Connection, now: i64) -> Result<()> {
    conn.execute("DELETE FROM idempotency WHERE expires_at_ms <= ?1", [now])?;
    Ok(())
}

/// The id consumers see for the message in row `row` (every backend's).
pub(crate) fn message_id(row: i64) -> String {
    format!("m{row}")
}

pub(crate) fn no_queue(name: &str) -> StoreError {
    StoreError::NotFound {
        what: format!("queue `{name}`"),
    }
}

pub(super) fn queue_exists(conn: &Connection, name: &str) -> Result<bool> {
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

/// Selects queue rows with their consumer and dead-letter queue (every backend's); append a
/// WHERE or ORDER BY clause.
pub(crate) const QUEUE_SELECT: &str = "SELECT q.name, q.dead_letter_of, q.idempotency_window_ms,
        q.created_at_ms, c.settings,
        (SELECT d.name FROM queues d WHERE d.dead_letter_of = q.name)
    FROM queues q LEFT JOIN consumers c ON c.queue = q.name";

pub(crate) struct QueueRow {
    pub(crate) name: String,
    pub(crate) dead_letter_of: Option<String>,
    pub(crate) idempotency_window_ms: u64,
    pub(crate) created_at_ms: i64,
    pub(crate) consumer: Option<String>,
    pub(crate) dead_letter_queue: Option<String>,
}

impl QueueRow {
    /// The record, its consumer settings decoded.
    pub(crate) fn decode(self) -> Result<QueueRecord> {
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

pub(super) fn load_queue(conn: &Connection, name: &str) -> Result<Option<QueueRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{QUEUE_SELECT} WHERE q.name = ?1"))?;
    let row = stmt.query_row([name], queue_row).optional()?;
    row.map(QueueRow::decode).transpose()
}
