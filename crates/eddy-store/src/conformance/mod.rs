//! The conformance suite: each contract of `contract.rs` as a test that runs against any
//! backend, so that every backend keeps the same promises. Enabled by the feature
//! `conformance`.
//!
//! A backend's crate runs the whole suite by implementing [`Backend`] (a factory of fresh,
//! isolated stores, which it can open again as after a restart) and invoking
//! [`conformance_tests!`](crate::conformance_tests) once in a test target, with
//! `eddy-store = { workspace = true, features = ["conformance"] }` and `async-trait` among
//! its dev-dependencies. The macro expands to one `#[test]` per contract, named after the
//! contract, so a failure names what broke and the tests run in parallel. Each builds its
//! own tokio runtime and must finish within [`CONTRACT_TIME_MAX`].
//!
//! The SQLite backend's test target, `tests/conformance_sqlite.rs`, is the example:
//!
//! ```rust
#![doc = include_str!("../../tests/conformance_sqlite.rs")]
//! # fn main() {}
//! ```
//!
//! Where a contract depends on the clock the store reads itself (see "Reads the clock" in
//! `contract.rs`), the tests pass times far in the past or future rather than waiting; the
//! one exception, an idempotency window running out, polls until a deadline.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use crate::queues::{ConsumerSettings, NewMessage, QueueLimits};
use crate::{
    InvocationRecord, NewInvocation, NewVersion, Result, Stores, VersionConfig, component_digest,
};

pub mod access;
pub mod cost;
pub mod functions;
pub mod invocations;
pub mod members;
pub mod queues;
pub mod ticks;
pub mod token;

/// Longest a contract's test may run before it fails (a hung backend fails, not hangs, the
/// suite). Generous: the slowest SQLite contract takes well under a second.
pub const CONTRACT_TIME_MAX: Duration = Duration::from_secs(60);

/// Where the suite's stores live, made fresh for each test.
#[async_trait]
pub trait Backend: Sized + Send + Sync + 'static {
    /// A new place for one test's state: empty, and isolated from every other test's (the
    /// tests run in parallel). Dropped when the test ends, which may delete it. Panics if
    /// it cannot be made.
    async fn create() -> Self;

    /// Opens the stores at this place. The suite opens them again only after dropping every
    /// handle of the previous opening: that is a restart, and the new handles must see all
    /// the old ones committed (and keep the opening contract of `QueueBackend`).
    async fn open(&self) -> Result<Stores>;
}

/// Runs one contract's test on a tokio runtime of its own: fails if it returns an error or
/// takes longer than [`CONTRACT_TIME_MAX`]. What [`conformance_tests!`](crate::conformance_tests)
/// calls.
pub fn run(contract: impl Future<Output = Result<()>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the contract");
    match runtime.block_on(async { tokio::time::timeout(CONTRACT_TIME_MAX, contract).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the store failed: {e} ({e:?})"),
        Err(_) => panic!("the contract took longer than {CONTRACT_TIME_MAX:?}"),
    }
}

/// Expands to one `#[test]` per contract of the conformance suite, run against the
/// [`Backend`](crate::conformance::Backend) type given. See [`crate::conformance`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ty) => {
        $crate::conformance_tests!(@each $backend;
            functions::versions_are_numbered_from_one_and_listed_newest_first,
            functions::version_numbers_are_not_reused_after_rollback,
            functions::concurrent_deploys_of_one_function_get_distinct_numbers,
            functions::route_conflict_is_refused_and_stores_nothing,
            functions::concurrent_deploys_to_one_route_let_one_function_win,
            functions::redeploy_keeps_own_route_and_moving_away_frees_it,
            functions::rollback_changes_live_version_and_refuses_taken_route,
            functions::remove_cascades_and_keeps_components_still_referenced,
            functions::components_are_content_addressed,
            functions::functions_survive_a_restart,
            functions::the_generation_grows_with_every_change_and_survives_a_restart,
            token::admin_token_hash_is_set_replaced_and_survives_a_restart,
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
            invocations::invocations_and_rollups_survive_a_restart,
            cost::price_sheets_are_put_replaced_and_removed,
            cost::budgets_are_put_replaced_and_removed,
            cost::a_budgets_alert_state_is_kept_until_the_budget_is_put_again,
            cost::of_callers_racing_to_record_an_alert_exactly_one_does,
            cost::price_sheets_and_budgets_survive_a_restart,
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
            queues::after_a_restart_in_flight_messages_return_and_last_attempts_are_dead_lettered,
            queues::queues_survive_a_restart,
            ticks::a_tick_is_claimed_once,
            ticks::concurrent_claims_of_a_tick_let_one_win,
            ticks::an_unfinished_tick_is_claimed_again_once_its_lease_ends,
            ticks::another_running_tick_is_seen_until_it_finishes_or_its_lease_ends,
            ticks::ticks_survive_a_restart,
            members::beats_are_kept_per_node_forgotten_when_old_and_survive_a_restart,
            access::tokens_are_found_by_hash_until_removed_and_survive_a_restart,
            access::the_audit_trail_grows_in_order_forgets_old_entries_and_survives_a_restart,
            access::secrets_keep_versions_reseal_only_from_their_key_and_survive_a_restart,
        );
    };
    (@each $backend:ty; $($area:ident :: $contract:ident),+ $(,)?) => {
        $(
            #[test]
            fn $contract() {
                $crate::conformance::run($crate::conformance::$area::$contract::<$backend>());
            }
        )+
    };
}

