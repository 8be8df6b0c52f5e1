//! Store calls from synchronous code: the blocking acquisitions, and the tasks (a pause, a
//! settlement) started outside any tokio runtime.
//!
//! They run on one runtime of the limiter's own for the whole process: a current-thread
//! runtime, time and I/O enabled, driven by a background thread made at first use. A blocking
//! acquisition runs the async one to completion on it from the calling thread (the background
//! thread drives its timers), and its permit's settlement and lease renewals are tasks there,
//! which go on after the call returns. A private runtime per call could not: it would be gone
//! by the time the permit settles.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::super::keys::KeyNames;
use super::super::{Limiter, Permit};
use super::StoreLink;
use crate::clock::Clock;
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::store::{background, Store};

/// Where a task started now on `store` runs: a runtime always driven when the store's calls
/// may run on any ([`Store::any_runtime`]), else the runtime this thread is in; the background
/// one outside any.
pub(super) fn spawner(store: &dyn Store) -> Option<Handle> {
    if store.any_runtime() {
        if let Some(driven) = background::driven() {
            return Some(driven);
        }
    }
    Handle::try_current().ok().or_else(background::runtime)
}

impl<C: Clock> Limiter<C> {
    /// [`acquire_blocking`](Limiter::acquire_blocking) on the store: the async acquisition
    /// run to completion from this thread.
    ///
    /// # Errors
    /// As the async acquisition; [`AcquireError::Store`] inside a tokio runtime, where
    /// blocking would stall the runtime's thread (and tokio forbids it).
    pub(in crate::limiter) fn acquire_remote_blocking<'a>(
        &'a self,
        link: &'a StoreLink<C>,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
    ) -> Result<Permit<'a, C>, AcquireError> {
        if Handle::try_current().is_ok() {
            return Err(AcquireError::Store {
                message: "a blocking acquisition on a store-backed limiter cannot run inside a \
                          tokio runtime (it would block the runtime's thread while the store \
                          answers): use `acquire(cost).await` or `acquire_timeout(cost, \
                          timeout).await` there"
                    .into(),
            });
        }
        let Some(driver) = background::runtime() else {
            return Err(AcquireError::Store {
                message: "the runtime for blocking store calls could not be started (no \
                          thread could be spawned): use the async `acquire` from a tokio \
                          runtime"
                    .into(),
            });
        };
        driver.block_on(self.acquire_remote(link, key, cost, timeout))
    }
}
