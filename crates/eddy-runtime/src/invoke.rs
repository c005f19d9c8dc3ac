//! One invocation: a fresh store with its own limits, the guest's `handle` call, and the
//! classification of how it ended.

use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body;
use tokio::sync::oneshot;
use tracing::Instrument;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, FieldMapError, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::body::{LimitFlag, LimitedRequestBody, ResponseBody};
use crate::engine::{Prepared, Runtime};
use crate::limits::{
    CPU_SLICE_TICKS, FunctionLimits, HostLimits, OUTGOING_BODY_BUFFER_CHUNKS,
    REUSE_LEFTOVER_RESOURCES_MAX, ReuseConfig,
};
use crate::log::LogPipe;
use crate::meter::metered;
use crate::outbound::{AllowRule, OutboundPolicy, Platform};
use crate::reuse::{IdlePool, Instance, LiveGuard};

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
    /// The guest held more host resources at once than `resources_per_instance_max`.
    ResourceLimit,
    /// The guest built a header map larger than `fields_bytes_max`.
    FieldsLimit,
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with a `wasi:http` error code instead of a response.
    ErrorResponse,
    /// Admission control turned the request away before any instance ran it.
    Rejected,
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
            Outcome::ResourceLimit => "resource_limit",
            Outcome::FieldsLimit => "fields_limit",
            Outcome::NoResponse => "no_response",
            Outcome::ErrorResponse => "error_response",
            Outcome::Rejected => "rejected",
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
    /// CPU time the guest spent running (its `handle` call's polls, on the thread CPU
    /// clock); time parked awaiting I/O or timers is not counted.
    pub cpu: Duration,
    /// Time spent instantiating, when this invocation got a fresh instance; `None` when it
    /// reused a warm one (or never got an instance).
    pub instantiate: Option<Duration>,
    /// Largest linear memory of the instance so far.
    pub memory_bytes_peak: u64,
    /// Request body bytes the guest read.
    pub request_bytes: u64,
    /// Response body bytes sent to the caller.
    pub response_bytes: u64,
    /// Internal detail of a failure, for the node's log (not for callers).
    pub detail: Option<String>,
}

impl InvocationReport {
    /// A report for a request answered by the node before any guest code ran.
    pub fn refused(
        outcome: Outcome,
        duration: Duration,
        detail: Option<String>,
    ) -> InvocationReport {
        InvocationReport {
            outcome,
            answer: Answer::Node(outcome),
            log: String::new(),
            duration,
            cpu: Duration::ZERO,
            instantiate: None,
            memory_bytes_peak: 0,
            request_bytes: 0,
            response_bytes: 0,
            detail,
        }
    }
}

/// Calls an invocation's report once both the guest has finished and the caller's
/// response body has ended (or was never sent), so the report has every byte.
pub(crate) struct Completion {
    pending: Mutex<Option<PendingReport>>,
    response_bytes: AtomicU64,
    span: tracing::Span,
}

type PendingReport = (InvocationReport, Box<dyn FnOnce(InvocationReport) + Send>);

impl Completion {
    pub(crate) fn add_response_bytes(&self, n: u64) {
        self.response_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let pending = self
            .pending
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut report, call)) = pending {
            report.response_bytes = *self.response_bytes.get_mut();
            let _entered = self.span.enter();
            call(report);
        }
    }
}

/// Who answered the caller, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The guest's response (with this status) was delivered.
    Guest(u16),
    /// The node answered for the failure with this outcome.
    Node(Outcome),
}

/// How one version of a function runs.
pub struct DeploymentSettings {
    pub limits: FunctionLimits,
    pub env: Vec<(String, String)>,
    /// Keep instances warm between requests; `None`: a fresh instance per request.
    pub reuse: Option<ReuseConfig>,
    /// Where the function may send HTTP requests.
    pub outbound: Vec<AllowRule>,
    /// The function's live-instance count, shared by all its versions.
    pub instances_live: Arc<AtomicUsize>,
    /// What answers the function's requests to `http://eddy.local/`; `None`: nothing does.
    pub platform: Option<Arc<dyn Platform>>,
}

