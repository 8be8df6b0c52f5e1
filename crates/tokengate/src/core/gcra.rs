//! GCRA: the token bucket, the leaky bucket as a meter, and (with a burst of one) the
//! leaky bucket as a shaper, all stored as one timestamp.
//!
//! The state is the *theoretical arrival time* (TAT): the instant at which the bucket is
//! full again. A bucket of capacity `burst` refilling at `rate` holds
//! `burst - (tat - now) * rate` units at `now`. Admitting `c` units moves the TAT forward by
//! the time those units take to refill; the admission is allowed while the TAT stays within
//! `burst`'s worth of time from `now`.

use super::time::{Nanos, Rate, Span};
use super::Decision;

/// The answer for an admission that would take the TAT past the end of the clock
/// (`u64::MAX` ns from its origin, 584 years): never. The TAT does not change with time, and
/// from a full bucket the units start from `now`, later still.
const NEVER: Decision = Decision::NotUntil(Nanos::MAX);

/// State of a GCRA limit: the instant at which its bucket is full again, and how much time
/// refunds have given back so far.
///
/// The instant is kept exactly: at a rate that is not a whole number of nanoseconds per unit
/// (3 a second is 333,333,333.33 ns each) `tat` is rounded up and `overshoot` says by how
/// much, so that rounding never adds up over a burst (three requests at once fill a bucket of
/// three a second, not one 2 ns short of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcraState {
    /// Theoretical arrival time, in nanoseconds since the clock's origin, rounded up.
    pub tat: Nanos,
    /// How far `tat` is past the exact theoretical arrival time, in `1/N`ths of a nanosecond
    /// for a limit of `N` per period: below `N`, and always 0 at a rate that is a whole number
    /// of nanoseconds per unit. The exact instant is `tat - overshoot / N`.
    pub overshoot: u64,
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
    /// Time worth of a full bucket: `rate.span(burst)`.
    pub(crate) tolerance: Span,
    /// When set, a cost above `burst` is admitted once the bucket is full, leaving it in debt
    /// (the shaper, and the smoothing half of the default algorithm). When clear, such a cost is
    /// impossible (the meter).
    pub(crate) oversize_when_full: bool,
    /// Admissions are decided as of this long ago (committed now): see
    /// [`LimitRule`](super::LimitRule)'s margin.
    pub(crate) margin: Nanos,
}

impl Gcra {
    /// A bucket of `burst` units (at most the amount when `oversize_when_full`: the burst is
    /// never above the capacity) whose time fits in a `u64` (`LimitRule::new` checks both).
    pub(crate) fn new(rate: Rate, burst: u64, oversize_when_full: bool, margin: Nanos) -> Self {
        debug_assert!(!oversize_when_full || burst <= rate.amount());
        Self {
            rate,
            burst,
            tolerance: rate.span(burst),
            oversize_when_full,
            margin,
        }
    }

    /// The largest cost admitted at once: the burst, or (with `oversize_when_full`) the
    /// amount per period.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        if self.oversize_when_full {
            self.rate.amount()
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
    /// `cost` is possible (callers check the capacity first; above it, never: `u64::MAX`).
    /// Returns `now` when admitted at once. The decision itself says: [`admit`].
    #[inline(always)]
    pub(crate) fn earliest(&self, state: &GcraState, now: Nanos, cost: u64) -> Nanos {
        match admit(self, state, now, cost) {
            Ok(_) => now,
            Err(Decision::NotUntil(at)) => at,
            Err(_) => Nanos::MAX,
        }
    }

