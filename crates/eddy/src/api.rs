//! Control API wire types (docs/api.md), as the CLI sends and reads them.
//!
//! Response types hold only the fields the CLI shows and ignore the rest, so the API can grow
//! without breaking older CLIs. `--json` output does not go through these types: it prints the
//! node's JSON as received.

pub use eddy_parse::api::{ConsumerRequest, CreateQueue};
pub use eddy_parse::manifest::{DeployConfig, FluidConfig, ScheduleConfig};
pub use eddy_parse::schedule::{Missed, Overlap};
use serde::{Deserialize, Serialize};

/// `201` answer to `POST /v1/functions/{name}/versions`.
#[derive(Deserialize, Debug)]
pub struct Deployed {
    pub function: String,
    pub version: u64,
    pub url: String,
    /// False when the node reused compiled code for identical bytes deployed before.
    pub compiled: bool,
    /// Settings the node changed to fit this version (a consumer's visibility timeout).
    #[serde(default)]
    pub adjusted: Vec<String>,
}

/// `GET /v1/functions`.
#[derive(Deserialize, Debug)]
pub struct FunctionList {
    pub functions: Vec<Function>,
}

/// One element of `GET /v1/functions`.
#[derive(Deserialize, Debug)]
pub struct Function {
    pub name: String,
    pub route: String,
    pub url: String,
    pub live_version: u64,
    pub memory_bytes_max: u64,
    pub timeout_ms: u64,
    /// RFC 3339, shown as the node wrote it.
    pub updated_at: String,
}

/// `GET /v1/functions/{name}/versions`.
#[derive(Deserialize, Debug)]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<Version>,
}

/// One element of `GET /v1/functions/{name}/versions`.
#[derive(Deserialize, Debug)]
pub struct Version {
    pub version: u64,
    pub live: bool,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size_bytes: u64,
    pub route: String,
    pub memory_bytes_max: u64,
    pub timeout_ms: u64,
    /// RFC 3339, shown as the node wrote it.
    pub created_at: String,
}

/// `200` answer to `DELETE /v1/functions/{name}`.
#[derive(Deserialize, Debug)]
pub struct Removed {
    pub removed: String,
}

/// Body of `POST /v1/functions/{name}/rollback`; no version means "the one before the live one".
#[derive(Serialize, Debug)]
pub struct RollbackRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `200` answer to `POST /v1/functions/{name}/rollback`.
#[derive(Deserialize, Debug)]
pub struct RolledBack {
    pub function: String,
    pub live_version: u64,
    pub previous_version: Option<u64>,
    /// Settings the node changed to fit the version now live.
    #[serde(default)]
    pub adjusted: Vec<String>,
}

/// `GET /v1/functions/{name}/logs`. Entries stay raw JSON so `--json` can print them exactly as
/// the node sent them; text output decodes each into a [`LogEntry`].
#[derive(Deserialize, Debug)]
pub struct LogPage {
    /// Oldest first.
    pub entries: Vec<serde_json::Value>,
    /// The cursor to pass as `after=` to get only newer entries.
    pub last_id: Option<u64>,
}

/// One invocation record from the logs endpoint.
#[derive(Deserialize, Debug)]
pub struct LogEntry {
    /// RFC 3339, shown as the node wrote it.
    pub at: String,
    pub version: u64,
    pub method: String,
    pub path: String,
    /// Absent when no response was sent (for example when the client went away).
    pub status: Option<u16>,
    pub outcome: String,
    pub duration_ms: f64,
    /// Captured stdout and stderr of the invocation, newline-separated.
    #[serde(default)]
    pub log: String,
}

/// `GET /v1/queues`.
#[derive(Deserialize, Debug)]
pub struct QueueList {
    /// In name order.
    pub queues: Vec<Queue>,
}

/// A queue with its counters and consumer: `GET /v1/queues/{name}` and the elements of
/// `GET /v1/queues`.
#[derive(Deserialize, Debug)]
pub struct Queue {
    pub name: String,
    /// Where messages go after their last failed attempt; none for a dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// The queue this one is the dead-letter queue of.
    pub dead_letter_of: Option<String>,
    pub idempotency_window_ms: Option<u64>,
    /// RFC 3339, shown as the node wrote it.
    pub created_at: String,
    pub depth: u64,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub delivered: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Age of the oldest message; none when the queue is empty.
    pub oldest_age_ms: Option<u64>,
    /// The consumer's current adaptive concurrency; 0 without a consumer.
    pub consumer_concurrency: u32,
    pub consumer: Option<Consumer>,
}

