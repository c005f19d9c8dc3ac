//! The store's error type: each variant says where a failure came from.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The route is the live route of another function.
    #[error("route {route} is already served by function `{function}`")]
    RouteTaken {
        /// The route that was asked for.
        route: String,
        /// The function whose live version serves it.
        function: String,
    },
    /// A named thing does not exist, e.g. "function `x`" or "version 3 of `x`".
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, readable in a sentence.
        what: String,
    },
    /// A named thing exists already, e.g. "queue `x`".
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was to be created, readable in a sentence.
        what: String,
    },
    /// The change contradicts what is stored; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// A publish would take a queue past its depth limit.
    #[error("queue `{queue}` holds {depth} messages, its queue_depth_max ({depth_max})")]
    DepthLimit {
        queue: String,
        depth: u64,
        depth_max: u64,
    },
    /// A publish would take a queue past its byte quota.
    #[error(
        "queue `{queue}` holds {bytes} bytes of messages; this would pass its queue_bytes_max ({bytes_max})"
    )]
    BytesLimit {
        queue: String,
        bytes: u64,
        bytes_max: u64,
    },
    /// Stored data (or data handed in) breaks an invariant: undecodable config, a digest that
    /// does not match its bytes, a schema newer than this build.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The database is at its size limit (or the disk is full): nothing of the operation
    /// was stored.
    #[error("the database is full: {0}")]
    Full(String),
    /// SQLite refused or failed a statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Postgres refused or failed a statement, or the connection broke during one.
    #[error("postgres: {}", crate::postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The store cannot be reached (no connection could be made or had in time): nothing of
    /// the operation was stored, and retrying once it is back can succeed.
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    /// The file system failed while preparing the database file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being worked on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the database (or the disk under it) is full: retrying after space is freed
    /// can succeed.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            StoreError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
            }
            _ => false,
        }
    }

    /// Whether Postgres cancelled a statement that ran past its statement timeout (a lock
    /// another session held, a slow database): the store answers, slowly.
    pub fn is_statement_timeout(&self) -> bool {
        matches!(self, StoreError::Postgres(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
    }

    /// Whether the store could not be reached (the database is down, restarting, or cut off
    /// from this node): the node keeps serving what it holds and retries.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Postgres(e) => match e.as_db_error() {
                // Class 57 (operator intervention: shutdown, restart) and 08 (connection).
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("57") || code.starts_with("08")
                }
                None => {
                    e.is_closed()
                        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                }
            },
            _ => false,
        }
    }
}
