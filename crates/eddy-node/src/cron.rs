//! Cron schedules: a function whose live version has a `schedule` is invoked at each of its
//! ticks with a POST in the CloudEvents binary mode (`ce-type: dev.eddy.cron.tick`, the
//! scheduled time as `ce-time` and in the body), as background work.
//!
//! - A tick is claimed in the store (durably) before it runs, so of every node that sees it
//!   one runs it, whatever restarts happen around it. It runs under a lease as long as the
//!   function may take (its wait for a slot and its timeout, plus `CRON_LEASE_SLACK_MS`) and
//!   is finished when its run ends. A tick whose runner died during it (its lease ended
//!   unfinished) is claimed again and run by a node that checks (every
//!   `CRON_ABANDONED_CHECK_MS`): the one case where a tick runs twice.
//! - Overlap: with `skip` (the default) a tick is dropped while the schedule's previous run
//!   is still going.
//! - Ticks that fell while the node was down: `skip` (the default) drops them, `run-once`
//!   runs the latest of them once at start.
//! - A failed tick is not retried: the next one comes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eddy_store::{Missed, Overlap, ScheduleSettings};
use http::{Request, header};
use http_body_util::Full;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::{CloudEvent, TICK_EVENT_TYPE, header_value, rfc3339};
use crate::invoker::{Invoker, Refusal, Trigger};
use crate::registry::Registry;
use crate::schedule::Schedule;

/// The header naming the function whose schedule a tick comes from; only the node sets it
/// (see `ingress::NODE_HEADER_PREFIX`).
pub const HEADER_SCHEDULE: &str = "eddy-schedule";
/// What a tick's lease adds to the longest its run may take (milliseconds).
pub const CRON_LEASE_SLACK_MS: i64 = 5_000;
/// How often each schedule looks for a tick whose runner died (milliseconds).
pub const CRON_ABANDONED_CHECK_MS: u64 = 2_000;
/// A node starting marks a missed tick skipped only if it fell at least this long ago
/// (milliseconds): a more recent one may be another node's to run, and nodes claim a tick
/// within milliseconds of its time.
pub const CRON_MISSED_GRACE_MS: i64 = 1_000;
/// When one schedule's ticks fall, on the node's clock.
struct Ticks {
    schedule: Schedule,
    /// The last tick fired or claimed (from the store at start).
    last: i64,
    clock: Clock,
}

impl Ticks {
    /// Ticks that fell after `last` and before now (while the node was down): the latest
    /// and how many.
    fn missed(&self) -> Option<(i64, u64)> {
        self.schedule.latest_between(self.last, self.clock.now_ms())
    }

    /// Waits for the next tick and returns it; never before it is due, even if the calendar
    /// moved back meanwhile. `None`: the schedule never fires again.
    async fn next(&mut self) -> Option<i64> {
        let next = self
            .schedule
            .next_after(self.last.max(self.clock.now_ms()))?;
        self.clock.sleep_until_ms(next).await;
        self.last = next;
        Some(next)
    }
}

/// Runs every live function's schedule.
pub struct Scheduler {
    registry: Arc<Registry>,
    invoker: Invoker,
    running: Mutex<HashMap<String, Ticker>>,
}

struct Ticker {
    settings: ScheduleSettings,
    cancel: CancellationToken,
}