/// A consumer binding as the node holds it: the `200` answer to
/// `PUT /v1/queues/{name}/consumer` and the `consumer` of a [`Queue`].
#[derive(Deserialize, Debug)]
pub struct Consumer {
    pub function: String,
    pub batch_size: u32,
    pub max_concurrency: u32,
    pub visibility_timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub dead_letter: Option<String>,
    /// Request path of the deliveries; none means the function's route.
    pub path: Option<String>,
    /// Live state, reported with a queue: deliveries running and the circuit breaker
    /// (`closed`, `open` or `half_open`). The current concurrency is the queue's
    /// `consumer_concurrency`.
    pub in_flight: Option<u64>,
    pub breaker: Option<String>,
    /// Why deliveries wait, when a budget's hard cap paused them.
    #[serde(default)]
    pub paused_by_budget: Option<String>,
}

/// `202` answer to `POST /v1/queues/{name}/messages`.
#[derive(Deserialize, Debug)]
pub struct Sent {
    pub id: String,
    /// True when the idempotency key was seen within the window: nothing new was enqueued
    /// and `id` is the earlier message's.
    pub duplicate: bool,
}

/// `GET /v1/queues/{name}/messages?limit=N`.
#[derive(Deserialize, Debug)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<Message>,
}

/// One message as `peek` shows it.
#[derive(Deserialize, Debug)]
pub struct Message {
    pub id: String,
    pub attempts: u32,
    /// RFC 3339, shown as the node wrote it.
    pub enqueued_at: String,
    /// RFC 3339; when the message will next be delivered.
    pub visible_at: String,
    pub in_flight: bool,
    pub content_type: String,
    /// The payload when it is UTF-8 …
    pub data: Option<String>,
    /// … otherwise the payload in base64.
    pub data_base64: Option<String>,
    pub last_error: Option<String>,
}

/// `200` answer to `POST /v1/queues/{name}/redrive`.
#[derive(Deserialize, Debug)]
pub struct Redriven {
    pub moved: u64,
}

/// `200` answer to `POST /v1/queues/{name}/purge`.
#[derive(Deserialize, Debug)]
pub struct Purged {
    pub purged: u64,
}

/// `GET /v1/functions/{name}/websockets`.
#[derive(Deserialize, Debug)]
pub struct WebSocketList {
    pub function: String,
    /// Oldest first.
    pub connections: Vec<WebSocketConnection>,
    /// How long the function's closed connections were held open, in all, since the node
    /// started.
    pub connection_seconds_closed: f64,
}

/// One open connection of `GET /v1/functions/{name}/websockets`.
#[derive(Deserialize, Debug)]
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
#[derive(Deserialize, Debug)]
pub struct Broadcast {
    pub channel: String,
    /// Connections the message was queued for.
    pub sent: u64,
}

/// Every error the control API returns: `{"error": {"code": ..., "message": ...}}`.
#[derive(Deserialize, Debug)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Deserialize, Debug)]
pub struct ErrorDetail {
    pub code: String,
    /// Meant for people: it already says what to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn deploy_config_sends_only_given_fields() {
        assert_eq!(
            serde_json::to_string(&DeployConfig::default()).unwrap(),
            "{}"
        );
        let config = DeployConfig {
            timeout_ms: Some(2000),
            env: BTreeMap::from([("GREETING".to_owned(), "Hi".to_owned())]),
            ..DeployConfig::default()
        };
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"timeout_ms":2000,"env":{"GREETING":"Hi"}}"#
        );
    }

    #[test]
    fn a_schedule_sends_only_given_keys_in_the_documented_spelling() {
        let schedule = |overlap, missed| DeployConfig {
            schedule: Some(ScheduleConfig {
                cron: "*/5 * * * *".into(),
                timezone: None,
                overlap,
                missed,
                path: None,
            }),
            ..DeployConfig::default()
        };
        assert_eq!(
            serde_json::to_string(&schedule(None, None)).unwrap(),
            r#"{"schedule":{"cron":"*/5 * * * *"}}"#
        );
        assert_eq!(
            serde_json::to_string(&schedule(Some(Overlap::Allow), Some(Missed::RunOnce))).unwrap(),
            r#"{"schedule":{"cron":"*/5 * * * *","overlap":"allow","missed":"run-once"}}"#
        );
    }

    #[test]
    fn websocket_is_sent_only_when_given() {
        let config = DeployConfig {
            websocket: Some(true),
            ..DeployConfig::default()
        };
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"websocket":true}"#
        );
    }

    #[test]
    fn rollback_without_version_is_an_empty_object() {
        let body = serde_json::to_string(&RollbackRequest { version: None }).unwrap();
        assert_eq!(body, "{}");
    }

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
}
