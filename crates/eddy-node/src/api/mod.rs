//! The control API: JSON over HTTP under `/v1/`, bearer-token auth, the only way to change state.
//!
//! The contract is `docs/api.md`.

mod access;
mod console;
mod cost;
mod observe;
mod queues;
mod secrets;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eddy_parse::api::{LogsQuery, RollbackRequest, StatsQuery};
use eddy_parse::responses::{
    Broadcast, CompileCache, Deployed, Function, FunctionList, FunctionStats, LogEntry, LogPage,
    Member, NodeInfo, NodeList, NodeShare, Removed, Reuse, RolledBack, StatsList, Version,
    VersionList, WebSocketConnection, WebSocketList,
};
use eddy_store::{FunctionRecord, InvocationRecord, VersionRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenHash;
use crate::config::{LOG_WAIT_MS_MAX, LimitsConfig};
use crate::error::ApiError;
use crate::ingress::health_status;
use crate::invocations::InvocationSink;
use crate::metering::{FunctionGauges, MINUTE_MS};
use crate::registry::{DeployRequest, Registry, component_too_large};

/// Room for multipart framing and the config part on top of the component itself.
const MULTIPART_OVERHEAD_BYTES: u64 = 1024 * 1024;
/// Records returned by one `logs` call at most.
const LOG_ENTRIES_PER_CALL_MAX: usize = 1000;

/// Shared state of the control API.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub(crate) parts: crate::parts::Parts,
    pub token: Arc<TokenHash>,
    pub public_url: String,
    pub limits: LimitsConfig,
    pub sink: InvocationSink,
    pub written: watch::Receiver<u64>,
    pub draining: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
    pub queues: Arc<crate::queues::QueueHub>,
    pub consumers: Arc<crate::consumer::Consumers>,
    pub sockets: Arc<crate::websocket::Sockets>,
    /// Hosts budget alert webhooks may go to.
    pub budget_webhook_hosts: Arc<[String]>,
    /// This node's name (`eddy nodes` marks it).
    pub node_name: Arc<str>,
    /// Client addresses that keep failing to authenticate.
    pub throttle: Arc<crate::auth::AuthThrottle>,
    /// Seals and opens secrets.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Changes running apart from their connections (each runs to its end and into the
    /// audit trail): a shutdown waits for them.
    pub changes: tokio_util::task::TaskTracker,
    /// Whether the control API is served over TLS (the session cookie is then `Secure`).
    pub tls: bool,
    /// Live invocation-log streams open, by token name.
    pub log_streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// The router: `/healthz` without auth, everything under `/v1/` with it.
pub fn router(state: ApiState) -> Router {
    let upload_limit = usize::try_from(state.limits.component_bytes_max + MULTIPART_OVERHEAD_BYTES)
        .unwrap_or(usize::MAX);
    let v1 = Router::new()
        .route("/node", get(node))
        .route("/nodes", get(list_nodes))
        .route("/functions", get(list_functions))
        .route("/stats", get(all_stats))
        .route(
            "/functions/{name}",
            get(get_function).delete(remove_function),
        )
        .route(
            "/functions/{name}/versions",
            get(list_versions)
                .post(deploy)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/functions/{name}/rollback", post(rollback))
        .route("/functions/{name}/logs", get(logs))
        .route("/functions/{name}/stats", get(stats))
        .route("/functions/{name}/websockets", get(list_websockets))
        .route(
            "/functions/{name}/websockets/channels/{channel}/messages",
            post(broadcast).layer(DefaultBodyLimit::disable()),
        )
        .merge(queues::routes())
        .merge(cost::routes())
        .merge(access::routes())
        .merge(secrets::routes())
        .merge(observe::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .fallback(|| async { ApiError::not_found("no such API path; see docs/api.md") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(console::routes())
        .merge(metrics)
        .nest("/v1", v1)
        .fallback(|| async {
            ApiError::not_found("no such API path; the control API lives under /v1/")
        })
        .layer(middleware::from_fn(console::hardening))
        .with_state(state)
}

/// The node's health: its status says only whether it serves (a store it cannot reach does
/// not make it unready: it serves what it holds); the body adds the store's reachability.
async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    let (status, body) = health_status(&state.draining);
    let now_ms = state.parts.clock.now_ms();
    match state.parts.store_health.describe(now_ms) {
        Some(store) => (status, format!("{body}{store}\n")),
        None => (status, body.to_owned()),
    }
}

async fn list_nodes(State(state): State<ApiState>) -> Result<Json<NodeList>, ApiError> {
    let now_ms = state.parts.clock.now_ms();
    let nodes = state
        .parts
        .stores
        .members
        .members()
        .await?
        .into_iter()
        .map(|beat| Member {
            state: crate::members::state(&beat, now_ms).to_owned(),
            this: *beat.name == *state.node_name,
            started_at: rfc3339(beat.started_at_ms),
            seen_at: rfc3339(beat.seen_at_ms),
            seen_ms_ago: now_ms.saturating_sub(beat.seen_at_ms).max(0) as u64,
            name: beat.name,
            version: beat.version,
            public_url: beat.public_url,
            admin_addr: beat.admin_addr,
            in_flight: beat.in_flight,
            concurrency_max: beat.concurrency_max,
            instances: beat.instances,
            functions: beat.functions,
        })
        .collect();
    Ok(Json(NodeList { nodes }))
}

async fn node(State(state): State<ApiState>) -> Json<NodeInfo> {
    let cache = state.parts.runtime.cache_stats();
    Json(NodeInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        public_url: state.public_url.clone(),
        functions: state.registry.routes().len() as u64,
        compile_cache: CompileCache {
            hits: cache.hits,
            misses: cache.misses,
            incremental_hits: cache.incremental_hits,
            incremental_inserts: cache.incremental_inserts,
            incremental_bytes: cache.incremental_bytes,
        },
        invocation_records_dropped: state.sink.dropped(),
    })
}

async fn list_functions(State(state): State<ApiState>) -> Result<Json<FunctionList>, ApiError> {
    let functions = state.parts.stores.functions.list_functions().await?;
    let functions = functions
        .iter()
        .map(|f| function_answer(&state.public_url, f))
        .collect();
    Ok(Json(FunctionList { functions }))
}

async fn get_function(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Function>, ApiError> {
    let function = find_function(&state, &name).await?;
    Ok(Json(function_answer(&state.public_url, &function)))
}

async fn remove_function(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    state.registry.remove(&name).await?;
    // A new function of the same name inherits nothing: its connections close (1001,
    // going away) and its queue bindings go.
    let closed = state
        .sockets
        .close_function(&name, 1001, "the function was removed");
    let mut unbound = Vec::new();
    for queue in state
        .queues
        .store
        .list_queues()
        .await
        .map_err(crate::queues::queue_error)?
    {
        if queue.consumer.as_ref().is_some_and(|c| c.function == name) {
            state
                .queues
                .store
                .remove_consumer(&queue.name)
                .await
                .map_err(crate::queues::queue_error)?;
            state.consumers.apply(&queue.name, None);
            unbound.push(queue.name);
        }
    }
    Ok(Json(Removed {
        removed: name,
        websocket_connections_closed: closed as u64,
        queues_unbound: unbound,
    }))
}

async fn deploy(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "a deploy is a multipart/form-data upload with parts `config` and `component`: {}",
            e.body_text()
        ))
    })?;
    let max = state.limits.component_bytes_max;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max + MULTIPART_OVERHEAD_BYTES) {
        return Err(component_too_large(Some(len), max).into());
    }
    let mut request = DeployRequest::default();
    let mut component: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        match field.name() {
            Some("config") => {
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, max))?;
                request = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("invalid deploy config: {e}")))?;
            }
            Some("component") => {
                component = Some(field.bytes().await.map_err(|e| multipart_error(e, max))?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected multipart part {other:?}: send `config` (JSON) and `component` (bytes)"
                )));
            }
        }
    }
    let component = component.ok_or_else(|| {
        ApiError::bad_request("missing multipart part `component` with the component bytes")
    })?;
    for secret in request.secrets.values() {
        if let Some(reason) = caller.denies_secret(secret) {
            return Err(ApiError::forbidden(reason));
        }
    }
    for queue in &request.publish {
        if let Some(reason) = caller.denies_publish_grant(queue) {
            return Err(ApiError::forbidden(reason));
        }
    }
    let deployed = state.registry.deploy(&name, request, component).await?;
    let v = &deployed.version;
    let adjusted = fit_leases(&state, &name, v.config.timeout_ms).await?;
    Ok((
        StatusCode::CREATED,
        Json(Deployed {
            function: v.function.clone(),
            version: v.version,
            route: v.config.route.clone(),
            url: function_url(&state.public_url, &v.config.route),
            digest: v.digest.clone(),
            size_bytes: v.size_bytes,
            compiled: deployed.compiled,
            adjusted,
        }),
    ))
}

