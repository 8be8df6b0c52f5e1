//! One budget: the state of one policy's limits (a model's, a family's, a tenant's, or the
//! limiter's own), its in-flight slots, its provider pause, its waiters and its counters.
//!
//! A request falls under one or more budgets (its [`Route`](super::route::Route)); everything
//! here answers for one of them, and the engine combines the answers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::queue::Entry;
use super::route::Marks;
use super::timer::HeadTimer;
use crate::core::{commit_budget, settle_budget, BudgetView, LimitState, Nanos, Receipt};
use crate::cost::Cost;
use crate::dimension::Dimension;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::stats::{BudgetCounters, LimitCounters, LimitStats, Stats};

/// What one budget says about one cost at one instant: the core's decision.
pub(crate) use crate::core::BudgetDecision as Verdict;

/// Where an admission's bucket marks for one budget are (from `offset` in `marks`), and the
/// epoch of the budget's policy when it was admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken<'a> {
    pub(crate) marks: &'a Marks,
    pub(crate) offset: usize,
    pub(crate) epoch: u32,
}

/// Which kind of budget, and its name: how stats and events name it, and the one place a
/// budget's name is spelled (`limiter`, `model gpt-4o`, `family gpt-4o-mini`, `tenant acme`,
/// `model (overflow)`, `tenant (overflow)`). A budget owns its name (`Box<str>`, the default);
/// [`config::Budget`](crate::config::Budget) displays itself through one that borrows (`&str`),
/// so a config's budgets and the limiter's stats name a budget alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BudgetName<S = Box<str>> {
    /// The limiter's own policy: every request falls under it.
    Limiter,
    Model(S),
    Family(S),
    Tenant(S),
    /// Unlisted models past the cap on budgets, sharing the default model policy.
    ModelOverflow,
    /// Unlisted tenants past the cap on budgets, sharing the default tenant policy.
    TenantOverflow,
}

impl<S> BudgetName<S> {
    /// Whether it is a model's budget (or a family's): the one that mirrors a provider's.
    pub(crate) fn is_model(&self) -> bool {
        matches!(
            self,
            BudgetName::Model(_) | BudgetName::Family(_) | BudgetName::ModelOverflow
        )
    }
}

impl<S: AsRef<str>> BudgetName<S> {
    /// `limiter`, `model gpt-4o`, `family gpt-4o-mini`, `tenant acme`, `model (overflow)`, ...
    pub(crate) fn label(&self) -> String {
        self.to_string()
    }

    /// The public face of the name, for [`Stats::kind`](crate::Stats::kind).
    pub(crate) fn kind(&self) -> crate::stats::BudgetKind {
        use crate::stats::BudgetKind;
        match self {
            BudgetName::Limiter => BudgetKind::Limiter,
            BudgetName::Model(n) => BudgetKind::Model(n.as_ref().to_owned()),
            BudgetName::Family(n) => BudgetKind::Family(n.as_ref().to_owned()),
            BudgetName::Tenant(n) => BudgetKind::Tenant(n.as_ref().to_owned()),
            BudgetName::ModelOverflow => BudgetKind::ModelOverflow,
            BudgetName::TenantOverflow => BudgetKind::TenantOverflow,
        }
    }
}

impl<S: AsRef<str>> fmt::Display for BudgetName<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetName::Limiter => f.write_str("limiter"),
            BudgetName::Model(n) => write!(f, "model {}", n.as_ref()),
            BudgetName::Family(n) => write!(f, "family {}", n.as_ref()),
            BudgetName::Tenant(n) => write!(f, "tenant {}", n.as_ref()),
            BudgetName::ModelOverflow => f.write_str("model (overflow)"),
            BudgetName::TenantOverflow => f.write_str("tenant (overflow)"),
        }
    }
}

/// The waiters held back by this budget, in ticket order, and the timer of the first.
/// Made when the first waiter comes, so idle budgets stay small.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    pub(crate) queue: VecDeque<Entry>,
    pub(crate) timer: HeadTimer,
}

#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) name: BudgetName,
    pub(crate) policy: Arc<Policy>,
    pub(crate) limits: Vec<LimitState>,
    pub(crate) in_flight: u64,
    /// Nothing is admitted before this instant: the provider answered 429 with a retry-after.
    pub(crate) paused_until: Nanos,
    pub(crate) waiters: Option<Box<Waiters>>,
    /// Permits and queued acquisitions that charge this budget: it is not dropped while any
    /// is outstanding.
    pub(crate) pins: u64,
    /// Bumped when the policy is replaced: admissions made under an older policy settle
    /// conservatively on the limits that changed since (see
    /// [`replace_policy`](Self::replace_policy)).
    pub(crate) epoch: u32,
    /// The epoch at which each limit's figures last changed: the receipts of an admission made
    /// since still fit it.
    changed: Vec<u32>,
    /// The epoch at which the policy's shape last changed (limits added, removed, reordered,
    /// or of another dimension, measure, period or algorithm): no receipt of an admission made
    /// before fits.
    reshaped: u32,
    pub(crate) counters: BudgetCounters,
}

