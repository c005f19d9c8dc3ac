//! Unit tests of the store, run against a SQLite file in a temporary directory and in memory.

use std::collections::BTreeMap;
use std::path::Path;

use crate::store::now_ms;
use crate::{
    NewInvocation, NewVersion, Result, Retention, Store, StoreError, VersionConfig,
    component_digest, schema,
};

/// Runs `test` against an in-memory store and a file-backed one.
fn each_store(test: impl Fn(&Store) -> Result<()>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = Store::open(&dir.path().join("state/eddy.db")).expect("open file store");
    test(&file).expect("file-backed store");
    let memory = Store::open_in_memory().expect("open in-memory store");
    test(&memory).expect("in-memory store");
}

fn config(route: &str) -> VersionConfig {
    VersionConfig {
        route: route.to_owned(),
        memory_bytes_max: 64 << 20,
        timeout_ms: 30_000,
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        allow_outbound: vec!["api.example.com".to_owned()],
        max_concurrency: Some(10),
        max_queue: None,
        max_wait_ms: None,
        reserved_concurrency: 0,
        reuse: Some(crate::ReuseSettings {
            max_requests: 5,
            idle_timeout_ms: 1000,
        }),
        publish: vec!["orders".to_owned()],
        schedule: Some(crate::ScheduleSettings {
            cron: "*/5 * * * *".to_owned(),
            timezone: Some("Europe/Paris".to_owned()),
            overlap: crate::Overlap::Allow,
            missed: crate::Missed::RunOnce,
            path: None,
        }),
        websocket: true,
    }
}

/// Deploys `bytes` as the next version of `function` at `route`, created at `at_ms`.
fn deploy(store: &Store, function: &str, route: &str, bytes: &[u8], at_ms: i64) -> Result<u32> {
    let new = NewVersion {
        function: function.to_owned(),
        digest: component_digest(bytes),
        size_bytes: bytes.len() as u64,
        config: config(route),
        created_at_ms: at_ms,
    };
    Ok(store.create_version(&new, Some(bytes))?.version)
}

fn invocation(function: &str, at_ms: i64, log: &str) -> NewInvocation {
    NewInvocation {
        cpu_us: 0,
        instantiate_us: Some(10),
        memory_bytes_peak: 65536,
        request_bytes: 0,
        response_bytes: 3,
        function: function.to_owned(),
        version: 1,
        at_ms,
        method: "GET".to_owned(),
        path: "/x".to_owned(),
        status: 200,
        outcome: "ok".to_owned(),
        duration_us: 1234,
        log: log.to_owned(),
    }
}

fn logs(records: &[crate::InvocationRecord]) -> Vec<&str> {
    records.iter().map(|r| r.invocation.log.as_str()).collect()
}

#[test]
fn versions_are_numbered_from_one_and_listed_newest_first() {
    each_store(|store| {
        for (i, bytes) in [b"one".as_slice(), b"two", b"three"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                deploy(store, "hello", "/hello", bytes, 100 + i as i64)?,
                i as u32 + 1
            );
        }
        let numbers: Vec<u32> = store.versions("hello")?.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [3, 2, 1]);
        let function = store.function("hello")?.expect("function exists");
        assert_eq!((function.live.version, function.version_count), (3, 3));
        assert_eq!(function.updated_at_ms, 102);
        assert_eq!(function.live.config, config("/hello"));
        assert_eq!(
            store.version("hello", 2)?.expect("v2").digest,
            component_digest(b"two")
        );
        assert_eq!(store.version("hello", 4)?, None);
        assert!(
            matches!(store.versions("nope"), Err(StoreError::NotFound { what }) if what == "function `nope`")
        );
        Ok(())
    });
}

#[test]
fn version_numbers_are_not_reused_after_rollback() {
    each_store(|store| {
        deploy(store, "f", "/f", b"a", 1)?;
        deploy(store, "f", "/f", b"b", 2)?;
        assert_eq!(store.set_live_version("f", 1)?.live.version, 1);
        assert_eq!(deploy(store, "f", "/f", b"c", 3)?, 3);
        Ok(())
    });
}

#[test]
fn route_conflict_is_refused_and_stores_nothing() {
    each_store(|store| {
        deploy(store, "a", "/shared", b"a", 1)?;
        let err = deploy(store, "b", "/shared", b"b", 2).expect_err("route is taken");
        assert!(
            matches!(&err, StoreError::RouteTaken { route, function } if route == "/shared" && function == "a")
        );
        assert_eq!(store.function("b")?, None);
        assert!(!store.has_component(&component_digest(b"b"))?);
        assert_eq!(store.list_functions()?.len(), 1);
        Ok(())
    });
}

