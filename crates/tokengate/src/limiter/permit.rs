//! What an admission returns.

use std::fmt;

use super::Limiter;
use crate::clock::Clock;
use crate::core::{settle_all, Nanos};
use crate::cost::{Cost, Usage};

/// Proof of admission. Holds the in-flight slot (if the policy caps in-flight requests) and
/// remembers what was reserved, so [`settle`](Self::settle) can refund or charge the
/// difference with the real usage.
///
/// Dropping a permit without settling frees its slot and keeps the reservation as the usage.
/// A permit settles at most once: `settle` consumes it.
#[must_use = "dropping a permit at once frees its in-flight slot; hold it for the call's duration"]
pub struct Permit<'a, C: Clock> {
    limiter: &'a Limiter<C>,
    cost: Cost,
    admitted_at: Nanos,
    holds_slot: bool,
}

impl<'a, C: Clock> Permit<'a, C> {
    pub(crate) fn new(
        limiter: &'a Limiter<C>,
        cost: Cost,
        admitted_at: Nanos,
        holds_slot: bool,
    ) -> Self {
        Self {
            limiter,
            cost,
            admitted_at,
            holds_slot,
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
    pub fn settle(mut self, usage: Usage) {
        let used = usage.as_cost(&self.cost);
        let limiter = self.limiter;
        let now = limiter.shared.clock.now();
        let mut st = limiter.lock();
        let super::State {
            limits, counters, ..
        } = &mut *st;
        let totals = counters
            .charged
            .iter_mut()
            .zip(counters.refunded.iter_mut());
        let policy = &limiter.shared.policy;
        settle_all(
            policy.limits.iter().zip(limits.iter_mut()).zip(totals).map(
                |((l, s), (charged, refunded))| {
                    let reserved = l.measure.amount(&self.cost).unwrap_or(0);
                    // A usage figure that overflows is charged as the most there is (capped by `charge`).
                    let used = l.measure.amount(&used).unwrap_or(u64::MAX);
                    *refunded = refunded.saturating_add(reserved.saturating_sub(used));
                    *charged =
                        charged.saturating_add(used.saturating_sub(reserved).min(l.rule.amount()));
                    (&l.rule, s, reserved, used)
                },
            ),
            now,
            self.admitted_at,
        );
        counters.settled += 1;
        if self.holds_slot {
            self.holds_slot = false;
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        // Budget or a slot may have come back: the head waiter may be admitted now.
        limiter.serve_queue_now(&mut st);
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    #[inline]
    fn drop(&mut self) {
        if self.holds_slot {
            let mut st = self.limiter.lock();
            self.limiter.release_slot(&mut st);
        }
    }
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("cost", &self.cost)
            .field("admitted_at", &self.admitted_at)
            .field("holds_slot", &self.holds_slot)
            .finish()
    }
}
