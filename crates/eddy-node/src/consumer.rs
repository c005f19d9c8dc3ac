//! Queue consumers: one dispatcher per queue with a bound function. It claims messages,
//! delivers them as CloudEvents over the function's ordinary HTTP handler, and settles
//! each delivery: acknowledged, retried after a backoff with full jitter, or moved to the
//! dead-letter queue after `max_attempts`.
//!
//! Nothing here can turn into a retry storm:
//! - every delivery is a *background* invocation: admission control caps the node's
//!   background work (`background_concurrency_max`) and admits waiting interactive
//!   requests first;
//! - each consumer has its own bounded concurrency, and it adapts (AIMD): a failed delivery
//!   halves it (once per round of deliveries), a success adds `1/limit`, up to
//!   `max_concurrency`;
//! - after `consumer_breaker_failures` failures in a row the consumer's circuit breaker opens:
//!   nothing is delivered until a single probe, spaced `backoff_base * 2^k` (at most
//!   `backoff_max`) after each failed one;
//! - a message is attempted at most `max_attempts` times, counted when it is claimed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use eddy_runtime::{Answer, InvocationReport, Outcome};
use eddy_store::{Claimed, ConsumerSettings, Settle};
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use rand::Rng;
use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::admission::Class;
use crate::ingress::{Record, failure_status};
use crate::invocations::InvocationSink;
use crate::queues::QueueHub;
use crate::registry::{Registry, now_ms};
use crate::routes::LiveFunction;

/// CloudEvents `type` of a queue message delivery.
pub const QUEUE_EVENT_TYPE: &str = "dev.eddy.queue.message";
/// The header naming the queue a delivery comes from; only the node sets it (see
/// `ingress::NODE_HEADER_PREFIX`), so it tells a delivery from a public request.
pub const HEADER_QUEUE: &str = "eddy-queue";
/// Content type of a delivery of more than one message.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// How often a consumer whose function is not deployed looks again.
const FUNCTION_ABSENT_POLL: Duration = Duration::from_secs(1);
/// How often a consumer whose function's budget paused background work looks again.
const BUDGET_PAUSED_POLL: Duration = Duration::from_secs(1);
/// Pause after admission control turned a delivery away (the node is busy).
const ADMISSION_RETRY: Duration = Duration::from_millis(100);
/// Longest a consumer with an empty queue sleeps without looking (publishes wake it at
/// once; this only bounds how late a retry whose backoff ended is picked up).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after the queue store failed a claim.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The node's running consumers.
pub struct Consumers {
    hub: Arc<QueueHub>,
    registry: Arc<Registry>,
    sink: InvocationSink,
    running: Mutex<Dispatchers>,
}

struct Running {
    control: Arc<Control>,
    cancel: CancellationToken,
}

/// The running dispatchers by queue. Once stopped (the node is shutting down) it takes no
/// new one: a binding set during shutdown starts nothing.
#[derive(Default)]
struct Dispatchers {
    by_queue: HashMap<String, Running>,
    stopped: bool,
}

impl Dispatchers {
    /// Cancel `queue`'s dispatcher, if any; whether a new one may start.
    fn replace(&mut self, queue: &str) -> bool {
        if let Some(old) = self.by_queue.remove(queue) {
            old.cancel.cancel();
        }
        !self.stopped
    }

    /// Cancel every dispatcher, and refuse new ones from now on.
    fn stop_all(&mut self) {
        self.stopped = true;
        for (_, r) in self.by_queue.drain() {
            r.cancel.cancel();
        }
    }
}

/// A consumer's state as stats show it.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerStatus {
    /// Deliveries allowed at once now (adaptive, at most `max_concurrency`).
    pub concurrency: u32,
    /// Deliveries running now.
    pub in_flight: usize,
    pub breaker: &'static str,
}

impl Consumers {
    pub fn new(hub: Arc<QueueHub>, registry: Arc<Registry>, sink: InvocationSink) -> Arc<Self> {
        Arc::new(Consumers {
            hub,
            registry,
            sink,
            running: Mutex::new(Dispatchers::default()),
        })
    }

