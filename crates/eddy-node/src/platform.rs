//! `http://eddy.local/`: what the node answers to a function's own outgoing requests, without
//! a network hop. One router, built once at start (`EddyLocal`); each deployment's handle
//! adds to every request the function that asks and what it may reach:
//!
//! - `POST /queues/{queue}`: publish the body to a queue the function's `publish` list allows;
//! - `POST /websockets/connections/{id}/messages`: send the body to one of its connections
//!   (text when `eddy-websocket-kind: text` or a `text/*` content type, else binary);
//! - `POST /websockets/connections/{id}/close?code=1000&reason=...`;
//! - `PUT` / `DELETE /websockets/connections/{id}/channels/{channel}`: join / leave;
//! - `POST /websockets/channels/{channel}/messages`: broadcast to its channel.
//!
//! Paths and queries are percent-decoded by the router. Success is `202` with a JSON body;
//! a refusal is its status with `eddy-error` and `{"error": {"code", "message"}}`.

use std::pin::Pin;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use eddy_parse::platform::{CloseQuery, message_is_text};
use eddy_runtime::{Platform, PlatformBody, PlatformBodyError};
use eddy_store::NewMessage;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::error::ApiError;
use crate::invoker::ERROR_HEADER;
use crate::queues::{DEFAULT_CONTENT_TYPE, QueueHub, read_limited, read_message};
use crate::websocket::{
    HEADER_KIND, Reach, SocketError, Sockets, WEBSOCKET_CHANNELS_PER_CONNECTION_MAX,
    validate_channel,
};

/// The `eddy.local` platform of a node: one kept router for every function.
#[derive(Clone)]
pub struct EddyLocal {
    router: Router,
    hub: Arc<QueueHub>,
    sockets: Arc<Sockets>,
}

/// What answers one function's requests to `http://eddy.local/`: the node's router, told
/// who asks.
struct FunctionPlatform {
    router: Router,
    caller: Arc<Caller>,
}

/// The function that asks, and what it may reach.
struct Caller {
    hub: Arc<QueueHub>,
    sockets: Arc<Sockets>,
    function: Arc<str>,
    /// Queue names, or `*` for any.
    publish: Arc<[String]>,
}

type Answer = Result<(StatusCode, axum::Json<Value>), PlatformError>;

impl EddyLocal {
    pub fn new(hub: Arc<QueueHub>, sockets: Arc<Sockets>) -> EddyLocal {
        let router = Router::new()
            .route("/queues/{queue}", post(publish_message))
            .route("/websockets/connections/{id}/messages", post(send))
            .route("/websockets/connections/{id}/close", post(close))
            .route(
                "/websockets/connections/{id}/channels/{channel}",
                axum::routing::put(join).delete(leave),
            )
            .route("/websockets/channels/{channel}/messages", post(broadcast))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
        EddyLocal {
            router,
            hub,
            sockets,
        }
    }

    /// What answers `function`'s requests; it may publish to the queues in `publish` (or
    /// any, with `*`).
    pub fn for_function(&self, function: Arc<str>, publish: Arc<[String]>) -> Arc<dyn Platform> {
        Arc::new(FunctionPlatform {
            router: self.router.clone(),
            caller: Arc::new(Caller {
                hub: self.hub.clone(),
                sockets: self.sockets.clone(),
                function,
                publish,
            }),
        })
    }
}

impl Platform for FunctionPlatform {
    fn handle(
        &self,
        request: http::Request<PlatformBody>,
    ) -> Pin<Box<dyn Future<Output = http::Response<PlatformBody>> + Send>> {
        let mut router = self.router.clone();
        let mut request = request.map(Body::new);
        // Who asks comes from the deployment, never from the request (a guest cannot name
        // another function).
        request.extensions_mut().insert(self.caller.clone());
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request)
                .await
                .unwrap_or_else(|never| match never {});
            response.map(|body| {
                body.map_err(|e| PlatformBodyError::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            })
        })
    }
}

/// A refusal: its status, `eddy-error` naming it, and the JSON error body.
struct PlatformError(ApiError);

impl From<crate::problem::Problem> for PlatformError {
    fn from(p: crate::problem::Problem) -> PlatformError {
        PlatformError(p.into())
    }
}

impl From<ApiError> for PlatformError {
    fn from(e: ApiError) -> PlatformError {
        PlatformError(e)
    }
}

impl IntoResponse for PlatformError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = json!({"error": {"code": e.code, "message": e.message}});
        (e.status, [(ERROR_HEADER, e.code)], axum::Json(body)).into_response()
    }
}

fn accepted(body: Value) -> Answer {
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}

