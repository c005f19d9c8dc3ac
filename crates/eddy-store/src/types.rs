//! Plain data types passed in and out of the store, and the invocation retention limits.

use std::collections::BTreeMap;

/// Newest invocation records kept per function (count).
pub const INVOCATIONS_PER_FUNCTION_MAX: usize = 1000;
/// Invocation records older than this are deleted (milliseconds; 7 days).
pub const INVOCATION_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// How many invocation records are kept, applied after each appended batch.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Newest records kept per function; older ones are deleted.
    pub invocations_per_function_max: usize,
    /// Records whose `at_ms` is older than now minus this many milliseconds are deleted.
    pub retention_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            invocations_per_function_max: INVOCATIONS_PER_FUNCTION_MAX,
            retention_ms: INVOCATION_RETENTION_MS,
        }
    }
}

/// What a deploy asks for; stored as JSON in the version row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VersionConfig {
    /// HTTP path prefix the version serves, e.g. `/hello`.
    pub route: String,
    /// Largest linear memory an instance may grow to (bytes).
    pub memory_bytes_max: u64,
    /// Wall-clock limit of one request (milliseconds).
    pub timeout_ms: u64,
    /// Environment variables given to the component.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets, each pinned to the version of the
    /// secret that was latest when the version was deployed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretBinding>,
    /// Hosts and URLs the function may send HTTP requests to (`*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    /// Invocations running at once; `None`: the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Requests waiting for a slot; `None`: the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    /// Longest wait for a slot (milliseconds); `None`: the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// Concurrency held for this function alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reserved_concurrency: u32,
    /// Warm-instance reuse; `None`: a fresh instance per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseSettings>,
    /// Queues the function may publish to through `http://eddy.local` (`*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// A cron schedule that invokes the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSettings>,
    /// WebSocket upgrades on the route are held by the node and delivered to the function
    /// as events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
}

pub use eddy_parse::schedule::{Missed, Overlap, ScheduleSettings};

/// One secret a version binds to an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretBinding {
    pub name: String,
    pub version: u32,
    /// When that version was set: a secret removed and set again reuses version numbers,
    /// and a pin to the old one must not open the new.
    #[serde(default)]
    pub created_at_ms: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Warm-instance reuse of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReuseSettings {
    /// Requests one instance serves before it is replaced.
    pub max_requests: u32,
    /// Idle time after which a warm instance is dropped (milliseconds).
    pub idle_timeout_ms: u64,
}

/// A version to create with [`crate::Store::create_version`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewVersion {
    /// Function name; the function is created if missing.
    pub function: String,
    /// Component digest, `sha256:<hex>`.
    pub digest: String,
    /// Size of the component (bytes).
    pub size_bytes: u64,
    /// Deploy configuration.
    pub config: VersionConfig,
    /// Creation time (unix milliseconds); also becomes the function's `updated_at_ms`.
    pub created_at_ms: i64,
}

/// One immutable, numbered version of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRecord {
    /// Function name.
    pub function: String,
    /// Version number, 1 for the first; never reused within a function.
    pub version: u32,
    /// Component digest, `sha256:<hex>`.
    pub digest: String,
    /// Size of the component (bytes).
    pub size_bytes: u64,
    /// Deploy configuration.
    pub config: VersionConfig,
    /// Creation time (unix milliseconds).
    pub created_at_ms: i64,
}

/// A function and its live version.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionRecord {
    /// Function name.
    pub name: String,
    /// The version being served.
    pub live: VersionRecord,
    /// How many versions the function has.
    pub version_count: u32,
    /// When the live version last changed (unix milliseconds).
    pub updated_at_ms: i64,
}

/// An invocation record to append with [`crate::Store::append_invocations`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewInvocation {
    /// Function name.
    pub function: String,
    /// Version that handled the request.
    pub version: u32,
    /// When the request arrived (unix milliseconds).
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// How the invocation ended, e.g. `ok`, `trap`, `timeout`.
    pub outcome: String,
    /// Time spent handling the request (microseconds).
    pub duration_us: u64,
    /// CPU time the guest spent running (microseconds).
    pub cpu_us: u64,
    /// Time spent instantiating (microseconds); `None` when a warm instance was reused or
    /// no instance ran.
    pub instantiate_us: Option<u64>,
    /// Largest linear memory of the instance (bytes).
    pub memory_bytes_peak: u64,
    /// Request body bytes read by the guest.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Captured stdout and stderr.
    pub log: String,
    /// The node that ran it (in a cluster, one of several); empty in records written
    /// before nodes were named.
    pub node: String,
}

