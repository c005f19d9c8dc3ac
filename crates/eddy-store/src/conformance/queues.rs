//! Contracts of `QueueBackend`: publish, claim under a lease, settle, redelivery when a lease
//! runs out, dead letters and redrive, idempotency keys, depth and byte limits, peek, purge,
//! consumer bindings, and recovery of in-flight messages when the stores are opened again.
//!
//! Readiness reads the clock. Leases and visible times here are either far in the future or
//! already past, so no test waits for one; only the idempotency window's end is polled for.

use std::time::{Duration, Instant};

use super::{Backend, FAR, consumer, depth, message, now_ms, open, reopen};
use crate::queues::{ConsumerSettings, Published, QueueCounts, QueueLimits, Settle};
use crate::{Result, StoreError};

pub async fn published_messages_are_claimed_oldest_first_once_and_acked<B: Backend>() -> Result<()>
{
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    let queue = store.create_queue("jobs", 60_000).await?;
    assert_eq!(queue.dead_letter_queue.as_deref(), Some("jobs-dlq"));
    assert_eq!(
        (
            queue.dead_letter_of,
            queue.idempotency_window_ms,
            queue.consumer
        ),
        (None, 60_000, None)
    );
    let ids = store
        .publish(
            "jobs",
            vec![message("a", None), message("b", None)],
            depth(100),
        )
        .await?;
    assert!(ids.iter().all(|p| !p.duplicate) && ids[0].id != ids[1].id);
    let (first, _) = store.claim("jobs", 1, FAR).await?;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].body.as_slice(), first[0].attempt), (&b"a"[..], 1));
    assert_eq!(first[0].id, ids[0].id);
    assert_eq!(first[0].content_type, "text/plain");
    assert_eq!(first[0].enqueued_at_ms, first[0].first_enqueued_at_ms);
    // The claimed one is invisible: the next claim gets the other, then nothing.
    let (second, _) = store.claim("jobs", 5, FAR).await?;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].body, b"b");
    assert_eq!(second[0].id, ids[1].id);
    let (none, next) = store.claim("jobs", 5, FAR).await?;
    // Nothing is ready; the next to become visible is a lease running out.
    assert!(none.is_empty());
    assert_eq!(next, Some(FAR));
    let counts = store.counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.in_flight, counts.delivered),
        (2, 2, 2)
    );
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: first[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    let counts = store.counts("jobs").await?;
    assert_eq!((counts.depth, counts.succeeded), (1, 1));
    // Acknowledged twice counts once.
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: first[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    assert_eq!(store.counts("jobs").await?.succeeded, 1);
    // Several messages of one claim come back in the order they were published.
    store
        .publish(
            "jobs",
            (0..5).map(|i| message(&format!("m{i}"), None)).collect(),
            depth(100),
        )
        .await?;
    let (batch, next) = store.claim("jobs", 10, FAR).await?;
    let bodies: Vec<&[u8]> = batch.iter().map(|c| c.body.as_slice()).collect();
    assert_eq!(bodies, [b"m0", b"m1", b"m2", b"m3", b"m4"]);
    assert_eq!(next, Some(FAR));
    Ok(())
}

/// A visibility timeout: a message whose lease ran out is claimed again, its attempt
/// counted; the first delivery's settlement then changes nothing. A lease that ran out but
/// was not claimed again can still be settled.
pub async fn a_lease_that_ran_out_is_delivered_again_and_its_late_settlement_ignored<B: Backend>()
-> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    store
        .publish("jobs", vec![message("a", None)], depth(10))
        .await?;
    let over = now_ms() - 60_000;
    let (first, _) = store.claim("jobs", 1, over).await?;
    assert_eq!(first[0].attempt, 1);
    let (again, _) = store.claim("jobs", 1, FAR).await?;
    assert_eq!(again.len(), 1, "the lease ran out: the message is ready");
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (first[0].id.as_str(), 2)
    );
    store
        .settle(
            "jobs",
            vec![
                Settle::Ack {
                    row: first[0].row,
                    lease_until_ms: over,
                },
                Settle::Retry {
                    row: first[0].row,
                    lease_until_ms: over,
                    visible_at_ms: 0,
                    error: "late".into(),
                },
                Settle::DeadLetter {
                    row: first[0].row,
                    lease_until_ms: over,
                    to: "jobs-dlq".into(),
                    error: "late".into(),
                },
            ],
        )
        .await?;
    let counts = store.counts("jobs").await?;
    assert_eq!(
        (
            counts.depth,
            counts.in_flight,
            counts.succeeded,
            counts.failed_attempts,
            counts.dead_lettered
        ),
        (1, 1, 0, 0, 0),
        "the late settlements changed nothing"
    );
    assert_eq!(store.counts("jobs-dlq").await?.depth, 0);
    let (none, _) = store.claim("jobs", 1, FAR).await?;
    assert!(none.is_empty(), "the second lease holds");
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: again[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    assert_eq!(store.counts("jobs").await?.depth, 0);

    store
        .publish("jobs", vec![message("b", None)], depth(10))
        .await?;
    let late = now_ms() - 30_000;
    let (claimed, _) = store.claim("jobs", 1, late).await?;
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: claimed[0].row,
                lease_until_ms: late,
            }],
        )
        .await?;
    let counts = store.counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.delivered, counts.succeeded),
        (0, 3, 2)
    );
    Ok(())
}

