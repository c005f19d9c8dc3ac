//! One invocation: a fresh store with its own limits, the guest's `handle` call, and the
//! classification of how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body;
use tokio::sync::oneshot;
use tracing::Instrument;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::body::{LimitFlag, LimitedRequestBody, ResponseBody};
use crate::engine::Prepared;
use crate::limits::{CPU_SLICE_TICKS, FunctionLimits};
use crate::log::LogPipe;

/// How an invocation ended. A trap or a limit is an outcome to record, not a node error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guest responded and finished.
    Ok,
    /// The guest trapped (panic, `unreachable`, stack overflow, ...).
    Trap,
    /// The guest ran past `timeout_ms`.
    Timeout,
    /// The guest tried to grow its memory past `memory_bytes_max`.
    MemoryLimit,
    /// The request body was larger than `request_body_bytes_max`.
    RequestBodyTooLarge,
    /// The guest wrote more than `response_body_bytes_max`.
    ResponseBodyTooLarge,
    /// No instance slot was free (`instances_max`).
    InstanceLimit,
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with a `wasi:http` error code instead of a response.
    ErrorResponse,
}

impl Outcome {
    /// Stable name used in logs, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::RequestBodyTooLarge => "request_body_too_large",
            Outcome::ResponseBodyTooLarge => "response_body_too_large",
            Outcome::InstanceLimit => "instance_limit",
            Outcome::NoResponse => "no_response",
            Outcome::ErrorResponse => "error_response",
        }
    }
}

/// An invocation that produced no response of the guest's: the node answers for it.
#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    /// Short reason, safe to show to the caller.
    pub message: String,
}

/// Everything known about an invocation once the guest has finished.
#[derive(Debug)]
pub struct InvocationReport {
    pub outcome: Outcome,
    /// What the caller got: the guest's response, or the node's answer for a failure.
    pub answer: Answer,
    /// Captured stdout and stderr (bounded).
    pub log: String,
    /// Wall time from the start of instantiation to the end of the guest's work.
    pub duration: Duration,
    /// Internal detail of a failure, for the node's log (not for callers).
    pub detail: Option<String>,
}

/// Who answered the caller, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The guest's response (with this status) was delivered.
    Guest(u16),
    /// The node answered for the failure with this outcome.
    Node(Outcome),
}

/// A live version of a function: its pre-linked instance template and limits.
pub struct Deployment {
    pre: ProxyPre<InvocationState>,
    limits: FunctionLimits,
    env: Arc<[(String, String)]>,
    log_bytes_max: usize,
    inline_teardown_memory_bytes_max: usize,
}

impl Deployment {
    /// A deployment of a prepared component. `log_bytes_max` bounds captured output.
    pub fn new(
        prepared: &Prepared,
        limits: FunctionLimits,
        env: Vec<(String, String)>,
        log_bytes_max: usize,
    ) -> Deployment {
        Deployment {
            pre: prepared.pre.clone(),
            limits,
            env: env.into(),
            log_bytes_max,
            inline_teardown_memory_bytes_max: prepared.inline_teardown_memory_bytes_max,
        }
    }

    /// The limits every invocation of this deployment runs under.
    pub fn limits(&self) -> FunctionLimits {
        self.limits
    }

