//! [`InvocationStore`] and [`CostStore`] on Postgres. Appends hold the `INVOCATIONS` lock so
//! ids are given in commit order (a cursor never passes a record that commits later);
//! rollup merges hold `ROLLUPS` so two nodes adding to one minute both count.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStores, big, lock, locks, unsigned};
use crate::contract::{CostStore, InvocationStore};
use crate::rollups::{decode, encode};
use crate::store::now_ms;
use crate::{
    BudgetRecord, InvocationRecord, LatencyHistogram, NewInvocation, Result, Retention, Rollup,
};

const COLUMNS: &str = "id, function, version, at_ms, method, path, status, outcome, duration_us, \
     log, cpu_us, instantiate_us, memory_bytes_peak, request_bytes, response_bytes, node";

fn invocation_row(row: &Row) -> Result<InvocationRecord> {
    let u = |i: usize, what: &str| -> Result<u64> { unsigned(row.try_get(i)?, what) };
    Ok(InvocationRecord {
        id: row.try_get(0)?,
        invocation: NewInvocation {
            function: row.try_get(1)?,
            version: u32::try_from(row.try_get::<_, i32>(2)?).unwrap_or(0),
            at_ms: row.try_get(3)?,
            method: row.try_get(4)?,
            path: row.try_get(5)?,
            status: u16::try_from(row.try_get::<_, i32>(6)?).unwrap_or(0),
            outcome: row.try_get(7)?,
            duration_us: u(8, "duration_us")?,
            log: row.try_get(9)?,
            cpu_us: u(10, "cpu_us")?,
            instantiate_us: row
                .try_get::<_, Option<i64>>(11)?
                .map(|n| unsigned(n, "instantiate_us"))
                .transpose()?,
            memory_bytes_peak: u(12, "memory_bytes_peak")?,
            request_bytes: u(13, "request_bytes")?,
            response_bytes: u(14, "response_bytes")?,
            node: row.try_get(15)?,
        },
    })
}

/// A limit as Postgres's `LIMIT` takes it (anything larger means "no limit").
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const ROLLUP_COLUMNS: &str = "invocations, errors, rejected, cold_starts, wall_us, cpu_us, \
     instantiate_us, request_bytes, response_bytes, memory_bytes_peak, outcomes, latency, \
     connection_ms, billed_ms, memory_limit_bytes";

/// Reads the `ROLLUP_COLUMNS` starting at `at`.
fn rollup_row(row: &Row, at: usize) -> Result<Rollup> {
    let u = |i: usize| -> Result<u64> { unsigned(row.try_get(at + i)?, "a rollup total") };
    let outcomes: String = row.try_get(at + 10)?;
    let latency: String = row.try_get(at + 11)?;
    Ok(Rollup {
        invocations: u(0)?,
        errors: u(1)?,
        rejected: u(2)?,
        cold_starts: u(3)?,
        wall_us: u(4)?,
        cpu_us: u(5)?,
        instantiate_us: u(6)?,
        request_bytes: u(7)?,
        response_bytes: u(8)?,
        memory_bytes_peak: u(9)?,
        outcomes: decode(&outcomes)?,
        latency: decode::<LatencyHistogram>(&latency)?,
        connection_ms: u(12)?,
        billed_ms: u(13)?,
        memory_limit_bytes: u(14)?,
    })
}

/// Reads what prices a minute: `function, minute, invocations, wall_us, cpu_us, billed_ms,
/// memory_limit_bytes`.
fn cost_row(row: &Row) -> Result<(String, i64, Rollup)> {
    let u = |i: usize| -> Result<u64> { unsigned(row.try_get(i)?, "a cost total") };
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        Rollup {
            invocations: u(2)?,
            wall_us: u(3)?,
            cpu_us: u(4)?,
            billed_ms: u(5)?,
            memory_limit_bytes: u(6)?,
            ..Rollup::default()
        },
    ))
}

fn budget_row(row: &Row) -> Result<BudgetRecord> {
    Ok(BudgetRecord {
        scope: row.try_get(0)?,
        settings: row.try_get(1)?,
        alerted_month: row.try_get(2)?,
        alerted_percent: row.try_get(3)?,
    })
}