impl Budget {
    pub(crate) fn new(name: BudgetName, policy: Arc<Policy>) -> Self {
        let policy_len = policy.limits.len();
        let limits = policy.limits.iter().map(|l| l.rule.new_state()).collect();
        let counters = BudgetCounters::new(policy.limits.len());
        Self {
            name,
            policy,
            limits,
            in_flight: 0,
            paused_until: 0,
            waiters: None,
            pins: 0,
            epoch: 0,
            changed: vec![0; policy_len],
            reshaped: 0,
            counters,
        }
    }

    /// Puts `policy` in force, carrying over what is counted: a limit that is unchanged keeps
    /// its state exactly; a limit on the same dimension and period with a new amount, burst
    /// or algorithm carries its state over ([`LimitRule::carry_over`]: never more room than
    /// before); a new limit starts fresh. In-flight requests and waiters stay. The figures of
    /// `policy` are the ones in force: what 429s had taught is forgotten (teaching sets it
    /// again after it puts a lowered policy in force).
    ///
    /// [`LimitRule::carry_over`]: crate::core::LimitRule::carry_over
    pub(crate) fn replace_policy(&mut self, policy: Arc<Policy>, now: Nanos) {
        if policy.same_as(&self.policy) {
            // Nothing changes: states, marks and outstanding permits stay exactly as they are.
            self.policy = policy;
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        let same_shape = self.policy.limits.len() == policy.limits.len()
            && self.policy.limits.iter().zip(&policy.limits).all(|(o, l)| {
                o.dimension == l.dimension
                    && o.measure == l.measure
                    && o.limit.period() == l.limit.period()
                    && o.rule.algorithm() == l.rule.algorithm()
            });
        if same_shape {
            for (i, (o, l)) in self.policy.limits.iter().zip(&policy.limits).enumerate() {
                if o.limit != l.limit {
                    self.changed[i] = self.epoch;
                }
            }
        } else {
            self.reshaped = self.epoch;
            self.changed = vec![self.epoch; policy.limits.len()];
        }
        let old_policy = std::mem::replace(&mut self.policy, policy);
        let old_limits = std::mem::take(&mut self.limits);
        let old_counters = std::mem::take(&mut self.counters.limits);
        for l in &self.policy.limits {
            let same = old_policy
                .limits
                .iter()
                .position(|o| o.dimension == l.dimension && o.limit == l.limit);
            let similar = || {
                old_policy.limits.iter().position(|o| {
                    o.dimension == l.dimension && o.limit.period() == l.limit.period()
                })
            };
            let (state, counters) = match (same, same.or_else(similar)) {
                (Some(i), _) => (old_limits[i].clone(), old_counters[i]),
                (None, Some(i)) => (
                    l.rule
                        .carry_over(&old_policy.limits[i].rule, &old_limits[i], now),
                    old_counters[i],
                ),
                (None, None) => (l.rule.new_state(), Default::default()),
            };
            self.limits.push(state);
            self.counters.limits.push(LimitCounters {
                taught: None,
                ..counters
            });
        }
    }

    /// Waiters held back by this budget.
    #[inline]
    pub(crate) fn queue_len(&self) -> usize {
        self.waiters.as_ref().map_or(0, |w| w.queue.len())
    }

    /// The first waiter, if any.
    #[inline]
    pub(crate) fn head(&self) -> Option<&Entry> {
        self.waiters.as_ref().and_then(|w| w.queue.front())
    }

    /// Whether a waiter that came before ticket `id` is queued here.
    #[inline]
    pub(crate) fn has_waiter_before(&self, id: u64) -> bool {
        self.head().is_some_and(|h| h.id < id)
    }

    /// Where ticket `id` stands in this budget's queue.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        let w = self.waiters.as_ref()?;
        match w.queue.front() {
            // The head is the waiter most often asked about (it is the one woken).
            Some(head) if head.id == id => Some(0),
            Some(head) if head.id > id => None,
            Some(_) => w.queue.binary_search_by_key(&id, |e| e.id).ok(),
            None => None,
        }
    }

