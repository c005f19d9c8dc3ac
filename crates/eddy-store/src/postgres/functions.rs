//! [`FunctionStore`] and [`TokenStore`] on Postgres. Every write holds the `FUNCTIONS`
//! advisory lock, so deploys from several nodes get distinct version numbers and at most
//! one function holds a route.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStores, big, lock, locks, small, unsigned};
use crate::contract::{FunctionStore, TokenStore};
use crate::store::{
    ADMIN_TOKEN_HASH_KEY, FunctionRow, GENERATION_KEY, VersionRow, encode_config,
    function_not_found, now_ms, parse_generation,
};
use crate::{FunctionRecord, NewVersion, Result, StoreError, VersionRecord, component_digest};

const VERSION_COLUMNS: &str =
    "v.function, v.version, v.digest, v.size_bytes, v.config, v.created_at_ms";

/// Selects function rows; append a WHERE or ORDER BY clause.
const FUNCTION_SELECT: &str = "SELECT f.name, f.updated_at_ms,
        (SELECT COUNT(*) FROM versions c WHERE c.function = f.name),
        v.function, v.version, v.digest, v.size_bytes, v.config, v.created_at_ms
    FROM functions f JOIN versions v ON v.function = f.name AND v.version = f.live_version";

fn version_row(row: &Row, start: usize) -> Result<VersionRow> {
    Ok(VersionRow {
        function: row.try_get(start)?,
        version: small(
            i64::from(row.try_get::<_, i32>(start + 1)?),
            "a version number",
        )?,
        digest: row.try_get(start + 2)?,
        size_bytes: unsigned(row.try_get(start + 3)?, "a component's size")?,
        config: row.try_get(start + 4)?,
        created_at_ms: row.try_get(start + 5)?,
    })
}

fn function_row(row: &Row) -> Result<FunctionRecord> {
    FunctionRow {
        name: row.try_get(0)?,
        updated_at_ms: row.try_get(1)?,
        version_count: small(row.try_get(2)?, "a version count")?,
        live: version_row(row, 3)?,
    }
    .decode()
}

async fn load_function(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<Option<FunctionRecord>> {
    let row = client
        .query_opt(&format!("{FUNCTION_SELECT} WHERE f.name = $1"), &[&name])
        .await?;
    row.as_ref().map(function_row).transpose()
}

async fn load_version(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
    version: u32,
) -> Result<Option<VersionRecord>> {
    let Ok(version) = i32::try_from(version) else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.function = $1 AND v.version = $2"
            ),
            &[&name, &version],
        )
        .await?;
    row.map(|row| version_row(&row, 0)?.decode()).transpose()
}

/// `RouteTaken` if `route` is the live route of a function other than `function`.
async fn ensure_route_free(
    client: &impl tokio_postgres::GenericClient,
    route: &str,
    function: &str,
) -> Result<()> {
    let holder = client
        .query_opt(
            "SELECT name FROM functions WHERE route = $1 AND name <> $2",
            &[&route, &function],
        )
        .await?;
    match holder {
        Some(row) => Err(StoreError::RouteTaken {
            route: route.to_owned(),
            function: row.try_get(0)?,
        }),
        None => Ok(()),
    }
}

async fn insert_component(
    client: &impl tokio_postgres::GenericClient,
    digest: &str,
    bytes: &[u8],
) -> Result<()> {
    let actual = component_digest(bytes);
    if actual != digest {
        return Err(StoreError::Corrupt(format!(
            "component bytes hash to {actual}, not the given {digest}"
        )));
    }
    client
        .execute(
            "INSERT INTO components (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
            &[&digest, &bytes],
        )
        .await?;
    Ok(())
}

async fn has_component(client: &impl tokio_postgres::GenericClient, digest: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM components WHERE digest = $1", &[&digest])
        .await?
        .is_some())
}

#[async_trait]
impl FunctionStore for PgStores {
    async fn put_component(&self, digest: &str, bytes: Vec<u8>) -> Result<()> {
        insert_component(&**self.client().await?, digest, &bytes).await
    }