#[async_trait]
impl InvocationStore for PgStores {
    async fn append_invocations(
        &self,
        batch: Vec<NewInvocation>,
        retention: Retention,
    ) -> Result<()> {
        let Some(newest_at_ms) = batch.iter().map(|inv| inv.at_ms).max() else {
            return Ok(());
        };
        let cutoff_ms = now_ms()
            .max(newest_at_ms)
            .saturating_sub(retention.retention_ms);
        let keep = sql_limit(retention.invocations_per_function_max);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, locks::INVOCATIONS).await?;
        // One statement for the batch; ids follow the batch's order.
        let insert = tx
            .prepare_cached(
                "INSERT INTO invocations
                     (function, version, at_ms, method, path, status, outcome, duration_us, log,
                      cpu_us, instantiate_us, memory_bytes_peak, request_bytes, response_bytes,
                      node)
                 SELECT r.function, r.version, r.at_ms, r.method, r.path, r.status, r.outcome,
                     r.duration_us, r.log, r.cpu_us, r.instantiate_us, r.memory_bytes_peak,
                     r.request_bytes, r.response_bytes, r.node
                 FROM unnest($1::TEXT[], $2::INTEGER[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
                     $6::INTEGER[], $7::TEXT[], $8::BIGINT[], $9::TEXT[], $10::BIGINT[],
                     $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::TEXT[])
                     WITH ORDINALITY AS r(function, version, at_ms, method, path, status,
                         outcome, duration_us, log, cpu_us, instantiate_us, memory_bytes_peak,
                         request_bytes, response_bytes, node, ord)
                 WHERE EXISTS (SELECT 1 FROM functions WHERE name = r.function)
                 ORDER BY r.ord",
            )
            .await?;
        let column = |f: fn(&NewInvocation) -> i64| batch.iter().map(f).collect::<Vec<i64>>();
        let text = |f: fn(&NewInvocation) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
        let functions = text(|i| &i.function);
        let versions: Vec<i32> = batch
            .iter()
            .map(|i| i32::try_from(i.version).unwrap_or(i32::MAX))
            .collect();
        let at = column(|i| i.at_ms);
        let methods = text(|i| &i.method);
        let paths = text(|i| &i.path);
        let statuses: Vec<i32> = batch.iter().map(|i| i32::from(i.status)).collect();
        let outcomes = text(|i| &i.outcome);
        let durations = column(|i| big(i.duration_us));
        let logs = text(|i| &i.log);
        let cpu = column(|i| big(i.cpu_us));
        let instantiate: Vec<Option<i64>> =
            batch.iter().map(|i| i.instantiate_us.map(big)).collect();
        let peaks = column(|i| big(i.memory_bytes_peak));
        let requests = column(|i| big(i.request_bytes));
        let responses = column(|i| big(i.response_bytes));
        let nodes = text(|i| &i.node);
        let params: [&(dyn ToSql + Sync); 15] = [
            &functions,
            &versions,
            &at,
            &methods,
            &paths,
            &statuses,
            &outcomes,
            &durations,
            &logs,
            &cpu,
            &instantiate,
            &peaks,
            &requests,
            &responses,
            &nodes,
        ];
        tx.execute(&insert, &params).await?;
        tx.execute("DELETE FROM invocations WHERE at_ms < $1", &[&cutoff_ms])
            .await?;
        let functions: BTreeSet<&str> = batch.iter().map(|inv| inv.function.as_str()).collect();
        for function in functions {
            // Deletes everything at or below the id of the first record past the newest `keep`.
            tx.execute(
                "DELETE FROM invocations WHERE function = $1 AND id <= (
                     SELECT id FROM invocations WHERE function = $1
                     ORDER BY id DESC LIMIT 1 OFFSET $2)",
                &[&function, &keep],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn expire_invocations(&self, retention: Retention) -> Result<usize> {
        let cutoff_ms = now_ms().saturating_sub(retention.retention_ms);
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM invocations WHERE at_ms < $1", &[&cutoff_ms])
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn invocations_after(
        &self,
        function: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM invocations WHERE function = $1 AND id > $2
                     ORDER BY id LIMIT $3"
                ),
                &[&function, &after_id, &sql_limit(limit)],
            )
            .await?;
        rows.iter().map(invocation_row).collect()
    }

    async fn invocations_tail(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT * FROM (SELECT {COLUMNS} FROM invocations WHERE function = $1
                                    ORDER BY id DESC LIMIT $2) newest
                     ORDER BY id"
                ),
                &[&function, &sql_limit(limit)],
            )
            .await?;
        rows.iter().map(invocation_row).collect()
    }

    async fn add_rollups(
        &self,
        mut rollups: Vec<(String, i64, Rollup)>,
        cutoff_ms: i64,
    ) -> Result<()> {
        rollups.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, locks::ROLLUPS).await?;
        let read = tx
            .prepare_cached(&format!(
                "SELECT {ROLLUP_COLUMNS} FROM invocation_minutes
                 WHERE function = $1 AND minute_ms = $2"
            ))
            .await?;
        let write = tx
            .prepare_cached(
                "INSERT INTO invocation_minutes
                     (function, minute_ms, invocations, errors, rejected, cold_starts, wall_us,
                      cpu_us, instantiate_us, request_bytes, response_bytes, memory_bytes_peak,
                      outcomes, latency, connection_ms, billed_ms, memory_limit_bytes)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
                 WHERE EXISTS (SELECT 1 FROM functions WHERE name = $1)
                 ON CONFLICT (function, minute_ms) DO UPDATE SET
                     invocations = excluded.invocations, errors = excluded.errors,
                     rejected = excluded.rejected, cold_starts = excluded.cold_starts,
                     wall_us = excluded.wall_us, cpu_us = excluded.cpu_us,
                     instantiate_us = excluded.instantiate_us,
                     request_bytes = excluded.request_bytes,
                     response_bytes = excluded.response_bytes,
                     memory_bytes_peak = excluded.memory_bytes_peak,
                     outcomes = excluded.outcomes, latency = excluded.latency,
                     connection_ms = excluded.connection_ms, billed_ms = excluded.billed_ms,
                     memory_limit_bytes = excluded.memory_limit_bytes",
            )
            .await?;
        let add_share = tx
            .prepare_cached(
                "INSERT INTO node_minutes (function, minute_ms, node, invocations, errors,
                     rejected, cold_starts, wall_us, cpu_us, billed_ms)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
                 WHERE EXISTS (SELECT 1 FROM functions WHERE name = $1)
                 ON CONFLICT (function, minute_ms, node) DO UPDATE SET
                     invocations = node_minutes.invocations + excluded.invocations,
                     errors = node_minutes.errors + excluded.errors,
                     rejected = node_minutes.rejected + excluded.rejected,
                     cold_starts = node_minutes.cold_starts + excluded.cold_starts,
                     wall_us = node_minutes.wall_us + excluded.wall_us,
                     cpu_us = node_minutes.cpu_us + excluded.cpu_us,
                     billed_ms = node_minutes.billed_ms + excluded.billed_ms",
            )
            .await?;
        for (function, minute_ms, add) in &rollups {
            let mut total = match tx.query_opt(&read, &[function, minute_ms]).await? {
                Some(row) => rollup_row(&row, 0)?,
                None => Rollup::default(),
            };
            total.merge(add);
            let numbers = [
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
            ]
            .map(big);
            let (outcomes, latency) = (encode(&total.outcomes)?, encode(&total.latency)?);
            let tail = [
                total.connection_ms,
                total.billed_ms,
                total.memory_limit_bytes,
            ]
            .map(big);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![function, minute_ms];
            params.extend(numbers.iter().map(|n| n as &(dyn ToSql + Sync)));
            params.push(&outcomes);
            params.push(&latency);
            params.extend(tail.iter().map(|n| n as &(dyn ToSql + Sync)));
            tx.execute(&write, &params).await?;
            let share = [
                add.invocations,
                add.errors,
                add.rejected,
                add.cold_starts,
                add.wall_us,
                add.cpu_us,
                add.billed_ms,
            ]
            .map(big);
            let node: &str = &self.node;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![function, minute_ms, &node];
            params.extend(share.iter().map(|n| n as &(dyn ToSql + Sync)));
            tx.execute(&add_share, &params).await?;
        }
        tx.execute(
            "DELETE FROM invocation_minutes WHERE minute_ms < $1",
            &[&cutoff_ms],
        )
        .await?;
        tx.execute(
            "DELETE FROM node_minutes WHERE minute_ms < $1",
            &[&cutoff_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rollups(&self, function: &str, since_minute_ms: i64) -> Result<Vec<(i64, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT minute_ms, {ROLLUP_COLUMNS} FROM invocation_minutes
                     WHERE function = $1 AND minute_ms >= $2 ORDER BY minute_ms"
                ),
                &[&function, &since_minute_ms],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, rollup_row(row, 1)?)))
            .collect()
    }

    async fn every_rollup(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT function, minute_ms, {ROLLUP_COLUMNS} FROM invocation_minutes
                     WHERE minute_ms >= $1 ORDER BY function, minute_ms"
                ),
                &[&since_minute_ms],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, rollup_row(row, 2)?)))
            .collect()
    }

    async fn rollup_shares(
        &self,
        function: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT node, SUM(invocations)::BIGINT, SUM(errors)::BIGINT,
                     SUM(rejected)::BIGINT, SUM(cold_starts)::BIGINT, SUM(wall_us)::BIGINT,
                     SUM(cpu_us)::BIGINT, SUM(billed_ms)::BIGINT
                 FROM node_minutes WHERE function = $1 AND minute_ms >= $2
                 GROUP BY node ORDER BY node",
                &[&function, &since_minute_ms],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let count = |i: usize| -> Result<u64> { unsigned(row.try_get(i)?, "a share") };
                Ok((
                    row.try_get(0)?,
                    Rollup {
                        invocations: count(1)?,
                        errors: count(2)?,
                        rejected: count(3)?,
                        cold_starts: count(4)?,
                        wall_us: count(5)?,
                        cpu_us: count(6)?,
                        billed_ms: count(7)?,
                        ..Rollup::default()
                    },
                ))
            })
            .collect()
    }

    async fn cost_minutes(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT function, minute_ms, invocations, wall_us, cpu_us, billed_ms,
                        memory_limit_bytes
                 FROM invocation_minutes WHERE minute_ms >= $1 ORDER BY minute_ms, function",
                &[&since_minute_ms],
            )
            .await?;
        rows.iter().map(cost_row).collect()
    }

    async fn cost_shares(
        &self,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, String, i64, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT n.function, $1::BIGINT, SUM(n.invocations)::BIGINT,
                        SUM(n.wall_us)::BIGINT, SUM(n.cpu_us)::BIGINT, SUM(n.billed_ms)::BIGINT,
                        m.memory_limit_bytes, n.node
                 FROM node_minutes n
                 JOIN invocation_minutes m ON m.function = n.function
                     AND m.minute_ms = n.minute_ms
                 WHERE n.minute_ms >= $1
                 GROUP BY n.node, n.function, m.memory_limit_bytes
                 ORDER BY n.node, n.function, m.memory_limit_bytes",
                &[&since_minute_ms],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let (function, minute, rollup) = cost_row(row)?;
                Ok((row.try_get(7)?, function, minute, rollup))
            })
            .collect()
    }

    async fn cost_totals(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT function, $1::BIGINT, SUM(invocations)::BIGINT, SUM(wall_us)::BIGINT,
                        SUM(cpu_us)::BIGINT, SUM(billed_ms)::BIGINT, memory_limit_bytes
                 FROM invocation_minutes WHERE minute_ms >= $1
                 GROUP BY function, memory_limit_bytes ORDER BY function, memory_limit_bytes",
                &[&since_minute_ms],
            )
            .await?;
        rows.iter().map(cost_row).collect()
    }
}

