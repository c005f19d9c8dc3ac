//! The public listener: serves connections (`listener.rs`), enforces header and body limits,
//! routes each request to its function and turns failures into clear responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eddy_runtime::ResponseBody;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::LimitsConfig;
use crate::invoker::{Invoker, Trigger, node_response};
use crate::registry::Registry;
use crate::routes::LiveFunction;

/// The public health path; reveals nothing but whether the node is serving.
pub const HEALTH_PATH: &str = "/_eddy/healthz";
/// Request headers with this prefix are the node's (`eddy-websocket`, `eddy-connection-id`,
/// `eddy-queue`, `eddy-schedule`, ...): removed from every public request, so a function can
/// trust that the node set the ones it sees.
pub const NODE_HEADER_PREFIX: &str = "eddy-";
/// Slack above `header_bytes_max` for hyper's read buffer (request line, framing), so
/// eddy's own check answers before hyper's generic one.
const HEADER_BUFFER_SLACK_BYTES: usize = 16 * 1024;

/// Shared state of the public listener.
pub struct Ingress {
    pub registry: Arc<Registry>,
    pub invoker: Invoker,
    pub limits: LimitsConfig,
    pub draining: Arc<AtomicBool>,
    pub sockets: Arc<crate::websocket::SocketServer>,
    /// Load balancers exempt from `connections_per_ip_max`.
    pub trusted_proxies: Arc<[eddy_runtime::destinations::IpNet]>,
    /// TLS on the public listener, when configured (then HTTP/2 is offered through ALPN).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Ingress {
    /// Accept connections until `shutdown` fires, then wait up to the grace period for
    /// in-flight requests.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let limits = crate::listener::ListenerLimits {
            connections_key: "connections_max",
            connections_max: self.limits.connections_max,
            connections_per_ip_max: self.limits.connections_per_ip_max,
            header_read_timeout: Duration::from_millis(self.limits.header_read_timeout_ms),
            write_timeout: Duration::from_millis(self.limits.write_timeout_ms),
            read_buffer_bytes: self.limits.header_bytes_max.max(8192)
                + self.limits.request_target_bytes_max
                + HEADER_BUFFER_SLACK_BYTES,
            trusted_proxies: self.trusted_proxies.clone(),
            shutdown_grace: Duration::from_millis(self.limits.shutdown_grace_ms),
            tls: self.tls.clone(),
            http2: self.tls.as_ref().map(|_| crate::listener::Http2Limits {
                streams_per_connection_max: self.limits.http2_streams_per_connection_max,
                pending_reset_streams_max: self.limits.http2_pending_reset_streams_max,
                local_error_resets_max: crate::config::HTTP2_LOCAL_ERROR_RESETS_MAX,
                header_list_bytes_max: u32::try_from(self.limits.header_bytes_max)
                    .unwrap_or(u32::MAX),
            }),
        };
        crate::listener::serve(listener, limits, shutdown, move |peer| {
            let ingress = self.clone();
            service_fn(move |req| {
                let ingress = ingress.clone();
                async move { Ok::<_, std::convert::Infallible>(ingress.handle(req, peer).await) }
            })
        })
        .await
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        let mut response = self.route(req, peer).await;
        // Whatever answers (a function, its refusal of a WebSocket, the node), it cannot set
        // the console's session cookie for this host name.
        crate::auth::remove_session_set_cookie(response.headers_mut());
        response
    }

    async fn route(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        remove_node_headers(req.headers_mut());
        // The console's session cookie reaches this listener too when both share a host
        // name: no function may see it.
        crate::auth::remove_session_cookie(req.headers_mut());
        let path = req.uri().path();
        if path == HEALTH_PATH {
            return health(&self.draining);
        }
        let target_bytes = eddy_parse::routes::request_target_bytes(req.uri());
        if target_bytes > self.limits.request_target_bytes_max {
            return node_response(
                StatusCode::URI_TOO_LONG,
                "request_target_bytes_max",
                &format!(
                    "the request target (path and query) is {target_bytes} bytes, above request_target_bytes_max ({} bytes)",
                    self.limits.request_target_bytes_max
                ),
            );
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if header_bytes > self.limits.header_bytes_max {
            return node_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_bytes_max",
                &format!(
                    "request headers are {header_bytes} bytes, above header_bytes_max ({} bytes)",
                    self.limits.header_bytes_max
                ),
            );
        }
        let Some(live) = self.registry.routes().lookup(path).cloned() else {
            return node_response(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no function serves {path}"),
            );
        };
        if let Err(refusal) = self.invoker.budget(&live.name, Trigger::Http) {
            return refusal.response(self.invoker.parts().clock.now_ms());
        }
        if live.websocket && crate::websocket::is_upgrade(&req) {
            return self.sockets.upgrade(live, req).await;
        }
        let span =
            // Debug level: at the default level no span is built per request (building one
            // cost about 5% of the CPU of a warm Rust hello, mostly formatting its fields);
            // the events that matter name the function themselves.
            tracing::debug_span!("invocation", function = %live.name, version = live.version, %peer);
        self.invoke(live, req).instrument(span).await
    }

    async fn invoke(
        &self,
        live: Arc<LiveFunction>,
        mut req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let record = self.invoker.record(&live, &req);
        let permit = match self.invoker.admit(&record, Trigger::Http).await {
            Ok(permit) => permit,
            Err(refusal) => return refusal.response(self.invoker.parts().clock.now_ms()),
        };
        if !req.headers().contains_key(header::HOST) {
            // HTTP/2 carries the authority in the URI, HTTP/1.0 clients may omit Host;
            // wasi:http needs one.
            let host = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .unwrap_or(HeaderValue::from_static("localhost"));
            req.headers_mut().insert(header::HOST, host);
        }
        // Trailers are headers too: a client cannot forge the node's there either.
        let req = req.map(|body| body.map_frame(without_node_trailers as fn(_) -> _));
        self.invoker.run(record, req, permit).await
    }
}

/// Removes the request headers only the node may set: a client cannot forge a WebSocket
/// event, a queue delivery or a cron tick.
fn remove_node_headers(headers: &mut http::HeaderMap) {
    let is_node_header = |name: &HeaderName| name.as_str().starts_with(NODE_HEADER_PREFIX);
    if headers.keys().any(is_node_header) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_node_header(n))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// A request body frame, with the node's headers removed if it is the trailers.
fn without_node_trailers(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            remove_node_headers(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// The health answer on both listeners: whether the node is serving, and nothing else.
pub fn health_status(draining: &AtomicBool) -> (StatusCode, &'static str) {
    if draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

fn health(draining: &AtomicBool) -> Response<ResponseBody> {
    let (status, body) = health_status(draining);
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
