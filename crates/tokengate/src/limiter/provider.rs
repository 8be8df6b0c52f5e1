//! What the provider says corrects the limiter: a 429 pauses it, a remaining figure below the
//! local view lowers it. Never the other way: a provider that reports more room than the
//! limiter sees does not make the limiter admit more.

use std::sync::Arc;
use std::time::Duration;

use super::keys::KeyNames;
use super::route::{BudgetId, ROOT};
use super::{observe, Limiter};
use crate::clock::Clock;
use crate::dimension::Dimension;
use crate::feedback::ProviderReport;

/// [`Limiter::DEFAULT_MAX_PAUSE`], in nanoseconds.
pub(super) const DEFAULT_MAX_PAUSE_NANOS: u64 = 300 * 1_000_000_000;

/// How a pause comes: a provider's 429 (kept if a longer one is in force), or set by the
/// caller (replacing the one in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PauseKind {
    Throttled,
    Set,
}

impl Limiter<crate::clock::SystemClock> {
    /// The longest a pause lasts unless [`set_max_pause`](Limiter::set_max_pause) says otherwise:
    /// 5 minutes. A per-minute limit refills within a minute, so a provider's `retry-after`
    /// for it is seconds; one longer is a per-day limit spent (then a request every 5 minutes
    /// finds out, at the cost of one 429, whether it has come back) or a header gone wrong
    /// (`retry-after: 99999999999`, a date in year 9999), which must not stop a model for
    /// good.
    pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_nanos(DEFAULT_MAX_PAUSE_NANOS);
}

