//! The control API's answers (docs/api.md): the node builds and serializes these very types,
//! the CLI deserializes them.
//!
//! A key the node writes as `null` is an `Option` without `skip_serializing_if`; a key the
//! node leaves out is an `Option` with it. None of them refuses unknown keys, so the API can
//! grow without breaking older CLIs; a field the CLI does not show is `#[serde(default)]`, so
//! the CLI still reads an answer from a node that predates it. `Option` fields this node
//! always fills (a log entry's `status`, a queue's `oldest_age_ms`, a page's `last_id`) read
//! `null` as none.
//!
//! Cost reports, price sheets, budgets and the metrics text are not here: their JSON is the
//! node's cost types, read by the CLI as `serde_json::Value`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every error the control API returns: `{"error": {"code": ..., "message": ...}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorDetail {
    /// Stable, for programs: `route_taken`, `limit_exceeded`, ….
    pub code: String,
    /// Meant for people: it already says what to do.
    pub message: String,
}

/// `GET /v1/node`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// The node's eddy version.
    pub version: String,
    pub public_url: String,
    /// Live functions.
    pub functions: u64,
    pub compile_cache: CompileCache,
    /// Invocation records dropped since the node started because the record queue was full.
    pub invocation_records_dropped: u64,
}

/// `GET /v1/nodes`: the nodes that share this node's store, by name (one on SQLite).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeList {
    pub nodes: Vec<Member>,
}

/// One node of [`NodeList`], as its latest heartbeat tells.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// `live`, `gone` (missed its heartbeats) or `stopped` (shut down).
    pub state: String,
    /// Whether it is the node that answered.
    pub this: bool,
    pub version: String,
    pub public_url: String,
    pub admin_addr: String,
    pub started_at: String,
    pub seen_at: String,
    /// Milliseconds since its latest heartbeat, as the answering node's clock sees it.
    pub seen_ms_ago: u64,
    /// Its load at that heartbeat.
    pub in_flight: u64,
    pub concurrency_max: u64,
    pub instances: u64,
    pub functions: u64,
}

/// Compile-cache counters of [`NodeInfo`], since the node started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CompileCache {
    /// Components loaded as machine code from the cache.
    pub hits: u64,
    /// Components compiled.
    pub misses: u64,
    /// Functions Cranelift found in the incremental cache.
    pub incremental_hits: u64,
    /// Functions compiled and stored in the incremental cache.
    pub incremental_inserts: u64,
    /// Size of the incremental cache on disk.
    pub incremental_bytes: u64,
}

/// `201` answer to `POST /v1/functions/{name}/versions`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Deployed {
    pub function: String,
    pub version: u32,
    #[serde(default)]
    pub route: String,
    pub url: String,
    /// `sha256:<hex>`.
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size_bytes: u64,
    /// False when the node reused compiled code for identical bytes deployed before.
    pub compiled: bool,
    /// Settings the node changed to fit this version (a consumer's visibility timeout).
    #[serde(default)]
    pub adjusted: Vec<String>,
}

/// `GET /v1/functions`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FunctionList {
    pub functions: Vec<Function>,
}

/// `GET /v1/functions/{name}` and each element of `GET /v1/functions`: the function as its
/// live version configures it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub route: String,
    pub url: String,
    pub live_version: u32,
    /// How many versions the function has.
    #[serde(default)]
    pub versions: u32,
    /// `sha256:<hex>` of the live version's component.
    #[serde(default)]
    pub digest: String,
    pub memory_bytes_max: u64,
    pub timeout_ms: u64,
    /// RFC 3339, shown as the node wrote it.
    pub updated_at: String,
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// `null`: the node's default.
    pub max_concurrency: Option<u32>,
    /// `null`: the node's default.
    pub max_queue: Option<u32>,
    /// `null`: the node's default.
    pub max_wait_ms: Option<u64>,
    #[serde(default)]
    pub reserved_concurrency: u32,
    /// `null`: a fresh instance per request.
    pub reuse: Option<Reuse>,
    /// Whether the node holds WebSocket connections on the route.
    #[serde(default)]
    pub websocket: bool,
    /// The cron schedule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::ScheduleSettings>,
    /// Queues the function may publish to through `eddy.local` (`*`: any).
    #[serde(default)]
    pub publish: Vec<String>,
}

/// Warm-instance reuse of a [`Function`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Reuse {
    pub max_requests: u32,
    pub idle_timeout_ms: u64,
}

