//! Contracts of `InvocationStore`: appending records in order, reading them by cursor and
//! from the tail, retention, rollups merged per function and minute, cost minutes and
//! totals.
//!
//! Retention reads the clock: these tests date records days away from now, so no test
//! depends on how long it runs.

use super::{Backend, deploy, invocation, logs, now_ms, open, reopen};
use crate::{InvocationRecord, LatencyHistogram, NewInvocation, Result, Retention, Rollup};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// A minute well after the epoch, in unix milliseconds.
const MINUTE: i64 = 60_000 * 1000;

pub async fn invocations_read_by_cursor_and_tail_in_order<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "a", "/a", b"a", 1).await?;
    deploy(&stores, "b", "/b", b"b", 1).await?;
    let now = now_ms();
    let batch: Vec<NewInvocation> = (0..5)
        .flat_map(|i| {
            [
                invocation("a", now + i, &format!("a{i}")),
                invocation("b", now, "b"),
            ]
        })
        .chain([invocation("removed", now, "dropped")])
        .collect();
    invocations
        .append_invocations(batch.clone(), Retention::default())
        .await?;

    let all = invocations.invocations_after("a", 0, 100).await?;
    assert_eq!(logs(&all), ["a0", "a1", "a2", "a3", "a4"]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        all[0],
        InvocationRecord {
            id: all[0].id,
            invocation: batch[0].clone(),
        }
    );
    assert_eq!(
        logs(&invocations.invocations_after("a", all[1].id, 2).await?),
        ["a2", "a3"]
    );
    assert!(
        invocations
            .invocations_after("a", all[4].id, 10)
            .await?
            .is_empty()
    );
    assert_eq!(
        logs(&invocations.invocations_tail("a", 2).await?),
        ["a3", "a4"]
    );
    assert_eq!(
        invocations.invocations_tail("a", usize::MAX).await?.len(),
        5
    );
    assert_eq!(invocations.invocations_tail("b", 100).await?.len(), 5);
    assert!(
        invocations
            .invocations_tail("removed", 10)
            .await?
            .is_empty()
    );
    // Ids grow across functions in batch order: `b`'s first record came between a0 and a1.
    let b = invocations.invocations_after("b", 0, 100).await?;
    assert!(all[0].id < b[0].id && b[0].id < all[1].id);
    // A later batch comes after the cursor.
    invocations
        .append_invocations(vec![invocation("a", now, "a5")], Retention::default())
        .await?;
    assert_eq!(
        logs(&invocations.invocations_after("a", all[4].id, 10).await?),
        ["a5"]
    );
    // An empty batch is fine.
    invocations
        .append_invocations(Vec::new(), Retention::default())
        .await?;
    Ok(())
}

/// A cursor stays valid when the records before it are deleted: ids are never given again.
pub async fn invocation_ids_keep_growing_after_records_are_deleted<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "a", "/a", b"a", 1).await?;
    let now = now_ms();
    invocations
        .append_invocations(
            vec![invocation("a", now, "a0"), invocation("a", now, "a1")],
            Retention::default(),
        )
        .await?;
    let last = invocations.invocations_tail("a", 1).await?[0].id;
    let none = Retention {
        invocations_per_function_max: 0,
        ..Retention::default()
    };
    invocations
        .append_invocations(vec![invocation("a", now, "gone")], none)
        .await?;
    assert!(invocations.invocations_tail("a", 10).await?.is_empty());
    invocations
        .append_invocations(vec![invocation("a", now, "a2")], Retention::default())
        .await?;
    let after = invocations.invocations_after("a", last, 10).await?;
    assert_eq!(logs(&after), ["a2"]);
    assert!(
        after[0].id > last + 1,
        "the deleted record's id is not reused"
    );
    Ok(())
}

