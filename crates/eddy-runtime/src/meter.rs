//! CPU time a guest actually spends running: the thread CPU clock, read around every poll
//! of its future. Time the guest spends parked (awaiting host I/O, the clock, admission)
//! is not polled, so it is not counted.

use std::future::Future;
use std::time::Duration;

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

/// Runs `future`, adding the thread CPU time of each of its polls to `cpu`.
pub(crate) async fn metered<F: Future>(future: F, cpu: &mut Duration) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let start = thread_cpu_time();
        let poll = future.as_mut().poll(cx);
        *cpu += thread_cpu_time().saturating_sub(start);
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
}
