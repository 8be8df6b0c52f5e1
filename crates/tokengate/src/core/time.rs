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
        let exact_unit = if period % amount == 0 {
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

    /// Nanoseconds needed to earn `units`, rounded up; saturates at `u64::MAX`.
    #[inline(always)]
    pub(crate) fn time_for(self, units: u64) -> Nanos {
        Self::time_for_lazy(self.exact_unit, units, || self)
    }

    /// [`time_for`](Self::time_for) of the rate whose `exact_unit` is given, reading the rate
    /// itself (`rate()`) only when it is not a whole number of nanoseconds per unit: for a copy
    /// of the rate kept in atomics, where every read is a load.
    #[inline(always)]
    pub(crate) fn time_for_lazy(
        exact_unit: Nanos,
        units: u64,
        rate: impl FnOnce() -> Rate,
    ) -> Nanos {
        if exact_unit != 0 {
            return units.saturating_mul(exact_unit);
        }
        rate().time_for_divided(units)
    }

    /// [`time_for`](Self::time_for) of a rate that is not a whole number of nanoseconds per
    /// unit: a division, kept out of line so the callers of the common case stay small.
    #[inline(never)]
    fn time_for_divided(self, units: u64) -> Nanos {
        // One 64-bit division when the product fits (a 128-bit one is a library call).
        if let Some(num) = units.checked_mul(self.period) {
            return num.div_ceil(self.amount);
        }
        let num = units as u128 * self.period as u128;
        let t = num.div_ceil(self.amount as u128);
        u64::try_from(t).unwrap_or(u64::MAX)
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

    /// Units earned in `time` nanoseconds, rounded up; saturates at `u64::MAX`.
    #[inline]
    pub(crate) fn units_in_ceil(self, time: Nanos) -> u64 {
        let u = (time as u128 * self.amount as u128).div_ceil(self.period as u128);
        u64::try_from(u).unwrap_or(u64::MAX)
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
        assert_eq!(r.units_in_ceil(4), 2);
        assert_eq!(r.units_in_ceil(3), 1);
        assert_eq!(r.units_in_ceil(0), 0);
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
        assert_eq!(fast.units_in_ceil(u64::MAX), u64::MAX);
        let exact = Rate::new(500, 60_000_000_000);
        assert_eq!(exact.time_for(u64::MAX), u64::MAX);
        assert_eq!(exact.time_for(3), 360_000_000);
        assert_eq!(exact.time_for_floor(3), 360_000_000);
    }
}