pub async fn a_retry_waits_until_its_visible_time<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    store
        .publish("jobs", vec![message("a", None)], depth(10))
        .await?;
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    let later = now_ms() + 3_600_000;
    store
        .settle(
            "jobs",
            vec![Settle::Retry {
                row: claimed[0].row,
                lease_until_ms: FAR,
                visible_at_ms: later,
                error: "500".into(),
            }],
        )
        .await?;
    let (none, next) = store.claim("jobs", 1, FAR).await?;
    assert!(none.is_empty());
    assert_eq!(next, Some(later));
    let counts = store.counts("jobs").await?;
    assert_eq!((counts.delayed, counts.failed_attempts), (1, 1));
    assert_eq!((counts.ready, counts.in_flight, counts.depth), (0, 0, 1));
    let peeked = store.peek("jobs", 10).await?;
    assert_eq!(
        (
            peeked[0].visible_at_ms,
            peeked[0].in_flight,
            peeked[0].attempts,
            peeked[0].last_error.as_deref()
        ),
        (later, false, 1, Some("500"))
    );
    // A retry whose visible time has passed is ready at once, ahead of later ones.
    store
        .publish("jobs", vec![message("b", None)], depth(10))
        .await?;
    let (b, _) = store.claim("jobs", 1, FAR).await?;
    store
        .settle(
            "jobs",
            vec![Settle::Retry {
                row: b[0].row,
                lease_until_ms: FAR,
                visible_at_ms: 0,
                error: "503".into(),
            }],
        )
        .await?;
    let (b_again, next) = store.claim("jobs", 5, FAR).await?;
    assert_eq!(b_again.len(), 1);
    assert_eq!(
        (b_again[0].body.as_slice(), b_again[0].attempt),
        (&b"b"[..], 2)
    );
    assert_eq!(next, Some(later));
    Ok(())
}

