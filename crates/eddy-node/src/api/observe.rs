//! What the console (and any monitor) reads beyond the totals: a function's counts per
//! interval, its invocation records as a live stream of server-sent events, and each cron
//! schedule's last and next ticks.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use eddy_parse::api::{LogStreamQuery, SeriesQuery};
use eddy_parse::responses::{ScheduleInfo, ScheduleList, Series, SeriesPoint};
use eddy_store::Rollup;
use futures::Stream;

use super::{ApiState, find_function, log_page, rfc3339};
use crate::error::ApiError;
use crate::metering::MINUTE_MS;

/// Intervals one `series` answer holds at most: a day of minutes, or a month of half hours.
pub const SERIES_POINTS_MAX: u64 = 1440;
/// Default window of `series`: the last hour.
const SERIES_SINCE_MS_DEFAULT: u64 = 60 * 60 * 1000;
/// Records one wake of a live log stream reads at most before it sends them (it reads
/// again at once while there are more).
const STREAM_RECORDS_PER_READ_MAX: usize = 200;
/// Events a live log stream holds for a client that reads slower than records come: past
/// this the stream waits (the records stay in the store; nothing is dropped).
const STREAM_EVENTS_BUFFERED_MAX: usize = 256;

/// How often a live log stream checks that its token still signs in (milliseconds): one
/// revoked or expired ends within this.
pub const STREAM_ACCESS_CHECK_INTERVAL_MS: u64 = 5_000;

/// The routes, merged under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/functions/{name}/series", get(series))
        .route("/functions/{name}/logs/stream", get(log_stream))
        .route("/schedules", get(schedules))
}

/// `GET /v1/functions/{name}/series?since_ms=N&step_ms=M`: the metered counts of each
/// `step_ms` interval of the window, from the per-minute rollups and what this node has
/// not written yet.
async fn series(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "invalid series query (since_ms, step_ms): {}",
            e.body_text()
        ))
    })?;
    let since_ms = query.since_ms.unwrap_or(SERIES_SINCE_MS_DEFAULT);
    let step_ms = query.step_ms.unwrap_or(MINUTE_MS as u64);
    if step_ms == 0 || step_ms % MINUTE_MS as u64 != 0 {
        return Err(ApiError::bad_request(format!(
            "step_ms {step_ms} is not a whole number of minutes (60000 ms): counts are kept per minute"
        )));
    }
    if i64::try_from(since_ms).map_or(true, |ms| ms > state.limits.rollup_retention_ms) {
        return Err(ApiError::bad_request(format!(
            "since_ms {since_ms} reaches past what the node keeps (limits.rollup_retention_ms = {})",
            state.limits.rollup_retention_ms
        )));
    }
    if step_ms > since_ms.max(MINUTE_MS as u64) {
        return Err(ApiError::bad_request(format!(
            "step_ms {step_ms} is longer than the window (since_ms {since_ms})"
        )));
    }
    let points = since_ms.div_ceil(step_ms) + 1;
    if points > SERIES_POINTS_MAX {
        return Err(ApiError::bad_request(format!(
            "{points} intervals of {step_ms} ms in {since_ms} ms: at most {SERIES_POINTS_MAX} (SERIES_POINTS_MAX); choose a longer step_ms"
        )));
    }
    find_function(&state, &name).await?;
    // Below the retention (an i64) by the checks above.
    let step = i64::try_from(step_ms).unwrap_or(i64::MAX);
    let now = state.parts.clock.now_ms();
    let first = (now - since_ms as i64).div_euclid(step) * step;
    let last = now.div_euclid(step) * step;
    let count = ((last - first) / step + 1) as usize;
    let mut buckets = vec![Rollup::default(); count];
    let meter = state.parts.meter;
    {
        let _gate = meter.flush_gate.read().await;
        let stored = state.parts.stores.invocations.rollups(&name, first).await?;
        let pending = meter
            .pending_since(first)
            .into_iter()
            .filter(|(function, _, _)| *function == name)
            .map(|(_, minute, rollup)| (minute, rollup));
        for (minute, rollup) in stored.iter().cloned().chain(pending) {
            let index = ((minute - first) / step) as usize;
            if let Some(bucket) = buckets.get_mut(index) {
                bucket.merge(&rollup);
            }
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let points = buckets
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at_ms = first + i as i64 * step;
            SeriesPoint {
                at: rfc3339(at_ms),
                at_ms,
                invocations: r.invocations,
                errors: r.errors,
                rejected: r.rejected,
                cold_starts: r.cold_starts,
                wall_ms: ms(r.wall_us),
                cpu_ms: ms(r.cpu_us),
                latency_ms_p50: r.latency.quantile_us(0.5).map(ms),
                latency_ms_p99: r.latency.quantile_us(0.99).map(ms),
                outcomes: r.outcomes,
            }
        })
        .collect();
    Ok(Json(Series {
        function: name,
        since: rfc3339(first),
        step_ms,
        points,
    }))
}

