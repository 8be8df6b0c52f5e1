//! Decisions over several limits at once: the transaction a store applies atomically.
//!
//! A request falls under several limits (requests, input tokens, output tokens, per minute and
//! per day). It is admitted on all of them or on none: [`decide_all`] changes nothing, and
//! [`commit_all`] is applied only after it said [`CombinedDecision::Admit`]. The in-memory
//! limiter runs both under one lock; a shared store runs the same two steps in one atomic
//! script, over the same plain-data [`LimitState`]s.

use super::{Decision, LimitRule, LimitState, Nanos, Receipt};

/// The answer for several limits at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CombinedDecision {
    /// Every limit admits now.
    Admit,
    /// Some limit denies; all admit at `at` if nothing else is admitted first. `limit` is the
    /// index of the limit with the longest wait (the first one, on a tie).
    NotUntil {
        /// The earliest instant at which every limit admits.
        at: Nanos,
        /// The index of the binding limit.
        limit: usize,
    },
    /// The cost is above limit `limit`'s capacity: never admitted.
    Impossible {
        /// The index of the first limit that can never admit the cost.
        limit: usize,
        /// That limit's capacity.
        capacity: u64,
    },
}

/// Decides `(rule, state, amount)` for every limit at `now`; changes nothing.
///
/// Each limit's earliest admission instant only moves later when something is admitted, so
/// with nothing else admitted in between, the latest of them is exactly when all admit. (Near
/// the end of the clock that instant is checked on every limit again: a bucket full by then
/// may not fit the units before the end, and the answer is never, `u64::MAX`.)
///
/// # Examples
/// ```
/// use tokengate::core::{decide_all, CombinedDecision, LimitRule};
/// use tokengate::{Algorithm, Limit};
///
/// let rpm = LimitRule::new(&Limit::per_minute(1).algorithm(Algorithm::TokenBucket))?;
/// let tpm = LimitRule::new(&Limit::per_minute(100).algorithm(Algorithm::TokenBucket))?;
/// let (mut r, mut t) = (rpm.new_state(), tpm.new_state());
/// let _ = rpm.commit(&mut r, 0, 1);
/// let d = decide_all([(&rpm, &r, 1), (&tpm, &t, 10)], 0);
/// // A minute, plus the default safety margin of 50 ms (`Limit::margin`).
/// assert_eq!(d, CombinedDecision::NotUntil { at: 60_050_000_000, limit: 0 });
/// # Ok::<(), tokengate::BuildError>(())
/// ```
#[inline]
pub fn decide_all<'a, I>(limits: I, now: Nanos) -> CombinedDecision
where
    I: IntoIterator<Item = (&'a LimitRule, &'a LimitState, u64)>,
    I::IntoIter: Clone,
{
    let limits = limits.into_iter();
    let mut latest: Option<(Nanos, usize)> = None;
    for (i, (rule, state, amount)) in limits.clone().enumerate() {
        match rule.decide(state, now, amount) {
            Decision::Admit => {}
            Decision::NotUntil(at) => {
                if latest.is_none_or(|(t, _)| at > t) {
                    latest = Some((at, i));
                }
            }
            Decision::Impossible { capacity } => {
                return CombinedDecision::Impossible { limit: i, capacity }
            }
        }
    }
    match latest {
        None => CombinedDecision::Admit,
        Some((Nanos::MAX, limit)) => CombinedDecision::NotUntil {
            at: Nanos::MAX,
            limit,
        },
        Some((at, limit)) => recheck(limits, at, limit),
    }
}

/// [`decide_all`]'s answer `NotUntil { at, limit }`, with every limit asked again at `at`: a
/// bucket full by then starts the units from it, which near the end of the clock may take it
/// past the end (never). Away from the end every limit admits there. Out of line: a denial
/// only.
#[cold]
#[inline(never)]
fn recheck<'a>(
    limits: impl Iterator<Item = (&'a LimitRule, &'a LimitState, u64)>,
    mut at: Nanos,
    mut limit: usize,
) -> CombinedDecision {
    for (i, (rule, state, amount)) in limits.enumerate() {
        if let Decision::NotUntil(later) = rule.decide(state, at, amount) {
            if later > at {
                (at, limit) = (later, i);
            }
        }
    }
    CombinedDecision::NotUntil { at, limit }
}

/// Records an admission of `amount` on every limit at `now` (after [`decide_all`] said admit),
/// handing each limit's [`Receipt`] to `receipt` in order.
#[inline]
pub fn commit_all<'a>(
    limits: impl IntoIterator<Item = (&'a LimitRule, &'a mut LimitState, u64)>,
    now: Nanos,
    mut receipt: impl FnMut(Receipt),
) {
    for (rule, state, amount) in limits {
        receipt(rule.commit(state, now, amount));
    }
}

/// Settles an admission: for every limit, `(rule, state, reserved, used, receipt)` refunds
/// `reserved - used` or charges `used - reserved`.
pub fn settle_all<'a>(
    limits: impl IntoIterator<Item = (&'a LimitRule, &'a mut LimitState, u64, u64, Receipt)>,
    now: Nanos,
) {
    for (rule, state, reserved, used, receipt) in limits {
        if used < reserved {
            rule.refund(state, now, &receipt, reserved - used);
        } else if used > reserved {
            rule.charge(state, now, used - reserved);
        }
    }
}