pub async fn dead_letters_keep_their_id_until_redriven<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    let published = store
        .publish("jobs", vec![message("a", None)], depth(10))
        .await?;
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    let first_enqueued_at_ms = claimed[0].first_enqueued_at_ms;
    store
        .settle(
            "jobs",
            vec![Settle::Retry {
                row: claimed[0].row,
                lease_until_ms: FAR,
                visible_at_ms: 0,
                error: "500".into(),
            }],
        )
        .await?;
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    assert_eq!(claimed[0].attempt, 2);
    store
        .settle(
            "jobs",
            vec![Settle::DeadLetter {
                row: claimed[0].row,
                lease_until_ms: FAR,
                to: "jobs-dlq".into(),
                error: "trap".into(),
            }],
        )
        .await?;
    let dead = store.peek("jobs-dlq", 10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].attempts),
        (published[0].id.as_str(), 2)
    );
    assert_eq!(dead[0].last_error.as_deref(), Some("trap"));
    assert_eq!(dead[0].first_enqueued_at_ms, first_enqueued_at_ms);
    assert!(!dead[0].in_flight);
    let counts = store.counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.failed_attempts, counts.dead_lettered),
        (0, 2, 1)
    );
    assert_eq!(store.counts("jobs-dlq").await?.depth, 1);
    assert_eq!(store.redrive("jobs-dlq", "jobs").await?, 1);
    assert_eq!(store.counts("jobs-dlq").await?.depth, 0);
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    assert_eq!(
        (claimed[0].id.as_str(), claimed[0].attempt),
        (published[0].id.as_str(), 1)
    );
    assert_eq!(claimed[0].first_enqueued_at_ms, first_enqueued_at_ms);
    assert!(claimed[0].enqueued_at_ms >= first_enqueued_at_ms);
    assert_eq!(
        store.peek("jobs", 1).await?[0].last_error.as_deref(),
        Some("trap"),
        "redrive keeps the last error"
    );
    assert_eq!(store.redrive("jobs-dlq", "jobs").await?, 0);
    Ok(())
}

/// `settle` is atomic over its list: one settlement that cannot apply stores none.
pub async fn a_settlement_to_a_missing_queue_stores_nothing<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    store
        .publish(
            "jobs",
            vec![message("a", None), message("b", None)],
            depth(10),
        )
        .await?;
    let (claimed, _) = store.claim("jobs", 2, FAR).await?;
    let err = store
        .settle(
            "jobs",
            vec![
                Settle::Ack {
                    row: claimed[0].row,
                    lease_until_ms: FAR,
                },
                Settle::DeadLetter {
                    row: claimed[1].row,
                    lease_until_ms: FAR,
                    to: "nope".into(),
                    error: "trap".into(),
                },
            ],
        )
        .await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
    let counts = store.counts("jobs").await?;
    assert_eq!(
        (counts.depth, counts.in_flight, counts.succeeded),
        (2, 2, 0)
    );
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: claimed[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    assert_eq!(store.counts("jobs").await?.depth, 1);
    Ok(())
}

pub async fn a_repeated_idempotency_key_is_acknowledged_and_dropped<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 60_000).await?;
    let first = store
        .publish("jobs", vec![message("a", Some("k1"))], depth(10))
        .await?;
    let again = store
        .publish(
            "jobs",
            vec![message("a2", Some("k1")), message("b", Some("k2"))],
            depth(10),
        )
        .await?;
    assert_eq!(
        again[0],
        Published {
            id: first[0].id.clone(),
            duplicate: true
        }
    );
    assert!(!again[1].duplicate);
    assert_eq!(store.counts("jobs").await?.depth, 2);
    // Within one publish, too.
    let within = store
        .publish(
            "jobs",
            vec![message("c", Some("k3")), message("c2", Some("k3"))],
            depth(10),
        )
        .await?;
    assert_eq!(
        within[1],
        Published {
            id: within[0].id.clone(),
            duplicate: true
        }
    );
    assert_eq!(store.counts("jobs").await?.depth, 3);
    // Keys belong to their queue.
    store.create_queue("other", 60_000).await?;
    let elsewhere = store
        .publish("other", vec![message("a", Some("k1"))], depth(10))
        .await?;
    assert!(!elsewhere[0].duplicate);
    // A key stays taken after its message was delivered and acknowledged.
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: claimed[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    let after_ack = store
        .publish("jobs", vec![message("a3", Some("k1"))], depth(10))
        .await?;
    assert!(after_ack[0].duplicate);
    // A zero window remembers nothing.
    store.create_queue("fleeting", 0).await?;
    store
        .publish("fleeting", vec![message("a", Some("k"))], depth(10))
        .await?;
    let again = store
        .publish("fleeting", vec![message("a", Some("k"))], depth(10))
        .await?;
    assert!(!again[0].duplicate);
    Ok(())
}