/// `200` answer to `DELETE /v1/functions/{name}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Removed {
    pub removed: String,
    #[serde(default)]
    pub websocket_connections_closed: u64,
    /// Queues whose consumer binding went with the function.
    #[serde(default)]
    pub queues_unbound: Vec<String>,
}

/// `GET /v1/functions/{name}/versions`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VersionList {
    #[serde(default)]
    pub function: String,
    #[serde(default)]
    pub live_version: u32,
    /// Newest first.
    pub versions: Vec<Version>,
}

/// One element of `GET /v1/functions/{name}/versions`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Version {
    pub version: u32,
    pub live: bool,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size_bytes: u64,
    pub route: String,
    pub memory_bytes_max: u64,
    pub timeout_ms: u64,
    /// Names of its environment variables, in order; the values are not shown.
    #[serde(default)]
    pub env_keys: Vec<String>,
    /// Environment variables bound to secrets: variable → `secret@version` pinned at deploy.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// RFC 3339, shown as the node wrote it.
    pub created_at: String,
}

/// `200` answer to `POST /v1/functions/{name}/rollback`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RolledBack {
    pub function: String,
    pub live_version: u32,
    /// The version that was live before; this node always sends it.
    pub previous_version: Option<u32>,
    /// Settings the node changed to fit the version now live.
    #[serde(default)]
    pub adjusted: Vec<String>,
}

/// `GET /v1/functions/{name}/logs`. The CLI reads its entries as `serde_json::Value`
/// (`LogPage<Value>`) so `--json` prints them exactly as the node sent them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LogPage<E = LogEntry> {
    /// Oldest first.
    pub entries: Vec<E>,
    /// The cursor to pass as `after=` to get only newer entries: the last entry's id, or
    /// the `after` asked for when there are none.
    #[serde(default)]
    pub last_id: Option<i64>,
}

/// One invocation record of the logs endpoint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LogEntry {
    #[serde(default)]
    pub id: i64,
    /// RFC 3339, shown as the node wrote it.
    pub at: String,
    pub version: u32,
    pub method: String,
    pub path: String,
    /// The status the caller got.
    pub status: Option<u16>,
    /// `ok`, `trap`, `timeout`, … (docs/api.md).
    pub outcome: String,
    pub duration_ms: f64,
    #[serde(default)]
    pub cpu_ms: f64,
    /// `null` when a warm instance was reused.
    pub instantiate_ms: Option<f64>,
    #[serde(default)]
    pub fresh_instance: bool,
    #[serde(default)]
    pub memory_bytes_peak: u64,
    #[serde(default)]
    pub request_bytes: u64,
    #[serde(default)]
    pub response_bytes: u64,
    /// Captured stdout and stderr of the invocation, newline-separated.
    #[serde(default)]
    pub log: String,
    /// The node that ran it; absent for records written before nodes were named.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// `GET /v1/functions/{name}/stats`: metered totals since the start of the minute `since`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FunctionStats {
    pub function: String,
    /// RFC 3339: the start of the window.
    pub since: String,
    pub invocations: u64,
    pub errors: u64,
    pub rejected: u64,
    pub cold_starts: u64,
    pub wall_ms_total: f64,
    pub cpu_ms_total: f64,
    #[serde(default)]
    pub instantiate_ms_total: f64,
    #[serde(default)]
    pub websocket_connection_seconds: f64,
    /// `null` when nothing ran.
    pub latency_ms_p50: Option<f64>,
    /// `null` when nothing ran.
    pub latency_ms_p99: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub memory_bytes_peak: u64,
    /// Invocations per outcome name.
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// Read now, not over the window, like `in_flight` and `queued`.
    pub instances_live: u64,
    pub in_flight: u64,
    pub queued: u64,
    /// Each node's share of the window's totals, by node name; they sum to the totals. One
    /// share (the answering node's) on a single node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeShare>,
}

/// One node's share of a function's metered totals (`FunctionStats::nodes`).
/// `200` answer to `GET /v1/stats`: each live function's stats the token may read, by name.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatsList {
    pub functions: Vec<FunctionStats>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeShare {
    pub node: String,
    pub invocations: u64,
    pub errors: u64,
    pub rejected: u64,
    pub cold_starts: u64,
    pub wall_ms_total: f64,
    pub cpu_ms_total: f64,
}

/// `GET /v1/functions/{name}/websockets`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WebSocketList {
    pub function: String,
    /// Oldest first.
    pub connections: Vec<WebSocketConnection>,
    /// How long the function's closed connections were held open, in all, since the node
    /// started.
    pub connection_seconds_closed: f64,
}

