//! [`QueueBackend`] and [`TickStore`] on Postgres.
//!
//! Locks, so that nodes working one queue wait for each other only where they must:
//! - a publish locks its queue's row (`FOR NO KEY UPDATE`): publishes to one queue are
//!   serialized, which makes the depth limit, the byte quota and idempotency keys exact
//!   across nodes; claims and settlements do not take that lock;
//! - a claim takes ready messages `FOR UPDATE SKIP LOCKED`: two nodes claiming at once get
//!   different messages, neither waits;
//! - a settlement changes a message only while it is still held under the lease it names
//!   (`leased` and `visible_at_ms` equal to the lease's end): the lease end is the fencing
//!   token, so a late settlement from a lease that ran out and was claimed again changes
//!   nothing;
//! - claims, settlements, purges and redrives lock their queue's row `FOR KEY SHARE`, which
//!   only a deletion of the queue waits for.
//!
//! Depth, bytes and counters are rows of `queue_tallies`, one per queue and node; each
//! operation adds its deltas to its own node's row, and readers sum the rows.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::journal::{Reply, Request};
use super::{PgStores, announce, big, small, unsigned};
use crate::contract::{QueueBackend, TickStore};
use crate::queues::operations::{QUEUE_SELECT, QueueRow, message_id, no_queue};
use crate::queues::{
    Claimed, ConsumerSettings, DEAD_LETTER_SUFFIX, NewMessage, PeekedMessage, Published,
    QueueCounts, QueueLimits, QueueRecord, Settle,
};
use crate::store::now_ms;
use crate::{Result, StoreError};

/// Changes to one queue's tally made by one operation.
#[derive(Default, Clone, Copy)]
pub(super) struct Delta {
    depth: i64,
    bytes: i64,
    delivered: i64,
    succeeded: i64,
    failed_attempts: i64,
    dead_lettered: i64,
}

impl Delta {
    fn add(&mut self, other: Delta) {
        self.depth += other.depth;
        self.bytes += other.bytes;
        self.delivered += other.delivered;
        self.succeeded += other.succeeded;
        self.failed_attempts += other.failed_attempts;
        self.dead_lettered += other.dead_lettered;
    }

    fn is_empty(&self) -> bool {
        [
            self.depth,
            self.bytes,
            self.delivered,
            self.succeeded,
            self.failed_attempts,
            self.dead_lettered,
        ]
        .iter()
        .all(|n| *n == 0)
    }
}

/// Records in `deltas` a message of `bytes` moved from queue `from` to queue `to`; as a
/// dead letter, a failed attempt and a dead letter of `from` too.
fn moved(deltas: &mut BTreeMap<String, Delta>, from: &str, to: &str, bytes: i64, dead: bool) {
    let f = deltas.entry(from.to_owned()).or_default();
    f.depth -= 1;
    f.bytes -= bytes;
    if dead {
        f.failed_attempts += 1;
        f.dead_lettered += 1;
    }
    let t = deltas.entry(to.to_owned()).or_default();
    t.depth += 1;
    t.bytes += bytes;
}

