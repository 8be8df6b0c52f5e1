//! The response future of a [`TokenGate`](super::TokenGate).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::TokenGateError;

/// The boxed work of one request: acquire, call, settle.
type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, TokenGateError<E>>> + Send + 'static>>;

/// The future returned by [`TokenGate::call`](super::TokenGate): waits for admission, calls
/// the inner service, and settles the permit with the response's usage.
///
/// `Send + 'static`: it holds a clone of the limiter, not a borrow, so it can be spawned. It is
/// boxed because the permit it holds borrows that clone.
///
/// # Cancel safety
/// Dropping it while it waits for admission leaves the queue and charges nothing; dropping it
/// while the inner service works frees the in-flight slot and keeps the reservation.
#[must_use = "futures do nothing unless polled: the request is neither admitted nor sent"]
pub struct ResponseFuture<T, E> {
    inner: Boxed<T, E>,
}

impl<T, E> ResponseFuture<T, E> {
    pub(super) fn new(
        future: impl Future<Output = Result<T, TokenGateError<E>>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, TokenGateError<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T, E> fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
