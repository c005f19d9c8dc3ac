//! The contracts of `contract.rs` kept by Postgres, for nodes that share their state: every
//! node of a cluster opens [`PgStores`] on the same database and sees the others' writes.
//!
//! # How Postgres keeps the words of the contracts
//!
//! - **Atomic, committed, synced.** Each call is one transaction on a pooled connection
//!   (`deadpool-postgres`), committed before it returns. Postgres's own `synchronous_commit`
//!   (on by default) flushes the WAL at commit, so every write is synced; concurrent commits
//!   share a WAL flush (Postgres's group commit). Publishes, claims and settlements go
//!   through the node's queue journal (`journal.rs`), which runs all those waiting in one
//!   transaction: each is still atomic and committed before it answers, with fewer commits.
//! - **Linearizable across nodes.** Where a call reads and then writes what another node may
//!   write at the same moment, it serializes on a row lock or a transaction-scoped advisory
//!   lock named in `locks`: deploys (route uniqueness, version numbers), invocation ids (a
//!   cursor never skips a record committed late), rollup merges, and each queue's publishes
//!   (its depth and byte quota, its idempotency keys).
//! - **Queues.** Claims take ready messages with `FOR UPDATE SKIP LOCKED`, so nodes claiming
//!   from one queue never wait for each other. A claimed message records the node holding
//!   it; the lease end is the fencing token a settlement must name. Opening the stores is a
//!   restart of *this node* (its `node` name): the messages it held come back or are
//!   dead-lettered, as the contract says; other nodes' leases run out on their own.
//! - **Counters** (`delivered`, `succeeded`, …, and each queue's depth and bytes) are kept
//!   per queue and node, so nodes working one queue do not contend for one counter row; a
//!   reading sums them.
//!
//! # Schemas and migrations
//!
//! The tables live in the connection's current schema (`public`, or what the URL's
//! `options=-c search_path=…` names), so several clusters or tests can share a database.
//! `schema.rs` holds the migrations and how several nodes apply them at once.

mod access;
mod functions;
mod invocations;
mod journal;
mod members;
mod queues;
mod schema;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{Result, StoreError, Stores};

pub use schema::{SCHEMA_VERSION, SchemaState};

/// Connections one node keeps open to Postgres at most.
pub const POSTGRES_CONNECTIONS_MAX: usize = 16;
/// Longest a call waits for a free connection, or for a new one to be made, before it fails
/// with [`StoreError::Unavailable`].
pub const POSTGRES_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Longest a statement may run (or wait for a lock) before Postgres cancels it and the call
/// fails: a store that stops answering (a silent partition, a lock held by a stuck node)
/// fails calls instead of holding them.
pub const POSTGRES_STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// TCP keepalive on every connection: the first probe after this much silence
/// (milliseconds), then one every `POSTGRES_KEEPALIVE_INTERVAL_MS`, the connection given up
/// after `POSTGRES_KEEPALIVE_RETRIES` unanswered: a database cut off without a reset is
/// noticed in about 25 s, not hours.
pub const POSTGRES_KEEPALIVE_IDLE_MS: u64 = 10_000;
pub const POSTGRES_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
pub const POSTGRES_KEEPALIVE_RETRIES: u32 = 3;

/// How to reach the cluster's database and who this node is.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style URL, e.g. `postgres://eddy@db.internal/eddy`.
    pub url: String,
    /// The schema the tables live in, created if missing; `None`: the connection's current
    /// schema (`public` unless the URL's `options` set a `search_path`). Letters, digits and
    /// `_`, not starting with a digit, at most `SCHEMA_NAME_BYTES_MAX` bytes.
    pub schema: Option<String>,
    /// This node's name, stable across its restarts and unique in the cluster: the holder
    /// of the queue leases it takes, which its next opening recovers.
    pub node: String,
    /// Connections kept open at most.
    pub connections_max: usize,
    /// Longest wait for a connection (milliseconds).
    pub connect_timeout_ms: u64,
    /// Longest a statement may run, its waits for locks included (milliseconds).
    pub statement_timeout_ms: u64,
}