#[async_trait]
impl CostStore for PgStores {
    async fn put_price_sheet(&self, name: &str, toml: &str, now_ms: i64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO price_sheets (name, toml, updated_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET toml = excluded.toml,
                     updated_ms = excluded.updated_ms",
                &[&name, &toml, &now_ms],
            )
            .await?;
        Ok(())
    }

    async fn price_sheets(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, toml FROM price_sheets ORDER BY name", &[])
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn remove_price_sheet(&self, name: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM price_sheets WHERE name = $1", &[&name])
            .await?;
        Ok(n > 0)
    }

    async fn put_budget(&self, scope: &str, settings: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO budgets (scope, settings) VALUES ($1, $2)
                 ON CONFLICT (scope) DO UPDATE SET settings = excluded.settings,
                     alerted_month = '', alerted_percent = 0",
                &[&scope, &settings],
            )
            .await?;
        Ok(())
    }

    async fn budgets(&self) -> Result<Vec<BudgetRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT scope, settings, alerted_month, alerted_percent FROM budgets
                 ORDER BY scope",
                &[],
            )
            .await?;
        rows.iter().map(budget_row).collect()
    }

    async fn budget(&self, scope: &str) -> Result<Option<BudgetRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT scope, settings, alerted_month, alerted_percent FROM budgets
                 WHERE scope = $1",
                &[&scope],
            )
            .await?;
        row.as_ref().map(budget_row).transpose()
    }

    async fn remove_budget(&self, scope: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM budgets WHERE scope = $1", &[&scope])
            .await?;
        Ok(n > 0)
    }

    async fn set_budget_alerted(
        &self,
        scope: &str,
        settings: &str,
        month: &str,
        percent: f64,
    ) -> Result<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE budgets SET alerted_month = $3, alerted_percent = $4
                 WHERE scope = $1 AND settings = $2
                     AND (alerted_month < $3 OR (alerted_month = $3 AND alerted_percent < $4))",
                &[&scope, &settings, &month, &percent],
            )
            .await?;
        Ok(changed > 0)
    }
}
