//! The public listener: serves connections (`listener.rs`), enforces header and body limits,
//! routes each request to its function and turns failures into clear responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eddy_runtime::{Answer, Failure, InvocationReport, Outcome, ResponseBody};
use eddy_store::NewInvocation;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::{Class, Rejection};
use crate::config::LimitsConfig;
use crate::invocations::InvocationSink;
use crate::metering::Meter;
use crate::registry::{Registry, now_ms};
use crate::routes::LiveFunction;

/// The public health path; reveals nothing but whether the node is serving.
pub const HEALTH_PATH: &str = "/_eddy/healthz";
/// The header naming the limit (or failure) behind a response the node wrote itself.
pub const ERROR_HEADER: &str = "eddy-error";
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
    pub sink: InvocationSink,
    pub limits: LimitsConfig,
    pub draining: Arc<AtomicBool>,
    pub sockets: Arc<crate::websocket::SocketServer>,
    /// Load balancers exempt from `connections_per_ip_max`.
    pub trusted_proxies: Arc<[eddy_runtime::destinations::IpNet]>,
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

    async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        remove_node_headers(req.headers_mut());
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
        if let Some(block) = self.registry.budgets().refused(&live.name) {
            self.registry
                .meter()
                .rejected(&live.name, now_ms(), BUDGET_ERROR);
            return budget_response(&block);
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
        let at_ms = now_ms();
        // Cheap clones (shared bytes); formatted only if the record is written.
        let method = req.method().clone();
        let path = req.uri().path_and_query().cloned();
        let record = Record {
            live: live.clone(),
            records_per_second_max: self.limits.invocation_records_per_second_max,
            sink: self.sink.clone(),
            meter: self.registry.meter().clone(),
            at_ms,
            method,
            path,
        };
        let permit = match self
            .registry
            .admission()
            .admit(&live.name, Class::Interactive)
            .await
        {
            Ok(permit) => permit,
            Err(rejection) => {
                let (limit, message) = rejection_reason(rejection, &live);
                // Counted in stats and metrics; a log line per rejection would let a flood
                // flood the log too.
                tracing::debug!(function = %live.name, limit, "request rejected by admission control");
                record.rejected(limit);
                return busy_response(limit, &message);
            }
        };
        if !req.headers().contains_key(header::HOST) {
            // HTTP/1.0 clients may omit Host; wasi:http needs an authority.
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let report = move |report: InvocationReport| {
            let status = match report.answer {
                Answer::Guest(status) => status,
                Answer::Node(outcome) => failure_status(outcome).as_u16(),
            };
            if report.outcome != Outcome::Ok {
                tracing::warn!(
                    function = %record.live.name,
                    version = record.live.version,
                    outcome = report.outcome.as_str(),
                    status,
                    detail = report.detail.as_deref().unwrap_or(""),
                    "invocation failed"
                );
            }
            record.finish(status, report);
        };
        // Trailers are headers too: a client cannot forge the node's there either.
        let req = req.map(|body| body.map_frame(without_node_trailers as fn(_) -> _));
        match live.deployment.invoke(req, permit, report).await {
            Ok(mut response) => {
                // The header is the node's word; a guest cannot speak for the node.
                response.headers_mut().remove(ERROR_HEADER);
                response
            }
            Err(failure) => failure_response(&failure),
        }
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

/// What is recorded about one invocation: its totals in the meter, its row in the ring of
/// recent invocations.
pub(crate) struct Record {
    pub(crate) live: Arc<LiveFunction>,
    pub(crate) records_per_second_max: u32,
    pub(crate) sink: InvocationSink,
    pub(crate) meter: Arc<Meter>,
    pub(crate) at_ms: i64,
    pub(crate) method: http::Method,
    pub(crate) path: Option<http::uri::PathAndQuery>,
}

impl Record {
    pub(crate) fn finish(self, status: u16, report: InvocationReport) {
        let memory_limit_bytes = self.live.deployment.limits().memory_bytes_max;
        self.meter.invocation(
            &self.live.name,
            self.at_ms,
            status,
            &report,
            memory_limit_bytes,
        );
        let plain = report.outcome == Outcome::Ok && status < 500 && report.log.is_empty();
        self.write(status, report, plain);
    }

    pub(crate) fn rejected(self, limit: &'static str) {
        self.meter.rejected(&self.live.name, self.at_ms, limit);
        let mut report = InvocationReport::refused(Outcome::Rejected, Duration::ZERO, None);
        report.log = format!("[eddy: rejected by admission control: {limit}]\n");
        // A flood of rejections is counted in full, recorded within the same budget.
        self.write(StatusCode::SERVICE_UNAVAILABLE.as_u16(), report, true);
    }

    /// Queue the record; a `budgeted` one only within `invocation_records_per_second_max`.
    fn write(self, status: u16, report: InvocationReport, budgeted: bool) {
        if budgeted
            && !self
                .live
                .records
                .take(self.at_ms, self.records_per_second_max)
        {
            return;
        }
        self.sink.record(NewInvocation {
            function: self.live.name.to_string(),
            version: self.live.version,
            at_ms: self.at_ms,
            method: self.method.to_string(),
            path: self.path.as_ref().map_or("/", |p| p.as_str()).to_string(),
            status,
            outcome: report.outcome.as_str().to_string(),
            duration_us: report.duration.as_micros() as u64,
            cpu_us: report.cpu.as_micros() as u64,
            instantiate_us: report.instantiate.map(|d| d.as_micros() as u64),
            memory_bytes_peak: report.memory_bytes_peak,
            request_bytes: report.request_bytes,
            response_bytes: report.response_bytes,
            log: report.log,
        });
    }
}

/// The limit that turned a request away, and what the caller is told.
pub(crate) fn rejection_reason(
    rejection: Rejection,
    live: &LiveFunction,
) -> (&'static str, String) {
    let a = live.admission;
    let name = &live.name;
    match rejection {
        Rejection::QueueFull if a.max_queue == 0 => (
            "max_concurrency",
            format!(
                "`{name}` is running its max_concurrency ({}) invocations and queues none (max_queue 0); retry shortly",
                a.max_concurrency
            ),
        ),
        Rejection::QueueFull => (
            "max_queue",
            format!(
                "`{name}` is running its max_concurrency ({}) invocations and its queue is full (max_queue {}); retry shortly",
                a.max_concurrency, a.max_queue
            ),
        ),
        Rejection::WaitExpired => (
            "max_wait_ms",
            format!(
                "`{name}` had no free slot within max_wait_ms ({} ms; max_concurrency {}, or the node's concurrency_max); retry shortly",
                a.max_wait.as_millis(),
                a.max_concurrency
            ),
        ),
        Rejection::Gone => (
            "function_removed",
            format!("`{name}` was removed or changed while this request waited; retry"),
        ),
    }
}

/// The status the caller gets when the node answers for a failed invocation.
pub fn failure_status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Ok => StatusCode::OK,
        Outcome::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Outcome::RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Outcome::ResponseBodyTooLarge => StatusCode::BAD_GATEWAY,
        Outcome::InstanceLimit | Outcome::Rejected => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Trap
        | Outcome::MemoryLimit
        | Outcome::ResourceLimit
        | Outcome::FieldsLimit
        | Outcome::NoResponse
        | Outcome::ErrorResponse => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `eddy-error` value for an outcome: the limit's name, or the kind of failure.
pub fn error_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Timeout => "timeout_ms",
        Outcome::MemoryLimit => "memory_bytes_max",
        Outcome::RequestBodyTooLarge => "request_body_bytes_max",
        Outcome::ResponseBodyTooLarge => "response_body_bytes_max",
        Outcome::InstanceLimit => "instances_max",
        Outcome::ResourceLimit => "resources_per_instance_max",
        Outcome::FieldsLimit => "fields_bytes_max",
        other => other.as_str(),
    }
}

