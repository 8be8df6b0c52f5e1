//! The blocking front end: [`Waiting`] on a parked thread.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use super::keys::KeyNames;
use super::waiter::{Step, Waiting};
use super::{Limiter, Permit};
use crate::clock::Clock;
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::sync::{current, park, park_timeout, Thread};

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl<C: Clock> Limiter<C> {
    /// Blocks the thread until `cost` is admitted; the blocking twin of
    /// [`acquire`](Self::acquire), with the same FIFO queue and rules.
    ///
    /// Sleeps in real time: use it with the system clock (or a clock that advances on its own).
    /// Do not call it from async code: it blocks the runtime's thread.
    ///
    /// On a store-backed limiter ([`with_store`](Self::with_store)) it runs the async
    /// acquisition on a runtime of the limiter's own, and inside a tokio runtime it fails
    /// rather than block it.
    ///
    /// # Errors
    /// [`AcquireError::Exceeds`] at once when the cost is above a limit's capacity;
    /// [`AcquireError::Store`] on a store-backed limiter inside a tokio runtime, or as
    /// [`acquire`](Self::acquire) says.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(600).build()?);
    /// let permit = limiter.acquire_blocking(Cost::request())?;
    /// drop(permit);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_blocking(&self, cost: Cost) -> Result<Permit<'_, C>, AcquireError> {
        self.acquire_blocking_on(None, cost, None)
    }

    /// A blocking acquisition of `cost` on `key`'s budgets (the limiter's own for `None`).
    pub(super) fn acquire_blocking_on(
        &self,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
    ) -> Result<Permit<'_, C>, AcquireError> {
        #[cfg(feature = "tokio")]
        if let Some(link) = self.shared.remote.get() {
            return self.acquire_remote_blocking(link, key, cost, timeout);
        }
        self.block_on(Waiting::new(self, key, cost, timeout, false))
    }

    /// Blocks until `cost` is admitted or `timeout` passes; fails at once when the wait is
    /// known to exceed it.
    ///
    /// # Errors
    /// As [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire_blocking_timeout(
        &self,
        cost: Cost,
        timeout: Duration,
    ) -> Result<Permit<'_, C>, AcquireError> {
        self.acquire_blocking_on(None, cost, Some(timeout))
    }

    fn block_on<'a>(&'a self, mut waiting: Waiting<'a, C>) -> Result<Permit<'a, C>, AcquireError> {
        let waker = Waker::from(Arc::new(Unpark(current())));
        loop {
            match waiting.poll_step(&waker) {
                Step::Done(result) => return result,
                Step::Pending(None) => park(),
                Step::Pending(Some(at)) => {
                    let now = self.shared.clock.now();
                    if at > now {
                        park_timeout(Duration::from_nanos(at - now));
                    }
                }
            }
        }
    }
}
