//! Metering of every invocation: per-function, per-minute totals (flushed to the store by
//! the invocation writer, read by `eddy stats`) and Prometheus counters for `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use eddy_runtime::{InvocationReport, Outcome};
use eddy_store::Rollup;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as MetricsRegistry;

/// Milliseconds in the rollup period.
pub const MINUTE_MS: i64 = 60_000;
/// Upper bounds (seconds) of the invocation-duration histogram in `/metrics`.
const DURATION_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    function: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetAlertLabels {
    budget: String,
    threshold_percent: String,
}

/// Prometheus families, one series per function.
struct Metrics {
    registry: MetricsRegistry,
    invocations: Family<OutcomeLabels, Counter>,
    rejected: Family<LimitLabels, Counter>,
    cold_starts: Family<FunctionLabel, Counter>,
    wall_seconds: Family<FunctionLabel, Counter<f64>>,
    cpu_seconds: Family<FunctionLabel, Counter<f64>>,
    request_bytes: Family<FunctionLabel, Counter>,
    response_bytes: Family<FunctionLabel, Counter>,
    duration: Family<FunctionLabel, Histogram>,
    instances_live: Family<FunctionLabel, Gauge>,
    in_flight: Family<FunctionLabel, Gauge>,
    queued: Family<FunctionLabel, Gauge>,
    node_in_flight: Gauge,
    node_concurrency_max: Gauge,
    store_reachable: Gauge,
    queue_depth: Family<QueueLabel, Gauge>,
    queue_in_flight: Family<QueueLabel, Gauge>,
    queue_dead_lettered: Family<QueueLabel, Gauge>,
    queue_consumer_concurrency: Family<QueueLabel, Gauge>,
    websocket_connections: Family<FunctionLabel, Gauge>,
    websocket_connection_seconds: Family<FunctionLabel, Counter<f64>>,
    budget_spent_usd: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    budget_monthly_usd: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    budget_alerts: Family<BudgetAlertLabels, Counter>,
}

/// Handles on one function's counters (they share their values with the families).
struct Series {
    /// By `outcome_index`.
    outcomes: [Counter; 12],
    cold_starts: Counter,
    wall_seconds: Counter<f64>,
    cpu_seconds: Counter<f64>,
    request_bytes: Counter,
    response_bytes: Counter,
    duration: Histogram,
}

fn outcome_index(outcome: Outcome) -> usize {
    ALL_OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .expect("ALL_OUTCOMES lists every outcome")
}

/// What one queue's gauges read at scrape time.
pub struct QueueGauges {
    pub queue: String,
    pub depth: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
    /// The consumer's adaptive concurrency now (0 without a consumer or while its breaker
    /// is open).
    pub consumer_concurrency: u32,
}

/// What one function's gauges read at scrape time.
pub struct FunctionGauges {
    pub function: String,
    pub instances_live: usize,
    pub in_flight: usize,
    pub queued: usize,
}