/// Adds `deltas` to this node's tally of each queue.
pub(super) async fn tally(
    tx: &Transaction<'_>,
    node: &str,
    deltas: &BTreeMap<String, Delta>,
) -> Result<()> {
    let add = tx
        .prepare_cached(
            "INSERT INTO queue_tallies (queue, node, depth, bytes, delivered, succeeded,
                 failed_attempts, dead_lettered)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (queue, node) DO UPDATE SET
                 depth = queue_tallies.depth + excluded.depth,
                 bytes = queue_tallies.bytes + excluded.bytes,
                 delivered = queue_tallies.delivered + excluded.delivered,
                 succeeded = queue_tallies.succeeded + excluded.succeeded,
                 failed_attempts = queue_tallies.failed_attempts + excluded.failed_attempts,
                 dead_lettered = queue_tallies.dead_lettered + excluded.dead_lettered",
        )
        .await?;
    // In name order (a BTreeMap's), so two transactions never wait on each other's rows.
    for (queue, d) in deltas.iter().filter(|(_, d)| !d.is_empty()) {
        tx.execute(
            &add,
            &[
                queue,
                &node,
                &d.depth,
                &d.bytes,
                &d.delivered,
                &d.succeeded,
                &d.failed_attempts,
                &d.dead_lettered,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Whether `name` is a queue, locking its row `FOR KEY SHARE` (against its deletion) until
/// the transaction ends.
async fn hold_queue(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM queues WHERE name = $1 FOR KEY SHARE",
            &[&name],
        )
        .await?
        .is_some())
}

async fn ensure_queue(tx: &Transaction<'_>, name: &str) -> Result<()> {
    if hold_queue(tx, name).await? {
        Ok(())
    } else {
        Err(no_queue(name))
    }
}

fn queue_row(row: &Row) -> Result<QueueRecord> {
    QueueRow {
        name: row.try_get(0)?,
        dead_letter_of: row.try_get(1)?,
        idempotency_window_ms: unsigned(row.try_get(2)?, "an idempotency window")?,
        created_at_ms: row.try_get(3)?,
        consumer: row.try_get(4)?,
        dead_letter_queue: row.try_get(5)?,
    }
    .decode()
}

async fn load_queue(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<Option<QueueRecord>> {
    let row = client
        .query_opt(&format!("{QUEUE_SELECT} WHERE q.name = $1"), &[&name])
        .await?;
    row.as_ref().map(queue_row).transpose()
}

/// Copies the messages `WHERE` selects into queue `$1` (keeping their ids and first publish
/// times), ready at `$2`, with `attempts` and `last_error` as the SQL expressions given;
/// then deletes the originals. Returns each moved message's body size, for the tallies.
async fn move_messages(
    tx: &Transaction<'_>,
    filter: &str,
    attempts: &str,
    last_error: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<(String, i64)>> {
    let rows = tx
        .query(
            &format!(
                "WITH gone AS (DELETE FROM messages WHERE {filter} RETURNING *),
                 moved AS (
                     INSERT INTO messages (queue, ce_id, body, content_type, enqueued_at_ms,
                         first_enqueued_at_ms, attempts, visible_at_ms, leased, last_error)
                     SELECT $1, COALESCE(ce_id, 'm' || id), body, content_type, $2,
                         first_enqueued_at_ms, {attempts}, $2, false, {last_error}
                     FROM gone ORDER BY id
                     RETURNING 1)
                 SELECT queue, octet_length(body)::BIGINT FROM gone"
            ),
            params,
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// What opening does: the messages this node held when it stopped come back, or go to their
/// consumer's dead-letter queue when that was their last allowed attempt.
pub(super) async fn recover(stores: &PgStores) -> Result<()> {
    let node: &str = &stores.node;
    let mut client = stores.client().await?;
    let tx = client.transaction().await?;
    let now = now_ms();
    let bindings = tx
        .query(
            "SELECT DISTINCT c.queue, c.settings FROM consumers c
             JOIN messages m ON m.queue = c.queue AND m.leased AND m.holder = $1",
            &[&node],
        )
        .await?;
    let mut deltas: BTreeMap<String, Delta> = BTreeMap::new();
    for row in bindings {
        let queue: String = row.try_get(0)?;
        let settings: String = row.try_get(1)?;
        let Ok(settings) = serde_json::from_str::<ConsumerSettings>(&settings) else {
            continue;
        };
        if !hold_queue(&tx, &settings.dead_letter).await? {
            continue;
        }
        let max_attempts = i32::try_from(settings.max_attempts).unwrap_or(i32::MAX);
        let error = "the node stopped during this message's last allowed attempt";
        let moved_out = move_messages(
            &tx,
            "queue = $3 AND leased AND holder = $4 AND attempts >= $5",
            "attempts",
            "$6",
            &[
                &settings.dead_letter,
                &now,
                &queue,
                &node,
                &max_attempts,
                &error,
            ],
        )
        .await?;
        for (from, bytes) in moved_out {
            moved(&mut deltas, &from, &settings.dead_letter, bytes, true);
        }
    }
    tx.execute(
        "UPDATE messages SET leased = false, holder = NULL, visible_at_ms = $2,
             last_error = COALESCE(last_error, 'the node stopped during a delivery')
         WHERE leased AND holder = $1",
        &[&node, &now],
    )
    .await?;
    tally(&tx, node, &deltas).await?;
    tx.commit().await?;
    Ok(())
}

/// The answer of a journal that answered another kind of operation: a defect.
fn mismatched() -> StoreError {
    StoreError::Corrupt("the queue journal answered another operation".into())
}

/// Publishes `messages` to `queue` in the journal's transaction `tx`, adding what it changes
/// to `deltas` (the group's, not written yet, and counted in the limits). It fails before
/// writing anything when the queue is missing or a limit would be passed.
pub(super) async fn publish_in(
    tx: &Transaction<'_>,
    deltas: &mut BTreeMap<String, Delta>,
    queue: &str,
    messages: &[NewMessage],
    limits: QueueLimits,
) -> Result<Vec<Published>> {
    let QueueLimits {
        depth_max,
        bytes_max,
    } = limits;
    let now = now_ms();
    // Serializes publishes to this queue, cluster-wide, until the commit.
    let window: i64 = tx
        .query_opt(
            "SELECT idempotency_window_ms FROM queues WHERE name = $1 FOR NO KEY UPDATE",
            &[&queue],
        )
        .await?
        .ok_or_else(|| no_queue(queue))?
        .try_get(0)?;
    let totals = tx
        .query_one(
            "SELECT COALESCE(SUM(depth), 0)::BIGINT, COALESCE(SUM(bytes), 0)::BIGINT
             FROM queue_tallies WHERE queue = $1",
            &[&queue],
        )
        .await?;
    let pending = deltas.get(queue).copied().unwrap_or_default();
    let depth = unsigned(
        totals.try_get::<_, i64>(0)? + pending.depth,
        "a queue's depth",
    )?;
    let bytes = unsigned(
        totals.try_get::<_, i64>(1)? + pending.bytes,
        "a queue's bytes",
    )?;
    let keyed = messages.iter().any(|m| m.idempotency_key.is_some());
    if keyed {
        tx.execute(
            "DELETE FROM idempotency WHERE queue = $1 AND expires_at_ms <= $2",
            &[&queue, &now],
        )
        .await?;
    }
    // First every check, then every write: a refused publish leaves the group's
    // transaction as it found it.
    let find_key = tx
        .prepare_cached("SELECT message_id FROM idempotency WHERE queue = $1 AND key = $2")
        .await?;
    /// What becomes of each message: a duplicate of a stored one, of an earlier one of
    /// this publish (by index), or a new message.
    enum Fate {
        Seen(String),
        SameAs(usize),
        New,
    }
    let mut fates = Vec::with_capacity(messages.len());
    let mut first_with_key: std::collections::HashMap<&str, usize> = Default::default();
    let mut delta = Delta::default();
    for (index, message) in messages.iter().enumerate() {
        if let Some(key) = &message.idempotency_key {
            if let Some(seen) = tx.query_opt(&find_key, &[&queue, key]).await? {
                fates.push(Fate::Seen(seen.try_get(0)?));
                continue;
            }
            if window > 0 {
                if let Some(first) = first_with_key.get(key.as_str()) {
                    fates.push(Fate::SameAs(*first));
                    continue;
                }
                first_with_key.insert(key, index);
            }
        }
        if depth + delta.depth as u64 >= depth_max {
            return Err(StoreError::DepthLimit {
                queue: queue.to_owned(),
                depth,
                depth_max,
            });
        }
        let size = message.body.len() as u64;
        if bytes + delta.bytes as u64 + size > bytes_max {
            return Err(StoreError::BytesLimit {
                queue: queue.to_owned(),
                bytes,
                bytes_max,
            });
        }
        delta.depth += 1;
        delta.bytes += big(size);
        fates.push(Fate::New);
    }
    // Every new message in one statement, with ids taken from the sequence first, in
    // order: the message published first gets the smaller id (claims take equal times in
    // id order).
    let fresh: Vec<&NewMessage> = messages
        .iter()
        .zip(&fates)
        .filter(|(_, fate)| matches!(fate, Fate::New))
        .map(|(m, _)| m)
        .collect();
    let mut ids: Vec<i64> = Vec::with_capacity(fresh.len());
    if !fresh.is_empty() {
        let take = tx
            .prepare_cached(
                "SELECT nextval(pg_get_serial_sequence('messages', 'id'))
                 FROM generate_series(1, $1::BIGINT)",
            )
            .await?;
        for row in tx.query(&take, &[&big(fresh.len() as u64)]).await? {
            ids.push(row.try_get(0)?);
        }
        ids.sort_unstable();
        let insert = tx
            .prepare_cached(
                "INSERT INTO messages (id, queue, body, content_type, enqueued_at_ms,
                     first_enqueued_at_ms, attempts, visible_at_ms, leased)
                 OVERRIDING SYSTEM VALUE
                 SELECT id, $1, body, content_type, $4, $4, 0, $4, false
                 FROM unnest($2::BIGINT[], $3::BYTEA[], $5::TEXT[]) AS m(id, body, content_type)",
            )
            .await?;
        let bodies: Vec<&[u8]> = fresh.iter().map(|m| m.body.as_slice()).collect();
        let types: Vec<&str> = fresh.iter().map(|m| m.content_type.as_str()).collect();
        tx.execute(&insert, &[&queue, &ids, &bodies, &now, &types])
            .await?;
    }
    let mut assigned = ids.into_iter().map(message_id);
    let mut published: Vec<Published> = Vec::with_capacity(messages.len());
    let (mut keys, mut keyed_ids) = (Vec::new(), Vec::new());
    for (message, fate) in messages.iter().zip(fates) {
        let (id, duplicate) = match fate {
            Fate::Seen(id) => (id, true),
            Fate::SameAs(first) => (published[first].id.clone(), true),
            Fate::New => {
                let id = assigned
                    .next()
                    .ok_or_else(|| StoreError::Corrupt("fewer message ids than messages".into()))?;
                if let Some(key) = &message.idempotency_key
                    && window > 0
                {
                    keys.push(key.as_str());
                    keyed_ids.push(id.clone());
                }
                (id, false)
            }
        };
        published.push(Published { id, duplicate });
    }
    if !keys.is_empty() {
        let remember = tx
            .prepare_cached(
                "INSERT INTO idempotency (queue, key, message_id, expires_at_ms)
                 SELECT $1, key, message_id, $4
                 FROM unnest($2::TEXT[], $3::TEXT[]) AS k(key, message_id)
                 ON CONFLICT (queue, key) DO UPDATE SET message_id = excluded.message_id,
                     expires_at_ms = excluded.expires_at_ms",
            )
            .await?;
        tx.execute(
            &remember,
            &[&queue, &keys, &keyed_ids, &now.saturating_add(window)],
        )
        .await?;
    }
    deltas.entry(queue.to_owned()).or_default().add(delta);
    Ok(published)
}

/// Settles messages of `queue` in the journal's transaction. A settlement naming a lease
/// that is no longer the message's changes nothing (fencing). It fails before writing
/// anything when a dead-letter queue it names does not exist.
pub(super) async fn settle_in(
    tx: &Transaction<'_>,
    deltas: &mut BTreeMap<String, Delta>,
    queue: &str,
    settlements: &[Settle],
) -> Result<()> {
    let now = now_ms();
    hold_queue(tx, queue).await?;
    for settlement in settlements {
        if let Settle::DeadLetter { to, .. } = settlement
            && !hold_queue(tx, to).await?
        {
            return Err(no_queue(to));
        }
    }
    let ack = tx
        .prepare_cached(
            "DELETE FROM messages WHERE id = $1 AND queue = $2 AND leased
                 AND visible_at_ms = $3
             RETURNING octet_length(body)::BIGINT",
        )
        .await?;
    let retry = tx
        .prepare_cached(
            "UPDATE messages SET leased = false, holder = NULL, visible_at_ms = $4,
                 last_error = $5
             WHERE id = $1 AND queue = $2 AND leased AND visible_at_ms = $3",
        )
        .await?;
    let mut own: BTreeMap<String, Delta> = BTreeMap::new();
    for settlement in settlements {
        match settlement {
            Settle::Ack {
                row,
                lease_until_ms,
            } => {
                if let Some(gone) = tx.query_opt(&ack, &[row, &queue, lease_until_ms]).await? {
                    let d = own.entry(queue.to_owned()).or_default();
                    d.succeeded += 1;
                    d.depth -= 1;
                    d.bytes -= gone.try_get::<_, i64>(0)?;
                }
            }
            Settle::Retry {
                row,
                lease_until_ms,
                visible_at_ms,
                error,
            } => {
                let params: [&(dyn ToSql + Sync); 5] =
                    [row, &queue, lease_until_ms, visible_at_ms, error];
                if tx.execute(&retry, &params).await? > 0 {
                    own.entry(queue.to_owned()).or_default().failed_attempts += 1;
                }
            }
            Settle::DeadLetter {
                row,
                lease_until_ms,
                to,
                error,
            } => {
                let moved_out = move_messages(
                    tx,
                    "id = $3 AND queue = $4 AND leased AND visible_at_ms = $5",
                    "attempts",
                    "$6",
                    &[to, &now, row, &queue, lease_until_ms, error],
                )
                .await?;
                for (_, bytes) in moved_out {
                    moved(&mut own, queue, to, bytes, true);
                }
            }
        }
    }
    for (name, d) in own {
        deltas.entry(name).or_default().add(d);
    }
    Ok(())
}

/// Locks `FOR KEY SHARE` (against their deletion) the queues of `names` that exist, in name
/// order; returns their names.
pub(super) async fn hold_queues(
    tx: &Transaction<'_>,
    names: &[&str],
) -> Result<std::collections::BTreeSet<String>> {
    let names: Vec<&str> = names.to_vec();
    let rows = tx
        .query(
            "SELECT name FROM queues WHERE name = ANY($1) ORDER BY name FOR KEY SHARE",
            &[&names],
        )
        .await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// Claims of one queue made at once, `(n, lease_until_ms)` each, in one statement: the
/// ready messages go to the claims in order (the first claim's `n` to it, then the next),
/// each under its own lease. Each claim's answer as `claim_in`'s; the queue is held.
pub(super) async fn claim_many(
    tx: &Transaction<'_>,
    node: &str,
    deltas: &mut BTreeMap<String, Delta>,
    queue: &str,
    claims: &[(u32, i64)],
) -> Result<Vec<(Vec<Claimed>, Option<i64>)>> {
    let now = now_ms();
    // One lease per message slot, in the order the slots are handed out.
    let slots: Vec<i64> = claims
        .iter()
        .flat_map(|(n, lease)| std::iter::repeat_n(*lease, *n as usize))
        .collect();
    let claim = tx
        .prepare_cached(
            "WITH picked AS (
                 SELECT id, visible_at_ms FROM messages
                 WHERE queue = $1 AND visible_at_ms <= $2
                 ORDER BY visible_at_ms, id LIMIT $3
                 FOR UPDATE SKIP LOCKED),
             numbered AS (
                 SELECT id, row_number() OVER (ORDER BY visible_at_ms, id) AS slot
                 FROM picked),
             slots AS (
                 SELECT lease, slot FROM unnest($4::BIGINT[]) WITH ORDINALITY AS s(lease, slot))
             UPDATE messages m SET attempts = m.attempts + 1, leased = true,
                 visible_at_ms = slots.lease, holder = $5
             FROM numbered JOIN slots USING (slot)
             WHERE m.id = numbered.id
             RETURNING numbered.slot, m.id, m.ce_id, m.body, m.content_type, m.attempts,
                 m.enqueued_at_ms, m.first_enqueued_at_ms",
        )
        .await?;
    let rows = tx
        .query(
            &claim,
            &[&queue, &now, &big(slots.len() as u64), &slots, &node],
        )
        .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            let slot: i64 = row.try_get(0)?;
            let id: i64 = row.try_get(1)?;
            let ce_id: Option<String> = row.try_get(2)?;
            Ok((
                slot,
                Claimed {
                    row: id,
                    id: ce_id.unwrap_or_else(|| message_id(id)),
                    body: row.try_get(3)?,
                    content_type: row.try_get(4)?,
                    attempt: small(row.try_get::<_, i32>(5)?.into(), "an attempt count")?,
                    enqueued_at_ms: row.try_get(6)?,
                    first_enqueued_at_ms: row.try_get(7)?,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    claimed.sort_by_key(|(slot, _)| *slot);
    deltas.entry(queue.to_owned()).or_default().delivered += claimed.len() as i64;
    let short = claimed.len() < slots.len();
    let next: Option<i64> = if short {
        tx.query_one(
            "SELECT MIN(visible_at_ms) FROM messages WHERE queue = $1",
            &[&queue],
        )
        .await?
        .try_get(0)?
    } else {
        None
    };
    // Slots are numbered from 1: claim k holds the slots after the claims before it.
    let mut answers = Vec::with_capacity(claims.len());
    let mut taken = claimed.into_iter().peekable();
    let mut end = 0i64;
    for (n, _) in claims {
        end += i64::from(*n);
        let mut mine: Vec<Claimed> = Vec::new();
        while let Some((_, c)) = taken.next_if(|(slot, _)| *slot <= end) {
            mine.push(c);
        }
        mine.sort_by_key(|c| c.row);
        let next = if mine.len() < *n as usize { next } else { None };
        answers.push((mine, next));
    }
    Ok(answers)
}

/// Acknowledgements `(queue, row, lease_until_ms)` made at once, in one statement; each
/// deletes its message only while it is held under that lease (fencing). The queues are
/// held.
pub(super) async fn ack_many(
    tx: &Transaction<'_>,
    deltas: &mut BTreeMap<String, Delta>,
    acks: &[(&str, i64, i64)],
) -> Result<()> {
    let queues: Vec<&str> = acks.iter().map(|a| a.0).collect();
    let rows: Vec<i64> = acks.iter().map(|a| a.1).collect();
    let leases: Vec<i64> = acks.iter().map(|a| a.2).collect();
    let ack = tx
        .prepare_cached(
            "DELETE FROM messages m
             USING unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS a(queue, id, lease)
             WHERE m.id = a.id AND m.queue = a.queue AND m.leased
                 AND m.visible_at_ms = a.lease
             RETURNING m.queue, octet_length(m.body)::BIGINT",
        )
        .await?;
    for row in tx.query(&ack, &[&queues, &rows, &leases]).await? {
        let queue: String = row.try_get(0)?;
        let d = deltas.entry(queue).or_default();
        d.succeeded += 1;
        d.depth -= 1;
        d.bytes -= row.try_get::<_, i64>(1)?;
    }
    Ok(())
}

#[async_trait]
impl QueueBackend for PgStores {
    async fn create_queue(&self, name: &str, idempotency_window_ms: u64) -> Result<QueueRecord> {
        let dlq = format!("{name}{DEAD_LETTER_SUFFIX}");
        let now = now_ms();
        let window = big(idempotency_window_ms);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO queues (name, dead_letter_of, idempotency_window_ms, created_at_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .await?;
        for (queue, of) in [(&name.to_owned(), None), (&dlq, Some(name))] {
            if tx.execute(&insert, &[queue, &of, &window, &now]).await? == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("queue `{queue}`"),
                });
            }
        }
        tx.commit().await?;
        Ok(QueueRecord {
            name: name.to_owned(),
            dead_letter_queue: Some(dlq),
            dead_letter_of: None,
            idempotency_window_ms,
            created_at_ms: now,
            consumer: None,
        })
    }

    async fn delete_queue(&self, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let dlq = format!("{name}{DEAD_LETTER_SUFFIX}");
        // Locks both rows against every other operation on them until the deletion commits.
        let locked = tx
            .query(
                "SELECT name, dead_letter_of FROM queues WHERE name = $1 OR name = $2
                 ORDER BY name FOR UPDATE",
                &[&name, &dlq],
            )
            .await?;
        let Some(queue) = locked.iter().find(|row| row.get::<_, String>(0) == name) else {
            return Ok(false);
        };
        if let Some(of) = queue.try_get::<_, Option<String>>(1)? {
            return Err(StoreError::Conflict(format!(
                "`{name}` is the dead-letter queue of `{of}`; it is deleted with `{of}`"
            )));
        }
        let user = tx
            .query_opt(
                "SELECT queue FROM consumers WHERE queue <> $1 AND dead_letter IN ($1, $2)
                 ORDER BY queue LIMIT 1",
                &[&name, &dlq],
            )
            .await?;
        if let Some(user) = user {
            let user: String = user.try_get(0)?;
            return Err(StoreError::Conflict(format!(
                "the consumer of `{user}` dead-letters into `{name}`; change or remove that consumer first"
            )));
        }
        // Messages, keys, tallies and the consumer go by ON DELETE CASCADE.
        tx.execute(
            "DELETE FROM queues WHERE name = $1 OR name = $2",
            &[&name, &dlq],
        )
        .await?;
        announce(&tx, "queues").await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_queues(&self) -> Result<Vec<QueueRecord>> {
        let rows = self
            .client()
            .await?
            .query(&format!("{QUEUE_SELECT} ORDER BY q.name"), &[])
            .await?;
        rows.iter().map(queue_row).collect()
    }

    async fn queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        load_queue(&**self.client().await?, name).await
    }

    async fn set_consumer(&self, queue: &str, settings: ConsumerSettings) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        ensure_queue(&tx, queue).await?;
        ensure_queue(&tx, &settings.dead_letter).await?;
        if settings.dead_letter == queue {
            return Err(StoreError::Conflict(format!(
                "`{queue}` cannot be its own dead-letter queue"
            )));
        }
        let json = serde_json::to_string(&settings)
            .map_err(|e| StoreError::Corrupt(format!("consumer settings: {e}")))?;
        tx.execute(
            "INSERT INTO consumers (queue, settings, dead_letter) VALUES ($1, $2, $3)
             ON CONFLICT (queue) DO UPDATE SET settings = excluded.settings,
                 dead_letter = excluded.dead_letter",
            &[&queue, &json, &settings.dead_letter],
        )
        .await?;
        announce(&tx, "queues").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_consumer(&self, queue: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        ensure_queue(&tx, queue).await?;
        let removed = tx
            .execute("DELETE FROM consumers WHERE queue = $1", &[&queue])
            .await?;
        if removed > 0 {
            announce(&tx, "queues").await?;
        }
        tx.commit().await?;
        Ok(removed > 0)
    }

    async fn publish(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        limits: QueueLimits,
    ) -> Result<Vec<Published>> {
        let request = Request::Publish {
            queue: queue.to_owned(),
            messages,
            limits,
        };
        match self.journal.submit(request).await? {
            Reply::Published(published) => Ok(published),
            _ => Err(mismatched()),
        }
    }

    async fn claim(
        &self,
        queue: &str,
        n: u32,
        lease_until_ms: i64,
    ) -> Result<(Vec<Claimed>, Option<i64>)> {
        let request = Request::Claim {
            queue: queue.to_owned(),
            n,
            lease_until_ms,
        };
        match self.journal.submit(request).await? {
            Reply::Claimed(claimed, next) => Ok((claimed, next)),
            _ => Err(mismatched()),
        }
    }

    async fn settle(&self, queue: &str, settlements: Vec<Settle>) -> Result<()> {
        let request = Request::Settle {
            queue: queue.to_owned(),
            settlements,
        };
        match self.journal.submit(request).await? {
            Reply::Settled => Ok(()),
            _ => Err(mismatched()),
        }
    }

    async fn peek(&self, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        ensure_queue(&tx, queue).await?;
        let rows = tx
            .query(
                "SELECT id, ce_id, body, content_type, attempts, enqueued_at_ms,
                     first_enqueued_at_ms, visible_at_ms, leased, last_error
                 FROM messages WHERE queue = $1 ORDER BY id LIMIT $2",
                &[&queue, &i64::from(limit)],
            )
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0)?;
                let ce_id: Option<String> = row.try_get(1)?;
                Ok(PeekedMessage {
                    id: ce_id.unwrap_or_else(|| message_id(id)),
                    body: row.try_get(2)?,
                    content_type: row.try_get(3)?,
                    attempts: small(row.try_get::<_, i32>(4)?.into(), "an attempt count")?,
                    enqueued_at_ms: row.try_get(5)?,
                    first_enqueued_at_ms: row.try_get(6)?,
                    visible_at_ms: row.try_get(7)?,
                    in_flight: row.try_get(8)?,
                    last_error: row.try_get(9)?,
                })
            })
            .collect()
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        ensure_queue(&tx, queue).await?;
        let rows = tx
            .query(
                "DELETE FROM messages WHERE queue = $1 AND NOT leased
                 RETURNING octet_length(body)::BIGINT",
                &[&queue],
            )
            .await?;
        let mut delta = Delta::default();
        for row in &rows {
            delta.depth -= 1;
            delta.bytes -= row.try_get::<_, i64>(0)?;
        }
        tally(
            &tx,
            &self.node,
            &BTreeMap::from([(queue.to_owned(), delta)]),
        )
        .await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn redrive(&self, from: &str, to: &str) -> Result<u64> {
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Both rows locked in name order, as `delete_queue` takes them: no deadlock.
        let held: Vec<String> = tx
            .query(
                "SELECT name FROM queues WHERE name = $1 OR name = $2 ORDER BY name
                 FOR KEY SHARE",
                &[&from, &to],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        for queue in [from, to] {
            if !held.iter().any(|h| h == queue) {
                return Err(no_queue(queue));
            }
        }
        let moved_out = move_messages(
            &tx,
            "queue = $3 AND NOT leased",
            "0",
            "last_error",
            &[&to, &now, &from],
        )
        .await?;
        let mut deltas: BTreeMap<String, Delta> = BTreeMap::new();
        for (_, bytes) in &moved_out {
            moved(&mut deltas, from, to, *bytes, false);
        }
        tally(&tx, &self.node, &deltas).await?;
        tx.commit().await?;
        Ok(moved_out.len() as u64)
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let now = now_ms();
        let client = self.client().await?;
        // One snapshot for the messages and the tallies.
        let row = client
            .query_opt(
                "SELECT
                     (SELECT COUNT(*) FROM messages WHERE queue = q.name),
                     (SELECT COUNT(*) FROM messages WHERE queue = q.name AND leased),
                     (SELECT COUNT(*) FROM messages
                      WHERE queue = q.name AND NOT leased AND visible_at_ms <= $2),
                     (SELECT MIN(enqueued_at_ms) FROM messages WHERE queue = q.name),
                     t.bytes, t.delivered, t.succeeded, t.failed_attempts, t.dead_lettered
                 FROM queues q, LATERAL (
                     SELECT COALESCE(SUM(bytes), 0)::BIGINT AS bytes,
                         COALESCE(SUM(delivered), 0)::BIGINT AS delivered,
                         COALESCE(SUM(succeeded), 0)::BIGINT AS succeeded,
                         COALESCE(SUM(failed_attempts), 0)::BIGINT AS failed_attempts,
                         COALESCE(SUM(dead_lettered), 0)::BIGINT AS dead_lettered
                     FROM queue_tallies WHERE queue = q.name) t
                 WHERE q.name = $1",
                &[&queue, &now],
            )
            .await?
            .ok_or_else(|| no_queue(queue))?;
        let u = |i: usize, what: &str| -> Result<u64> { unsigned(row.try_get(i)?, what) };
        let depth = u(0, "a queue's depth")?;
        let in_flight = u(1, "a queue's in-flight count")?;
        let ready = u(2, "a queue's ready count")?;
        Ok(QueueCounts {
            depth,
            bytes: u(4, "a queue's bytes")?,
            ready,
            in_flight,
            delayed: depth.saturating_sub(in_flight + ready),
            delivered: u(5, "a queue's deliveries")?,
            succeeded: u(6, "a queue's successes")?,
            failed_attempts: u(7, "a queue's failed attempts")?,
            dead_lettered: u(8, "a queue's dead letters")?,
            oldest_enqueued_at_ms: row.try_get(3)?,
        })
    }
}

#[async_trait]
impl TickStore for PgStores {
    async fn last_tick(&self, function: &str, now_ms: i64) -> Result<i64> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO schedules (function, last_tick_ms) VALUES ($1, $2)
                 ON CONFLICT (function) DO NOTHING",
                &[&function, &now_ms],
            )
            .await?;
        Ok(client
            .query_one(
                "SELECT last_tick_ms FROM schedules WHERE function = $1",
                &[&function],
            )
            .await?
            .try_get(0)?)
    }

    async fn claim_tick(&self, function: &str, tick_ms: i64, lease_until_ms: i64) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "INSERT INTO schedules (function, last_tick_ms) VALUES ($1, $2)
                 ON CONFLICT (function) DO UPDATE SET last_tick_ms = excluded.last_tick_ms
                 WHERE schedules.last_tick_ms < excluded.last_tick_ms",
                &[&function, &tick_ms],
            )
            .await?;
        if changed > 0 {
            tx.execute(
                "INSERT INTO running_ticks (function, tick_ms, lease_until_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (function, tick_ms) DO UPDATE SET
                     lease_until_ms = excluded.lease_until_ms",
                &[&function, &tick_ms, &lease_until_ms],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn finish_tick(&self, function: &str, tick_ms: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM running_ticks WHERE function = $1 AND tick_ms = $2",
                &[&function, &tick_ms],
            )
            .await?;
        Ok(())
    }

    async fn reclaim_abandoned_tick(
        &self,
        function: &str,
        lease_until_ms: i64,
    ) -> Result<Option<i64>> {
        // SKIP LOCKED: of nodes looking at once, one takes the tick; the others see its
        // new lease once it commits.
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE running_ticks r SET lease_until_ms = $3
                 FROM (SELECT function, tick_ms FROM running_ticks
                       WHERE function = $1 AND lease_until_ms < $2
                       ORDER BY tick_ms LIMIT 1 FOR UPDATE SKIP LOCKED) abandoned
                 WHERE r.function = abandoned.function AND r.tick_ms = abandoned.tick_ms
                 RETURNING r.tick_ms",
                &[&function, &now_ms(), &lease_until_ms],
            )
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn another_tick_running(&self, function: &str, tick_ms: i64) -> Result<bool> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM running_ticks
                     WHERE function = $1 AND tick_ms < $2 AND lease_until_ms >= $3)",
                &[&function, &tick_ms, &now_ms()],
            )
            .await?
            .try_get(0)?)
    }

    async fn forget_schedule(&self, function: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM schedules WHERE function = $1", &[&function])
            .await?;
        tx.execute(
            "DELETE FROM running_ticks WHERE function = $1",
            &[&function],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
