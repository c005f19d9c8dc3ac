//! The `Store` handle: opening the database, the admin token hash, component bytes, functions
//! and their versions.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::{FunctionRecord, NewVersion, Result, StoreError, VersionConfig, VersionRecord, schema};

/// Handle to the node's database; clones share one connection. Every inherent method takes
/// the connection's lock for its duration and blocks; async callers use the traits of
/// [`crate::contract`] instead, whose implementations for `Store` run the same work on
/// `spawn_blocking`.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// The digest under which `bytes` are stored: `sha256:<lowercase hex>`.
pub fn component_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Store {
    /// Opens or creates the database at `path` (creating missing parent directories) and brings
    /// its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::prepared(schema::open_file(path)?)
    }

    /// Opens a private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        Store::prepared(Connection::open_in_memory()?)
    }

    /// The stored hash of the admin token, if one was set.
    pub fn admin_token_hash(&self) -> Result<Option<String>> {
        let conn = self.conn();
        let hash = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [ADMIN_TOKEN_HASH_KEY],
                |row| row.get(0),
            )
            .optional()?;
        Ok(hash)
    }

    /// Stores `hash` as the admin token hash, replacing any previous one. The caller hashes.
    pub fn set_admin_token_hash(&self, hash: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![ADMIN_TOKEN_HASH_KEY, hash],
        )?;
        Ok(())
    }

    /// See [`crate::FunctionStore::generation`].
    pub fn generation(&self) -> Result<i64> {
        let stored: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [GENERATION_KEY],
                |row| row.get(0),
            )
            .optional()?;
        parse_generation(stored.as_deref())
    }

    /// Stores `hash` as the admin token hash if none is stored; whether it did.
    pub fn init_admin_token_hash(&self, hash: &str) -> Result<bool> {
        let stored = self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![ADMIN_TOKEN_HASH_KEY, hash],
        )?;
        Ok(stored > 0)
    }

    /// Stores component bytes under `digest`; a no-op if present. `Corrupt` if `digest` is not
    /// [`component_digest`] of `bytes`.
    ///
    /// Bytes no version refers to may be deleted by a later [`Store::remove_function`]; prefer
    /// passing the bytes to [`Store::create_version`].
    pub fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        insert_component(&self.conn(), digest, bytes)
    }

    /// The component bytes stored under `digest`. `Corrupt` if they no longer match it.
    pub fn component(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn();
        let bytes: Option<Vec<u8>> = conn
            .query_row(
                "SELECT bytes FROM components WHERE digest = ?1",
                [digest],
                |row| row.get(0),
            )
            .optional()?;
        match bytes {
            Some(bytes) if component_digest(&bytes) != digest => Err(StoreError::Corrupt(format!(
                "component {digest} does not match its stored bytes"
            ))),
            bytes => Ok(bytes),
        }
    }

    /// Whether bytes are stored under `digest`.
    pub fn has_component(&self, digest: &str) -> Result<bool> {
        has_component(&self.conn(), digest)
    }

    /// Creates the next version of `new.function` and makes it live, in one transaction.
    ///
    /// Refuses with `RouteTaken` if the route is live for a different function, and with
    /// `NotFound` if `component_bytes` is `None` and no bytes are stored under the digest.
    /// Creates the function if missing. Versions are numbered from 1 and never reused.
    pub fn create_version(
        &self,
        new: &NewVersion,
        component_bytes: Option<&[u8]>,
    ) -> Result<VersionRecord> {
        let config = encode_config(&new.config)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ensure_route_free(&tx, &new.config.route, &new.function)?;
        match component_bytes {
            Some(bytes) => insert_component(&tx, &new.digest, bytes)?,
            None if !has_component(&tx, &new.digest)? => {
                return Err(StoreError::NotFound {
                    what: format!("component {}", new.digest),
                });
            }
            None => {}
        }
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE function = ?1",
            [&new.function],
            |row| row.get(0),
        )?;
        tx.execute(
            "INSERT INTO functions (name, live_version, route, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET live_version = excluded.live_version,
                 route = excluded.route, updated_at_ms = excluded.updated_at_ms",
            params![new.function, version, new.config.route, new.created_at_ms],
        )?;
        bump_generation(&tx)?;
        tx.execute(
            "INSERT INTO versions (function, version, digest, size_bytes, config, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.function,
                version,
                new.digest,
                new.size_bytes,
                config,
                new.created_at_ms
            ],
        )?;
        tx.commit()?;
        Ok(VersionRecord {
            function: new.function.clone(),
            version,
            digest: new.digest.clone(),
            size_bytes: new.size_bytes,
            config: new.config.clone(),
            created_at_ms: new.created_at_ms,
        })
    }

    /// Every function with its live version, sorted by name.
    pub fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{FUNCTION_SELECT} ORDER BY f.name"))?;
        let rows = stmt.query_map([], function_row)?;
        rows.map(|row| row?.decode()).collect()
    }

    /// The function called `name`, if it exists.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>> {
        load_function(&self.conn(), name)
    }

    /// All versions of `name`, newest first. `NotFound` if there is no such function.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.function = ?1 ORDER BY v.version DESC"
        ))?;
        let versions = stmt
            .query_map([name], |row| version_row(row, 0))?
            .map(|row| row?.decode())
            .collect::<Result<Vec<_>>>()?;
        if versions.is_empty() {
            return Err(function_not_found(name));
        }
        Ok(versions)
    }

    /// Version `version` of `name`, if both exist.
    pub fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>> {
        load_version(&self.conn(), name, version)
    }

    /// Makes an existing version live again (rollback or roll forward); no version is created.
    ///
    /// `NotFound` if the function or version does not exist; `RouteTaken` if the version's route
    /// is live for another function. `updated_at_ms` becomes the current system time, unless the
    /// version was already live, in which case nothing changes.
    pub fn set_live_version(&self, name: &str, version: u32) -> Result<FunctionRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(record) = load_version(&tx, name, version)? else {
            return Err(match load_function(&tx, name)? {
                Some(_) => StoreError::NotFound {
                    what: format!("version {version} of `{name}`"),
                },
                None => function_not_found(name),
            });
        };
        ensure_route_free(&tx, &record.config.route, name)?;
        let changed = tx.execute(
            "UPDATE functions SET live_version = ?2, route = ?3, updated_at_ms = ?4
             WHERE name = ?1 AND live_version <> ?2",
            params![name, version, record.config.route, now_ms()],
        )?;
        if changed > 0 {
            bump_generation(&tx)?;
        }
        let function = load_function(&tx, name)?.ok_or_else(|| function_not_found(name))?;
        tx.commit()?;
        Ok(function)
    }

    /// Deletes the function, its versions and invocation records, then the component bytes no
    /// remaining version refers to. `Ok(false)` if there was no such function.
    pub fn remove_function(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let digests = {
            let mut stmt =
                tx.prepare("SELECT DISTINCT digest FROM versions WHERE function = ?1")?;
            let rows = stmt.query_map([name], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        // Versions and invocations go by ON DELETE CASCADE.
        if tx.execute("DELETE FROM functions WHERE name = ?1", [name])? == 0 {
            return Ok(false);
        }
        bump_generation(&tx)?;
        for digest in digests {
            tx.execute(
                "DELETE FROM components WHERE digest = ?1
                 AND NOT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
                [digest],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// The connection. A panic while it was held leaves no open transaction (transactions roll
    /// back on drop), so a poisoned lock is safe to take over.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn prepared(mut conn: Connection) -> Result<Store> {
        schema::prepare(&mut conn, schema::MIGRATIONS, schema::Synchronous::Normal)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

/// The current system time in unix milliseconds (0 before the epoch).
pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) const ADMIN_TOKEN_HASH_KEY: &str = "admin_token_hash";
/// The `meta` key of [`crate::FunctionStore::generation`].
pub(crate) const GENERATION_KEY: &str = "functions_generation";

/// The generation as `meta` stores it (text; none yet is 0).
pub(crate) fn parse_generation(stored: Option<&str>) -> Result<i64> {
    stored.map_or(Ok(0), |text| {
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("the functions' generation `{text}`")))
    })
}

fn bump_generation(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [GENERATION_KEY],
    )?;
    Ok(())
}

const VERSION_COLUMNS: &str =
    "v.function, v.version, v.digest, v.size_bytes, v.config, v.created_at_ms";

/// Selects `FunctionRow`s; append a WHERE or ORDER BY clause.
const FUNCTION_SELECT: &str = "SELECT f.name, f.updated_at_ms,
        (SELECT COUNT(*) FROM versions c WHERE c.function = f.name),
        v.function, v.version, v.digest, v.size_bytes, v.config, v.created_at_ms
    FROM functions f JOIN versions v ON v.function = f.name AND v.version = f.live_version";

/// A version row before its config JSON is decoded (every backend reads one).
pub(crate) struct VersionRow {
    pub(crate) function: String,
    pub(crate) version: u32,
    pub(crate) digest: String,
    pub(crate) size_bytes: u64,
    pub(crate) config: String,
    pub(crate) created_at_ms: i64,
}

impl VersionRow {
    pub(crate) fn decode(self) -> Result<VersionRecord> {
        let config = serde_json::from_str(&self.config).map_err(|e| {
            StoreError::Corrupt(format!(
                "config of version {} of `{}`: {e}",
                self.version, self.function
            ))
        })?;
        Ok(VersionRecord {
            function: self.function,
            version: self.version,
            digest: self.digest,
            size_bytes: self.size_bytes,
            config,
            created_at_ms: self.created_at_ms,
        })
    }
}

/// A function row before its live version's config JSON is decoded.
pub(crate) struct FunctionRow {
    pub(crate) name: String,
    pub(crate) updated_at_ms: i64,
    pub(crate) version_count: u32,
    pub(crate) live: VersionRow,
}

impl FunctionRow {
    pub(crate) fn decode(self) -> Result<FunctionRecord> {
        Ok(FunctionRecord {
            name: self.name,
            live: self.live.decode()?,
            version_count: self.version_count,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// Reads `VERSION_COLUMNS` starting at column `start`.
fn version_row(row: &Row<'_>, start: usize) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        function: row.get(start)?,
        version: row.get(start + 1)?,
        digest: row.get(start + 2)?,
        size_bytes: row.get(start + 3)?,
        config: row.get(start + 4)?,
        created_at_ms: row.get(start + 5)?,
    })
}

fn function_row(row: &Row<'_>) -> rusqlite::Result<FunctionRow> {
    Ok(FunctionRow {
        name: row.get(0)?,
        updated_at_ms: row.get(1)?,
        version_count: row.get(2)?,
        live: version_row(row, 3)?,
    })
}

fn load_function(conn: &Connection, name: &str) -> Result<Option<FunctionRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{FUNCTION_SELECT} WHERE f.name = ?1"))?;
    let row = stmt.query_row([name], function_row).optional()?;
    row.map(FunctionRow::decode).transpose()
}

fn load_version(conn: &Connection, name: &str, version: u32) -> Result<Option<VersionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.function = ?1 AND v.version = ?2"
    ))?;
    let row = stmt
        .query_row(params![name, version], |row| version_row(row, 0))
        .optional()?;
    row.map(VersionRow::decode).transpose()
}

