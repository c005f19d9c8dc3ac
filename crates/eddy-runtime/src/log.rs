//! Captures a guest's stdout and stderr into one bounded buffer per invocation.
//!
//! Output past the limit is dropped and counted, never reported to the guest as an error:
//! a chatty function must not fail because it logs too much (Rust's `println!` panics on a
//! write error).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write the guest is offered at once.
const WRITE_PERMIT_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct LogPipe {
    inner: Arc<Mutex<LogBuf>>,
}

struct LogBuf {
    bytes: Vec<u8>,
    bytes_max: usize,
    dropped_bytes: u64,
}

impl LogPipe {
    pub(crate) fn new(bytes_max: usize) -> LogPipe {
        LogPipe {
            inner: Arc::new(Mutex::new(LogBuf {
                bytes: Vec::new(),
                bytes_max,
                dropped_bytes: 0,
            })),
        }
    }

    /// Append a line written by the host on the guest's behalf (for example a refused request).
    pub(crate) fn note(&self, line: &str) {
        self.append(format!("{line}\n").as_bytes());
    }

    /// The captured text, with a marker if anything was dropped.
    pub(crate) fn take(&self) -> String {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from_utf8_lossy(&std::mem::take(&mut buf.bytes)).into_owned();
        if buf.dropped_bytes > 0 {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "[eddy: {} more bytes of output dropped: log_bytes_per_invocation_max is {}]\n",
                buf.dropped_bytes, buf.bytes_max
            ));
            // A reused instance starts its next invocation's log empty.
            buf.dropped_bytes = 0;
        }
        text
    }

    fn append(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = buf.bytes_max.saturating_sub(buf.bytes.len());
        let kept = data.len().min(room);
        buf.bytes.extend_from_slice(&data[..kept]);
        buf.dropped_bytes += (data.len() - kept) as u64;
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_limit_and_says_how_much_was_dropped() {
        let pipe = LogPipe::new(8);
        pipe.append(b"12345");
        pipe.append(b"67890");
        let text = pipe.take();
        assert!(text.starts_with("12345678\n"), "{text}");
        assert!(text.contains("2 more bytes of output dropped"), "{text}");
    }
}
