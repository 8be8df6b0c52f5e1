//! The async front end: a future over [`Waiting`] that sleeps on tokio's timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use super::keys::KeyNames;
use super::waiter::{Step, Waiting};
use super::{Limiter, Permit};
use crate::clock::Clock;
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

/// The future returned by [`Limiter::acquire`] and [`Limiter::acquire_timeout`].
///
/// # Cancel safety
/// Dropping it before it completes leaves the queue and charges nothing; the next waiter is
/// woken if this one was at the head. On a store-backed limiter
/// ([`Limiter::with_store`]), dropping it while it sleeps towards its reserved instant cancels
/// the reservation on the store (in a task of its own).
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'a, C: Clock> {
    inner: Inner<'a, C>,
}

/// Where the acquisition is decided: in memory, or on the limiter's store.
enum Inner<'a, C: Clock> {
    Local(Local<'a, C>),
    Remote(Remote<'a, C>),
}

/// The acquisition on the store, boxed. The mutex makes the future `Sync` as the in-memory
/// one is, without locking: it is only ever reached through `&mut` (`get_mut`).
type Remote<'a, C> = std::sync::Mutex<
    Pin<Box<dyn Future<Output = Result<Permit<'a, C>, AcquireError>> + Send + 'a>>,
>;

impl<C: Clock + std::fmt::Debug> std::fmt::Debug for Inner<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Local(local) => local.fmt(f),
            Inner::Remote(_) => f.write_str("Remote"),
        }
    }
}

/// A waiting acquisition on the in-memory limiter.
#[derive(Debug)]
struct Local<'a, C: Clock> {
    waiting: Waiting<'a, C>,
    /// This waiter's own timer and the instant it is set for: boxed, and made only when this
    /// waiter must wake itself (a timeout, or no shared head timer), so queued waiters stay small.
    sleep: Option<(Nanos, Pin<Box<Sleep>>)>,
}

impl<'a, C: Clock> Future for Acquire<'a, C> {
    type Output = Result<Permit<'a, C>, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Never self-referential: Acquire is Unpin.
        match &mut self.inner {
            Inner::Local(local) => local.poll(cx),
            Inner::Remote(remote) => remote
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
                .poll(cx),
        }
    }
}

impl<'a, C: Clock> Local<'a, C> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit<'a, C>, AcquireError>> {
        let this = self;
        loop {
            match this.waiting.poll_step(cx.waker()) {
                Step::Done(result) => {
                    this.sleep = None;
                    return Poll::Ready(result);
                }
                Step::Pending(None) => {
                    this.sleep = None;
                    return Poll::Pending;
                }
                Step::Pending(Some(at)) => {
                    let now = this.waiting.clock_now();
                    let wait = Duration::from_nanos(at.saturating_sub(now));
                    let deadline = tokio::time::Instant::now() + wait;
                    match &mut this.sleep {
                        Some((set_for, sleep)) if *set_for == at => {
                            if sleep.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                        }
                        slot => {
                            let mut sleep = match slot.take() {
                                Some((_, mut s)) => {
                                    s.as_mut().reset(deadline);
                                    s
                                }
                                None => Box::pin(tokio::time::sleep_until(deadline)),
                            };
                            let ready = sleep.as_mut().poll(cx).is_ready();
                            *slot = Some((at, sleep));
                            if !ready {
                                return Poll::Pending;
                            }
                        }
                    }
                    // The timer fired: try again. If the clock has not reached `at` yet (a
                    // clock that is not tokio's), the next step sets a fresh timer.
                    this.sleep = None;
                }
            }
        }
    }
}

