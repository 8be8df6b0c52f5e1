//! The limiter's front ends on a [`Store`]: the same calls (`acquire`, a [`Key`]'s, the
//! reqwest middleware, the tower layer, `Key::run`) deciding on state kept elsewhere, so that
//! one set of limits holds across processes.
//!
//! A limiter takes a store with [`Limiter::with_store`]; from then on `StoreLink` (set once
//! in the limiter's shared part, read once per call) routes every acquisition to the store,
//! and the in-memory path is untouched: a limiter without a store checks one empty cell.
//!
//! - `routes`: the store budgets a key's requests fall under, cached per key.
//! - `acquire`: the async acquisition (wait, in-flight polling, timeouts, cancellation).
//! - `held`: a store reservation held by a [`Permit`](crate::Permit): settled, renewed,
//!   cancelled on the runtime it was acquired on (or the limiter's own, once that one is
//!   gone).
//! - `renewal`: a permit's lease renewals, and what keeps them going when its runtime stops
//!   driving them.
//! - `fallback`: what a failing store leads to ([`OnStoreError`]).
//! - `driver`: the runtime that blocking calls, and calls made outside any runtime, use.
//! - `counters`: [`StoreStats`], and the `tracing` and `metrics` reports.
//! - `state`: what the store holds for a key's budgets ([`Limiter::shared_state`]).
//!
//! [`Key`]: crate::Key

mod acquire;
mod counters;
mod driver;
mod fallback;
mod held;
mod renewal;
mod routes;
mod state;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

pub use counters::StoreStats;
pub use fallback::OnStoreError;
pub(crate) use held::Held;
pub use state::SharedBudget;

use super::keys::KeyNames;
use super::Limiter;
use crate::clock::Clock;
use crate::dimension::Dimension;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::store::{Store, StoreBudget, StoreError};
use counters::Counters;
use routes::{Routes, StoreRoute};

/// The lease a store gives an in-flight slot unless told otherwise (`MemoryStore::lease`,
/// `RedisStore::lease`): 60 s.
const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// What the limiter's state keeps about its store (under its lock, with the rest): what a
/// failure leads to, and the store's lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreSettings {
    pub(crate) on_error: OnStoreError,
    pub(crate) lease: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            on_error: OnStoreError::FailClosed,
            lease: DEFAULT_LEASE,
        }
    }
}

/// A limiter's store, the budgets its keys fall under there, and its counters.
pub(crate) struct StoreLink<C: Clock> {
    counters: Arc<Counters>,
    inner: Mutex<Inner<C>>,
}

struct Inner<C: Clock> {
    store: Arc<dyn Store>,
    routes: Routes,
    /// The local limiter of [`OnStoreError::LocalShare`], made at its first use, with the
    /// share it was made for (its bits).
    local: Option<(u64, Limiter<C>)>,
}

