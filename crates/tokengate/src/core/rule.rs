//! A validated limit and the decision it makes over one state.

use super::gcra::{Gcra, GcraState};
use super::time::{Nanos, Rate};
use super::{fixed_window, sliding_counter, sliding_log};
use super::{FixedWindowState, SlidingCounterState, SlidingLogState};
use crate::error::BuildError;
use crate::limit::{Algorithm, Limit};

/// A period up to which the default algorithm smooths bursts: providers may enforce a limit of
/// N per minute as N/60 per second, so a limit of N per period of a minute or less holds at
/// most N/60 at once (rounded down: a bucket any larger would admit what such a provider
/// refuses).
const SMOOTHING_MAX_PERIOD: Nanos = 60_000_000_000;

/// The default burst of [`Algorithm::SmoothWindow`]: a sixtieth of the amount, rounded down
/// (at least one unit), for periods up to a minute; the whole amount for longer periods (a
/// daily cap is a budget, not a pace).
fn smooth_default_burst(amount: u64, period: Nanos) -> u64 {
    if period <= SMOOTHING_MAX_PERIOD {
        (amount / 60).max(1)
    } else {
        amount
    }
}

/// `at` if the bucket admits `cost` at `at` (after its own earliest instant), else never: the
/// units would pass the end of the clock. Out of line: a denial only.
#[cold]
#[inline(never)]
fn recheck_bucket(g: &Gcra, b: &GcraState, at: Nanos, cost: u64) -> Nanos {
    g.earliest(b, at, cost)
}

/// The answer of an algorithm to "may `cost` be admitted at `now`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted now.
    Admit,
    /// Denied now; admitted at exactly this instant if nothing else is admitted first.
    ///
    /// `NotUntil(u64::MAX)` is never, by time alone: the admission would need the limit's state
    /// past the end of the clock (`u64::MAX` ns, 584 years from its origin; reachable only with
    /// a clock set near it, or a period of centuries: a bucket of one per 300 years is full
    /// again only after the end, so it never admits a second unit). The limit stays as strict
    /// as it was rather than wrap around; a refund may still bring the admission back.
    NotUntil(Nanos),
    /// Never admitted: the cost is above the largest cost this limit can admit.
    Impossible {
        /// The largest cost this limit can ever admit at once.
        capacity: u64,
    },
}

/// What an admission leaves for its settlement ([`LimitRule::refund`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// When it was admitted.
    pub admitted_at: Nanos,
    /// For the bucket algorithms (token bucket, leaky bucket, the smooth window's bucket): the
    /// instant at which the bucket will have drained the units it took (rounded down to whole
    /// nanoseconds), plus the time refunds
    /// had given back when it was issued ([`GcraState::refunded`](super::GcraState::refunded)).
    /// 0 for the others.
    pub bucket_mark: Nanos,
}

/// What a limit looks like at an instant, for stats and for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Units counted against the limit now (in the window, or missing from the bucket).
    pub used: u64,
    /// Units that could be admitted now.
    pub remaining: u64,
    /// The instant at which the limit is back to a fresh key's state, if it is not already.
    pub reset_at: Option<Nanos>,
    /// The next instant at which `remaining` grows (a unit refills, or an admission leaves the
    /// window), if it is below the capacity.
    pub next_refill_at: Option<Nanos>,
}

/// One limit, validated and ready to decide: `amount` units per `period`, with an algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    amount: u64,
    period: Nanos,
    /// The safety margin ([`Limit::margin`]): buckets decide as of this long ago, windows of
    /// the log count each admission this much longer.
    margin: Nanos,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gcra(Gcra),
    Log,
    Counter,
    Fixed,
    /// The default: an exact sliding window log, smoothed by a GCRA bucket.
    Smooth(Gcra),
}