/// `RouteTaken` if `route` is the live route of a function other than `function`.
fn ensure_route_free(tx: &Transaction<'_>, route: &str, function: &str) -> Result<()> {
    let holder: Option<String> = tx
        .query_row(
            "SELECT name FROM functions WHERE route = ?1 AND name <> ?2",
            params![route, function],
            |row| row.get(0),
        )
        .optional()?;
    match holder {
        Some(holder) => Err(StoreError::RouteTaken {
            route: route.to_owned(),
            function: holder,
        }),
        None => Ok(()),
    }
}

fn insert_component(conn: &Connection, digest: &str, bytes: &[u8]) -> Result<()> {
    let actual = component_digest(bytes);
    if actual != digest {
        return Err(StoreError::Corrupt(format!(
            "component bytes hash to {actual}, not the given {digest}"
        )));
    }
    conn.execute(
        "INSERT INTO components (digest, bytes) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
        params![digest, bytes],
    )?;
    Ok(())
}

fn has_component(conn: &Connection, digest: &str) -> Result<bool> {
    let found = conn
        .query_row(
            "SELECT 1 FROM components WHERE digest = ?1",
            [digest],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

pub(crate) fn encode_config(config: &VersionConfig) -> Result<String> {
    serde_json::to_string(config)
        .map_err(|e| StoreError::Corrupt(format!("version config does not encode as JSON: {e}")))
}

pub(crate) fn function_not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: format!("function `{name}`"),
    }
}
