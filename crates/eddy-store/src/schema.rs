//! Connection settings and schema migrations tracked by `PRAGMA user_version`.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::{Result, StoreError};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a commit waits for the disk.
#[derive(Clone, Copy)]
pub(crate) enum Synchronous {
    /// At checkpoints only: a committed transaction survives the process dying, not the
    /// machine losing power.
    Normal,
    /// At every commit: a committed transaction survives a power loss too.
    Full,
}

/// Permission bits of a database file: the owner only (it holds every function's env values
/// and the admin token's hash). SQLite gives its `-wal` and `-shm` files the same.
const DATABASE_FILE_MODE: u32 = 0o600;

/// Opens or creates the database file at `path` (creating missing parent directories). A new
/// file is created `DATABASE_FILE_MODE` before SQLite opens it, never through a symlink.
pub(crate) fn open_file(path: &std::path::Path) -> Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DATABASE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    Ok(Connection::open(path)?)
}

/// Applies the connection pragmas and every one of `migrations` the database has not seen
/// yet.
pub(crate) fn prepare(
    conn: &mut Connection,
    migrations: &[&str],
    synchronous: Synchronous,
) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Returns the resulting mode; in-memory databases answer "memory", which is fine.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    let synchronous = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate(conn, migrations)
}

/// Schema changes, applied in order; entry `i` moves `user_version` from `i` to `i + 1`.
/// Never edit an entry once released; append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    bytes  BLOB NOT NULL
) STRICT;

-- `route` is the live version's route, copied here so a unique index can guard it.
-- The live version must exist; checked at commit so a function and its first version
-- can be inserted in one transaction.
CREATE TABLE functions (
    name          TEXT PRIMARY KEY,
    live_version  INTEGER NOT NULL,
    route         TEXT NOT NULL UNIQUE,
    updated_at_ms INTEGER NOT NULL,
    FOREIGN KEY (name, live_version) REFERENCES versions (function, version)
        DEFERRABLE INITIALLY DEFERRED
) STRICT;

CREATE TABLE versions (
    function      TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    digest        TEXT NOT NULL REFERENCES components (digest),
    size_bytes    INTEGER NOT NULL,
    config        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (function, version)
) STRICT;
CREATE INDEX versions_digest ON versions (digest);

CREATE TABLE invocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    function    TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    duration_us INTEGER NOT NULL,
    log         TEXT NOT NULL
) STRICT;
CREATE INDEX invocations_function_id ON invocations (function, id);
CREATE INDEX invocations_at ON invocations (at_ms);
"#,
    r#"
-- Metering of each recorded invocation.
ALTER TABLE invocations ADD COLUMN cpu_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invocations ADD COLUMN instantiate_us INTEGER;
ALTER TABLE invocations ADD COLUMN memory_bytes_peak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invocations ADD COLUMN request_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invocations ADD COLUMN response_bytes INTEGER NOT NULL DEFAULT 0;

-- Per-function, per-minute totals: what `eddy stats` reads, one row per function and
-- minute however many invocations it had. `outcomes` and `latency` are JSON.
CREATE TABLE invocation_minutes (
    function          TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    minute_ms         INTEGER NOT NULL,
    invocations       INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    rejected          INTEGER NOT NULL,
    cold_starts       INTEGER NOT NULL,
    wall_us           INTEGER NOT NULL,
    cpu_us            INTEGER NOT NULL,
    instantiate_us    INTEGER NOT NULL,
    request_bytes     INTEGER NOT NULL,
    response_bytes    INTEGER NOT NULL,
    memory_bytes_peak INTEGER NOT NULL,
    outcomes          TEXT NOT NULL,
    latency           TEXT NOT NULL,
    PRIMARY KEY (function, minute_ms)
) STRICT;
CREATE INDEX invocation_minutes_minute ON invocation_minutes (minute_ms);
"#,
    r#"
-- WebSocket connection time, metered apart from invocations.
ALTER TABLE invocation_minutes ADD COLUMN connection_ms INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Cost: wall time rounded up to whole milliseconds per invocation, the memory limit the
-- minute ran at, user price sheets and budgets.
ALTER TABLE invocation_minutes ADD COLUMN billed_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invocation_minutes ADD COLUMN memory_limit_bytes INTEGER NOT NULL DEFAULT 0;
-- Minutes metered before this: each invocation's rounding is lost; round the total.
UPDATE invocation_minutes SET billed_ms = (wall_us + 999) / 1000;
CREATE TABLE price_sheets (
    name       TEXT PRIMARY KEY,
    toml       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE budgets (
    scope           TEXT PRIMARY KEY,
    settings        TEXT NOT NULL,
    alerted_month   TEXT NOT NULL DEFAULT '',
    alerted_percent REAL NOT NULL DEFAULT 0
) STRICT;
"#,
    r#"
-- Each node's latest heartbeat (one row on a single node).
CREATE TABLE members (
    name             TEXT PRIMARY KEY,
    version          TEXT NOT NULL,
    public_url       TEXT NOT NULL,
    admin_addr       TEXT NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    seen_at_ms       INTEGER NOT NULL,
    in_flight        INTEGER NOT NULL,
    concurrency_max  INTEGER NOT NULL,
    instances        INTEGER NOT NULL,
    functions        INTEGER NOT NULL,
    stopped          INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- The node that ran each invocation.
ALTER TABLE invocations ADD COLUMN node TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- Scoped tokens of the control API (only their hashes), the audit trail of changes, and
-- secrets sealed by the node (the store never holds a value in the clear nor the key).
CREATE TABLE tokens (
    name            TEXT PRIMARY KEY,
    hash            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER,
    last_used_at_ms INTEGER
) STRICT;
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    token   TEXT NOT NULL,
    source  TEXT NOT NULL,
    request TEXT NOT NULL,
    action  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    outcome TEXT NOT NULL
) STRICT;
CREATE INDEX audit_at ON audit (at_ms);
CREATE TABLE secrets (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;
"#,
];

/// Brings the schema up to `migrations.len()`, one transaction per migration. The version is
/// read inside each write transaction, so two processes opening the file at once do not both
/// apply a migration.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let Some(sql) = migrations.get(current) else {
            if current > migrations.len() {
                return Err(StoreError::Corrupt(format!(
                    "schema version {current} is newer than this build supports ({})",
                    migrations.len()
                )));
            }
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
pub(crate) fn schema_version(conn: &Connection) -> Result<usize> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

#[cfg(test)]
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();