    /// Start a dispatcher for every queue with a consumer.
    pub async fn start_all(self: &Arc<Self>) -> anyhow::Result<()> {
        for queue in self.hub.store.list_queues().await? {
            if let Some(consumer) = queue.consumer {
                self.apply(&queue.name, Some(consumer));
            }
        }
        Ok(())
    }

    /// Stop `queue`'s dispatcher, if any, and start one for `consumer`. Deliveries running
    /// under the old settings finish.
    pub fn apply(self: &Arc<Self>, queue: &str, consumer: Option<ConsumerSettings>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let may_start = running.replace(queue);
        let Some(settings) = consumer.filter(|_| may_start) else {
            return;
        };
        let control = Arc::new(Control::new(&settings));
        let cancel = CancellationToken::new();
        let dispatcher = Arc::new(Dispatcher {
            queue: queue.to_string(),
            settings,
            breaker_failures: self.hub.limits.consumer_breaker_failures,
            records_per_second_max: self.hub.limits.invocation_records_per_second_max,
            hub: self.hub.clone(),
            registry: self.registry.clone(),
            sink: self.sink.clone(),
            control: control.clone(),
            cancel: cancel.clone(),
        });
        tokio::spawn(dispatcher.run());
        running
            .by_queue
            .insert(queue.to_string(), Running { control, cancel });
    }

    /// Stop every dispatcher (shutdown); running deliveries finish.
    pub fn stop_all(&self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_all();
    }

    /// The live state of `queue`'s consumer.
    pub fn status(&self, queue: &str) -> Option<ConsumerStatus> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.by_queue.get(queue).map(|r| r.control.status())
    }
}

/// Adaptive concurrency and the circuit breaker of one consumer.
struct Control {
    state: Mutex<ControlState>,
    /// A delivery or claim ended: the dispatcher may go on.
    changed: Notify,
}

