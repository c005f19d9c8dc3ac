//! Per-function, per-minute invocation totals: merged on write, read back by range.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{LatencyHistogram, Result, Rollup, Store, StoreError};

impl Store {
    /// Adds each `(function, minute_ms, totals)` to the stored minute (creating it), in one
    /// transaction, then deletes minutes before `cutoff_ms`. Totals of functions that no
    /// longer exist are dropped.
    pub fn add_rollups(&self, rollups: &[(String, i64, Rollup)], cutoff_ms: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM functions WHERE name = ?1")?;
            let mut read = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invocation_minutes WHERE function = ?1 AND minute_ms = ?2"
            ))?;
            let mut write = tx.prepare_cached(
                "INSERT OR REPLACE INTO invocation_minutes
                     (function, minute_ms, invocations, errors, rejected, cold_starts, wall_us,
                      cpu_us, instantiate_us, request_bytes, response_bytes, memory_bytes_peak,
                      outcomes, latency, connection_ms, billed_ms, memory_limit_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17)",
            )?;
            for (function, minute_ms, add) in rollups {
                if !exists.exists(params![function])? {
                    continue;
                }
                let mut total = read
                    .query_row(params![function, minute_ms], row_rollup)
                    .optional()?
                    .transpose()?
                    .unwrap_or_default();
                total.merge(add);
                write.execute(params![
                    function,
                    minute_ms,
                    total.invocations,
                    total.errors,
                    total.rejected,
                    total.cold_starts,
                    total.wall_us,
                    total.cpu_us,
                    total.instantiate_us,
                    total.request_bytes,
                    total.response_bytes,
                    total.memory_bytes_peak,
                    encode(&total.outcomes)?,
                    encode(&total.latency)?,
                    total.connection_ms,
                    total.billed_ms,
                    total.memory_limit_bytes,
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM invocation_minutes WHERE minute_ms < ?1",
            params![cutoff_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The stored minutes of `function` from `since_minute_ms` on, oldest first.
    pub fn rollups(&self, function: &str, since_minute_ms: i64) -> Result<Vec<(i64, Rollup)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT minute_ms, {COLUMNS} FROM invocation_minutes
             WHERE function = ?1 AND minute_ms >= ?2 ORDER BY minute_ms"
        ))?;
        let rows = stmt.query_map(params![function, since_minute_ms], |row| {
            let minute: i64 = row.get(0)?;
            Ok((minute, row_rollup_at(row, 1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (minute, rollup) = row?;
            out.push((minute, rollup?));
        }
        Ok(out)
    }

    /// Every function's stored minutes from `since_minute_ms` on, by function then minute.
    pub fn every_rollup(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT function, minute_ms, {COLUMNS} FROM invocation_minutes
             WHERE minute_ms >= ?1 ORDER BY function, minute_ms"
        ))?;
        let rows = stmt.query_map(params![since_minute_ms], |row| {
            let function: String = row.get(0)?;
            let minute: i64 = row.get(1)?;
            Ok((function, minute, row_rollup_at(row, 2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (function, minute, rollup) = row?;
            out.push((function, minute, rollup?));
        }
        Ok(out)
    }
}

impl Store {
    /// Every function's stored minutes from `since_minute_ms` on, oldest first, with only
    /// what prices them: invocations, wall, billed and CPU time, and the memory limit.
    pub fn cost_minutes(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        self.cost_rows(
            "SELECT function, minute_ms, invocations, wall_us, cpu_us, billed_ms,
                    memory_limit_bytes
             FROM invocation_minutes WHERE minute_ms >= ?1 ORDER BY minute_ms, function",
            since_minute_ms,
        )
    }

    /// What `cost_minutes` holds, summed per function and memory limit (prices are linear
    /// in each); each total is dated `since_minute_ms`.
    pub fn cost_totals(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        self.cost_rows(
            "SELECT function, ?1, SUM(invocations), SUM(wall_us), SUM(cpu_us), SUM(billed_ms),
                    memory_limit_bytes
             FROM invocation_minutes WHERE minute_ms >= ?1
             GROUP BY function, memory_limit_bytes ORDER BY function, memory_limit_bytes",
            since_minute_ms,
        )
    }

    fn cost_rows(&self, sql: &str, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![since_minute_ms], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                Rollup {
                    invocations: row.get(2)?,
                    wall_us: row.get(3)?,
                    cpu_us: row.get(4)?,
                    billed_ms: row.get(5)?,
                    memory_limit_bytes: row.get(6)?,
                    ..Rollup::default()
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

const COLUMNS: &str = "invocations, errors, rejected, cold_starts, wall_us, cpu_us, \
     instantiate_us, request_bytes, response_bytes, memory_bytes_peak, outcomes, latency, \
     connection_ms, billed_ms, memory_limit_bytes";

fn row_rollup(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Rollup>> {
    row_rollup_at(row, 0)
}

/// Reads the `COLUMNS` starting at `at`; the JSON columns decode into the inner result.
fn row_rollup_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Result<Rollup>> {
    let outcomes: String = row.get(at + 10)?;
    let latency: String = row.get(at + 11)?;
    let mut rollup = Rollup {
        invocations: row.get(at)?,
        errors: row.get(at + 1)?,
        rejected: row.get(at + 2)?,
        cold_starts: row.get(at + 3)?,
        wall_us: row.get(at + 4)?,
        cpu_us: row.get(at + 5)?,
        instantiate_us: row.get(at + 6)?,
        request_bytes: row.get(at + 7)?,
        response_bytes: row.get(at + 8)?,
        memory_bytes_peak: row.get(at + 9)?,
        connection_ms: row.get(at + 12)?,
        billed_ms: row.get(at + 13)?,
        memory_limit_bytes: row.get(at + 14)?,
        ..Rollup::default()
    };
    Ok(decode(&outcomes).and_then(|outcomes| {
        rollup.outcomes = outcomes;
        rollup.latency = decode::<LatencyHistogram>(&latency)?;
        Ok(rollup)
    }))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("rollup does not encode as JSON: {e}")))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored rollup is not valid JSON: {e}")))
}