/// One open connection of `GET /v1/functions/{name}/websockets`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WebSocketConnection {
    pub id: String,
    /// RFC 3339, shown as the node wrote it.
    pub opened_at: String,
    /// In name order.
    pub channels: Vec<String>,
    /// Bytes sent to the connection that the client has not read yet.
    pub queued_bytes: u64,
}

/// `200` answer to `POST /v1/functions/{name}/websockets/channels/{channel}/messages`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Broadcast {
    #[serde(default)]
    pub function: String,
    pub channel: String,
    /// Connections the message was queued for.
    pub sent: u64,
}

/// `GET /v1/queues`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueList {
    /// In name order.
    pub queues: Vec<Queue>,
}

/// A queue with its counters and consumer: `GET /v1/queues/{name}`, the `201` answer to
/// `POST /v1/queues` and the elements of `GET /v1/queues`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    /// Where messages go after their last failed attempt; `null` for a dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// The queue this one is the dead-letter queue of.
    pub dead_letter_of: Option<String>,
    pub idempotency_window_ms: u64,
    /// RFC 3339, shown as the node wrote it.
    pub created_at: String,
    pub depth: u64,
    /// Payload bytes of the messages in the queue.
    #[serde(default)]
    pub bytes: u64,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub delivered: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Age of the oldest message; 0 when the queue is empty.
    pub oldest_age_ms: Option<u64>,
    /// The consumer's current adaptive concurrency; 0 without a consumer.
    pub consumer_concurrency: u32,
    pub consumer: Option<Consumer>,
}

/// A consumer binding as the node holds it: the `200` answer to
/// `PUT /v1/queues/{name}/consumer` (settings only) and the `consumer` of a [`Queue`]
/// (settings and live state).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Consumer {
    pub function: String,
    pub batch_size: u32,
    pub max_concurrency: u32,
    pub visibility_timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub dead_letter: String,
    /// Request path of the deliveries; `null` means the function's route.
    pub path: Option<String>,
    /// Live state, reported with a queue: deliveries allowed at once now (adaptive), …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// … deliveries running, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// … the circuit breaker (`closed`, `open` or `half_open`), …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// … and the rounds it held back for a budget since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_waits: Option<u64>,
    /// Why deliveries wait, while a budget's hard cap pauses the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by_budget: Option<String>,
}

/// `202` answer to `POST /v1/queues/{name}/messages`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    /// True when the idempotency key was seen within the window: nothing new was enqueued
    /// and `id` is the earlier message's.
    pub duplicate: bool,
}

/// `202` answer to `POST /v1/queues/{name}/batch`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BatchSent {
    /// In the order of the messages sent.
    pub ids: Vec<String>,
    /// Messages whose idempotency key was seen within the window.
    pub duplicates: u64,
}

/// `GET /v1/queues/{name}/messages?limit=N`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<Message>,
}

/// One message as `peek` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub attempts: u32,
    /// RFC 3339, shown as the node wrote it.
    pub enqueued_at: String,
    /// RFC 3339: when it was first enqueued, before any redrive.
    #[serde(default)]
    pub first_enqueued_at: String,
    /// RFC 3339; when the message will next be delivered.
    pub visible_at: String,
    pub in_flight: bool,
    pub content_type: String,
    pub last_error: Option<String>,
    /// The payload when it is UTF-8 …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// … otherwise the payload in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// `200` answer to `POST /v1/queues/{name}/redrive`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Redriven {
    pub moved: u64,
    /// The dead-letter queue they came from.
    #[serde(default)]
    pub from: String,
}

