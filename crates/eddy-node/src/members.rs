//! The node's heartbeat: every `HEARTBEAT_INTERVAL_MS` it records who it is and its load in
//! the store (`eddy nodes` lists every node that shares it), and a last beat saying it
//! stopped when it shuts down. A node not seen for `MEMBER_LIVE_BEATS` beats is gone; one
//! not seen for `MEMBER_FORGET_AFTER_MS` is forgotten.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use eddy_store::NodeBeat;
use tokio_util::sync::CancellationToken;

use crate::admission::ClusterShare;
use crate::parts::Parts;
use crate::registry::Registry;

/// Between two heartbeats of a node (milliseconds).
pub const HEARTBEAT_INTERVAL_MS: i64 = 5_000;
/// Heartbeats a node may miss before it is listed as gone.
pub const MEMBER_LIVE_BEATS: i64 = 3;
/// A node not seen for this long is forgotten (milliseconds; a day).
pub const MEMBER_FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// What a node is, for its beats.
pub struct Identity {
    pub name: String,
    pub public_url: String,
    pub admin_addr: String,
    pub started_at_ms: i64,
}

/// How a listed node stands at `now_ms`.
pub fn state(beat: &NodeBeat, now_ms: i64) -> &'static str {
    if beat.stopped {
        "stopped"
    } else if now_ms.saturating_sub(beat.seen_at_ms) > MEMBER_LIVE_BEATS * HEARTBEAT_INTERVAL_MS {
        "gone"
    } else {
        "live"
    }
}

/// This node's place among the live nodes of `listed` (itself counted live), by name.
pub fn cluster_share(listed: &[NodeBeat], me: &str, now_ms: i64) -> ClusterShare {
    let mut live: Vec<&str> = listed
        .iter()
        .filter(|beat| state(beat, now_ms) == "live" && beat.name != me)
        .map(|beat| beat.name.as_str())
        .collect();
    live.push(me);
    live.sort_unstable();
    ClusterShare {
        rank: live.iter().position(|name| *name == me).unwrap_or(0),
        live: live.len(),
    }
}

/// Beats until `shutdown`, then beats once more saying the node stopped.
pub async fn heartbeat(
    parts: Parts,
    registry: Arc<Registry>,
    me: Identity,
    shutdown: CancellationToken,
) {
    let beat = |stopped: bool| {
        let routes = registry.routes();
        NodeBeat {
            name: me.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            public_url: me.public_url.clone(),
            admin_addr: me.admin_addr.clone(),
            started_at_ms: me.started_at_ms,
            seen_at_ms: parts.clock.now_ms(),
            in_flight: parts.admission.in_flight() as u64,
            concurrency_max: parts.admission.node().concurrency_max as u64,
            instances: routes
                .all()
                .map(|live| live.instances_live.load(Ordering::Relaxed) as u64)
                .sum(),
            functions: routes.len() as u64,
            stopped,
        }
    };
    let members = parts.stores.members.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = members.beat(beat(false)).await {
            tracing::debug!(error = %e, "the heartbeat could not be recorded");
        }
        // The live nodes divide each function's max_concurrency; while the store does not
        // answer, the last share holds.
        match members.members().await {
            Ok(listed) => {
                let share = cluster_share(&listed, &me.name, parts.clock.now_ms());
                if share != parts.admission.cluster_share() {
                    tracing::info!(
                        rank = share.rank,
                        live = share.live,
                        "the cluster's live nodes changed: this node runs its share of each function's max_concurrency"
                    );
                }
                parts.admission.set_cluster_share(share);
            }
            Err(e) => tracing::debug!(error = %e, "the cluster's nodes could not be read"),
        }
        let forget_before = parts.clock.now_ms().saturating_sub(MEMBER_FORGET_AFTER_MS);
        if let Err(e) = members.forget_members(forget_before).await {
            tracing::debug!(error = %e, "long-gone nodes could not be forgotten");
        }
    }
    if let Err(e) = members.beat(beat(true)).await {
        tracing::warn!(error = %e, "the last heartbeat (stopped) could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_live_until_it_misses_its_beats_or_says_it_stopped() {
        let mut beat = NodeBeat {
            name: "a".into(),
            version: "1".into(),
            public_url: String::new(),
            admin_addr: String::new(),
            started_at_ms: 0,
            seen_at_ms: 100_000,
            in_flight: 0,
            concurrency_max: 1,
            instances: 0,
            functions: 0,
            stopped: false,
        };
        let limit = MEMBER_LIVE_BEATS * HEARTBEAT_INTERVAL_MS;
        assert_eq!(state(&beat, 100_000 + limit), "live");
        assert_eq!(state(&beat, 100_001 + limit), "gone");
        beat.stopped = true;
        assert_eq!(state(&beat, 100_000), "stopped");
    }

    #[test]
    fn the_live_nodes_divide_a_limit_exactly_by_name() {
        let beat = |name: &str, seen_at_ms: i64, stopped: bool| NodeBeat {
            name: name.into(),
            version: "1".into(),
            public_url: String::new(),
            admin_addr: String::new(),
            started_at_ms: 0,
            seen_at_ms,
            in_flight: 0,
            concurrency_max: 1,
            instances: 0,
            functions: 0,
            stopped,
        };
        let now = 1_000_000;
        let mut listed = vec![
            beat("c", now, false),
            beat("a", now, false),
            beat("gone", 0, false),
            beat("stopped", now, true),
        ];
        // A node not listed yet (before its first beat is stored) counts itself.
        assert_eq!(
            cluster_share(&listed, "b", now),
            ClusterShare { rank: 1, live: 3 }
        );
        listed.push(beat("b", now, false));
        let shares: Vec<ClusterShare> = ["a", "b", "c"]
            .iter()
            .map(|me| cluster_share(&listed, me, now))
            .collect();
        assert_eq!(shares, [0, 1, 2].map(|rank| ClusterShare { rank, live: 3 }));
        for max in [1, 2, 3, 7, 10] {
            let split: Vec<usize> = shares.iter().map(|s| s.of(max)).collect();
            assert_eq!(split.iter().sum::<usize>(), max, "{max}: {split:?}");
            assert!(split.iter().max().unwrap() - split.iter().min().unwrap() <= 1);
        }
        assert_eq!(cluster_share(&[], "alone", now), ClusterShare::default());
        assert_eq!(ClusterShare::default().of(5), 5);
    }
}
