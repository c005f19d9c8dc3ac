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
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use eddy_store::{Claimed, ConsumerSettings, Settle};
use http::{Request, header};
use http_body_util::Full;
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{BATCH_CONTENT_TYPE, CloudEvent, QUEUE_EVENT_TYPE, header_value, rfc3339};
use crate::invoker::{Invoker, Refusal, RunFailure, Trigger, storable};
use crate::queues::QueueHub;
use crate::registry::Registry;
use crate::routes::LiveFunction;

/// The header naming the queue a delivery comes from; only the node sets it (see
/// `ingress::NODE_HEADER_PREFIX`), so it tells a delivery from a public request.
pub const HEADER_QUEUE: &str = "eddy-queue";
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
    invoker: Invoker,
    running: Mutex<Dispatchers>,
}

struct Running {
    settings: ConsumerSettings,
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
    /// Times the consumer looked and held back because a budget paused background work
    /// (each one a `BUDGET_PAUSED_POLL` apart): no attempt is spent on them.
    pub budget_waits: u64,
}

impl Consumers {
    pub fn new(hub: Arc<QueueHub>, registry: Arc<Registry>, invoker: Invoker) -> Arc<Self> {
        Arc::new(Consumers {
            hub,
            registry,
            invoker,
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
            settings: settings.clone(),
            breaker_failures: self.hub.limits.consumer_breaker_failures,
            hub: self.hub.clone(),
            registry: self.registry.clone(),
            invoker: self.invoker.clone(),
            control: control.clone(),
            cancel: cancel.clone(),
        });
        tokio::spawn(dispatcher.run());
        running.by_queue.insert(
            queue.to_string(),
            Running {
                settings,
                control,
                cancel,
            },
        );
    }

    /// Brings the running dispatchers in line with the stored bindings, which another node
    /// may have changed: starts, restarts or stops each that differs. Returns how many.
    pub async fn sync(self: &Arc<Self>) -> Result<usize, eddy_store::StoreError> {
        let stored: HashMap<String, ConsumerSettings> = self
            .hub
            .store
            .list_queues()
            .await?
            .into_iter()
            .filter_map(|q| Some((q.name, q.consumer?)))
            .collect();
        let changed: Vec<(String, Option<ConsumerSettings>)> = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let stale = running
                .by_queue
                .iter()
                .filter(|(queue, r)| stored.get(*queue) != Some(&r.settings))
                .map(|(queue, _)| (queue.clone(), stored.get(queue).cloned()));
            let missing = stored
                .iter()
                .filter(|(queue, _)| !running.by_queue.contains_key(*queue))
                .map(|(queue, settings)| (queue.clone(), Some(settings.clone())));
            stale.chain(missing).collect()
        };
        for (queue, settings) in &changed {
            tracing::info!(queue = %queue, bound = settings.is_some(), "a queue's consumer changed through another node");
            self.apply(queue, settings.clone());
        }
        Ok(changed.len())
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
    /// Claims held back for a budget (`ConsumerStatus::budget_waits`).
    budget_waits: u64,
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
                budget_waits: 0,
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
            budget_waits: s.budget_waits,
        }
    }
}