impl PgOptions {
    /// Options with the default limits.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: None,
            node: node.into(),
            connections_max: POSTGRES_CONNECTIONS_MAX,
            connect_timeout_ms: POSTGRES_CONNECT_TIMEOUT_MS,
            statement_timeout_ms: POSTGRES_STATEMENT_TIMEOUT_MS,
        }
    }
}

/// The Postgres backend: one pool of connections, shared by every part.
#[derive(Clone)]
pub struct PgStores {
    pool: Pool,
    node: Arc<str>,
    hints: Arc<Listener>,
    /// Where publishes, claims and settlements go (group commit).
    journal: journal::Journal,
}

/// The prefix of the notification channel of a schema's changes (`eddy_changes_<schema>`):
/// channels are database-wide, so clusters in other schemas of the database stay apart.
pub(crate) const CHANGES_CHANNEL: &str = "eddy_changes_";
/// How long the listener waits before connecting again after losing its connection.
const LISTEN_RETRY_MS: u64 = 1_000;

/// The prefix of the notification channel of a schema's relayed WebSocket broadcasts
/// (`eddy_sockets_<schema>`); the payload is the id of a `socket_relay` row.
pub(crate) const SOCKETS_CHANNEL: &str = "eddy_sockets_";
/// How long a relayed broadcast is kept for the nodes to read it (milliseconds).
const RELAY_KEPT_MS: i64 = 60_000;
/// Relayed broadcasts a slow subscriber may lag behind before it misses some.
const RELAY_BACKLOG: usize = 1024;

/// A connection of its own that listens for what other nodes announce: changes (bumping a
/// watch) and relayed WebSocket broadcasts (read and handed to subscribers). Stopped when
/// the last handle of the stores is dropped.
struct Listener {
    hints: tokio::sync::watch::Sender<u64>,
    relayed: tokio::sync::broadcast::Sender<crate::RelayedBroadcast>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl crate::ChangeHints for PgStores {
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hints.hints.subscribe()
    }
}