/// The node's meter. Cheap to call from the request path: one short mutex for the
/// minute totals; the Prometheus families synchronise themselves.
pub struct Meter {
    /// Totals not yet written to the store, by function and minute.
    pending: Mutex<HashMap<(Arc<str>, i64), Rollup>>,
    /// Each function's Prometheus series, so the request path neither allocates labels
    /// nor searches the families.
    series: RwLock<HashMap<Arc<str>, Arc<Series>>>,
    /// Held for writing while pending totals move to the store, and for reading while a
    /// stats query reads both, so no minute is counted twice or missed.
    pub(crate) flush_gate: tokio::sync::RwLock<()>,
    metrics: Metrics,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        let mut registry = MetricsRegistry::with_prefix("eddy");
        let invocations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations that ran, by outcome",
            invocations.clone(),
        );
        let rejected = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rejected",
            "Requests turned away by admission control, by the limit that refused them",
            rejected.clone(),
        );
        let cold_starts = Family::<FunctionLabel, Counter>::default();
        registry.register(
            "cold_starts",
            "Invocations that instantiated a fresh instance",
            cold_starts.clone(),
        );
        let wall_seconds = Family::<FunctionLabel, Counter<f64>>::default();
        registry.register(
            "invocation_wall_seconds",
            "Wall time of invocations, from instantiation to the end of the guest's work",
            wall_seconds.clone(),
        );
        let cpu_seconds = Family::<FunctionLabel, Counter<f64>>::default();
        registry.register(
            "invocation_cpu_seconds",
            "CPU time guests spent running (not waiting on I/O, timers or admission)",
            cpu_seconds.clone(),
        );
        let request_bytes = Family::<FunctionLabel, Counter>::default();
        registry.register(
            "request_body_bytes",
            "Request body bytes read by guests",
            request_bytes.clone(),
        );
        let response_bytes = Family::<FunctionLabel, Counter>::default();
        registry.register(
            "response_body_bytes",
            "Response body bytes sent by guests",
            response_bytes.clone(),
        );
        let duration = Family::<FunctionLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS_S)) as fn() -> Histogram,
        );
        registry.register(
            "invocation_duration_seconds",
            "Wall time of invocations",
            duration.clone(),
        );
        let instances_live = Family::<FunctionLabel, Gauge>::default();
        registry.register(
            "instances_live",
            "Instances that exist (running or kept warm)",
            instances_live.clone(),
        );
        let in_flight = Family::<FunctionLabel, Gauge>::default();
        registry.register("in_flight", "Invocations running", in_flight.clone());
        let queued = Family::<FunctionLabel, Gauge>::default();
        registry.register("queued", "Requests waiting for admission", queued.clone());
        let node_in_flight = Gauge::default();
        registry.register(
            "node_in_flight",
            "Invocations running on the node",
            node_in_flight.clone(),
        );
        let store_reachable = Gauge::default();
        registry.register(
            "store_reachable",
            "1 while the node reaches its store, 0 while it cannot (it serves what it holds)",
            store_reachable.clone(),
        );
        let node_concurrency_max = Gauge::default();
        registry.register(
            "node_concurrency_max",
            "The node's capacity (limits.concurrency_max)",
            node_concurrency_max.clone(),
        );
        let queue_gauge = |registry: &mut MetricsRegistry, name: &str, help: &str| {
            let family = Family::<QueueLabel, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let queue_depth = queue_gauge(
            &mut registry,
            "queue_depth",
            "Messages in the queue (ready, delayed and in flight)",
        );
        let queue_in_flight = queue_gauge(
            &mut registry,
            "queue_in_flight",
            "Messages of the queue being delivered",
        );
        let queue_dead_lettered = queue_gauge(
            &mut registry,
            "queue_dead_lettered",
            "Messages moved to the dead-letter queue after their last attempt",
        );
        let queue_consumer_concurrency = queue_gauge(
            &mut registry,
            "queue_consumer_concurrency",
            "Deliveries the queue's consumer may run at once now (adaptive; 0 while its breaker is open)",
        );
        let websocket_connections = Family::<FunctionLabel, Gauge>::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            websocket_connections.clone(),
        );
        let websocket_connection_seconds = Family::<FunctionLabel, Counter<f64>>::default();
        registry.register(
            "websocket_connection_seconds",
            "Seconds WebSocket connections were held open (counted when they close)",
            websocket_connection_seconds.clone(),
        );
        let budget_spent_usd = Family::<BudgetLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "budget_spent_usd",
            "Spent this calendar month (UTC) against a budget, on its price sheet",
            budget_spent_usd.clone(),
        );
        let budget_monthly_usd = Family::<BudgetLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "budget_monthly_usd",
            "A budget's monthly limit",
            budget_monthly_usd.clone(),
        );
        let budget_alerts = Family::<BudgetAlertLabels, Counter>::default();
        registry.register(
            "budget_alerts",
            "Budget alerts sent, by the threshold crossed",
            budget_alerts.clone(),
        );
        let duration_family = duration;
        Meter {
            pending: Mutex::new(HashMap::new()),
            series: RwLock::new(HashMap::new()),
            flush_gate: tokio::sync::RwLock::new(()),
            metrics: Metrics {
                registry,
                invocations,
                rejected,
                cold_starts,
                wall_seconds,
                cpu_seconds,
                request_bytes,
                response_bytes,
                duration: duration_family,
                instances_live,
                in_flight,
                queued,
                node_in_flight,
                node_concurrency_max,
                store_reachable,
                queue_depth,
                queue_in_flight,
                queue_dead_lettered,
                queue_consumer_concurrency,
                websocket_connections,
                websocket_connection_seconds,
                budget_spent_usd,
                budget_monthly_usd,
                budget_alerts,
            },
        }
    }

    /// Count a finished invocation that answered with `status`, of a function whose memory
    /// limit is `memory_limit_bytes`.
    pub fn invocation(
        &self,
        function: &Arc<str>,
        at_ms: i64,
        status: u16,
        report: &InvocationReport,
        memory_limit_bytes: u64,
    ) {
        let wall_us = report.duration.as_micros() as u64;
        // Prometheus first: once `stats` (the totals) shows an invocation, `/metrics` does too.
        let error = report.outcome != Outcome::Ok || status >= 500;
        let series = self.series(function);
        series.outcomes[outcome_index(report.outcome)].inc();
        if report.instantiate.is_some() {
            series.cold_starts.inc();
        }
        series.wall_seconds.inc_by(report.duration.as_secs_f64());
        series.cpu_seconds.inc_by(report.cpu.as_secs_f64());
        series.request_bytes.inc_by(report.request_bytes);
        series.response_bytes.inc_by(report.response_bytes);
        series.duration.observe(report.duration.as_secs_f64());
        self.add(function, at_ms, |r| {
            r.invocations += 1;
            r.errors += u64::from(error);
            r.cold_starts += u64::from(report.instantiate.is_some());
            r.wall_us += wall_us;
            r.billed_ms += wall_us.div_ceil(1000);
            r.memory_limit_bytes = r.memory_limit_bytes.max(memory_limit_bytes);
            r.cpu_us += report.cpu.as_micros() as u64;
            r.instantiate_us += report.instantiate.map_or(0, |d| d.as_micros() as u64);
            r.request_bytes += report.request_bytes;
            r.response_bytes += report.response_bytes;
            r.memory_bytes_peak = r.memory_bytes_peak.max(report.memory_bytes_peak);
            match r.outcomes.get_mut(report.outcome.as_str()) {
                Some(n) => *n += 1,
                None => {
                    r.outcomes.insert(report.outcome.as_str().to_string(), 1);
                }
            }
            r.latency.record(wall_us);
        });
    }

    /// Count a request admission control turned away because of `limit`.
    pub fn rejected(&self, function: &Arc<str>, at_ms: i64, limit: &str) {
        self.metrics()
            .rejected
            .get_or_create(&LimitLabels {
                function: function.to_string(),
                limit: limit.to_string(),
            })
            .inc();
        self.add(function, at_ms, |r| {
            r.rejected += 1;
            *r.outcomes
                .entry(Outcome::Rejected.as_str().to_string())
                .or_default() += 1;
        });
    }

    fn add(&self, function: &Arc<str>, at_ms: i64, update: impl FnOnce(&mut Rollup)) {
        let minute = at_ms - at_ms.rem_euclid(MINUTE_MS);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        update(pending.entry((function.clone(), minute)).or_default());
    }

    /// Take every pending total, to write to the store.
    pub fn take_pending(&self) -> Vec<(String, i64, Rollup)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .map(|((function, minute), rollup)| (function.to_string(), minute, rollup))
            .collect()
    }

    /// Put back totals that could not be written, to try again at the next flush.
    pub fn restore_pending(&self, rollups: Vec<(String, i64, Rollup)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (function, minute, rollup) in rollups {
            pending
                .entry((Arc::from(function.as_str()), minute))
                .or_default()
                .merge(&rollup);
        }
    }

    /// Pending totals of `function` from `since_minute_ms` on.
    pub fn pending_of(&self, function: &str, since_minute_ms: i64) -> Rollup {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = Rollup::default();
        for ((f, minute), rollup) in pending.iter() {
            if &**f == function && *minute >= since_minute_ms {
                total.merge(rollup);
            }
        }
        total
    }

    /// Every pending total from `since_minute_ms` on.
    pub fn pending_since(&self, since_minute_ms: i64) -> Vec<(String, i64, Rollup)> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .iter()
            .filter(|((_, minute), _)| *minute >= since_minute_ms)
            .map(|((function, minute), rollup)| (function.to_string(), *minute, rollup.clone()))
            .collect()
    }

    /// Set a budget's gauges: spent this month and its monthly limit (USD).
    pub fn budget(&self, budget: &str, spent_usd: f64, monthly_usd: f64) {
        let label = BudgetLabel {
            budget: budget.to_string(),
        };
        let m = self.metrics();
        m.budget_spent_usd.get_or_create(&label).set(spent_usd);
        m.budget_monthly_usd.get_or_create(&label).set(monthly_usd);
    }

    /// Count an alert of `budget` at `threshold_percent`.
    pub fn budget_alert(&self, budget: &str, threshold_percent: f64) {
        self.metrics()
            .budget_alerts
            .get_or_create(&BudgetAlertLabels {
                budget: budget.to_string(),
                threshold_percent: format!("{threshold_percent}"),
            })
            .inc();
    }

    /// Forget a removed budget's gauges.
    pub fn budget_removed(&self, budget: &str) {
        let label = BudgetLabel {
            budget: budget.to_string(),
        };
        let m = self.metrics();
        m.budget_spent_usd.remove(&label);
        m.budget_monthly_usd.remove(&label);
    }

    /// The function's series, created on first use and then found without allocating.
    fn series(&self, function: &Arc<str>) -> Arc<Series> {
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
        {
            return series.clone();
        }
        let m = self.metrics();
        let label = FunctionLabel {
            function: function.to_string(),
        };
        let series = Arc::new(Series {
            outcomes: ALL_OUTCOMES.map(|outcome| {
                m.invocations
                    .get_or_create(&OutcomeLabels {
                        function: function.to_string(),
                        outcome: outcome.as_str().to_string(),
                    })
                    .clone()
            }),
            cold_starts: m.cold_starts.get_or_create(&label).clone(),
            wall_seconds: m.wall_seconds.get_or_create(&label).clone(),
            cpu_seconds: m.cpu_seconds.get_or_create(&label).clone(),
            request_bytes: m.request_bytes.get_or_create(&label).clone(),
            response_bytes: m.response_bytes.get_or_create(&label).clone(),
            duration: m.duration.get_or_create(&label).clone(),
        });
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.clone())
            .or_insert(series)
            .clone()
    }

    /// Forget a removed function's series.
    pub fn remove(&self, function: &str) {
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
        let m = self.metrics();
        let label = FunctionLabel {
            function: function.to_string(),
        };
        for family in [&m.cold_starts, &m.request_bytes, &m.response_bytes] {
            family.remove(&label);
        }
        m.wall_seconds.remove(&label);
        m.cpu_seconds.remove(&label);
        m.duration.remove(&label);
        m.instances_live.remove(&label);
        m.in_flight.remove(&label);
        m.queued.remove(&label);
        for outcome in ALL_OUTCOMES {
            m.invocations.remove(&OutcomeLabels {
                function: function.to_string(),
                outcome: outcome.as_str().to_string(),
            });
        }
        for limit in [
            "max_concurrency",
            "max_queue",
            "max_wait_ms",
            "function_removed",
        ] {
            m.rejected.remove(&LimitLabels {
                function: function.to_string(),
                limit: limit.to_string(),
            });
        }
    }

    /// A WebSocket connection of `function` opened.
    pub fn websocket_opened(&self, function: &str) {
        self.metrics()
            .websocket_connections
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .inc();
    }

    /// A WebSocket connection of `function` closed after `open_for`: counted in `/metrics`
    /// and in the minute's totals (`eddy stats`).
    pub fn websocket_closed(&self, function: &Arc<str>, at_ms: i64, open_for: std::time::Duration) {
        self.add(function, at_ms, |r| {
            r.connection_ms += open_for.as_millis() as u64;
        });
        let label = FunctionLabel {
            function: function.to_string(),
        };
        let m = self.metrics();
        m.websocket_connections.get_or_create(&label).dec();
        m.websocket_connection_seconds
            .get_or_create(&label)
            .inc_by(open_for.as_secs_f64());
    }

    /// Connection-seconds of `function`'s closed WebSocket connections since the node started.
    pub fn websocket_connection_seconds(&self, function: &str) -> f64 {
        self.metrics()
            .websocket_connection_seconds
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .get()
    }

    /// The Prometheus text exposition, with gauges read now.
    pub fn render(
        &self,
        gauges: &[FunctionGauges],
        queues: &[QueueGauges],
        node_in_flight: usize,
        node_concurrency_max: usize,
        store_reachable: bool,
    ) -> String {
        let m = self.metrics();
        for q in queues {
            let label = QueueLabel {
                queue: q.queue.clone(),
            };
            m.queue_depth.get_or_create(&label).set(q.depth as i64);
            m.queue_in_flight
                .get_or_create(&label)
                .set(q.in_flight as i64);
            m.queue_dead_lettered
                .get_or_create(&label)
                .set(q.dead_lettered as i64);
            m.queue_consumer_concurrency
                .get_or_create(&label)
                .set(i64::from(q.consumer_concurrency));
        }
        for g in gauges {
            let label = FunctionLabel {
                function: g.function.clone(),
            };
            m.instances_live
                .get_or_create(&label)
                .set(g.instances_live as i64);
            m.in_flight.get_or_create(&label).set(g.in_flight as i64);
            m.queued.get_or_create(&label).set(g.queued as i64);
        }
        m.node_in_flight.set(node_in_flight as i64);
        m.node_concurrency_max.set(node_concurrency_max as i64);
        m.store_reachable.set(i64::from(store_reachable));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

const ALL_OUTCOMES: [Outcome; 12] = [
    Outcome::Ok,
    Outcome::Trap,
    Outcome::Timeout,
    Outcome::MemoryLimit,
    Outcome::RequestBodyTooLarge,
    Outcome::ResponseBodyTooLarge,
    Outcome::InstanceLimit,
    Outcome::ResourceLimit,
    Outcome::FieldsLimit,
    Outcome::NoResponse,
    Outcome::ErrorResponse,
    Outcome::Rejected,
];
