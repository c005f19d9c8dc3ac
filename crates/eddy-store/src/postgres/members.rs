//! [`MemberStore`] on Postgres: each node's latest heartbeat, one row per node.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStores, big, unsigned};
use crate::contract::MemberStore;
use crate::members::MEMBER_COLUMNS;
use crate::{NodeBeat, Result};

fn member_row(row: &Row) -> Result<NodeBeat> {
    let u = |i: usize| -> Result<u64> { unsigned(row.try_get(i)?, "a node's load") };
    Ok(NodeBeat {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        public_url: row.try_get(2)?,
        admin_addr: row.try_get(3)?,
        started_at_ms: row.try_get(4)?,
        seen_at_ms: row.try_get(5)?,
        in_flight: u(6)?,
        concurrency_max: u(7)?,
        instances: u(8)?,
        functions: u(9)?,
        stopped: row.try_get(10)?,
    })
}

#[async_trait]
impl MemberStore for PgStores {
    async fn beat(&self, beat: NodeBeat) -> Result<()> {
        let load = [
            beat.in_flight,
            beat.concurrency_max,
            beat.instances,
            beat.functions,
        ]
        .map(big);
        let params: [&(dyn ToSql + Sync); 11] = [
            &beat.name,
            &beat.version,
            &beat.public_url,
            &beat.admin_addr,
            &beat.started_at_ms,
            &beat.seen_at_ms,
            &load[0],
            &load[1],
            &load[2],
            &load[3],
            &beat.stopped,
        ];
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO members ({MEMBER_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (name) DO UPDATE SET version = excluded.version,
                         public_url = excluded.public_url, admin_addr = excluded.admin_addr,
                         started_at_ms = excluded.started_at_ms,
                         seen_at_ms = excluded.seen_at_ms, in_flight = excluded.in_flight,
                         concurrency_max = excluded.concurrency_max,
                         instances = excluded.instances, functions = excluded.functions,
                         stopped = excluded.stopped"
                ),
                &params,
            )
            .await?;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<NodeBeat>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY name"),
                &[],
            )
            .await?;
        rows.iter().map(member_row).collect()
    }

    async fn forget_members(&self, before_ms: i64) -> Result<u64> {
        Ok(self
            .client()
            .await?
            .execute("DELETE FROM members WHERE seen_at_ms < $1", &[&before_ms])
            .await?)
    }
}
