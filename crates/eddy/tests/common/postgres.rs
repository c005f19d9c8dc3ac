//! A schema of its own in the test Postgres for each test: the database
//! `EDDY_TEST_POSTGRES_URL` names (by default the local `test` database; `scripts/test`
//! starts a private one when the machine has none), dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

/// Connections each test node keeps to Postgres: the tests run several at once, each with
/// up to three nodes, and the machine's Postgres allows 100 clients.
const CONNECTIONS_PER_NODE: usize = 4;

/// The database the tests use unless `EDDY_TEST_POSTGRES_URL` names another.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub fn url() -> String {
    std::env::var("EDDY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema for one test's cluster, dropped with everything in it when the test ends.
pub struct Schema(pub String);

impl Schema {
    pub fn new(test: &str) -> Schema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "eddy_cluster_{test}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        Schema(name)
    }

    /// A node's config on this schema; `extra` is appended (TOML).
    pub fn config(&self, extra: &str) -> String {
        // Long: a change that reaches another node within a test's deadline came by
        // notification.
        self.config_polling(extra, 600_000)
    }

    /// A node's config on this schema, polling the store every `poll_ms`.
    pub fn config_polling(&self, extra: &str, poll_ms: u64) -> String {
        self.config_limits(extra, poll_ms, "")
    }

    /// A node's config on this schema, polling the store every `poll_ms`, with `limits`
    /// (TOML keys) in its `[limits]` table.
    pub fn config_limits(&self, extra: &str, poll_ms: u64, limits: &str) -> String {
        format!(
            "store = \"{}\"\nstore_schema = \"{}\"\n{extra}\n[limits]\nstore_poll_interval_ms = {poll_ms}\n\
             store_connections_max = {CONNECTIONS_PER_NODE}\n{limits}",
            url(),
            self.0
        )
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        run_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

/// Runs `sql` on a runtime and connection of its own. Panics, saying where it looked, if
/// Postgres cannot be reached.
pub fn run_sql(sql: &str) {
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let url = url();
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "no Postgres at {url} ({e:?}); start one or set EDDY_TEST_POSTGRES_URL"
                        )
                    });
                let driver = tokio::spawn(connection);
                client.batch_execute(&sql).await.unwrap();
                drop(client);
                let _ = driver.await;
            });
    })
    .join()
    .unwrap();
}
