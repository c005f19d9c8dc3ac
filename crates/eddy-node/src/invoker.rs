//! The one invocation pipeline every trigger goes through: the budget gate for the
//! trigger's class, admission, the runtime call, the record and the meter, and the
//! outcome-to-status and `eddy-error` mapping. The triggers (ingress for HTTP, the queue
//! consumer, the cron scheduler, the WebSocket server) are adapters: each builds its
//! request and decides what a refusal means for it (a response, a pause, a skipped tick).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_runtime::{Answer, Failure, InvocationReport, Outcome, ResponseBody};
use eddy_store::NewInvocation;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;

use crate::admission::{Class, ClusterShare, Permit, Rejection};
use crate::caps::Block;
use crate::invocations::InvocationSink;
use crate::parts::Parts;
use crate::routes::LiveFunction;

/// The header naming the limit (or failure) behind a response the node wrote itself.
pub const ERROR_HEADER: &str = "eddy-error";
/// `eddy-error` of an invocation refused because a budget with a hard cap is spent.
pub const BUDGET_ERROR: &str = "budget_spent";

/// What started an invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Http,
    WebSocket,
    Queue,
    Cron,
}

impl Trigger {
    /// Interactive when a caller waits on the answer, background otherwise.
    pub fn class(self) -> Class {
        match self {
            Trigger::Http | Trigger::WebSocket => Class::Interactive,
            Trigger::Queue | Trigger::Cron => Class::Background,
        }
    }
}

/// Why the gate turned an invocation away.
#[derive(Debug)]
pub enum Refusal {
    /// A budget's hard cap is spent: requests are refused, background work waits.
    Budget(Block),
    /// Admission control: the limit's name and what the caller is told.
    Busy {
        limit: &'static str,
        message: String,
    },
}