#[test]
fn redeploy_keeps_own_route_and_moving_away_frees_it() {
    each_store(|store| {
        deploy(store, "a", "/a", b"a1", 1)?;
        assert_eq!(deploy(store, "a", "/a", b"a2", 2)?, 2);
        deploy(store, "a", "/a-new", b"a3", 3)?;
        // `/a` now only belongs to a non-live version of `a`, so another function may take it.
        deploy(store, "b", "/a", b"b1", 4)?;
        let names: Vec<String> = store
            .list_functions()?
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        Ok(())
    });
}

#[test]
fn rollback_changes_live_version_and_refuses_taken_route() {
    each_store(|store| {
        deploy(store, "a", "/old", b"a1", 1)?;
        deploy(store, "a", "/new", b"a2", 2)?;
        let before = now_ms();
        let function = store.set_live_version("a", 1)?;
        assert_eq!((function.live.version, function.version_count), (1, 2));
        assert_eq!(function.live.config.route, "/old");
        assert!(function.updated_at_ms >= before);
        // Setting the live version again changes nothing.
        assert_eq!(store.set_live_version("a", 1)?, function);

        store.set_live_version("a", 2)?;
        deploy(store, "b", "/old", b"b1", 3)?;
        let err = store.set_live_version("a", 1).expect_err("route is taken");
        assert!(matches!(err, StoreError::RouteTaken { function, .. } if function == "b"));
        assert_eq!(store.function("a")?.expect("a").live.version, 2);

        let missing = store.set_live_version("a", 9).expect_err("no version 9");
        assert!(matches!(missing, StoreError::NotFound { what } if what == "version 9 of `a`"));
        let missing = store.set_live_version("zz", 1).expect_err("no function");
        assert!(matches!(missing, StoreError::NotFound { what } if what == "function `zz`"));
        Ok(())
    });
}