/// `GET /v1/functions/{name}/logs/stream?after=ID`: the function's invocation records as
/// server-sent events (`event: invocation`, `id:` the record's id, `data:` the record as
/// `logs` gives it), from after `after`, or the `Last-Event-ID` a reconnecting client
/// sends, or else from now; until the client goes or the node shuts down.
async fn log_stream(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    axum::Extension(presented): axum::Extension<super::access::Presented>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogStreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "invalid log stream query (after): {}",
            e.body_text()
        ))
    })?;
    find_function(&state, &name).await?;
    let slot = StreamSlot::take(&state, &caller.name)?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID `{v}` is not a record id"))
            })
        })
        .transpose()?;
    let after = match resumed.or(query.after) {
        Some(after) => after,
        None => {
            let newest = state
                .parts
                .stores
                .invocations
                .invocations_tail(&name, 1)
                .await?;
            newest.last().map_or(0, |r| r.id)
        }
    };
    let (events, stream) = tokio::sync::mpsc::channel(STREAM_EVENTS_BUFFERED_MAX);
    tokio::spawn(follow(state, name, after, events, presented, slot));
    Ok(Sse::new(stream_of(stream)).keep_alive(KeepAlive::default()))
}

/// Sends the records of `function` after `after` into `events` as they are written, until
/// the receiver goes or the node shuts down.
async fn follow(
    state: ApiState,
    function: String,
    mut after: i64,
    events: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    presented: super::access::Presented,
    _slot: StreamSlot,
) {
    let mut written = state.written.clone();
    let check_every = Duration::from_millis(STREAM_ACCESS_CHECK_INTERVAL_MS);
    let mut next_check = tokio::time::Instant::now() + check_every;
    loop {
        if tokio::time::Instant::now() >= next_check {
            // A token revoked or expired since the stream opened ends it; the browser's
            // reconnection is then refused, and the console signs out.
            let now = state.parts.clock.now_ms();
            match super::access::identify(&state, &presented.0, now).await {
                Ok(_) => {}
                Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
                    tracing::info!(%function, "a live log stream ended: {}", e.message);
                    return;
                }
                // A store that does not answer ends nothing: the next check asks again.
                Err(e) => {
                    tracing::warn!(%function, "a live log stream could not check its token: {}", e.message);
                }
            }
            next_check = tokio::time::Instant::now() + check_every;
        }
        written.borrow_and_update();
        let records = match state
            .parts
            .stores
            .invocations
            .invocations_after(&function, after, STREAM_RECORDS_PER_READ_MAX)
            .await
        {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(%function, error = %e, "a live log stream could not read the records; retrying");
                Vec::new()
            }
        };
        let full = records.len() == STREAM_RECORDS_PER_READ_MAX;
        let page = log_page(&records, after);
        after = page.last_id.unwrap_or(after);
        for entry in page.entries {
            let event = Event::default()
                .event("invocation")
                .id(entry.id.to_string())
                .json_data(&entry)
                .unwrap_or_else(|_| Event::default().comment("a record that is not JSON"));
            if events.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = written.changed() => if changed.is_err() { return },
            _ = events.closed() => return,
            _ = state.shutdown.cancelled() => return,
            // A store shared by a cluster gets other nodes' records without this node's
            // writes waking it.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One open live log stream, counted against `limits.log_streams_max` and its token's
/// `limits.log_streams_per_token_max` until dropped.
struct StreamSlot {
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    token: String,
}

impl StreamSlot {
    fn take(state: &ApiState, token: &str) -> Result<StreamSlot, ApiError> {
        let mut open = state.log_streams.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let max = state.limits.log_streams_max;
        if total >= max {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "log_streams_max",
                format!(
                    "{total} live log streams are open on this node, its limit (limits.log_streams_max = {max}); close one, or read the log with `GET …/logs?wait_ms=`"
                ),
            ));
        }
        let mine = open.entry(token.to_owned()).or_default();
        let per_token = state.limits.log_streams_per_token_max;
        if *mine >= per_token {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "log_streams_per_token_max",
                format!(
                    "token `{token}` holds {mine} live log streams open, its limit (limits.log_streams_per_token_max = {per_token}); close one first"
                ),
            ));
        }
        *mine += 1;
        Ok(StreamSlot {
            open: state.log_streams.clone(),
            token: token.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

fn stream_of<T>(mut receiver: tokio::sync::mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// `GET /v1/schedules`: every live function's cron schedule with its last and next ticks.
async fn schedules(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> Result<Json<ScheduleList>, ApiError> {
    let now = state.parts.clock.now_ms();
    let routes = state.registry.routes();
    let mut schedules = Vec::new();
    for live in routes.all() {
        let Some(settings) = &live.schedule else {
            continue;
        };
        if caller
            .denies_function(crate::auth::Permission::FunctionsRead, &live.name)
            .is_some()
        {
            continue;
        }
        let last = state.parts.stores.ticks.last_tick(&live.name, now).await?;
        let next = crate::schedule::Schedule::parse(settings, now)
            .ok()
            .and_then(|s| s.next_after(last.max(now)));
        schedules.push(ScheduleInfo {
            function: live.name.to_string(),
            cron: settings.cron.clone(),
            timezone: settings
                .timezone
                .clone()
                .unwrap_or_else(|| "UTC".to_owned()),
            overlap: settings.overlap,
            missed: settings.missed,
            path: settings.path.clone(),
            last_tick: rfc3339(last),
            next_tick: next.map(rfc3339),
        });
    }
    schedules.sort_by(|a, b| a.function.cmp(&b.function));
    Ok(Json(ScheduleList { schedules }))
}