impl<C: Clock> Limiter<C> {
    /// Waits until `cost` is admitted on every limit, in FIFO order, and returns the permit.
    ///
    /// # Errors
    /// [`AcquireError::Exceeds`] at once when the cost is above a limit's capacity. On a
    /// store-backed limiter ([`with_store`](Self::with_store)): [`AcquireError::Timeout`] when
    /// the wait exceeds [`max_pause`](Self::max_pause), and [`AcquireError::Store`] when the
    /// store fails (see [`on_store_error`](Self::on_store_error)).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the queue and charges nothing.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::{Cost, Limiter, Policy, Usage};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).input_tokens_per_minute(30_000).build()?);
    /// let permit = limiter.acquire(Cost::request().input(1_200)).await?;
    /// permit.settle(Usage::new().input(1_180));
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire(&self, cost: Cost) -> Acquire<'_, C> {
        self.acquire_on(None, cost, None)
    }

    /// [`acquire`](Self::acquire), returning a permit that holds a handle of the limiter
    /// rather than a borrow ([`Permit::into_owned`](crate::Permit::into_owned)): one that can
    /// move into a spawned task, as tokio's `Semaphore::acquire_owned` does.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::{Cost, Limiter, Policy, Usage};
    ///
    /// let limiter = Limiter::new(Policy::builder().output_tokens_per_minute(8_000).build()?);
    /// let permit = limiter.acquire_owned(Cost::request().output(800)).await?;
    /// // The call runs in a task of its own, which settles the permit.
    /// tokio::spawn(async move { permit.settle(Usage::new().output(120)) }).await?;
    /// assert_eq!(limiter.stats().limits[0].used, 120);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_owned(&self, cost: Cost) -> Result<Permit<'static, C>, AcquireError> {
        Ok(self.acquire(cost).await?.into_owned())
    }

    /// An acquisition of `cost` on `key`'s budgets (the limiter's own for `None`).
    pub(super) fn acquire_on(
        &self,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
    ) -> Acquire<'_, C> {
        if let Some(link) = self.shared.remote.get() {
            let remote = Box::pin(self.acquire_remote(link, key, cost, timeout));
            return Acquire {
                inner: Inner::Remote(std::sync::Mutex::new(remote)),
            };
        }
        Acquire {
            inner: Inner::Local(Local {
                waiting: Waiting::new(self, key, cost, timeout, true),
                sleep: None,
            }),
        }
    }

    /// Like [`acquire`](Self::acquire), but gives up after `timeout`. When the wait is known to
    /// exceed the timeout (this request is at the head and the limits say how long), it fails at
    /// once with the wait it would need, rather than sleeping and then failing.
    ///
    /// # Errors
    /// [`AcquireError::Timeout`] naming the dimension, the cost and the wait;
    /// [`AcquireError::QueueTimeout`] when others were still queued ahead at the timeout;
    /// [`AcquireError::Exceeds`] when the cost is above a limit's capacity.
    ///
    /// # Cancel safety
    /// As [`acquire`](Self::acquire).
    pub fn acquire_timeout(&self, cost: Cost, timeout: Duration) -> Acquire<'_, C> {
        self.acquire_on(None, cost, Some(timeout))
    }

    /// Acquires `cost` (waiting at most `timeout`, if given), runs `call`, and settles the
    /// permit with what `usage_of` reads from its result; `None` (a failed call, or a reply that
    /// says nothing) keeps the whole reservation as the usage, which is what a provider counts
    /// for a call it cannot account. The in-flight slot is held exactly while `call` runs.
    ///
    /// # Errors
    /// The [`AcquireError`] of the acquisition; the call's own result, error or not, is `Ok`.
    ///
    /// # Cancel safety
    /// Dropping the future while it waits charges nothing; while `call` runs, it frees the slot
    /// and keeps the reservation.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::{Cost, Limiter, Policy, Usage};
    ///
    /// let limiter = Limiter::new(Policy::builder().output_tokens_per_minute(8_000).build()?);
    /// let reply: Result<u64, std::io::Error> = limiter
    ///     .run(Cost::request().output(800), None, || async { Ok(312) }, |r| r.as_ref().ok().map(|&n| Usage::new().output(n)))
    ///     .await?;
    /// assert_eq!(reply?, 312);
    /// assert_eq!(limiter.stats().limits[0].used, 312);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<T, F, Fut>(
        &self,
        cost: Cost,
        timeout: Option<Duration>,
        call: F,
        usage_of: impl FnOnce(&T) -> Option<crate::cost::Usage>,
    ) -> Result<T, AcquireError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let permit = match timeout {
            Some(timeout) => self.acquire_timeout(cost, timeout).await?,
            None => self.acquire(cost).await?,
        };
        let result = call().await;
        match usage_of(&result) {
            Some(usage) => permit.settle(usage),
            // Unsettled: the reservation stays as the usage; the slot is freed.
            None => drop(permit),
        }
        Ok(result)
    }
}