#[test]
fn remove_cascades_and_keeps_components_still_referenced() {
    each_store(|store| {
        deploy(store, "a", "/a", b"shared", 1)?;
        deploy(store, "a", "/a", b"only-a", 2)?;
        deploy(store, "b", "/b", b"shared", 3)?;
        store.append_invocations(&[invocation("a", now_ms(), "a log")], Retention::default())?;

        assert!(store.remove_function("a")?);
        assert!(!store.remove_function("a")?);
        assert_eq!(store.function("a")?, None);
        assert!(store.invocations_tail("a", 10)?.is_empty());
        assert!(matches!(
            store.versions("a"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(!store.has_component(&component_digest(b"only-a"))?);
        assert_eq!(
            store.component(&component_digest(b"shared"))?.as_deref(),
            Some(&b"shared"[..])
        );

        // The freed route and name are usable again; numbering restarts for the new function.
        assert_eq!(deploy(store, "a", "/a", b"again", 4)?, 1);
        assert!(store.remove_function("b")?);
        assert!(!store.has_component(&component_digest(b"shared"))?);
        Ok(())
    });
}

#[test]
fn components_are_content_addressed() {
    each_store(|store| {
        let digest = component_digest(b"wasm");
        assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
        assert_eq!(store.component(&digest)?, None);
        store.put_component(&digest, b"wasm")?;
        store.put_component(&digest, b"wasm")?;
        assert_eq!(store.component(&digest)?, Some(b"wasm".to_vec()));
        assert!(matches!(
            store.put_component(&digest, b"other"),
            Err(StoreError::Corrupt(_))
        ));

        // A version may refer to bytes stored earlier, but not to unknown bytes.
        let mut new = NewVersion {
            function: "f".to_owned(),
            digest: digest.clone(),
            size_bytes: 4,
            config: config("/f"),
            created_at_ms: 1,
        };
        assert_eq!(store.create_version(&new, None)?.version, 1);
        new.digest = component_digest(b"missing");
        assert!(matches!(
            store.create_version(&new, None),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.versions("f")?.len(), 1);
        Ok(())
    });
}

#[test]
fn admin_token_hash_roundtrips() {
    each_store(|store| {
        assert_eq!(store.admin_token_hash()?, None);
        store.set_admin_token_hash("sha256:aaaa")?;
        store.set_admin_token_hash("sha256:bbbb")?;
        assert_eq!(store.admin_token_hash()?.as_deref(), Some("sha256:bbbb"));
        Ok(())
    });
}

#[test]
fn reopening_keeps_everything_and_migrations_run_once() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eddy.db");
    {
        let store = Store::open(&path)?;
        deploy(&store, "a", "/a", b"a1", 1)?;
        deploy(&store, "a", "/a", b"a2", 2)?;
        store.set_live_version("a", 1)?;
        store.set_admin_token_hash("hash")?;
        store.append_invocations(&[invocation("a", now_ms(), "kept")], Retention::default())?;
    }
    for _ in 0..2 {
        let store = Store::open(&path)?;
        assert_eq!(
            schema::schema_version(&store.conn())?,
            schema::SCHEMA_VERSION
        );
        let mode: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let foreign_keys: bool = store
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        assert_eq!((mode.as_str(), foreign_keys), ("wal", true));
        let function = store.function("a")?.expect("a survives reopen");
        assert_eq!((function.live.version, function.version_count), (1, 2));
        assert_eq!(store.admin_token_hash()?.as_deref(), Some("hash"));
        assert_eq!(
            store.component(&component_digest(b"a2"))?,
            Some(b"a2".to_vec())
        );
        assert_eq!(logs(&store.invocations_tail("a", 5)?), ["kept"]);
        assert_eq!(
            deploy(&store, "b", "/a", b"b", 3).map_err(|e| e.to_string()),
            Err("route /a is already served by function `a`".to_owned())
        );
    }
    Ok(())
}

#[test]
fn newer_schema_is_refused() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eddy.db");
    drop(Store::open(&path)?);
    rusqlite::Connection::open(&path)?.pragma_update(None, "user_version", 99)?;
    assert!(matches!(Store::open(&path), Err(StoreError::Corrupt(_))));
    Ok(())
}

#[test]
fn invocations_read_by_cursor_and_tail_in_order() {
    each_store(|store| {
        deploy(store, "a", "/a", b"a", 1)?;
        deploy(store, "b", "/b", b"b", 1)?;
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
        store.append_invocations(&batch, Retention::default())?;

        let all = store.invocations_after("a", 0, 100)?;
        assert_eq!(logs(&all), ["a0", "a1", "a2", "a3", "a4"]);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            all[0],
            crate::InvocationRecord {
                id: all[0].id,
                invocation: batch[0].clone(),
            }
        );
        assert_eq!(
            logs(&store.invocations_after("a", all[1].id, 2)?),
            ["a2", "a3"]
        );
        assert!(store.invocations_after("a", all[4].id, 10)?.is_empty());
        assert_eq!(logs(&store.invocations_tail("a", 2)?), ["a3", "a4"]);
        assert_eq!(store.invocations_tail("a", usize::MAX)?.len(), 5);
        assert_eq!(store.invocations_tail("b", 100)?.len(), 5);
        assert!(store.invocations_tail("removed", 10)?.is_empty());
        Ok(())
    });
}

#[test]
fn retention_keeps_newest_per_function() {
    each_store(|store| {
        deploy(store, "a", "/a", b"a", 1)?;
        deploy(store, "b", "/b", b"b", 1)?;
        let retention = Retention {
            invocations_per_function_max: 3,
            ..Retention::default()
        };
        let now = now_ms();
        store.append_invocations(&[invocation("b", now, "b0")], retention)?;
        for i in 0..5 {
            store.append_invocations(&[invocation("a", now, &format!("a{i}"))], retention)?;
        }
        let batch: Vec<_> = (5..10)
            .map(|i| invocation("a", now, &format!("a{i}")))
            .collect();
        store.append_invocations(&batch, retention)?;
        assert_eq!(logs(&store.invocations_tail("a", 100)?), ["a7", "a8", "a9"]);
        assert_eq!(logs(&store.invocations_tail("b", 100)?), ["b0"]);

        let none = Retention {
            invocations_per_function_max: 0,
            ..retention
        };
        store.append_invocations(&[invocation("a", now, "gone")], none)?;
        assert!(store.invocations_tail("a", 100)?.is_empty());
        Ok(())
    });
}

#[test]
fn retention_deletes_records_older_than_the_window() {
    each_store(|store| {
        deploy(store, "a", "/a", b"a", 1)?;
        let now = now_ms();
        let day_ms = 24 * 3600 * 1000;
        let old = [
            invocation("a", now - 8 * day_ms, "8 days"),
            invocation("a", now - 6 * day_ms, "6 days"),
        ];
        store.append_invocations(&old, Retention::default())?;
        assert_eq!(
            store.invocations_tail("a", 10)?.len(),
            1,
            "the batch itself is trimmed"
        );
        store.append_invocations(&[invocation("a", now, "now")], Retention::default())?;
        assert_eq!(logs(&store.invocations_tail("a", 10)?), ["6 days", "now"]);

        // A batch stamped ahead of the system clock moves the window with it.
        let later = [invocation("a", now + 2 * day_ms, "later")];
        store.append_invocations(
            &later,
            Retention {
                retention_ms: day_ms + 1,
                ..Retention::default()
            },
        )?;
        assert_eq!(logs(&store.invocations_tail("a", 10)?), ["later"]);
        Ok(())
    });
}

#[test]
fn old_records_of_idle_functions_expire_too() {
    each_store(|store| {
        deploy(store, "busy", "/busy", b"busy", 1)?;
        deploy(store, "idle", "/idle", b"idle", 1)?;
        let now = now_ms();
        let day_ms = 24 * 3600 * 1000;
        let window = Retention {
            retention_ms: 2 * day_ms,
            ..Retention::default()
        };
        store.append_invocations(&[invocation("idle", now - day_ms, "idle")], window)?;
        let shorter = Retention {
            retention_ms: day_ms / 2,
            ..Retention::default()
        };
        store.append_invocations(&[invocation("busy", now, "busy")], shorter)?;
        assert!(
            store.invocations_tail("idle", 10)?.is_empty(),
            "a batch of another function expires it"
        );

        store.append_invocations(&[invocation("idle", now - day_ms, "idle again")], window)?;
        assert_eq!(store.expire_invocations(window)?, 0);
        assert_eq!(
            store.expire_invocations(shorter)?,
            1,
            "the periodic pass expires it with no traffic"
        );
        assert!(store.invocations_tail("idle", 10)?.is_empty());
        Ok(())
    });
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/eddy.db");
    Store::open(&path).expect("open");
    assert!(Path::exists(&path));
}

#[test]
fn cost_totals_sum_per_function_and_memory_limit() {
    each_store(|store| {
        deploy(store, "f", "/f", b"bytes", 1)?;
        deploy(store, "g", "/g", b"other", 1)?;
        let at = |invocations, billed_ms, memory_limit_bytes| crate::Rollup {
            invocations,
            wall_us: billed_ms * 1000 - 1,
            cpu_us: 7,
            billed_ms,
            memory_limit_bytes,
            ..Default::default()
        };
        let minute = 60_000 * 1000;
        store.add_rollups(
            &[
                ("f".into(), minute, at(1, 10, 64)),
                ("f".into(), minute + 60_000, at(2, 20, 64)),
                // Redeployed with more memory: priced apart.
                ("f".into(), minute + 120_000, at(3, 30, 128)),
                ("g".into(), minute + 60_000, at(4, 40, 64)),
            ],
            0,
        )?;
        assert_eq!(store.cost_minutes(minute + 60_000)?.len(), 3);
        let totals = store.cost_totals(minute)?;
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
                ("f", minute, 2 + 1, 30, 14, 64),
                ("f", minute, 3, 30, 7, 128),
                ("g", minute, 4, 40, 7, 64),
            ]
        );
        Ok(())
    });
}

