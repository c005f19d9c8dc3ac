//! Whether the node reaches its store, as it last found out: told in the control API's
//! health body, in `/metrics` (`eddy_store_reachable`) and in the log when it changes, and
//! never in a health status. A database blip must not make a load balancer or Kubernetes
//! drain every node: the nodes keep serving the functions they hold.

use std::sync::Mutex;

/// The store's reachability.
#[derive(Default)]
pub struct StoreHealth {
    unreachable: Mutex<Option<Outage>>,
}

struct Outage {
    since_ms: i64,
    error: String,
}

impl StoreHealth {
    /// The store answered at `now_ms`.
    pub fn reached(&self, now_ms: i64) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(outage) = unreachable.take() {
            tracing::info!(
                unreachable_ms = now_ms.saturating_sub(outage.since_ms),
                "the store is reachable again"
            );
        }
    }

    /// The store failed to answer at `now_ms` with `error`.
    pub fn failed(&self, error: &dyn std::fmt::Display, now_ms: i64) {
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match unreachable.as_mut() {
            Some(outage) => outage.error = error.to_string(),
            None => {
                tracing::warn!(%error, "the store is unreachable; serving the functions this node holds");
                *unreachable = Some(Outage {
                    since_ms: now_ms,
                    error: error.to_string(),
                });
            }
        }
    }

    /// Whether the store answered the last time it was asked.
    pub fn reachable(&self) -> bool {
        self.unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// A line for the health body: `None` while the store is reachable.
    pub fn describe(&self, now_ms: i64) -> Option<String> {
        let unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        unreachable.as_ref().map(|outage| {
            format!(
                "store: unreachable for {} ms: {}",
                now_ms.saturating_sub(outage.since_ms),
                outage.error
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_described_from_its_start_until_the_store_answers() {
        let health = StoreHealth::default();
        assert!(health.reachable());
        assert_eq!(health.describe(5), None);
        health.failed(&"connection refused", 1_000);
        health.failed(&"timed out", 2_000);
        assert!(!health.reachable());
        assert_eq!(
            health.describe(3_500).as_deref(),
            Some("store: unreachable for 2500 ms: timed out")
        );
        health.reached(4_000);
        assert!(health.reachable());
        assert_eq!(health.describe(4_000), None);
    }
}