/// A token or leaky bucket rule as plain integers: what the in-memory limiter's lock-free lane
/// keeps of a rule, to decide with the very same code as [`LimitRule::decide`]
/// ([`gcra::admit`](super::gcra::admit), over its own [`Bucket`](super::gcra::Bucket) view of
/// these integers), which also works out the state after the admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BucketParts {
    /// The rate: `amount` units per `period` ns, `exact_unit` ns each when that is whole
    /// (else 0).
    pub(crate) amount: u64,
    pub(crate) period: Nanos,
    pub(crate) exact_unit: Nanos,
    pub(crate) burst: u64,
    /// A full bucket's time, rounded up, and what the rounding added in `1/amount`ths of a
    /// nanosecond (0 when `exact_unit` is not).
    pub(crate) tolerance: Nanos,
    pub(crate) tolerance_over: u64,
    /// The largest cost admitted at once.
    pub(crate) capacity: u64,
    /// The safety margin ([`Limit::margin`]).
    pub(crate) margin: Nanos,
}

/// The state of one limit for one key: plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitState {
    /// Token bucket, leaky bucket.
    Gcra(GcraState),
    /// Sliding window log.
    Log(SlidingLogState),
    /// Sliding window counter.
    Counter(SlidingCounterState),
    /// Fixed window.
    Fixed(FixedWindowState),
    /// The default algorithm: a smoothing bucket and an exact window.
    Smooth(GcraState, SlidingLogState),
}

impl LimitRule {
    /// Validates `limit`.
    ///
    /// # Errors
    /// [`BuildError`] when the amount, period or burst is zero or out of range, or a burst is
    /// given to an algorithm that has none.
    pub fn new(limit: &Limit) -> Result<Self, BuildError> {
        let amount = limit.amount;
        if amount == 0 {
            return Err(BuildError::ZeroAmount);
        }
        let period =
            u64::try_from(limit.period.as_nanos()).map_err(|_| BuildError::PeriodTooLong {
                period: limit.period,
            })?;
        if period == 0 {
            return Err(BuildError::ZeroPeriod);
        }
        let rate = Rate::new(amount, period);
        let margin = match limit.algorithm {
            // Approximate by design: no margin.
            Algorithm::SlidingWindowCounter | Algorithm::FixedWindow => 0,
            _ => {
                let margin = limit.margin.unwrap_or(Limit::DEFAULT_MARGIN);
                match u64::try_from(margin.as_nanos()) {
                    Ok(m) if m < period => m,
                    _ => {
                        return Err(BuildError::MarginTooLong {
                            margin,
                            period: limit.period,
                        })
                    }
                }
            }
        };
        let gcra = |burst: u64, oversize: bool| -> Result<Gcra, BuildError> {
            if burst == 0 {
                return Err(BuildError::ZeroBurst);
            }
            if rate.time_for(burst) == u64::MAX {
                return Err(BuildError::BurstTooLarge {
                    burst,
                    amount,
                    period: limit.period,
                });
            }
            Ok(Gcra::new(rate, burst, oversize, margin))
        };
        let no_burst = |alg: Algorithm| match limit.burst {
            Some(_) => Err(BuildError::BurstNotApplicable { algorithm: alg }),
            None => Ok(()),
        };
        let kind = match limit.algorithm {
            Algorithm::SmoothWindow => {
                let burst = limit
                    .burst
                    .unwrap_or_else(|| smooth_default_burst(amount, period));
                if burst > amount {
                    return Err(BuildError::BurstAboveAmount { burst, amount });
                }
                Kind::Smooth(gcra(burst, true)?)
            }
            Algorithm::TokenBucket => Kind::Gcra(gcra(limit.burst.unwrap_or(amount), false)?),
            Algorithm::LeakyBucket => {
                no_burst(Algorithm::LeakyBucket)?;
                Kind::Gcra(gcra(1, true)?)
            }
            Algorithm::SlidingWindowLog => {
                no_burst(Algorithm::SlidingWindowLog)?;
                Kind::Log
            }
            Algorithm::SlidingWindowCounter => {
                no_burst(Algorithm::SlidingWindowCounter)?;
                Kind::Counter
            }
            Algorithm::FixedWindow => {
                no_burst(Algorithm::FixedWindow)?;
                Kind::Fixed
            }
        };
        Ok(Self {
            amount,
            period,
            margin,
            kind,
        })
    }