struct ControlState {
    /// AIMD limit on deliveries at once, in `[1, max]`.
    limit: f64,
    max: f64,
    /// Bumped at every decrease: a failure of a delivery started before the last decrease
    /// does not decrease again (one halving per round).
    epoch: u64,
    /// Claims and deliveries running.
    in_flight: usize,
    /// Claims running; while the queue looks drained only one runs at a time.
    claiming: usize,
    /// The last claim filled a whole batch: there is likely more.
    busy: bool,
    /// A claim found nothing: wait for a publish or this time (unix ms) before claiming.
    /// With the queue's wake-up count when that claim began: a wake-up since then means
    /// messages may have come after it looked, and the dispatcher claims again at once.
    drained: Option<(Option<i64>, u64)>,
    failures_in_row: u32,
    breaker: Breaker,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Breaker {
    Closed,
    /// Nothing is delivered until `until`; it has opened `trips` times in a row.
    Open {
        until: Instant,
        trips: u32,
    },
    /// One probe delivery is allowed.
    HalfOpen {
        trips: u32,
    },
}

enum Gate {
    Go { epoch: u64 },
    Full,
    Until(Instant),
    Drained { next: Option<i64>, seq: u64 },
}

impl Control {
    fn new(settings: &ConsumerSettings) -> Control {
        let max = f64::from(settings.max_concurrency.max(1));
        Control {
            state: Mutex::new(ControlState {
                limit: max,
                max,
                epoch: 0,
                in_flight: 0,
                claiming: 0,
                busy: true,
                drained: None,
                failures_in_row: 0,
                breaker: Breaker::Closed,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May one more claim-and-deliver start now?
    fn admit(&self, now: Instant) -> Gate {
        let mut s = self.lock();
        if let Some((next, seq)) = s.drained.take() {
            return Gate::Drained { next, seq };
        }
        let allowed = match s.breaker {
            Breaker::Open { until, .. } if now < until => return Gate::Until(until),
            Breaker::Open { trips, .. } => {
                s.breaker = Breaker::HalfOpen { trips };
                1
            }
            Breaker::HalfOpen { .. } => 1,
            Breaker::Closed => s.limit.floor() as usize,
        };
        if s.in_flight >= allowed || (!s.busy && s.claiming > 0) {
            return Gate::Full;
        }
        s.in_flight += 1;
        s.claiming += 1;
        Gate::Go { epoch: s.epoch }
    }

    /// A claim that began at wake-up count `seq` came back with `claimed` of `asked`
    /// messages (`next`: when the next message is due). With none, the slot is given back
    /// and the queue counts as drained as of `seq`.
    fn claimed(&self, claimed: usize, asked: usize, next: Option<i64>, seq: u64) {
        let mut s = self.lock();
        s.claiming -= 1;
        s.busy = claimed >= asked;
        if claimed == 0 {
            s.in_flight -= 1;
            s.drained = Some((next, seq));
        }
        drop(s);
        self.changed.notify_one();
    }

    /// Give a slot back without a delivery (admission refused it, the function is absent).
    fn release(&self, claiming: bool) {
        let mut s = self.lock();
        s.in_flight -= 1;
        if claiming {
            s.claiming -= 1;
        }
        drop(s);
        self.changed.notify_one();
    }

    /// A delivery started in `epoch` ended.
    fn finished(
        &self,
        success: bool,
        epoch: u64,
        breaker_failures: u32,
        spacing: impl Fn(u32) -> Duration,
    ) {
        let mut s = self.lock();
        s.in_flight -= 1;
        if success {
            s.failures_in_row = 0;
            s.limit = (s.limit + 1.0 / s.limit).min(s.max);
            if matches!(s.breaker, Breaker::HalfOpen { .. }) {
                s.breaker = Breaker::Closed;
            }
        } else {
            s.failures_in_row += 1;
            if epoch == s.epoch {
                s.limit = (s.limit / 2.0).max(1.0);
                s.epoch += 1;
            }
            let now = Instant::now();
            s.breaker = match s.breaker {
                Breaker::HalfOpen { trips } | Breaker::Open { trips, .. } => Breaker::Open {
                    until: now + spacing(trips + 1),
                    trips: trips + 1,
                },
                Breaker::Closed if s.failures_in_row >= breaker_failures => Breaker::Open {
                    until: now + spacing(1),
                    trips: 1,
                },
                closed => closed,
            };
        }
        drop(s);
        self.changed.notify_one();
    }

    fn status(&self) -> ConsumerStatus {
        let s = self.lock();
        ConsumerStatus {
            concurrency: match s.breaker {
                Breaker::Closed => s.limit.floor() as u32,
                Breaker::HalfOpen { .. } => 1,
                Breaker::Open { .. } => 0,
            },
            in_flight: s.in_flight,
            breaker: match s.breaker {
                Breaker::Closed => "closed",
                Breaker::Open { .. } => "open",
                Breaker::HalfOpen { .. } => "half_open",
            },
        }
    }
}

struct Dispatcher {
    queue: String,
    settings: ConsumerSettings,
    breaker_failures: u32,
    records_per_second_max: u32,
    hub: Arc<QueueHub>,
    registry: Arc<Registry>,
    sink: InvocationSink,
    control: Arc<Control>,
    cancel: CancellationToken,
}

impl Dispatcher {
    async fn run(self: Arc<Self>) {
        let waker = self.hub.waker(&self.queue);
        loop {
            let wait = match self.control.admit(Instant::now()) {
                Gate::Go { epoch } => {
                    tokio::spawn(self.clone().claim_and_deliver(epoch));
                    continue;
                }
                Gate::Full => None,
                Gate::Until(until) => Some(until.saturating_duration_since(Instant::now())),
                Gate::Drained { next, seq } => {
                    if waker.seq() != seq {
                        // Woken since that claim looked: its "nothing" may be stale (and
                        // the wake-up may have been spent on an earlier wait).
                        continue;
                    }
                    let due = next.map_or(IDLE_POLL, |ms| {
                        Duration::from_millis(ms.saturating_sub(now_ms()).max(0) as u64)
                    });
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = waker.notified() => {}
                        _ = tokio::time::sleep(due.min(IDLE_POLL)) => {}
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.control.changed.notified() => {}
                _ = tokio::time::sleep(wait.unwrap_or(IDLE_POLL)) => {}
            }
        }
    }

    /// Backoff spacing for attempt or breaker trip `n` (from 1), without jitter.
    fn spacing(&self, n: u32) -> Duration {
        let factor = 1u64
            .checked_shl(n.saturating_sub(1).min(62))
            .unwrap_or(u64::MAX);
        Duration::from_millis(
            self.settings
                .backoff_base_ms
                .saturating_mul(factor)
                .min(self.settings.backoff_max_ms),
        )
    }

    async fn claim_and_deliver(self: Arc<Self>, epoch: u64) {
        let function = self.settings.function.as_str();
        let Some(live) = self.registry.routes().function(function).cloned() else {
            self.control.release(true);
            self.pause(FUNCTION_ABSENT_POLL).await;
            return;
        };
        if self
            .registry
            .budgets()
            .background_paused(function)
            .is_some()
        {
            // The messages wait in the queue; no attempt is spent.
            self.pause(BUDGET_PAUSED_POLL).await;
            self.control.release(true);
            return;
        }
        let admitted = tokio::select! {
            _ = self.cancel.cancelled() => None,
            admitted = self.registry.admission().admit(function, Class::Background) => Some(admitted),
        };
        let permit = match admitted {
            Some(Ok(permit)) => permit,
            Some(Err(_)) => {
                // The node (or the function) is busy: no attempt is spent.
                self.pause(ADMISSION_RETRY).await;
                self.control.release(true);
                return;
            }
            None => {
                self.control.release(true);
                return;
            }
        };
        let asked = self.settings.batch_size.max(1);
        let seq = self.hub.waker(&self.queue).seq();
        let lease_until_ms = now_ms() + self.settings.visibility_timeout_ms as i64;
        let (claimed, next) = match self
            .hub
            .store
            .claim(&self.queue, asked, lease_until_ms)
            .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(queue = %self.queue, error = %e, "claiming messages failed");
                drop(permit);
                self.pause(STORE_RETRY).await;
                self.control.release(true);
                return;
            }
        };
        self.control
            .claimed(claimed.len(), asked as usize, next, seq);
        if claimed.is_empty() {
            return;
        }
        // A batch too large for one request goes as several, each under its own permit, all
        // within the lease.
        let deadline = Instant::now() + Duration::from_millis(self.settings.visibility_timeout_ms);
        let groups = match self.deliveries(&live, &claimed) {
            Ok(groups) => groups,
            Err(e) => vec![(claimed.as_slice(), Err(e))],
        };
        let mut permit = Some(permit);
        let mut success = true;
        for (group, request) in groups {
            let permit = match permit.take() {
                Some(permit) => Ok(permit),
                None => self
                    .registry
                    .admission()
                    .admit(function, Class::Background)
                    .await
                    .map_err(|_| "the node was busy for the rest of a split batch".to_string()),
            };
            let delivery = async { self.deliver(live.clone(), request?, permit?).await };
            let outcome = tokio::time::timeout_at(deadline.into(), delivery)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within the visibility timeout ({} ms)",
                        self.settings.visibility_timeout_ms
                    ))
                });
            success &= outcome.is_ok();
            self.settle(group, outcome, lease_until_ms).await;
        }
        self.control
            .finished(success, epoch, self.breaker_failures, |n| self.spacing(n));
    }