/// `200` answer to `POST /v1/queues/{name}/purge`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Purged {
    pub purged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entry_reads_the_documented_shape() {
        let entry: LogEntry = serde_json::from_str(
            r#"{"id": 17, "at": "2026-11-23T11:00:00.123Z", "version": 3, "method": "GET",
                "path": "/hello?x=1", "status": 200, "outcome": "ok", "duration_ms": 1.27,
                "log": "stdout line\nstderr line\n", "added_later": true}"#,
        )
        .unwrap();
        assert_eq!(
            (entry.version, entry.status, entry.duration_ms),
            (3, Some(200), 1.27)
        );
    }

    #[test]
    fn a_consumer_without_live_state_has_no_live_keys_and_a_null_path() {
        let consumer = Consumer {
            function: "worker".into(),
            batch_size: 1,
            max_concurrency: 4,
            visibility_timeout_ms: 60_000,
            max_attempts: 5,
            backoff_base_ms: 1000,
            backoff_max_ms: 60_000,
            dead_letter: "orders-dlq".into(),
            path: None,
            concurrency: None,
            in_flight: None,
            breaker: None,
            budget_waits: None,
            paused_by_budget: None,
        };
        let json = serde_json::to_value(&consumer).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "backoff_base_ms",
                "backoff_max_ms",
                "batch_size",
                "dead_letter",
                "function",
                "max_attempts",
                "max_concurrency",
                "path",
                "visibility_timeout_ms"
            ]
        );
        assert!(json["path"].is_null());
    }

    #[test]
    fn a_message_carries_one_of_data_and_data_base64() {
        let message = Message {
            id: "m1".into(),
            attempts: 0,
            enqueued_at: "2026-11-27T15:00:00.000Z".into(),
            first_enqueued_at: "2026-11-27T15:00:00.000Z".into(),
            visible_at: "2026-11-27T15:00:00.000Z".into(),
            in_flight: false,
            content_type: "application/octet-stream".into(),
            last_error: None,
            data: None,
            data_base64: Some("/w==".into()),
        };
        let json = serde_json::to_value(&message).unwrap();
        assert!(json.get("data").is_none(), "{json}");
        assert_eq!(json["data_base64"], "/w==");
        assert!(json["last_error"].is_null(), "{json}");
    }
}

/// A token as `GET /v1/tokens` lists it: never the token itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub functions: Vec<String>,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `None` for the bootstrap admin token, whose creation the store does not record.
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    #[serde(default)]
    pub expired: bool,
    /// The admin token made at first start (revoked by rotating it, not with `rm`).
    #[serde(default)]
    pub bootstrap: bool,
}

/// `201` answer to `POST /v1/tokens`: the only time the token is shown.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `200` answer to `GET /v1/session` and `POST /v1/session`: who is signed in.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The token's name (`admin` for the bootstrap token).
    pub name: String,
    pub role: String,
    /// The scopes; empty: every one.
    pub functions: Vec<String>,
    pub queues: Vec<String>,
    pub secrets: Vec<String>,
    /// Every permission the role holds (`functions:write`, ...).
    pub permissions: Vec<String>,
}

/// `200` answer to `GET /v1/functions/{name}/series`: the function's metered counts per
/// interval, every interval of the window present, oldest first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Series {
    pub function: String,
    /// RFC 3339: the start of the first interval.
    pub since: String,
    pub step_ms: u64,
    pub points: Vec<SeriesPoint>,
}

/// One interval of a [`Series`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// RFC 3339: the interval's start.
    pub at: String,
    pub at_ms: i64,
    pub invocations: u64,
    pub errors: u64,
    pub rejected: u64,
    pub cold_starts: u64,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    /// `null` when nothing ran in the interval.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// Invocations per outcome name.
    pub outcomes: BTreeMap<String, u64>,
}

/// `200` answer to `GET /v1/schedules`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// One live function's cron schedule and its ticks.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScheduleInfo {
    pub function: String,
    pub cron: String,
    pub timezone: String,
    pub overlap: crate::schedule::Overlap,
    pub missed: crate::schedule::Missed,
    pub path: Option<String>,
    /// RFC 3339: the last tick claimed (run, or dropped by the overlap or missed policy);
    /// before the schedule's first tick, when the node began to follow it.
    pub last_tick: String,
    /// RFC 3339: the next tick due; `null` if the schedule never fires again.
    pub next_tick: Option<String>,
}

/// `200` answer to `GET /v1/tokens`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// One change made through the control API.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// The token's name (`admin` for the bootstrap token, `-` when none was accepted).
    pub token: String,
    pub source: String,
    /// `METHOD /path`.
    pub request: String,
    /// The permission the request needed.
    pub action: String,
    pub status: u16,
    /// `ok`, or the error's code and message.
    pub outcome: String,
}

/// `200` answer to `GET /v1/audit`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub last_id: i64,
}

/// A secret as `GET /v1/secrets` lists it: never its value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SecretInfo {
    pub name: String,
    /// Its latest version: what the next deploy binding it pins.
    pub version: u32,
    /// Versions kept (older ones stay while function versions may pin them).
    pub versions: u32,
    pub created_at: String,
    pub updated_at: String,
    /// Functions whose live version binds it, as `function (VARIABLE, version N)`.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `200` answer to `GET /v1/secrets`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// `200` answer to `PUT /v1/secrets/{name}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SecretSet {
    pub name: String,
    pub version: u32,
}

/// `200` answer to `POST /v1/secrets/rekey`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Rekeyed {
    /// Versions sealed again under the node's current key.
    pub resealed: u64,
    /// Versions that key sealed already.
    pub current: u64,
}
