//! The conformance suite (`eddy_store::conformance`) run against the Postgres backend: each
//! test gets a schema of its own in the database `EDDY_TEST_POSTGRES_URL` names (by default
//! the local `test` database), dropped when the test ends; a restart opens the stores on the
//! schema again, as the same node.

use std::sync::atomic::{AtomicU32, Ordering};

use eddy_store::conformance::Backend;
use eddy_store::postgres::{PgOptions, PgStores};
use eddy_store::{Result, Stores};

/// The database the tests use unless `EDDY_TEST_POSTGRES_URL` names another.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("EDDY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

struct Postgres {
    schema: String,
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "eddy_conformance_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        drop_schema(&schema).await;
        Postgres { schema }
    }

    async fn open(&self) -> Result<Stores> {
        let mut options = PgOptions::new(url(), "conformance-node");
        options.schema = Some(self.schema.clone());
        Ok(PgStores::open(&options).await?.stores())
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

impl Drop for Postgres {
    fn drop(&mut self) {
        // The test's runtime may be gone or busy: clean up on a runtime of our own.
        let schema = self.schema.clone();
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

eddy_store::conformance_tests!(Postgres);
