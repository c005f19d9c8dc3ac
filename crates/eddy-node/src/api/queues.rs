//! The control API of queues: create, list, publish, peek, redrive, purge, and consumer
//! bindings. The contract is `docs/api.md#queues`.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use eddy_parse::api::{BatchPublish, ConsumerRequest, CreateQueue, PeekQuery};
use eddy_parse::responses::{
    BatchSent, Consumer, Message, MessageList, Purged, Queue, QueueList, Redriven, Sent,
};
use eddy_store::{ConsumerSettings, NewMessage, QueueCounts, QueueRecord};

use super::ApiState;
use crate::auth::{Caller, Permission};
use crate::config::{
    CONSUMER_ATTEMPTS_MAX_CEILING, CONSUMER_BATCH_SIZE_MAX, DEFAULT_CONSUMER_ATTEMPTS_MAX,
    DEFAULT_CONSUMER_BACKOFF_BASE_MS, DEFAULT_CONSUMER_BACKOFF_MAX_MS, DEFAULT_CONSUMER_BATCH_SIZE,
    DEFAULT_CONSUMER_CONCURRENCY_MAX, DEFAULT_CONSUMER_VISIBILITY_TIMEOUT_MS,
    QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING,
};
use crate::error::ApiError;
use crate::events::rfc3339;
use crate::queues::{DEFAULT_CONTENT_TYPE, queue_error, read_message, validate_queue_name};

/// Largest body of a batch publish call.
pub const QUEUE_PUBLISH_BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Messages one peek returns at most.
pub const PEEK_MESSAGES_MAX: u32 = 1000;

/// The queue routes, merged under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/queues", get(list_queues).post(create_queue))
        .route("/queues/{name}", get(get_queue).delete(delete_queue))
        .route("/queues/{name}/messages", get(peek).post(publish_one))
        .route(
            "/queues/{name}/batch",
            post(publish_batch).layer(DefaultBodyLimit::max(QUEUE_PUBLISH_BATCH_BYTES_MAX)),
        )
        .route("/queues/{name}/redrive", post(redrive))
        .route("/queues/{name}/purge", post(purge))
        .route(
            "/queues/{name}/consumer",
            axum::routing::put(set_consumer).delete(remove_consumer),
        )
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {}", e.body_text())))
}

async fn create_queue(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateQueue>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let request = json_body(body)?;
    validate_queue_name(&request.name).map_err(ApiError::bad_request)?;
    if request
        .name
        .ends_with(eddy_store::queues::DEAD_LETTER_SUFFIX)
    {
        // A scope of queue `x` covers `x-dlq`: only the dead-letter queue made with `x`
        // may have that name.
        return Err(ApiError::bad_request(format!(
            "queue names ending in `{}` are kept for the dead-letter queue each queue gets; pick another name",
            eddy_store::queues::DEAD_LETTER_SUFFIX
        )));
    }
    if let Some(reason) = caller.denies_queue(Permission::QueuesWrite, &request.name) {
        return Err(ApiError::forbidden(reason));
    }
    let window = request
        .idempotency_window_ms
        .unwrap_or(state.limits.queue_idempotency_window_ms_default);
    if window > QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING {
        return Err(ApiError::limit(format!(
            "idempotency window {window} ms is above {QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING} ms (one day)"
        )));
    }
    let store = &state.queues.store;
    let existing = store.list_queues().await.map_err(queue_error)?.len();
    if existing + 2 > state.limits.queues_max {
        return Err(ApiError::limit(format!(
            "this node has {existing} queues (dead-letter queues included); a new queue and its dead-letter queue would pass queues_max ({}); delete some or raise limits.queues_max",
            state.limits.queues_max
        )));
    }
    let record = store
        .create_queue(&request.name, window)
        .await
        .map_err(queue_error)?;
    let body = queue_answer(&state, &record).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_queues(State(state): State<ApiState>) -> Result<Json<QueueList>, ApiError> {
    let records = state
        .queues
        .store
        .list_queues()
        .await
        .map_err(queue_error)?;
    let mut queues = Vec::with_capacity(records.len());
    for record in &records {
        queues.push(queue_answer(&state, record).await?);
    }
    Ok(Json(QueueList { queues }))
}

async fn find_queue(state: &ApiState, name: &str) -> Result<QueueRecord, ApiError> {
    state
        .queues
        .store
        .queue(name)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| {
            queue_error(eddy_store::StoreError::NotFound {
                what: format!("queue `{name}`"),
            })
            .into()
        })
}