    /// The rule as plain integers, when it is a token or leaky bucket (its state is then a
    /// [`GcraState`]).
    pub(crate) fn bucket_parts(&self) -> Option<BucketParts> {
        match self.kind {
            Kind::Gcra(g) => {
                let (amount, period, exact_unit) = g.rate.parts();
                Some(BucketParts {
                    amount,
                    period,
                    exact_unit,
                    burst: g.burst,
                    tolerance: g.tolerance.time,
                    tolerance_over: g.tolerance.over,
                    capacity: g.capacity(),
                    margin: g.margin,
                })
            }
            _ => None,
        }
    }

    /// Units admitted per period.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period in nanoseconds.
    pub fn period(&self) -> Nanos {
        self.period
    }

    /// The safety margin in nanoseconds ([`Limit::margin`]; 0 for the sliding window counter
    /// and the fixed window).
    pub fn margin(&self) -> Nanos {
        self.margin
    }

    /// How long the log counts an admission: the period plus the margin.
    #[inline]
    fn window(&self) -> Nanos {
        self.period.saturating_add(self.margin)
    }

    /// The algorithm this rule applies.
    pub fn algorithm(&self) -> Algorithm {
        match self.kind {
            Kind::Gcra(g) if g.oversize_when_full => Algorithm::LeakyBucket,
            Kind::Gcra(_) => Algorithm::TokenBucket,
            Kind::Log => Algorithm::SlidingWindowLog,
            Kind::Counter => Algorithm::SlidingWindowCounter,
            Kind::Fixed => Algorithm::FixedWindow,
            Kind::Smooth(_) => Algorithm::SmoothWindow,
        }
    }

    /// The bucket capacity of the bucket algorithms, if this rule has one.
    pub fn burst(&self) -> Option<u64> {
        match self.kind {
            Kind::Gcra(g) | Kind::Smooth(g) => Some(g.burst),
            _ => None,
        }
    }

    /// The largest cost this rule can ever admit at once: the burst of a token bucket, the
    /// amount for every other algorithm.
    #[inline]
    pub fn capacity(&self) -> u64 {
        match self.kind {
            Kind::Gcra(g) => g.capacity(),
            _ => self.amount,
        }
    }

    /// The state of a key that has admitted nothing.
    pub fn new_state(&self) -> LimitState {
        match self.kind {
            Kind::Gcra(_) => LimitState::Gcra(GcraState::default()),
            Kind::Log => LimitState::Log(SlidingLogState::default()),
            Kind::Counter => LimitState::Counter(SlidingCounterState::default()),
            Kind::Fixed => LimitState::Fixed(FixedWindowState::default()),
            Kind::Smooth(_) => LimitState::Smooth(GcraState::default(), SlidingLogState::default()),
        }
    }

    /// Decides whether `cost` units are admitted at `now`. Changes nothing.
    ///
    /// A state that belongs to another rule (a mismatched variant) is treated as fresh.
    #[inline]
    pub fn decide(&self, state: &LimitState, now: Nanos, cost: u64) -> Decision {
        if let (Kind::Gcra(g), LimitState::Gcra(s)) = (&self.kind, state) {
            return g.decide(s, now, cost);
        }
        if cost > self.capacity() {
            return Decision::Impossible {
                capacity: self.capacity(),
            };
        }
        let at = self.earliest(state, now, cost);
        // `u64::MAX` is never: the end of the clock, where a window that would end past it
        // ends too, and a bucket that would pass it stops.
        if at <= now && at != Nanos::MAX {
            Decision::Admit
        } else {
            Decision::NotUntil(at)
        }
    }

    /// Earliest instant `>= now` at which `cost` (at most the capacity) is admitted.
    #[inline]
    fn earliest(&self, state: &LimitState, now: Nanos, cost: u64) -> Nanos {
        // The buckets are a few instructions: keep them inline in the caller's loop, and the
        // rest behind a call.
        match (&self.kind, state) {
            (Kind::Gcra(g), LimitState::Gcra(s)) => g.earliest(s, now, cost),
            _ => self.earliest_other(state, now, cost),
        }
    }