/// Raise the visibility timeout of every queue consumer of `function` that is shorter than
/// its (new) `timeout_ms`, so no delivery can outlive its lease and be delivered twice while
/// it runs. Says what it changed.
async fn fit_leases(
    state: &ApiState,
    function: &str,
    timeout_ms: u64,
) -> Result<Vec<String>, ApiError> {
    let timeout_ms = timeout_ms.min(state.limits.timeout_ms_max);
    let store = &state.queues.store;
    let mut adjusted = Vec::new();
    for queue in store
        .list_queues()
        .await
        .map_err(crate::queues::queue_error)?
    {
        let Some(mut consumer) = queue.consumer else {
            continue;
        };
        if consumer.function != function || consumer.visibility_timeout_ms >= timeout_ms {
            continue;
        }
        let was = consumer.visibility_timeout_ms;
        consumer.visibility_timeout_ms = timeout_ms;
        store
            .set_consumer(&queue.name, consumer.clone())
            .await
            .map_err(crate::queues::queue_error)?;
        state.consumers.apply(&queue.name, Some(consumer));
        let note = format!(
            "queue `{}`: visibility_timeout_ms raised from {was} to {timeout_ms}, the function's timeout_ms, so a delivery cannot outlive its lease",
            queue.name
        );
        tracing::info!(function, "{note}");
        adjusted.push(note);
    }
    Ok(adjusted)
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        component_too_large(None, max).into()
    } else {
        ApiError::bad_request(format!("malformed multipart upload: {}", e.body_text()))
    }
}