#[async_trait::async_trait]
impl crate::SocketRelay for PgStores {
    async fn relay(&self, broadcasts: Vec<crate::RelayedBroadcast>) -> Result<()> {
        let Some(origin) = broadcasts.first().map(|b| b.origin.clone()) else {
            return Ok(());
        };
        let now = crate::store::now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO socket_relay (origin, function, channel, binary_body, body,
                     created_at_ms, action, connection, close_code)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .await?;
        let mut ids = Vec::with_capacity(broadcasts.len());
        for broadcast in &broadcasts {
            let (action, connection, code) = match &broadcast.action {
                crate::RelayAction::Broadcast => ("broadcast", None, None),
                crate::RelayAction::Send { connection } => ("send", Some(connection), None),
                crate::RelayAction::Close { connection, code } => {
                    ("close", Some(connection), Some(i32::from(*code)))
                }
                crate::RelayAction::Membership { connection, join } => {
                    (if *join { "join" } else { "leave" }, Some(connection), None)
                }
            };
            let id: i64 = tx
                .query_one(
                    &insert,
                    &[
                        &origin,
                        &broadcast.function,
                        &broadcast.channel,
                        &broadcast.binary,
                        &broadcast.body,
                        &now,
                        &action,
                        &connection,
                        &code,
                    ],
                )
                .await?
                .try_get(0)?;
            ids.push(id.to_string());
        }
        tx.execute(
            "DELETE FROM socket_relay WHERE created_at_ms < $1",
            &[&(now - RELAY_KEPT_MS)],
        )
        .await?;
        // A notification per row, each naming its id, sent when the batch commits: the
        // payload every release reads. (`RelayedRows` also reads `FIRST LAST ORIGIN`, one
        // notification for a batch; a release may send that once no node of an earlier
        // release, which reads only ids, is left.)
        tx.execute(
            "SELECT pg_notify($1 || current_schema(), id) FROM unnest($2::TEXT[]) AS ids(id)",
            &[&SOCKETS_CHANNEL, &ids],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::RelayedBroadcast> {
        self.hints.relayed.subscribe()
    }
}

/// The relayed rows one notification names: ids `first..=last`, of `origin` when given.
#[derive(Debug, PartialEq, Eq)]
struct RelayedRows {
    first: i64,
    last: i64,
    origin: Option<String>,
}

impl RelayedRows {
    /// A notification's payload: `ID`, or `FIRST LAST ORIGIN`.
    fn parse(payload: &str) -> Option<RelayedRows> {
        let mut parts = payload.splitn(3, ' ');
        let first = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(RelayedRows {
                first,
                last: first,
                origin: None,
            }),
            (Some(last), Some(origin)) => Some(RelayedRows {
                first,
                last: last.parse().ok()?,
                origin: Some(origin.to_owned()),
            }),
            (Some(_), None) => None,
        }
    }
}

/// Reads the relayed broadcasts each notification names, in order, and hands them to the
/// subscribers, unless they came from `node`.
async fn deliver_relayed(
    pool: Pool,
    node: Arc<str>,
    mut named: tokio::sync::mpsc::UnboundedReceiver<RelayedRows>,
    relayed: tokio::sync::broadcast::Sender<crate::RelayedBroadcast>,
) {
    while let Some(rows) = named.recv().await {
        let read = match pool.get().await {
            Ok(client) => {
                client
                    .query(
                        "SELECT origin, function, channel, binary_body, body, action,
                             connection, close_code
                         FROM socket_relay
                         WHERE id BETWEEN $1 AND $2 AND ($3::TEXT IS NULL OR origin = $3)
                         ORDER BY id",
                        &[&rows.first, &rows.last, &rows.origin],
                    )
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "a relayed WebSocket broadcast could not be read");
                continue;
            }
        };
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "a relayed WebSocket broadcast could not be read");
                continue;
            }
        };
        for row in read {
            match relayed_row(&row) {
                Ok(broadcast) if *broadcast.origin != *node => {
                    let _ = relayed.send(broadcast);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a relayed WebSocket broadcast could not be read")
                }
            }
        }
    }
}

/// A `socket_relay` row as read by `deliver_relayed`.
fn relayed_row(row: &tokio_postgres::Row) -> Result<crate::RelayedBroadcast> {
    let action: String = row.try_get(5)?;
    let connection: Option<String> = row.try_get(6)?;
    let code: Option<i32> = row.try_get(7)?;
    let connection = || connection.clone().unwrap_or_default();
    let action = match action.as_str() {
        "send" => crate::RelayAction::Send {
            connection: connection(),
        },
        "close" => crate::RelayAction::Close {
            connection: connection(),
            code: code.and_then(|c| u16::try_from(c).ok()).unwrap_or(1000),
        },
        "join" | "leave" => crate::RelayAction::Membership {
            connection: connection(),
            join: action == "join",
        },
        _ => crate::RelayAction::Broadcast,
    };
    Ok(crate::RelayedBroadcast {
        origin: row.try_get(0)?,
        function: row.try_get(1)?,
        channel: row.try_get(2)?,
        binary: row.try_get(3)?,
        body: row.try_get(4)?,
        action,
    })
}

