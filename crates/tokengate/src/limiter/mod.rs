//! The in-memory limiter: one engine under the non-blocking, blocking and async front ends.

mod budget;
mod config;
mod directory;
mod engine;
mod keys;
mod lane;
mod observe;
mod permit;
mod provider;
mod queue;
mod route;
mod teach;
mod timer;
mod waiter;

#[cfg(feature = "tokio")]
mod async_acquire;
mod blocking;
#[cfg(feature = "tokio")]
mod remote;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::call::{Retry, RetryCount};
use crate::clock::{Clock, SystemClock};
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::Denied;
use crate::estimate::Estimator;
use crate::policy::Policy;
use crate::stats::Stats;
use crate::sync::{Mutex, MutexGuard};

#[cfg(feature = "tokio")]
pub use async_acquire::Acquire;
pub use keys::Key;
pub use permit::Permit;
#[cfg(feature = "tokio")]
pub use remote::{OnStoreError, SharedBudget, StoreStats};

// The one spelling of a budget's name, which `config::Budget` displays itself with.
pub(crate) use budget::BudgetName;
use budget::{Budget, Verdict};
use directory::Directory;
use engine::State;
use keys::KeyNames;
use lane::Lane;
use route::{Admission, Route};

/// Admits requests under a [`Policy`]: every limit at once or none, FIFO, with exact waits.
///
/// Cheap to clone: clones share one state. `Send + Sync`.
///
/// # Examples
/// ```
/// use tokengate::{Cost, Limiter, Policy, Usage};
///
/// let policy = Policy::builder()
///     .requests_per_minute(500)
///     .input_tokens_per_minute(30_000)
///     .output_tokens_per_minute(8_000)
///     .max_in_flight(10)
///     .build()?;
/// let limiter = Limiter::new(policy);
///
/// let permit = limiter.try_acquire(Cost::request().input(1_200).output(800))?;
/// // ... call the model ...
/// permit.settle(Usage::new().input(1_180).output(312)); // 488 output tokens come back at once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Limiter<C: Clock = SystemClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock + fmt::Debug> fmt::Debug for Limiter<C> {
    /// The clock and the state, read under the lock (so the lane's part is in it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("clock", &self.shared.clock)
            .field("state", &*self.lock())
            .finish()
    }
}

impl<C: Clock> Clone for Limiter<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<C: Clock> {
    clock: C,
    /// Prices requests for [`Key::run`].
    estimator: std::sync::Mutex<Estimator>,
    /// How [`Key::run`] settles and retries a call the provider refused.
    retry: std::sync::Mutex<Retry>,
    /// Retries [`Key::run`] made: their jitter is drawn from it.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    retried: RetryCount,
    state: Mutex<State>,
    /// Admissions on the limiter's own budget without the lock, when its policy allows.
    lane: Lane,
    /// The store the limiter's state lives in, if any ([`Limiter::with_store`]): set once,
    /// read once per acquisition.
    #[cfg(feature = "tokio")]
    remote: std::sync::OnceLock<remote::StoreLink<C>>,
}

impl Limiter<SystemClock> {
    /// A limiter on the system's monotonic clock.
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, SystemClock::new())
    }
}

impl<C: Clock> Limiter<C> {
    /// A limiter reading time from `clock` ([`ManualClock`](crate::ManualClock) for tests,
    /// [`TokioClock`](crate::TokioClock) for virtual time).
    pub fn with_clock(policy: Policy, clock: C) -> Self {
        Self::from_parts(Arc::new(policy), None, clock)
    }

    fn from_parts(policy: Arc<Policy>, directory: Option<Directory>, clock: C) -> Self {
        let root = Budget::new(BudgetName::Limiter, policy);
        let mut state = State::new(root);
        state.directory = directory.map(Arc::new);
        let limiter = Self {
            shared: Arc::new(Shared {
                clock,
                estimator: std::sync::Mutex::new(Estimator::new()),
                retry: std::sync::Mutex::new(Retry::default()),
                retried: RetryCount::default(),
                state: Mutex::new(state),
                lane: Lane::new(),
                #[cfg(feature = "tokio")]
                remote: std::sync::OnceLock::new(),
            }),
        };
        // Letting go of the lock opens the lane, if the policy fits it.
        drop(limiter.lock());
        limiter
    }