async fn list_versions(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let function = find_function(&state, &name).await?;
    let owned = name.clone();
    let versions = state.parts.stores.functions.versions(&owned).await?;
    let versions = versions
        .iter()
        .map(|v| version_answer(v, function.live.version))
        .collect();
    Ok(Json(VersionList {
        function: name,
        live_version: function.live.version,
        versions,
    }))
}

async fn rollback(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<RolledBack>, ApiError> {
    let request: RollbackRequest = if body.is_empty() {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid rollback request: {e}")))?
    };
    let (function, previous) = state.registry.rollback(&name, request.version).await?;
    let adjusted = fit_leases(&state, &name, function.live.config.timeout_ms).await?;
    Ok(Json(RolledBack {
        function: name,
        live_version: function.live.version,
        previous_version: Some(previous),
        adjusted,
    }))
}

async fn logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "invalid logs query (after, tail, limit, wait_ms): {}",
            e.body_text()
        ))
    })?;
    find_function(&state, &name).await?;
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, LOG_ENTRIES_PER_CALL_MAX);
    if let Some(tail) = query.tail {
        let owned = name.clone();
        let tail = tail.clamp(1, LOG_ENTRIES_PER_CALL_MAX);
        let entries = state
            .parts
            .stores
            .invocations
            .invocations_tail(&owned, tail)
            .await?;
        return Ok(Json(log_page(&entries, query.after.unwrap_or(0))));
    }
    let after = query.after.unwrap_or(0);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(LOG_WAIT_MS_MAX));
    let deadline = tokio::time::Instant::now() + wait;
    let mut written = state.written.clone();
    loop {
        written.borrow_and_update();
        let owned = name.clone();
        let entries = state
            .parts
            .stores
            .invocations
            .invocations_after(&owned, after, limit)
            .await?;
        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(log_page(&entries, after)));
        }
        tokio::select! {
            _ = written.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.shutdown.cancelled() => return Ok(Json(log_page(&[], after))),
        }
    }
}