async fn get_queue(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    let record = find_queue(&state, &name).await?;
    Ok(Json(queue_answer(&state, &record).await?))
}

async fn delete_queue(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .queues
        .store
        .delete_queue(&name)
        .await
        .map_err(queue_error)?
    {
        return Err(queue_error(eddy_store::StoreError::NotFound {
            what: format!("queue `{name}`"),
        })
        .into());
    }
    state.consumers.apply(&name, None);
    tracing::info!(queue = %name, "queue deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn publish_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let body = read_message(body, state.limits.queue_message_bytes_max).await?;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let message = NewMessage {
        body: body.to_vec(),
        content_type: text(header::CONTENT_TYPE.as_str())
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
        idempotency_key: text("idempotency-key"),
    };
    let published = state.queues.publish(&name, vec![message]).await?;
    let first = &published[0];
    Ok((
        StatusCode::ACCEPTED,
        Json(Sent {
            id: first.id.clone(),
            duplicate: first.duplicate,
        }),
    ))
}

async fn publish_batch(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<BatchPublish>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let request = json_body(body)?;
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.into_iter().enumerate() {
        let (body, default_type) = match (m.data, m.data_base64) {
            (Some(text), None) => (text.into_bytes(), "text/plain; charset=utf-8"),
            (None, Some(b64)) => (
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "message {i}: data_base64 is not base64: {e}"
                        ))
                    })?,
                DEFAULT_CONTENT_TYPE,
            ),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "message {i}: give exactly one of data and data_base64"
                )));
            }
        };
        messages.push(NewMessage {
            body,
            content_type: m.content_type.unwrap_or_else(|| default_type.into()),
            idempotency_key: m.idempotency_key,
        });
    }
    let published = state.queues.publish(&name, messages).await?;
    let duplicates = published.iter().filter(|p| p.duplicate).count() as u64;
    let ids = published.into_iter().map(|p| p.id).collect();
    Ok((StatusCode::ACCEPTED, Json(BatchSent { ids, duplicates })))
}

async fn peek(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<PeekQuery>, QueryRejection>,
) -> Result<Json<MessageList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(10);
    if limit > PEEK_MESSAGES_MAX {
        return Err(ApiError::limit(format!(
            "limit {limit} is above {PEEK_MESSAGES_MAX}, the most one peek returns"
        )));
    }
    let messages = state
        .queues
        .store
        .peek(&name, limit)
        .await
        .map_err(queue_error)?;
    let messages = messages
        .into_iter()
        .map(|m| {
            // The payload as text when it is UTF-8, otherwise in base64.
            let (data, data_base64) = match String::from_utf8(m.body) {
                Ok(text) => (Some(text), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                ),
            };
            Message {
                id: m.id,
                attempts: m.attempts,
                enqueued_at: rfc3339(m.enqueued_at_ms),
                first_enqueued_at: rfc3339(m.first_enqueued_at_ms),
                visible_at: rfc3339(m.visible_at_ms),
                in_flight: m.in_flight,
                content_type: m.content_type,
                last_error: m.last_error,
                data,
                data_base64,
            }
        })
        .collect();
    Ok(Json(MessageList { messages }))
}

