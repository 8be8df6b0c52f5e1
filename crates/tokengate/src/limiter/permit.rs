//! What an admission returns.

use std::fmt;

use super::route::Admission;
use super::{observe, Limiter};
use crate::clock::Clock;
use crate::core::Nanos;
use crate::cost::{Cost, Usage};

/// Proof of admission. Holds the in-flight slot (if the policy caps in-flight requests) and
/// remembers what was reserved, so [`settle`](Self::settle) can refund or charge the
/// difference with the real usage.
///
/// Dropping a permit without settling frees its slot and keeps the reservation as the usage.
/// A permit settles at most once: `settle` consumes it.
#[must_use = "dropping a permit at once frees its in-flight slot; hold it for the call's duration"]
pub struct Permit<'a, C: Clock> {
    limiter: LimiterRef<'a, C>,
    cost: Cost,
    admitted_at: Nanos,
    /// Its budgets, their in-flight slots and each limit's bucket mark, for refunds. Emptied
    /// (no slots, no route) once settled or moved, so that dropping it then gives back nothing.
    admission: Admission,
    /// On a store-backed limiter, what the store reserved (its `admission` is then empty).
    /// Taken once settled or moved.
    #[cfg(feature = "tokio")]
    held: Option<Box<super::remote::Held>>,
}

impl<'a, C: Clock> Permit<'a, C> {
    pub(crate) fn new(
        limiter: &'a Limiter<C>,
        cost: Cost,
        admitted_at: Nanos,
        admission: Admission,
    ) -> Self {
        Self {
            limiter: LimiterRef::Borrowed(limiter),
            cost,
            admitted_at,
            admission,
            #[cfg(feature = "tokio")]
            held: None,
        }
    }

    /// The permit of `cost`, admitted by a store-backed limiter at `admitted_at` with `held`.
    #[cfg(feature = "tokio")]
    pub(crate) fn held(
        limiter: &'a Limiter<C>,
        cost: Cost,
        admitted_at: Nanos,
        held: super::remote::Held,
    ) -> Self {
        Self {
            limiter: LimiterRef::Borrowed(limiter),
            cost,
            admitted_at,
            admission: Admission::EMPTY,
            held: Some(Box::new(held)),
        }
    }

