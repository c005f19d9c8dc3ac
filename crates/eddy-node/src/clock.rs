//! The node's clock, handed down from the node to every part that reads the time.
//!
//! Two kinds of time: monotonic (tokio's `Instant`, for deadlines, backoff and the circuit
//! breaker) and calendar (unix milliseconds, for cron ticks, budget months, leases and
//! record timestamps). A test clock ([`Clock::starting_at`]) ties the calendar to tokio's
//! clock, so under `#[tokio::test(start_paused = true)]` one paused clock moves both: a
//! month end or a day of cron ticks passes in milliseconds of real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The node's clock. Cheap to clone.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `None`: the system's calendar. `Some((unix_ms, at))`: the calendar read `unix_ms`
    /// at tokio's instant `at` and moves with tokio's clock from there.
    test: Option<(i64, Instant)>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system's calendar and tokio's monotonic clock: what a node runs on.
    pub fn system() -> Clock {
        Clock { test: None }
    }

    /// A test clock whose calendar reads `unix_ms` now and moves with tokio's clock, which a
    /// paused runtime advances only when every task waits.
    pub fn starting_at(unix_ms: i64) -> Clock {
        Clock {
            test: Some((unix_ms, Instant::now())),
        }
    }

    /// Calendar time, in milliseconds since the unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self.test {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            Some((unix_ms, at)) => unix_ms + at.elapsed().as_millis() as i64,
        }
    }

    /// Monotonic time.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Waits until the calendar reads `unix_ms` or later; never returns early, even when the
    /// calendar and the monotonic clock drift apart (as the system's can, under NTP).
    pub async fn sleep_until_ms(&self, unix_ms: i64) {
        loop {
            let left = unix_ms - self.now_ms();
            if left <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(left as u64)).await;
        }
    }

    /// The duration from now until calendar time `unix_ms` (zero if it has passed).
    pub fn until_ms(&self, unix_ms: i64) -> Duration {
        Duration::from_millis(unix_ms.saturating_sub(self.now_ms()).max(0) as u64)
    }
}

/// Runs `work` on tokio's blocking pool every `period` until `shutdown`, one run at a time:
/// how the node re-reads files the operator may replace (the TLS certificate, the secrets
/// key).
pub async fn every_on_blocking_pool(
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    work: impl Fn() + Send + Sync + 'static,
) {
    let work = std::sync::Arc::new(work);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let work = work.clone();
        let _ = tokio::task::spawn_blocking(move || work()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_test_clock_moves_the_calendar_with_paused_time() {
        let clock = Clock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        let before = clock.instant();
        // A day passes at once: the paused runtime jumps to the sleep's end.
        clock.sleep_until_ms(1_000_000 + 86_400_000).await;
        assert_eq!(clock.now_ms(), 1_000_000 + 86_400_000);
        assert_eq!(clock.instant() - before, Duration::from_secs(86_400));
        assert_eq!(clock.until_ms(1_000_000), Duration::ZERO);
        assert_eq!(clock.until_ms(clock.now_ms() + 5), Duration::from_millis(5));
    }

    #[test]
    fn the_system_clock_reads_the_calendar() {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let read = Clock::system().now_ms();
        assert!((read - system).abs() < 60_000, "{read} vs {system}");
    }
}