/// Default window of `stats`: the last hour.
const STATS_SINCE_MS_DEFAULT: u64 = 60 * 60 * 1000;

async fn stats(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<FunctionStats>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("invalid stats query (since_ms): {}", e.body_text()))
    })?;
    find_function(&state, &name).await?;
    let since_ms = query.since_ms.unwrap_or(STATS_SINCE_MS_DEFAULT);
    Ok(Json(function_stats(&state, name, since_ms).await?))
}

/// `GET /v1/stats?since_ms=N`: `stats` of every live function the token may read, in one
/// answer (the console's overview), by name.
async fn all_stats(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<StatsList>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("invalid stats query (since_ms): {}", e.body_text()))
    })?;
    let since_ms = query.since_ms.unwrap_or(STATS_SINCE_MS_DEFAULT);
    let mut names: Vec<String> = state
        .registry
        .routes()
        .all()
        .map(|live| live.name.to_string())
        .filter(|name| {
            caller
                .denies_function(crate::auth::Permission::FunctionsRead, name)
                .is_none()
        })
        .collect();
    names.sort();
    let from_minute = window_start(&state, since_ms);
    // One read of the store for every function (not one per function), and what this
    // node has not written yet.
    let meter = &state.parts.meter;
    let mut totals: std::collections::HashMap<String, eddy_store::Rollup> = {
        let _gate = meter.flush_gate.read().await;
        let stored = state
            .parts
            .stores
            .invocations
            .every_rollup(from_minute)
            .await?;
        let pending = meter
            .pending_since(from_minute)
            .into_iter()
            .map(|(function, _, rollup)| (function, rollup));
        let mut totals = std::collections::HashMap::new();
        for (function, rollup) in stored
            .into_iter()
            .map(|(function, _, rollup)| (function, rollup))
            .chain(pending)
        {
            totals
                .entry(function)
                .or_insert_with(eddy_store::Rollup::default)
                .merge(&rollup);
        }
        totals
    };
    let functions = names
        .into_iter()
        .map(|name| {
            let total = totals.remove(&name).unwrap_or_default();
            stats_answer(&state, name, from_minute, total, Default::default())
        })
        .collect();
    Ok(Json(StatsList { functions }))
}

/// The first minute of a window of `since_ms` ending now: the minute the window's start
/// falls in is included whole.
fn window_start(state: &ApiState, since_ms: u64) -> i64 {
    let now = state.parts.clock.now_ms();
    let from = now.saturating_sub(i64::try_from(since_ms).unwrap_or(i64::MAX));
    from - from.rem_euclid(MINUTE_MS)
}

/// The metered totals of `name` over the last `since_ms`.
async fn function_stats(
    state: &ApiState,
    name: String,
    since_ms: u64,
) -> Result<FunctionStats, ApiError> {
    let from_minute = window_start(state, since_ms);
    let meter = &state.parts.meter;
    let (total, shares) = {
        let _gate = meter.flush_gate.read().await;
        let pending = meter.pending_of(&name, from_minute);
        let mut total = pending.clone();
        let invocations = &state.parts.stores.invocations;
        for (_, rollup) in &invocations.rollups(&name, from_minute).await? {
            total.merge(rollup);
        }
        // Each node's share; this node's counts what it has not written yet too. A store
        // of one node names its one share "".
        let mut shares: std::collections::BTreeMap<String, eddy_store::Rollup> = invocations
            .rollup_shares(&name, from_minute)
            .await?
            .into_iter()
            .map(|(node, share)| match node.as_str() {
                "" => (state.node_name.to_string(), share),
                _ => (node, share),
            })
            .collect();
        shares
            .entry(state.node_name.to_string())
            .or_default()
            .merge(&pending.share());
        (total, shares)
    };
    Ok(stats_answer(state, name, from_minute, total, shares))
}

