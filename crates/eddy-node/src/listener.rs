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
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    /// TLS, when the listener speaks it: the handshake must finish within
    /// `header_read_timeout`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2, when the listener offers it (only with TLS, through ALPN).
    pub http2: Option<Http2Limits>,
}

/// The client address of a connection, in each of its requests' extensions (the control
/// API's audit trail and authentication slowdown read it).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// HTTP/2's own bounds, for a listener that offers it (through ALPN, over TLS).
#[derive(Clone, Copy, Debug)]
pub struct Http2Limits {
    /// Streams (requests) one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub streams_per_connection_max: u32,
    /// Streams the client may open and reset before the node has accepted them, the rapid
    /// reset attack (CVE-2023-44487): past it the connection is closed with `GOAWAY`.
    pub pending_reset_streams_max: usize,
    /// Streams the node may reset for the client's errors before it closes the connection.
    pub local_error_resets_max: usize,
    /// Largest header list a request may send (`SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub header_list_bytes_max: u32,
}

/// Accept connections until `shutdown` fires, then wait up to the grace period for the
/// requests in flight. `service` answers the requests of the connection from `peer`.
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
    let h2_builder = limits.http2.map(|h2| {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2.streams_per_connection_max)
            .max_pending_accept_reset_streams(h2.pending_reset_streams_max)
            .max_local_error_reset_streams(h2.local_error_resets_max)
            .max_header_list_size(h2.header_list_bytes_max)
            // A peer that stops answering pings is gone: its connection is closed.
            .keep_alive_interval(Some(limits.header_read_timeout))
            .keep_alive_timeout(limits.header_read_timeout);
        builder
    });
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
            tokio::spawn(refuse(
                stream,
                limits.tls.is_some(),
                limits.connections_key,
                message,
            ));
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
                    tokio::spawn(refuse(
                        stream,
                        limits.tls.is_some(),
                        "connections_per_ip_max",
                        message,
                    ));
                    continue;
                }
            }
        };
        let stream = WriteTimeout::new(stream, limits.write_timeout);
        let service = service(peer);
        let stop = shutdown.clone();
        let tls = limits.tls.clone();
        let (h1, h2) = (builder.clone(), h2_builder.clone());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let ended = match tls {
                None => drive_http1(&h1, stream, service, &stop).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let accepted =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(stream)) => {
                            let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            match &h2 {
                                Some(h2) if alpn_h2 => {
                                    drive_http2(h2, stream, service, &stop, handshake_timeout).await
                                }
                                _ => drive_http1(&h1, stream, service, &stop).await,
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake took longer than header_read_timeout_ms");
                            Ok(())
                        }
                    }
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP/1.1 on `io` until it ends; on `stop`, lets the request in flight finish.
async fn drive_http1<I, S, B>(
    builder: &http1::Builder,
    io: I,
    service: S,
    stop: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stop.cancelled() => {
            // Finish the request in flight, then close (a WebSocket upgrade has left this
            // connection already).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// When an HTTP/2 connection last had work: requests in flight, and when the last one
/// came or ended.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from the connection's start to the latest request's start or end.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn touch(&self, started: tokio::time::Instant) {
        let ms = started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the connection has had no request in flight.
    fn idle_for(&self, started: tokio::time::Instant) -> Duration {
        if self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// A request counted in flight until its response (head) is ready, or it is dropped.
struct InFlight {
    activity: Arc<Activity>,
    started: tokio::time::Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch(self.started);
        self.activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A service that counts its requests in flight and notes when the last one came or ended.
struct Touching<S> {
    inner: S,
    started: tokio::time::Instant,
    activity: Arc<Activity>,
}

type BoxedFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, R> hyper::service::Service<R> for Touching<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxedFuture<S::Response, S::Error>;

    fn call(&self, request: R) -> Self::Future {
        let activity = &self.activity;
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        activity.touch(self.started);
        let guard = InFlight {
            activity: activity.clone(),
            started: self.started,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let answer = future.await;
            drop(guard);
            answer
        })
    }
}

/// Serves HTTP/2 on `io` until it ends. On `stop`, or when it has had no request in flight
/// for `idle` (`header_read_timeout`, as a kept-alive HTTP/1.1 connection), sends `GOAWAY`
/// and lets the streams in flight finish.
async fn drive_http2<I, S, B>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    service: S,
    stop: &CancellationToken,
    idle: Duration,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let started = tokio::time::Instant::now();
    let activity = Arc::new(Activity::default());
    let service = Touching {
        inner: service,
        started,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = stop.cancelled() => break,
            _ = check.tick() => {
                if activity.idle_for(started) >= idle {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
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

/// Answer a connection over a cap with `503`, `eddy-error: limit`, and close it. Over TLS
/// it is only closed: answering would cost a handshake for every connection refused, which
/// the cap is there to spare.
async fn refuse(mut stream: TcpStream, over_tls: bool, limit: &'static str, message: String) {
    if over_tls {
        return;
    }
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