    /// The limiter's own policy, which every request falls under: the one it was built with,
    /// or a config's `[account]` (no limits without one), as a reload left it.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.lock().root.policy)
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.shared.clock
    }

    /// The estimator that prices requests for [`Key::run`] ([`Estimator::new`] unless set).
    pub fn estimator(&self) -> Estimator {
        self.shared
            .estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Prices requests for [`Key::run`] with `estimator` from now on (one that learns output
    /// sizes, say: [`Estimator::builder`]).
    pub fn set_estimator(&self, estimator: Estimator) {
        *self
            .shared
            .estimator
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = estimator;
    }

    /// How [`Key::run`] settles and retries a call the provider refused with a 429
    /// ([`Retry::default`] unless set: two retries through the limiter).
    pub fn retry(&self) -> Retry {
        *self.shared.retry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles and retries the calls of [`Key::run`] that the provider refused as `retry`
    /// says from now on ([`Retry::none`] where the client's own retries sit inside the call).
    ///
    /// # Examples
    /// ```
    /// use tokengate::call::{Refused, Retry};
    /// use tokengate::{Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).build()?);
    /// limiter.set_retry(Retry::new().with_retries(5).with_refused(Refused::Nothing));
    /// assert_eq!(limiter.retry().retries(), 5);
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn set_retry(&self, retry: Retry) {
        *self.shared.retry.lock().unwrap_or_else(|e| e.into_inner()) = retry;
    }

    /// Admits `cost` now, or says why not and for how long. Never waits for budget (only, as
    /// any lock would, for another thread's decision in progress), and never overtakes queued
    /// acquisitions.
    ///
    /// A zero cost ([`Cost::zero`]) peeks: it is admitted whenever no limit is in debt, and
    /// charges nothing.
    ///
    /// # Errors
    /// [`Denied`] with the dimension, the cost and the exact wait; or
    /// [`Denied::Never`] when the cost can never be admitted, or the limiter's state lives in
    /// a store ([`AcquireError::Store`](crate::AcquireError::Store): a store answers
    /// asynchronously; ask it with `acquire_timeout(cost, Duration::ZERO)`).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Denied, Limiter, ManualClock, Policy};
    ///
    /// // One a second, burst 1; exact instants: no safety margin (`Limit::margin`).
    /// let policy = Policy::builder().requests_per_minute(60).margin(Duration::ZERO).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let _first = limiter.try_acquire(Cost::request())?;
    /// let denied = limiter.try_acquire(Cost::request()).unwrap_err();
    /// assert_eq!(denied.wait(), Some(Duration::from_secs(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn try_acquire(&self, cost: Cost) -> Result<Permit<'_, C>, Denied> {
        // The lane first (inlined here); the engine, under the lock, for everything else.
        let now = self.shared.clock.now();
        match self.shared.lane.try_admit(now, &cost) {
            Some(admission) => Ok(self.lane_permit(now, cost, admission)),
            None => self.try_acquire_on(None, cost, now),
        }
    }

    /// Admits `cost` now as a call that is over at once, without a permit: what
    /// [`try_acquire`](Self::try_acquire) and dropping its permit at once do, for requests that
    /// are counted and never settled (a gate in front of a high-rate service, a governor-style
    /// check). The cost stays charged as used; a full in-flight cap denies it, as it would the
    /// permit, but no slot is held afterwards. Never waits for budget and never overtakes
    /// queued acquisitions.
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Limiter, ManualClock, Policy};
    ///
    /// // One a second, burst 1; exact instants: no safety margin.
    /// let policy = Policy::builder().requests_per_minute(60).margin(Duration::ZERO).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// assert!(limiter.try_admit(Cost::request()).is_ok());
    /// let denied = limiter.try_admit(Cost::request()).unwrap_err();
    /// assert_eq!(denied.wait(), Some(Duration::from_secs(1)));
    /// assert_eq!(limiter.stats().admitted, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn try_admit(&self, cost: Cost) -> Result<(), Denied> {
        let now = self.shared.clock.now();
        if self.shared.lane.try_count(now, &cost) {
            return Ok(());
        }
        self.try_admit_on(None, &cost, now)
    }

    /// [`try_acquire`](Self::try_acquire) on the budgets of `key` (the limiter's own only
    /// when `None`), under the lock, at `now`.
    #[inline]
    fn try_acquire_on(
        &self,
        key: Option<&KeyNames>,
        cost: Cost,
        now: Nanos,
    ) -> Result<Permit<'_, C>, Denied> {
        let (admission, at) =
            self.try_on(key, &cost, now, |_, _, admission, at| (admission, at))?;
        Ok(Permit::new(self, cost, at, admission))
    }

    /// [`try_admit`](Self::try_admit) on the budgets of `key`, under the lock, at `now`: the
    /// admission's slots are given back before the lock is let go, as dropping its permit would.
    fn try_admit_on(&self, key: Option<&KeyNames>, cost: &Cost, now: Nanos) -> Result<(), Denied> {
        self.try_on(key, cost, now, |st, route, admission, at| {
            st.release(at, route, admission.slots)
        })
    }

    /// Decides `cost` on the budgets of `key` at `now` (or later: [`State::at`]), under the
    /// lock: an admission is handed to `admitted` (with the state, its route and its instant)
    /// before the lock is let go.
    #[inline]
    fn try_on<R>(
        &self,
        key: Option<&KeyNames>,
        cost: &Cost,
        now: Nanos,
        admitted: impl FnOnce(&mut State, &Route, Admission, Nanos) -> R,
    ) -> Result<R, Denied> {
        #[cfg(feature = "tokio")]
        if self.shared.remote.get().is_some() {
            return Err(Denied::Never(remote::no_sync_calls()));
        }
        let (mut st, now) = self.lock_at(now);
        let route = match self.route(&mut st, key, now) {
            Ok(route) => route,
            Err(refused) => {
                st.root.counters.rejected += 1;
                drop(st);
                return Err(self.denied(Denied::Never(refused)));
            }
        };
        let waiters = st.queued_on(&route);
        if waiters > 0 {
            st.count(&route, |c| c.denied += 1);
            drop(st);
            return Err(self.denied(Denied::WaitersAhead { waiters }));
        }
        let verdict = match st.verdict(&route, now, cost) {
            Ok(v) if v.verdict == Verdict::Admit => {
                let admission = st.admit(route, now, cost, 0);
                let scope = observe::Scope::of(&st, &route);
                let result = admitted(&mut st, &route, admission, now);
                drop(st);
                observe::admitted(&scope, cost, None);
                return Ok(result);
            }
            Ok(v) => v,
            Err(e) => {
                st.count(&route, |c| c.rejected += 1);
                drop(st);
                return Err(self.denied(Denied::Never(e)));
            }
        };
        st.count(&route, |c| c.denied += 1);
        let holder = st.budget(route.ids()[verdict.at]).unwrap_or(&st.root);
        let denied = match verdict.verdict {
            Verdict::Wait { until, limit } => {
                let l = &holder.policy.limits[limit];
                Denied::RateLimited {
                    dimension: l.dimension.clone(),
                    cost: l.measure.amount(cost).unwrap_or(u64::MAX),
                    limit: l.limit.to_string(),
                    wait: Verdict::wait_for(now, until),
                }
            }
            Verdict::Paused { until } => Denied::Paused {
                wait: Verdict::wait_for(now, until),
            },
            Verdict::InFlightFull | Verdict::Admit => Denied::InFlightFull {
                max: holder.policy.max_in_flight.unwrap_or(0),
            },
        };
        drop(st);
        Err(self.denied(denied))
    }

    /// The permit of `cost`, admitted in the lane at `now`. (Never reported: with the features
    /// that report admissions, the lane stays closed; see [`LANE_IN_USE`].)
    #[inline(always)]
    fn lane_permit(&self, now: Nanos, cost: Cost, admission: Admission) -> Permit<'_, C> {
        Permit::new(self, cost, now, admission)
    }

    /// The budgets a request on `key` falls under (made when missing); the limiter's own only
    /// for `None` or a limiter without a config.
    #[inline]
    ///
    /// # Errors
    /// [`AcquireError::UnknownModel`](crate::AcquireError::UnknownModel) for a model the
    /// config refuses.
    fn route(
        &self,
        st: &mut State,
        key: Option<&KeyNames>,
        now: Nanos,
    ) -> Result<Route, crate::AcquireError> {
        match (key, &st.directory) {
            (Some(key), Some(directory)) => {
                let directory = Arc::clone(directory);
                st.resolve(&directory, key, now)
            }
            _ => Ok(Route::ROOT),
        }
    }

    /// Reports a denial of `try_acquire` (outside the lock) and returns it.
    #[inline(always)]
    fn denied(&self, denied: Denied) -> Denied {
        observe::denied(&denied);
        denied
    }

    /// A snapshot of every limit, in-flight requests, waiters and totals.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    ///
    /// let policy = Policy::builder()
    ///     .requests_per_minute(60)
    ///     .input_tokens_per_minute(60_000)
    ///     .max_in_flight(2)
    ///     .margin(Duration::ZERO) // exact instants: no safety margin
    ///     .build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request().input(400))?;
    /// let stats = limiter.stats();
    /// assert_eq!((stats.admitted, stats.in_flight), (1, 1));
    /// assert_eq!(stats.limits[1].dimension.name(), "input_tokens");
    /// // 400 in the window; 600 more at once: the limit holds a second's worth (1,000) at once.
    /// assert_eq!((stats.limits[1].used, stats.limits[1].remaining), (400, 600));
    /// // The window is back to fresh 60 s after the admission; a token refills every 1 ms.
    /// assert_eq!(stats.limits[1].reset_in, Some(Duration::from_secs(60)));
    /// assert_eq!(stats.limits[1].next_refill_in, Some(Duration::from_millis(1)));
    /// // Requests are paced at one a second (burst 1): the next one refills in a second.
    /// assert_eq!(stats.limits[0].next_refill_in, Some(Duration::from_secs(1)));
    /// permit.settle(Usage::new().input(100));
    /// assert_eq!(limiter.stats().limits[1].refunded, 300);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let now = self.shared.clock.now();
        let (st, now) = self.lock_at(now);
        st.root_stats(now)
    }

    /// Takes the lock (see [`lock`](Self::lock)) for a use at `now`, a clock reading taken
    /// before it: returns the instant to use, `now` or later ([`State::at`]).
    #[inline]
    fn lock_at(&self, now: Nanos) -> (StateGuard<'_>, Nanos) {
        let mut st = self.lock();
        let now = st.at(now);
        (st, now)
    }

    /// Takes the lock, and the lane with it (see [`StateGuard`]). A use of the state at an
    /// instant takes it with [`lock_at`](Self::lock_at).
    #[inline]
    fn lock(&self) -> StateGuard<'_> {
        // No code panics while holding the lock, and every update keeps the state consistent,
        // so a poisoned lock (a panic elsewhere in the holder's thread) is safe to use.
        let mut guard = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let lane = &self.shared.lane;
        if lane.claim() {
            // (what the lane admitted, it admitted no later than this: see `State::at`)
            let latest = lane.pull(&mut guard.root);
            guard.at(latest);
        }
        StateGuard { guard, lane }
    }
}