/// Per-function totals of one minute of invocations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollup {
    /// Invocations that ran (rejected ones are not counted here).
    pub invocations: u64,
    /// Invocations that failed: any outcome but `ok`, or a guest status of 500 or more.
    pub errors: u64,
    /// Requests admission control turned away.
    pub rejected: u64,
    /// Invocations that got a fresh instance.
    pub cold_starts: u64,
    pub wall_us: u64,
    pub cpu_us: u64,
    pub instantiate_us: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Largest instance memory seen in the minute (bytes).
    pub memory_bytes_peak: u64,
    /// Invocations per outcome name.
    pub outcomes: BTreeMap<String, u64>,
    /// Wall-time distribution of the invocations.
    pub latency: LatencyHistogram,
    /// Milliseconds WebSocket connections were held open, counted in the minute each
    /// closed (separate from invocations).
    pub connection_ms: u64,
    /// Wall time of the invocations, each rounded up to a whole millisecond (the way
    /// per-millisecond billing counts it).
    pub billed_ms: u64,
    /// The largest memory limit the function's invocations ran with in the minute (bytes):
    /// the configured memory size that GB-second prices multiply by.
    pub memory_limit_bytes: u64,
}

impl Rollup {
    /// What a node's share of a rollup keeps: invocations, errors, rejected requests, cold
    /// starts, wall, CPU and billed time; the rest left empty.
    pub fn share(&self) -> Rollup {
        Rollup {
            invocations: self.invocations,
            errors: self.errors,
            rejected: self.rejected,
            cold_starts: self.cold_starts,
            wall_us: self.wall_us,
            cpu_us: self.cpu_us,
            billed_ms: self.billed_ms,
            ..Rollup::default()
        }
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &Rollup) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.rejected += other.rejected;
        self.cold_starts += other.cold_starts;
        self.wall_us += other.wall_us;
        self.cpu_us += other.cpu_us;
        self.instantiate_us += other.instantiate_us;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        self.memory_bytes_peak = self.memory_bytes_peak.max(other.memory_bytes_peak);
        self.billed_ms += other.billed_ms;
        self.memory_limit_bytes = self.memory_limit_bytes.max(other.memory_limit_bytes);
        for (outcome, n) in &other.outcomes {
            *self.outcomes.entry(outcome.clone()).or_default() += n;
        }
        self.latency.merge(&other.latency);
        self.connection_ms += other.connection_ms;
    }
}

/// A log-linear histogram of microsecond values: 8 buckets per power of two, so a
/// percentile read from it is within 12.5% of the true value.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyHistogram {
    /// Bucket index → count (sparse).
    pub buckets: BTreeMap<u16, u64>,
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        *self.buckets.entry(bucket_of(us)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (bucket, n) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket it falls in.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_us(*bucket));
            }
        }
        self.buckets.keys().last().map(|b| bucket_upper_us(*b))
    }
}

fn bucket_of(us: u64) -> u16 {
    if us < 8 {
        return us as u16;
    }
    let log = 63 - us.leading_zeros(); // >= 3
    let sub = (us >> (log - 3)) & 7;
    ((log - 2) * 8 + sub as u32) as u16
}

fn bucket_upper_us(bucket: u16) -> u64 {
    if bucket < 8 {
        return u64::from(bucket);
    }
    let log = u32::from(bucket / 8) + 2;
    let sub = u64::from(bucket % 8);
    let width = 1u64 << (log - 3);
    ((8 + sub) << (log - 3)) + width - 1
}

/// A stored invocation record: what was appended, with the id it was stored under.
#[derive(Clone, Debug, PartialEq)]
pub struct InvocationRecord {
    /// Increasing id, unique across functions; used as a cursor.
    pub id: i64,
    /// The record as it was appended.
    pub invocation: NewInvocation,
}
