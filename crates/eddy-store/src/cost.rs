//! User price sheets (TOML text) and budgets (JSON settings plus what was alerted this
//! month). The node parses both; the store keeps them.

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store};

/// A stored budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetRecord {
    /// `""` for the whole node, else a function name.
    pub scope: String,
    /// The budget's settings as JSON (the node's type).
    pub settings: String,
    /// The month (`YYYY-MM`) `alerted_percent` belongs to.
    pub alerted_month: String,
    /// The highest alert threshold already sent in `alerted_month`.
    pub alerted_percent: f64,
}

impl Store {
    /// Adds or replaces the user price sheet `name`.
    pub fn put_price_sheet(&self, name: &str, toml: &str, now_ms: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO price_sheets (name, toml, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET toml = excluded.toml, updated_ms = excluded.updated_ms",
            params![name, toml, now_ms],
        )?;
        Ok(())
    }

    /// Every user price sheet as `(name, toml)`, by name.
    pub fn price_sheets(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT name, toml FROM price_sheets ORDER BY name")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes the user price sheet `name`; `false` when there was none.
    pub fn remove_price_sheet(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM price_sheets WHERE name = ?1", params![name])?;
        Ok(n > 0)
    }

    /// Adds or replaces the budget of `scope`. A changed budget alerts afresh.
    pub fn put_budget(&self, scope: &str, settings: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO budgets (scope, settings) VALUES (?1, ?2)
             ON CONFLICT (scope) DO UPDATE SET settings = excluded.settings,
                 alerted_month = '', alerted_percent = 0",
            params![scope, settings],
        )?;
        Ok(())
    }

    /// Every budget, the node's (`""`) first.
    pub fn budgets(&self) -> Result<Vec<BudgetRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT scope, settings, alerted_month, alerted_percent FROM budgets ORDER BY scope",
        )?;
        let rows = stmt.query_map([], budget_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The budget of `scope`, if there is one.
    pub fn budget(&self, scope: &str) -> Result<Option<BudgetRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT scope, settings, alerted_month, alerted_percent FROM budgets
                 WHERE scope = ?1",
                params![scope],
                budget_row,
            )
            .optional()?)
    }

    /// Removes the budget of `scope`; `false` when there was none.
    pub fn remove_budget(&self, scope: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM budgets WHERE scope = ?1", params![scope])?;
        Ok(n > 0)
    }

    /// Records that alerts up to `percent` are sent for `scope` in `month`, unless the
    /// budget was set again since it was read as `settings` (its alerts start afresh) or
    /// such an alert is recorded already; `true` when this call recorded it.
    pub fn set_budget_alerted(
        &self,
        scope: &str,
        settings: &str,
        month: &str,
        percent: f64,
    ) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE budgets SET alerted_month = ?3, alerted_percent = ?4
             WHERE scope = ?1 AND settings = ?2
                 AND (alerted_month < ?3 OR (alerted_month = ?3 AND alerted_percent < ?4))",
            params![scope, settings, month, percent],
        )?;
        Ok(changed > 0)
    }
}

fn budget_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetRecord> {
    Ok(BudgetRecord {
        scope: row.get(0)?,
        settings: row.get(1)?,
        alerted_month: row.get(2)?,
        alerted_percent: row.get(3)?,
    })
}
