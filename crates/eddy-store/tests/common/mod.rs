//! A schema of its own in the test Postgres for each test: the database
//! `EDDY_TEST_POSTGRES_URL` names (by default the local `test` database; `scripts/test`
//! starts a private one when the machine has none), dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

use eddy_store::Result;
use eddy_store::postgres::{PgOptions, PgStores};

/// Connections each test's stores keep to Postgres: nextest runs several tests at once,
/// some with three nodes, and the machine's Postgres allows 100 clients.
#[allow(dead_code)] // Not every test target that includes this module opens stores.
pub const CONNECTIONS_PER_NODE: usize = 4;

/// The database the tests use unless `EDDY_TEST_POSTGRES_URL` names another.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn url() -> String {
    std::env::var("EDDY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema, empty when made and dropped with everything in it when dropped.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub async fn new(prefix: &str) -> TestSchema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "eddy_{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        drop_schema(&name).await;
        TestSchema { name }
    }

    /// Opens the stores on this schema as `node`, with `connections_max` connections.
    pub async fn open(&self, node: &str, connections_max: usize) -> Result<PgStores> {
        let mut options = PgOptions::new(url(), node);
        options.schema = Some(self.name.clone());
        options.connections_max = connections_max;
        PgStores::open(&options).await
    }
}

impl TestSchema {
    /// Runs `sql` in this schema, on a connection of its own.
    #[allow(dead_code)] // Not every test target that includes this module runs SQL.
    pub async fn sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .expect("a connection to the test Postgres");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path = {}; {sql}", self.name))
            .await
            .expect("the test's SQL");
        drop(client);
        let _ = driver.await;
    }
}

/// Drops `schema` with everything in it, if it exists. Panics, saying where it looked, if
/// Postgres cannot be reached.
async fn drop_schema(schema: &str) {
    let url = url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no Postgres at {url} ({e}: {}); start one or set EDDY_TEST_POSTGRES_URL \
                 (scripts/test starts a private one when none runs)",
                std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
            )
        });
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("dropping the test's schema");
    drop(client);
    let _ = driver.await;
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // The test's runtime may be gone or busy: clean up on a runtime of our own.
        let schema = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the schema")
                .block_on(drop_schema(&schema));
        });
        let _ = cleanup.join();
    }
}
