//! Settling a call's permit from what its reply says it used.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::clock::Clock;
use crate::feedback::usage::StreamUsage;

/// A permit waiting for its reply, and what settling it needs.
pub(super) type Pending<C> = crate::call::PendingCall<C>;

/// A streamed reply body (`text/event-stream`) that reads the usage from the events as they
/// pass, and settles the permit when the stream ends, breaks, or is dropped.
pub(super) struct MeteredBody<C: Clock> {
    inner: ::reqwest::Body,
    meter: Option<StreamUsage>,
    pending: Option<Pending<C>>,
}

impl<C: Clock> MeteredBody<C> {
    pub(super) fn new(inner: ::reqwest::Body, pending: Pending<C>) -> Self {
        Self {
            inner,
            meter: Some(StreamUsage::new()),
            pending: Some(pending),
        }
    }

    /// Settles with what was seen, once. A stream cut short keeps its output reservation
    /// ([`ReplyUsage::usage`] of an incomplete reply); one with no usage keeps it all.
    fn finish(&mut self) {
        if let (Some(meter), Some(pending)) = (self.meter.take(), self.pending.take()) {
            pending.settle(meter.finish());
        }
    }
}

impl<C: Clock> HttpBody for MeteredBody<C> {
    type Data = Bytes;
    type Error = ::reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Every field is Unpin.
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(meter)) = (frame.data_ref(), &mut this.meter) {
                    meter.push(data);
                }
            }
            Some(Err(_)) | None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<C: Clock> Drop for MeteredBody<C> {
    fn drop(&mut self) {
        self.finish();
    }
}