    /// Records `cost` units at `now`; returns the admission's mark: the instant at which the
    /// bucket will have drained these units (the new exact TAT, rounded down: units leave the
    /// bucket after everything admitted before them) plus the time refunds had given back so
    /// far.
    ///
    /// A commit without a decision (a charge) whose TAT would pass the end of the clock leaves
    /// it at the end, `u64::MAX`: from there, no cost but 0 is ever admitted again (what the
    /// exact TAT would answer too, until a refund brings it back).
    #[inline(always)]
    pub(crate) fn commit(&self, state: &mut GcraState, now: Nanos, cost: u64) -> Nanos {
        let span = self.rate.span(cost);
        let tat = advance(state, span, self.rate.amount())
            .and_then(|after| next_tat(state, now, span, after))
            .unwrap_or(Span::whole(Nanos::MAX));
        commit_to(state, tat)
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
    ///
    /// What comes back is whole nanoseconds, rounded down: the exact TAT moves back by them,
    /// and keeps its fraction unless the bucket is full again.
    #[inline]
    pub(crate) fn refund(&self, state: &mut GcraState, now: Nanos, mark: Nanos, units: u64) {
        let drained_at = mark.saturating_sub(state.refunded);
        let still_held = drained_at.saturating_sub(now);
        let back = self.rate.time_for_floor(units).min(still_held);
        // A TAT at the end of the clock may stand for a later one that did not fit: what a
        // refund would give back from there is unknown, so nothing is.
        if state.tat > now && state.tat != Nanos::MAX {
            let tat = state.tat.saturating_sub(back).max(now);
            state.refunded = state.refunded.saturating_add(state.tat - tat);
            state.tat = tat;
            if tat == now {
                // Full: the exact TAT is `now` or before it, and counts as `now`.
                state.overshoot = 0;
            }
        }
    }

    /// The state of this bucket holding, from `now`, what `state` of the bucket `from` holds
    /// at `now` (rounded up to whole units): the same units, draining at this bucket's rate.
    /// A full bucket stays full; one at the end of the clock stays there.
    pub(crate) fn carry(&self, from: &Gcra, state: &GcraState, now: Nanos) -> GcraState {
        if state.tat <= now || state.tat == Nanos::MAX {
            return *state;
        }
        let held = from.rate.units_in_ceil(state.tat - now, state.overshoot);
        let span = self.rate.span(held);
        let (tat, overshoot) = match now.checked_add(span.time) {
            Some(tat) if tat != Nanos::MAX => (tat, span.over),
            _ => (Nanos::MAX, 0),
        };
        GcraState {
            tat,
            overshoot,
            refunded: state.refunded,
        }
    }

    /// Units available at `now` (0 while in debt).
    pub(crate) fn available(&self, state: &GcraState, now: Nanos) -> u64 {
        let ahead = state.tat.saturating_sub(now);
        if ahead == 0 {
            return self.burst;
        }
        // remaining = burst - ahead * rate, with the exact `ahead`, rounded down in the
        // caller's disfavour.
        let held = self.rate.units_in_ceil(ahead, state.overshoot);
        self.burst.saturating_sub(held)
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
    /// Nanoseconds per unit when that is a whole number, else 0.
    fn exact_unit(&self) -> Nanos;
    /// The time worth of a full bucket, rounded up (its [`Span`]'s `time`).
    fn tolerance(&self) -> Nanos;
    /// The time worth of a full bucket, exactly: read only for a rate that is not a whole
    /// number of nanoseconds per unit.
    fn tolerance_span(&self) -> Span;
    /// The rate: read only when it is not a whole number of nanoseconds per unit, or for a
    /// cost above the burst.
    fn rate(&self) -> Rate;
    /// How long ago admissions are decided as of ([`Gcra::margin`]).
    fn margin(&self) -> Nanos;
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
    fn exact_unit(&self) -> Nanos {
        self.rate.parts().2
    }

    #[inline(always)]
    fn tolerance(&self) -> Nanos {
        self.tolerance.time
    }

    #[inline(always)]
    fn tolerance_span(&self) -> Span {
        self.tolerance
    }

    #[inline(always)]
    fn rate(&self) -> Rate {
        self.rate
    }

    #[inline(always)]
    fn margin(&self) -> Nanos {
        self.margin
    }
}

/// A bucket's decision and commit in one, changing nothing: the state after admitting `cost`
/// at `now` and the admission's mark, or the decision that denies it. The units' time is
/// worked out once. [`LimitRule::decide`](super::LimitRule::decide) goes through it for a
/// bucket, and so do [`Gcra::earliest`] and the in-memory limiter's lane; [`Gcra::commit`]
/// shares its steps.
///
/// The common case comes first: a cost within the burst (so possible: the burst is never above
/// the capacity), at a rate that is a whole number of nanoseconds per unit (500 a minute is
/// 120 ms each). Then every time is whole, the state's overshoot is 0 (a caller may pass 0
/// without reading it), and neither the rate nor the capacity is read.
#[inline(always)]
pub(crate) fn admit(
    bucket: &impl Bucket,
    state: &GcraState,
    now: Nanos,
    cost: u64,
) -> Result<(GcraState, Nanos), Decision> {
    let unit = bucket.exact_unit();
    let within = cost <= bucket.burst();
    if within && unit != 0 {
        // No overflow: `cost <= burst`, and the burst's time fits (`LimitRule::new` checks it).
        let span = Span::whole(cost.wrapping_mul(unit));
        // `amount` is not read: a whole span has nothing to carry.
        let Some(after) = advance(state, span, 1) else {
            return Err(NEVER);
        };
        let tolerance = Span::whole(bucket.tolerance());
        return admit_with(state, now, span, after, tolerance, bucket.margin());
    }
    // The same steps with the exact times.
    if !within {
        let capacity = bucket.capacity();
        if cost > capacity {
            return Err(Decision::Impossible { capacity });
        }
    }
    let rate = bucket.rate();
    let span = rate.span(cost);
    let Some(after) = advance(state, span, rate.amount()) else {
        return Err(NEVER);
    };
    let tolerance = if within {
        bucket.tolerance_span()
    } else {
        // The shaper, the smoothing half of the default: waits for a full bucket.
        span
    };
    admit_with(state, now, span, after, tolerance, bucket.margin())
}

/// [`admit`]'s last steps, given the units' `span`, the TAT `after` them and the tolerance.
#[inline(always)]
fn admit_with(
    state: &GcraState,
    now: Nanos,
    span: Span,
    after: Span,
    tolerance: Span,
    margin: Nanos,
) -> Result<(GcraState, Nanos), Decision> {
    // A bucket that has admitted nothing yet has been full since ever: no margin to keep.
    let margin = if state.tat == 0 { 0 } else { margin };
    let at = earliest_with(after, tolerance, margin, now);
    if at > now {
        // Full by then, the bucket starts the units from `at`: near the end of the clock,
        // maybe past it.
        if next_tat(state, at, span, after).is_none() {
            return Err(NEVER);
        }
        return Err(Decision::NotUntil(at));
    }
    let Some(tat) = next_tat(state, now, span, after) else {
        return Err(NEVER);
    };
    let mut next = *state;
    let mark = commit_to(&mut next, tat);
    Ok((next, mark))
}

/// The exact TAT `span` after the state's own (as a [`Span`] from the clock's origin): where
/// it moves to when the bucket is not full, or `None` when that is past the end of the clock
/// (its rounding up does not fit in a `u64`). The two roundings up (the state's and the
/// span's) may add up to a whole nanosecond or more, which is given back. `amount` is the
/// rate's (the unit of the overshoots); it is read only when `span` has an overshoot.
#[inline(always)]
fn advance(state: &GcraState, span: Span, amount: u64) -> Option<Span> {
    if span.over == 0 {
        return Some(Span {
            time: state.tat.checked_add(span.time)?,
            over: state.overshoot,
        });
    }
    // Both overshoots are below `amount`: their sum is below 2 * amount, at most one
    // nanosecond too many. `span.over != 0` means `span.time >= 1`. Chosen without a branch:
    // which way it goes changes from one admission to the next.
    let gap = amount - span.over;
    let carry = state.overshoot >= gap;
    Some(Span {
        time: state.tat.checked_add(span.time - u64::from(carry))?,
        over: if carry {
            state.overshoot - gap
        } else {
            state.overshoot + span.over
        },
    })
}

/// The earliest instant `>= now` at which the units are admitted, given the TAT `after` them
/// ([`advance`]) and the `tolerance`: the bucket's, or for a cost above the burst the units'
/// own (it waits for a full bucket).
#[inline(always)]
fn earliest_with(after: Span, tolerance: Span, margin: Nanos, now: Nanos) -> Nanos {
    // Admitted at t when max(tat, t) + span - t <= tolerance (exact values), i.e. (for
    // tat > t) t >= after - tolerance. With after = A - a/N and tolerance = T - b/N (whole
    // A and T, a and b below N), that is t >= A - T - (a - b)/N, whose ceiling is A - T,
    // plus one when a < b. Decided as of `margin` earlier: `margin` later.
    // Before the margin, the instant may be before the clock's origin: then it is
    // `margin + rounding - (T - A)`, at least 0.
    let rounding = u64::from(after.over < tolerance.over);
    let at = match after.time.checked_sub(tolerance.time) {
        Some(gap) => gap.saturating_add(rounding).saturating_add(margin),
        None => (margin + rounding).saturating_sub(tolerance.time - after.time),
    };
    at.max(now)
}

/// The TAT after admitting units of `span` at `now`, given the TAT `after` them when the bucket
/// is not full ([`advance`]); `None` past the end of the clock.
#[inline(always)]
fn next_tat(state: &GcraState, now: Nanos, span: Span, after: Span) -> Option<Span> {
    if state.tat > now {
        Some(after)
    } else {
        // Full at `now`: the units start from it.
        Some(Span {
            time: now.checked_add(span.time)?,
            over: span.over,
        })
    }
}

/// Stores the TAT `tat` ([`next_tat`]) and returns the admission's mark.
#[inline(always)]
fn commit_to(state: &mut GcraState, tat: Span) -> Nanos {
    state.tat = tat.time;
    state.overshoot = tat.over;
    // The units drain at the exact TAT: rounded down here, so a refund never counts as still
    // held a fraction of a nanosecond they do not hold.
    let drained_at = tat.time.saturating_sub(u64::from(tat.over != 0));
    drained_at.saturating_add(state.refunded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn bucket(amount: u64, period: Nanos, burst: u64) -> Gcra {
        Gcra::new(Rate::new(amount, period), burst, false, 0)
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
    fn a_burst_at_a_fractional_rate_fills_the_bucket_exactly() {
        // 3 a second: 333,333,333.33 ns a unit. Rounded up one by one, three would take
        // 2 ns more than the bucket's second.
        let g = bucket(3, S, 3);
        let mut s = GcraState::default();
        for _ in 0..3 {
            assert_eq!(g.decide(&s, 0, 1), Decision::Admit);
            let _ = g.commit(&mut s, 0, 1);
        }
        assert_eq!((s.tat, s.overshoot), (S, 0));
        assert_eq!(g.decide(&s, 0, 1), Decision::NotUntil(S / 3 + 1));
        // 666,666,666.67 ns ahead at S/3 (two units and a bit held), 666,666,666 just after.
        assert_eq!(g.available(&s, S / 3), 0);
        assert_eq!(g.available(&s, S / 3 + 1), 1);
    }

    #[test]
    fn a_refund_keeps_the_fraction_until_the_bucket_is_full() {
        let g = bucket(3, 10, 3); // 3.33 ns a unit
        let mut s = GcraState::default();
        let _ = g.commit(&mut s, 0, 1); // 3.33: tat 4, 2/3 ns over
        let second = g.commit(&mut s, 0, 1); // 6.67: tat 7, 1/3 ns over
        assert_eq!((s.tat, s.overshoot), (7, 1));
        g.refund(&mut s, 0, second, 1); // back floor(3.33) = 3 ns: 3.67
        assert_eq!((s.tat, s.overshoot), (4, 1));
        // The units drain at 3.33: the mark is 3, and at 1 a refund gives back the 2 ns still
        // held, not 2.33 (rounded down).
        let mut s = GcraState::default();
        let only = g.commit(&mut s, 0, 1); // tat 4, 2/3 ns over
        assert_eq!(only, 3);
        g.refund(&mut s, 1, only, 1);
        assert_eq!((s.tat, s.overshoot), (2, 2));
        // A refund that brings the bucket back to full drops the fraction (a mark from a
        // state kept elsewhere, later than this one's).
        g.refund(&mut s, 1, 10, 3);
        assert_eq!((s.tat, s.overshoot), (1, 0));
    }

    #[test]
    fn the_end_of_the_clock_is_exact_with_a_carry() {
        let g = bucket(3, 10, 3); // 3.33 ns a unit: 4 ns rounded up, 2/3 ns over
        let end = Nanos::MAX;
        // Exactly end - 3 - 2/3: one more unit puts the exact TAT at end - 1/3, which rounds
        // up to the end itself, though 4 ns more than `tat` would pass it.
        let mut s = GcraState {
            tat: end - 3,
            overshoot: 2,
            refunded: 0,
        };
        assert_eq!(g.decide(&s, end - 11, 1), Decision::NotUntil(end - 10));
        assert_eq!(g.decide(&s, end - 10, 1), Decision::Admit);
        let _ = g.commit(&mut s, end - 10, 1);
        assert_eq!((s.tat, s.overshoot), (end, 1));
        assert_eq!(g.decide(&s, end - 1, 1), NEVER);
        assert_eq!(g.decide(&s, end, 1), NEVER);
        assert_eq!(g.decide(&s, end, 0), Decision::Admit);
        // From a full bucket the units start from `now`: past the end too.
        let fresh = GcraState::default();
        assert_eq!(g.decide(&fresh, end - 4, 1), Decision::Admit);
        assert_eq!(g.decide(&fresh, end - 3, 1), NEVER);
        // A charge past the end stops there, and no refund brings the bucket back.
        let mark = g.commit(&mut s, end, 3);
        assert_eq!((s.tat, s.overshoot), (end, 0));
        g.refund(&mut s, end - 1, mark, 3);
        assert_eq!(s.tat, end);
    }

    #[test]
    fn shaper_spaces_evenly_and_admits_oversize_when_full() {
        let g = Gcra::new(Rate::new(10, S), 1, true, 0);
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
