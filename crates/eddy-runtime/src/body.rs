//! Request and response bodies that count bytes and stop at the function's limits.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use tokio::sync::{Notify, oneshot};
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::invoke::Completion;

/// Shared between a limited body and the invocation that watches it.
#[derive(Default)]
pub(crate) struct LimitFlag {
    hit: AtomicBool,
    notify: Notify,
}

impl LimitFlag {
    pub(crate) fn hit(&self) -> bool {
        self.hit.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.hit.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the limit has been hit.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.hit() {
                return;
            }
            notified.await;
        }
    }
}

/// The incoming request body as the guest reads it: an error once more than
/// `bytes_max` have arrived, which the guest sees as `HTTP-request-body-size`.
pub(crate) struct LimitedRequestBody<B> {
    inner: B,
    seen_bytes: u64,
    bytes_max: u64,
    flag: Arc<LimitFlag>,
    /// Shared count of `seen_bytes`, for metering.
    counter: Arc<AtomicU64>,
}

impl<B> LimitedRequestBody<B> {
    pub(crate) fn new(
        inner: B,
        bytes_max: u64,
        flag: Arc<LimitFlag>,
        counter: Arc<AtomicU64>,
    ) -> Self {
        LimitedRequestBody {
            inner,
            seen_bytes: 0,
            bytes_max,
            flag,
            counter,
        }
    }
}

impl<B> Body for LimitedRequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<HttpError>,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.flag.hit() {
            return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(
                self.bytes_max,
            )))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let frame = match frame {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            self.seen_bytes += data.len() as u64;
            self.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            if self.seen_bytes > self.bytes_max {
                self.flag.set();
                return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(
                    self.bytes_max,
                )))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body: either the guest's stream, counted against the response-body limit,
/// or a short message written by the node itself.
pub struct ResponseBody {
    inner: UnsyncBoxBody<Bytes, HttpError>,
    counted: Option<Counted>,
}

struct Counted {
    seen_bytes: u64,
    bytes_max: u64,
    flag: Arc<LimitFlag>,
    /// Set when the guest failed before finishing its body.
    aborted: Arc<LimitFlag>,
    /// The invocation's report waits for this body to end (or be dropped).
    completion: Arc<Completion>,
    /// With reuse: resolves once the guest's instance is back in its pool (or dropped).
    /// The body's end is held back until then, so a caller that sends its next request
    /// as soon as this response ends finds the warm instance.
    settled: Option<oneshot::Receiver<()>>,
    /// The guest's body has ended; only the settlement is awaited.
    inner_ended: bool,
}

impl ResponseBody {
    /// A complete body written by the node (errors, health checks).
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let inner = Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed_unsync();
        ResponseBody {
            inner,
            counted: None,
        }
    }

    pub(crate) fn guest(
        inner: HyperOutgoingBody,
        bytes_max: u64,
        flag: Arc<LimitFlag>,
        aborted: Arc<LimitFlag>,
        completion: Arc<Completion>,
        settled: Option<oneshot::Receiver<()>>,
    ) -> ResponseBody {
        ResponseBody {
            inner,
            counted: Some(Counted {
                seen_bytes: 0,
                bytes_max,
                flag,
                aborted,
                completion,
                settled,
                inner_ended: false,
            }),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        let frame = match &mut this.counted {
            Some(counted) if counted.inner_ended => None,
            _ => ready!(Pin::new(&mut this.inner).poll_frame(cx)),
        };
        if frame.is_none()
            && let Some(counted) = &mut this.counted
        {
            counted.inner_ended = true;
            if let Some(settled) = &mut counted.settled {
                // Err: the sender was dropped, which settles it too.
                let _ = ready!(Pin::new(settled).poll(cx));
                counted.settled = None;
            }
        }
        if frame.is_none()
            && let Some(counted) = &this.counted
            && counted.aborted.hit()
        {
            return Poll::Ready(Some(Err(HttpError::HttpResponseIncomplete)));
        }
        if let (Some(Ok(frame)), Some(counted)) = (&frame, &mut this.counted)
            && let Some(data) = frame.data_ref()
        {
            counted.seen_bytes += data.len() as u64;
            counted.completion.add_response_bytes(data.len() as u64);
            if counted.seen_bytes > counted.bytes_max {
                counted.flag.set();
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                    counted.bytes_max,
                )))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let held = self
            .counted
            .as_ref()
            .is_some_and(|c| c.aborted.hit() || c.settled.is_some());
        !held && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