/// The window is measured from the first publish: repeating the key does not extend it (if
/// it did, the polling below, faster than the window, would never see it end).
pub async fn an_idempotency_key_is_forgotten_once_its_window_has_passed<B: Backend>() -> Result<()>
{
    const WINDOW_MS: u64 = 200;
    const POLL: Duration = Duration::from_millis(20);
    const DEADLINE: Duration = Duration::from_secs(10);
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", WINDOW_MS).await?;
    let first = store
        .publish("jobs", vec![message("a", Some("k"))], depth(10))
        .await?;
    let started = Instant::now();
    let fresh = loop {
        let published = store
            .publish("jobs", vec![message("again", Some("k"))], depth(10))
            .await?;
        if !published[0].duplicate {
            break published;
        }
        assert_eq!(published[0].id, first[0].id);
        assert!(
            started.elapsed() < DEADLINE,
            "the key was still remembered after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_ne!(fresh[0].id, first[0].id);
    assert_eq!(store.counts("jobs").await?.depth, 2);
    Ok(())
}

pub async fn a_publish_past_the_depth_limit_enqueues_nothing<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    store
        .publish("jobs", vec![message("a", None)], depth(2))
        .await?;
    let err = store
        .publish(
            "jobs",
            vec![message("b", None), message("c", None)],
            depth(2),
        )
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::DepthLimit {
                depth: 1,
                depth_max: 2,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(store.counts("jobs").await?.depth, 1);
    // In flight and delayed messages count towards the depth too.
    store
        .publish("jobs", vec![message("b", None)], depth(2))
        .await?;
    store.claim("jobs", 1, FAR).await?;
    let err = store
        .publish("jobs", vec![message("c", None)], depth(2))
        .await;
    assert!(
        matches!(err, Err(StoreError::DepthLimit { depth: 2, .. })),
        "{err:?}"
    );
    Ok(())
}

/// A queue's byte quota counts what it holds now: a message that leaves (acknowledged,
/// purged, moved to the dead-letter queue) frees its bytes, and one that arrives by a
/// move is counted where it lands.
pub async fn a_queues_byte_quota_follows_its_messages<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    store.set_consumer("jobs", consumer(1)).await?;
    let quota = QueueLimits {
        depth_max: u64::MAX,
        bytes_max: 10,
    };
    store
        .publish(
            "jobs",
            vec![message("12345", None), message("678", None)],
            quota,
        )
        .await?;
    assert_eq!(store.counts("jobs").await?.bytes, 8);
    let err = store
        .publish("jobs", vec![message("abc", None)], quota)
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::BytesLimit {
                bytes: 8,
                bytes_max: 10,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        store.counts("jobs").await?.depth,
        2,
        "nothing of a refused publish stays"
    );
    // The first message fails its only attempt and moves to the dead-letter queue.
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    store
        .settle(
            "jobs",
            vec![Settle::DeadLetter {
                row: claimed[0].row,
                lease_until_ms: FAR,
                to: "jobs-dlq".into(),
                error: "failed".into(),
            }],
        )
        .await?;
    assert_eq!(store.counts("jobs").await?.bytes, 3);
    assert_eq!(store.counts("jobs-dlq").await?.bytes, 5);
    store
        .publish("jobs", vec![message("1234567", None)], quota)
        .await?;
    store.purge("jobs").await?;
    let left = store.counts("jobs").await?;
    assert_eq!((left.depth, left.bytes), (0, 0));
    // Redriven, the dead letter's bytes move back.
    store.redrive("jobs-dlq", "jobs").await?;
    assert_eq!(store.counts("jobs").await?.bytes, 5);
    assert_eq!(store.counts("jobs-dlq").await?.bytes, 0);
    Ok(())
}

pub async fn unknown_queues_and_duplicate_names_are_refused<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    let err = store
        .publish("nope", vec![message("a", None)], depth(10))
        .await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
    assert!(store.queue("nope").await?.is_none());
    let (claimed, next) = store.claim("nope", 1, FAR).await?;
    assert!(claimed.is_empty() && next.is_none());
    let not_found = |r: Result<()>| matches!(r, Err(StoreError::NotFound { .. }));
    assert!(not_found(store.peek("nope", 1).await.map(drop)));
    assert!(not_found(store.purge("nope").await.map(drop)));
    assert!(not_found(store.counts("nope").await.map(drop)));
    assert!(not_found(store.remove_consumer("nope").await.map(drop)));
    assert!(not_found(store.set_consumer("nope", consumer(1)).await));
    assert!(!store.delete_queue("nope").await?);

    store.create_queue("jobs", 0).await?;
    assert!(not_found(store.redrive("nope", "jobs").await.map(drop)));
    assert!(not_found(store.redrive("jobs", "nope").await.map(drop)));
    let err = store.create_queue("jobs", 0).await;
    assert!(
        matches!(err, Err(StoreError::AlreadyExists { .. })),
        "{err:?}"
    );
    // A dead-letter queue's name is taken too.
    let err = store.create_queue("jobs-dlq", 0).await;
    assert!(
        matches!(err, Err(StoreError::AlreadyExists { .. })),
        "{err:?}"
    );
    let names: Vec<String> = store
        .list_queues()
        .await?
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["jobs", "jobs-dlq"]);
    let dlq = store.queue("jobs-dlq").await?.expect("jobs-dlq");
    assert_eq!(
        (dlq.dead_letter_of.as_deref(), dlq.dead_letter_queue),
        (Some("jobs"), None)
    );
    let err = store.delete_queue("jobs-dlq").await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert!(store.delete_queue("jobs").await?);
    assert!(store.list_queues().await?.is_empty());
    Ok(())
}