    /// The same permit holding its own handle to the limiter, so it can outlive the borrow
    /// it was acquired through: kept in a response body that settles when the stream ends, or
    /// moved into a spawned task.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limiter, ManualClock, Permit, Policy, Usage};
    ///
    /// fn reserve(limiter: &Limiter<ManualClock>) -> Permit<'static, ManualClock> {
    ///     limiter.try_acquire(Cost::request().output(800)).unwrap().into_owned()
    /// }
    ///
    /// let policy = Policy::builder().output_tokens_per_minute(8_000).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = reserve(&limiter);
    /// permit.settle(Usage::new().output(100));
    /// assert_eq!(limiter.stats().limits[0].used, 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_owned(mut self) -> Permit<'static, C> {
        let limiter = LimiterRef::Owned(self.limiter.get().clone());
        // The slots move to the new permit: this one, emptied, frees nothing when it drops.
        Permit {
            limiter,
            cost: std::mem::replace(&mut self.cost, Cost::zero()),
            admitted_at: self.admitted_at,
            admission: std::mem::replace(&mut self.admission, Admission::EMPTY),
            #[cfg(feature = "tokio")]
            held: self.held.take(),
        }
    }

    /// What was reserved.
    pub fn cost(&self) -> &Cost {
        &self.cost
    }

    /// When it was admitted, in nanoseconds of the limiter's clock.
    pub fn admitted_at(&self) -> Nanos {
        self.admitted_at
    }

    /// Settles with the real usage: every limit gets back what was reserved and not used (at
    /// once, never above its capacity), or is charged what was used beyond the reservation
    /// (into debt: later requests wait). Frees the in-flight slot.
    ///
    /// Only what still counts against a limit comes back: units that have left its window, or
    /// that its bucket has refilled past since the admission, were given back by time already.
    /// So a late settlement never lets in more than the limit would have, had the request
    /// reserved only what it used.
    ///
    /// On a store-backed limiter ([`Limiter::with_store`]) the settlement goes to the store in
    /// a task spawned on the runtime the permit was acquired on (or, should that runtime have
    /// shut down, on the limiter's own thread): the store sees it a moment later. Dropping
    /// such a permit sends its end the same way.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    ///
    /// let policy = Policy::builder().output_tokens_per_minute(8_000).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request().output(800))?;
    /// assert_eq!(limiter.stats().limits[0].used, 800);
    /// permit.settle(Usage::new().output(312));
    /// assert_eq!(limiter.stats().limits[0].used, 312);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A permit settles at most once, and never after it is dropped: `settle` takes it by
    /// value, so either mistake is a compile error (use of a moved value).
    /// ```compile_fail,E0382
    /// # use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    /// # let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(60).build().unwrap(), ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request()).unwrap();
    /// permit.settle(Usage::new());
    /// permit.settle(Usage::new()); // error[E0382]: use of moved value: `permit`
    /// ```
    /// ```compile_fail,E0382
    /// # use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    /// # let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(60).build().unwrap(), ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request()).unwrap();
    /// drop(permit);
    /// permit.settle(Usage::new()); // error[E0382]: use of moved value: `permit`
    /// ```
    pub fn settle(mut self, usage: Usage) {
        #[cfg(feature = "tokio")]
        if let Some(held) = self.held.take() {
            // On the store, in a task of its own (see `Limiter::with_store`).
            held.end(Some(usage));
            return;
        }
        let used = usage.as_cost(&self.cost);
        let limiter = self.limiter.get();
        let now = limiter.shared.clock.now();
        // Taken out first: whatever happens from here, dropping the permit gives back nothing.
        let admission = std::mem::replace(&mut self.admission, Admission::EMPTY);
        let (mut st, now) = limiter.lock_at(now);
        st.settle(now, &admission, &self.cost, &used, self.admitted_at);
        let route = admission.route();
        st.count(&route, |c| c.settled += 1);
        let scope = observe::Scope::of(&st, &route);
        // Budget or a slot may have come back: the head waiters may be admitted now.
        st.release(now, &route, admission.slots);
        drop(st);
        observe::settled(&scope, &self.cost, &used);
    }

    /// Gives back everything the permit reserved, the request itself included: for a call that
    /// never reached the provider (the connection was refused, the caller gave up before
    /// sending). A settlement of nothing used, on every figure the cost names; like
    /// [`settle`](Self::settle), it frees the in-flight slot, and only what still counts
    /// against a limit comes back.
    ///
    /// # Examples
    /// ```
    /// use tokengate::{Cost, Limiter, ManualClock, Policy};
    ///
    /// let policy = Policy::builder()
    ///     .requests_per_minute(60)
    ///     .output_tokens_per_minute(8_000)
    ///     .build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request().output(800))?;
    /// permit.cancel();
    /// assert!(limiter.stats().limits.iter().all(|l| l.used == 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(self) {
        let nothing = Usage::nothing_of(&self.cost);
        self.settle(nothing);
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // Nothing to give back for a permit on the limiter's own budget without a slot: no lock.
        if self.admission.slots != 0 || self.admission.keyed.is_some() || self.held_by_store() {
            self.give_back();
        }
    }
}

impl<C: Clock> Permit<'_, C> {
    /// Frees the slots of a permit dropped unsettled: in the lane when it can, else under the
    /// lock, where the head waiters may be served; or ends its reservation on the store. Out of line, so dropping a permit with
    /// nothing to give back stays a few tests.
    #[inline(never)]
    fn give_back(&mut self) {
        #[cfg(feature = "tokio")]
        if let Some(held) = self.held.take() {
            // Ended on the store, its reservation kept (see `Limiter::with_store`).
            held.end(None);
            return;
        }
        let limiter = self.limiter.get();
        if self.admission.keyed.is_none() && limiter.shared.lane.try_release() {
            return;
        }
        let now = limiter.shared.clock.now();
        let (mut st, now) = limiter.lock_at(now);
        st.release(now, &self.admission.route(), self.admission.slots);
    }
}

impl<C: Clock> Permit<'_, C> {
    /// Whether a store holds its reservation.
    #[inline(always)]
    fn held_by_store(&self) -> bool {
        #[cfg(feature = "tokio")]
        {
            self.held.is_some()
        }
        #[cfg(not(feature = "tokio"))]
        {
            false
        }
    }
}

/// The limiter a permit settles on: borrowed, or (after [`Permit::into_owned`]) a handle of
/// its own.
enum LimiterRef<'a, C: Clock> {
    Borrowed(&'a Limiter<C>),
    Owned(Limiter<C>),
}

impl<C: Clock> LimiterRef<'_, C> {
    #[inline]
    fn get(&self) -> &Limiter<C> {
        match self {
            LimiterRef::Borrowed(l) => l,
            LimiterRef::Owned(l) => l,
        }
    }
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("cost", &self.cost)
            .field("admitted_at", &self.admitted_at)
            .field("in_flight_slots", &self.admission.slots.count_ones())
            .field("store", &self.held_by_store())
            .finish()
    }
}