    async fn pause(&self, how_long: Duration) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(how_long) => {}
        }
    }

    /// One delivery: a POST to the function. `Ok` when it answered 2xx.
    async fn deliver(
        &self,
        live: Arc<LiveFunction>,
        request: Request<Full<Bytes>>,
        permit: crate::admission::Permit,
    ) -> Result<(), String> {
        invoke_background(
            &self.registry,
            &self.sink,
            self.records_per_second_max,
            live,
            request,
            permit,
        )
        .await
    }

    /// The requests that deliver `claimed`: one binary-mode CloudEvent for a batch size of 1;
    /// otherwise JSON arrays of structured events, as many as it takes for each to fit in
    /// `request_body_bytes_max` (a batch must never be refused for its size). Each with the
    /// messages it carries.
    fn deliveries<'a>(
        &self,
        live: &LiveFunction,
        claimed: &'a [Claimed],
    ) -> Result<Vec<(&'a [Claimed], Result<Request<Full<Bytes>>, String>)>, String> {
        let path = self
            .settings
            .path
            .clone()
            .unwrap_or_else(|| live.route.clone());
        let source = format!("/queues/{}", self.queue);
        let builder = || {
            Request::builder()
                .method(http::Method::POST)
                .uri(path.as_str())
                .header(header::HOST, "localhost")
                .header(HEADER_QUEUE, header_value(&self.queue))
        };
        let built = |request: Result<Request<Full<Bytes>>, http::Error>| {
            request.map_err(|e| format!("the delivery request could not be built: {e}"))
        };
        if self.settings.batch_size <= 1 {
            let m = &claimed[0];
            let request = builder()
                .header(header::CONTENT_TYPE, header_value(&m.content_type))
                .header("ce-specversion", "1.0")
                .header("ce-id", header_value(&m.id))
                .header("ce-type", QUEUE_EVENT_TYPE)
                .header("ce-source", header_value(&source))
                .header("ce-time", rfc3339(m.enqueued_at_ms))
                .header("ce-eddyattempt", m.attempt.to_string())
                .header("ce-eddyfirstenqueued", rfc3339(m.first_enqueued_at_ms))
                .body(Full::new(Bytes::from(m.body.clone())));
            return Ok(vec![(&claimed[..1], built(request))]);
        }
        let events = claimed
            .iter()
            .map(|m| serde_json::to_vec(&structured_event(m, &source)).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes_max = self.hub.limits.request_body_bytes_max as usize;
        let mut deliveries = Vec::new();
        let mut start = 0;
        while start < events.len() {
            // `[` + events joined by `,` + `]`; one event always goes, even if too large.
            let mut end = start + 1;
            let mut size = 2 + events[start].len();
            while end < events.len() && size + 1 + events[end].len() <= bytes_max {
                size += 1 + events[end].len();
                end += 1;
            }
            let mut body = Vec::with_capacity(size);
            body.push(b'[');
            for (i, event) in events[start..end].iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(event);
            }
            body.push(b']');
            debug_assert_eq!(body.len(), size);
            let request = builder()
                .header(header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)));
            deliveries.push((&claimed[start..end], built(request)));
            start = end;
        }
        Ok(deliveries)
    }

    /// Acknowledge, retry or dead-letter each message of a finished delivery.
    async fn settle(&self, claimed: &[Claimed], outcome: Result<(), String>, lease_until_ms: i64) {
        let settlements = claimed
            .iter()
            .map(|m| match &outcome {
                Ok(()) => Settle::Ack {
                    row: m.row,
                    lease_until_ms,
                },
                Err(error) if m.attempt >= self.settings.max_attempts => Settle::DeadLetter {
                    row: m.row,
                    lease_until_ms,
                    to: self.settings.dead_letter.clone(),
                    error: format!(
                        "attempt {} of {}: {error}",
                        m.attempt, self.settings.max_attempts
                    ),
                },
                Err(error) => {
                    // Full jitter: anywhere between now and the exponential backoff.
                    let cap = self.spacing(m.attempt).as_millis() as u64;
                    let delay = rand::rng().random_range(0..=cap);
                    Settle::Retry {
                        row: m.row,
                        lease_until_ms,
                        visible_at_ms: now_ms() + delay as i64,
                        error: format!("attempt {}: {error}", m.attempt),
                    }
                }
            })
            .collect();
        if let Err(e) = self.hub.store.settle(&self.queue, settlements).await {
            // The messages stay leased: they are delivered again once their visibility
            // timeout has passed (or after a restart).
            tracing::error!(queue = %self.queue, error = %e, "settling a delivery failed");
        }
        if outcome.is_ok() {
            return;
        }
        // A retry may be due before the consumer would look again.
        self.hub.waker(&self.queue).wake();
    }
}

