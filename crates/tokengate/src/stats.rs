//! Counters kept by a limiter, and the snapshot it reports.

use std::time::Duration;

use crate::dimension::Dimension;

/// A snapshot of a limiter: every limit's use, in-flight requests, waiters and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Which budget this is: `limiter` for the limiter's own policy (whose counters count
    /// every request), or `model NAME`, `family NAME`, `tenant NAME`, `model (overflow)`,
    /// `tenant (overflow)` for the budgets of a limiter built from a config.
    pub budget: String,
    /// One entry per rate limit, in the policy's order.
    pub limits: Vec<LimitStats>,
    /// Requests holding an in-flight slot.
    pub in_flight: u64,
    /// The in-flight cap, if any.
    pub max_in_flight: Option<u64>,
    /// Acquisitions queued now (for the `limiter` budget: all of them, whichever budget holds
    /// them back).
    pub waiters: usize,
    /// Requests admitted since the limiter was created.
    pub admitted: u64,
    /// `try_acquire` calls denied.
    pub denied: u64,
    /// Acquisitions that failed on their timeout.
    pub timed_out: u64,
    /// Acquisitions that could never be admitted (cost above capacity, overflow).
    pub rejected: u64,
    /// Acquisitions dropped while queued.
    pub cancelled: u64,
    /// Permits settled.
    pub settled: u64,
    /// 429s reported ([`Limiter::observe_throttled`](crate::Limiter::observe_throttled), [`Limiter::pause`](crate::Limiter::pause), and the same on a [`Key`](crate::Key)).
    pub throttled: u64,
    /// Time until a provider's pause ends, if one is in force.
    pub paused_for: Option<Duration>,
    /// Pauses cut to the longest allowed ([`Limiter::set_max_pause`](crate::Limiter::set_max_pause)):
    /// a `retry-after` beyond it, or a `pause` asked for longer.
    pub pauses_clamped: u64,
    /// How long admitted requests waited.
    pub waits: WaitStats,
}

/// Use of one rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// The dimension.
    pub dimension: Dimension,
    /// The limit, as written (`500 per minute`).
    pub limit: String,
    /// Units per period.
    pub amount: u64,
    /// The period.
    pub period: Duration,
    /// Units counted against the limit now.
    pub used: u64,
    /// Units that could be admitted now.
    pub remaining: u64,
    /// Time until the limit is back to a fresh key's state, if it is not already.
    pub reset_in: Option<Duration>,
    /// Time until `remaining` next grows, if it is below the limit's capacity.
    pub next_refill_in: Option<Duration>,
    /// Units reserved and charged by admissions and settlements, all told.
    pub charged: u64,
    /// Units given back by settlements.
    pub refunded: u64,
    /// Units taken off because the provider reported less room than the limiter saw.
    pub lowered: u64,
    /// The provider's own figure for this limit, as last reported; compare with `amount`.
    pub reported_amount: Option<u64>,
    /// The amount configured. `amount` is below it while 429s (from a provider that enforces
    /// less than configured: another client on the key, a shorter period) keep it lowered;
    /// it climbs back step by step while no 429 comes (see [`Limiter::observe_throttled`]).
    ///
    /// [`Limiter::observe_throttled`]: crate::Limiter::observe_throttled
    pub configured_amount: u64,
    /// Times a 429 lowered the amount.
    pub decreases: u64,
}

/// Wait-time figures of admitted requests. Quantiles are read from a histogram with
/// power-of-two buckets, so they are upper bounds within a factor of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WaitStats {
    /// Admissions that waited at all.
    pub waited: u64,
    /// Admissions in all (waiting or not).
    pub count: u64,
    /// Sum of waits.
    pub total: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Median wait (upper bound of its histogram bucket).
    pub p50: Duration,
    /// 99th percentile wait (upper bound of its histogram bucket).
    pub p99: Duration,
}

/// Running totals of one budget, updated under the limiter's lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct BudgetCounters {
    pub(crate) admitted: u64,
    pub(crate) denied: u64,
    pub(crate) timed_out: u64,
    pub(crate) rejected: u64,
    pub(crate) cancelled: u64,
    pub(crate) settled: u64,
    pub(crate) throttled: u64,
    pub(crate) pauses_clamped: u64,
    pub(crate) limits: Vec<LimitCounters>,
    pub(crate) waits: Waits,
}