impl<C: Clock> Limiter<C> {
    /// Corrects the limiter with what a provider's response said ([`ProviderReport`], read
    /// from its headers): for each dimension reported, a remaining figure below what the
    /// limiter sees lowers the limiter to it (never the other way), and the provider's own limit
    /// is recorded in [`LimitStats::reported_amount`](crate::LimitStats::reported_amount).
    /// Returns the units taken off. Call it with every response; for a 429 call
    /// [`observe_throttled`](Self::observe_throttled).
    ///
    /// A `retry_after` here is ignored: OpenAI and Anthropic document `retry-after` with 429s
    /// (<https://platform.openai.com/docs/guides/rate-limits>,
    /// <https://docs.anthropic.com/en/api/rate-limits>), and on any other reply (a 200, a 503)
    /// it says nothing about rate limits; one header gone wrong must not stop a model. To honour
    /// a 503's `retry-after`, call [`pause`](Self::pause) with it.
    ///
    /// On a store-backed limiter ([`with_store`](Self::with_store)) the store's budget is
    /// lowered too ([`Store::lower`](crate::store::Store::lower), in a task of its own), for
    /// every process that shares it; the figure returned is this process's own.
    ///
    /// # Examples
    /// ```
    /// use std::time::SystemTime;
    /// use tokengate::feedback::ProviderReport;
    /// use tokengate::{Cost, Limiter, ManualClock, Policy};
    ///
    /// let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(500).build()?, ManualClock::new());
    /// let _permit = limiter.try_acquire(Cost::request())?;
    /// // Another process shares the key: the provider has 480 left where we see 499.
    /// let report = ProviderReport::from_headers(
    ///     [("x-ratelimit-limit-requests", "500"), ("x-ratelimit-remaining-requests", "480")],
    ///     SystemTime::now(),
    /// );
    /// assert_eq!(limiter.observe(&report), 19);
    /// let stats = limiter.stats();
    /// assert_eq!((stats.limits[0].used, stats.limits[0].reported_amount), (20, Some(500)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn observe(&self, report: &ProviderReport) -> u64 {
        self.observe_on(None, report)
    }

    /// [`observe`](Self::observe) on the budget that mirrors the provider for `key`.
    pub(super) fn observe_on(&self, key: Option<&KeyNames>, report: &ProviderReport) -> u64 {
        let lowered = self.lower_all(key, report);
        // A reply that was no 429: limits that 429s lowered climb back a step per step of time.
        self.teach_on(key, None);
        lowered
    }

    /// What a 429 (`throttled`: its report) or the time since the last one teaches the budget
    /// that mirrors the provider for `key` (`limiter/teach.rs`).
    fn teach_on(&self, key: Option<&KeyNames>, throttled: Option<&ProviderReport>) {
        let now = self.shared.clock.now();
        let (mut st, now) = self.lock_at(now);
        let Some(id) = self.provider_budget(&mut st, key, now) else {
            return;
        };
        let Some(budget) = st.budget_mut(id) else {
            return;
        };
        let changes = match throttled {
            Some(report) => budget.teach(report, now),
            None if budget.counters.limits.iter().any(|c| c.taught.is_some()) => {
                budget.recover(now)
            }
            None => return,
        };
        // A limit raised a step may let the head in now; a lowered one moves its timer.
        if !changes.is_empty() && st.budget(id).is_some_and(|b| b.queue_len() > 0) {
            st.serve(now, id, None);
        }
        drop(st);
        for change in &changes {
            observe::taught(change);
        }
    }

    /// Lowers every dimension `report` names (see [`observe`](Self::observe)).
    fn lower_all(&self, key: Option<&KeyNames>, report: &ProviderReport) -> u64 {
        let mut lowered = 0;
        for r in &report.limits {
            // The most the provider may have left: a rounded figure never lowers.
            let remaining = r
                .remaining
                .map_or(u64::MAX, |n| n.saturating_add(r.remaining_slack));
            lowered += self.lower(key, &r.dimension, r.limit, remaining);
            // Every process sharing the store counts it too.
            #[cfg(feature = "tokio")]
            self.lower_store(key, &r.dimension, r.limit, remaining);
        }
        lowered
    }

    /// The budget that mirrors the provider's limits for `key`: its model's (or family's),
    /// else the limiter's own.
    /// `None` for a model the config refuses: nothing of the provider's for it (a pause, a
    /// lower remaining, a 429's lesson) may land on another budget, the account's least.
    fn provider_budget(
        &self,
        st: &mut super::State,
        key: Option<&KeyNames>,
        now: u64,
    ) -> Option<BudgetId> {
        let route = self.route(st, key, now).ok()?;
        Some(
            route
                .keyed()
                .iter()
                .copied()
                .find(|&id| st.budget(id).is_some_and(|b| b.name.is_model()))
                .unwrap_or(ROOT),
        )
    }

    /// Like [`observe`](Self::observe), for a 429: counts it, pauses admissions for its
    /// `retry_after` (or when it gave none, until the latest reset of a dimension it reports
    /// exhausted, or else for one second), at most [`max_pause`](Self::max_pause) (5 minutes
    /// by default), and learns from it. A pause already in force that ends later stays.
    ///
    /// A 429 for a request the limiter admitted means the provider enforces less than the
    /// limits configured: another client spends the same key, it enforces a shorter period,
    /// or the account's limit is lower than written. The budget that mirrors the provider (a
    /// key's model budget, or the limiter's own) lowers the amount in force of the limits the
    /// 429 reports exhausted (or, when it names none, of all its limits of a minute or less) to
    /// 7/10, at most once per thirtieth of the period (2 s a minute) and never below a tenth
    /// of the configured amount; then raises it by a twentieth of the configured amount per
    /// twelfth of the period (5 s a minute) without a 429, back to the configured amount. So
    /// a limit lowered once is back in full 30 s later, and two clients that each believe
    /// they own the whole of a key settle on sharing it. [`LimitStats::amount`] is the amount
    /// in force, [`LimitStats::configured_amount`] the configured one, and
    /// [`LimitStats::decreases`] counts the 429s that lowered it; the `metrics` feature
    /// exports them too (crate docs, Observability).
    ///
    /// A limit lowered or raised settles the permits admitted before on the safe side (extra
    /// usage charged, nothing refunded): settle the permit of the refused call first.
    ///
    /// [`LimitStats::amount`]: crate::LimitStats::amount
    /// [`LimitStats::configured_amount`]: crate::LimitStats::configured_amount
    /// [`LimitStats::decreases`]: crate::LimitStats::decreases
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokengate::feedback::ProviderReport;
    /// use tokengate::{Limiter, ManualClock, Policy};
    ///
    /// let limiter = Limiter::with_clock(Policy::builder().tokens_per_minute(60_000).build()?, ManualClock::new());
    /// let throttled = ProviderReport::from_headers(
    ///     [("x-ratelimit-remaining-tokens", "0"), ("retry-after-ms", "250")],
    ///     SystemTime::now(),
    /// );
    /// limiter.observe_throttled(&throttled);
    /// let tokens = &limiter.stats().limits[0];
    /// assert_eq!((tokens.amount, tokens.configured_amount, tokens.decreases), (42_000, 60_000, 1));
    /// // 30 s without a 429: back to the configured amount, a twentieth each 5 s.
    /// limiter.clock().advance(Duration::from_secs(30));
    /// limiter.observe(&ProviderReport::default());
    /// assert_eq!(limiter.stats().limits[0].amount, 60_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn observe_throttled(&self, report: &ProviderReport) -> u64 {
        self.observe_throttled_on(None, report)
    }

    /// [`observe_throttled`](Self::observe_throttled) for `key`.
    pub(super) fn observe_throttled_on(
        &self,
        key: Option<&KeyNames>,
        report: &ProviderReport,
    ) -> u64 {
        let lowered = self.lower_all(key, report);
        self.pause_for(key, report.wait_after_429(), PauseKind::Throttled);
        self.teach_on(key, Some(report));
        lowered
    }

    /// Whether a limit the provider reports (`x-ratelimit-limit-*`, `anthropic-ratelimit-*-limit`)
    /// that differs from the configured one replaces it (off by default: the provider's figure
    /// is only recorded, in [`LimitStats::reported_amount`](crate::LimitStats::reported_amount)).
    /// When on, [`observe`](Self::observe) puts the reported amount in force on the budget that
    /// mirrors the provider (a key's model budget), keeping what is counted, with defaults
    /// such as the burst derived afresh. A `reload` puts the config's figures back on the
    /// budgets it gives a policy to (a limiter built from one policy keeps what it adopted).
    ///
    /// # Examples
    /// ```
    /// use std::time::SystemTime;
    /// use tokengate::feedback::ProviderReport;
    /// use tokengate::{Limiter, ManualClock, Policy};
    ///
    /// let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(500).build()?, ManualClock::new());
    /// limiter.adopt_reported_limits(true);
    /// // The account was moved to a higher tier.
    /// let report = ProviderReport::from_headers([("x-ratelimit-limit-requests", "5000")], SystemTime::now());
    /// limiter.observe(&report);
    /// assert_eq!(limiter.stats().limits[0].amount, 5_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt_reported_limits(&self, adopt: bool) {
        self.lock().adopt_reported = adopt;
    }

    /// Pauses admissions for `wait` from now, as a 429's `retry-after` asks (at most
    /// [`max_pause`](Self::max_pause)), and counts the 429; replaces a pause in force, longer
    /// or shorter. `Duration::ZERO` lifts a pause: the same as [`resume`](Self::resume).
    /// Waiters keep their place and are admitted, in order, when the pause ends.
    ///
    /// On a store-backed limiter ([`with_store`](Self::with_store)) the budget is paused on
    /// the store as well (in a task of its own), for every process that shares it; so it is by
    /// [`observe_throttled`](Self::observe_throttled), [`resume`](Self::resume) and a
    /// [`Key`](crate::Key)'s, on the model's budget.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Denied, Limiter, ManualClock, Policy};
    ///
    /// let limiter = Limiter::with_clock(Policy::builder().requests_per_minute(500).build()?, ManualClock::new());
    /// limiter.pause(Duration::from_secs(2));
    /// let denied = limiter.try_acquire(Cost::request()).unwrap_err();
    /// assert_eq!(denied, Denied::Paused { wait: Duration::from_secs(2) });
    /// limiter.clock().advance(Duration::from_secs(2));
    /// assert!(limiter.try_acquire(Cost::request()).is_ok());
    /// assert_eq!(limiter.stats().throttled, 1);
    ///
    /// // A pause asked for far too long is cut to the longest allowed, and counted.
    /// limiter.pause(Duration::MAX);
    /// let stats = limiter.stats();
    /// assert_eq!((stats.paused_for, stats.pauses_clamped), (Some(Limiter::DEFAULT_MAX_PAUSE), 1));
    /// limiter.resume();
    /// assert!(limiter.try_acquire(Cost::request()).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause(&self, wait: Duration) {
        self.pause_for(None, wait, PauseKind::Set);
    }

    /// Lifts the pause of the limiter's own budget, if one is in force: the waiters held by it
    /// are admitted as the limits allow. ([`Key::resume`](crate::Key::resume) lifts a model's.)
    pub fn resume(&self) {
        self.pause_for(None, Duration::ZERO, PauseKind::Set);
    }

    /// The longest a pause lasts: a `retry-after` beyond it, or a [`pause`](Self::pause) asked
    /// for longer, is cut to it (counted in [`Stats::pauses_clamped`](crate::Stats::pauses_clamped),
    /// and logged with the `tracing` feature). [`DEFAULT_MAX_PAUSE`](Limiter::DEFAULT_MAX_PAUSE)
    /// unless set.
    pub fn max_pause(&self) -> Duration {
        Duration::from_nanos(self.lock().max_pause)
    }

    /// Sets the longest a pause lasts (see [`max_pause`](Self::max_pause)); pauses in force
    /// are kept as they are.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().requests_per_day(10_000).build()?);
    /// // A per-day limit spent: wait up to an hour between probes rather than 5 minutes.
    /// limiter.set_max_pause(Duration::from_secs(3_600));
    /// assert_eq!(limiter.max_pause(), Duration::from_secs(3_600));
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn set_max_pause(&self, max: Duration) {
        self.lock().max_pause = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    }

    /// Puts a pause of `wait` in force on the budget that mirrors the provider for `key`.
    pub(super) fn pause_for(&self, key: Option<&KeyNames>, wait: Duration, kind: PauseKind) {
        let now = self.shared.clock.now();
        let (mut st, now) = self.lock_at(now);
        let asked = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        let clamped = asked > st.max_pause;
        let until = now.saturating_add(asked.min(st.max_pause));
        let Some(id) = self.provider_budget(&mut st, key, now) else {
            return;
        };
        // Every process sharing the store pauses too.
        #[cfg(feature = "tokio")]
        self.pause_store(
            key,
            Duration::from_nanos(asked.min(st.max_pause)),
            kind == PauseKind::Set,
        );
        let counted = kind == PauseKind::Throttled || asked > 0;
        for budget_id in if id == ROOT {
            vec![ROOT]
        } else {
            vec![id, ROOT]
        } {
            if let Some(budget) = st.budget_mut(budget_id) {
                budget.counters.throttled += u64::from(counted);
                budget.counters.pauses_clamped += u64::from(clamped);
            }
        }
        let Some(budget) = st.budget_mut(id) else {
            return;
        };
        budget.paused_until = match kind {
            PauseKind::Throttled => budget.paused_until.max(until),
            PauseKind::Set => until,
        };
        let paused_until = budget.paused_until;
        // The head's wait changed: set its timer for the new instant (or admit it now).
        if budget.queue_len() > 0 {
            st.serve(now, id, None);
        }
        drop(st);
        observe::paused(
            wait,
            counted,
            Duration::from_nanos(paused_until.saturating_sub(now)),
            clamped,
        );
    }

    /// Charges the limit on `dimension` what the provider has counted beyond what the limiter
    /// has (its limit, `reported` or else ours, less its `remaining`); records the provider's
    /// own figure for the limit for the stats. Returns the units charged.
    ///
    /// Which of the dimension's limits: the one whose amount equals `reported`, else the one
    /// with the shortest period (providers report their per-minute window).
    fn lower(
        &self,
        key: Option<&KeyNames>,
        dimension: &Dimension,
        reported: Option<u64>,
        remaining: u64,
    ) -> u64 {
        let now = self.shared.clock.now();
        let (mut st, now) = self.lock_at(now);
        let Some(id) = self.provider_budget(&mut st, key, now) else {
            return 0;
        };
        let adopt = st.adopt_reported;
        let Some(budget) = st.budget_mut(id) else {
            return 0;
        };
        let Some(i) = budget.policy.reported_limit(dimension, reported) else {
            return 0;
        };
        let mut adopted = false;
        if let Some(amount) = reported.filter(|&r| adopt && r > 0) {
            if amount != budget.policy.limits[i].rule.amount() {
                // Opted in: the provider's figure replaces ours, keeping what is counted.
                if let Ok(policy) = budget.policy.with_amount(i, amount) {
                    budget.replace_policy(Arc::new(policy), now);
                    adopted = true;
                }
            }
        }
        let super::Budget {
            policy,
            limits: states,
            counters,
            ..
        } = budget;
        let rule = &policy.limits[i].rule;
        let c = &mut counters.limits[i];
        if let Some(reported) = reported {
            c.reported = Some(reported);
        }
        // Compare what each side has counted: the provider's limit less its remaining, against
        // the units this limit counts now (in its window, or missing from its bucket).
        let counted_there = reported.unwrap_or(rule.amount()).saturating_sub(remaining);
        let counted_here = rule.snapshot(&states[i], now).used;
        let excess = counted_there.saturating_sub(counted_here);
        if excess > 0 {
            rule.lower(&mut states[i], now, excess);
            c.lowered = c.lowered.saturating_add(excess);
        }
        // A limit raised to the provider's figure may let the head in now.
        if adopted && st.budget(id).is_some_and(|b| b.queue_len() > 0) {
            st.serve(now, id, None);
        }
        drop(st);
        observe::lowered(dimension, excess);
        excess
    }
}