pub async fn peek_shows_every_message_in_order_without_claiming<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    let mut json = message("{}", None);
    json.content_type = "application/json".into();
    let published = store
        .publish(
            "jobs",
            vec![message("a", None), message("b", None), json],
            depth(10),
        )
        .await?;
    let (claimed, _) = store.claim("jobs", 2, FAR).await?;
    let later = now_ms() + 3_600_000;
    store
        .settle(
            "jobs",
            vec![Settle::Retry {
                row: claimed[1].row,
                lease_until_ms: FAR,
                visible_at_ms: later,
                error: "boom".into(),
            }],
        )
        .await?;
    let peeked = store.peek("jobs", 10).await?;
    let seen: Vec<_> = peeked
        .iter()
        .map(|m| {
            (
                m.id.as_str(),
                m.body.as_slice(),
                m.content_type.as_str(),
                m.attempts,
                m.in_flight,
                m.last_error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                published[0].id.as_str(),
                &b"a"[..],
                "text/plain",
                1,
                true,
                None
            ),
            (
                published[1].id.as_str(),
                &b"b"[..],
                "text/plain",
                1,
                false,
                Some("boom")
            ),
            (
                published[2].id.as_str(),
                &b"{}"[..],
                "application/json",
                0,
                false,
                None
            ),
        ]
    );
    assert_eq!(peeked[1].visible_at_ms, later);
    assert!(
        peeked
            .iter()
            .all(|m| m.enqueued_at_ms == m.first_enqueued_at_ms)
    );
    assert_eq!(store.peek("jobs", 2).await?.len(), 2);
    // Peeking claimed nothing: the ready message is still there to claim.
    assert_eq!(store.counts("jobs").await?.delivered, 2);
    let (ready, _) = store.claim("jobs", 10, FAR).await?;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, published[2].id);
    Ok(())
}

