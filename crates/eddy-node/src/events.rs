//! CloudEvents 1.0 for every event trigger: a queue message (binary mode alone, structured
//! JSON in a batch), a cron tick, a WebSocket message or close. One builder, so every
//! trigger's events carry the same attributes in the same form.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// `ce-type` of a queue message.
pub const QUEUE_EVENT_TYPE: &str = "dev.eddy.queue.message";
/// `ce-type` of a cron tick.
pub const TICK_EVENT_TYPE: &str = "dev.eddy.cron.tick";
/// `ce-type` of a WebSocket message.
pub const MESSAGE_EVENT_TYPE: &str = "dev.eddy.websocket.message";
/// `ce-type` of a WebSocket close.
pub const CLOSE_EVENT_TYPE: &str = "dev.eddy.websocket.close";
/// Content type of a batch of structured events.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// One event's context attributes.
pub struct CloudEvent {
    pub id: String,
    /// `ce-type`.
    pub kind: &'static str,
    pub source: String,
    /// `ce-time`, unix milliseconds.
    pub time_ms: i64,
    /// Extension attributes (lowercase names), with their JSON type for structured mode.
    pub extensions: Vec<(&'static str, Value)>,
}

impl CloudEvent {
    /// Binary mode: the attributes as `ce-` headers (the body is the data).
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        let mut put = |name: &str, value: &str| {
            headers.insert(
                HeaderName::from_bytes(format!("ce-{name}").as_bytes())
                    .expect("attribute names are lowercase ASCII"),
                header_value(value),
            );
        };
        put("specversion", "1.0");
        put("id", &self.id);
        put("type", self.kind);
        put("source", &self.source);
        put("time", &rfc3339(self.time_ms));
        for (name, value) in &self.extensions {
            match value {
                Value::String(text) => put(name, text),
                other => put(name, &other.to_string()),
            }
        }
    }

    /// Structured mode: the event as JSON, its data as JSON when the content type says so
    /// and it parses, as text when it is UTF-8, else as `data_base64`.
    pub fn structured(&self, content_type: &str, data: &[u8]) -> Value {
        let mut event = json!({
            "specversion": "1.0",
            "id": self.id,
            "type": self.kind,
            "source": self.source,
            "time": rfc3339(self.time_ms),
            "datacontenttype": content_type,
        });
        for (name, value) in &self.extensions {
            event[*name] = value.clone();
        }
        match std::str::from_utf8(data) {
            Ok(text) if content_type.contains("json") => {
                event["data"] = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text));
            }
            Ok(text) => event["data"] = json!(text),
            Err(_) => {
                event["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(data))
            }
        }
        event
    }
}

/// A header value from text the node did not write itself; `invalid` if it cannot be one.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub use eddy_parse::units::rfc3339_ms as rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CloudEvent {
        CloudEvent {
            id: "m-1".into(),
            kind: QUEUE_EVENT_TYPE,
            source: "/queues/orders".into(),
            time_ms: 1_798_761_600_000,
            extensions: vec![
                ("eddyattempt", json!(2)),
                ("eddyfirstenqueued", json!(rfc3339(0))),
            ],
        }
    }

    #[test]
    fn binary_and_structured_modes_carry_the_same_attributes() {
        let mut headers = HeaderMap::new();
        event().insert_headers(&mut headers);
        let header = |name: &str| headers[name].to_str().unwrap().to_string();
        assert_eq!(header("ce-specversion"), "1.0");
        assert_eq!(header("ce-id"), "m-1");
        assert_eq!(header("ce-type"), QUEUE_EVENT_TYPE);
        assert_eq!(header("ce-source"), "/queues/orders");
        assert_eq!(header("ce-time"), "2027-01-01T00:00:00.000Z");
        assert_eq!(header("ce-eddyattempt"), "2");
        assert_eq!(header("ce-eddyfirstenqueued"), "1970-01-01T00:00:00.000Z");

        let json = event().structured("application/json", br#"{"n":1}"#);
        assert_eq!(json["time"], "2027-01-01T00:00:00.000Z");
        assert_eq!(json["eddyattempt"], 2, "a number in JSON");
        assert_eq!(json["data"]["n"], 1);
        assert_eq!(
            event().structured("application/json", b"not json")["data"],
            "not json"
        );
        assert_eq!(event().structured("text/plain", b"{}")["data"], "{}");
        let binary = event().structured("application/octet-stream", &[0xff, 0]);
        assert_eq!(binary["data_base64"], "/wA=");
        assert!(binary.get("data").is_none());
    }
}
