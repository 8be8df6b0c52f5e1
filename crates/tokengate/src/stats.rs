//! Counters kept by a limiter, and the snapshot it reports.

use std::time::Duration;

use crate::dimension::Dimension;

/// A snapshot of a limiter: every limit's use, in-flight requests, waiters and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Which budget this is: `limiter` for the limiter's own policy (whose counters count
    /// every request), or `model NAME`, `family NAME`, `tenant NAME`, `model (overflow)`,
    /// `tenant (overflow)` for the budgets of a limiter built from a config: `kind`, as text.
    pub budget: String,
    /// Which budget this is, to match on rather than parse `budget`.
    pub kind: BudgetKind,
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

/// Which budget a [`Stats`] is of; it displays as [`Stats::budget`] reads.
///
/// # Examples
/// ```
/// use tokengate::config::Config;
/// use tokengate::{BudgetKind, Cost, Limiter};
///
/// let config = Config::from_toml_str("[models.gpt-4o]\nrequests_per_minute = 500\n[defaults.tenant]\nrequests_per_minute = 50", "limits.toml")?;
/// let limiter = Limiter::from_config(config);
/// let kinds: Vec<BudgetKind> = limiter.key("acme", "gpt-4o").stats().into_iter().map(|s| s.kind).collect();
/// assert_eq!(kinds, [BudgetKind::Limiter, BudgetKind::Model("gpt-4o".into()), BudgetKind::Tenant("acme".into())]);
/// assert_eq!(BudgetKind::Tenant("acme".into()).to_string(), "tenant acme");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetKind {
    /// The limiter's own policy (a config's `[account]`): every request falls under it.
    Limiter,
    /// A model's own budget, by the name the config lists it under (or as asked for, under
    /// `[defaults.model]`).
    Model(String),
    /// A family's budget, shared by its models.
    Family(String),
    /// A tenant's budget.
    Tenant(String),
    /// The budget unlisted models share past the cap on budgets.
    ModelOverflow,
    /// The budget unlisted tenants share past the cap on budgets.
    TenantOverflow,
}

impl std::fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::limiter::BudgetName;
        let name: BudgetName<&str> = match self {
            BudgetKind::Limiter => BudgetName::Limiter,
            BudgetKind::Model(n) => BudgetName::Model(n),
            BudgetKind::Family(n) => BudgetName::Family(n),
            BudgetKind::Tenant(n) => BudgetName::Tenant(n),
            BudgetKind::ModelOverflow => BudgetName::ModelOverflow,
            BudgetKind::TenantOverflow => BudgetName::TenantOverflow,
        };
        name.fmt(f)
    }
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

/// Wait-time figures of admitted requests. Quantiles are read from a log-linear histogram:
/// waits below 128 ns exactly, longer ones in buckets 1/128 of their size wide, so a quantile
/// is an upper bound at most 0.8% above the wait it stands for. A budget keeps only the
/// buckets its waits fell in (16 bytes each, none until it first waits).
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
        match self.histogram.as_deref() {
            Some(h) => h.stats(self.no_wait),
            None => WaitHistogram::default().stats(self.no_wait),
        }
    }
}

/// Sub-buckets per doubling of the wait: the relative width of a bucket is at most 1/this.
const SUB_BUCKETS: u64 = 128;

/// Wait times, log-linear: a wait below [`SUB_BUCKETS`] ns in a bucket of its own; a longer
/// one in the bucket of its top 8 bits (width 2^k for a wait of 2^(k+7) to 2^(k+8) ns, at most
/// 1/128 of it). Only the buckets in use are kept, sorted by index: a budget whose waits
/// cluster (they do: they follow its pacing) keeps a few dozen.
#[derive(Debug, Clone, Default)]
pub(crate) struct WaitHistogram {
    /// `(bucket, count)`, ascending by bucket, counts above 0.
    buckets: Vec<(u16, u64)>,
    total: u128,
    max: u64,
}

/// The bucket of a wait of `ns`.
fn bucket_of(ns: u64) -> u16 {
    if ns < SUB_BUCKETS {
        return ns as u16;
    }
    // The top bit's position is 7..=63: keep the top 8 bits.
    let shift = 63 - u64::from(ns.leading_zeros()) - 7;
    (SUB_BUCKETS + shift * SUB_BUCKETS + ((ns >> shift) - SUB_BUCKETS)) as u16
}

/// The longest wait in `bucket`.
fn upper_of(bucket: u16) -> u64 {
    let b = u64::from(bucket);
    if b < SUB_BUCKETS {
        return b;
    }
    let shift = (b - SUB_BUCKETS) / SUB_BUCKETS;
    let top = SUB_BUCKETS + (b - SUB_BUCKETS) % SUB_BUCKETS;
    // ((top + 1) << shift) - 1, without overflow in the last bucket.
    ((top + 1) << shift).wrapping_sub(1).max(top << shift)
}