/// Running totals of one limit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LimitCounters {
    pub(crate) charged: u64,
    pub(crate) refunded: u64,
    pub(crate) lowered: u64,
    pub(crate) reported: Option<u64>,
    /// Times 429s lowered the limit's amount.
    pub(crate) decreases: u64,
    /// While 429s keep the amount in force below the configured one: how it got there.
    pub(crate) taught: Option<Taught>,
}

/// A limit whose amount in force 429s lowered below the configured one
/// (`limiter/teach.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taught {
    /// The amount configured, which recovery climbs back to.
    pub(crate) configured: u64,
    /// When a 429 last lowered it.
    pub(crate) lowered_at: u64,
    /// When it last changed (lowered, or raised a step).
    pub(crate) changed_at: u64,
}

impl BudgetCounters {
    pub(crate) fn new(limits: usize) -> Self {
        Self {
            limits: vec![LimitCounters::default(); limits],
            ..Self::default()
        }
    }
}

/// Wait times: admissions that did not wait are only counted; the histogram is made at the
/// first wait, so a budget that never waited stays small.
#[derive(Debug, Clone, Default)]
pub(crate) struct Waits {
    no_wait: u64,
    histogram: Option<Box<WaitHistogram>>,
}

impl Waits {
    #[inline]
    pub(crate) fn record(&mut self, wait_ns: u64) {
        if wait_ns == 0 {
            self.no_wait += 1;
        } else {
            self.histogram
                .get_or_insert_with(Box::default)
                .record(wait_ns);
        }
    }

    /// Takes back a wait [`record`](Self::record)ed for an admission that was taken back (its
    /// waiter was gone before it got the permit). The longest wait stays: it was waited.
    pub(crate) fn unrecord(&mut self, wait_ns: u64) {
        if wait_ns == 0 && self.no_wait > 0 {
            self.no_wait -= 1;
        } else if let Some(h) = self.histogram.as_deref_mut() {
            h.unrecord(wait_ns);
        }
    }

    /// Counts `n` admissions that did not wait.
    #[inline]
    pub(crate) fn record_no_waits(&mut self, n: u64) {
        self.no_wait = self.no_wait.saturating_add(n);
    }

    pub(crate) fn stats(&self) -> WaitStats {
        let mut h = self.histogram.as_deref().cloned().unwrap_or_default();
        h.buckets[0] += self.no_wait;
        h.stats()
    }
}

/// Wait times in 65 buckets: bucket `i` holds waits below `2^i` ns (bucket 0: no wait).
#[derive(Debug, Clone)]
pub(crate) struct WaitHistogram {
    buckets: [u64; 65],
    total: u128,
    max: u64,
}

impl Default for WaitHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; 65],
            total: 0,
            max: 0,
        }
    }
}

impl WaitHistogram {
    #[inline]
    pub(crate) fn record(&mut self, wait_ns: u64) {
        if wait_ns == 0 {
            self.buckets[0] += 1;
            return;
        }
        // 0 for no wait, else the bit length of the wait: 1..=64.
        let bucket = 64 - wait_ns.leading_zeros() as usize;
        self.buckets[bucket] += 1;
        self.total += u128::from(wait_ns);
        self.max = self.max.max(wait_ns);
    }

    fn unrecord(&mut self, wait_ns: u64) {
        let bucket = 64 - wait_ns.leading_zeros() as usize;
        self.buckets[bucket] = self.buckets[bucket].saturating_sub(1);
        self.total = self.total.saturating_sub(u128::from(wait_ns));
    }

    fn quantile(&self, q: f64, count: u64) -> Duration {
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = if i == 0 {
                    0
                } else if i >= 64 {
                    u64::MAX
                } else {
                    (1u64 << i) - 1
                };
                return Duration::from_nanos(upper.min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    pub(crate) fn stats(&self) -> WaitStats {
        let count: u64 = self.buckets.iter().sum();
        WaitStats {
            waited: count - self.buckets[0],
            count,
            total: Duration::from_nanos(u64::try_from(self.total).unwrap_or(u64::MAX)),
            max: Duration::from_nanos(self.max),
            p50: self.quantile(0.5, count),
            p99: self.quantile(0.99, count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let mut h = WaitHistogram::default();
        for _ in 0..98 {
            h.record(0);
        }
        h.record(1_000);
        h.record(1_000_000);
        let s = h.stats();
        assert_eq!((s.count, s.waited), (100, 2));
        assert_eq!(s.p50, Duration::ZERO);
        assert_eq!(s.p99, Duration::from_nanos(1_023));
        assert_eq!(s.max, Duration::from_millis(1));
        assert_eq!(s.total, Duration::from_nanos(1_001_000));
    }
}