impl Refusal {
    /// The limit's name, for `eddy-error`, logs and metrics.
    pub fn limit(&self) -> &'static str {
        match self {
            Refusal::Budget(_) => BUDGET_ERROR,
            Refusal::Busy { limit, .. } => limit,
        }
    }

    /// What the caller is told.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Budget(block) => &block.message,
            Refusal::Busy { message, .. } => message,
        }
    }

    /// `503` for a waiting caller, with `Retry-After`: the month's end for a spent budget,
    /// a second for a busy function or node.
    pub fn response(&self, now_ms: i64) -> Response<ResponseBody> {
        let retry_after = match self {
            Refusal::Budget(block) => HeaderValue::from(block.retry_after_s(now_ms)),
            Refusal::Busy { .. } => HeaderValue::from_static("1"),
        };
        let mut response = node_response(
            StatusCode::SERVICE_UNAVAILABLE,
            self.limit(),
            self.message(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
        response
    }
}

/// The pipeline, built once per node and shared by every trigger.
#[derive(Clone)]
pub struct Invoker {
    parts: Parts,
    sink: InvocationSink,
    records_per_second_max: u32,
}

impl Invoker {
    pub fn new(parts: Parts, sink: InvocationSink, records_per_second_max: u32) -> Invoker {
        Invoker {
            parts,
            sink,
            records_per_second_max,
        }
    }

    /// The node's shared parts, for the triggers.
    pub(crate) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The record of one invocation of `live` by `request`, stamped now.
    pub fn record<B>(&self, live: &Arc<LiveFunction>, request: &Request<B>) -> Record {
        Record {
            live: live.clone(),
            records_per_second_max: self.records_per_second_max,
            sink: self.sink.clone(),
            meter: self.parts.meter.clone(),
            node: self.parts.node.clone(),
            at_ms: self.parts.clock.now_ms(),
            method: request.method().clone(),
            path: request.uri().path_and_query().cloned(),
        }
    }

    /// The budget gate alone, for `trigger`'s class. An interactive refusal is counted in
    /// stats and metrics; background work that waits for a budget is not an invocation.
    pub fn budget(&self, function: &Arc<str>, trigger: Trigger) -> Result<(), Refusal> {
        let budgets = &self.parts.budgets;
        let block = match trigger.class() {
            Class::Interactive => budgets.refused(function),
            Class::Background => budgets.background_paused(function),
        };
        match block {
            None => Ok(()),
            Some(block) => {
                if trigger.class() == Class::Interactive {
                    self.parts
                        .meter
                        .rejected(function, self.parts.clock.now_ms(), BUDGET_ERROR);
                }
                Err(Refusal::Budget(block))
            }
        }
    }

    /// The gate for a caller who waits: the budget, then admission. A refusal is counted
    /// and recorded (a rejected invocation in the function's log, within
    /// `invocation_records_per_second_max`).
    pub async fn admit(&self, record: &Record, trigger: Trigger) -> Result<Permit, Refusal> {
        self.gate(&record.live, trigger, Some(record)).await
    }

    /// The gate for background work: the budget, then admission. A refusal is neither
    /// counted nor recorded: the message waits in its queue, or the tick is skipped and
    /// logged, and nobody was refused.
    pub async fn admit_background(
        &self,
        live: &Arc<LiveFunction>,
        trigger: Trigger,
    ) -> Result<Permit, Refusal> {
        debug_assert_eq!(trigger.class(), Class::Background);
        self.gate(live, trigger, None).await
    }

    async fn gate(
        &self,
        live: &Arc<LiveFunction>,
        trigger: Trigger,
        record: Option<&Record>,
    ) -> Result<Permit, Refusal> {
        self.budget(&live.name, trigger)?;
        match self
            .parts
            .admission
            .admit(&live.name, trigger.class())
            .await
        {
            Ok(permit) => Ok(permit),
            Err(rejection) => {
                let share = self.parts.admission.cluster_share();
                let (limit, message) = rejection_reason(rejection, live, share);
                if let Some(record) = record {
                    // Counted in stats and metrics; a log line per rejection would let a
                    // flood flood the log too.
                    tracing::debug!(function = %live.name, limit, "invocation rejected by admission control");
                    record.rejected(limit);
                }
                Err(Refusal::Busy { limit, message })
            }
        }
    }

    /// Runs `request` under `permit` and streams the response (HTTP). A response the node
    /// writes for a failure says why in `eddy-error`; a guest cannot set that header.
    pub async fn run<B>(
        &self,
        record: Record,
        request: Request<B>,
        permit: Permit,
    ) -> Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<eddy_runtime::PlatformBodyError>,
    {
        let live = record.live.clone();
        let report = move |report: InvocationReport| {
            let status = report_status(&report);
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
        match live.deployment.invoke(request, permit, report).await {
            Ok(mut response) => {
                // The header is the node's word; a guest cannot speak for the node.
                response.headers_mut().remove(ERROR_HEADER);
                response
            }
            Err(failure) => failure_response(&failure),
        }
    }

    /// Runs an invocation the node makes itself (a queue delivery, a cron tick, a WebSocket
    /// event) under `permit`, and reads its answer as `keep` says: never more than that is
    /// held. `Err` when the function failed (trapped, timed out, hit a limit).
    pub async fn run_collected(
        &self,
        record: Record,
        request: Request<Full<Bytes>>,
        permit: Permit,
        keep: Keep,
    ) -> Result<Collected, RunFailure> {
        let live = record.live.clone();
        let (tx, rx) = oneshot::channel::<(Outcome, Option<String>)>();
        let report = move |report: InvocationReport| {
            let status = report_status(&report);
            let _ = tx.send((report.outcome, report.detail.clone()));
            record.finish(status, report);
        };
        let mut answer = None;
        if let Ok(response) = live.deployment.invoke(request, permit, report).await {
            let (head, mut body) = response.into_parts();
            // The report comes once the body has been read to its end.
            let (body, over_limit) = match keep {
                Keep::Status => {
                    while let Some(Ok(_)) = body.frame().await {}
                    (Bytes::new(), false)
                }
                Keep::Body(bytes_max) => {
                    match http_body_util::Limited::new(body, bytes_max)
                        .collect()
                        .await
                    {
                        Ok(collected) => (collected.to_bytes(), false),
                        Err(e) => (Bytes::new(), e.is::<http_body_util::LengthLimitError>()),
                    }
                }
            };
            answer = Some(Collected {
                status: head.status,
                headers: head.headers,
                body,
                over_limit,
            });
        }
        let (outcome, detail) = rx.await.map_err(|_| RunFailure::NoReport)?;
        match (outcome, answer) {
            (Outcome::Ok, Some(answer)) => Ok(answer),
            // The node stopped reading past its bound, which may have failed the guest's
            // writes: the bound is the reason, and the caller's to report.
            (_, Some(answer)) if answer.over_limit => Ok(answer),
            (Outcome::Ok, None) => Err(RunFailure::NoResponse),
            (outcome, _) => Err(RunFailure::Failed { outcome, detail }),
        }
    }

    /// A background invocation (a queue delivery, a cron tick) whose status alone matters:
    /// the body is read and dropped as it comes, never held. `Ok` when it answered 2xx.
    pub async fn run_background(
        &self,
        record: Record,
        request: Request<Full<Bytes>>,
        permit: Permit,
    ) -> Result<(), RunFailure> {
        let answer = self
            .run_collected(record, request, permit, Keep::Status)
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(RunFailure::Answered(answer.status))
        }
    }
}

/// Why an invocation the node made itself did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("the invocation ended without a report")]
    NoReport,
    #[error("the function gave no response")]
    NoResponse,
    /// It trapped, timed out or hit a limit (`detail` says which, where the runtime knows).
    #[error("{}{}", outcome.as_str(), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Failed {
        outcome: Outcome,
        detail: Option<String>,
    },
    /// It answered, with a status that is not 2xx (`run_background` only).
    #[error("the function answered {}", .0.as_u16())]
    Answered(http::StatusCode),
}