pub async fn retention_keeps_newest_per_function<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "a", "/a", b"a", 1).await?;
    deploy(&stores, "b", "/b", b"b", 1).await?;
    let retention = Retention {
        invocations_per_function_max: 3,
        ..Retention::default()
    };
    let now = now_ms();
    invocations
        .append_invocations(vec![invocation("b", now, "b0")], retention)
        .await?;
    for i in 0..5 {
        invocations
            .append_invocations(vec![invocation("a", now, &format!("a{i}"))], retention)
            .await?;
    }
    let batch: Vec<_> = (5..10)
        .map(|i| invocation("a", now, &format!("a{i}")))
        .collect();
    invocations.append_invocations(batch, retention).await?;
    assert_eq!(
        logs(&invocations.invocations_tail("a", 100).await?),
        ["a7", "a8", "a9"]
    );
    assert_eq!(logs(&invocations.invocations_tail("b", 100).await?), ["b0"]);

    let none = Retention {
        invocations_per_function_max: 0,
        ..retention
    };
    invocations
        .append_invocations(vec![invocation("a", now, "gone")], none)
        .await?;
    assert!(invocations.invocations_tail("a", 100).await?.is_empty());
    assert_eq!(
        logs(&invocations.invocations_tail("b", 100).await?),
        ["b0"],
        "only functions in the batch are trimmed to the count"
    );
    Ok(())
}

pub async fn retention_deletes_records_older_than_the_window<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "a", "/a", b"a", 1).await?;
    let now = now_ms();
    let old = vec![
        invocation("a", now - 8 * DAY_MS, "8 days"),
        invocation("a", now - 6 * DAY_MS, "6 days"),
    ];
    invocations
        .append_invocations(old, Retention::default())
        .await?;
    assert_eq!(
        invocations.invocations_tail("a", 10).await?.len(),
        1,
        "the batch itself is trimmed"
    );
    invocations
        .append_invocations(vec![invocation("a", now, "now")], Retention::default())
        .await?;
    assert_eq!(
        logs(&invocations.invocations_tail("a", 10).await?),
        ["6 days", "now"]
    );

    // A batch stamped ahead of the system clock moves the window with it.
    let later = vec![invocation("a", now + 2 * DAY_MS, "later")];
    invocations
        .append_invocations(
            later,
            Retention {
                retention_ms: DAY_MS + 1,
                ..Retention::default()
            },
        )
        .await?;
    assert_eq!(
        logs(&invocations.invocations_tail("a", 10).await?),
        ["later"]
    );
    Ok(())
}

pub async fn old_records_of_idle_functions_expire_too<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "busy", "/busy", b"busy", 1).await?;
    deploy(&stores, "idle", "/idle", b"idle", 1).await?;
    let now = now_ms();
    let window = Retention {
        retention_ms: 2 * DAY_MS,
        ..Retention::default()
    };
    invocations
        .append_invocations(vec![invocation("idle", now - DAY_MS, "idle")], window)
        .await?;
    let shorter = Retention {
        retention_ms: DAY_MS / 2,
        ..Retention::default()
    };
    invocations
        .append_invocations(vec![invocation("busy", now, "busy")], shorter)
        .await?;
    assert!(
        invocations.invocations_tail("idle", 10).await?.is_empty(),
        "a batch of another function expires it"
    );

    invocations
        .append_invocations(vec![invocation("idle", now - DAY_MS, "idle again")], window)
        .await?;
    assert_eq!(invocations.expire_invocations(window).await?, 0);
    assert_eq!(
        invocations.expire_invocations(shorter).await?,
        1,
        "the periodic pass expires it with no traffic"
    );
    assert!(invocations.invocations_tail("idle", 10).await?.is_empty());
    assert_eq!(
        logs(&invocations.invocations_tail("busy", 10).await?),
        ["busy"]
    );
    Ok(())
}