    async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT bytes FROM components WHERE digest = $1", &[&digest])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.try_get(0)?;
        if component_digest(&bytes) != digest {
            return Err(StoreError::Corrupt(format!(
                "component {digest} does not match its stored bytes"
            )));
        }
        Ok(Some(bytes))
    }

    async fn has_component(&self, digest: &str) -> Result<bool> {
        has_component(&**self.client().await?, digest).await
    }

    async fn create_version(
        &self,
        new: NewVersion,
        component_bytes: Option<Vec<u8>>,
    ) -> Result<VersionRecord> {
        let config = encode_config(&new.config)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, locks::FUNCTIONS).await?;
        ensure_route_free(&*tx, &new.config.route, &new.function).await?;
        match &component_bytes {
            Some(bytes) => insert_component(&*tx, &new.digest, bytes).await?,
            None if !has_component(&*tx, &new.digest).await? => {
                return Err(StoreError::NotFound {
                    what: format!("component {}", new.digest),
                });
            }
            None => {}
        }
        let version: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE function = $1",
                &[&new.function],
            )
            .await?
            .try_get(0)?;
        tx.execute(
            "INSERT INTO functions (name, live_version, route, updated_at_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET live_version = excluded.live_version,
                 route = excluded.route, updated_at_ms = excluded.updated_at_ms",
            &[
                &new.function,
                &version,
                &new.config.route,
                &new.created_at_ms,
            ],
        )
        .await?;
        let size_bytes = big(new.size_bytes);
        let params: [&(dyn ToSql + Sync); 6] = [
            &new.function,
            &version,
            &new.digest,
            &size_bytes,
            &config,
            &new.created_at_ms,
        ];
        tx.execute(
            "INSERT INTO versions (function, version, digest, size_bytes, config, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &params,
        )
        .await?;
        bump_generation(&tx).await?;
        tx.commit().await?;
        Ok(VersionRecord {
            function: new.function,
            version: small(version.into(), "a version number")?,
            digest: new.digest,
            size_bytes: new.size_bytes,
            config: new.config,
            created_at_ms: new.created_at_ms,
        })
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        let rows = self
            .client()
            .await?
            .query(&format!("{FUNCTION_SELECT} ORDER BY f.name"), &[])
            .await?;
        rows.iter().map(function_row).collect()
    }

    async fn function(&self, name: &str) -> Result<Option<FunctionRecord>> {
        load_function(&**self.client().await?, name).await
    }

    async fn versions(&self, name: &str) -> Result<Vec<VersionRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.function = $1
                     ORDER BY v.version DESC"
                ),
                &[&name],
            )
            .await?;
        if rows.is_empty() {
            return Err(function_not_found(name));
        }
        rows.iter()
            .map(|row| version_row(row, 0)?.decode())
            .collect()
    }

    async fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>> {
        load_version(&**self.client().await?, name, version).await
    }

    async fn set_live_version(&self, name: &str, version: u32) -> Result<FunctionRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, locks::FUNCTIONS).await?;
        let Some(record) = load_version(&*tx, name, version).await? else {
            return Err(match load_function(&*tx, name).await? {
                Some(_) => StoreError::NotFound {
                    what: format!("version {version} of `{name}`"),
                },
                None => function_not_found(name),
            });
        };
        ensure_route_free(&*tx, &record.config.route, name).await?;
        let number = record.version as i32;
        let changed = tx
            .execute(
                "UPDATE functions SET live_version = $2, route = $3, updated_at_ms = $4
                 WHERE name = $1 AND live_version <> $2",
                &[&name, &number, &record.config.route, &now_ms()],
            )
            .await?;
        if changed > 0 {
            bump_generation(&tx).await?;
        }
        let function = load_function(&*tx, name)
            .await?
            .ok_or_else(|| function_not_found(name))?;
        tx.commit().await?;
        Ok(function)
    }

    async fn generation(&self) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&GENERATION_KEY])
            .await?;
        let stored: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
        parse_generation(stored.as_deref())
    }

    async fn remove_function(&self, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // In this order everywhere: a removal waits for appends and merges in progress.
        for key in [locks::FUNCTIONS, locks::INVOCATIONS, locks::ROLLUPS] {
            lock(&tx, key).await?;
        }
        let digests: Vec<String> = tx
            .query(
                "SELECT DISTINCT digest FROM versions WHERE function = $1",
                &[&name],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        // Versions, invocations and rollups go by ON DELETE CASCADE.
        if tx
            .execute("DELETE FROM functions WHERE name = $1", &[&name])
            .await?
            == 0
        {
            return Ok(false);
        }
        bump_generation(&tx).await?;
        tx.execute(
            "DELETE FROM components c WHERE c.digest = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.digest = c.digest)",
            &[&digests],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Raises the generation and tells the other nodes, whose listeners hear it when the
/// transaction commits (a hint: they also poll the generation).
async fn bump_generation(tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
    let row = tx
        .query_one(
            "INSERT INTO meta (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT
             RETURNING value",
            &[&GENERATION_KEY],
        )
        .await?;
    let generation: String = row.try_get(0)?;
    super::announce(tx, &format!("functions {generation}")).await
}

#[async_trait]
impl TokenStore for PgStores {
    async fn admin_token_hash(&self) -> Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM meta WHERE key = $1",
                &[&ADMIN_TOKEN_HASH_KEY],
            )
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn set_admin_token_hash(&self, hash: &str) -> Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&ADMIN_TOKEN_HASH_KEY, &hash],
            )
            .await?;
        Ok(())
    }

    async fn init_admin_token_hash(&self, hash: &str) -> Result<bool> {
        let stored = self
            .client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&ADMIN_TOKEN_HASH_KEY, &hash],
            )
            .await?;
        Ok(stored > 0)
    }
}

#[async_trait]
impl crate::ArtifactStore for PgStores {
    async fn put_artifact(
        &self,
        digest: &str,
        engine: &str,
        artifact: Vec<u8>,
        mac: Vec<u8>,
    ) -> Result<()> {
        let stored = self
            .client()
            .await?
            .execute(
                "INSERT INTO artifacts (digest, engine, bytes, mac, created_at_ms)
                 SELECT $1, $2, $3, $4, $5
                 WHERE EXISTS (SELECT 1 FROM components WHERE digest = $1)
                 ON CONFLICT (digest, engine) DO UPDATE SET bytes = excluded.bytes,
                     mac = excluded.mac, created_at_ms = excluded.created_at_ms",
                &[&digest, &engine, &artifact, &mac, &now_ms()],
            )
            .await;
        match stored {
            // The component was removed between the check and the insert: dropped, as for
            // a component not stored.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    async fn artifact(&self, digest: &str, engine: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT bytes, mac FROM artifacts WHERE digest = $1 AND engine = $2",
                &[&digest, &engine],
            )
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }
}