/// Listens on the schema's channels, reconnecting after `LISTEN_RETRY_MS` when the
/// connection is lost: each change notification, and each (re)connection, bumps `hints`;
/// each relayed broadcast's id goes to `relayed`.
async fn listen(
    config: tokio_postgres::Config,
    hints: tokio::sync::watch::Sender<u64>,
    relayed: tokio::sync::mpsc::UnboundedSender<RelayedRows>,
) {
    loop {
        if let Err(e) = listen_once(&config, &hints, &relayed).await {
            tracing::debug!(error = %e, "the change listener lost its connection; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(LISTEN_RETRY_MS)).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    hints: &tokio::sync::watch::Sender<u64>,
    relayed: &tokio::sync::mpsc::UnboundedSender<RelayedRows>,
) -> Result<()> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (heard, mut hear) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    let relayed = n
                        .channel()
                        .starts_with(SOCKETS_CHANNEL)
                        .then(|| RelayedRows::parse(n.payload()))
                        .flatten();
                    if heard.send(relayed).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let schema: String = client
        .query_one("SELECT current_schema()", &[])
        .await?
        .try_get(0)?;
    client
        .batch_execute(&{
            // The schema may come from the URL's search_path: quoted as an identifier.
            let schema = schema.replace('"', "\"\"");
            format!("LISTEN \"{CHANGES_CHANNEL}{schema}\"; LISTEN \"{SOCKETS_CHANNEL}{schema}\"")
        })
        .await?;
    // Anything may have changed while no one listened.
    hints.send_modify(|n| *n += 1);
    while let Some(heard) = hear.recv().await {
        match heard {
            Some(rows) => {
                let _ = relayed.send(rows);
            }
            None => hints.send_modify(|n| *n += 1),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

impl PgStores {
    /// Connects, brings the schema up to date (safely while other nodes do the same) and
    /// recovers the queue leases this node held when it last stopped.
    pub async fn open(options: &PgOptions) -> Result<PgStores> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("the store URL: {}", describe(&e))))?;
        if let Some(schema) = &options.schema {
            if !is_identifier(schema) {
                return Err(StoreError::Conflict(format!(
                    "schema name `{schema}`: use at most {SCHEMA_NAME_BYTES_MAX} letters, digits \
                     and `_`, not starting with a digit"
                )));
            }
            create_schema(&config, schema, options.connect_timeout_ms).await?;
            // Every pooled connection resolves the tables in it.
            let before = config.get_options().unwrap_or_default().to_owned();
            config.options(format!("{before} -c search_path={schema}").trim_start());
        }
        let before = config.get_options().unwrap_or_default().to_owned();
        config.options(
            format!(
                "{before} -c statement_timeout={}",
                options.statement_timeout_ms
            )
            .trim_start(),
        );
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_millis(POSTGRES_KEEPALIVE_IDLE_MS))
            .keepalives_interval(Duration::from_millis(POSTGRES_KEEPALIVE_INTERVAL_MS))
            .keepalives_retries(POSTGRES_KEEPALIVE_RETRIES);
        let timeout = Some(Duration::from_millis(options.connect_timeout_ms));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections_max.max(1))
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("the connection pool: {e}")))?;
        let node: Arc<str> = options.node.as_str().into();
        let hints = tokio::sync::watch::Sender::new(0);
        let (relayed_tx, relayed_ids) = tokio::sync::mpsc::unbounded_channel();
        let relayed = tokio::sync::broadcast::Sender::new(RELAY_BACKLOG);
        let tasks = vec![
            tokio::spawn(listen(config.clone(), hints.clone(), relayed_tx)),
            tokio::spawn(deliver_relayed(
                pool.clone(),
                node.clone(),
                relayed_ids,
                relayed.clone(),
            )),
        ];
        let stores = PgStores {
            journal: journal::Journal::start(pool.clone(), node.clone(), options.connections_max),
            pool,
            node,
            hints: Arc::new(Listener {
                hints,
                relayed,
                tasks,
            }),
        };
        schema::migrate(&mut *stores.client().await?).await?;
        queues::recover(&stores).await?;
        Ok(stores)
    }

    /// Every part of the node's state, each on this pool.
    pub fn stores(&self) -> Stores {
        let this = Arc::new(self.clone());
        Stores {
            functions: this.clone(),
            token: this.clone(),
            access: this.clone(),
            invocations: this.clone(),
            members: this.clone(),
            cost: this.clone(),
            queues: this.clone(),
            ticks: this.clone(),
            hints: this.clone(),
            artifacts: Some(this.clone()),
            relay: Some(this),
        }
    }

    /// The schema version the database is at, and the oldest build it still works with.
    pub async fn schema_state(&self) -> Result<SchemaState> {
        schema::state(&**self.client().await?).await
    }

    /// Transactions the queue journal has committed: fewer than the publishes, claims and
    /// settlements it ran when they came at once (group commit).
    pub fn queue_commits(&self) -> u64 {
        self.journal
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Whether `name` may be used as a schema name unquoted.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= SCHEMA_NAME_BYTES_MAX
}

