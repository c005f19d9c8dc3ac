//! Cron schedules: a function whose live version has a `schedule` is invoked at each of its
//! ticks with a POST in the CloudEvents binary mode (`ce-type: dev.eddy.cron.tick`, the
//! scheduled time as `ce-time` and in the body), as background work.
//!
//! - A tick is claimed in the queue database (durably) before it runs, so it never runs
//!   twice, whatever restarts happen around it.
//! - Overlap: with `skip` (the default) a tick is dropped while the schedule's previous run
//!   is still going.
//! - Ticks that fell while the node was down: `skip` (the default) drops them, `run-once`
//!   runs the latest of them once at start.
//! - A failed tick is not retried: the next one comes.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use eddy_store::{Missed, Overlap, ScheduleSettings};
use http::{Request, header};
use http_body_util::Full;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::admission::Class;
use crate::consumer::{header_value, invoke_background, rfc3339};
use crate::invocations::InvocationSink;
use crate::queues::QueueHub;
use crate::registry::{Registry, now_ms};

/// CloudEvents `type` of a cron tick.
pub const TICK_EVENT_TYPE: &str = "dev.eddy.cron.tick";
/// The header naming the function whose schedule a tick comes from; only the node sets it
/// (see `ingress::NODE_HEADER_PREFIX`).
pub const HEADER_SCHEDULE: &str = "eddy-schedule";
/// How often the scheduler looks for schedules deployed, changed or removed.
pub const SCHEDULE_SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Occurrences looked through to find the latest tick missed while the node was down (a
/// one-second schedule down for more than a day counts its missed ticks as this many).
const MISSED_TICKS_SCAN_MAX: u64 = 100_000;

/// A parsed schedule.
pub struct Schedule {
    cron: Cron,
    timezone: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// Parse the cron expression (five fields, or six with seconds first) and time zone.
    pub fn parse(settings: &ScheduleSettings) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&settings.cron)
            .map_err(|e| {
                format!(
                    "schedule `{}` is not a cron expression: {e} (five fields `min hour day month weekday`, or six with seconds first, or @hourly/@daily/...)",
                    settings.cron
                )
            })?;
        let timezone = settings
            .timezone
            .as_deref()
            .map(|tz| {
                chrono_tz::Tz::from_str(tz).map_err(|_| {
                    format!("schedule time zone `{tz}` is not an IANA time zone name such as Europe/Paris")
                })
            })
            .transpose()?;
        let schedule = Schedule { cron, timezone };
        if schedule.next_after(now_ms()).is_none() {
            return Err(format!("schedule `{}` never fires", settings.cron));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `ms` (unix milliseconds).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let at = Utc.timestamp_millis_opt(ms).single()?;
        let next = match self.timezone {
            Some(tz) => self
                .cron
                .find_next_occurrence(&at.with_timezone(&tz), false)
                .ok()?
                .timestamp_millis(),
            None => self
                .cron
                .find_next_occurrence(&at, false)
                .ok()?
                .timestamp_millis(),
        };
        Some(next)
    }

    /// The latest tick in `(after, until]` and how many there were (counted up to
    /// `MISSED_TICKS_SCAN_MAX`).
    pub fn latest_between(&self, after: i64, until: i64) -> Option<(i64, u64)> {
        let mut latest = None;
        let mut count = 0;
        let mut at = after;
        while count < MISSED_TICKS_SCAN_MAX {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    latest = Some(next);
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        latest.map(|t| (t, count))
    }
}

/// Check a deploy's schedule.
pub fn validate_schedule(settings: &ScheduleSettings) -> Result<(), String> {
    Schedule::parse(settings)?;
    if let Some(path) = &settings.path
        && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(format!(
            "schedule path `{path}` must be a path starting with `/`"
        ));
    }
    Ok(())
}

/// Runs every live function's schedule.
pub struct Scheduler {
    hub: Arc<QueueHub>,
    registry: Arc<Registry>,
    sink: InvocationSink,
    records_per_second_max: u32,
    running: Mutex<HashMap<String, Ticker>>,
}

struct Ticker {
    settings: ScheduleSettings,
    cancel: CancellationToken,
}

