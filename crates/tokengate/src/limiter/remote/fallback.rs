//! What an acquisition does when the store fails: refuse, admit without limits, or decide on
//! a local share of the limits ([`OnStoreError`]).

use std::sync::Arc;
use std::time::Duration;

use super::super::keys::KeyNames;
use super::super::{Limiter, Permit};
use super::{Held, StoreLink};
use crate::clock::Clock;
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::store::StoreError;

/// What an acquisition on a store-backed limiter does when the store fails (a connection
/// lost, a timeout, a server error: [`StoreError::Backend`]). A store that holds other limits
/// for a budget, or cannot hold them, is an error whatever this says: limits that disagree
/// are a mistake to fix, not an outage to ride out.
///
/// Every use is counted ([`Limiter::store_stats`]) and, with the `tracing` feature, logged at
/// warn level.
///
/// # Examples
/// ```
/// use tokengate::store::MemoryStore;
/// use tokengate::{Limiter, OnStoreError, Policy};
///
/// let limiter = Limiter::new(Policy::builder().requests_per_minute(600).build()?)
///     .with_store(MemoryStore::new())
///     .on_store_error(OnStoreError::FailOpen);
/// # Ok::<(), tokengate::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Refuse: [`AcquireError::Store`] with the store's message. The default: nothing is
    /// admitted that no limit has counted.
    #[default]
    FailClosed,
    /// Admit without limits: the provider's own limits (and its 429s) are all that holds.
    FailOpen,
    /// Decide on a limiter in this process whose every limit amount, and in-flight cap, is
    /// this share of the configured one (rounded down, at least 1): with `n` processes
    /// sharing the limits, `1/n` keeps them together under the limits while the store is
    /// down. Made from the same policy or config at its first use, and kept (its state
    /// carries over from one failure to the next). A share above 1 counts as 1; one that is
    /// not above 0 (or NaN) as [`FailClosed`](Self::FailClosed).
    LocalShare(f64),
}

impl OnStoreError {
    /// The name logged with a failure.
    fn name(self) -> &'static str {
        match self {
            OnStoreError::FailClosed => "fail_closed",
            OnStoreError::FailOpen => "fail_open",
            OnStoreError::LocalShare(_) => "local_share",
        }
    }

    /// What it comes to: a share in (0, 1] for a local share, or fail closed.
    fn normalized(self) -> Self {
        match self {
            OnStoreError::LocalShare(share) if share > 0.0 => {
                OnStoreError::LocalShare(share.min(1.0))
            }
            OnStoreError::LocalShare(_) => OnStoreError::FailClosed,
            other => other,
        }
    }
}

impl<C: Clock> Limiter<C> {
    /// The answer to an acquisition of `cost` on `key` (waiting at most `timeout`, what is
    /// left of it) whose store failed with `error`.
    pub(super) async fn fall_back(
        &self,
        link: &StoreLink<C>,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
        error: StoreError,
    ) -> Result<Permit<'_, C>, AcquireError> {
        let (policy, max_pause) = {
            let st = self.lock();
            (st.store.on_error.normalized(), st.max_pause)
        };
        link.counters.failed("acquire", &error, Some(policy.name()));
        match policy {
            OnStoreError::FailOpen => {
                link.counters.failed_open();
                let now = self.shared.clock.now();
                Ok(Permit::held(self, cost, now, Held::Unlimited))
            }
            OnStoreError::LocalShare(share) => {
                link.counters.shared_locally();
                let local = link.local(&self.shared.clock, share, max_pause);
                let key = match &key {
                    Some(k) => local.key_of(k.tenant.as_deref(), k.model.as_deref()),
                    None => local.key_of(None, None),
                };
                let permit = match timeout {
                    Some(timeout) => key.acquire_timeout(cost, timeout).await?,
                    None => key.acquire(cost).await?,
                };
                Ok(permit.into_owned())
            }
            OnStoreError::FailClosed => Err(AcquireError::Store {
                message: format!(
                    "{error}; nothing was admitted: the limiter fails closed while its store \
                     is down (`Limiter::on_store_error` chooses otherwise)"
                ),
            }),
        }
    }
}

impl<C: Clock> StoreLink<C> {
    /// The local limiter of a `share` of the limits, made at its first use (again when the
    /// share changes).
    fn local(&self, clock: &C, share: f64, max_pause: u64) -> Limiter<C> {
        let mut inner = self.lock();
        if let Some((bits, local)) = &inner.local {
            if *bits == share.to_bits() {
                return local.clone();
            }
        }
        #[cfg(feature = "config")]
        let local = match inner.routes.directory() {
            Some(directory) => {
                Limiter::from_config_with_clock(directory.config().scaled(share), clock.clone())
            }
            None => own_share(inner.routes.account().map(|a| a.policy()), share, clock),
        };
        #[cfg(not(feature = "config"))]
        let local = own_share(inner.routes.account().map(|a| a.policy()), share, clock);
        local.lock().max_pause = max_pause;
        inner.local = Some((share.to_bits(), local.clone()));
        local
    }
}

/// A limiter of one policy, `share` of `account` (no limits without one).
fn own_share<C: Clock>(account: Option<&Policy>, share: f64, clock: &C) -> Limiter<C> {
    let policy = account.map_or_else(Policy::empty, |p| p.scaled(share));
    Limiter::with_clock(policy, clock.clone())
}