struct Dispatcher {
    queue: String,
    settings: ConsumerSettings,
    breaker_failures: u32,
    hub: Arc<QueueHub>,
    registry: Arc<Registry>,
    invoker: Invoker,
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
                    let due = next.map_or(IDLE_POLL, |ms| self.invoker.parts().clock.until_ms(ms));
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
        backoff_spacing(
            self.settings.backoff_base_ms,
            self.settings.backoff_max_ms,
            n,
        )
    }

    async fn claim_and_deliver(self: Arc<Self>, epoch: u64) {
        let function = self.settings.function.as_str();
        // Taken before the table is read, so a deploy right after the read still wakes us.
        let mut changes = self.registry.route_changes();
        changes.mark_unchanged();
        let Some(live) = self.registry.routes().function(function).cloned() else {
            // Wait for a deploy instead of polling; the messages wait in the queue.
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = changes.changed() => {}
            }
            self.control.release(true);
            return;
        };
        // Before a claim, so no attempt is spent while the budget or the node says wait.
        let admitted = tokio::select! {
            _ = self.cancel.cancelled() => None,
            admitted = self.invoker.admit_background(&live, Trigger::Queue) => Some(admitted),
        };
        let permit = match admitted {
            Some(Ok(permit)) => permit,
            Some(Err(Refusal::Budget(_))) => {
                // The messages wait in the queue; no attempt is spent.
                self.control.lock().budget_waits += 1;
                self.pause(BUDGET_PAUSED_POLL).await;
                self.control.release(true);
                return;
            }
            Some(Err(Refusal::Busy { .. })) => {
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
        let lease_until_ms =
            self.invoker.parts().clock.now_ms() + self.settings.visibility_timeout_ms as i64;
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
                    .invoker
                    .parts()
                    .admission
                    .admit(function, Trigger::Queue.class())
                    .await
                    .map_err(|_| DeliveryFailure::Busy),
            };
            let delivery = async { self.deliver(live.clone(), request?, permit?).await };
            let outcome = tokio::time::timeout_at(deadline, delivery)
                .await
                .unwrap_or(Err(DeliveryFailure::Timeout {
                    visibility_timeout_ms: self.settings.visibility_timeout_ms,
                }));
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
    ) -> Result<(), DeliveryFailure> {
        let record = self.invoker.record(&live, &request);
        Ok(self.invoker.run_background(record, request, permit).await?)
    }

    /// The requests that deliver `claimed`: one binary-mode CloudEvent for a batch size of 1;
    /// otherwise JSON arrays of structured events, as many as it takes for each to fit in
    /// `request_body_bytes_max` (a batch must never be refused for its size). Each with the
    /// messages it carries.
    fn deliveries<'a>(
        &self,
        live: &LiveFunction,
        claimed: &'a [Claimed],
    ) -> Result<Vec<Delivery<'a>>, DeliveryFailure> {
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
            request.map_err(|e| DeliveryFailure::Request(e.to_string()))
        };
        if self.settings.batch_size <= 1 {
            let m = &claimed[0];
            let mut request = builder()
                .header(header::CONTENT_TYPE, header_value(&m.content_type))
                .body(Full::new(Bytes::from(m.body.clone())));
            if let Ok(request) = &mut request {
                message_event(m, &source).insert_headers(request.headers_mut());
            }
            return Ok(vec![(&claimed[..1], built(request))]);
        }
        let events = claimed
            .iter()
            .map(|m| {
                serde_json::to_vec(&message_event(m, &source).structured(&m.content_type, &m.body))
                    .map_err(|e| DeliveryFailure::Request(e.to_string()))
            })
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
    async fn settle(
        &self,
        claimed: &[Claimed],
        outcome: Result<(), DeliveryFailure>,
        lease_until_ms: i64,
    ) {
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
                    error: storable(format!(
                        "attempt {} of {}: {error}",
                        m.attempt, self.settings.max_attempts
                    )),
                },
                Err(error) => {
                    // Full jitter: anywhere between now and the exponential backoff.
                    let cap = self.spacing(m.attempt).as_millis() as u64;
                    let delay = rand::rng().random_range(0..=cap);
                    Settle::Retry {
                        row: m.row,
                        lease_until_ms,
                        visible_at_ms: self.invoker.parts().clock.now_ms() + delay as i64,
                        error: storable(format!("attempt {}: {error}", m.attempt)),
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

/// Messages that go in one request, and that request (or why it could not be built).
type Delivery<'a> = (&'a [Claimed], Result<Request<Full<Bytes>>, DeliveryFailure>);

/// Why a delivery failed; its text is the message's last error, and the dead letter's.
#[derive(Debug, thiserror::Error)]
enum DeliveryFailure {
    #[error("the node was busy for the rest of a split batch")]
    Busy,
    #[error("no answer within the visibility timeout ({visibility_timeout_ms} ms)")]
    Timeout { visibility_timeout_ms: u64 },
    #[error("the delivery request could not be built: {0}")]
    Request(String),
    #[error(transparent)]
    Run(#[from] RunFailure),
}

/// One message's CloudEvent attributes.
fn message_event(m: &Claimed, source: &str) -> CloudEvent {
    CloudEvent {
        id: m.id.clone(),
        kind: QUEUE_EVENT_TYPE,
        source: source.to_string(),
        time_ms: m.enqueued_at_ms,
        extensions: vec![
            ("eddyattempt", json!(m.attempt)),
            ("eddyfirstenqueued", json!(rfc3339(m.first_enqueued_at_ms))),
        ],
    }
}

/// Backoff spacing for attempt or breaker trip `n` (from 1): `base_ms` doubled each time,
/// never above `max_ms`.
fn backoff_spacing(base_ms: u64, max_ms: u64, n: u32) -> Duration {
    let factor = 1u64
        .checked_shl(n.saturating_sub(1).min(62))
        .unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor).min(max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> (Running, CancellationToken) {
        let cancel = CancellationToken::new();
        let control = Arc::new(Control::new(&running_settings()));
        (
            Running {
                settings: running_settings(),
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

    #[test]
    fn backoff_doubles_from_its_base_up_to_its_cap() {
        let spacing = |n| backoff_spacing(100, 5_000, n).as_millis();
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7].map(spacing),
            [100, 200, 400, 800, 1_600, 3_200, 5_000]
        );
        // No overflow however many attempts or trips.
        assert_eq!(spacing(0), 100);
        assert_eq!(spacing(63), 5_000);
        assert_eq!(spacing(u32::MAX), 5_000);
        assert_eq!(
            backoff_spacing(u64::MAX, u64::MAX, 40).as_millis(),
            u64::MAX as u128
        );
    }

    /// Starts one delivery on `control` and ends it with `success`.
    fn deliver(control: &Control, success: bool, spacing: impl Fn(u32) -> Duration) {
        let Gate::Go { epoch } = control.admit(Instant::now()) else {
            panic!("expected a delivery to be allowed");
        };
        control.claimed(1, 1, None, 0);
        control.finished(success, epoch, 3, spacing);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_failures_in_a_row_and_probes_after_its_backoff() {
        let settings = ConsumerSettings {
            max_concurrency: 8,
            ..running_settings()
        };
        let control = Control::new(&settings);
        let spacing = |n| backoff_spacing(1_000, 60_000, n);
        // Two failures halve the limit once per round, but do not open the breaker.
        deliver(&control, false, spacing);
        deliver(&control, false, spacing);
        assert_eq!(control.status().breaker, "closed");
        assert_eq!(control.status().concurrency, 2);
        // The third failure in a row opens it for one backoff spacing.
        deliver(&control, false, spacing);
        assert_eq!(control.status().breaker, "open");
        assert_eq!(control.status().concurrency, 0);
        let Gate::Until(until) = control.admit(Instant::now()) else {
            panic!("an open breaker lets nothing through");
        };
        assert_eq!(until - Instant::now(), Duration::from_millis(1_000));
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(matches!(control.admit(Instant::now()), Gate::Until(_)));
        // Once it passes, one probe goes (half open) and nothing beside it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let Gate::Go { epoch } = control.admit(Instant::now()) else {
            panic!("the probe should go");
        };
        assert_eq!(control.status().breaker, "half_open");
        assert!(matches!(control.admit(Instant::now()), Gate::Full));
        // A failed probe opens it again for twice as long.
        control.claimed(1, 1, None, 0);
        control.finished(false, epoch, 3, spacing);
        let Gate::Until(until) = control.admit(Instant::now()) else {
            panic!("a failed probe reopens the breaker");
        };
        assert_eq!(until - Instant::now(), Duration::from_millis(2_000));
        // A probe that succeeds closes it; successes then raise the limit again.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        deliver(&control, true, spacing);
        assert_eq!(control.status().breaker, "closed");
        for _ in 0..20 {
            deliver(&control, true, spacing);
        }
        assert!(
            control.status().concurrency > 2,
            "{}",
            control.status().concurrency
        );
    }

    fn running_settings() -> ConsumerSettings {
        ConsumerSettings {
            function: "f".into(),
            batch_size: 1,
            max_concurrency: 1,
            visibility_timeout_ms: 1000,
            max_attempts: 1,
            backoff_base_ms: 1,
            backoff_max_ms: 1,
            dead_letter: "q-dlq".into(),
            path: None,
        }
    }
}
