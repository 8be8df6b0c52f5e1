//! Whole requests: a cost decided on every limit of every budget it falls under (the account's,
//! the model's or its family's, the tenant's), all or none, with the in-flight cap and the
//! provider's pause of each budget. Plain state in, decision out: what every store applies,
//! the in-memory limiter under its lock and a shared store in one script, held to the same
//! answers by `tests/vectors/requests.json`.

use std::time::Duration;

use super::{commit_all, decide_all, settle_all, CombinedDecision, LimitState, Nanos, Receipt};
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::policy::Policy;

/// One budget as a decision sees it: its policy, and its state as plain data.
#[derive(Debug, Clone, Copy)]
pub struct BudgetView<'a> {
    /// The budget's limits and in-flight cap.
    pub policy: &'a Policy,
    /// One state per limit of `policy`, in its order.
    pub limits: &'a [LimitState],
    /// Requests in flight now.
    pub in_flight: u64,
    /// Nothing is admitted before this instant (a provider's 429); 0 when not paused.
    pub paused_until: Nanos,
}

/// What one budget, or a whole request, says about a cost at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetDecision {
    /// Admitted now.
    Admit,
    /// Rate-limited until `until`; `limit` is the index of the limit with the longest wait.
    Wait {
        /// The earliest instant every limit admits it, with nothing else admitted first.
        until: Nanos,
        /// The index of the binding limit in its budget's policy.
        limit: usize,
    },
    /// The provider asked for a pause (a 429) that lasts until `until`.
    Paused {
        /// The end of the pause.
        until: Nanos,
    },
    /// Every in-flight slot is held: it ends when a request ends, not at an instant.
    InFlightFull,
}

impl BudgetDecision {
    /// The instant the wait ends, when it is known.
    pub fn until(self) -> Option<Nanos> {
        match self {
            BudgetDecision::Wait { until, .. } | BudgetDecision::Paused { until } => Some(until),
            BudgetDecision::Admit | BudgetDecision::InFlightFull => None,
        }
    }

    /// Whether a waiter with this decision at `now` misses `deadline` for sure: its wait ends
    /// after the deadline, or never (by time alone), or is unknown (an in-flight slot) and the
    /// deadline has come.
    pub fn misses(self, now: Nanos, deadline: Nanos) -> bool {
        self.until()
            .map_or(now >= deadline, |u| u > deadline || u == Nanos::MAX)
    }

    /// The wait from `now` to `until` as callers see it: [`Duration::MAX`] for never (the end
    /// of the clock).
    pub fn wait_for(now: Nanos, until: Nanos) -> Duration {
        if until == Nanos::MAX {
            Duration::MAX
        } else {
            Duration::from_nanos(until.saturating_sub(now))
        }
    }

    /// When a timer should wake a waiter: the end of the wait, unless it is never (by time
    /// alone: `u64::MAX`, the end of the clock) or unknown. Such a waiter is woken by a change
    /// of state (a refund, a released slot, a reload) or its own deadline.
    pub fn timer(self) -> Option<Nanos> {
        self.until().filter(|&until| until != Nanos::MAX)
    }
}

/// A whole request's decision, and which of its budgets (an index into the budgets given)
/// holds it back (0 when admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDecision {
    /// The decision.
    pub decision: BudgetDecision,
    /// The index of the budget that holds it back: the one with the latest instant, or the
    /// first in-flight cap when no budget gives an instant later than now.
    pub budget: usize,
}