pub async fn purge_deletes_all_but_in_flight_messages<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    assert_eq!(store.purge("jobs").await?, 0);
    store
        .publish(
            "jobs",
            vec![message("a", None), message("b", None), message("c", None)],
            depth(10),
        )
        .await?;
    let (claimed, _) = store.claim("jobs", 2, FAR).await?;
    store
        .settle(
            "jobs",
            vec![Settle::Retry {
                row: claimed[1].row,
                lease_until_ms: FAR,
                visible_at_ms: FAR,
                error: "later".into(),
            }],
        )
        .await?;
    // `b` is delayed and `c` ready: both go; `a` is in flight and stays.
    assert_eq!(store.purge("jobs").await?, 2);
    let counts = store.counts("jobs").await?;
    assert_eq!((counts.depth, counts.in_flight), (1, 1));
    store
        .settle(
            "jobs",
            vec![Settle::Ack {
                row: claimed[0].row,
                lease_until_ms: FAR,
            }],
        )
        .await?;
    assert_eq!(store.counts("jobs").await?, {
        QueueCounts {
            delivered: 2,
            succeeded: 1,
            failed_attempts: 1,
            ..QueueCounts::default()
        }
    });
    Ok(())
}

pub async fn consumer_settings_are_set_replaced_and_removed<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 0).await?;
    assert_eq!(store.queue("jobs").await?.expect("jobs").consumer, None);
    store.set_consumer("jobs", consumer(3)).await?;
    assert_eq!(
        store.queue("jobs").await?.expect("jobs").consumer,
        Some(consumer(3))
    );
    let replaced = ConsumerSettings {
        path: Some("/work".into()),
        batch_size: 10,
        ..consumer(5)
    };
    store.set_consumer("jobs", replaced.clone()).await?;
    let listed = store.list_queues().await?;
    assert_eq!(listed[0].consumer.as_ref(), Some(&replaced));
    assert_eq!(listed[1].consumer, None, "the dead-letter queue has none");

    let to_nowhere = ConsumerSettings {
        dead_letter: "nope".into(),
        ..consumer(1)
    };
    let err = store.set_consumer("jobs", to_nowhere).await;
    assert!(matches!(err, Err(StoreError::NotFound { .. })), "{err:?}");
    let to_itself = ConsumerSettings {
        dead_letter: "jobs".into(),
        ..consumer(1)
    };
    let err = store.set_consumer("jobs", to_itself).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert_eq!(
        store.queue("jobs").await?.expect("jobs").consumer,
        Some(replaced),
        "a refused binding changes nothing"
    );

    // Another queue's consumer dead-letters into `jobs-dlq`: `jobs` cannot go.
    store.create_queue("other", 0).await?;
    store.set_consumer("other", consumer(1)).await?;
    let err = store.delete_queue("jobs").await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert!(store.queue("jobs").await?.is_some());

    store
        .publish("jobs", vec![message("kept", None)], depth(10))
        .await?;
    assert!(store.remove_consumer("jobs").await?);
    assert!(!store.remove_consumer("jobs").await?);
    assert_eq!(store.queue("jobs").await?.expect("jobs").consumer, None);
    assert_eq!(store.counts("jobs").await?.depth, 1, "its messages stay");
    assert!(store.remove_consumer("other").await?);
    assert!(store.delete_queue("jobs").await?);
    Ok(())
}

pub async fn a_deleted_queue_created_again_starts_empty<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.queues;
    store.create_queue("jobs", 60_000).await?;
    store.set_consumer("jobs", consumer(1)).await?;
    store
        .publish(
            "jobs",
            vec![message("a", Some("k")), message("b", None)],
            depth(10),
        )
        .await?;
    let (claimed, _) = store.claim("jobs", 1, FAR).await?;
    store
        .settle(
            "jobs",
            vec![Settle::DeadLetter {
                row: claimed[0].row,
                lease_until_ms: FAR,
                to: "jobs-dlq".into(),
                error: "trap".into(),
            }],
        )
        .await?;
    assert!(store.delete_queue("jobs").await?);
    assert!(store.queue("jobs-dlq").await?.is_none());

    let queue = store.create_queue("jobs", 60_000).await?;
    assert_eq!(queue.consumer, None);
    assert_eq!(store.counts("jobs").await?, QueueCounts::default());
    assert_eq!(store.counts("jobs-dlq").await?, QueueCounts::default());
    let again = store
        .publish("jobs", vec![message("a", Some("k"))], depth(10))
        .await?;
    assert!(!again[0].duplicate, "the old queue's keys are gone");
    Ok(())
}