/// Longest schema name (bytes): Postgres takes 63 in an identifier, and the notification
/// channels add `eddy_sockets_` to it.
pub const SCHEMA_NAME_BYTES_MAX: usize = 50;

/// Creates `schema` if it does not exist, on a connection of its own.
async fn create_schema(
    config: &tokio_postgres::Config,
    schema: &str,
    timeout_ms: u64,
) -> Result<()> {
    let connect = config.connect(NoTls);
    let (client, connection) =
        match tokio::time::timeout(Duration::from_millis(timeout_ms), connect).await {
            Ok(connected) => connected.map_err(|e| StoreError::Unavailable(describe(&e)))?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no connection within {timeout_ms} ms"
                )));
            }
        };
    let driver = tokio::spawn(connection);
    let created = client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await;
    drop(client);
    let _ = driver.await;
    match created {
        Ok(()) => Ok(()),
        // Two nodes creating it at once: the loser sees the winner's row.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Named transaction-scoped advisory locks (`pg_advisory_xact_lock(schema, key)`): what
/// serializes the writes of several nodes where a row lock cannot. Keyed by the schema too,
/// so clusters in other schemas of the database do not wait for each other.
mod locks {
    /// Deploys, rollbacks and removals: version numbers and route uniqueness.
    pub(super) const FUNCTIONS: i32 = 1;
    /// Appends of invocation records: ids are given in commit order.
    pub(super) const INVOCATIONS: i32 = 2;
    /// Merges of rollups.
    pub(super) const ROLLUPS: i32 = 3;
    /// Migrations.
    pub(super) const MIGRATIONS: i32 = 4;
}

/// Tells the other nodes, when the transaction commits, that something they follow changed
/// (`what`: for the log; the listeners only count notifications).
async fn announce(tx: &deadpool_postgres::Transaction<'_>, what: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_notify($1 || current_schema(), $2)",
        &[&CHANGES_CHANNEL, &what],
    )
    .await?;
    Ok(())
}

/// Takes the advisory lock `key` of the current schema until the transaction ends.
async fn lock(tx: &deadpool_postgres::Transaction<'_>, key: i32) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema()), $1)",
        &[&key],
    )
    .await?;
    Ok(())
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
            Some(_) => StoreError::Postgres(e),
            None => StoreError::Unavailable(describe(&e)),
        },
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// A Postgres error with what its terse `Display` leaves out: the server's message and
/// SQLSTATE, or the underlying I/O error.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        if *db.code() == tokio_postgres::error::SqlState::QUERY_CANCELED {
            return format!(
                "{} ({}): a statement may take limits.store_statement_timeout_ms",
                db.message(),
                db.code().code()
            );
        }
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// An unsigned count or size as Postgres's `BIGINT` (saturating: no stored value is that
/// large).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `BIGINT` read back as unsigned; `Corrupt` if negative.
fn unsigned(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({n})")))
}

/// A `BIGINT` read back as `u32`; `Corrupt` if out of range.
fn small(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} is out of range ({n})")))
}

#[cfg(test)]
mod tests {
    use super::RelayedRows;

    #[test]
    fn a_relay_notification_names_one_row_or_a_batch_of_one_origin() {
        let rows = |first, last, origin: Option<&str>| RelayedRows {
            first,
            last,
            origin: origin.map(str::to_owned),
        };
        assert_eq!(RelayedRows::parse("17"), Some(rows(17, 17, None)));
        assert_eq!(
            RelayedRows::parse("17 19 eddy-a"),
            Some(rows(17, 19, Some("eddy-a")))
        );
        for wrong in ["", "x", "17 19", "17 x eddy-a"] {
            assert_eq!(RelayedRows::parse(wrong), None, "{wrong:?}");
        }
    }
}