    /// Queues `entry` in ticket order.
    pub(crate) fn enqueue(&mut self, entry: Entry) {
        let w = self.waiters.get_or_insert_with(Box::default);
        if w.queue.back().is_none_or(|last| last.id < entry.id) {
            // A newcomer: the latest ticket goes last.
            w.queue.push_back(entry);
        } else {
            // A waiter moved here from another budget's queue: in ticket order.
            let at = w.queue.partition_point(|e| e.id < entry.id);
            w.queue.insert(at, entry);
        }
    }

    /// Takes ticket `id` out of the queue; returns its entry and whether it was the first.
    pub(crate) fn dequeue(&mut self, id: u64) -> Option<(Entry, bool)> {
        let i = self.position(id)?;
        let w = self.waiters.as_mut()?;
        let entry = w.queue.remove(i)?;
        Some((entry, i == 0))
    }

    /// Takes the first waiter out of the queue.
    pub(crate) fn pop_head(&mut self) -> Option<Entry> {
        self.waiters.as_mut()?.queue.pop_front()
    }

    /// Stops the head timer and lets go of the queue's memory when nobody waits.
    pub(crate) fn disarm(&mut self) {
        if let Some(w) = &mut self.waiters {
            w.timer.disarm();
            if w.queue.is_empty() {
                self.waiters = None;
            }
        }
    }

    /// Whether every limit is back to a fresh state and nothing refers to this budget: it can
    /// be dropped and made again later with no difference.
    pub(crate) fn is_idle(&self, now: Nanos) -> bool {
        self.pins == 0
            && self.in_flight == 0
            && self.queue_len() == 0
            && self.paused_until <= now
            && self.policy.is_fresh(&self.limits, now)
    }