/// A fresh place of `B` with its stores open.
async fn open<B: Backend>() -> Result<(B, Stores)> {
    let place = B::create().await;
    let stores = place.open().await?;
    Ok((place, stores))
}

/// Drops `stores` and opens the place's stores again: a restart.
async fn reopen<B: Backend>(place: &B, stores: Stores) -> Result<Stores> {
    drop(stores);
    place.open().await
}

/// The system clock, as the store reads it (unix milliseconds).
fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// A lease or visible time no test reaches.
const FAR: i64 = i64::MAX / 2;

/// A deploy configuration with every field set, so a backend that drops one fails.
fn config(route: &str) -> VersionConfig {
    VersionConfig {
        route: route.to_owned(),
        memory_bytes_max: 64 << 20,
        timeout_ms: 30_000,
        env: std::collections::BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        secrets: Default::default(),
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

/// The version [`deploy`] creates.
fn new_version(function: &str, route: &str, bytes: &[u8], at_ms: i64) -> NewVersion {
    NewVersion {
        function: function.to_owned(),
        digest: component_digest(bytes),
        size_bytes: bytes.len() as u64,
        config: config(route),
        created_at_ms: at_ms,
    }
}

/// Deploys `bytes` as the next version of `function` at `route`, created at `at_ms`; its
/// number.
async fn deploy(
    stores: &Stores,
    function: &str,
    route: &str,
    bytes: &[u8],
    at_ms: i64,
) -> Result<u32> {
    let new = new_version(function, route, bytes, at_ms);
    let created = stores
        .functions
        .create_version(new, Some(bytes.to_vec()))
        .await?;
    Ok(created.version)
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
        node: "node-a".to_owned(),
    }
}

fn logs(records: &[InvocationRecord]) -> Vec<&str> {
    records.iter().map(|r| r.invocation.log.as_str()).collect()
}

/// Limits of a test about depth (or about neither).
fn depth(depth_max: u64) -> QueueLimits {
    QueueLimits {
        depth_max,
        ..QueueLimits::NONE
    }
}

fn message(body: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        idempotency_key: key.map(str::to_string),
    }
}

/// A consumer of `jobs` that dead-letters into `jobs-dlq` after `max_attempts`.
fn consumer(max_attempts: u32) -> ConsumerSettings {
    ConsumerSettings {
        function: "worker".into(),
        batch_size: 1,
        max_concurrency: 1,
        visibility_timeout_ms: 60_000,
        max_attempts,
        backoff_base_ms: 10,
        backoff_max_ms: 100,
        dead_letter: "jobs-dlq".into(),
        path: None,
    }
}

#[cfg(test)]
mod tests {
    /// The areas' sources, by module name.
    const AREAS: &[(&str, &str)] = &[
        ("access", include_str!("access.rs")),
        ("cost", include_str!("cost.rs")),
        ("functions", include_str!("functions.rs")),
        ("invocations", include_str!("invocations.rs")),
        ("members", include_str!("members.rs")),
        ("queues", include_str!("queues.rs")),
        ("ticks", include_str!("ticks.rs")),
        ("token", include_str!("token.rs")),
    ];

    /// A contract written but not listed in `conformance_tests!` would never run; a listed
    /// one that does not exist fails to compile. This closes the other direction.
    #[test]
    fn every_contract_is_listed_in_the_macro() {
        let this = include_str!("mod.rs");
        let modules: Vec<&str> = this
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect();
        let names: Vec<&str> = AREAS.iter().map(|(name, _)| *name).collect();
        assert_eq!(modules, names, "AREAS lists every area module");
        let mut contracts = 0;
        for (area, source) in AREAS {
            for line in source.lines() {
                let Some(rest) = line.strip_prefix("pub async fn ") else {
                    continue;
                };
                let name = rest.split('<').next().unwrap_or(rest);
                let listed = format!("            {area}::{name},\n");
                assert!(this.contains(&listed), "{area}::{name} is not in the macro");
                contracts += 1;
            }
        }
        let listed = this
            .lines()
            .filter_map(|l| l.strip_prefix("            ")?.strip_suffix(','))
            .filter(|l| l.split("::").count() == 2 && !l.contains(' '))
            .count();
        assert_eq!(contracts, listed, "the macro lists each contract once");
    }
}