    /// Run the guest for one request.
    ///
    /// Returns as soon as the guest has set its response (the body streams after) or has
    /// failed. `report` is called exactly once, when the guest's work has ended, from the
    /// task that ran it (inside the caller's tracing span).
    pub async fn invoke<B>(
        &self,
        request: http::Request<B>,
        report: impl FnOnce(InvocationReport) + Send + 'static,
    ) -> Result<http::Response<ResponseBody>, Failure>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<HttpError>,
    {
        let started = Instant::now();
        if declared_length(request.headers())
            .is_some_and(|len| len > self.limits.request_body_bytes_max)
        {
            return refuse(report, started, request_body_too_large(self.limits), None);
        }
        let deadline = started + self.limits.timeout;
        let shared = Arc::new(Shared::default());
        let log = LogPipe::new(self.log_bytes_max);

        let request = request.map({
            let flag = shared.request_flag.clone();
            let bytes_max = self.limits.request_body_bytes_max;
            move |body| LimitedRequestBody::new(body, bytes_max, flag)
        });
        let mut store = Store::new(
            self.pre.engine(),
            InvocationState::new(&self.env, &log, self.limits.memory_bytes_max),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(CPU_SLICE_TICKS);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(CPU_SLICE_TICKS))
            }
        });

        let (delivery_tx, mut delivery_rx) = oneshot::channel();
        let on_response = {
            let shared = shared.clone();
            let limits = self.limits;
            move |response| {
                if let Some(delivery) = shared.decide(response, limits) {
                    let _ = delivery_tx.send(delivery);
                }
            }
        };
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| {
                let out = store
                    .data_mut()
                    .http()
                    .new_response_outparam_from_callback(on_response)?;
                Ok((req, out))
            });
        let (req, out) = match resources {
            Ok(pair) => pair,
            Err(e) => {
                let failure = Failure {
                    outcome: Outcome::Trap,
                    message: "the request could not be passed to the function".into(),
                };
                return refuse(report, started, failure, Some(format!("{e:#}")));
            }
        };

        let (done_tx, done_rx) = oneshot::channel::<Failure>();
        let pre = self.pre.clone();
        let inline_teardown_memory_bytes_max = self.inline_teardown_memory_bytes_max;
        let task_shared = shared.clone();
        let guest = async move {
            let result = tokio::time::timeout_at(deadline.into(), async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let memory_denied = store.data().limiter.denied;
            let (outcome, detail) = task_shared.classify(result, memory_denied);
            if outcome != Outcome::Ok {
                // A body the guest left unfinished must reach the client as an error,
                // not as a clean end of a shorter body.
                task_shared.aborted.set();
            }
            // Dropping the store releases the instance slot, ends the response body and,
            // if the guest never responded, drops the response sender (waking `invoke`).
            // Resetting a large memory takes milliseconds: do it off this worker, so the
            // connection this task just woke (parked in this worker's LIFO slot, where no
            // other worker can steal it) sends the response without waiting for it. A
            // small memory resets faster than a hand-off to another thread.
            if store.data().limiter.memory_bytes_peak <= inline_teardown_memory_bytes_max {
                drop(store);
            } else {
                drop_off_worker(store);
            }
            let _ = done_tx.send(Failure {
                outcome,
                message: failure_message(outcome, &detail),
            });
            report(InvocationReport {
                outcome,
                answer: task_shared.answer(outcome),
                log: log.take(),
                duration: started.elapsed(),
                detail: (outcome != Outcome::Ok).then_some(detail),
            });
        };
        tokio::spawn(guest.in_current_span());

        let mut request_refused = false;
        loop {
            tokio::select! {
                biased;
                delivery = &mut delivery_rx => return match delivery {
                    Ok(Delivery::Response(response)) => Ok(response),
                    Ok(Delivery::Refused(failure)) => Err(failure),
                    Err(_) => {
                        let failure = done_rx.await.unwrap_or(Failure { outcome: Outcome::Trap, message: "the function failed".into() });
                        Err(match failure.outcome {
                            Outcome::Ok => Failure { outcome: Outcome::NoResponse, message: failure_message(Outcome::NoResponse, "") },
                            _ => failure,
                        })
                    }
                },
                _ = shared.request_flag.wait(), if !request_refused => {
                    request_refused = true;
                    // Unless the guest's response was delivered first, the caller learns
                    // that its body was refused.
                    if shared.claim_for_node(Decision::Refused, Outcome::RequestBodyTooLarge) {
                        return Err(request_body_too_large(self.limits));
                    }
                }
            }
        }
    }
}