impl Scheduler {
    /// Start following the route table until `shutdown`.
    pub fn start(
        registry: Arc<Registry>,
        invoker: Invoker,
        shutdown: CancellationToken,
    ) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            registry,
            invoker,
            running: Mutex::new(HashMap::new()),
        });
        tokio::spawn(scheduler.clone().watch(shutdown));
        scheduler
    }

    async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.registry.route_changes();
        loop {
            changes.mark_unchanged();
            self.sync();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
        for (_, ticker) in self.lock().drain() {
            ticker.cancel.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticker>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start tickers for new schedules, stop those of removed or changed ones.
    fn sync(self: &Arc<Self>) {
        let routes = self.registry.routes();
        let mut running = self.lock();
        running.retain(|name, ticker| {
            let keep = routes
                .function(name)
                .and_then(|live| live.schedule.as_ref())
                .is_some_and(|s| *s == ticker.settings);
            if !keep {
                ticker.cancel.cancel();
            }
            keep
        });
        for live in routes.all() {
            let Some(settings) = &live.schedule else {
                continue;
            };
            if running.contains_key(&*live.name) {
                continue;
            }
            let cancel = CancellationToken::new();
            tokio::spawn(
                self.clone()
                    .run(live.name.clone(), settings.clone(), cancel.clone()),
            );
            running.insert(
                live.name.to_string(),
                Ticker {
                    settings: settings.clone(),
                    cancel,
                },
            );
        }
    }

    /// One function's schedule, until cancelled.
    async fn run(
        self: Arc<Self>,
        function: Arc<str>,
        settings: ScheduleSettings,
        cancel: CancellationToken,
    ) {
        let clock = self.invoker.parts().clock;
        let schedule = match Schedule::parse(&settings, clock.now_ms()) {
            Ok(schedule) => schedule,
            Err(problem) => {
                tracing::warn!(%function, %problem, "schedule not run");
                return;
            }
        };
        let store = &self.invoker.parts().stores.ticks;
        // A store that does not answer (a blip, or a cluster's Postgres away) is asked
        // again: the schedule starts once it answers.
        let last = loop {
            match store.last_tick(&function, clock.now_ms()).await {
                Ok(last) => break last,
                Err(e) => {
                    tracing::warn!(%function, error = %e, "reading the schedule's last tick failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(CRON_ABANDONED_CHECK_MS)) => {}
                    }
                }
            }
        };
        let mut ticks = Ticks {
            schedule,
            last,
            clock,
        };
        let running = Arc::new(AtomicUsize::new(0));
        if let Some((latest, count)) = ticks.missed() {
            match settings.missed {
                Missed::Skip => {
                    // Only ticks older than a claim takes are marked skipped: in a cluster a
                    // newer one may be another node's, about to be claimed and run.
                    let settled = clock.now_ms().saturating_sub(CRON_MISSED_GRACE_MS);
                    let older = ticks.schedule.latest_between(last, settled);
                    let lease = clock.now_ms();
                    if let Some((older, _)) = older
                        && matches!(store.claim_tick(&function, older, lease).await, Ok(true))
                    {
                        self.finish(&function, older).await;
                        tracing::info!(%function, missed = count, "skipped ticks that fell while the node was down (missed = skip)");
                    }
                }
                Missed::RunOnce => {
                    tracing::info!(%function, missed = count, "running the latest tick missed while the node was down once (missed = run-once)");
                    self.fire(&function, &settings, latest, &running).await;
                }
            }
            ticks.last = latest;
        }
        let mut abandoned =
            tokio::time::interval(std::time::Duration::from_millis(CRON_ABANDONED_CHECK_MS));
        abandoned.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = ticks.next() => next,
                _ = abandoned.tick() => {
                    self.rerun_abandoned(&function, &settings, &running).await;
                    continue;
                }
            };
            let Some(next) = next else {
                return;
            };
            self.fire(&function, &settings, next, &running).await;
        }
    }

    /// The lease a tick of `function` runs under from now: as long as its run may take.
    fn lease_until_ms(&self, function: &str) -> i64 {
        let now = self.invoker.parts().clock.now_ms();
        let longest = self.registry.routes().function(function).map_or(0, |live| {
            let limits = live.deployment.limits();
            (limits.timeout + live.admission.max_wait).as_millis() as i64
        });
        now.saturating_add(longest)
            .saturating_add(CRON_LEASE_SLACK_MS)
    }

    /// Runs again, once, a tick of `function` whose runner died during it (on any node).
    async fn rerun_abandoned(
        &self,
        function: &Arc<str>,
        settings: &ScheduleSettings,
        running: &Arc<AtomicUsize>,
    ) {
        let ticks = &self.invoker.parts().stores.ticks;
        match ticks
            .reclaim_abandoned_tick(function, self.lease_until_ms(function))
            .await
        {
            Ok(Some(tick_ms)) => {
                tracing::warn!(%function, tick = %rfc3339(tick_ms), "running again a tick whose runner stopped during it");
                self.run_claimed(function, settings, tick_ms, running);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%function, error = %e, "looking for abandoned ticks failed");
            }
        }
    }

    /// Claim the tick at `tick_ms`, then run it unless the overlap policy drops it.
    async fn fire(
        &self,
        function: &Arc<str>,
        settings: &ScheduleSettings,
        tick_ms: i64,
        running: &Arc<AtomicUsize>,
    ) {
        // A node whose share of the function's max_concurrency is 0 (in a cluster) leaves the
        // tick to a node that can run it.
        let share = self.invoker.parts().admission.cluster_share();
        if let Some(live) = self.registry.routes().function(function)
            && share.of(live.admission.max_concurrency) == 0
        {
            return;
        }
        let lease_until_ms = self.lease_until_ms(function);
        match self
            .invoker
            .parts()
            .stores
            .ticks
            .claim_tick(function, tick_ms, lease_until_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(%function, error = %e, "claiming a tick failed; it is not run");
                return;
            }
        }
        if let Err(refusal) = self.invoker.budget(function, Trigger::Cron) {
            tracing::info!(%function, tick = %rfc3339(tick_ms), "tick skipped: {}", refusal.message());
            self.finish(function, tick_ms).await;
            return;
        }
        if settings.overlap == Overlap::Skip
            && self.previous_still_runs(function, tick_ms, running).await
        {
            tracing::info!(%function, tick = %rfc3339(tick_ms), "tick skipped: the previous run is still going (overlap = skip)");
            self.finish(function, tick_ms).await;
            return;
        }
        self.run_claimed(function, settings, tick_ms, running);
    }

    /// The claimed tick is done: no node runs it again.
    async fn finish(&self, function: &str, tick_ms: i64) {
        finish_tick(&self.invoker, function, tick_ms).await;
    }

    /// Whether a run of an earlier tick is still going: on this node, or on any node of the
    /// cluster (a claimed tick unfinished under its lease). A store that does not answer
    /// counts as one going: the tick is skipped rather than run twice at once.
    async fn previous_still_runs(
        &self,
        function: &Arc<str>,
        tick_ms: i64,
        running: &Arc<AtomicUsize>,
    ) -> bool {
        if running.load(Ordering::Acquire) > 0 {
            return true;
        }
        let ticks = &self.invoker.parts().stores.ticks;
        match ticks.another_tick_running(function, tick_ms).await {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(%function, error = %e, "whether an earlier tick still runs could not be read; skipping this one");
                true
            }
        }
    }

    /// Runs the claimed tick at `tick_ms` in the background, finishing it when the run ends.
    fn run_claimed(
        &self,
        function: &Arc<str>,
        settings: &ScheduleSettings,
        tick_ms: i64,
        running: &Arc<AtomicUsize>,
    ) {
        let Some(live) = self.registry.routes().function(function).cloned() else {
            let invoker = self.invoker.clone();
            let function = function.clone();
            tokio::spawn(async move { finish_tick(&invoker, &function, tick_ms).await });
            return;
        };
        let path = settings.path.clone().unwrap_or_else(|| live.route.clone());
        let scheduled = rfc3339(tick_ms);
        let request = Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(HEADER_SCHEDULE, header_value(function))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                json!({"scheduled_time": scheduled}).to_string(),
            )));
        let mut request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%function, error = %e, "tick request could not be built");
                return;
            }
        };
        CloudEvent {
            id: format!("{function}@{scheduled}"),
            kind: TICK_EVENT_TYPE,
            source: format!("/functions/{function}/schedule"),
            time_ms: tick_ms,
            extensions: Vec::new(),
        }
        .insert_headers(request.headers_mut());
        running.fetch_add(1, Ordering::AcqRel);
        let running = running.clone();
        let invoker = self.invoker.clone();
        let function = function.clone();
        tokio::spawn(async move {
            match invoker.admit_background(&live, Trigger::Cron).await {
                Ok(permit) => {
                    let record = invoker.record(&live, &request);
                    if let Err(error) = invoker.run_background(record, request, permit).await {
                        tracing::warn!(%function, tick = %scheduled, %error, "cron tick failed (not retried)");
                    }
                }
                Err(Refusal::Budget(block)) => {
                    tracing::info!(%function, tick = %scheduled, "tick skipped: {}", block.message);
                }
                Err(refusal) => {
                    tracing::warn!(%function, tick = %scheduled, limit = refusal.limit(), "cron tick refused by admission control (not retried)");
                }
            }
            finish_tick(&invoker, &function, tick_ms).await;
            running.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Records that the claimed tick is done. A failure is logged: the tick then runs again
/// once its lease ends, which is better than never.
async fn finish_tick(invoker: &Invoker, function: &str, tick_ms: i64) {
    if let Err(e) = invoker
        .parts()
        .stores
        .ticks
        .finish_tick(function, tick_ms)
        .await
    {
        tracing::warn!(%function, tick = %rfc3339(tick_ms), error = %e, "recording a finished tick failed; it may run again when its lease ends");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::settings;

    /// 2026-12-31T23:59:58.500Z.
    const NEW_YEARS_EVE_MS: i64 = 1_798_761_598_500;

    #[tokio::test(start_paused = true)]
    async fn ticks_fall_on_the_calendar_and_never_early_on_a_test_clock() {
        let clock = Clock::starting_at(NEW_YEARS_EVE_MS);
        let mut ticks = Ticks {
            schedule: Schedule::parse(&settings("* * * * * *", None), clock.now_ms()).unwrap(),
            last: NEW_YEARS_EVE_MS,
            clock,
        };
        assert_eq!(ticks.missed(), None);
        // Each tick returns exactly when it is due: the calendar reads the tick.
        for due in [1_798_761_599_000, 1_798_761_600_000, 1_798_761_601_000] {
            assert_eq!(ticks.next().await, Some(due));
            assert_eq!(clock.now_ms(), due);
        }
        // A monthly schedule waits a month, in no real time: the next first of the month.
        let monthly = Schedule::parse(&settings("0 0 1 * *", None), clock.now_ms()).unwrap();
        let mut months = Ticks {
            schedule: monthly,
            last: clock.now_ms(),
            clock,
        };
        // 2027-02-01T00:00:00Z.
        assert_eq!(months.next().await, Some(1_801_440_000_000));
        assert_eq!(clock.now_ms(), 1_801_440_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_missed_while_down_are_counted_from_the_last_one_fired() {
        let clock = Clock::starting_at(NEW_YEARS_EVE_MS);
        let schedule = Schedule::parse(&settings("*/5 * * * * *", None), clock.now_ms()).unwrap();
        // The node last fired 20.5 s ago: ticks at -20, -15, -10, -5 s fell while it was down.
        let mut ticks = Ticks {
            schedule,
            last: NEW_YEARS_EVE_MS - 20_500 - 500,
            clock,
        };
        assert_eq!(ticks.missed(), Some((NEW_YEARS_EVE_MS - 3_500, 4)));
        ticks.last = NEW_YEARS_EVE_MS - 3_500;
        // The next one is the first after now, not a second run of a missed one.
        assert_eq!(ticks.next().await, Some(NEW_YEARS_EVE_MS + 1_500));
    }
}
