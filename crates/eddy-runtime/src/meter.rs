//! CPU time a guest actually spends running, summed over the polls of its future. Time the
//! guest spends parked (awaiting host I/O, the clock, admission) is not polled, so it is not
//! counted.
//!
//! Each poll reads the thread CPU clock before it starts. A poll that ends within
//! `METER_WALL_CLOCK_POLL_MAX_NS` of wall time is counted as that wall time; a longer one
//! reads the thread CPU clock again and is counted as the difference. The thread CPU clock
//! is a system call (not in the vDSO): about 0.65 µs here, two per poll were 8% of the
//! node's CPU for a warm Rust hello under load. A short poll's wall time can only exceed
//! its CPU time by time the thread spent off the CPU within it, so the error per poll is
//! below that bound, and a poll the scheduler interrupted for longer is measured exactly.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::limits::METER_WALL_CLOCK_POLL_MAX_NS;

/// CPU time the calling thread has used.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the
    // kernel knows; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `future`, adding the CPU time of each of its polls to `cpu` (see the module docs).
pub(crate) async fn metered<F: Future>(future: F, cpu: &mut Duration) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let cpu_start = thread_cpu_time();
        let wall_start = Instant::now();
        let poll = future.as_mut().poll(cx);
        let wall = wall_start.elapsed();
        *cpu += if wall <= Duration::from_nanos(METER_WALL_CLOCK_POLL_MAX_NS) {
            wall
        } else {
            thread_cpu_time().saturating_sub(cpu_start)
        };
        poll
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_is_not_counted_and_spinning_is() {
        let mut cpu = Duration::ZERO;
        metered(tokio::time::sleep(Duration::from_millis(200)), &mut cpu).await;
        assert!(cpu < Duration::from_millis(50), "sleeping counted {cpu:?}");

        let mut cpu = Duration::ZERO;
        metered(
            async {
                let start = thread_cpu_time();
                while thread_cpu_time() - start < Duration::from_millis(30) {}
            },
            &mut cpu,
        )
        .await;
        assert!(
            cpu >= Duration::from_millis(30),
            "spinning counted only {cpu:?}"
        );
    }

    #[tokio::test]
    async fn a_short_poll_counts_at_least_its_cpu_and_at_most_its_wall_time() {
        let spin = Duration::from_micros(20);
        assert!(spin < Duration::from_nanos(METER_WALL_CLOCK_POLL_MAX_NS));
        let mut cpu = Duration::ZERO;
        let wall = Instant::now();
        metered(
            async {
                let start = thread_cpu_time();
                while thread_cpu_time() - start < spin {}
            },
            &mut cpu,
        )
        .await;
        let wall = wall.elapsed();
        assert!(cpu >= spin, "a {spin:?} spin counted as {cpu:?}");
        assert!(cpu <= wall, "{cpu:?} counted in {wall:?} of wall time");
    }
}