    #[inline(never)]
    fn earliest_other(&self, state: &LimitState, now: Nanos, cost: u64) -> Nanos {
        let (a, p, w) = (self.amount, self.period, self.window());
        match (&self.kind, state) {
            (Kind::Gcra(g), LimitState::Gcra(s)) => g.earliest(s, now, cost),
            (Kind::Log, LimitState::Log(s)) => sliding_log::earliest(s, a, w, now, cost),
            (Kind::Counter, LimitState::Counter(s)) => {
                sliding_counter::earliest(s, a, p, now, cost)
            }
            (Kind::Fixed, LimitState::Fixed(s)) => fixed_window::earliest(s, a, p, now, cost),
            (Kind::Smooth(g), LimitState::Smooth(b, log)) => {
                let at = g
                    .earliest(b, now, cost)
                    .max(sliding_log::earliest(log, a, w, now, cost));
                // The bucket again at that instant: full by then, it starts the units from
                // it, which near the end of the clock may pass the end (never).
                if at > now && at != Nanos::MAX {
                    recheck_bucket(g, b, at, cost)
                } else {
                    at
                }
            }
            _ => now,
        }
    }

    /// Records an admission of `cost` units at `now` (after [`decide`](Self::decide) said
    /// [`Decision::Admit`]), and returns the receipt its settlement needs. A mismatched state is
    /// first reset to this rule's fresh state.
    #[inline]
    pub fn commit(&self, state: &mut LimitState, now: Nanos, cost: u64) -> Receipt {
        if let (Kind::Gcra(g), LimitState::Gcra(s)) = (&self.kind, &mut *state) {
            let bucket_mark = g.commit(s, now, cost);
            return Receipt {
                admitted_at: now,
                bucket_mark,
            };
        }
        self.commit_other(state, now, cost)
    }

    #[inline(never)]
    fn commit_other(&self, state: &mut LimitState, now: Nanos, cost: u64) -> Receipt {
        let (p, w) = (self.period, self.window());
        let bucket_mark = match (&self.kind, &mut *state) {
            (Kind::Gcra(g), LimitState::Gcra(s)) => g.commit(s, now, cost),
            (Kind::Log, LimitState::Log(s)) => {
                sliding_log::commit(s, w, now, cost);
                0
            }
            (Kind::Counter, LimitState::Counter(s)) => {
                sliding_counter::commit(s, p, now, cost);
                0
            }
            (Kind::Fixed, LimitState::Fixed(s)) => {
                fixed_window::commit(s, p, now, cost);
                0
            }
            (Kind::Smooth(g), LimitState::Smooth(b, log)) => {
                sliding_log::commit(log, w, now, cost);
                g.commit(b, now, cost)
            }
            _ => {
                *state = self.new_state();
                return self.commit(state, now, cost);
            }
        };
        Receipt {
            admitted_at: now,
            bucket_mark,
        }
    }

    /// Gives back `units` of the admission that `receipt` records: the estimate was higher
    /// than the usage. Gives back only what still counts against the limit (units in the
    /// window, or still held by the bucket), so the state never admits more than it would have
    /// had the admission been for the used units alone, and never rises above a fresh key's.
    pub fn refund(&self, state: &mut LimitState, now: Nanos, receipt: &Receipt, units: u64) {
        let (p, at) = (self.period, receipt.admitted_at);
        match (&self.kind, state) {
            (Kind::Gcra(g), LimitState::Gcra(s)) => g.refund(s, now, receipt.bucket_mark, units),
            (Kind::Log, LimitState::Log(s)) => sliding_log::refund(s, at, units),
            (Kind::Counter, LimitState::Counter(s)) => sliding_counter::refund(s, p, at, units),
            (Kind::Fixed, LimitState::Fixed(s)) => fixed_window::refund(s, p, at, units),
            (Kind::Smooth(g), LimitState::Smooth(b, w)) => {
                g.refund(b, now, receipt.bucket_mark, units);
                sliding_log::refund(w, at, units);
            }
            _ => {}
        }
    }

    /// Charges `units` more than were admitted (usage above the estimate), at `now`, even
    /// into debt: later admissions wait until it is paid. One charge is capped at one period's
    /// amount, so a wild usage figure cannot block a key for longer than a period.
    pub fn charge(&self, state: &mut LimitState, now: Nanos, units: u64) {
        let _ = self.commit(state, now, units.min(self.amount));
    }