/// A live version of a function: its pre-linked instance template, limits and, with
/// reuse, its warm instances.
pub struct Deployment {
    pre: ProxyPre<InvocationState>,
    limits: FunctionLimits,
    env: Arc<[(String, String)]>,
    log_bytes_max: usize,
    host: HostLimits,
    inline_teardown_memory_bytes_max: usize,
    reuse: Option<ReuseConfig>,
    idle: Arc<IdlePool>,
    outbound: OutboundPolicy,
    instances_live: Arc<AtomicUsize>,
}

impl Deployment {
    /// A deployment of a prepared component on `runtime`.
    pub fn new(runtime: &Runtime, prepared: &Prepared, settings: DeploymentSettings) -> Deployment {
        Deployment {
            pre: prepared.pre.clone(),
            limits: settings.limits,
            env: settings.env.into(),
            log_bytes_max: runtime.config().log_bytes_per_invocation_max,
            host: runtime.config().host,
            inline_teardown_memory_bytes_max: prepared.inline_teardown_memory_bytes_max,
            reuse: settings.reuse,
            idle: Arc::new(IdlePool::new(runtime.idle_budget())),
            outbound: OutboundPolicy::new(
                settings.outbound,
                runtime.outbound_client(),
                settings.platform,
            ),
            instances_live: settings.instances_live,
        }
    }

    /// The limits every invocation of this deployment runs under.
    pub fn limits(&self) -> FunctionLimits {
        self.limits
    }

    /// Warm-instance reuse, when the function opted in.
    pub fn reuse(&self) -> Option<ReuseConfig> {
        self.reuse
    }