async fn publish_message(
    Extension(c): Extension<Arc<Caller>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    if !c.publish.iter().any(|q| q == "*" || *q == queue) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "publish_not_allowed",
            format!(
                "function `{}` may not publish to queue `{queue}`; deploy it with publish = [\"{queue}\"]",
                c.function
            ),
        )
        .into());
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type =
        header(header::CONTENT_TYPE.as_str()).unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into());
    let idempotency_key = header("idempotency-key");
    let body = read_message(body, c.hub.limits.queue_message_bytes_max).await?;
    let message = NewMessage {
        body: body.to_vec(),
        content_type,
        idempotency_key,
    };
    let published = c.hub.publish(&queue, vec![message]).await?;
    let first = &published[0];
    accepted(json!({"id": first.id, "duplicate": first.duplicate}))
}

async fn send(
    Extension(c): Extension<Arc<Caller>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let message = message(&c, &headers, body).await?;
    match c
        .sockets
        .send(Some(&c.function), &id, message)
        .map_err(|e| socket_error(&c, &id, e))?
    {
        Reach::Here => accepted(json!({"sent": 1})),
        Reach::Relayed => accepted(json!({"sent": 0, "relayed": true})),
    }
}

async fn close(
    Extension(c): Extension<Arc<Caller>>,
    Path(id): Path<String>,
    query: Result<Query<CloseQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let (code, reason) = query.frame().map_err(ApiError::bad_request)?;
    let reach = c
        .sockets
        .close(Some(&c.function), &id, code, reason)
        .map_err(|e| socket_error(&c, &id, e))?;
    accepted(json!({"closed": id, "relayed": reach == Reach::Relayed}))
}

async fn join(
    Extension(c): Extension<Arc<Caller>>,
    Path((id, channel)): Path<(String, String)>,
) -> Answer {
    membership(&c, &id, &channel, true)
}

async fn leave(
    Extension(c): Extension<Arc<Caller>>,
    Path((id, channel)): Path<(String, String)>,
) -> Answer {
    membership(&c, &id, &channel, false)
}

fn membership(c: &Caller, id: &str, channel: &str, join: bool) -> Answer {
    validate_channel(channel).map_err(ApiError::bad_request)?;
    let reach = c
        .sockets
        .membership(Some(&c.function), id, channel, join)
        .map_err(|e| socket_error(c, id, e))?;
    accepted(json!({"channel": channel, "joined": join, "relayed": reach == Reach::Relayed}))
}

async fn broadcast(
    Extension(c): Extension<Arc<Caller>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    validate_channel(&channel).map_err(ApiError::bad_request)?;
    let message = message(&c, &headers, body).await?;
    let sent = c.sockets.broadcast(&c.function, &channel, message);
    accepted(json!({"sent": sent}))
}

async fn not_found(method: http::Method, uri: http::Uri) -> PlatformError {
    ApiError::not_found(format!(
        "eddy.local has no {method} {}; it answers /queues/NAME and /websockets/... (docs/api.md)",
        uri.path()
    ))
    .into()
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> PlatformError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "eddy.local does not answer {method} on {}; see docs/api.md",
            uri.path()
        ),
    )
    .into()
}

/// The body as a WebSocket message: text when `eddy-websocket-kind: text` or a `text/*`
/// content type says so, otherwise binary; within `websocket_message_bytes_max`.
async fn message(c: &Caller, headers: &HeaderMap, body: Body) -> Result<Message, ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let text = message_is_text(header(HEADER_KIND), header(header::CONTENT_TYPE.as_str()))
        .map_err(ApiError::bad_request)?;
    let bytes_max = c.sockets.message_bytes_max() as u64;
    let body: Bytes = read_limited(body, bytes_max, "websocket_message_bytes_max").await?;
    if text {
        Utf8Bytes::try_from(body)
            .map(Message::Text)
            .map_err(|_| ApiError::bad_request("a text message must be UTF-8"))
    } else {
        Ok(Message::Binary(body))
    }
}

/// Why a send, close or join did not happen. Another function's connection id is answered
/// exactly as an unknown one.
fn socket_error(c: &Caller, id: &str, e: SocketError) -> ApiError {
    match e {
        SocketError::NoConnection => ApiError::not_found(format!(
            "function `{}` has no open WebSocket connection `{id}`",
            c.function
        )),
        SocketError::RelayFull => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "relay_queue_max",
            format!(
                "connection `{id}` is not on this node, and RELAY_QUEUE_MAX ({}) operations are already waiting to be handed to the cluster's other nodes; retry shortly",
                crate::websocket::RELAY_QUEUE_MAX
            ),
        ),
        SocketError::SlowReader => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "websocket_send_buffer_bytes_max",
            format!(
                "connection `{id}` fell more than websocket_send_buffer_bytes_max ({} bytes) behind and was closed with 1013",
                c.sockets.send_buffer_bytes_max()
            ),
        ),
        SocketError::TooManyChannels => ApiError::limit(format!(
            "connection `{id}` is in {WEBSOCKET_CHANNELS_PER_CONNECTION_MAX} channels, the most one may join"
        )),
    }
}