    /// Counts `units` the provider reports it has counted beyond this limit's own count (another
    /// client on the same key), at `now`: as a [`charge`](Self::charge), except that the smooth
    /// window counts them in its window only. Its bucket holds one second's worth, and units
    /// the provider counted over the last minute have mostly left such a bucket; charging them
    /// all to it would put it in debt for as long as they took to admit, and leave quota unused.
    pub fn lower(&self, state: &mut LimitState, now: Nanos, units: u64) {
        match (&self.kind, &mut *state) {
            (Kind::Smooth(_), LimitState::Smooth(_, w)) => {
                sliding_log::commit(w, self.window(), now, units.min(self.amount));
            }
            _ => self.charge(state, now, units),
        }
    }

    /// The state under this rule of what `state` counts under the rule `from` at `now`, for a
    /// limit whose figures change while it is in use (a reload, a provider's figure adopted, a
    /// rate lowered after 429s). For the same algorithm (and, for the windows, the same
    /// period) nothing is forgotten and nothing is moved: the windows keep every admission
    /// where it was, against the new amount, and a bucket keeps the units it holds, which
    /// drain at the new rate from `now`. Otherwise the units `from` counts now are charged
    /// afresh at `now` (into debt when they are more than the new limit holds).
    ///
    /// Receipts issued under `from` do not fit the new state: a store settles them on the
    /// safe side (charges beyond the reservation, no refunds).
    pub fn carry_over(&self, from: &LimitRule, state: &LimitState, now: Nanos) -> LimitState {
        let same_period = self.period == from.period;
        match (&self.kind, &from.kind, state) {
            (Kind::Gcra(to), Kind::Gcra(f), LimitState::Gcra(s)) => {
                LimitState::Gcra(to.carry(f, s, now))
            }
            (Kind::Smooth(to), Kind::Smooth(f), LimitState::Smooth(b, w)) if same_period => {
                LimitState::Smooth(to.carry(f, b, now), w.clone())
            }
            (Kind::Log, Kind::Log, LimitState::Log(_))
            | (Kind::Counter, Kind::Counter, LimitState::Counter(_))
            | (Kind::Fixed, Kind::Fixed, LimitState::Fixed(_))
                if same_period =>
            {
                state.clone()
            }
            _ => {
                let used = from.snapshot(state, now).used;
                let mut fresh = self.new_state();
                // All of it, even above the new amount (into debt): capping it, as a
                // settlement's charge is, would forget units a later raise would count.
                let _ = self.commit(&mut fresh, now, used);
                fresh
            }
        }
    }

    /// What the limit looks like at `now`.
    pub fn snapshot(&self, state: &LimitState, now: Nanos) -> Snapshot {
        let mut snapshot = self.use_at(state, now);
        // Exactly when one more unit than `remaining` is admitted: the decision itself says.
        snapshot.next_refill_at = Some(snapshot.remaining)
            .filter(|&r| r < self.capacity())
            .map(|r| self.earliest(state, now, r + 1))
            .filter(|&t| t > now);
        snapshot
    }