    /// Drop the warm instances idle for longer than the idle timeout (scale to zero).
    /// Returns how many were dropped.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let Some(reuse) = self.reuse else {
            return 0;
        };
        let Some(cutoff) = now.checked_sub(reuse.idle_timeout) else {
            return 0;
        };
        let expired = self.idle.expired(cutoff);
        let count = expired.len();
        for instance in expired {
            discard(instance, self.inline_teardown_memory_bytes_max);
        }
        count
    }

    /// Drop every warm instance (the version stopped serving).
    pub fn drop_idle(&self) {
        for instance in self.idle.drain() {
            discard(instance, self.inline_teardown_memory_bytes_max);
        }
    }

    /// A warm instance if there is one, otherwise a new store to instantiate into.
    fn instance(&self) -> Instance {
        if let Some(instance) = self.idle.take() {
            return instance;
        }
        let log = LogPipe::new(self.log_bytes_max);
        let mut store = Store::new(
            self.pre.engine(),
            InvocationState::new(
                &self.env,
                log,
                self.limits.memory_bytes_max,
                self.host,
                self.outbound.clone(),
            ),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(CPU_SLICE_TICKS))
            }
        });
        Instance {
            store,
            proxy: None,
            served: 0,
            _live: LiveGuard::new(&self.instances_live),
        }
    }

    /// Run the guest for one request.
    ///
    /// Returns as soon as the guest has set its response (the body streams after) or has
    /// failed. `hold` is dropped when the guest's work has ended (an admission permit, say).
    /// `report` is called exactly once, when the guest's work has ended and the response
    /// body has been sent, inside the caller's tracing span.
    pub async fn invoke<B>(
        &self,
        request: http::Request<B>,
        hold: impl Send + 'static,
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
        let completion = Arc::new(Completion {
            pending: Mutex::new(None),
            response_bytes: AtomicU64::new(0),
            span: tracing::Span::current(),
        });

        let request = request.map({
            let flag = shared.request_flag.clone();
            let seen = shared.request_bytes.clone();
            let bytes_max = self.limits.request_body_bytes_max;
            move |body| LimitedRequestBody::new(body, bytes_max, flag, seen)
        });
        let Instance {
            mut store,
            proxy,
            served,
            _live,
        } = self.instance();
        store.data_mut().begin(deadline);
        store.set_epoch_deadline(CPU_SLICE_TICKS);

        let (delivery_tx, mut delivery_rx) = oneshot::channel();
        // With reuse, the response body's end waits for the instance to be settled.
        let (settled_tx, settled_rx) = match self.reuse {
            Some(_) => {
                let (tx, rx) = oneshot::channel::<()>();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let on_response = {
            let shared = shared.clone();
            let limits = self.limits;
            let completion = completion.clone();
            move |response| {
                if let Some(delivery) = shared.decide(response, limits, completion, settled_rx) {
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
        let report_to = report;
        let (req, out) = match resources {
            Ok(pair) => pair,
            Err(e) => {
                let failure = Failure {
                    outcome: Outcome::Trap,
                    message: "the request could not be passed to the function".into(),
                };
                return refuse(report_to, started, failure, Some(format!("{e:#}")));
            }
        };

        let (done_tx, done_rx) = oneshot::channel::<Failure>();
        let pre = self.pre.clone();
        let inline_teardown_memory_bytes_max = self.inline_teardown_memory_bytes_max;
        let reuse = self.reuse;
        let idle = self.idle.clone();
        let task_shared = shared.clone();
        let guest = async move {
            let mut proxy = proxy;
            let mut cpu = Duration::ZERO;
            let mut instantiate = None;
            let result = tokio::time::timeout_at(deadline.into(), async {
                let handler = match proxy.take() {
                    Some(warm) => warm,
                    None => {
                        let start = Instant::now();
                        let fresh = pre.instantiate_async(&mut store).await?;
                        instantiate = Some(start.elapsed());
                        fresh
                    }
                };
                let call = handler
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out);
                metered(call, &mut cpu).await?;
                proxy = Some(handler);
                Ok(())
            })
            .await;
            drop(hold);
            let memory_denied = store.data().limiter.denied;
            let (outcome, detail) = task_shared.classify(result, memory_denied);
            if outcome != Outcome::Ok {
                // A body the guest left unfinished must reach the client as an error,
                // not as a clean end of a shorter body.
                task_shared.aborted.set();
            }
            let memory_bytes_peak = store.data().limiter.memory_bytes_peak as u64;
            let log = store.data().log.take();
            let mut instance = Instance {
                store,
                // Only an instance whose call returned cleanly is kept: one that trapped,
                // timed out or hit a limit is discarded, never reused.
                proxy: if outcome == Outcome::Ok { proxy } else { None },
                served: served + 1,
                _live,
            };
            // What the guest left open decides whether the instance may serve again.
            let leftovers = settle_leftovers(&mut instance.store.data_mut().table);
            if leftovers == Leftovers::Unfinished {
                // It returned without finishing its response body: however the body ends
                // when the instance goes, the caller must see it as incomplete.
                task_shared.aborted.set();
            }
            let keep = matches!(leftovers, Leftovers::Inert(n) if n <= REUSE_LEFTOVER_RESOURCES_MAX)
                && instance.proxy.is_some()
                && reuse.is_some_and(|reuse| instance.served < reuse.max_requests);
            let unkept = if keep {
                idle.put(instance).err()
            } else {
                Some(instance)
            };
            if let Some(instance) = unkept {
                // Dropping the store releases the instance slot, ends the response body
                // and, if the guest never responded, drops the response sender (waking
                // `invoke`).
                discard(instance, inline_teardown_memory_bytes_max);
            }
            drop(settled_tx);
            let _ = done_tx.send(Failure {
                outcome,
                message: failure_message(outcome, &detail),
            });
            let report = InvocationReport {
                outcome,
                answer: task_shared.answer(outcome),
                log,
                duration: started.elapsed(),
                cpu,
                instantiate,
                memory_bytes_peak,
                request_bytes: task_shared.request_bytes.load(Ordering::Relaxed),
                response_bytes: 0,
                detail: (outcome != Outcome::Ok).then_some(detail),
            };
            *completion.pending.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((report, Box::new(report_to)));
        };
        // Run the guest on this task until it first waits: a guest that answers without
        // waiting (most do) has finished, instance settled, before hyper polls its response,
        // so hyper sends head and whole body in one write, and no task or cross-thread wake
        // is spent on it. A guest that waits (I/O, a timer, its CPU slice) goes on as a task
        // of its own, so its response can stream while it runs.
        let mut guest = Box::pin(guest.in_current_span());
        let waiting =
            std::future::poll_fn(|cx| Poll::Ready(guest.as_mut().poll(cx).is_pending())).await;
        if waiting {
            tokio::spawn(guest);
        }

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
    /// Request body bytes the guest has read.
    request_bytes: Arc<AtomicU64>,
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
        completion: Arc<Completion>,
        settled: Option<oneshot::Receiver<()>>,
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
            ResponseBody::guest(body, bytes_max, response_flag, aborted, completion, settled)
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
            } else if matches!(
                error.downcast_ref::<ResourceTableError>(),
                Some(ResourceTableError::Full)
            ) {
                Outcome::ResourceLimit
            } else if matches!(
                error.downcast_ref::<FieldMapError>(),
                Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
            ) {
                Outcome::FieldsLimit
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

/// What a guest left in its resource table when its `handle` call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftovers {
    /// Only inert resources (request handles whose bodies the host has dropped, fields,
    /// streams and pollables of the guest's own): this many.
    Inert(usize),
    /// The response body was never finished: the caller would wait on it.
    Unfinished,
    /// Request-scoped I/O still open (an outgoing request in flight, a response body
    /// being read, an unset response): dropping the instance ends it.
    Pending,
}

/// Classify what the guest left open, dropping the bodies of request handles it kept (an
/// unread request body would hold up the caller's connection).
///
/// Interpreters keep handles until their garbage collector runs: StarlingMonkey (the
/// JavaScript engine) keeps every `incoming-request` its handler does not dispose of, so
/// such instances are replaced after `REUSE_LEFTOVER_RESOURCES_MAX` of them.
fn settle_leftovers(table: &mut ResourceTable) -> Leftovers {
    use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
    use wasmtime_wasi_http::p2::types::{
        HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
        HostOutgoingResponse, HostResponseOutparam,
    };
    if table.is_empty() {
        return Leftovers::Inert(0);
    }
    let mut count = 0;
    let mut pending = false;
    // An unfinished outgoing body is the delivered response's unless it belongs to a request
    // or response the guest built and never sent (those hold their body's other end).
    let (mut bodies, mut unsent_bodies) = (0usize, 0usize);
    for entry in table.iter_mut() {
        let entry: &mut dyn std::any::Any = entry;
        count += 1;
        if entry.is::<HostOutgoingBody>() {
            bodies += 1;
        } else if let Some(request) = entry.downcast_ref::<HostOutgoingRequest>() {
            unsent_bodies += usize::from(request.body.is_some());
        } else if let Some(response) = entry.downcast_ref::<HostOutgoingResponse>() {
            unsent_bodies += usize::from(response.body.is_some());
        } else if entry.is::<HostResponseOutparam>()
            || entry.is::<HostFutureIncomingResponse>()
            || entry.is::<HostIncomingResponse>()
            || entry.is::<HostIncomingBody>()
            || entry.is::<HostFutureTrailers>()
        {
            pending = true;
        } else if let Some(request) = entry.downcast_mut::<HostIncomingRequest>() {
            request.body = None;
        }
    }
    if bodies > unsent_bodies {
        Leftovers::Unfinished
    } else if pending || bodies > 0 {
        Leftovers::Pending
    } else {
        Leftovers::Inert(count)
    }
}

/// Drop an instance that will not be reused (after a request, or evicted when idle). A
/// small memory resets in microseconds: right here. Resetting a large one (an
/// interpreter's, with memory kept resident) takes hundreds of microseconds to
/// milliseconds, and a response must not wait for it: it goes to a task of its own, which
/// Tokio normally runs next on this same worker (its LIFO slot) once the current task
/// yields, so after the caller's response has been written. The memory is reset on the
/// core whose caches hold it; on the blocking pool the same reset cost the JS hello twice
/// the CPU per request (bench/RESULTS.md, 2026-11-27 10:21).
fn discard(instance: Instance, inline_teardown_memory_bytes_max: usize) {
    if instance.store.data().limiter.memory_bytes_peak <= inline_teardown_memory_bytes_max {
        drop(instance);
    } else {
        tokio::spawn(async move { drop(instance) });
    }
}

/// Answer for a failure before any guest code ran, reporting it as such.
fn refuse(
    report: impl FnOnce(InvocationReport),
    started: Instant,
    failure: Failure,
    detail: Option<String>,
) -> Result<http::Response<ResponseBody>, Failure> {
    report(InvocationReport::refused(
        failure.outcome,
        started.elapsed(),
        detail,
    ));
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
        Outcome::ResourceLimit => "the function held more host resources (headers, requests, bodies, streams) at once than resources_per_instance_max".into(),
        Outcome::FieldsLimit => {
            "the function built a header map (fields) larger than fields_bytes_max".into()
        }
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
    /// Captured output of the current invocation.
    log: LogPipe,
    /// When the current invocation must stop.
    deadline: Instant,
}

impl InvocationState {
    fn new(
        env: &[(String, String)],
        log: LogPipe,
        memory_bytes_max: u64,
        host: HostLimits,
        outbound: OutboundPolicy,
    ) -> InvocationState {
        // No preopened directories and the default socket policy (deny every address,
        // no name lookups): the guest has no filesystem and no sockets. Outgoing HTTP goes
        // through the function's allowlist.
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .envs(env)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(host.fields_bytes_max);
        let mut table = ResourceTable::new();
        table.set_max_capacity(host.resources_per_instance_max);
        InvocationState {
            wasi,
            http,
            table,
            hooks: EddyHooks {
                log: log.clone(),
                outbound,
                outbound_slots: crate::outbound::invocation_slots(),
                outgoing_body_chunk_bytes: host.outgoing_body_chunk_bytes,
            },
            limiter: MemoryLimiter {
                memory_bytes_max: usize::try_from(memory_bytes_max).unwrap_or(usize::MAX),
                memory_bytes_total: 0,
                memory_bytes_peak: 0,
                denied: false,
            },
            log,
            deadline: Instant::now(),
        }
    }

    /// Start an invocation on this (new or warm) instance.
    fn begin(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.limiter.denied = false;
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

/// `wasi:http` policy: outgoing requests go through the function's allowlist.
struct EddyHooks {
    log: LogPipe,
    outbound: OutboundPolicy,
    /// Outgoing requests this instance has in flight.
    outbound_slots: Arc<tokio::sync::Semaphore>,
    /// Largest write to an outgoing body; with the buffered chunks, what one body can hold.
    outgoing_body_chunk_bytes: usize,
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
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.outgoing_body_chunk_bytes
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let send = self
            .outbound
            .send(request, options, &self.log, &self.outbound_slots);
        Box::new(async move {
            let response = send.await?;
            // The pooled client drives the connection itself: nothing more to await.
            let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Enforces the function's memory limit on all of an instance's linear memories together
/// (a component of several core modules has several), and remembers whether the guest hit it.
struct MemoryLimiter {
    memory_bytes_max: usize,
    /// Bytes of all the instance's linear memories now.
    memory_bytes_total: usize,
    /// The most `memory_bytes_total` has been.
    memory_bytes_peak: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    /// Called for each memory as it is created (from 0) and each time it grows.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        debug_assert!(current <= self.memory_bytes_total);
        let total = self.memory_bytes_total - current.min(self.memory_bytes_total) + desired;
        if total > self.memory_bytes_max {
            self.denied = true;
            return Ok(false);
        }
        self.memory_bytes_total = total;
        self.memory_bytes_peak = self.memory_bytes_peak.max(total);
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
