//! Invocation records (request metadata plus captured logs): appending batches with retention,
//! and reading them by cursor or from the tail.

use std::collections::BTreeSet;

use rusqlite::{Row, TransactionBehavior, params};

use crate::store::now_ms;
use crate::{InvocationRecord, NewInvocation, Result, Retention, Store};

impl Store {
    /// Inserts `batch` in one transaction, then applies `retention`: keeps the newest
    /// `invocations_per_function_max` records of each function in the batch and deletes every
    /// record (of any function) with `at_ms` before `now - retention_ms`, where `now` is the
    /// later of the system clock and the newest `at_ms` in the batch.
    ///
    /// Records of functions that no longer exist (removed while the request ran) are dropped.
    pub fn append_invocations(&self, batch: &[NewInvocation], retention: Retention) -> Result<()> {
        let Some(newest_at_ms) = batch.iter().map(|inv| inv.at_ms).max() else {
            return Ok(());
        };
        let cutoff_ms = now_ms()
            .max(newest_at_ms)
            .saturating_sub(retention.retention_ms);
        let keep = i64::try_from(retention.invocations_per_function_max).unwrap_or(i64::MAX);

        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO invocations
                     (function, version, at_ms, method, path, status, outcome, duration_us, log,
                      cpu_us, instantiate_us, memory_bytes_peak, request_bytes, response_bytes,
                     node)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
                 WHERE EXISTS (SELECT 1 FROM functions WHERE name = ?1)",
            )?;
            for inv in batch {
                insert.execute(params![
                    inv.function,
                    inv.version,
                    inv.at_ms,
                    inv.method,
                    inv.path,
                    inv.status,
                    inv.outcome,
                    inv.duration_us,
                    inv.log,
                    inv.cpu_us,
                    inv.instantiate_us,
                    inv.memory_bytes_peak,
                    inv.request_bytes,
                    inv.response_bytes,
                    inv.node
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM invocations WHERE at_ms < ?1",
            params![cutoff_ms],
        )?;
        let functions: BTreeSet<&str> = batch.iter().map(|inv| inv.function.as_str()).collect();
        for function in functions {
            // Deletes everything at or below the id of the first record past the newest `keep`.
            tx.execute(
                "DELETE FROM invocations WHERE function = ?1 AND id <= (
                     SELECT id FROM invocations WHERE function = ?1
                     ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![function, keep],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes every record older than `retention.retention_ms`, for nodes that have had no
    /// traffic to trigger it. Returns how many were deleted.
    pub fn expire_invocations(&self, retention: Retention) -> Result<usize> {
        let cutoff_ms = now_ms().saturating_sub(retention.retention_ms);
        Ok(self.conn().execute(
            "DELETE FROM invocations WHERE at_ms < ?1",
            params![cutoff_ms],
        )?)
    }

    /// Records of `function` with `id > after_id`, oldest first, at most `limit`. Empty if the
    /// function does not exist.
    pub fn invocations_after(
        &self,
        function: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM invocations WHERE function = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![function, after_id, sql_limit(limit)],
            invocation_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest `limit` records of `function`, oldest first. Empty if the function does not
    /// exist.
    pub fn invocations_tail(&self, function: &str, limit: usize) -> Result<Vec<InvocationRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM invocations WHERE function = ?1
                            ORDER BY id DESC LIMIT ?2)
             ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![function, sql_limit(limit)], invocation_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

const COLUMNS: &str = "id, function, version, at_ms, method, path, status, outcome, duration_us, log, \
     cpu_us, instantiate_us, memory_bytes_peak, request_bytes, response_bytes, node";

/// SQLite takes limits as i64; anything larger means "no limit".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn invocation_row(row: &Row<'_>) -> rusqlite::Result<InvocationRecord> {
    Ok(InvocationRecord {
        id: row.get(0)?,
        invocation: NewInvocation {
            function: row.get(1)?,
            version: row.get(2)?,
            at_ms: row.get(3)?,
            method: row.get(4)?,
            path: row.get(5)?,
            status: row.get(6)?,
            outcome: row.get(7)?,
            duration_us: row.get(8)?,
            log: row.get(9)?,
            cpu_us: row.get(10)?,
            instantiate_us: row.get(11)?,
            memory_bytes_peak: row.get(12)?,
            request_bytes: row.get(13)?,
            response_bytes: row.get(14)?,
            node: row.get(15)?,
        },
    })
}