/// The status an invocation's record carries: the guest's, or the one the node answered.
fn report_status(report: &InvocationReport) -> u16 {
    match report.answer {
        Answer::Guest(status) => status,
        Answer::Node(outcome) => failure_status(outcome).as_u16(),
    }
}

/// What a function answered, its body read whole within a bound.
pub struct Collected {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The body was longer than `Keep::Body`'s bound: `body` is empty, not a part of it.
    pub over_limit: bool,
}

/// What of a node-initiated invocation's answer the node keeps.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// The status and headers; the body is read to its end and dropped as it arrives.
    Status,
    /// The body too, up to this many bytes.
    Body(usize),
}

/// What is recorded about one invocation: its totals in the meter, its row in the ring of
/// recent invocations.
pub struct Record {
    live: Arc<LiveFunction>,
    records_per_second_max: u32,
    sink: InvocationSink,
    meter: Arc<crate::metering::Meter>,
    node: Arc<str>,
    at_ms: i64,
    method: http::Method,
    path: Option<http::uri::PathAndQuery>,
}

impl Record {
    fn finish(self, status: u16, report: InvocationReport) {
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

    fn rejected(&self, limit: &'static str) {
        self.meter.rejected(&self.live.name, self.at_ms, limit);
        let mut report = InvocationReport::refused(Outcome::Rejected, Duration::ZERO, None);
        report.log = format!("[eddy: rejected by admission control: {limit}]\n");
        // A flood of rejections is counted in full, recorded within the same budget.
        self.write(StatusCode::SERVICE_UNAVAILABLE.as_u16(), report, true);
    }

    /// Queue the record; a `budgeted` one only within `invocation_records_per_second_max`.
    fn write(&self, status: u16, report: InvocationReport, budgeted: bool) {
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
            log: storable(report.log),
            node: self.node.to_string(),
        });
    }
}

/// Text a function produced (its output, a trap's detail), as every store keeps it: a NUL,
/// which a Postgres text column refuses (failing the batch it is written in), becomes
/// U+FFFD.
pub(crate) fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

/// The limit that turned an invocation away, and what the caller is told.
fn rejection_reason(
    rejection: Rejection,
    live: &LiveFunction,
    share: ClusterShare,
) -> (&'static str, String) {
    let a = live.admission;
    let name = &live.name;
    let max = share.describe(a.max_concurrency);
    match rejection {
        Rejection::QueueFull if a.max_queue == 0 => (
            "max_concurrency",
            format!(
                "`{name}` is running its {max} invocations and queues none (max_queue 0); retry shortly"
            ),
        ),
        Rejection::QueueFull => (
            "max_queue",
            format!(
                "`{name}` is running its {max} invocations and its queue is full (max_queue {}); retry shortly",
                a.max_queue
            ),
        ),
        Rejection::WaitExpired => (
            "max_wait_ms",
            format!(
                "`{name}` had no free slot within max_wait_ms ({} ms; {max}, or the node's concurrency_max); retry shortly",
                a.max_wait.as_millis(),
            ),
        ),
        Rejection::NoShare => (
            "max_concurrency",
            format!(
                "`{name}` runs on other nodes: its max_concurrency ({}) is divided between {} live nodes and this node's share is 0; retry (a load balancer may send it elsewhere)",
                a.max_concurrency, share.live
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
pub fn busy_response(limit: &'static str, message: &str) -> Response<ResponseBody> {
    Refusal::Busy {
        limit,
        message: message.to_string(),
    }
    .response(0)
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