#[test]
fn rollups_merge_per_function_and_minute_and_expire() {
    each_store(|store| {
        deploy(store, "f", "/f", b"bytes", 1)?;
        let mut one = crate::Rollup {
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
        let minute = 60_000 * 1000;
        store.add_rollups(
            &[
                ("f".into(), minute, one.clone()),
                ("f".into(), minute, one.clone()),
            ],
            minute - 1,
        )?;
        // A removed function's minutes are dropped, not an error.
        store.add_rollups(&[("gone".into(), minute, one.clone())], 0)?;
        let rows = store.rollups("f", 0)?;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, minute);
        let merged = &rows[0].1;
        assert_eq!(merged.invocations, 4);
        assert_eq!(merged.outcomes["trap"], 2);
        assert_eq!(merged.latency.count(), 4);
        assert_eq!(merged.memory_bytes_peak, 10);
        assert!(store.rollups("f", minute + 60_000)?.is_empty());
        // Expiry: a later write with a cutoff past the minute deletes it.
        store.add_rollups(&[], minute + 1)?;
        assert!(store.rollups("f", 0)?.is_empty());
        Ok(())
    });
}

#[test]
fn latency_quantiles_are_within_an_eighth() {
    let mut h = crate::LatencyHistogram::default();
    for us in 1..=1000u64 {
        h.record(us * 1000);
    }
    let p50 = h.quantile_us(0.5).unwrap() as f64;
    let p99 = h.quantile_us(0.99).unwrap() as f64;
    assert!((p50 / 500_000.0 - 1.0).abs() < 0.125, "{p50}");
    assert!((p99 / 990_000.0 - 1.0).abs() < 0.125, "{p99}");
    assert_eq!(crate::LatencyHistogram::default().quantile_us(0.5), None);
}