    /// This budget as the core's decisions see it.
    #[inline]
    pub(crate) fn view(&self) -> BudgetView<'_> {
        BudgetView {
            policy: &self.policy,
            limits: &self.limits,
            in_flight: self.in_flight,
            paused_until: self.paused_until,
        }
    }

    /// What this budget says about `cost` at `now`; changes nothing ([`BudgetView::decide`]).
    #[inline]
    pub(crate) fn verdict(&self, now: Nanos, cost: &Cost) -> Result<Verdict, AcquireError> {
        self.view().decide(now, cost)
    }

    /// Charges `cost` on every limit at `now` (after [`verdict`](Self::verdict) said admit),
    /// writing each limit's bucket mark into `marks` from `offset`, and counts it. Returns
    /// whether it took an in-flight slot.
    #[inline]
    pub(crate) fn admit(
        &mut self,
        now: Nanos,
        cost: &Cost,
        waited: Nanos,
        marks: &mut Marks,
        offset: usize,
    ) -> bool {
        let Budget {
            policy,
            limits,
            in_flight,
            counters,
            ..
        } = self;
        for (l, c) in policy.limits.iter().zip(counters.limits.iter_mut()) {
            // The decision admitted it, so the amount did not overflow.
            let amount = l.measure.amount(cost).unwrap_or(u64::MAX);
            c.charged = c.charged.saturating_add(amount);
        }
        let mut i = offset;
        let holds_slot = commit_budget(policy, limits, in_flight, now, cost, |receipt| {
            marks.set(i, receipt.bucket_mark);
            i += 1;
        });
        counters.admitted += 1;
        counters.waits.record(waited);
        holds_slot
    }

    /// Settles an admission of `reserved` made at `admitted_at` with what it `used`: refunds
    /// or charges every limit the difference, and counts it.
    pub(crate) fn settle(
        &mut self,
        now: Nanos,
        reserved: &Cost,
        used: &Cost,
        admitted_at: Nanos,
        taken: Taken<'_>,
    ) {
        let Taken {
            marks,
            offset,
            epoch,
        } = taken;
        // How many replacements ago it was admitted; a limit whose figures changed since (or
        // any, after a change of shape) no longer fits its receipt: charge what was used
        // beyond the reservation, refund nothing (the safe side).
        let Budget {
            policy,
            limits,
            counters,
            epoch: current,
            changed,
            reshaped,
            ..
        } = self;
        let age = current.wrapping_sub(epoch);
        let reshaped = current.wrapping_sub(*reshaped) < age;
        let stale = |i: usize| reshaped || current.wrapping_sub(changed[i]) < age;
        // The counters first: what was charged beyond the reservation, what came back.
        for (i, (l, c)) in policy
            .limits
            .iter()
            .zip(counters.limits.iter_mut())
            .enumerate()
        {
            let reserved = l.measure.amount(reserved).unwrap_or(0);
            // A usage figure that overflows is charged as the most there is (capped by `charge`).
            let used = l.measure.amount(used).unwrap_or(u64::MAX);
            c.charged = c
                .charged
                .saturating_add(used.saturating_sub(reserved).min(l.rule.amount()));
            if !stale(i) {
                c.refunded = c.refunded.saturating_add(reserved.saturating_sub(used));
            }
        }
        let receipt = |i: usize| Receipt {
            admitted_at,
            bucket_mark: marks.get(offset + i),
        };
        settle_budget(policy, limits, now, reserved, used, receipt, stale);
    }

    /// The error for a wait here that outlasts `timeout`: it names the dimension that holds
    /// the request back (the limit with the longest wait, or `in_flight`) and the cost on it,
    /// or the provider's pause.
    pub(crate) fn timeout_error(
        &self,
        verdict: Verdict,
        cost: &Cost,
        now: Nanos,
        timeout: Duration,
    ) -> AcquireError {
        let wait = verdict.until().map(|u| Verdict::wait_for(now, u));
        match verdict {
            Verdict::Paused { .. } => AcquireError::Paused {
                wait: wait.unwrap_or_default(),
                timeout,
            },
            Verdict::Wait { limit, .. } => {
                let l = &self.policy.limits[limit];
                AcquireError::Timeout {
                    dimension: l.dimension.clone(),
                    cost: l.measure.amount(cost).unwrap_or(u64::MAX),
                    wait,
                    timeout,
                }
            }
            Verdict::Admit | Verdict::InFlightFull => AcquireError::Timeout {
                dimension: Dimension::InFlight,
                cost: 1,
                wait,
                timeout,
            },
        }
    }

    /// A snapshot of this budget at `now`.
    pub(crate) fn stats(&self, now: Nanos) -> Stats {
        let limits = self
            .policy
            .limits
            .iter()
            .zip(&self.limits)
            .zip(&self.counters.limits)
            .map(|((l, s), c)| {
                let snap = l.rule.snapshot(s, now);
                LimitStats {
                    dimension: l.dimension.clone(),
                    limit: l.limit.to_string(),
                    amount: l.limit.amount(),
                    period: l.limit.period(),
                    used: snap.used,
                    remaining: snap.remaining,
                    reset_in: snap.reset_at.map(|t| Duration::from_nanos(t - now)),
                    next_refill_in: snap.next_refill_at.map(|t| Duration::from_nanos(t - now)),
                    charged: c.charged,
                    refunded: c.refunded,
                    lowered: c.lowered,
                    reported_amount: c.reported,
                    configured_amount: c.taught.map_or(l.limit.amount(), |t| t.configured),
                    decreases: c.decreases,
                }
            })
            .collect();
        let c = &self.counters;
        Stats {
            budget: self.name.label(),
            kind: self.name.kind(),
            limits,
            in_flight: self.in_flight,
            max_in_flight: self.policy.max_in_flight,
            waiters: self.queue_len(),
            admitted: c.admitted,
            denied: c.denied,
            timed_out: c.timed_out,
            rejected: c.rejected,
            cancelled: c.cancelled,
            settled: c.settled,
            throttled: c.throttled,
            pauses_clamped: c.pauses_clamped,
            paused_for: (self.paused_until > now)
                .then(|| Duration::from_nanos(self.paused_until - now)),
            waits: c.waits.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BudgetName;

    #[test]
    fn every_kind_of_budget_is_named_by_its_kind() {
        let names: [(BudgetName, &str); 6] = [
            (BudgetName::Limiter, "limiter"),
            (BudgetName::Model("gpt-4o".into()), "model gpt-4o"),
            (
                BudgetName::Family("gpt-4o-mini".into()),
                "family gpt-4o-mini",
            ),
            (BudgetName::Tenant("acme".into()), "tenant acme"),
            (BudgetName::ModelOverflow, "model (overflow)"),
            (BudgetName::TenantOverflow, "tenant (overflow)"),
        ];
        for (name, label) in names {
            assert_eq!(name.label(), label);
        }
    }

    #[cfg(feature = "config")]
    #[test]
    fn a_config_budget_reads_as_the_limiters_budget() {
        use crate::config::Budget;
        let model = BudgetName::<Box<str>>::Model("gpt-4o".into()).label();
        assert_eq!(Budget::Model("gpt-4o").to_string(), model);
        assert_eq!(Budget::Default("gpt-4o").to_string(), model);
        assert_eq!(
            Budget::Family("gpt-4o-mini").to_string(),
            BudgetName::<Box<str>>::Family("gpt-4o-mini".into()).label()
        );
    }
}