impl WaitHistogram {
    #[inline]
    pub(crate) fn record(&mut self, wait_ns: u64) {
        let bucket = bucket_of(wait_ns);
        match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.buckets[i].1 += 1,
            Err(i) => self.buckets.insert(i, (bucket, 1)),
        }
        self.total += u128::from(wait_ns);
        self.max = self.max.max(wait_ns);
    }

    fn unrecord(&mut self, wait_ns: u64) {
        let bucket = bucket_of(wait_ns);
        if let Ok(i) = self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            self.buckets[i].1 -= 1;
            if self.buckets[i].1 == 0 {
                self.buckets.remove(i);
            }
            self.total = self.total.saturating_sub(u128::from(wait_ns));
        }
    }

    /// The `q` quantile of `count` waits, `no_wait` of them 0: the longest wait of its bucket,
    /// never above the longest wait seen.
    fn quantile(&self, q: f64, count: u64, no_wait: u64) -> Duration {
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = no_wait;
        if seen >= rank {
            return Duration::ZERO;
        }
        for &(bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(upper_of(bucket).min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// The figures, with `no_wait` admissions that did not wait besides those recorded.
    pub(crate) fn stats(&self, no_wait: u64) -> WaitStats {
        let recorded: u64 = self.buckets.iter().map(|&(_, n)| n).sum();
        let zero = self
            .buckets
            .first()
            .filter(|&&(b, _)| b == 0)
            .map_or(0, |&(_, n)| n);
        let count = recorded + no_wait;
        WaitStats {
            waited: recorded - zero,
            count,
            total: Duration::from_nanos(u64::try_from(self.total).unwrap_or(u64::MAX)),
            max: Duration::from_nanos(self.max),
            p50: self.quantile(0.5, count, no_wait),
            p99: self.quantile(0.99, count, no_wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_128th_of_the_wait() {
        let mut w = Waits::default();
        for _ in 0..98 {
            w.record(0);
        }
        w.record(1_000);
        w.record(1_000_000);
        let s = w.stats();
        assert_eq!((s.count, s.waited), (100, 2));
        assert_eq!(s.p50, Duration::ZERO);
        // 1,000 ns is in the bucket 992..=999 + 8: its upper bound is within 1/128.
        assert!(s.p99 >= Duration::from_nanos(1_000) && s.p99 <= Duration::from_nanos(1_008));
        assert_eq!(s.max, Duration::from_millis(1));
        assert_eq!(s.total, Duration::from_nanos(1_001_000));
    }

    #[test]
    fn every_wait_is_in_a_bucket_whose_bound_is_within_a_128th() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut waits: Vec<u64> = (0..200).chain([u64::MAX, u64::MAX - 1, 1 << 63]).collect();
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            waits.push(seed >> (seed % 64));
        }
        for &ns in &waits {
            let b = bucket_of(ns);
            let upper = upper_of(b);
            assert!(upper >= ns, "{ns}: bucket {b} ends at {upper}");
            assert!(
                upper - ns <= ns / SUB_BUCKETS,
                "{ns}: bucket {b} ends at {upper}"
            );
            // The next bucket starts after this one ends.
            if b > 0 && u64::from(b) < SUB_BUCKETS * 58 {
                assert!(upper_of(b - 1) < ns, "{ns}: also in bucket {}", b - 1);
            }
        }
        assert_eq!(upper_of(bucket_of(u64::MAX)), u64::MAX);
    }

    #[test]
    fn quantiles_follow_a_sorted_list_of_waits() {
        // Waits of 1 us to 100 ms, uniform: each quantile within 0.8% above the exact one.
        let mut seed = 42_u64;
        let mut w = Waits::default();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ns = 1_000 + (seed >> 33) % 100_000_000;
            w.record(ns);
            all.push(ns);
        }
        all.sort_unstable();
        let s = w.stats();
        for (q, got) in [(0.5, s.p50), (0.99, s.p99)] {
            let exact = all[((all.len() as f64 * q).ceil() as usize).max(1) - 1];
            let got = got.as_nanos() as u64;
            assert!(
                got >= exact && got - exact <= exact / 128,
                "q {q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn a_taken_back_wait_leaves_no_bucket() {
        let mut h = WaitHistogram::default();
        h.record(5_000);
        h.record(5_000);
        h.unrecord(5_000);
        assert_eq!(h.buckets.len(), 1);
        h.unrecord(5_000);
        assert!(h.buckets.is_empty());
        assert_eq!(h.stats(3).count, 3);
    }
}