/// Run one background invocation (a queue delivery, a cron tick) under `permit`, recorded
/// and metered like any other. `Ok` when the function answered 2xx.
pub(crate) async fn invoke_background(
    registry: &Registry,
    sink: &InvocationSink,
    records_per_second_max: u32,
    live: Arc<LiveFunction>,
    request: Request<Full<Bytes>>,
    permit: crate::admission::Permit,
) -> Result<(), String> {
    // Only the status matters: the body is read and dropped as it comes, never held.
    let answer = invoke_collected(
        registry,
        sink,
        records_per_second_max,
        live,
        request,
        permit,
        Keep::Status,
    )
    .await?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(format!("the function answered {}", answer.status.as_u16()))
    }
}

/// What a function answered, its body read whole within a bound.
pub(crate) struct Collected {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The body was longer than `Keep::Body`'s bound: `body` is empty, not a part of it.
    pub over_limit: bool,
}

/// What of a node-initiated invocation's answer the node keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keep {
    /// The status and headers; the body is read to its end and dropped as it arrives.
    Status,
    /// The body too, up to this many bytes.
    Body(usize),
}

/// Run one invocation the node makes itself (a queue delivery, a cron tick, a WebSocket
/// event) under `permit`, recorded and metered like any other, and read its answer as `keep`
/// says: never more than that is held. `Err` when the function failed (trapped, timed out,
/// hit a limit).
pub(crate) async fn invoke_collected(
    registry: &Registry,
    sink: &InvocationSink,
    records_per_second_max: u32,
    live: Arc<LiveFunction>,
    request: Request<Full<Bytes>>,
    permit: crate::admission::Permit,
    keep: Keep,
) -> Result<Collected, String> {
    let record = Record {
        live: live.clone(),
        records_per_second_max,
        sink: sink.clone(),
        meter: registry.meter().clone(),
        at_ms: now_ms(),
        method: request.method().clone(),
        path: request.uri().path_and_query().cloned(),
    };
    let (tx, rx) = oneshot::channel::<(Outcome, Option<String>)>();
    let report = move |report: InvocationReport| {
        let status = match report.answer {
            Answer::Guest(status) => status,
            Answer::Node(outcome) => failure_status(outcome).as_u16(),
        };
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
    let (outcome, detail) = rx
        .await
        .map_err(|_| "the invocation ended without a report".to_string())?;
    match (outcome, answer) {
        (Outcome::Ok, Some(answer)) => Ok(answer),
        // The node stopped reading past its bound, which may have failed the guest's
        // writes: the bound is the reason, and the caller's to report.
        (_, Some(answer)) if answer.over_limit => Ok(answer),
        (Outcome::Ok, None) => Err("the function gave no response".into()),
        (other, _) => Err(match detail {
            Some(detail) => format!("{}: {detail}", other.as_str()),
            None => other.as_str().to_string(),
        }),
    }
}

/// One message as a structured CloudEvent, for a batch.
fn structured_event(m: &Claimed, source: &str) -> serde_json::Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": m.id,
        "type": QUEUE_EVENT_TYPE,
        "source": source,
        "time": rfc3339(m.enqueued_at_ms),
        "datacontenttype": m.content_type,
        "eddyattempt": m.attempt,
        "eddyfirstenqueued": rfc3339(m.first_enqueued_at_ms),
    });
    match std::str::from_utf8(&m.body) {
        Ok(text) if m.content_type.contains("json") => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(data) => event["data"] = data,
                Err(_) => event["data"] = json!(text),
            }
        }
        Ok(text) => event["data"] = json!(text),
        Err(_) => {
            event["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.body))
        }
    }
    event
}

pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> (Running, CancellationToken) {
        let cancel = CancellationToken::new();
        let settings = ConsumerSettings {
            function: "f".into(),
            batch_size: 1,
            max_concurrency: 1,
            visibility_timeout_ms: 1000,
            max_attempts: 1,
            backoff_base_ms: 1,
            backoff_max_ms: 1,
            dead_letter: "q-dlq".into(),
            path: None,
        };
        let control = Arc::new(Control::new(&settings));
        (
            Running {
                control,
                cancel: cancel.clone(),
            },
            cancel,
        )
    }

    #[test]
    fn a_binding_set_during_shutdown_starts_nothing() {
        let mut dispatchers = Dispatchers::default();
        let (old, old_cancel) = running();
        assert!(dispatchers.replace("q"));
        dispatchers.by_queue.insert("q".into(), old);
        // Rebinding cancels the old dispatcher and may start a new one.
        let (newer, newer_cancel) = running();
        assert!(dispatchers.replace("q"));
        assert!(old_cancel.is_cancelled());
        dispatchers.by_queue.insert("q".into(), newer);
        // Shutdown stops it; a binding that comes after starts nothing.
        dispatchers.stop_all();
        assert!(newer_cancel.is_cancelled());
        assert!(!dispatchers.replace("q"));
        assert!(!dispatchers.replace("other"));
        assert!(dispatchers.by_queue.is_empty());
    }
}