/// A node's share of the rollups: every added rollup counts once, the shares sum to the
/// totals of their counts, and they follow the window and expiry of the rollups.
pub async fn rollup_shares_sum_to_the_rollups<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "f", "/f", b"bytes", 1).await?;
    deploy(&stores, "g", "/g", b"bytes", 1).await?;
    assert!(invocations.rollup_shares("f", 0).await?.is_empty());
    let one = Rollup {
        invocations: 3,
        errors: 1,
        rejected: 2,
        cold_starts: 1,
        wall_us: 300,
        cpu_us: 200,
        billed_ms: 5,
        memory_bytes_peak: 10,
        ..Default::default()
    };
    invocations
        .add_rollups(
            vec![
                ("f".into(), MINUTE, one.clone()),
                ("f".into(), MINUTE + 60_000, one.clone()),
                ("g".into(), MINUTE, one.clone()),
            ],
            0,
        )
        .await?;
    invocations
        .add_rollups(vec![("f".into(), MINUTE + 60_000, one.clone())], 0)
        .await?;
    let mut total = Rollup::default();
    for (_, rollup) in invocations.rollups("f", 0).await? {
        total.merge(&rollup);
    }
    let shares = invocations.rollup_shares("f", 0).await?;
    assert_eq!(shares.len(), 1, "one node wrote: {shares:?}");
    assert_eq!(shares[0].1, total.share());
    assert_eq!(shares[0].1.invocations, 9);
    assert_eq!(shares[0].1.rejected, 6);
    let later = invocations.rollup_shares("f", MINUTE + 60_000).await?;
    assert_eq!(later[0].1.invocations, 6);
    // Expired with the rollups.
    invocations.add_rollups(vec![], MINUTE + 60_000).await?;
    let kept = invocations.rollup_shares("f", 0).await?;
    assert_eq!(kept[0].1.invocations, 6);
    assert!(invocations.rollup_shares("g", 0).await?.is_empty());
    Ok(())
}

pub async fn rollups_merge_per_function_and_minute_and_expire<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "f", "/f", b"bytes", 1).await?;
    let mut one = Rollup {
        invocations: 2,
        errors: 1,
        wall_us: 300,
        memory_bytes_peak: 10,
        ..Default::default()
    };
    one.outcomes.insert("ok".into(), 1);
    one.outcomes.insert("trap".into(), 1);
    one.latency.record(100);
    one.latency.record(200);
    invocations
        .add_rollups(
            vec![
                ("f".into(), MINUTE, one.clone()),
                ("f".into(), MINUTE, one.clone()),
            ],
            MINUTE - 1,
        )
        .await?;
    // A removed function's minutes are dropped, not an error.
    invocations
        .add_rollups(vec![("gone".into(), MINUTE, one.clone())], 0)
        .await?;
    assert!(invocations.rollups("gone", 0).await?.is_empty());
    let rows = invocations.rollups("f", 0).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, MINUTE);
    let merged = &rows[0].1;
    assert_eq!(merged.invocations, 4);
    assert_eq!(merged.outcomes["trap"], 2);
    assert_eq!(merged.latency.count(), 4);
    assert_eq!(merged.memory_bytes_peak, 10);
    assert!(invocations.rollups("f", MINUTE + 60_000).await?.is_empty());
    // A later write merges into the stored minute too, and a new minute comes after it.
    invocations
        .add_rollups(
            vec![
                ("f".into(), MINUTE + 60_000, one.clone()),
                ("f".into(), MINUTE, one.clone()),
            ],
            0,
        )
        .await?;
    let rows = invocations.rollups("f", 0).await?;
    let minutes: Vec<i64> = rows.iter().map(|(minute, _)| *minute).collect();
    assert_eq!(minutes, [MINUTE, MINUTE + 60_000]);
    assert_eq!((rows[0].1.invocations, rows[1].1.invocations), (6, 2));
    // Every function's in one read: the same rollups, by function then minute.
    deploy(&stores, "e", "/e", b"bytes", 1).await?;
    invocations
        .add_rollups(vec![("e".into(), MINUTE + 60_000, one.clone())], 0)
        .await?;
    let every = invocations.every_rollup(0).await?;
    let keys: Vec<(&str, i64)> = every.iter().map(|(f, m, _)| (f.as_str(), *m)).collect();
    assert_eq!(
        keys,
        [
            ("e", MINUTE + 60_000),
            ("f", MINUTE),
            ("f", MINUTE + 60_000)
        ]
    );
    assert_eq!(every[1].2, rows[0].1);
    assert_eq!(invocations.every_rollup(MINUTE + 1).await?.len(), 2);
    assert_eq!(invocations.rollups("f", MINUTE + 1).await?.len(), 1);
    // Expiry: a later write with a cutoff past a minute deletes it, whatever function.
    invocations.add_rollups(Vec::new(), MINUTE + 1).await?;
    assert_eq!(invocations.rollups("f", 0).await?.len(), 1);
    invocations.add_rollups(Vec::new(), MINUTE + 60_001).await?;
    assert!(invocations.rollups("f", 0).await?.is_empty());
    Ok(())
}

