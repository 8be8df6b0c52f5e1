//! Integer time and rate arithmetic shared by the algorithms.

/// An instant or a duration in integer nanoseconds. Instants count from the clock's origin.
pub type Nanos = u64;

/// A rate of `amount` units per `period` nanoseconds, kept as an exact fraction.
///
/// All conversions between units and time round in the direction that never admits more
/// than the limit allows: time to earn units rounds up, time given back by a refund rounds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    amount: u64,
    period: Nanos,
    /// `period / amount` when it divides exactly (the usual case: 500 per minute is 120 ms
    /// each), else 0. Lets the hot path multiply instead of dividing 128-bit numbers.
    exact_unit: Nanos,
}

impl Rate {
    /// `amount` units per `period` ns; both non-zero (checked by the caller).
    pub(crate) fn new(amount: u64, period: Nanos) -> Self {
        let exact_unit = if period.is_multiple_of(amount) {
            period / amount
        } else {
            0
        };
        Self {
            amount,
            period,
            exact_unit,
        }
    }

    /// The rate as `(amount, period, exact_unit)`: plain integers a copy of it is kept as
    /// (the in-memory limiter's lock-free lane), rebuilt by [`from_parts`](Self::from_parts).
    #[inline]
    pub(crate) fn parts(self) -> (u64, Nanos, Nanos) {
        (self.amount, self.period, self.exact_unit)
    }

    /// The rate whose [`parts`](Self::parts) these are.
    #[inline]
    pub(crate) fn from_parts(amount: u64, period: Nanos, exact_unit: Nanos) -> Self {
        Self {
            amount,
            period,
            exact_unit,
        }
    }

    /// The time `units` take to earn: rounded up, with what the rounding added
    /// ([`Span`]); saturates at `u64::MAX` ns.
    #[inline(always)]
    pub(crate) fn span(self, units: u64) -> Span {
        if self.exact_unit != 0 {
            return Span::whole(units.saturating_mul(self.exact_unit));
        }
        self.span_divided(units)
    }

    /// Nanoseconds needed to earn `units`, rounded up; saturates at `u64::MAX`.
    #[inline]
    pub(crate) fn time_for(self, units: u64) -> Nanos {
        self.span(units).time
    }

    /// [`span`](Self::span) of a rate that is not a whole number of nanoseconds per unit: a
    /// division. Inline: out of line, the call kept the division from overlapping the rest of
    /// a decision, and three limits at such rates took 39.7 ns a decision instead of 31.9
    /// (`three_dimensions`, manual clock).
    #[inline(always)]
    fn span_divided(self, units: u64) -> Span {
        let a = self.amount;
        // One 64-bit division when the product fits (a 128-bit one is a library call).
        let (whole, rest) = match units.checked_mul(self.period) {
            Some(num) => (num / a, num % a),
            None => {
                let num = units as u128 * self.period as u128;
                let Ok(whole) = u64::try_from(num / a as u128) else {
                    return Span::whole(Nanos::MAX);
                };
                // Below `a`, so it fits.
                (whole, (num % a as u128) as u64)
            }
        };
        if rest == 0 {
            return Span::whole(whole);
        }
        match whole.checked_add(1) {
            Some(time) => Span {
                time,
                over: a - rest,
            },
            None => Span::whole(Nanos::MAX),
        }
    }

    /// Nanoseconds that `units` are worth when given back, rounded down.
    #[inline]
    pub(crate) fn time_for_floor(self, units: u64) -> Nanos {
        if self.exact_unit != 0 {
            return units.saturating_mul(self.exact_unit);
        }
        if let Some(num) = units.checked_mul(self.period) {
            return num / self.amount;
        }
        let t = units as u128 * self.period as u128 / self.amount as u128;
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Units earned in `time` nanoseconds less `over` `1/amount`ths of a nanosecond (less
    /// than one nanosecond: what a [`Span`] adds), rounded up; saturates at `u64::MAX`.
    #[inline]
    pub(crate) fn units_in_ceil(self, time: Nanos, over: u64) -> u64 {
        let scaled = (time as u128 * self.amount as u128).saturating_sub(over as u128);
        let u = scaled.div_ceil(self.period as u128);
        u64::try_from(u).unwrap_or(u64::MAX)
    }

    /// The rate's amount: units per period.
    #[inline]
    pub(crate) fn amount(self) -> u64 {
        self.amount
    }
}

/// A time worth some units at a [`Rate`], kept exactly: `time` rounded up to whole
/// nanoseconds, and `over`, what the rounding added, in `1/amount`ths of a nanosecond (below
/// the amount; 0 when exact, always 0 at a rate that is a whole number of nanoseconds per unit).
/// So the exact time is `time - over / amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) time: Nanos,
    pub(crate) over: u64,
}

impl Span {
    /// A whole number of nanoseconds.
    #[inline(always)]
    pub(crate) fn whole(time: Nanos) -> Self {
        Self { time, over: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_never_favours_the_caller() {
        // 3 units per 10 ns: one unit is worth 3.33 ns.
        let r = Rate::new(3, 10);
        assert_eq!(r.time_for(1), 4);
        assert_eq!(r.time_for_floor(1), 3);
        assert_eq!(r.units_in_ceil(4, 0), 2);
        assert_eq!(r.units_in_ceil(3, 0), 1);
        assert_eq!(r.units_in_ceil(0, 0), 0);
        // 4 ns less 2/3 ns is exactly one unit's time.
        assert_eq!(r.units_in_ceil(4, 2), 1);
        assert_eq!(r.units_in_ceil(4, 1), 2);
        assert_eq!(r.time_for(3), 10);
    }

    #[test]
    fn exact_and_fractional_paths_agree() {
        for (amount, period) in [
            (500, 60_000_000_000u64),
            (7, 13),
            (1, 1),
            (3, 9),
            (1_000, 1_000),
            (u64::MAX, u64::MAX),
        ] {
            let r = Rate::new(amount, period);
            for units in [0, 1, 2, 5, 499, 500, 1_000_003] {
                let num = units as u128 * period as u128;
                let up = num.div_ceil(amount as u128).min(u64::MAX as u128) as u64;
                let down = (num / amount as u128).min(u64::MAX as u128) as u64;
                assert_eq!(r.time_for(units), up, "{amount}/{period} x{units}");
                // The span is exact: its time less its overshoot is units * period / amount.
                let span = r.span(units);
                if span.time != u64::MAX {
                    assert!(span.over < amount, "{amount}/{period} x{units}");
                    assert_eq!(
                        span.time as u128 * amount as u128 - span.over as u128,
                        num,
                        "{amount}/{period} x{units}"
                    );
                }
                assert_eq!(r.time_for_floor(units), down, "{amount}/{period} x{units}");
            }
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let r = Rate::new(1, u64::MAX);
        assert_eq!(r.time_for(u64::MAX), u64::MAX);
        assert_eq!(r.time_for_floor(2), u64::MAX);
        let fast = Rate::new(u64::MAX, 1);
        assert_eq!(fast.units_in_ceil(u64::MAX, 0), u64::MAX);
        assert_eq!(Rate::new(3, u64::MAX).span(u64::MAX), Span::whole(u64::MAX));
        let exact = Rate::new(500, 60_000_000_000);
        assert_eq!(exact.time_for(u64::MAX), u64::MAX);
        assert_eq!(exact.time_for(3), 360_000_000);
        assert_eq!(exact.time_for_floor(3), 360_000_000);
    }
}