/// The `stats` answer of `name`: its totals from `from_minute` on, each node's share of
/// them (none: not given), and its load now.
fn stats_answer(
    state: &ApiState,
    name: String,
    from_minute: i64,
    total: eddy_store::Rollup,
    shares: std::collections::BTreeMap<String, eddy_store::Rollup>,
) -> FunctionStats {
    let load = state.parts.admission.load(&name);
    let ms = |us: u64| us as f64 / 1000.0;
    FunctionStats {
        since: rfc3339(from_minute),
        invocations: total.invocations,
        errors: total.errors,
        rejected: total.rejected,
        cold_starts: total.cold_starts,
        wall_ms_total: ms(total.wall_us),
        cpu_ms_total: ms(total.cpu_us),
        instantiate_ms_total: ms(total.instantiate_us),
        websocket_connection_seconds: total.connection_ms as f64 / 1000.0,
        latency_ms_p50: total.latency.quantile_us(0.5).map(ms),
        latency_ms_p99: total.latency.quantile_us(0.99).map(ms),
        request_bytes: total.request_bytes,
        response_bytes: total.response_bytes,
        memory_bytes_peak: total.memory_bytes_peak,
        outcomes: total.outcomes,
        instances_live: state.registry.instances_live(&name) as u64,
        in_flight: load.in_flight as u64,
        queued: load.queued as u64,
        nodes: shares
            .into_iter()
            .map(|(node, share)| NodeShare {
                node,
                invocations: share.invocations,
                errors: share.errors,
                rejected: share.rejected,
                cold_starts: share.cold_starts,
                wall_ms_total: ms(share.wall_us),
                cpu_ms_total: ms(share.cpu_us),
            })
            .collect(),
        function: name,
    }
}