/// Every field of a rollup is stored, and merged as [`Rollup::merge`] does: sums, and the
/// largest of the peaks and limits.
pub async fn a_rollup_keeps_every_field<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "f", "/f", b"bytes", 1).await?;
    let full = |n: u64| {
        let mut latency = LatencyHistogram::default();
        latency.record(n * 1000);
        Rollup {
            invocations: n,
            errors: n + 1,
            rejected: n + 2,
            cold_starts: n + 3,
            wall_us: n + 4,
            cpu_us: n + 5,
            instantiate_us: n + 6,
            request_bytes: n + 7,
            response_bytes: n + 8,
            memory_bytes_peak: n * 100,
            outcomes: [("ok".to_owned(), n), (format!("outcome-{n}"), 1)].into(),
            latency,
            connection_ms: n + 9,
            billed_ms: n + 10,
            memory_limit_bytes: n * 1000,
        }
    };
    invocations
        .add_rollups(vec![("f".into(), MINUTE, full(1))], 0)
        .await?;
    assert_eq!(invocations.rollups("f", 0).await?, [(MINUTE, full(1))]);
    invocations
        .add_rollups(vec![("f".into(), MINUTE, full(7))], 0)
        .await?;
    let mut expected = full(1);
    expected.merge(&full(7));
    assert_eq!(expected.memory_bytes_peak, 700);
    assert_eq!(invocations.rollups("f", 0).await?, [(MINUTE, expected)]);
    Ok(())
}

/// `cost_minutes` holds every function's minutes from the date on, ordered by minute then
/// function, with only the priced fields.
pub async fn cost_minutes_hold_what_prices_them<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "f", "/f", b"bytes", 1).await?;
    deploy(&stores, "g", "/g", b"other", 1).await?;
    let mut busy = Rollup {
        invocations: 3,
        errors: 1,
        wall_us: 2500,
        cpu_us: 900,
        billed_ms: 4,
        memory_limit_bytes: 64,
        connection_ms: 50,
        memory_bytes_peak: 9,
        ..Rollup::default()
    };
    busy.outcomes.insert("ok".into(), 3);
    busy.latency.record(800);
    invocations
        .add_rollups(
            vec![
                ("g".into(), MINUTE + 60_000, busy.clone()),
                ("f".into(), MINUTE + 60_000, busy.clone()),
                ("g".into(), MINUTE, busy.clone()),
            ],
            0,
        )
        .await?;
    let priced = Rollup {
        invocations: 3,
        wall_us: 2500,
        cpu_us: 900,
        billed_ms: 4,
        memory_limit_bytes: 64,
        ..Rollup::default()
    };
    assert_eq!(
        invocations.cost_minutes(0).await?,
        [
            ("g".to_owned(), MINUTE, priced.clone()),
            ("f".to_owned(), MINUTE + 60_000, priced.clone()),
            ("g".to_owned(), MINUTE + 60_000, priced.clone()),
        ]
    );
    assert_eq!(invocations.cost_minutes(MINUTE + 1).await?.len(), 2);
    assert!(invocations.cost_minutes(MINUTE + 120_000).await?.is_empty());
    Ok(())
}

