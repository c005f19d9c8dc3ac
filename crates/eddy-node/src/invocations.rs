//! Invocation records: queued off the request path, written to the store in batches, and
//! handed to `logs` long polls as they land.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eddy_store::{InvocationStore, NewInvocation, Retention};
use tokio::sync::{mpsc, watch};

use crate::config::INVOCATION_QUEUE_CAPACITY;
use crate::metering::Meter;

/// Records written per store transaction at most.
const BATCH_RECORDS_MAX: usize = 512;
/// How often old records are expired even when no new ones arrive.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
/// How often per-minute invocation totals are written to the store.
pub const ROLLUP_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the request path drops finished invocations. Cloning is cheap.
#[derive(Clone)]
pub struct InvocationSink {
    tx: mpsc::Sender<NewInvocation>,
    dropped: Arc<AtomicU64>,
}

/// The background writer; `run` until the sink is closed, then everything queued is written.
pub struct InvocationWriter {
    rx: mpsc::Receiver<NewInvocation>,
    store: Arc<dyn InvocationStore>,
    retention: Retention,
    written: watch::Sender<u64>,
    meter: Arc<Meter>,
    rollup_retention_ms: i64,
    clock: crate::clock::Clock,
}

/// Creates the sink, its writer, and a receiver that changes after every written batch.
pub fn channel(
    store: Arc<dyn InvocationStore>,
    retention: Retention,
    meter: Arc<Meter>,
    rollup_retention_ms: i64,
    clock: crate::clock::Clock,
) -> (InvocationSink, InvocationWriter, watch::Receiver<u64>) {
    let (tx, rx) = mpsc::channel(INVOCATION_QUEUE_CAPACITY);
    let (written, written_rx) = watch::channel(0);
    let sink = InvocationSink {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    (
        sink,
        InvocationWriter {
            rx,
            store,
            retention,
            written,
            meter,
            rollup_retention_ms,
            clock,
        },
        written_rx,
    )
}

impl InvocationSink {
    /// Queue a record; never waits. If the queue is full the record is dropped and counted.
    pub fn record(&self, invocation: NewInvocation) {
        if self.tx.try_send(invocation).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "invocation records dropped: the store is not keeping up"
                );
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl InvocationWriter {
    /// Write batches until every sink is dropped and the queue is empty; expire old records
    /// every `EXPIRY_INTERVAL` meanwhile.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH_RECORDS_MAX);
        let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
        let mut flush = tokio::time::interval(ROLLUP_FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.rx.recv_many(&mut batch, BATCH_RECORDS_MAX) => {
                    if received == 0 {
                        self.flush_rollups().await;
                        return;
                    }
                    self.write(std::mem::take(&mut batch)).await;
                    // Let a burst accumulate into the next batch instead of one transaction per record.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                _ = expiry.tick() => self.expire().await,
                _ = flush.tick() => self.flush_rollups().await,
            }
        }
    }

    /// Move the meter's pending per-minute totals into the store. Stats queries wait for
    /// the move (the gate), so they never see a minute twice or not at all.
    async fn flush_rollups(&self) {
        let _gate = self.meter.flush_gate.write().await;
        let rollups = self.meter.take_pending();
        let cutoff_ms = self.clock.now_ms().saturating_sub(self.rollup_retention_ms);
        if rollups.is_empty() {
            return;
        }
        let count = rollups.len();
        if let Err(e) = self.store.add_rollups(rollups.clone(), cutoff_ms).await {
            // Kept for the next flush: a busy or briefly failing disk loses no totals.
            tracing::error!(error = %e, count, "cannot write invocation totals; will retry");
            self.meter.restore_pending(rollups);
        }
    }

    async fn write(&self, records: Vec<NewInvocation>) {
        let count = records.len() as u64;
        match self.store.append_invocations(records, self.retention).await {
            Ok(()) => self.written.send_modify(|n| *n += count),
            Err(e) => tracing::error!(error = %e, count, "cannot write invocation records"),
        }
    }

    async fn expire(&self) {
        match self.store.expire_invocations(self.retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired old invocation records"),
            Err(e) => tracing::error!(error = %e, "cannot expire invocation records"),
        }
    }
}
