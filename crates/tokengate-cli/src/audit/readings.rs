//! The two readings of "N per period" that a provider may enforce, applied to admissions
//! (`(t, amount)` in nanoseconds and units, sorted by time), in exact integer arithmetic:
//!
//! - the **window**: at most N in any half-open window `[s, s + period)`;
//! - the **bucket**: a token bucket holding `burst`, refilled at N per period, full at the
//!   start. An admission needs the bucket to hold its amount, or, for an amount above the
//!   burst, to be full: it then takes the bucket into debt.

/// The most counted in any window of the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstWindow {
    /// Units counted.
    pub sum: u64,
    /// Where that window starts (its first admission), ns.
    pub from: u64,
}

/// The largest sum over any half-open window `[s, s + width)` of `points` (sorted by time),
/// and where it starts: the audit's window reading, and the report's worst window.
pub fn worst_window(points: &[(u64, u64)], width: u64) -> WorstWindow {
    let mut worst = WorstWindow { sum: 0, from: 0 };
    // Summed in 128 bits: exact for any log (a sum above 64 bits is reported as the most there
    // is), so what leaves the window is taken off exactly.
    let (mut best, mut sum, mut first) = (0u128, 0u128, 0usize);
    for &(t, amount) in points {
        sum += u128::from(amount);
        while points[first].0.saturating_add(width) <= t {
            sum -= u128::from(points[first].1);
            first += 1;
        }
        if sum > best {
            best = sum;
            worst = WorstWindow {
                sum: u64::try_from(sum).unwrap_or(u64::MAX),
                from: points[first].0,
            };
        }
    }
    worst
}

/// The admission that came closest to what the bucket held (or went furthest past it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tightest {
    /// When, ns.
    pub t: u64,
    /// Its amount.
    pub amount: u64,
    /// What the bucket held before it, in units (negative: in debt).
    pub level: f64,
    /// What it needed the bucket to hold: its amount, or the whole burst for an amount above
    /// it.
    pub needed: u64,
    /// Admissions that found the bucket short.
    pub short: u64,
}

impl Tightest {
    /// `level - needed`: below 0, the bucket was short.
    pub fn headroom(&self) -> f64 {
        self.level - self.needed as f64
    }
}

/// Runs `points` through a bucket of `burst` units refilled at `amount` per `period` ns;
/// `None` when no admission counts anything.
pub fn tightest_bucket(
    points: &[(u64, u64)],
    amount: u64,
    period: u64,
    burst: u64,
) -> Option<Tightest> {
    // Units scaled by the period: the refill is then `amount` per ns, exactly.
    let period = i128::from(period.max(1));
    let full = i128::from(burst) * period;
    let mut level = full;
    let mut last = points.first()?.0;
    let mut tightest: Option<(i128, Tightest)> = None;
    let mut short = 0;
    for &(t, a) in points {
        level = full.min(level + i128::from(amount) * i128::from(t - last));
        last = t;
        if a == 0 {
            continue;
        }
        let needed = a.min(burst);
        let headroom = level - i128::from(needed) * period;
        if headroom < 0 {
            short += 1;
        }
        if tightest.is_none_or(|(h, _)| headroom < h) {
            tightest = Some((
                headroom,
                Tightest {
                    t,
                    amount: a,
                    level: level as f64 / period as f64,
                    needed,
                    short: 0,
                },
            ));
        }
        // Admitted all the same: what follows is counted after it.
        level -= i128::from(a) * period;
    }
    tightest.map(|(_, t)| Tightest { short, ..t })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_window_is_half_open() {
        let points = [(0, 5), (S / 2, 5), (S, 5), (2 * S, 1)];
        // [0, 1 s) holds 10; the admission at 1 s starts the next window.
        assert_eq!(worst_window(&points, S), WorstWindow { sum: 10, from: 0 });
        assert_eq!(
            worst_window(&points, S + 1),
            WorstWindow { sum: 15, from: 0 }
        );
        assert_eq!(worst_window(&[], S), WorstWindow { sum: 0, from: 0 });
    }

    #[test]
    fn a_window_above_64_bits_is_the_most_there_is() {
        // Both leave the window before the last point comes: taken off exactly, no underflow.
        let points = [(0, u64::MAX), (1, u64::MAX), (S + 1, 3)];
        assert_eq!(
            worst_window(&points, S),
            WorstWindow {
                sum: u64::MAX,
                from: 0
            }
        );
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        // 60 a minute, burst 1: one a second.
        let every_second: Vec<(u64, u64)> = (0..120).map(|i| (i * S, 1)).collect();
        let t = tightest_bucket(&every_second, 60, 60 * S, 1).unwrap();
        assert_eq!(t.short, 0);
        assert_eq!(t.headroom(), 0.0);
        // One 1 ns early is short by a 60-billionth.
        let mut early = every_second.clone();
        early[5].0 -= 1;
        let t = tightest_bucket(&early, 60, 60 * S, 1).unwrap();
        assert_eq!(t.short, 1);
        assert_eq!(t.t, 5 * S - 1);
        assert!(t.headroom() < 0.0 && t.headroom() > -1e-9);
    }

    #[test]
    fn a_cost_above_the_burst_needs_a_full_bucket_and_goes_into_debt() {
        // Burst 10, 10 a second. 25 at once from a full bucket: admitted, 15 in debt.
        let t = tightest_bucket(&[(0, 25)], 10, S, 10).unwrap();
        assert_eq!((t.short, t.needed, t.level), (0, 10, 10.0));
        // Then the debt is paid (1.5 s) and the bucket refills (1 s) before it is full again.
        let ok = [(0, 25), (5 * S / 2, 25)];
        assert_eq!(tightest_bucket(&ok, 10, S, 10).unwrap().short, 0);
        let early = [(0, 25), (5 * S / 2 - 1, 25)];
        assert_eq!(tightest_bucket(&early, 10, S, 10).unwrap().short, 1);
        // A cost the bucket holds needs only itself.
        let small = [(0, 25), (2 * S, 5)];
        assert_eq!(tightest_bucket(&small, 10, S, 10).unwrap().short, 0);
    }

    #[test]
    fn nothing_counted_is_nothing_to_say() {
        assert_eq!(tightest_bucket(&[], 10, S, 10), None);
        assert_eq!(tightest_bucket(&[(0, 0)], 10, S, 10), None);
    }
}
