//! The conformance suite (`eddy_store::conformance`) run against the Postgres backend: each
//! test gets a schema of its own (`common::TestSchema`); a restart opens the stores on the
//! schema again, as the same node.

mod common;

use eddy_store::conformance::Backend;
use eddy_store::{Result, Stores};

struct Postgres(common::TestSchema);

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn create() -> Self {
        Postgres(common::TestSchema::new("conformance").await)
    }

    async fn open(&self) -> Result<Stores> {
        let stores = self
            .0
            .open("conformance-node", common::CONNECTIONS_PER_NODE)
            .await?;
        Ok(stores.stores())
    }
}

eddy_store::conformance_tests!(Postgres);