/// What happened to the guest's response; decided once, by whoever gets there first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Decision {
    Undecided = 0,
    /// The guest's response went to the caller.
    Delivered = 1,
    /// The node answered instead (a limit).
    Refused = 2,
    /// The guest set a `wasi:http` error code instead of a response.
    GuestError = 3,
}

enum Delivery {
    Response(http::Response<ResponseBody>),
    Refused(Failure),
}

/// State shared by `invoke`, the guest's response callback and the guest task.
#[derive(Default)]
struct Shared {
    decision: AtomicU8,
    guest_status: AtomicU16,
    /// The outcome the node answered for, when it answered before the guest finished.
    node_answer: std::sync::OnceLock<Outcome>,
    request_flag: Arc<LimitFlag>,
    response_flag: Arc<LimitFlag>,
    aborted: Arc<LimitFlag>,
}

impl Shared {
    /// Move from `Undecided` to `decision`; false if something else was decided first.
    fn claim(&self, decision: Decision) -> bool {
        self.decision
            .compare_exchange(
                Decision::Undecided as u8,
                decision as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    fn decision(&self) -> u8 {
        self.decision.load(Ordering::Acquire)
    }

    /// Claim the answer for the node, remembering which failure it answered.
    fn claim_for_node(&self, decision: Decision, outcome: Outcome) -> bool {
        let claimed = self.claim(decision);
        if claimed {
            let _ = self.node_answer.set(outcome);
        }
        claimed
    }

    /// What the caller got, once the guest's run ended with `outcome`.
    fn answer(&self, outcome: Outcome) -> Answer {
        if self.decision() == Decision::Delivered as u8 {
            return Answer::Guest(self.guest_status.load(Ordering::Acquire));
        }
        match self.node_answer.get() {
            Some(answered) => Answer::Node(*answered),
            None if outcome == Outcome::Ok => Answer::Node(Outcome::NoResponse),
            None => Answer::Node(outcome),
        }
    }

    /// Called when the guest sets its response: deliver it, or refuse it for a limit.
    /// `None` when the caller has already been answered.
    fn decide(
        &self,
        response: Result<http::Response<HyperOutgoingBody>, ErrorCode>,
        limits: FunctionLimits,
    ) -> Option<Delivery> {
        let response = match response {
            Err(code) => {
                let message =
                    format!("the function answered with an error instead of a response: {code:?}");
                return self
                    .claim_for_node(Decision::GuestError, Outcome::ErrorResponse)
                    .then_some(Delivery::Refused(Failure {
                        outcome: Outcome::ErrorResponse,
                        message,
                    }));
            }
            Ok(response) => response,
        };
        if self.request_flag.hit() {
            return self
                .claim_for_node(Decision::Refused, Outcome::RequestBodyTooLarge)
                .then(|| Delivery::Refused(request_body_too_large(limits)));
        }
        let bytes_max = limits.response_body_bytes_max;
        if declared_length(response.headers()).is_some_and(|len| len > bytes_max) {
            // Dropping the body makes the guest's next write fail, which ends it.
            self.response_flag.set();
            return self.claim_for_node(Decision::Refused, Outcome::ResponseBodyTooLarge).then(|| {
                Delivery::Refused(Failure {
                    outcome: Outcome::ResponseBodyTooLarge,
                    message: format!(
                        "the function's response body is larger than response_body_bytes_max ({bytes_max} bytes)"
                    ),
                })
            });
        }
        self.guest_status
            .store(response.status().as_u16(), Ordering::Release);
        if !self.claim(Decision::Delivered) {
            return None;
        }
        let (response_flag, aborted) = (self.response_flag.clone(), self.aborted.clone());
        Some(Delivery::Response(response.map(|body| {
            ResponseBody::guest(body, bytes_max, response_flag, aborted)
        })))
    }

    /// How the guest's run ended, and the internal detail of a failure.
    fn classify(
        &self,
        result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
        memory_denied: bool,
    ) -> (Outcome, String) {
        let error = match result {
            Err(_) => {
                return (
                    Outcome::Timeout,
                    "deadline reached while the function was waiting".into(),
                );
            }
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
        };
        let detail = error.as_ref().map(|e| format!("{e:?}")).unwrap_or_default();
        let outcome = if self.response_flag.hit() {
            Outcome::ResponseBodyTooLarge
        } else if self.request_flag.hit() {
            Outcome::RequestBodyTooLarge
        } else if let Some(error) = &error {
            if memory_denied {
                Outcome::MemoryLimit
            } else if error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                Outcome::InstanceLimit
            } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                Outcome::Timeout
            } else {
                Outcome::Trap
            }
        } else if self.decision() == Decision::GuestError as u8 {
            Outcome::ErrorResponse
        } else if self.decision() == Decision::Undecided as u8 {
            Outcome::NoResponse
        } else {
            Outcome::Ok
        };
        let message = match (&error, outcome) {
            (Some(error), Outcome::Trap) => trap_reason(error),
            _ => detail,
        };
        (outcome, message)
    }
}

