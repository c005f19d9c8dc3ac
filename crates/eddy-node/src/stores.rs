//! Opening the store the config names: SQLite files in the state directory (one node), or a
//! Postgres database that the nodes of a cluster share, opened as this node (its name).

use std::path::Path;

use anyhow::Context;
use eddy_store::Stores;
use eddy_store::postgres::{PgOptions, PgStores};

use crate::config::{NodeConfig, StoreChoice, is_node_name};

/// File name of the SQLite database of functions, versions, invocations and cost.
pub const DATABASE_FILE: &str = "eddy.db";
/// File name of the SQLite queue database.
pub const QUEUE_DATABASE_FILE: &str = "queues.db";
/// File in the state directory that keeps the node's name across restarts.
pub const NODE_NAME_FILE: &str = "node-name";

/// The stores a node runs on.
pub struct Opened {
    pub stores: Stores,
    /// Whether other nodes share them (Postgres): the admin token is the cluster's.
    pub shared: bool,
    /// This node's name.
    pub node: String,
}

/// Opens the store `config` names.
pub async fn open(config: &NodeConfig) -> anyhow::Result<Opened> {
    let node = node_name(config)?;
    match config.store_choice()? {
        StoreChoice::Sqlite => {
            let db_path = config.state_dir.join(DATABASE_FILE);
            let store = tokio::task::spawn_blocking(move || eddy_store::Store::open(&db_path))
                .await?
                .context("opening the database")?;
            let queue_db = config.state_dir.join(QUEUE_DATABASE_FILE);
            let queue_store =
                tokio::task::spawn_blocking(move || eddy_store::QueueStore::open(&queue_db))
                    .await?
                    .context("opening the queue database")?;
            queue_store
                .limit_bytes(config.limits.queues_bytes_max)
                .await
                .context("limiting the queue database to limits.queues_bytes_max")?;
            Ok(Opened {
                stores: Stores::sqlite(store, queue_store),
                shared: false,
                node,
            })
        }
        StoreChoice::Postgres { url, schema } => {
            let mut options = PgOptions::new(url, node.clone());
            options.schema = schema;
            options.connections_max = config.limits.store_connections_max;
            options.connect_timeout_ms = config.limits.store_connect_timeout_ms;
            options.statement_timeout_ms = config.limits.store_statement_timeout_ms;
            let stores = PgStores::open(&options).await.with_context(|| {
                format!(
                    "opening the Postgres store (is the database up, and the store URL right? \
                     a connection may take limits.store_connect_timeout_ms = {} ms)",
                    options.connect_timeout_ms
                )
            })?;
            tracing::info!(node = %node, "the store is Postgres, shared by the cluster's nodes");
            Ok(Opened {
                stores: stores.stores(),
                shared: true,
                node,
            })
        }
    }
}

/// The node's name: `node_name` if set, else the one kept in the state directory, made
/// from the host name (and a random suffix, so two nodes cloned from one image differ) on
/// first start.
fn node_name(config: &NodeConfig) -> anyhow::Result<String> {
    if let Some(name) = &config.node_name {
        return Ok(name.clone());
    }
    let path = config.state_dir.join(NODE_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(kept) if is_node_name(kept.trim()) => return Ok(kept.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "{} does not hold a node name; delete it to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let name = format!("{}-{:06x}", host_name(), rand::random::<u32>() & 0xff_ffff);
    write_name(&path, &name).with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
}

/// The host name, cut to what a node name may hold.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(crate::config::NODE_NAME_BYTES_MAX - 7)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

fn write_name(path: &Path, name: &str) -> std::io::Result<()> {
    eddy_runtime::write_new_private(path, format!("{name}\n").as_bytes())
}

/// Copies the single node's state in `state_dir` (its SQLite files; the node stopped) into
/// the empty Postgres store at `url` (`eddy store copy`).
pub async fn copy_to_postgres(
    state_dir: &Path,
    url: String,
    schema: Option<String>,
) -> anyhow::Result<eddy_store::copy::Copied> {
    let db = state_dir.join(DATABASE_FILE);
    let queue_db = state_dir.join(QUEUE_DATABASE_FILE);
    anyhow::ensure!(
        db.is_file(),
        "{} does not exist: point --state-dir at the node's state directory",
        db.display()
    );
    let from = tokio::task::spawn_blocking(move || -> anyhow::Result<Stores> {
        let store =
            eddy_store::Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
        let queues = eddy_store::QueueStore::open(&queue_db)
            .with_context(|| format!("opening {}", queue_db.display()))?;
        Ok(Stores::sqlite(store, queues))
    })
    .await??;
    let mut options = PgOptions::new(url, "eddy-store-copy");
    options.schema = schema;
    let target = PgStores::open(&options)
        .await
        .context("opening the Postgres store")?;
    eddy_store::copy::copy_all(&from, &target.stores())
        .await
        .context("copying")
}
