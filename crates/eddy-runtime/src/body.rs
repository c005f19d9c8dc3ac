//! Request and response bodies that count bytes and stop at the function's limits.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use tokio::sync::Notify;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

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
}

impl<B> LimitedRequestBody<B> {
    pub(crate) fn new(inner: B, bytes_max: u64, flag: Arc<LimitFlag>) -> Self {
        LimitedRequestBody {
            inner,
            seen_bytes: 0,
            bytes_max,
            flag,
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
    ) -> ResponseBody {
        ResponseBody {
            inner,
            counted: Some(Counted {
                seen_bytes: 0,
                bytes_max,
                flag,
                aborted,
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
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
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
        let aborted = self.counted.as_ref().is_some_and(|c| c.aborted.hit());
        !aborted && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