/// Drop a finished invocation's store on the blocking pool.
fn drop_off_worker(store: Store<InvocationState>) {
    tokio::task::spawn_blocking(move || drop(store));
}

/// Answer for a failure before any guest code ran, reporting it as such.
fn refuse(
    report: impl FnOnce(InvocationReport),
    started: Instant,
    failure: Failure,
    detail: Option<String>,
) -> Result<http::Response<ResponseBody>, Failure> {
    report(InvocationReport {
        outcome: failure.outcome,
        answer: Answer::Node(failure.outcome),
        log: String::new(),
        duration: started.elapsed(),
        detail,
    });
    Err(failure)
}

/// The `content-length` a message declares, if it declares a valid one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn request_body_too_large(limits: FunctionLimits) -> Failure {
    Failure {
        outcome: Outcome::RequestBodyTooLarge,
        message: format!(
            "request body larger than request_body_bytes_max ({} bytes)",
            limits.request_body_bytes_max
        ),
    }
}

/// The reason a guest trapped, without the backtrace: the trap code when there is one.
fn trap_reason(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    }
}

fn failure_message(outcome: Outcome, detail: &str) -> String {
    match outcome {
        Outcome::Trap => format!("the function trapped: {detail}"),
        Outcome::Timeout => "the function ran past its timeout_ms".into(),
        Outcome::MemoryLimit => {
            "the function tried to use more memory than memory_bytes_max".into()
        }
        Outcome::InstanceLimit => {
            "no instance slot is free on this node (instances_max); retry shortly".into()
        }
        Outcome::NoResponse => "the function returned without setting a response".into(),
        _ => detail.to_string(),
    }
}

/// The per-invocation data of a store: WASI contexts, the resource table and limits.
pub(crate) struct InvocationState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: EddyHooks,
    limiter: MemoryLimiter,
}

impl InvocationState {
    fn new(env: &[(String, String)], log: &LogPipe, memory_bytes_max: u64) -> InvocationState {
        // No preopened directories and the default socket policy (deny every address,
        // no name lookups): the guest has no filesystem and no network.
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .envs(env)
            .build();
        InvocationState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: EddyHooks { log: log.clone() },
            limiter: MemoryLimiter {
                memory_bytes_max: usize::try_from(memory_bytes_max).unwrap_or(usize::MAX),
                memory_bytes_peak: 0,
                denied: false,
            },
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// `wasi:http` policy: outgoing requests are refused until the allowlist exists.
struct EddyHooks {
    log: LogPipe,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for EddyHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        self.log.note(&format!(
            "[eddy: outgoing request to {} refused: functions may not make outgoing HTTP requests yet]",
            request.uri()
        ));
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// Enforces the function's memory limit and remembers whether the guest hit it.
struct MemoryLimiter {
    memory_bytes_max: usize,
    /// The largest linear memory granted to the guest (any of its memories).
    memory_bytes_peak: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.denied = true;
            return Ok(false);
        }
        self.memory_bytes_peak = self.memory_bytes_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}