    /// `used`, `remaining` and `reset_at` at `now`.
    fn use_at(&self, state: &LimitState, now: Nanos) -> Snapshot {
        let (a, p, window) = (self.amount, self.period, self.window());
        let gcra_snapshot = |g: &Gcra, s: &GcraState| {
            let remaining = g.available(s, now);
            Snapshot {
                used: g.burst - remaining,
                remaining,
                reset_at: (s.tat > now).then_some(s.tat),
                next_refill_at: None,
            }
        };
        let log_snapshot = |s: &SlidingLogState| {
            let used = sliding_log::used(s, window, now);
            Snapshot {
                used,
                remaining: a.saturating_sub(used),
                reset_at: s
                    .entries
                    .iter()
                    .rev()
                    .find(|e| e.1 > 0)
                    .map(|e| e.0.saturating_add(window))
                    .filter(|&t| t > now),
                next_refill_at: None,
            }
        };
        match (&self.kind, state) {
            (Kind::Gcra(g), LimitState::Gcra(s)) => gcra_snapshot(g, s),
            (Kind::Log, LimitState::Log(s)) => log_snapshot(s),
            (Kind::Counter, LimitState::Counter(s)) => {
                let used = sliding_counter::estimate(s, p, now);
                let w = fixed_window::window_of(now, p);
                let current = if s.window_start == w { s.current } else { 0 };
                let reset_at = if current > 0 {
                    Some(w.saturating_add(p).saturating_add(p))
                } else if used > 0 {
                    Some(w.saturating_add(p))
                } else {
                    None
                };
                Snapshot {
                    used,
                    remaining: a.saturating_sub(used),
                    reset_at,
                    next_refill_at: None,
                }
            }
            (Kind::Fixed, LimitState::Fixed(s)) => {
                let used = fixed_window::used(s, p, now);
                Snapshot {
                    used,
                    remaining: a.saturating_sub(used),
                    reset_at: (used > 0).then(|| fixed_window::window_of(now, p).saturating_add(p)),
                    next_refill_at: None,
                }
            }
            (Kind::Smooth(g), LimitState::Smooth(b, w)) => {
                let bucket = gcra_snapshot(g, b);
                let window = log_snapshot(w);
                let remaining = window.remaining.min(if bucket.remaining == g.burst {
                    a
                } else {
                    bucket.remaining
                });
                Snapshot {
                    used: window.used,
                    remaining,
                    reset_at: bucket.reset_at.max(window.reset_at),
                    next_refill_at: None,
                }
            }
            _ => Snapshot {
                used: 0,
                remaining: self.capacity(),
                reset_at: None,
                next_refill_at: None,
            },
        }
    }