async fn redrive(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Redriven>, ApiError> {
    let record = find_queue(&state, &name).await?;
    if let Some(of) = &record.dead_letter_of {
        return Err(ApiError::bad_request(format!(
            "`{name}` is a dead-letter queue; redrive `{of}` to move its messages back"
        )));
    }
    let from = record
        .consumer
        .as_ref()
        .map(|c| c.dead_letter.clone())
        .or(record.dead_letter_queue.clone())
        .unwrap_or_default();
    // Redriving takes messages out of the dead-letter queue: it must be in scope too.
    if let Some(reason) = caller.denies_queue(Permission::QueuesWrite, &from) {
        return Err(ApiError::forbidden(reason));
    }
    let moved = state
        .queues
        .store
        .redrive(&from, &name)
        .await
        .map_err(queue_error)?;
    state.queues.waker(&name).wake();
    tracing::info!(queue = %name, from = %from, moved, "redrove dead letters");
    Ok(Json(Redriven { moved, from }))
}

async fn purge(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Purged>, ApiError> {
    let purged = state.queues.store.purge(&name).await.map_err(queue_error)?;
    tracing::info!(queue = %name, purged, "queue purged");
    Ok(Json(Purged { purged }))
}

async fn set_consumer(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ConsumerRequest>, JsonRejection>,
) -> Result<Json<Consumer>, ApiError> {
    let request = json_body(body)?;
    // Binding a function makes it run: the token must be allowed to change that function.
    if let Some(reason) = caller.denies_function(Permission::FunctionsWrite, &request.function) {
        return Err(ApiError::forbidden(reason));
    }
    // Failed deliveries go to the dead-letter queue, and a redrive takes them out of it:
    // it must be in scope as well.
    if let Some(dead_letter) = &request.dead_letter
        && let Some(reason) = caller.denies_queue(Permission::QueuesWrite, dead_letter)
    {
        return Err(ApiError::forbidden(reason));
    }
    let record = find_queue(&state, &name).await?;
    let function = request.function.clone();
    let deployed = state
        .parts
        .stores
        .functions
        .function(&function)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no function `{}` to consume `{name}`; deploy it first",
                request.function
            ))
        })?;
    let settings = consumer_settings(&state, &record, request, deployed.live.config.timeout_ms)?;
    state
        .queues
        .store
        .set_consumer(&name, settings.clone())
        .await
        .map_err(queue_error)?;
    state.consumers.apply(&name, Some(settings.clone()));
    tracing::info!(queue = %name, function = %settings.function, "consumer bound");
    Ok(Json(consumer_answer(&settings, None, None)))
}

/// Check a binding against the node's limits, filling in the defaults.
fn consumer_settings(
    state: &ApiState,
    queue: &QueueRecord,
    r: ConsumerRequest,
    function_timeout_ms: u64,
) -> Result<ConsumerSettings, ApiError> {
    let l = &state.limits;
    let batch_size = r.batch_size.unwrap_or(DEFAULT_CONSUMER_BATCH_SIZE);
    if batch_size == 0 || batch_size > CONSUMER_BATCH_SIZE_MAX {
        return Err(ApiError::limit(format!(
            "batch size {batch_size} is outside 1..={CONSUMER_BATCH_SIZE_MAX} (consumer_batch_size_max)"
        )));
    }
    let max_concurrency = r
        .max_concurrency
        .unwrap_or(DEFAULT_CONSUMER_CONCURRENCY_MAX.min(l.background_concurrency_max as u32));
    if max_concurrency == 0 || max_concurrency as usize > l.background_concurrency_max {
        return Err(ApiError::limit(format!(
            "max concurrency {max_concurrency} is outside 1..={} (limits.background_concurrency_max, which all queue and cron work shares)",
            l.background_concurrency_max
        )));
    }
    let visibility_timeout_ms = r
        .visibility_timeout_ms
        .unwrap_or(DEFAULT_CONSUMER_VISIBILITY_TIMEOUT_MS.max(function_timeout_ms));
    if visibility_timeout_ms < function_timeout_ms {
        return Err(ApiError::bad_request(format!(
            "visibility timeout {visibility_timeout_ms} ms is shorter than the function's timeout_ms ({function_timeout_ms} ms): a delivery could be cut off while it runs; give at least {function_timeout_ms} ms"
        )));
    }
    let max_attempts = r.max_attempts.unwrap_or(DEFAULT_CONSUMER_ATTEMPTS_MAX);
    if max_attempts == 0 || max_attempts > CONSUMER_ATTEMPTS_MAX_CEILING {
        return Err(ApiError::limit(format!(
            "max attempts {max_attempts} is outside 1..={CONSUMER_ATTEMPTS_MAX_CEILING} (consumer_attempts_max)"
        )));
    }
    let backoff_base_ms = r
        .backoff_base_ms
        .unwrap_or(DEFAULT_CONSUMER_BACKOFF_BASE_MS);
    let backoff_max_ms = r
        .backoff_max_ms
        .unwrap_or(DEFAULT_CONSUMER_BACKOFF_MAX_MS.max(backoff_base_ms));
    if backoff_base_ms == 0 || backoff_base_ms > backoff_max_ms {
        return Err(ApiError::bad_request(format!(
            "backoff base {backoff_base_ms} ms must be at least 1 ms and at most the backoff max ({backoff_max_ms} ms)"
        )));
    }
    let dead_letter = match (r.dead_letter, &queue.dead_letter_queue) {
        (Some(dlq), _) => dlq,
        (None, Some(own)) => own.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "`{}` is a dead-letter queue; a consumer of it needs --dead-letter QUEUE",
                queue.name
            )));
        }
    };
    if let Some(path) = &r.path
        && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(ApiError::bad_request(format!(
            "delivery path `{path}` must be a path starting with `/`"
        )));
    }
    Ok(ConsumerSettings {
        function: r.function,
        batch_size,
        max_concurrency,
        visibility_timeout_ms,
        max_attempts,
        backoff_base_ms,
        backoff_max_ms,
        dead_letter,
        path: r.path,
    })
}