fn failure_response(failure: &Failure) -> Response<ResponseBody> {
    if failure.outcome == Outcome::InstanceLimit {
        return busy_response(error_name(failure.outcome), &failure.message);
    }
    node_response(
        failure_status(failure.outcome),
        error_name(failure.outcome),
        &failure.message,
    )
}

/// `503` for a bound the node is at right now (`limit`), with `Retry-After: 1`: the same
/// request may succeed in a moment.
pub(crate) fn busy_response(limit: &'static str, message: &str) -> Response<ResponseBody> {
    let mut response = node_response(StatusCode::SERVICE_UNAVAILABLE, limit, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `eddy-error` of a request refused because a budget with a hard cap is spent.
pub const BUDGET_ERROR: &str = "budget_spent";

/// `503` for a function whose budget is spent, with `Retry-After` set to the month's end.
fn budget_response(block: &crate::cost::budget::Block) -> Response<ResponseBody> {
    let mut response = node_response(
        StatusCode::SERVICE_UNAVAILABLE,
        BUDGET_ERROR,
        &block.message,
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(block.retry_after_s()),
    );
    response
}

/// A short plain-text response written by the node, with `eddy-error` naming why.
pub fn node_response(
    status: StatusCode,
    error: &'static str,
    message: &str,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(format!("{message}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(error));
    response
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
