//! What 429s teach. A provider that refuses what the limiter admitted enforces less than the
//! configured limits: another client spends the same key, it enforces a shorter period, or the
//! account's limit is lower than the file says. The budget that mirrors the provider (a key's
//! model budget, or the limiter's own) lowers the amount in force of the limits the 429
//! names, multiplicatively, and climbs back in steps while no 429 comes, additively: AIMD, the
//! way TCP senders share a link.
//!
//! - A 429 multiplies the amount in force by 7/10, never below a tenth of the configured
//!   amount, at most once per thirtieth of the limit's period (2 s for a per-minute limit):
//!   the 429s of requests sent before the first came back teach nothing new.
//! - Each twelfth of the period without a 429 (5 s for a per-minute limit) raises it by a
//!   twentieth of the configured amount, up to the configured amount.
//! - It lowers the limits whose dimension the 429 reports exhausted (`remaining` 0), or,
//!   when it names none this budget has, every limit of a minute or less. Longer limits (a
//!   daily cap) are budgets, not paces, and are left alone.
//!
//! The state carries over each change ([`LimitRule::carry_over`]): nothing counted is lost.
//!
//! [`LimitRule::carry_over`]: crate::core::LimitRule::carry_over

use std::sync::Arc;

use super::budget::Budget;
use crate::core::Nanos;
use crate::dimension::Dimension;
use crate::feedback::ProviderReport;
use crate::stats::Taught;

/// A 429 multiplies the amount in force by this fraction.
const DECREASE: (u64, u64) = (7, 10);
/// Never below the configured amount divided by this.
const FLOOR_DIVISOR: u64 = 10;
/// A step of recovery adds the configured amount divided by this...
const RAISE_DIVISOR: u64 = 20;
/// ...for each of these parts of the limit's period without a 429.
const STEPS_PER_PERIOD: u64 = 12;
/// At most one decrease per this part of the limit's period.
const COOLDOWNS_PER_PERIOD: u64 = 30;
/// Limits of a longer period are not taught.
const MAX_PERIOD: Nanos = 60_000_000_000;

/// A change of one limit's amount in force, for the events and metrics (read only with the
/// `tracing` or `metrics` feature).
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
pub(super) struct Change {
    pub(super) dimension: Dimension,
    /// The amount in force after the change.
    pub(super) amount: u64,
    pub(super) configured: u64,
    /// Lowered by a 429 (else raised a step).
    pub(super) lowered: bool,
}

impl Budget {
    /// A 429 with `report` came at `now`: lowers the limits it refused on (see the module
    /// docs). Returns the changes made.
    pub(super) fn teach(&mut self, report: &ProviderReport, now: Nanos) -> Vec<Change> {
        let limits = &self.policy.limits;
        let short = |i: &usize| limits[*i].rule.period() <= MAX_PERIOD;
        let exhausted = |i: &usize| {
            report
                .limits
                .iter()
                .any(|r| r.remaining == Some(0) && r.dimension == limits[*i].dimension)
        };
        let mut chosen: Vec<usize> = (0..limits.len()).filter(short).filter(exhausted).collect();
        if chosen.is_empty() {
            chosen = (0..limits.len()).filter(short).collect();
        }
        let mut changes = Vec::new();
        for i in chosen {
            let rule = &self.policy.limits[i].rule;
            let counters = &mut self.counters.limits[i];
            let cooldown = rule.period() / COOLDOWNS_PER_PERIOD;
            if counters
                .taught
                .is_some_and(|t| now < t.lowered_at.saturating_add(cooldown))
            {
                continue;
            }
            let amount = rule.amount();
            let configured = counters.taught.map_or(amount, |t| t.configured);
            let floor = (configured / FLOOR_DIVISOR).max(1);
            let lowered =
                (u128::from(amount) * u128::from(DECREASE.0) / u128::from(DECREASE.1)) as u64;
            let lowered = lowered.max(floor);
            if lowered < amount {
                changes.push((i, lowered));
            } else if let Some(t) = &mut counters.taught {
                // At the floor: no lower, but recovery starts again from now.
                t.lowered_at = now;
                t.changed_at = now;
            }
        }
        self.put_in_force(&changes, now, true)
    }

    /// Raises each limit that 429s lowered by a step for every step of time since it last
    /// changed, up to its configured amount. Returns the changes made.
    pub(super) fn recover(&mut self, now: Nanos) -> Vec<Change> {
        // (limit, amount, the instant of the last step taken: steps keep their pace).
        let raised: Vec<(usize, u64, Nanos)> = self
            .counters
            .limits
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let t = c.taught?;
                let rule = &self.policy.limits[i].rule;
                let step = (rule.period() / STEPS_PER_PERIOD).max(1);
                let steps = now.saturating_sub(t.changed_at) / step;
                if steps == 0 {
                    return None;
                }
                let raise = (t.configured / RAISE_DIVISOR).max(1).saturating_mul(steps);
                let amount = rule.amount().saturating_add(raise).min(t.configured);
                Some((
                    i,
                    amount,
                    t.changed_at.saturating_add(steps.saturating_mul(step)),
                ))
            })
            .collect();
        let changes: Vec<(usize, u64)> = raised.iter().map(|&(i, a, _)| (i, a)).collect();
        let made = self.put_in_force(&changes, now, false);
        for &(i, _, at) in &raised {
            if let Some(t) = &mut self.counters.limits[i].taught {
                t.changed_at = at;
            }
        }
        made
    }

    /// Puts the amounts of `changes` in force, carrying the state over, and records what each
    /// limit was taught.
    fn put_in_force(&mut self, changes: &[(usize, u64)], now: Nanos, lowered: bool) -> Vec<Change> {
        if changes.is_empty() {
            return Vec::new();
        }
        let Ok(policy) = self.policy.with_amounts(changes) else {
            return Vec::new();
        };
        // What each limit was taught so far, and what it is configured to (the amount in
        // force, for a limit not taught yet).
        let before: Vec<(Option<Taught>, u64)> = self
            .counters
            .limits
            .iter()
            .zip(&self.policy.limits)
            .map(|(c, l)| (c.taught, c.taught.map_or(l.rule.amount(), |t| t.configured)))
            .collect();
        self.replace_policy(Arc::new(policy), now);
        for (c, (taught, _)) in self.counters.limits.iter_mut().zip(&before) {
            c.taught = *taught;
        }
        changes
            .iter()
            .map(|&(i, amount)| {
                let (taught, configured) = before[i];
                let c = &mut self.counters.limits[i];
                c.taught = (amount < configured).then(|| Taught {
                    configured,
                    lowered_at: if lowered {
                        now
                    } else {
                        taught.map_or(now, |t| t.lowered_at)
                    },
                    changed_at: now,
                });
                if lowered {
                    c.decreases = c.decreases.saturating_add(1);
                }
                Change {
                    dimension: self.policy.limits[i].dimension.clone(),
                    amount,
                    configured,
                    lowered,
                }
            })
            .collect()
    }
}