/// The function's open WebSocket connections.
async fn list_websockets(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<WebSocketList>, ApiError> {
    find_function(&state, &name).await?;
    let connections = state
        .sockets
        .list(Some(&name))
        .into_iter()
        .map(|c| WebSocketConnection {
            id: c.id,
            opened_at: rfc3339(c.opened_at_ms),
            channels: c.channels,
            queued_bytes: c.queued_bytes as u64,
        })
        .collect();
    Ok(Json(WebSocketList {
        connection_seconds_closed: state.parts.meter.websocket_connection_seconds(&name),
        function: name,
        connections,
    }))
}

/// Send the body to every connection in one of a function's channels (text unless
/// `?binary=true`).
async fn broadcast(
    State(state): State<ApiState>,
    Path((name, channel)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: axum::body::Body,
) -> Result<Json<Broadcast>, ApiError> {
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
    find_function(&state, &name).await?;
    crate::websocket::validate_channel(&channel).map_err(ApiError::bad_request)?;
    let max = state.limits.websocket_message_bytes_max as u64;
    let body = crate::queues::read_limited(body, max, "websocket_message_bytes_max").await?;
    let message = if query.get("binary").is_some_and(|b| b == "true") {
        Message::Binary(body)
    } else {
        Message::Text(Utf8Bytes::try_from(body).map_err(|_| {
            ApiError::bad_request("a text message must be UTF-8; send binary data as binary")
        })?)
    };
    let sent = state.sockets.broadcast(&name, &channel, message);
    Ok(Json(Broadcast {
        function: name,
        channel,
        sent: sent as u64,
    }))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let registry = &state.registry;
    let gauges: Vec<FunctionGauges> = registry
        .routes()
        .all()
        .map(|live| {
            let load = state.parts.admission.load(&live.name);
            FunctionGauges {
                function: live.name.to_string(),
                instances_live: live
                    .instances_live
                    .load(std::sync::atomic::Ordering::Relaxed),
                in_flight: load.in_flight,
                queued: load.queued,
            }
        })
        .collect();
    let mut queues = Vec::new();
    for q in state.queues.store.list_queues().await.unwrap_or_default() {
        let Ok(counts) = state.queues.store.counts(&q.name).await else {
            continue;
        };
        queues.push(crate::metering::QueueGauges {
            consumer_concurrency: state.consumers.status(&q.name).map_or(0, |s| s.concurrency),
            queue: q.name,
            depth: counts.depth,
            in_flight: counts.in_flight,
            dead_lettered: counts.dead_lettered,
        });
    }
    let admission = &state.parts.admission;
    let text = state.parts.meter.render(
        &gauges,
        &queues,
        admission.in_flight(),
        admission.node().concurrency_max,
        state.parts.store_health.reachable(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn find_function(
    state: &ApiState,
    name: &str,
) -> Result<FunctionRecord, ApiError> {
    let owned = name.to_string();
    state
        .parts
        .stores
        .functions
        .function(&owned)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no function `{name}`; see `eddy ls`")))
}

fn function_url(public_url: &str, route: &str) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), route)
}

fn function_answer(public_url: &str, f: &FunctionRecord) -> Function {
    let config = &f.live.config;
    Function {
        name: f.name.clone(),
        route: config.route.clone(),
        url: function_url(public_url, &config.route),
        live_version: f.live.version,
        versions: f.version_count,
        digest: f.live.digest.clone(),
        memory_bytes_max: config.memory_bytes_max,
        timeout_ms: config.timeout_ms,
        updated_at: rfc3339(f.updated_at_ms),
        allow_outbound: config.allow_outbound.clone(),
        max_concurrency: config.max_concurrency,
        max_queue: config.max_queue,
        max_wait_ms: config.max_wait_ms,
        reserved_concurrency: config.reserved_concurrency,
        reuse: config.reuse.as_ref().map(|r| Reuse {
            max_requests: r.max_requests,
            idle_timeout_ms: r.idle_timeout_ms,
        }),
        websocket: config.websocket,
        schedule: config.schedule.clone(),
        publish: config.publish.clone(),
    }
}

fn version_answer(v: &VersionRecord, live: u32) -> Version {
    Version {
        version: v.version,
        live: v.version == live,
        digest: v.digest.clone(),
        size_bytes: v.size_bytes,
        route: v.config.route.clone(),
        memory_bytes_max: v.config.memory_bytes_max,
        timeout_ms: v.config.timeout_ms,
        env_keys: v.config.env.keys().cloned().collect(),
        secrets: v
            .config
            .secrets
            .iter()
            .map(|(variable, b)| (variable.clone(), format!("{}@{}", b.name, b.version)))
            .collect(),
        created_at: rfc3339(v.created_at_ms),
    }
}

fn log_page(entries: &[InvocationRecord], after: i64) -> LogPage {
    let last_id = entries.last().map(|e| e.id).unwrap_or(after);
    let entries = entries
        .iter()
        .map(|record| {
            let e = &record.invocation;
            LogEntry {
                id: record.id,
                at: rfc3339(e.at_ms),
                version: e.version,
                method: e.method.clone(),
                path: e.path.clone(),
                status: Some(e.status),
                outcome: e.outcome.clone(),
                duration_ms: e.duration_us as f64 / 1000.0,
                cpu_ms: e.cpu_us as f64 / 1000.0,
                instantiate_ms: e.instantiate_us.map(|us| us as f64 / 1000.0),
                fresh_instance: e.instantiate_us.is_some(),
                memory_bytes_peak: e.memory_bytes_peak,
                request_bytes: e.request_bytes,
                response_bytes: e.response_bytes,
                log: e.log.clone(),
                node: e.node.clone(),
            }
        })
        .collect();
    LogPage {
        entries,
        last_id: Some(last_id),
    }
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}
