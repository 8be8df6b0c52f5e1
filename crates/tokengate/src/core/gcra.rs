//! GCRA: the token bucket, the leaky bucket as a meter, and (with a burst of one) the
//! leaky bucket as a shaper, all stored as one timestamp.
//!
//! The state is the *theoretical arrival time* (TAT): the instant at which the bucket is
//! full again. A bucket of capacity `burst` refilling at `rate` holds
//! `burst - (tat - now) * rate` units at `now`. Admitting `c` units moves the TAT forward by
//! the time those units take to refill; the admission is allowed while the TAT stays within
//! `burst`'s worth of time from `now`.

use super::time::{Nanos, Rate};
use super::Decision;

/// State of a GCRA limit: the instant at which its bucket is full again, and how much time
/// refunds have given back so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcraState {
    /// Theoretical arrival time, in nanoseconds since the clock's origin.
    pub tat: Nanos,
    /// Time given back by refunds since the state was created (ns, saturating). Refunds move
    /// the units admitted after the refunded one forward; receipts subtract what was given back
    /// since they were issued to know how much of their own units the bucket still holds.
    pub refunded: Nanos,
}

/// Parameters of one GCRA limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub(crate) rate: Rate,
    /// Bucket capacity in units.
    pub(crate) burst: u64,
    /// Time worth of a full bucket: `rate.time_for(burst)`.
    pub(crate) tolerance: Nanos,
    /// When set, a cost above `burst` is admitted once the bucket is full, leaving it in debt
    /// (the shaper, and the smoothing half of the default algorithm). When clear, such a cost is
    /// impossible (the meter).
    pub(crate) oversize_when_full: bool,
}

impl Gcra {
    pub(crate) fn new(rate: Rate, burst: u64, oversize_when_full: bool) -> Self {
        Self {
            rate,
            burst,
            tolerance: rate.time_for(burst),
            oversize_when_full,
        }
    }

    /// The largest cost admitted at once: the burst, or (with `oversize_when_full`) the
    /// amount per period.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        if self.oversize_when_full {
            self.rate.parts().0
        } else {
            self.burst
        }
    }

    /// Whether `cost` units are admitted at `now`: [`LimitRule::decide`](super::LimitRule::decide)
    /// for a bucket.
    #[inline(always)]
    pub(crate) fn decide(&self, state: &GcraState, now: Nanos, cost: u64) -> Decision {
        match admit(self, state, now, cost) {
            Ok(_) => Decision::Admit,
            Err(denied) => denied,
        }
    }

    /// The earliest instant `>= now` at which `cost` units are admitted, assuming
    /// `cost` is possible. Returns `now` when admitted at once.
    #[inline(always)]
    pub(crate) fn earliest(&self, state: &GcraState, now: Nanos, cost: u64) -> Nanos {
        earliest_with(self, state, now, cost, self.rate.time_for(cost))
    }

    /// Records `cost` units at `now`; returns the admission's mark: the instant at which the
    /// bucket will have drained these units (the new TAT: units leave the bucket after
    /// everything admitted before them) plus the time refunds had given back so far.
    #[inline(always)]
    pub(crate) fn commit(&self, state: &mut GcraState, now: Nanos, cost: u64) -> Nanos {
        commit_with(state, now, self.rate.time_for(cost))
    }

    /// Gives back up to `units` of the admission whose commit returned `mark`. Only what is
    /// still in the bucket comes back: units already drained (the bucket refilled past them
    /// since) were given back by time, and giving them back again would let in more than the
    /// limit. The level never rises above the capacity.
    ///
    /// The admission's units drain at `mark - refunded` as far as refunds since its commit are
    /// concerned: each moved everything after the refunded units forward by what it gave back,
    /// and counting refunds of later admissions too only makes the estimate earlier. So this
    /// never gives back more than an admission of only the used units would have left.
    #[inline]
    pub(crate) fn refund(&self, state: &mut GcraState, now: Nanos, mark: Nanos, units: u64) {
        let drained_at = mark.saturating_sub(state.refunded);
        let still_held = drained_at.saturating_sub(now);
        let back = self.rate.time_for_floor(units).min(still_held);
        if state.tat > now {
            let tat = state.tat.saturating_sub(back).max(now);
            state.refunded = state.refunded.saturating_add(state.tat - tat);
            state.tat = tat;
        }
    }

    /// Units available at `now` (0 while in debt).
    pub(crate) fn available(&self, state: &GcraState, now: Nanos) -> u64 {
        let ahead = state.tat.saturating_sub(now);
        if ahead >= self.tolerance {
            return 0;
        }
        // remaining = burst - ahead * rate, rounded down in the caller's disfavour.
        self.burst.saturating_sub(self.rate.units_in_ceil(ahead))
    }
}

/// What a bucket's decision reads of its rule: a [`Gcra`], or a copy of one kept elsewhere
/// (the in-memory limiter's lock-free lane keeps it in atomics, where every read is a load, and
/// reads only what a decision needs: the rate itself only when it is not a whole number of
/// nanoseconds per unit).
pub(crate) trait Bucket {
    /// The largest cost admitted at once ([`Gcra::capacity`]).
    fn capacity(&self) -> u64;
    /// The bucket's size in units.
    fn burst(&self) -> u64;
    /// The time worth of a full bucket.
    fn tolerance(&self) -> Nanos;
    /// The time `units` take to refill, rounded up ([`Rate::time_for`]).
    fn time_for(&self, units: u64) -> Nanos;
}

impl Bucket for Gcra {
    #[inline(always)]
    fn capacity(&self) -> u64 {
        Gcra::capacity(self)
    }