impl Scheduler {
    /// Start following the route table until `shutdown`.
    pub fn start(
        hub: Arc<QueueHub>,
        registry: Arc<Registry>,
        sink: InvocationSink,
        shutdown: CancellationToken,
    ) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            records_per_second_max: hub.limits.invocation_records_per_second_max,
            hub,
            registry,
            sink,
            running: Mutex::new(HashMap::new()),
        });
        tokio::spawn(scheduler.clone().watch(shutdown));
        scheduler
    }

    async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.sync();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(SCHEDULE_SYNC_INTERVAL) => {}
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
        let schedule = match Schedule::parse(&settings) {
            Ok(schedule) => schedule,
            Err(problem) => {
                tracing::warn!(%function, problem, "schedule not run");
                return;
            }
        };
        let store = &self.hub.store;
        let mut last = match store.last_tick(&function, now_ms()).await {
            Ok(last) => last,
            Err(e) => {
                tracing::error!(%function, error = %e, "reading the schedule's last tick failed");
                return;
            }
        };
        let running = Arc::new(AtomicUsize::new(0));
        if let Some((latest, count)) = schedule.latest_between(last, now_ms()) {
            match settings.missed {
                Missed::Skip => {
                    if matches!(store.claim_tick(&function, latest).await, Ok(true)) {
                        tracing::info!(%function, missed = count, "skipped ticks that fell while the node was down (missed = skip)");
                    }
                }
                Missed::RunOnce => {
                    tracing::info!(%function, missed = count, "running the latest tick missed while the node was down once (missed = run-once)");
                    self.fire(&function, &settings, latest, &running).await;
                }
            }
            last = latest;
        }
        loop {
            let Some(next) = schedule.next_after(last.max(now_ms())) else {
                return;
            };
            let wait = Duration::from_millis((next - now_ms()).max(0) as u64);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // The clock may be a little early: never fire before the tick.
            while now_ms() < next {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.fire(&function, &settings, next, &running).await;
            last = next;
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
        match self.hub.store.claim_tick(function, tick_ms).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(%function, error = %e, "claiming a tick failed; it is not run");
                return;
            }
        }
        if let Some(block) = self.registry.budgets().background_paused(function) {
            tracing::info!(%function, tick = %rfc3339(tick_ms), "tick skipped: {}", block.message);
            return;
        }
        if settings.overlap == Overlap::Skip && running.load(Ordering::Acquire) > 0 {
            tracing::info!(%function, tick = %rfc3339(tick_ms), "tick skipped: the previous run is still going (overlap = skip)");
            return;
        }
        let Some(live) = self.registry.routes().function(function).cloned() else {
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
            .header("ce-specversion", "1.0")
            .header("ce-id", header_value(&format!("{function}@{scheduled}")))
            .header("ce-type", TICK_EVENT_TYPE)
            .header(
                "ce-source",
                header_value(&format!("/functions/{function}/schedule")),
            )
            .header("ce-time", scheduled.as_str())
            .body(Full::new(Bytes::from(
                json!({"scheduled_time": scheduled}).to_string(),
            )));
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%function, error = %e, "tick request could not be built");
                return;
            }
        };
        running.fetch_add(1, Ordering::AcqRel);
        let running = running.clone();
        let registry = self.registry.clone();
        let sink = self.sink.clone();
        let records_per_second_max = self.records_per_second_max;
        let function = function.clone();
        tokio::spawn(async move {
            match registry
                .admission()
                .admit(&function, Class::Background)
                .await
            {
                Ok(permit) => {
                    let result = invoke_background(
                        &registry,
                        &sink,
                        records_per_second_max,
                        live,
                        request,
                        permit,
                    )
                    .await;
                    if let Err(error) = result {
                        tracing::warn!(%function, tick = %scheduled, error, "cron tick failed (not retried)");
                    }
                }
                Err(rejection) => {
                    tracing::warn!(%function, tick = %scheduled, limit = rejection.limit(), "cron tick refused by admission control (not retried)");
                }
            }
            running.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cron: &str, timezone: Option<&str>) -> ScheduleSettings {
        ScheduleSettings {
            cron: cron.into(),
            timezone: timezone.map(str::to_string),
            overlap: Overlap::Skip,
            missed: Missed::Skip,
            path: None,
        }
    }

    #[test]
    fn seconds_are_optional_and_time_zones_shift_ticks() {
        let every_second = Schedule::parse(&settings("* * * * * *", None)).unwrap();
        assert_eq!(every_second.next_after(1_000_500), Some(1_001_000));
        let five_minutes = Schedule::parse(&settings("*/5 * * * *", None)).unwrap();
        assert_eq!(five_minutes.next_after(0), Some(300_000));
        // 09:00 in Kolkata (UTC+05:30) is 03:30 UTC.
        let kolkata = Schedule::parse(&settings("0 9 * * *", Some("Asia/Kolkata"))).unwrap();
        assert_eq!(kolkata.next_after(0), Some((3 * 3600 + 30 * 60) * 1000));
        let (latest, count) = every_second.latest_between(1_000_000, 1_005_500).unwrap();
        assert_eq!((latest, count), (1_005_000, 5));
        assert!(every_second.latest_between(1_000_000, 1_000_900).is_none());
    }

    #[test]
    fn bad_schedules_say_why() {
        for (cron, tz, why) in [
            ("61 * * * *", None, "not a cron expression"),
            ("* * *", None, "not a cron expression"),
            ("* * * * *", Some("Mars/Olympus"), "not an IANA time zone"),
        ] {
            let err = validate_schedule(&settings(cron, tz)).err().unwrap();
            assert!(err.contains(why), "{cron}: {err}");
        }
        let mut bad_path = settings("* * * * *", None);
        bad_path.path = Some("jobs".into());
        assert!(
            validate_schedule(&bad_path)
                .unwrap_err()
                .contains("starting with `/`")
        );
    }
}