impl BudgetView<'_> {
    /// Whether `cost` takes an in-flight slot in this budget: every non-zero cost does when
    /// the policy caps requests in flight.
    #[inline]
    pub fn takes_slot(&self, cost: &Cost) -> bool {
        takes_slot(self.policy, cost)
    }

    /// What this budget says about `cost` at `now`; changes nothing. A pause answers first,
    /// but a cost that can never be admitted says so even then; then the limits, all at once
    /// ([`decide_all`]); then the in-flight cap.
    ///
    /// # Errors
    /// [`AcquireError::Exceeds`] (or [`AcquireError::Overflow`]) when a limit can never admit
    /// the cost.
    ///
    /// # Examples
    /// ```
    /// use tokengate::core::{BudgetDecision, BudgetView};
    /// use tokengate::{Cost, Policy};
    ///
    /// let policy = Policy::builder().requests_per_minute(600).max_in_flight(1).build()?;
    /// let fresh: Vec<_> = policy.new_states();
    /// let view = BudgetView { policy: &policy, limits: &fresh, in_flight: 1, paused_until: 0 };
    /// assert_eq!(view.decide(0, &Cost::request())?, BudgetDecision::InFlightFull);
    /// let paused = BudgetView { paused_until: 5, ..view };
    /// assert_eq!(paused.decide(0, &Cost::request())?, BudgetDecision::Paused { until: 5 });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn decide(&self, now: Nanos, cost: &Cost) -> Result<BudgetDecision, AcquireError> {
        let limits = &self.policy.limits;
        if self.paused_until > now {
            // Even a cost that can never be admitted says so first.
            self.policy.check_possible(cost)?;
            return Ok(BudgetDecision::Paused {
                until: self.paused_until,
            });
        }
        // An amount that overflows 64 bits is above every capacity but that of a limit of
        // u64::MAX, which it may as well pass.
        let decisions = limits
            .iter()
            .zip(self.limits)
            .map(|(l, s)| (&l.rule, s, l.measure.amount(cost).unwrap_or(u64::MAX)));
        match decide_all(decisions, now) {
            CombinedDecision::Admit => {}
            CombinedDecision::NotUntil { at, limit } => {
                return Ok(BudgetDecision::Wait { until: at, limit })
            }
            CombinedDecision::Impossible { limit, .. } => {
                return Err(limits[limit].impossible(cost));
            }
        }
        if self.takes_slot(cost) && Some(self.in_flight) >= self.policy.max_in_flight {
            return Ok(BudgetDecision::InFlightFull);
        }
        Ok(BudgetDecision::Admit)
    }
}

/// Whether `cost` takes an in-flight slot under `policy`.
#[inline]
fn takes_slot(policy: &Policy, cost: &Cost) -> bool {
    policy.max_in_flight.is_some() && !cost.is_zero()
}