    /// Whether `state` behaves exactly like [`new_state`](Self::new_state) from `now` on, so a
    /// store may drop it without changing any future decision.
    pub fn is_fresh(&self, state: &LimitState, now: Nanos) -> bool {
        // A bucket decides as of its margin ago (a fresh one, never used, has no margin to
        // keep): full for less than its margin (give or take the rounding's nanosecond), it
        // still admits later than a fresh one.
        let bucket = match (&self.kind, state) {
            (Kind::Gcra(_), LimitState::Gcra(b)) | (Kind::Smooth(_), LimitState::Smooth(b, _)) => {
                Some(b)
            }
            _ => None,
        };
        if bucket.is_some_and(|b| b.tat != 0 && b.tat.saturating_add(self.margin) >= now) {
            return false;
        }
        // The use alone: `snapshot` also works out the next refill, which this does not need.
        self.use_at(state, now).reset_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: Nanos = 1_000_000_000;

    /// The rule of `limit`, exact: these tests are about instants, not the safety margin.
    fn rule(limit: Limit) -> LimitRule {
        LimitRule::new(&limit.margin(Duration::ZERO)).unwrap()
    }

    #[test]
    fn carry_over_keeps_the_window_in_place_and_the_units_a_bucket_holds() {
        const MS: Nanos = 1_000_000;
        // 10 a second (100 ms a unit), burst 10: 8 at 0 fill the window to 8 and the bucket
        // until 800 ms.
        let before = rule(Limit::per_second(10).burst(10));
        let mut s = before.new_state();
        let _ = before.commit(&mut s, 0, 8);
        // At 200 ms the bucket holds 6; raised to 20 a second (50 ms a unit), it drains them
        // by 500 ms, and the 8 stay in the window where they were, until 1 s.
        let after = rule(Limit::per_second(20).burst(20));
        let s = after.carry_over(&before, &s, 200 * MS);
        assert_eq!(after.snapshot(&s, 200 * MS).used, 8);
        assert_eq!(after.decide(&s, 200 * MS, 12), Decision::Admit);
        assert_eq!(after.decide(&s, 200 * MS, 13), Decision::NotUntil(S));
        match &s {
            LimitState::Smooth(bucket, _) => assert_eq!(bucket.tat, 500 * MS),
            other => panic!("{other:?}"),
        }
        // Lowered to 5 a second instead: the 6 held take 1.2 s from 200 ms.
        let lower = rule(Limit::per_second(5).burst(5));
        let mut s = before.new_state();
        let _ = before.commit(&mut s, 0, 8);
        match lower.carry_over(&before, &s, 200 * MS) {
            LimitState::Smooth(bucket, window) => {
                assert_eq!(bucket.tat, 1_400 * MS);
                assert_eq!(window.entries, s_entries(&s));
            }
            other => panic!("{other:?}"),
        }
        // Another algorithm: what is counted now is charged afresh at 200 ms.
        let fixed = rule(Limit::per_second(20).algorithm(Algorithm::FixedWindow));
        let moved = fixed.carry_over(&before, &s, 200 * MS);
        assert_eq!(fixed.snapshot(&moved, 200 * MS).used, 8);
    }

    fn s_entries(state: &LimitState) -> std::collections::VecDeque<(Nanos, u64)> {
        match state {
            LimitState::Smooth(_, w) | LimitState::Log(w) => w.entries.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bucket_within_its_margin_is_not_fresh() {
        const MS: Nanos = 1_000_000;
        let margin = Duration::from_millis(50);
        for limit in [
            Limit::per_second(10).burst(10),
            Limit::per_second(10).algorithm(Algorithm::TokenBucket),
        ] {
            let rule = LimitRule::new(&limit.clone().margin(margin)).unwrap();
            let mut s = rule.new_state();
            let _ = rule.commit(&mut s, 0, 1);
            // Full again at 100 ms, but it decides as of 50 ms ago until 150 ms.
            let fresh = rule.new_state();
            for now in [100 * MS, 120 * MS, 150 * MS] {
                assert!(!rule.is_fresh(&s, now), "{limit:?} at {now}");
            }
            assert_ne!(
                rule.decide(&s, 120 * MS, 10),
                rule.decide(&fresh, 120 * MS, 10)
            );
            // Fresh once past both its margin and its window (the smooth window's log counts
            // the unit for a second and its margin), and then it decides as a fresh one.
            let later = (0..=1_100)
                .map(|ms| ms * MS + 1)
                .find(|&t| rule.is_fresh(&s, t))
                .expect("fresh within 1.1 s");
            assert!(later > 150 * MS, "{limit:?}: fresh at {later}");
            for t in [later, later + 7 * MS] {
                for cost in [1, 5, 10] {
                    assert_eq!(rule.decide(&s, t, cost), rule.decide(&fresh, t, cost));
                }
            }
        }
    }

    #[test]
    fn next_refill_is_when_one_more_unit_is_admitted() {
        let bucket = rule(
            Limit::per_second(10)
                .algorithm(Algorithm::TokenBucket)
                .burst(5),
        );
        let mut s = bucket.new_state();
        let _ = bucket.commit(&mut s, 0, 5);
        let snap = bucket.snapshot(&s, 0);
        assert_eq!(
            (snap.remaining, snap.next_refill_at, snap.reset_at),
            (0, Some(S / 10), Some(S / 2))
        );

        let log =
            rule(Limit::new(10, Duration::from_secs(1)).algorithm(Algorithm::SlidingWindowLog));
        let mut s = log.new_state();
        let _ = log.commit(&mut s, 0, 4);
        let _ = log.commit(&mut s, S / 4, 6);
        let snap = log.snapshot(&s, S / 2);
        assert_eq!(
            (snap.remaining, snap.next_refill_at, snap.reset_at),
            (0, Some(S), Some(S + S / 4))
        );

        let fixed = rule(Limit::new(10, Duration::from_secs(1)).algorithm(Algorithm::FixedWindow));
        let mut s = fixed.new_state();
        let _ = fixed.commit(&mut s, S / 2, 3);
        let snap = fixed.snapshot(&s, S / 2);
        assert_eq!((snap.remaining, snap.next_refill_at), (7, Some(S)));
        // Full: nothing to refill.
        let fresh = fixed.snapshot(&fixed.new_state(), 0);
        assert_eq!(
            (fresh.remaining, fresh.next_refill_at, fresh.reset_at),
            (10, None, None)
        );
    }
}
