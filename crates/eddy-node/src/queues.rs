//! Durable queues on the node: publishing (control API and, from inside a function,
//! `POST http://eddy.local/queues/NAME`), the checks every publish passes, and waking the
//! queue's consumer when messages arrive. Deliveries are `consumer.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eddy_store::{NewMessage, Published, QueueBackend, QueueLimits, StoreError};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Notify;

use crate::config::{LimitsConfig, QUEUE_PUBLISH_BATCH_MAX};
use crate::problem::{Kind, Problem};
pub use eddy_parse::api::validate_queue_name;

/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Content type of a message published without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The node's queues: the store, the limits a publish is checked against, and a wake-up
/// per queue for its consumer.
pub struct QueueHub {
    pub store: Arc<dyn QueueBackend>,
    pub limits: LimitsConfig,
    wakers: Mutex<HashMap<String, Arc<Wake>>>,
}

/// Wakes a queue's consumer when messages may have become ready, and counts the wake-ups so
/// that a claim that found nothing can tell whether something arrived since it began.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    seq: AtomicU64,
}

impl Wake {
    /// Messages may be ready: wake the consumer (or let its next wait return at once).
    pub fn wake(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Wake-ups so far.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Wait for the next wake-up (or one that came while nobody waited).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl QueueHub {
    pub fn new(store: Arc<dyn QueueBackend>, mut limits: LimitsConfig) -> QueueHub {
        // A message must fit in the request that delivers it.
        limits.queue_message_bytes_max = limits
            .queue_message_bytes_max
            .min(limits.request_body_bytes_max);
        QueueHub {
            store,
            limits,
            wakers: Mutex::new(HashMap::new()),
        }
    }

    /// What the consumer of `queue` waits on for new messages.
    pub fn waker(&self, queue: &str) -> Arc<Wake> {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    /// Check and enqueue `messages` (all or none), then wake the queue's consumer.
    pub async fn publish(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, Problem> {
        if messages.len() > QUEUE_PUBLISH_BATCH_MAX {
            return Err(Problem::limit(format!(
                "{} messages in one publish is above queue_publish_batch_max ({QUEUE_PUBLISH_BATCH_MAX}); split the batch",
                messages.len()
            )));
        }
        let bytes_max = self.limits.queue_message_bytes_max;
        for (i, message) in messages.iter().enumerate() {
            if message.body.len() as u64 > bytes_max {
                return Err(message_too_large(
                    Some(message.body.len() as u64),
                    bytes_max,
                    i,
                ));
            }
            if let Some(key) = &message.idempotency_key {
                check_idempotency_key(key)?;
            }
        }
        let published = self
            .store
            .publish(
                queue,
                messages,
                QueueLimits {
                    depth_max: self.limits.queue_depth_max,
                    bytes_max: self.limits.queue_bytes_max,
                },
            )
            .await
            .map_err(queue_error)?;
        if published.iter().any(|p| !p.duplicate) {
            self.waker(queue).wake();
        }
        Ok(published)
    }
}

pub fn check_idempotency_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(Problem::invalid(format!(
            "an idempotency key must be 1-{IDEMPOTENCY_KEY_BYTES_MAX} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// A message body, read to its end within `bytes_max` (413 past it).
pub async fn read_message<B>(body: B, bytes_max: u64) -> Result<Bytes, Problem>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_limited(body, bytes_max, "queue_message_bytes_max").await
}

/// A body read to its end within `bytes_max`; past it, 413 naming `limit`.
pub async fn read_limited<B>(body: B, bytes_max: u64, limit: &'static str) -> Result<Bytes, Problem>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Ok(Limited::new(body, bytes_max as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Problem::new(
            Kind::TooLarge,
                    limit,
                    format!(
                        "the message is above this node's {limit} ({bytes_max} bytes) — send a smaller one, or raise limits.{limit}"
                    ),
                )
            } else {
                Problem::invalid(format!("reading the message body failed: {e}"))
            }
        })?
        .to_bytes())
}

/// 413 for a message above `queue_message_bytes_max`.
pub fn message_too_large(size: Option<u64>, max: u64, index: usize) -> Problem {
    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
    Problem::new(
        Kind::TooLarge,
        "queue_message_bytes_max",
        format!(
            "message {index}{size} is above this node's queue_message_bytes_max ({max} bytes; never more than request_body_bytes_max); send a reference to the data instead, or raise limits.queue_message_bytes_max"
        ),
    )
}

/// The control-API error for a store error of a queue operation.
pub fn queue_error(e: StoreError) -> Problem {
    if e.is_full() {
        return Problem::new(
            Kind::Full,
            "queues_bytes_max",
            format!(
                "the queue database is full (limits.queues_bytes_max, or the disk): nothing of this was stored; retry once consumers have caught up, purge a queue, or raise limits.queues_bytes_max ({e})"
            ),
        );
    }
    match e {
        StoreError::NotFound { what } => Problem::new(
            Kind::NotFound,
            "no_queue",
            format!("no {what}; create it with `eddy queue create`, see `eddy queue ls`"),
        ),
        StoreError::AlreadyExists { what } => Problem::new(
            Kind::Conflict,
            "queue_exists",
            format!("{what} already exists"),
        ),
        StoreError::Conflict(message) => Problem::new(Kind::Conflict, "conflict", message),
        e @ StoreError::BytesLimit { .. } => Problem::new(
            Kind::Full,
            "queue_bytes_max",
            format!("{e}; retry once its consumer has caught up, or raise limits.queue_bytes_max"),
        ),
        e @ StoreError::DepthLimit { .. } => Problem::new(
            Kind::Busy,
            "queue_depth_max",
            format!("{e}; retry once its consumer has caught up, or raise limits.queue_depth_max"),
        ),
        other => Problem::internal("the queue store failed", other),
    }
}