async fn remove_consumer(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .queues
        .store
        .remove_consumer(&name)
        .await
        .map_err(queue_error)?
    {
        return Err(ApiError::not_found(format!(
            "queue `{name}` has no consumer"
        )));
    }
    state.consumers.apply(&name, None);
    Ok(StatusCode::NO_CONTENT)
}

/// A binding's settings, with its live state when the consumer runs and why it waits when a
/// budget paused it.
fn consumer_answer(
    c: &ConsumerSettings,
    status: Option<crate::consumer::ConsumerStatus>,
    paused_by_budget: Option<String>,
) -> Consumer {
    Consumer {
        function: c.function.clone(),
        batch_size: c.batch_size,
        max_concurrency: c.max_concurrency,
        visibility_timeout_ms: c.visibility_timeout_ms,
        max_attempts: c.max_attempts,
        backoff_base_ms: c.backoff_base_ms,
        backoff_max_ms: c.backoff_max_ms,
        dead_letter: c.dead_letter.clone(),
        path: c.path.clone(),
        concurrency: status.map(|s| s.concurrency),
        in_flight: status.map(|s| s.in_flight as u64),
        breaker: status.map(|s| s.breaker.to_owned()),
        budget_waits: status.map(|s| s.budget_waits),
        paused_by_budget,
    }
}

/// A queue with its counts and its consumer's live state.
pub async fn queue_answer(state: &ApiState, q: &QueueRecord) -> Result<Queue, ApiError> {
    let counts: QueueCounts = state
        .queues
        .store
        .counts(&q.name)
        .await
        .map_err(queue_error)?;
    let status = state.consumers.status(&q.name);
    let oldest_age_ms = counts
        .oldest_enqueued_at_ms
        .map_or(0, |at| (state.parts.clock.now_ms() - at).max(0));
    Ok(Queue {
        name: q.name.clone(),
        dead_letter_queue: q.dead_letter_queue.clone(),
        dead_letter_of: q.dead_letter_of.clone(),
        idempotency_window_ms: q.idempotency_window_ms,
        created_at: rfc3339(q.created_at_ms),
        depth: counts.depth,
        bytes: counts.bytes,
        ready: counts.ready,
        in_flight: counts.in_flight,
        delayed: counts.delayed,
        delivered: counts.delivered,
        succeeded: counts.succeeded,
        failed_attempts: counts.failed_attempts,
        dead_lettered: counts.dead_lettered,
        oldest_age_ms: Some(oldest_age_ms.unsigned_abs()),
        consumer_concurrency: status.map_or(0, |s| s.concurrency),
        consumer: q.consumer.as_ref().map(|c| {
            let paused = state.parts.budgets.background_paused(&c.function);
            consumer_answer(c, status, paused.map(|b| b.message))
        }),
    })
}