    #[inline(always)]
    fn burst(&self) -> u64 {
        self.burst
    }

    #[inline(always)]
    fn tolerance(&self) -> Nanos {
        self.tolerance
    }

    #[inline(always)]
    fn time_for(&self, units: u64) -> Nanos {
        self.rate.time_for(units)
    }
}

/// A bucket's decision and commit in one, changing nothing: the state after admitting `cost`
/// at `now` and the admission's mark, or the decision that denies it. The units' time is
/// worked out once. [`LimitRule::decide`](super::LimitRule::decide) goes through it for a
/// bucket, and so does the in-memory limiter's lane; [`Gcra::commit`] shares its last step
/// (`commit_with`).
#[inline(always)]
pub(crate) fn admit(
    bucket: &impl Bucket,
    state: &GcraState,
    now: Nanos,
    cost: u64,
) -> Result<(GcraState, Nanos), Decision> {
    let capacity = bucket.capacity();
    if cost > capacity {
        return Err(Decision::Impossible { capacity });
    }
    let time = bucket.time_for(cost);
    let at = earliest_with(bucket, state, now, cost, time);
    if at > now {
        return Err(Decision::NotUntil(at));
    }
    let mut after = *state;
    let mark = commit_with(&mut after, now, time);
    Ok((after, mark))
}

/// [`Gcra::earliest`], given `time = time_for(cost)`.
#[inline(always)]
fn earliest_with(
    bucket: &impl Bucket,
    state: &GcraState,
    now: Nanos,
    cost: u64,
    time: Nanos,
) -> Nanos {
    let tolerance = if cost > bucket.burst() {
        // Only reachable with `oversize_when_full`: wait for a full bucket.
        time
    } else {
        bucket.tolerance()
    };
    // Admitted at t when max(tat, t) + time_for(cost) - t <= tolerance, i.e. (for tat > t)
    // t >= tat + time_for(cost) - tolerance.
    let at = state.tat.saturating_add(time).saturating_sub(tolerance);
    at.max(now)
}

/// [`Gcra::commit`], given the units' `time`.
#[inline(always)]
fn commit_with(state: &mut GcraState, now: Nanos, time: Nanos) -> Nanos {
    state.tat = state.tat.max(now).saturating_add(time);
    state.tat.saturating_add(state.refunded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn bucket(amount: u64, period: Nanos, burst: u64) -> Gcra {
        Gcra::new(Rate::new(amount, period), burst, false)
    }

    #[test]
    fn full_bucket_admits_burst_then_refills_at_rate() {
        let g = bucket(10, S, 5); // 10 per second: one unit every 100 ms
        let mut s = GcraState::default();
        for _ in 0..5 {
            assert_eq!(g.earliest(&s, 0, 1), 0);
            let _ = g.commit(&mut s, 0, 1);
        }
        assert_eq!(g.earliest(&s, 0, 1), S / 10);
        assert_eq!(g.earliest(&s, 0, 3), 3 * S / 10);
        assert_eq!(g.available(&s, 0), 0);
        assert_eq!(g.available(&s, S / 10), 1);
        assert_eq!(g.available(&s, S), 5);
    }

    #[test]
    fn refund_never_overfills() {
        let g = bucket(10, S, 5);
        let mut s = GcraState::default();
        let mark = g.commit(&mut s, 0, 2);
        g.refund(&mut s, 0, mark, 100);
        assert_eq!(s.tat, 0);
        assert_eq!(g.available(&s, 0), 5);
    }

    #[test]
    fn refund_gives_back_only_units_still_in_the_bucket() {
        let g = bucket(10, S, 10); // one unit every 100 ms
        let mut s = GcraState::default();
        let early = g.commit(&mut s, 0, 10); // drained by 1 s
        let late = g.commit(&mut s, 2 * S, 10); // the bucket refilled first: drained by 3 s
        g.refund(&mut s, 2 * S, early, 10); // all drained already: nothing comes back
        assert_eq!(s.tat, 3 * S);
        g.refund(&mut s, 2 * S + S / 2, late, 8); // 5 units of it are still held
        assert_eq!(s.tat, 3 * S - S / 2);
        assert_eq!(g.available(&s, 2 * S + S / 2), 10);
    }

    #[test]
    fn refunding_an_earlier_admission_moves_the_later_ones_forward() {
        let g = bucket(4, 4, 4); // one unit a nanosecond, burst 4
        let mut s = GcraState::default();
        let first = g.commit(&mut s, 0, 1); // drains by 1
        let second = g.commit(&mut s, 0, 3); // drains by 4
        g.refund(&mut s, 0, first, 1); // the second now drains by 3
        assert_eq!(s.tat, 3);
        let _third = g.commit(&mut s, 2, 1); // tat 4
                                             // At 2, one unit of the second is still held, not two.
        g.refund(&mut s, 2, second, 2);
        assert_eq!(s.tat, 3);
    }

    #[test]
    fn shaper_spaces_evenly_and_admits_oversize_when_full() {
        let g = Gcra::new(Rate::new(10, S), 1, true);
        let mut s = GcraState::default();
        assert_eq!(g.earliest(&s, 0, 1), 0);
        g.commit(&mut s, 0, 1);
        assert_eq!(g.earliest(&s, 0, 1), S / 10);
        // Four units at once wait for a full bucket, then put it 400 ms into debt.
        assert_eq!(g.earliest(&s, 0, 4), S / 10);
        g.commit(&mut s, S / 10, 4);
        assert_eq!(g.earliest(&s, S / 10, 1), S / 10 + 4 * S / 10);
    }
}