impl<C: Clock> std::fmt::Debug for StoreLink<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLink")
            .field("store", &self.lock().store)
            .field("stats", &self.counters.stats())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> StoreLink<C> {
    fn new(store: Arc<dyn Store>, routes: Routes) -> Self {
        Self {
            counters: Arc::new(Counters::default()),
            inner: Mutex::new(Inner {
                store,
                routes,
                local: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        // Every change is whole before the guard drops.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store, and the budgets a request on `key` falls under there (the limiter's own for
    /// `None`).
    ///
    /// # Errors
    /// [`AcquireError::UnknownModel`] for a model the config refuses.
    fn route(&self, key: Option<&KeyNames>) -> Result<(Arc<dyn Store>, StoreRoute), AcquireError> {
        let mut inner = self.lock();
        let route = inner.routes.of(key)?;
        Ok((Arc::clone(&inner.store), route))
    }
}

/// The denial of `try_acquire` and `try_admit` on a store-backed limiter.
pub(super) fn no_sync_calls() -> AcquireError {
    AcquireError::Store {
        message: "this limiter keeps its state in a store, which answers asynchronously: \
                  `try_acquire` and `try_admit` cannot ask it; use \
                  `acquire_timeout(cost, Duration::ZERO).await` to ask without waiting"
            .into(),
    }
}

/// The policy of the limiter's own budget as the store keeps it: none when it has no limits
/// (a config without `[account]`).
fn account(policy: &Arc<Policy>) -> Option<Arc<Policy>> {
    (!policy.is_empty()).then(|| Arc::clone(policy))
}

impl<C: Clock> Limiter<C> {
    /// The same limiter with its limits' state kept in `store` (a
    /// [`MemoryStore`](crate::store::MemoryStore), or the Redis store of the `redis` feature,
    /// or an `Arc` of either shared by several limiters): every process whose limiter uses
    /// one store shares one set of limits. The calls stay the same: [`acquire`](Self::acquire),
    /// [`acquire_timeout`](Self::acquire_timeout), [`acquire_owned`](Self::acquire_owned), a
    /// [`Key`](crate::Key)'s, [`Key::run`](crate::Key::run), the reqwest middleware and the
    /// tower layer.
    ///
    /// **Budgets.** A request on a key is charged, all or none, to the store budgets it falls
    /// under, in order: the limiter's own policy (a config's `[account]`, if any), named
    /// `account`; the model's or its family's, named as [`Stats::budget`](crate::Stats::budget)
    /// names it (`model gpt-4o`, `family gpt-4o-mini`; a model under `[defaults.model]` in
    /// lower case); the tenant's (`tenant acme`). A model the config refuses is an
    /// [`AcquireError::UnknownModel`], as in memory. Names the config does not list get a
    /// budget each, without the in-memory cap: the store's budgets expire by themselves once
    /// idle. Every process sharing a store must give each budget the same limits: a store
    /// refuses other limits for a budget it holds ([`AcquireError::Store`], naming the budget
    /// and what to do).
    ///
    /// **Waiting.** The store answers a request in one call, waiting included: it reserves
    /// the request at the earliest instant every budget admits it, first come first served,
    /// and the acquisition sleeps until then on tokio's timer. An acquisition without a
    /// timeout may wait up to [`max_pause`](Self::max_pause) (5 minutes by default); a wait
    /// beyond it, or beyond the timeout given, fails at once with
    /// [`AcquireError::Timeout`] (or [`AcquireError::Paused`]) and the wait it would need, or
    /// [`AcquireError::QueueTimeout`] when earlier reservations hold it back that long (the
    /// store does not say how many: `waiters_ahead` is 1).
    /// A full in-flight cap has no known wait: the acquisition asks again after 10 ms, then
    /// after twice as long each time up to 1 s, with jitter, until its timeout: it *polls*
    /// (counted in [`StoreStats::in_flight_polls`]).
    ///
    /// **Permits.** [`Permit::settle`](crate::Permit::settle), and dropping a permit, settle
    /// its reservation on the store in a task spawned on the runtime it was acquired on (so
    /// the store sees it a moment later). A permit holding in-flight slots renews their lease
    /// every third of [`with_store_lease`](Self::with_store_lease) until it ends. Should that
    /// runtime shut down while the permit lives (one made for a single `block_on`), its
    /// renewals and its settlement go on from the limiter's own thread; should it be a
    /// current-thread runtime left idle (nothing blocks on it), the limiter's own thread
    /// renews the lease whenever the renewals there fall behind. An
    /// acquisition dropped while it sleeps towards its instant cancels its reservation the
    /// same way; one dropped while the store's own call is under way leaves what the store
    /// recorded (the safe side: spent, its slots freed when their lease runs out). So does a
    /// settlement the store fails (counted in [`StoreStats::errors`]).
    ///
    /// **Synchronous calls.** [`try_acquire`](Self::try_acquire) and
    /// [`try_admit`](Self::try_admit) cannot wait for a store's answer: they are denied with
    /// [`AcquireError::Store`] (ask with `acquire_timeout(cost, Duration::ZERO)`).
    /// [`acquire_blocking`](Self::acquire_blocking) runs the async acquisition on a runtime of
    /// the limiter's own (one background thread for the process, made at first use), and
    /// fails with [`AcquireError::Store`] inside a tokio runtime, where blocking would stall
    /// the runtime's thread.
    ///
    /// **Provider feedback.** [`pause`](Self::pause), [`resume`](Self::resume),
    /// [`observe_throttled`](Self::observe_throttled) and a [`Key`](crate::Key)'s pause the
    /// budget that mirrors the provider (the model's, else the account's) on the store as
    /// well (at most [`max_pause`](Self::max_pause)), so one process's 429 pauses every
    /// process; and [`observe`](Self::observe) lowers the store's budget that mirrors the
    /// provider to what the provider's headers say remains (`Store::lower`), so every process
    /// counts it. [`stats`](Self::stats) and [`Key::stats`](crate::Key::stats) read this
    /// process's in-memory state: read the store's with
    /// [`shared_state`](Self::shared_state) and [`Key::shared_state`](crate::Key::shared_state),
    /// and this limiter's use of the store with [`store_stats`](Self::store_stats).
    ///
    /// A limiter takes one store: a second call replaces the first (for every clone).
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tokengate::store::{MemoryStore, Store, StoreBudget};
    /// use tokengate::{Cost, Limiter, Policy, Usage};
    ///
    /// let policy = Policy::builder().requests_per_minute(600).output_tokens_per_minute(60_000).build()?;
    /// // Two limiters (two processes, say) on one store share one set of limits.
    /// let store = Arc::new(MemoryStore::new());
    /// let a = Limiter::new(policy.clone()).with_store(Arc::clone(&store));
    /// let b = Limiter::new(policy.clone()).with_store(Arc::clone(&store));
    /// let permit = a.acquire(Cost::request().output(800)).await?;
    /// permit.settle(Usage::new().output(300));
    /// tokio::task::yield_now().await; // the settlement is a task of its own
    /// let _other = b.acquire_timeout(Cost::request().output(600), Duration::ZERO).await?;
    /// let output = &store.snapshot(&StoreBudget::new("account", policy)).await?.limits[1];
    /// assert_eq!(output.used, 300 + 600);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_store(mut self, store: impl Store + 'static) -> Self {
        let store: Arc<dyn Store> = Arc::new(store);
        let routes = {
            let mut st = self.lock();
            st.remote = true; // the lane closes as the guard drops
            Routes::new(account(&st.root.policy), st.directory.clone())
        };
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.remote = OnceLock::from(StoreLink::new(store, routes)),
            None => {
                // Clones exist: they take the store too.
                if let Err(link) = self.shared.remote.set(StoreLink::new(store, routes)) {
                    let fresh = link
                        .inner
                        .into_inner()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(current) = self.shared.remote.get() {
                        let mut inner = current.lock();
                        inner.store = fresh.store;
                        inner.routes = fresh.routes;
                    }
                }
            }
        }
        self
    }

    /// What an acquisition does when the store fails (a connection lost, a timeout, a server
    /// error): [`OnStoreError::FailClosed`] unless set. Only such failures: a store that holds
    /// other limits for a budget, or cannot hold them, is an error whatever this says.
    ///
    /// # Examples
    /// ```
    /// use tokengate::store::MemoryStore;
    /// use tokengate::{Limiter, OnStoreError, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(600).build()?)
    ///     .with_store(MemoryStore::new())
    ///     .on_store_error(OnStoreError::LocalShare(0.25)); // a quarter of the limits, locally
    /// assert_eq!(limiter.store_error_policy(), OnStoreError::LocalShare(0.25));
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn on_store_error(self, on_error: OnStoreError) -> Self {
        self.lock().store.on_error = on_error;
        self
    }

    /// What an acquisition does when the store fails (see
    /// [`on_store_error`](Self::on_store_error)).
    pub fn store_error_policy(&self) -> OnStoreError {
        self.lock().store.on_error
    }

    /// Tells the limiter the lease its store gives in-flight slots (the store's own setting:
    /// `MemoryStore::lease`, `RedisStore::lease`; 60 s unless set), so that a permit holding
    /// slots renews them every third of it. A lease shorter than this setting frees the slots
    /// of long calls early, letting more requests run at once than the cap.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::store::MemoryStore;
    /// use tokengate::{Limiter, Policy};
    ///
    /// let lease = Duration::from_secs(30);
    /// let limiter = Limiter::new(Policy::builder().max_in_flight(8).build()?)
    ///     .with_store(MemoryStore::new().lease(lease))
    ///     .with_store_lease(lease); // renewed every 10 s
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn with_store_lease(self, lease: Duration) -> Self {
        self.lock().store.lease = lease;
        self
    }

    /// The store the limiter's state lives in, if any ([`with_store`](Self::with_store)).
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        let link = self.shared.remote.get()?;
        let store = Arc::clone(&link.lock().store);
        Some(store)
    }

    /// How this limiter has used its store: calls, failures, and what they led to (all zero
    /// without a store).
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::store::MemoryStore;
    /// use tokengate::{Cost, Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(600).build()?)
    ///     .with_store(MemoryStore::new());
    /// let permit = limiter.acquire(Cost::request()).await?;
    /// permit.settle(tokengate::Usage::new());
    /// tokio::task::yield_now().await; // the settlement is a task of its own
    /// let stats = limiter.store_stats();
    /// assert_eq!((stats.calls, stats.errors), (2, 0)); // an acquisition, and its settlement
    /// // Dropped unsettled, holding no slot: the store has nothing to change, and is not asked.
    /// drop(limiter.acquire(Cost::request()).await?);
    /// assert_eq!(limiter.store_stats().calls, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_stats(&self) -> StoreStats {
        self.shared
            .remote
            .get()
            .map(|link| link.counters.stats())
            .unwrap_or_default()
    }

    /// Puts the policies of a reloaded config in force on the store's budgets: the limiter's
    /// own when a reload replaced it (`account`), and the config's.
    #[cfg(feature = "config")]
    pub(super) fn reload_store(
        &self,
        account: Option<Arc<Policy>>,
        directory: Arc<super::directory::Directory>,
    ) {
        let Some(link) = self.shared.remote.get() else {
            return;
        };
        let mut inner = link.lock();
        if let Some(account) = account {
            inner.routes.set_account(self::account(&account));
        }
        if let Some((bits, local)) = &inner.local {
            local.reload(directory.config().scaled(f64::from_bits(*bits)));
        }
        inner.routes.set_directory(directory);
    }

    /// Counts on the store's budget that mirrors the provider for `key` what the provider
    /// reports on `dimension` (its limit `reported`, or ours, less `remaining`) beyond what the
    /// budget counts ([`Store::lower`]). Sent in a task of its own.
    pub(super) fn lower_store(
        &self,
        key: Option<&KeyNames>,
        dimension: &Dimension,
        reported: Option<u64>,
        remaining: u64,
    ) {
        self.on_provider_budget(key, "lower", |store, budget| {
            let limit = budget.policy().reported_limit(dimension, reported)?;
            let amount = reported.unwrap_or_else(|| budget.policy().limits[limit].rule.amount());
            let counted = amount.saturating_sub(remaining);
            (counted > 0)
                .then_some(async move { store.lower(&budget, limit, counted).await.map(drop) })
        });
    }

    /// Pauses the budget that mirrors the provider for `key` on the store, for `pause`
    /// (already cut to the longest pause): replacing the pause in force when `replace`, else
    /// keeping the later end. Sent in a task of its own.
    pub(super) fn pause_store(&self, key: Option<&KeyNames>, pause: Duration, replace: bool) {
        self.on_provider_budget(key, "pause", |store, budget| {
            Some(async move { store.pause(&budget, pause, replace).await.map(drop) })
        });
    }

    /// Runs the call `call` makes (if it makes one) on the store's budget that mirrors the
    /// provider for `key`, in a task of its own, counted (as `what` when it fails). Nothing
    /// for a model the config refuses: it has no budget, and nothing of the provider's lands
    /// elsewhere.
    fn on_provider_budget<F, Fut>(&self, key: Option<&KeyNames>, what: &'static str, call: F)
    where
        F: FnOnce(Arc<dyn Store>, StoreBudget) -> Option<Fut>,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let Some(link) = self.shared.remote.get() else {
            return;
        };
        let Ok((store, route)) = link.route(key) else {
            return;
        };
        let Some(budget) = route.provider().cloned() else {
            return;
        };
        let Some(handle) = driver::spawner(&*store) else {
            return;
        };
        let Some(work) = call(store, budget) else {
            return;
        };
        let counters = Arc::clone(&link.counters);
        counters.call();
        crate::store::background::spawn_kept(&handle, async move {
            if let Err(error) = work.await {
                counters.failed(what, &error, None);
            }
        });
    }
}