/// Decides `cost` at `now` on every budget of a request; changes nothing. Admitted only when
/// every budget admits; otherwise the budget that holds it back longest: the latest instant
/// (a pause or a limit), and an in-flight cap only when no budget names an instant after
/// now.
///
/// # Errors
/// The first budget's [`AcquireError`] when a limit of any budget can never admit the cost.
///
/// # Examples
/// ```
/// use tokengate::core::{decide_request, BudgetDecision, BudgetView};
/// use tokengate::{Cost, Policy};
///
/// let account = Policy::builder().requests_per_minute(600).build()?;
/// let model = Policy::builder().requests_per_minute(600).build()?;
/// let (a, m) = (account.new_states(), model.new_states());
/// let budgets = [
///     BudgetView { policy: &account, limits: &a, in_flight: 0, paused_until: 0 },
///     BudgetView { policy: &model, limits: &m, in_flight: 0, paused_until: 2_000 },
/// ];
/// let d = decide_request(budgets, 0, &Cost::request())?;
/// assert_eq!((d.decision, d.budget), (BudgetDecision::Paused { until: 2_000 }, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decide_request<'a>(
    budgets: impl IntoIterator<Item = BudgetView<'a>>,
    now: Nanos,
    cost: &Cost,
) -> Result<RequestDecision, AcquireError> {
    let mut combined = RequestDecision {
        decision: BudgetDecision::Admit,
        budget: 0,
    };
    let mut error = None;
    for (at, budget) in budgets.into_iter().enumerate() {
        match budget.decide(now, cost) {
            Ok(BudgetDecision::Admit) => {}
            Ok(decision) => {
                let longer = match (decision.until(), combined.decision) {
                    (_, BudgetDecision::Admit) => true,
                    (Some(u), BudgetDecision::InFlightFull) => u > now,
                    (Some(u), d) => d.until().is_some_and(|c| u > c),
                    (None, _) => false,
                };
                if longer {
                    combined = RequestDecision {
                        decision,
                        budget: at,
                    };
                }
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(combined),
    }
}

/// Records an admission of `cost` at `now` on one budget (after [`decide_request`] said
/// admit): every limit's state, handing each limit's [`Receipt`] to `receipt` in order, and an
/// in-flight slot when the policy caps them. Returns whether it took a slot.
///
/// # Examples
/// ```
/// use tokengate::core::commit_budget;
/// use tokengate::{Cost, Policy};
///
/// let policy = Policy::builder().requests_per_minute(600).max_in_flight(2).build()?;
/// let (mut limits, mut in_flight) = (policy.new_states(), 0);
/// let mut receipts = Vec::new();
/// let took = commit_budget(&policy, &mut limits, &mut in_flight, 0, &Cost::request(), |r| receipts.push(r));
/// assert!(took && in_flight == 1 && receipts.len() == 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[inline]
pub fn commit_budget(
    policy: &Policy,
    limits: &mut [LimitState],
    in_flight: &mut u64,
    now: Nanos,
    cost: &Cost,
    receipt: impl FnMut(Receipt),
) -> bool {
    let commits = policy.limits.iter().zip(limits.iter_mut()).map(|(l, s)| {
        // `decide` admitted it, so the amount did not overflow.
        (&l.rule, s, l.measure.amount(cost).unwrap_or(u64::MAX))
    });
    commit_all(commits, now, receipt);
    let holds_slot = takes_slot(policy, cost);
    if holds_slot {
        *in_flight += 1;
    }
    holds_slot
}

/// Settles one admission of `reserved` on one budget with what it `used`: on every limit, the
/// unused part of the reservation is refunded with the limit's receipt (`receipt(i)` for limit
/// `i`: what [`commit_budget`] handed out), and use beyond the reservation is charged. A limit
/// whose figures changed since the admission (`stale(i)`: a reload gave it another amount or
/// shape) no longer fits its receipt: it is only charged the use beyond the reservation, and
/// refunds nothing (the safe side). A usage figure that overflows 64 bits is charged as the
/// most there is. The in-flight slot is not this function's: free it apart.
///
/// # Examples
/// ```
/// use tokengate::core::{commit_budget, settle_budget, BudgetView};
/// use tokengate::{Cost, Limit, Policy};
///
/// let policy = Policy::builder().input_tokens_per_minute(6_000).margin(std::time::Duration::ZERO).build()?;
/// let (mut limits, mut in_flight) = (policy.new_states(), 0);
/// let reserved = Cost::request().input(100);
/// let mut receipts = Vec::new();
/// commit_budget(&policy, &mut limits, &mut in_flight, 0, &reserved, |r| receipts.push(r));
/// settle_budget(&policy, &mut limits, 0, &reserved, &Cost::request().input(40), |i| receipts[i], |_| false);
/// let view = BudgetView { policy: &policy, limits: &limits, in_flight, paused_until: 0 };
/// // 60 tokens came back: 60 more fit at once.
/// assert!(view.decide(0, &Cost::request().input(60)).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn settle_budget(
    policy: &Policy,
    limits: &mut [LimitState],
    now: Nanos,
    reserved: &Cost,
    used: &Cost,
    receipt: impl Fn(usize) -> Receipt,
    stale: impl Fn(usize) -> bool,
) {
    let each = policy.limits.iter().zip(limits.iter_mut()).enumerate();
    settle_all(
        each.filter_map(|(i, (l, s))| {
            let reserved = l.measure.amount(reserved).unwrap_or(0);
            let used = l.measure.amount(used).unwrap_or(u64::MAX);
            if stale(i) {
                let extra = used.saturating_sub(reserved);
                if extra > 0 {
                    l.rule.charge(s, now, extra);
                }
                return None;
            }
            Some((&l.rule, s, reserved, used, receipt(i)))
        }),
        now,
    );
}
