//! A node of a cluster following what the other nodes change in the shared store: the
//! functions they deploy, roll back and remove (by the store's generation) and the queue
//! consumers they bind.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consumer::Consumers;
use crate::registry::Registry;

/// Keeps `registry` and `consumers` in line with a shared store until `shutdown`: on each
/// hint (a notification from another node), and every `poll` whatever the hints (the
/// correctness path). Functions are caught up when the store's generation moved; consumer
/// bindings are compared each time. A store that cannot be reached is retried at the next
/// poll; the node serves what it holds meanwhile.
pub async fn follow(
    registry: Arc<Registry>,
    consumers: Arc<Consumers>,
    hints: Arc<dyn eddy_store::ChangeHints>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut heard = hints.subscribe();
    let mut seen: Option<i64> = None;
    loop {
        match registry.stored_generation().await {
            Ok(generation) if seen == Some(generation) => {}
            Ok(generation) => match registry.catch_up().await {
                Ok(_) => seen = Some(generation),
                Err(problem) => {
                    tracing::warn!(%problem, "catching up with the store failed; retrying");
                }
            },
            Err(problem) => {
                tracing::warn!(%problem, "reading the store's generation failed; retrying");
            }
        }
        if let Err(e) = consumers.sync().await {
            tracing::warn!(error = %e, "reading the queue consumers failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = heard.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
