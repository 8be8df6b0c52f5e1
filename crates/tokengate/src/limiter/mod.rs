//! The in-memory limiter: one engine under the non-blocking, blocking and async front ends.

mod budget;
mod engine;
mod keys;
mod observe;
mod permit;
mod provider;
mod queue;
mod route;
mod timer;
mod waiter;

#[cfg(feature = "tokio")]
mod async_acquire;
mod blocking;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::Denied;
use crate::estimate::Estimator;
use crate::policy::Policy;
use crate::stats::Stats;

#[cfg(feature = "tokio")]
pub use async_acquire::Acquire;
pub use keys::Key;
pub use permit::Permit;

use budget::{Budget, BudgetName, Verdict};
use engine::State;
use keys::{Directory, KeyNames};
use route::Route;

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
#[derive(Debug)]
pub struct Limiter<C: Clock = SystemClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> Clone for Limiter<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<C> {
    clock: C,
    /// Prices requests for [`Key::run`].
    estimator: Mutex<Estimator>,
    state: Mutex<State>,
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
        Self {
            shared: Arc::new(Shared {
                clock,
                estimator: Mutex::new(Estimator::new()),
                state: Mutex::new(state),
            }),
        }
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

    /// Admits `cost` now, or says why not and for how long. Never waits, and never overtakes
    /// queued acquisitions.
    ///
    /// A zero cost ([`Cost::zero`]) peeks: it is admitted whenever no limit is in debt, and
    /// charges nothing.
    ///
    /// # Errors
    /// [`Denied`] with the dimension, the cost and the exact wait; or
    /// [`Denied::Never`] when the cost can never be admitted.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Denied, Limiter, ManualClock, Policy};
    ///
    /// let policy = Policy::builder().requests_per_minute(60).build()?; // one a second, burst 1
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let _first = limiter.try_acquire(Cost::request())?;
    /// let denied = limiter.try_acquire(Cost::request()).unwrap_err();
    /// assert_eq!(denied.wait(), Some(Duration::from_secs(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self, cost: Cost) -> Result<Permit<'_, C>, Denied> {
        self.try_acquire_on(None, cost)
    }

    /// [`try_acquire`](Self::try_acquire) on the budgets of `key` (the limiter's own only
    /// when `None`).
    #[inline]
    fn try_acquire_on(&self, key: Option<&KeyNames>, cost: Cost) -> Result<Permit<'_, C>, Denied> {
        let now = self.shared.clock.now();
        let mut st = self.lock();
        let route = self.route(&mut st, key, now);
        let waiters = st.queued_on(&route);
        if waiters > 0 {
            st.count(&route, |c| c.denied += 1);
            drop(st);
            return Err(self.denied(Denied::WaitersAhead { waiters }));
        }
        let verdict = match st.verdict(&route, now, &cost) {
            Ok(v) if v.verdict == Verdict::Admit => {
                let admission = st.admit(route, now, &cost, 0);
                let scope = observe::Scope::of(&st, &route);
                drop(st);
                observe::admitted(&scope, &cost, None);
                return Ok(Permit::new(self, cost, now, admission));
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
                    cost: l.measure.amount(&cost).unwrap_or(u64::MAX),
                    limit: l.limit.to_string(),
                    wait: Duration::from_nanos(until - now),
                }
            }
            Verdict::Paused { until } => Denied::Paused {
                wait: Duration::from_nanos(until - now),
            },
            Verdict::InFlightFull | Verdict::Admit => Denied::InFlightFull {
                max: holder.policy.max_in_flight.unwrap_or(0),
            },
        };
        drop(st);
        Err(self.denied(denied))
    }

    /// The budgets a request on `key` falls under (made when missing); the limiter's own only
    /// for `None` or a limiter without a config.
    #[inline]
    fn route(&self, st: &mut State, key: Option<&KeyNames>, now: Nanos) -> Route {
        match (key, &st.directory) {
            (Some(key), Some(directory)) => {
                let directory = Arc::clone(directory);
                st.resolve(&directory, key, now)
            }
            _ => Route::ROOT,
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
    /// let policy = Policy::builder().requests_per_minute(60).input_tokens_per_minute(6_000).max_in_flight(2).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request().input(1_000))?;
    /// let stats = limiter.stats();
    /// assert_eq!((stats.admitted, stats.in_flight), (1, 1));
    /// assert_eq!(stats.limits[1].dimension.name(), "input_tokens");
    /// assert_eq!((stats.limits[1].used, stats.limits[1].remaining), (1_000, 5_000));
    /// // The window is back to fresh 60 s after the admission, and refills then too.
    /// assert_eq!(stats.limits[1].reset_in, Some(Duration::from_secs(60)));
    /// assert_eq!(stats.limits[1].next_refill_in, Some(Duration::from_secs(60)));
    /// // Requests are paced at one a second (burst 1): the next one refills in a second.
    /// assert_eq!(stats.limits[0].next_refill_in, Some(Duration::from_secs(1)));
    /// permit.settle(Usage::new().input(400));
    /// assert_eq!(limiter.stats().limits[1].refunded, 600);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let now = self.shared.clock.now();
        self.lock().root_stats(now)
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and every update keeps the state consistent,
        // so a poisoned lock (a panic elsewhere in the holder's thread) is safe to use.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
