//! The control API's request bodies and queries, and the name rules they are checked by.
//! The CLI serializes and the node deserializes with these very types
//! (`#[serde(deny_unknown_fields)]`: unknown keys are refused); what a value means against
//! the node's limits is the node's check. The answers are in `responses`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::routes::validate_name;
use crate::schedule::ScheduleSettings;

/// Longest queue name: room for the `-dlq` of its dead-letter queue within 63.
pub const QUEUE_NAME_BYTES_MAX: usize = 58;

/// Longest channel name.
pub const CHANNEL_NAME_BYTES_MAX: usize = 128;

/// The `config` part of a deploy (`POST /v1/functions/{name}/versions`), as the CLI sends
/// it (from flags or `eddy.toml`) and the node reads it. Every field is optional: only those
/// given are sent, and the node fills in its defaults for the rest. Unknown keys are refused.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: variable name → secret name. Each
    /// is pinned to the secret's latest version at this deploy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Hosts or URLs the function may call (`*` for any, only when given explicitly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
    /// Keep instances warm between requests. Either tuning key alone also turns it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_idle_timeout_ms: Option<u64>,
    /// Queues the function may publish to from inside
    /// (`POST http://eddy.local/queues/NAME`; `*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// A cron schedule that invokes the function (docs/cron.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSettings>,
    /// Hold WebSocket connections on the route and deliver their connect, message and close
    /// events to the function (docs/websockets.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<bool>,
}

/// Body of `POST /v1/functions/{name}/rollback`; empty, or no version, means the newest
/// version before the live one.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// Query of `GET /v1/functions/{name}/logs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    pub after: Option<i64>,
    pub tail: Option<usize>,
    pub limit: Option<usize>,
    pub wait_ms: Option<u64>,
}

/// Query of `GET /v1/functions/{name}/stats`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub since_ms: Option<u64>,
}

/// Query of `GET /v1/functions/{name}/series`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    pub since_ms: Option<u64>,
    pub step_ms: Option<u64>,
}

/// Query of `GET /v1/functions/{name}/logs/stream`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStreamQuery {
    pub after: Option<i64>,
}

/// Body of `POST /v1/queues`, as the CLI sends it and the node reads it; the node's default
/// idempotency window when none is given.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_window_ms: Option<u64>,
}

/// Body of `POST /v1/queues/{name}/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPublish {
    pub messages: Vec<BatchMessage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// One message of a batch: `data` (UTF-8) or `data_base64`.
pub struct BatchMessage {
    pub data: Option<String>,
    pub data_base64: Option<String>,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Query of `GET /v1/queues/{name}/messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeekQuery {
    pub limit: Option<u32>,
}

/// Body of `PUT /v1/queues/{name}/consumer`: the function that receives the queue's
/// messages. The CLI sends only the fields the user gave; the node fills in its defaults.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRequest {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Query of `GET /v1/cost`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostQuery {
    pub function: Option<String>,
    /// Window length; default: from the start of the calendar month (UTC).
    pub since_ms: Option<u64>,
    /// Comma-separated sheet names; default: every sheet.
    pub sheet: Option<String>,
}

/// Check a queue name: a function name that leaves room for `-dlq`.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    validate_name(name).map_err(|_| {
        format!(
            "queue name `{name}` is invalid: use 1-{QUEUE_NAME_BYTES_MAX} characters of a-z, 0-9 and `-`, starting with a letter"
        )
    })?;
    if name.len() > QUEUE_NAME_BYTES_MAX {
        return Err(format!(
            "queue name `{name}` is longer than {QUEUE_NAME_BYTES_MAX} characters (its dead-letter queue adds `-dlq`)"
        ));
    }
    Ok(())
}

/// Check a channel name: 1-128 of `A-Z a-z 0-9 . _ ~ -`, so it reads the same in a URL
/// path whoever writes it.
pub fn validate_channel(name: &str) -> Result<(), String> {
    let ok = (1..=CHANNEL_NAME_BYTES_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "channel name `{name}` is invalid: use 1-{CHANNEL_NAME_BYTES_MAX} characters of A-Z, a-z, 0-9 and `._~-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schedule::{Missed, Overlap};

    #[test]
    fn deploy_config_sends_only_given_fields() {
        assert_eq!(
            serde_json::to_string(&DeployRequest::default()).unwrap(),
            "{}"
        );
        let config = DeployRequest {
            timeout_ms: Some(2000),
            env: BTreeMap::from([("GREETING".to_owned(), "Hi".to_owned())]),
            ..DeployRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"timeout_ms":2000,"env":{"GREETING":"Hi"}}"#
        );
    }

    #[test]
    fn a_schedule_sends_only_given_keys_in_the_documented_spelling() {
        let schedule = |overlap, missed| DeployRequest {
            schedule: Some(ScheduleSettings {
                cron: "*/5 * * * *".into(),
                timezone: None,
                overlap,
                missed,
                path: None,
            }),
            ..DeployRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&schedule(Overlap::default(), Missed::default())).unwrap(),
            r#"{"schedule":{"cron":"*/5 * * * *"}}"#
        );
        assert_eq!(
            serde_json::to_string(&schedule(Overlap::Allow, Missed::RunOnce)).unwrap(),
            r#"{"schedule":{"cron":"*/5 * * * *","overlap":"allow","missed":"run-once"}}"#
        );
    }

    #[test]
    fn websocket_is_sent_only_when_given() {
        let config = DeployRequest {
            websocket: Some(true),
            ..DeployRequest::default()
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
}

/// Body of `POST /v1/tokens`.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// `admin`, `deployer`, `reader` or `publisher`.
    pub role: String,
    /// Functions the token may touch; empty: every function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Secrets a deployer token may bind; empty: every secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The token stops working this long after it is made; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// Query of `GET /v1/audit`.
#[derive(Deserialize, Serialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries of the last `since_ms` milliseconds.
    pub since_ms: Option<u64>,
    /// Only entries with a greater id.
    pub after: Option<i64>,
    pub limit: Option<usize>,
}