/// Whether the lane ever opens: not with the `tracing` or `metrics` feature, whose report of
/// each admission reads the budget's policy under the lock (a lane admission would take the
/// lock anyway, and claim and pull the lane on top).
const LANE_IN_USE: bool = !cfg!(any(feature = "tracing", feature = "metrics"));

/// The state under the lock, with the lane claimed: the limiter's own budget holds its exact
/// state while the guard lives. Dropping it opens the lane again with that state when the
/// budget can be decided there (its policy fits, the limiter has no keys, and nobody is queued
/// on it), or leaves it closed; then lets go of the lock.
struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    lane: &'a Lane,
}

impl Deref for StateGuard<'_> {
    type Target = State;

    #[inline]
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl DerefMut for StateGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let st = &mut *self.guard;
        let current = st
            .lane_policy
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &st.root.policy));
        if !current {
            // A new policy (a reload, or the first release): check it fits, and copy its rules.
            st.lane_fits = Lane::fits(&st.root.policy);
            if st.lane_fits {
                self.lane.set_policy(&st.root.policy);
            }
            st.lane_policy = Some(Arc::clone(&st.root.policy));
        }
        // A limiter of keys shares its own budget with every key, whose requests all take the
        // lock: a lane there would be claimed and pulled on each of them, costing more than it
        // saves. The lane serves limiters of one policy. So it does when admissions are not
        // reported: a report names the budget's policy, which lives under the lock.
        let open = LANE_IN_USE
            && st.lane_fits
            && st.directory.is_none()
            && !st.remote
            && st.root.queue_len() == 0;
        self.lane.release(&st.root, open);
    }
}
