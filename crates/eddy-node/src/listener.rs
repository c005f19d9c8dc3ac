//! Accepting connections, the same way on both listeners: a cap on open connections, node-wide
//! and per client address; a time limit on reading a request's head (which also bounds how
//! long a kept-alive connection may sit idle); a time limit on every write, so a client that
//! stops reading is cut off instead of holding its connection (and, upgraded, its WebSocket)
//! forever; and a graceful shutdown that lets requests in flight finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use eddy_runtime::destinations::IpNet;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::invoker::ERROR_HEADER;

/// How long a refused connection gets to receive its 503 before it is closed.
pub const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (usually EMFILE) instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The bounds of one listener.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// The config key of `connections_max`, named when a connection is refused.
    pub connections_key: &'static str,
    pub connections_max: usize,
    pub connections_per_ip_max: usize,
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    /// hyper's read buffer: the most a request head may take.
    pub read_buffer_bytes: usize,
    /// Load balancers whose connections carry many clients: no per-address cap for them.
    pub trusted_proxies: Arc<[IpNet]>,
    pub shutdown_grace: Duration,
}

/// Accept connections until `shutdown` fires, then wait up to the grace period for the
/// requests in flight. `service` answers the requests of the connection from `peer`.
/// The client address of a connection, in each of its requests' extensions (the control
/// API's audit trail and authentication slowdown read it).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

pub async fn serve<S, F, B>(
    listener: TcpListener,
    limits: ListenerLimits,
    shutdown: CancellationToken,
    service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let per_ip = Arc::new(PerAddress::default());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.read_buffer_bytes)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            let message = format!(
                "this node has reached {} ({} open connections); retry shortly",
                limits.connections_key, limits.connections_max
            );
            tokio::spawn(refuse(stream, limits.connections_key, message));
            continue;
        };
        let trusted = limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()));
        let address = if trusted {
            None
        } else {
            match per_ip.hold(peer.ip(), limits.connections_per_ip_max) {
                Some(held) => Some(held),
                None => {
                    let message = format!(
                        "{} already has connections_per_ip_max ({}) connections open to this node; close some, or retry shortly",
                        peer.ip(),
                        limits.connections_per_ip_max
                    );
                    tokio::spawn(refuse(stream, "connections_per_ip_max", message));
                    continue;
                }
            }
        };
        let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        let conn = builder.serve_connection(io, service(peer)).with_upgrades();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close (a WebSocket upgrade has
                    // left this connection already).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop((permit, address));
        });
    }
    drop(listener);
    // Every connection holds a permit until it has ended.
    let all = u32::try_from(limits.connections_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "in-flight requests did not finish within the grace period"
        );
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
struct AddressHold {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn hold(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressHold> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressHold {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressHold {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Answer a connection over a cap with `503`, `eddy-error: limit`, and close it.
async fn refuse(mut stream: TcpStream, limit: &'static str, message: String) {
    let body = format!("{message}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n{ERROR_HEADER}: {limit}\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A stream whose writes fail with `TimedOut` when the peer takes none of the bytes for
/// `timeout` (a client that stopped reading).
pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Running while a write waits for room.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> WriteTimeout<T> {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `poll` made progress: forget the stall; it is waiting: fail once it waited too long.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client took no data for write_timeout_ms ({} ms)",
                timeout.as_millis()
            ),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