pub async fn cost_totals_sum_per_function_and_memory_limit<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let invocations = &stores.invocations;
    deploy(&stores, "f", "/f", b"bytes", 1).await?;
    deploy(&stores, "g", "/g", b"other", 1).await?;
    let at = |invocations, billed_ms, memory_limit_bytes| Rollup {
        invocations,
        wall_us: billed_ms * 1000 - 1,
        cpu_us: 7,
        billed_ms,
        memory_limit_bytes,
        ..Default::default()
    };
    invocations
        .add_rollups(
            vec![
                ("f".into(), MINUTE, at(1, 10, 64)),
                ("f".into(), MINUTE + 60_000, at(2, 20, 64)),
                // Redeployed with more memory: priced apart.
                ("f".into(), MINUTE + 120_000, at(3, 30, 128)),
                ("g".into(), MINUTE + 60_000, at(4, 40, 64)),
            ],
            0,
        )
        .await?;
    assert_eq!(invocations.cost_minutes(MINUTE + 60_000).await?.len(), 3);
    let totals = invocations.cost_totals(MINUTE).await?;
    let seen: Vec<_> = totals
        .iter()
        .map(|(f, since, r)| {
            (
                f.as_str(),
                *since,
                r.invocations,
                r.billed_ms,
                r.cpu_us,
                r.memory_limit_bytes,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("f", MINUTE, 2 + 1, 30, 14, 64),
            ("f", MINUTE, 3, 30, 7, 128),
            ("g", MINUTE, 4, 40, 7, 64),
        ]
    );
    assert_eq!(
        totals[0].2.wall_us,
        10_000 - 1 + 20_000 - 1,
        "wall time is summed too"
    );
    // Only minutes from the date on are summed, and the totals carry that date.
    let later = invocations.cost_totals(MINUTE + 60_000).await?;
    let seen: Vec<_> = later
        .iter()
        .map(|(f, since, r)| (f.as_str(), *since, r.invocations))
        .collect();
    assert_eq!(
        seen,
        [
            ("f", MINUTE + 60_000, 2),
            ("f", MINUTE + 60_000, 3),
            ("g", MINUTE + 60_000, 4),
        ]
    );
    assert!(invocations.cost_totals(MINUTE + 180_000).await?.is_empty());
    // One node wrote them all: its share is the totals.
    for since in [MINUTE, MINUTE + 60_000] {
        let shares = invocations.cost_shares(since).await?;
        let nodes: std::collections::BTreeSet<&str> =
            shares.iter().map(|(node, ..)| node.as_str()).collect();
        assert_eq!(nodes.len(), 1, "{shares:?}");
        let as_totals: Vec<(String, i64, Rollup)> = shares
            .into_iter()
            .map(|(_, f, minute, r)| (f, minute, r))
            .collect();
        assert_eq!(as_totals, invocations.cost_totals(since).await?);
    }
    Ok(())
}

pub async fn invocations_and_rollups_survive_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    deploy(&stores, "a", "/a", b"a1", 1).await?;
    stores
        .invocations
        .append_invocations(
            vec![invocation("a", now_ms(), "kept")],
            Retention::default(),
        )
        .await?;
    let mut rollup = Rollup {
        invocations: 1,
        ..Rollup::default()
    };
    rollup.latency.record(5);
    stores
        .invocations
        .add_rollups(vec![("a".into(), MINUTE, rollup.clone())], 0)
        .await?;
    let before = stores.invocations.invocations_tail("a", 5).await?;
    let stores = reopen(&place, stores).await?;
    assert_eq!(
        logs(&stores.invocations.invocations_tail("a", 5).await?),
        ["kept"]
    );
    assert_eq!(stores.invocations.invocations_tail("a", 5).await?, before);
    assert_eq!(
        stores.invocations.rollups("a", 0).await?,
        [(MINUTE, rollup)]
    );
    // Ids go on growing after a restart.
    stores
        .invocations
        .append_invocations(
            vec![invocation("a", now_ms(), "next")],
            Retention::default(),
        )
        .await?;
    let after = stores
        .invocations
        .invocations_after("a", before[0].id, 5)
        .await?;
    assert_eq!(logs(&after), ["next"]);
    Ok(())
}
