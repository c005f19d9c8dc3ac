//! What opening the queue database does to the messages a stopped node left in flight: each
//! is visible again, or dead-lettered if that was its last allowed attempt (an attempt that
//! may have run counts).

use rusqlite::{Connection, params};

use super::ConsumerSettings;
use super::operations::queue_exists;
use crate::Result;

/// After a restart: messages that were in flight are visible again, except those whose
/// last allowed attempt was in flight, which go to their consumer's dead-letter queue.
pub(super) fn recover(conn: &Connection, now: i64) -> Result<()> {
    let bindings: Vec<(String, String)> = {
        let mut stmt = conn.prepare("SELECT queue, settings FROM consumers")?;
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (queue, json) in bindings {
        let Ok(settings) = serde_json::from_str::<ConsumerSettings>(&json) else {
            continue;
        };
        if !queue_exists(conn, &settings.dead_letter)? {
            continue;
        }
        let error = "the node stopped during this message's last allowed attempt";
        let moved = conn.execute(
            "INSERT INTO messages (queue, ce_id, body, content_type, enqueued_at_ms,
                 first_enqueued_at_ms, attempts, visible_at_ms, leased, last_error)
             SELECT ?2, COALESCE(ce_id, 'm' || id), body, content_type, ?3,
                 first_enqueued_at_ms, attempts, ?3, 0, ?5
             FROM messages WHERE queue = ?1 AND leased = 1 AND attempts >= ?4 ORDER BY id",
            params![
                queue,
                settings.dead_letter,
                now,
                settings.max_attempts,
                error
            ],
        )?;
        conn.execute(
            "DELETE FROM messages WHERE queue = ?1 AND leased = 1 AND attempts >= ?2",
            params![queue, settings.max_attempts],
        )?;
        if moved > 0 {
            conn.execute(
                "INSERT INTO queue_counters (queue, delivered, succeeded, failed_attempts, dead_lettered)
                 VALUES (?1, 0, 0, ?2, ?2)
                 ON CONFLICT (queue) DO UPDATE SET
                     failed_attempts = failed_attempts + excluded.failed_attempts,
                     dead_lettered = dead_lettered + excluded.dead_lettered",
                params![queue, moved],
            )?;
        }
    }
    conn.execute(
        "UPDATE messages SET leased = 0, visible_at_ms = ?1,
             last_error = COALESCE(last_error, 'the node stopped during a delivery')
         WHERE leased = 1",
        [now],
    )?;
    Ok(())
}
