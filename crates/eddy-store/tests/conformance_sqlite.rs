//! The conformance suite (`eddy_store::conformance`) run against the SQLite backend: each
//! test gets a temporary directory with its two database files, opened again there for a
//! restart.

use eddy_store::conformance::Backend;
use eddy_store::{QueueStore, Result, Store, Stores};

struct Sqlite {
    dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Sqlite { dir }
    }

    async fn open(&self) -> Result<Stores> {
        let store = self.dir.path().join("eddy.db");
        let queues = self.dir.path().join("queues.db");
        // Opening reads files and migrates; the node does it on the blocking pool too.
        tokio::task::spawn_blocking(move || {
            Ok(Stores::sqlite(
                Store::open(&store)?,
                QueueStore::open(&queues)?,
            ))
        })
        .await
        .expect("opening the stores panicked")
    }
}

eddy_store::conformance_tests!(Sqlite);
