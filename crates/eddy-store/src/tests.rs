//! Unit tests of the SQLite backend's own behaviour (schema, pragmas, files), and the
//! conformance suite's contracts that need no restart run against an in-memory database.
//! The suite itself runs against files in `tests/conformance_sqlite.rs`.

use std::path::Path;

use async_trait::async_trait;

use crate::conformance::{self, Backend};
use crate::{QueueStore, Result, Store, StoreError, Stores, component_digest, schema};

/// In-memory databases: they cannot be opened again, so every contract but those of a
/// restart runs on them.
struct Memory {
    opened: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Backend for Memory {
    async fn create() -> Self {
        Memory {
            opened: false.into(),
        }
    }

    async fn open(&self) -> Result<Stores> {
        let again = self.opened.swap(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!again, "an in-memory store cannot be opened again");
        Ok(Stores::sqlite(
            Store::open_in_memory()?,
            QueueStore::open_in_memory()?,
        ))
    }
}

/// One test per contract, run against [`Memory`].
macro_rules! in_memory {
    ($($area:ident :: $contract:ident),+ $(,)?) => {
        mod in_memory {
            $(
                #[test]
                fn $contract() {
                    super::conformance::run(
                        super::conformance::$area::$contract::<super::Memory>(),
                    );
                }
            )+
        }
    };
}

in_memory!(
    functions::versions_are_numbered_from_one_and_listed_newest_first,
    functions::version_numbers_are_not_reused_after_rollback,
    functions::concurrent_deploys_of_one_function_get_distinct_numbers,
    functions::route_conflict_is_refused_and_stores_nothing,
    functions::concurrent_deploys_to_one_route_let_one_function_win,
    functions::redeploy_keeps_own_route_and_moving_away_frees_it,
    functions::rollback_changes_live_version_and_refuses_taken_route,
    functions::remove_cascades_and_keeps_components_still_referenced,
    functions::components_are_content_addressed,
    token::the_first_admin_token_hash_wins,
    invocations::invocations_read_by_cursor_and_tail_in_order,
    invocations::invocation_ids_keep_growing_after_records_are_deleted,
    invocations::retention_keeps_newest_per_function,
    invocations::retention_deletes_records_older_than_the_window,
    invocations::old_records_of_idle_functions_expire_too,
    invocations::rollups_merge_per_function_and_minute_and_expire,
    invocations::rollup_shares_sum_to_the_rollups,
    invocations::a_rollup_keeps_every_field,
    invocations::cost_minutes_hold_what_prices_them,
    invocations::cost_totals_sum_per_function_and_memory_limit,
    cost::price_sheets_are_put_replaced_and_removed,
    cost::budgets_are_put_replaced_and_removed,
    cost::a_budgets_alert_state_is_kept_until_the_budget_is_put_again,
    cost::of_callers_racing_to_record_an_alert_exactly_one_does,
    queues::published_messages_are_claimed_oldest_first_once_and_acked,
    queues::a_lease_that_ran_out_is_delivered_again_and_its_late_settlement_ignored,
    queues::a_retry_waits_until_its_visible_time,
    queues::dead_letters_keep_their_id_until_redriven,
    queues::a_settlement_to_a_missing_queue_stores_nothing,
    queues::a_repeated_idempotency_key_is_acknowledged_and_dropped,
    queues::an_idempotency_key_is_forgotten_once_its_window_has_passed,
    queues::a_publish_past_the_depth_limit_enqueues_nothing,
    queues::a_queues_byte_quota_follows_its_messages,
    queues::unknown_queues_and_duplicate_names_are_refused,
    queues::peek_shows_every_message_in_order_without_claiming,
    queues::purge_deletes_all_but_in_flight_messages,
    queues::consumer_settings_are_set_replaced_and_removed,
    queues::a_deleted_queue_created_again_starts_empty,
    ticks::a_tick_is_claimed_once,
    ticks::concurrent_claims_of_a_tick_let_one_win,
    ticks::an_unfinished_tick_is_claimed_again_once_its_lease_ends,
    ticks::another_running_tick_is_seen_until_it_finishes_or_its_lease_ends,
);

/// The contracts `in_memory!` leaves out are exactly those of a restart.
#[test]
fn every_contract_without_a_restart_runs_in_memory() {
    let listed = |source: &'static str, indent: &'static str| {
        source
            .lines()
            .filter_map(move |l| l.strip_prefix(indent)?.strip_suffix(','))
            .filter(|l| l.split("::").count() == 2 && !l.contains(' '))
    };
    let in_memory: Vec<&str> = listed(include_str!("tests.rs"), "    ").collect();
    for contract in listed(include_str!("conformance/mod.rs"), "            ") {
        assert_eq!(
            in_memory.contains(&contract),
            !contract.contains("restart"),
            "{contract}"
        );
    }
}

/// Reopening a file keeps what was stored (the suite's restart contracts say what) and
/// migrates only once, with the connection's pragmas set every time.
#[test]
fn reopening_sets_pragmas_and_migrations_run_once() -> Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eddy.db");
    {
        let store = Store::open(&path)?;
        store.put_component(&component_digest(b"a1"), b"a1")?;
        store.set_admin_token_hash("hash")?;
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
        assert_eq!(store.admin_token_hash()?.as_deref(), Some("hash"));
        assert!(store.has_component(&component_digest(b"a1"))?);
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
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/eddy.db");
    Store::open(&path).expect("open");
    assert!(Path::exists(&path));
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
