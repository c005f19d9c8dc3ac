//! The nodes' heartbeats on SQLite (a single node: its own row).

use rusqlite::{Row, params};

use crate::{NodeBeat, Result, Store};

pub(crate) const MEMBER_COLUMNS: &str = "name, version, public_url, admin_addr, started_at_ms, \
     seen_at_ms, in_flight, concurrency_max, instances, functions, stopped";

impl Store {
    /// Records `beat` as its node's latest.
    pub fn beat(&self, beat: &NodeBeat) -> Result<()> {
        self.conn().execute(
            &format!(
                "INSERT OR REPLACE INTO members ({MEMBER_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                beat.name,
                beat.version,
                beat.public_url,
                beat.admin_addr,
                beat.started_at_ms,
                beat.seen_at_ms,
                beat.in_flight,
                beat.concurrency_max,
                beat.instances,
                beat.functions,
                beat.stopped
            ],
        )?;
        Ok(())
    }

    /// Every node's latest beat, by name.
    pub fn members(&self) -> Result<Vec<NodeBeat>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members ORDER BY name"
        ))?;
        let rows = stmt.query_map([], member_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets nodes not seen since `before_ms`.
    pub fn forget_members(&self, before_ms: i64) -> Result<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM members WHERE seen_at_ms < ?1", [before_ms])?;
        Ok(n as u64)
    }
}

fn member_row(row: &Row<'_>) -> rusqlite::Result<NodeBeat> {
    Ok(NodeBeat {
        name: row.get(0)?,
        version: row.get(1)?,
        public_url: row.get(2)?,
        admin_addr: row.get(3)?,
        started_at_ms: row.get(4)?,
        seen_at_ms: row.get(5)?,
        in_flight: row.get(6)?,
        concurrency_max: row.get(7)?,
        instances: row.get(8)?,
        functions: row.get(9)?,
        stopped: row.get(10)?,
    })
}
