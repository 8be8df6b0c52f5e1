//! Integer time and rate arithmetic shared by the algorithms.

/// An instant or a duration in integer nanoseconds. Instants count from the clock's origin.
pub type Nanos = u64;

/// A rate of `amount` units per `period` nanoseconds, kept as an exact fraction.
///
/// All conversions between units and time round in the direction that never admits more
/// than the limit allows: time to earn units rounds up, time given back by a refund rounds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) amount: u64,
    pub(crate) period: Nanos,
}

impl Rate {
    /// Nanoseconds needed to earn `units`, rounded up; saturates at `u64::MAX`.
    #[inline]
    pub(crate) fn time_for(self, units: u64) -> Nanos {
        let num = units as u128 * self.period as u128;
        let t = num.div_ceil(self.amount as u128);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Nanoseconds that `units` are worth when given back, rounded down.
    #[inline]
    pub(crate) fn time_for_floor(self, units: u64) -> Nanos {
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
        let r = Rate {
            amount: 3,
            period: 10,
        };
        assert_eq!(r.time_for(1), 4);
        assert_eq!(r.time_for_floor(1), 3);
        assert_eq!(r.units_in_ceil(4), 2);
        assert_eq!(r.units_in_ceil(3), 1);
        assert_eq!(r.units_in_ceil(0), 0);
        assert_eq!(r.time_for(3), 10);
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let r = Rate {
            amount: 1,
            period: u64::MAX,
        };
        assert_eq!(r.time_for(u64::MAX), u64::MAX);
        assert_eq!(r.time_for_floor(2), u64::MAX);
        let fast = Rate {
            amount: u64::MAX,
            period: 1,
        };
        assert_eq!(fast.units_in_ceil(u64::MAX), u64::MAX);
    }
}
