//! A node of a cluster following what the other nodes change in the shared store: the
//! functions they deploy, roll back and remove (by the store's generation) and the queue
//! consumers they bind; and noting whether the store answers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::consumer::Consumers;
use crate::health::StoreHealth;
use crate::registry::Registry;

/// What follows the shared store.
pub struct Follower {
    pub registry: Arc<Registry>,
    pub consumers: Arc<Consumers>,
    /// Notifications from other nodes.
    pub hints: Arc<dyn eddy_store::ChangeHints>,
    pub health: Arc<StoreHealth>,
    pub clock: Clock,
    /// How often to look whatever the hints.
    pub poll: Duration,
}

impl Follower {
    /// Keeps the registry and the consumers in line with the store until `shutdown`: on
    /// each hint, and every `poll` whatever the hints (the correctness path). Functions are
    /// caught up when the store's generation moved; consumer bindings are compared each
    /// time. A store that cannot be reached is noted in `health` and tried again at the
    /// next poll; the node serves what it holds meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut heard = self.hints.subscribe();
        let mut seen: Option<i64> = None;
        loop {
            match self.look(&mut seen).await {
                Ok(()) => self.health.reached(self.clock.now_ms()),
                Err(e) => self.health.failed(&e, self.clock.now_ms()),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = heard.changed() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One look at the store, moving `seen` to the generation caught up to; an error if the
    /// store did not answer. A catch-up that could not prepare a version (logged by the
    /// registry) leaves `seen` where it was, so the next look tries again.
    async fn look(&self, seen: &mut Option<i64>) -> Result<(), String> {
        let generation = self
            .registry
            .stored_generation()
            .await
            .map_err(|p| p.to_string())?;
        if *seen != Some(generation) && self.registry.catch_up().await.is_ok() {
            *seen = Some(generation);
        }
        self.consumers.sync().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