pub async fn after_a_restart_in_flight_messages_return_and_last_attempts_are_dead_lettered<
    B: Backend,
>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    {
        let store = &stores.queues;
        store.create_queue("jobs", 0).await?;
        store.set_consumer("jobs", consumer(2)).await?;
        store
            .publish(
                "jobs",
                vec![message("once", None), message("twice", None)],
                depth(10),
            )
            .await?;
        let (claimed, _) = store.claim("jobs", 2, FAR).await?;
        // "twice" failed its first attempt; its second is in flight at the "crash".
        store
            .settle(
                "jobs",
                vec![Settle::Retry {
                    row: claimed[1].row,
                    lease_until_ms: FAR,
                    visible_at_ms: 0,
                    error: "500".into(),
                }],
            )
            .await?;
        store.claim("jobs", 1, FAR).await?;
    }
    let stores = reopen(&place, stores).await?;
    let store = &stores.queues;
    let (claimed, _) = store.claim("jobs", 10, FAR).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].body.as_slice(), claimed[0].attempt),
        (&b"once"[..], 2)
    );
    let dead = store.peek("jobs-dlq", 10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].body.as_slice(), dead[0].attempts),
        (&b"twice"[..], 2)
    );
    assert!(dead[0].last_error.is_some());
    let counts = store.counts("jobs").await?;
    assert_eq!((counts.delivered, counts.dead_lettered), (4, 1));
    assert_eq!(counts.failed_attempts, 2);
    Ok(())
}

/// Queues, bindings, messages, counters and idempotency keys are all there after a restart.
pub async fn queues_survive_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    {
        let store = &stores.queues;
        store.create_queue("jobs", 3_600_000).await?;
        store.create_queue("idle", 0).await?;
        store.set_consumer("jobs", consumer(5)).await?;
        store
            .publish(
                "jobs",
                vec![
                    message("acked", Some("k")),
                    message("delayed", None),
                    message("ready", None),
                ],
                depth(10),
            )
            .await?;
        let (claimed, _) = store.claim("jobs", 2, FAR).await?;
        store
            .settle(
                "jobs",
                vec![
                    Settle::Ack {
                        row: claimed[0].row,
                        lease_until_ms: FAR,
                    },
                    Settle::Retry {
                        row: claimed[1].row,
                        lease_until_ms: FAR,
                        visible_at_ms: FAR,
                        error: "later".into(),
                    },
                ],
            )
            .await?;
    }
    let queues = stores.queues.list_queues().await?;
    let counts = stores.queues.counts("jobs").await?;
    let peeked = stores.queues.peek("jobs", 10).await?;
    let stores = reopen(&place, stores).await?;
    let store = &stores.queues;
    assert_eq!(store.list_queues().await?, queues);
    assert_eq!(store.counts("jobs").await?, counts);
    assert_eq!(
        (counts.depth, counts.delayed, counts.ready, counts.succeeded),
        (2, 1, 1, 1)
    );
    let after: Vec<_> = store
        .peek("jobs", 10)
        .await?
        .into_iter()
        .map(|m| (m.id, m.body, m.attempts, m.visible_at_ms, m.last_error))
        .collect();
    let before: Vec<_> = peeked
        .into_iter()
        .map(|m| (m.id, m.body, m.attempts, m.visible_at_ms, m.last_error))
        .collect();
    assert_eq!(after, before);
    let again = store
        .publish("jobs", vec![message("acked", Some("k"))], depth(10))
        .await?;
    assert!(again[0].duplicate, "the key is remembered across a restart");
    Ok(())
}
