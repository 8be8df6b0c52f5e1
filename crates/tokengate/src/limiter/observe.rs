//! Instrumentation of the engine: `tracing` events and `metrics` counters, behind the
//! `tracing` and `metrics` features (see the crate docs' Observability section).
//!
//! The engine calls these once per outcome, after it has released its lock, with values it
//! already holds. With both features off every body is compiled out and the calls vanish.
//! Everything emitted here is named in the crate docs: the names are part of the API.

use std::time::Duration;

use crate::core::Nanos;
use crate::cost::Cost;
use crate::dimension::Dimension;
use crate::error::{AcquireError, Denied};
use crate::policy::Policy;

use super::engine::State;
use super::route::Route;
use super::Verdict;

/// What an outcome is reported under: the policy whose dimensions name the units, and the
/// budget label (`limiter`, `model gpt-4o`, `family mini`). A request on a key is reported
/// under its model's budget (or the first of its own); tenants are not labels: their number
/// is unbounded (read them from [`Key::stats`](crate::Key::stats)). Without the `tracing`
/// and `metrics` features it is empty and costs nothing.
#[derive(Debug)]
pub(super) struct Scope {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    policy: std::sync::Arc<Policy>,
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    budget: String,
}

impl Scope {
    /// The scope of a request on `route` (read under the lock): the limiter's own budget for
    /// a request on no key (its policy as a reload left it), else the key's model budget,
    /// else its first.
    #[inline(always)]
    pub(super) fn of(st: &State, route: &Route) -> Self {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let budget = route
                .keyed()
                .iter()
                .filter_map(|&id| st.budget(id))
                .min_by_key(|b| !b.name.is_model())
                .unwrap_or(&st.root);
            Self {
                policy: std::sync::Arc::clone(&budget.policy),
                budget: budget.name.label(),
            }
        }
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        {
            let _ = (st, route);
            Self {}
        }
    }
}

/// The target of every event (stable: filter with `tokengate=debug`).
#[cfg(feature = "tracing")]
const TARGET: &str = "tokengate::limiter";

/// The label value for `dimension`: no allocation for the built-in ones.
#[cfg(feature = "metrics")]
fn label(dimension: &Dimension) -> metrics::SharedString {
    match dimension {
        Dimension::Custom(name) => metrics::SharedString::from(std::sync::Arc::clone(name)),
        other => metrics::SharedString::const_str(static_name(other)),
    }
}

#[cfg(feature = "metrics")]
fn static_name(dimension: &Dimension) -> &'static str {
    match dimension {
        Dimension::Requests => "requests",
        Dimension::InputTokens => "input_tokens",
        Dimension::OutputTokens => "output_tokens",
        Dimension::Tokens => "tokens",
        Dimension::InFlight => "in_flight",
        Dimension::Custom(_) => "custom",
    }
}

/// Each dimension of `policy` once (the first limit on it), with that limit's index.
#[cfg(any(feature = "tracing", feature = "metrics"))]
fn dimensions(policy: &Policy) -> impl Iterator<Item = usize> + '_ {
    let limits = &policy.limits;
    (0..limits.len()).filter(move |&i| {
        !limits[..i]
            .iter()
            .any(|l| l.dimension == limits[i].dimension)
    })
}

#[cfg(any(feature = "tracing", feature = "metrics"))]
fn secs(ns: Nanos) -> f64 {
    Duration::from_nanos(ns).as_secs_f64()
}

/// A permit was delivered: at once (`waited` is `None`), or to a queued acquisition after
/// `waited` ns. Counts the admission and the units it charged on each dimension.
#[inline(always)]
pub(super) fn admitted(scope: &Scope, cost: &Cost, waited: Option<Nanos>) {
    #[cfg(feature = "tracing")]
    if let Some(waited) = waited {
        tracing::debug!(target: TARGET, budget = scope.budget.as_str(), waited_secs = secs(waited), "admitted after waiting");
    }
    #[cfg(feature = "metrics")]
    {
        let (policy, budget) = (&*scope.policy, scope.budget.clone());
        metrics::counter!("tokengate_admitted_total", "budget" => budget.clone()).increment(1);
        if let Some(waited) = waited {
            metrics::histogram!("tokengate_wait_seconds", "budget" => budget.clone())
                .record(secs(waited));
        }
        for i in dimensions(policy) {
            let l = &policy.limits[i];
            let units = l.measure.amount(cost).unwrap_or(u64::MAX);
            if units > 0 {
                metrics::counter!("tokengate_units_charged_total", "dimension" => label(&l.dimension), "budget" => budget.clone())
                    .increment(units);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (scope, cost, waited);
}

/// `try_acquire` said no.
#[inline(always)]
pub(super) fn denied(denied: &Denied) {
    #[cfg(feature = "tracing")]
    match denied {
        Denied::RateLimited {
            dimension,
            cost,
            wait,
            ..
        } => tracing::trace!(
            target: TARGET,
            reason = "rate_limited",
            dimension = dimension.name(),
            cost,
            wait_secs = wait.as_secs_f64(),
            "denied"
        ),
        Denied::Paused { wait } => tracing::trace!(
            target: TARGET,
            reason = "paused",
            wait_secs = wait.as_secs_f64(),
            "denied"
        ),
        Denied::InFlightFull { max } => {
            tracing::trace!(target: TARGET, reason = "in_flight", max, "denied")
        }
        Denied::WaitersAhead { waiters } => {
            tracing::trace!(target: TARGET, reason = "waiters_ahead", waiters, "denied")
        }
        Denied::Never(error) => {
            tracing::trace!(target: TARGET, reason = "never", error = %error, "denied")
        }
    }
    #[cfg(feature = "metrics")]
    if !matches!(denied, Denied::Never(_)) {
        metrics::counter!("tokengate_denied_total").increment(1);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = denied;
}

/// Why an acquisition joined the queue: taken under the lock (the cost moves into the
/// queue), emitted by [`WaitNote::emit`] after it. Empty without the `tracing` feature.
#[derive(Debug, Clone)]
pub(super) struct WaitNote {
    #[cfg(feature = "tracing")]
    why: Why,
}

#[cfg(feature = "tracing")]
#[derive(Debug, Clone)]
enum Why {
    /// Behind this many waiters.
    Queue(usize),
    /// The verdict for it at the head, the dimension and its cost on the limit that holds it
    /// back, and now.
    Verdict(Verdict, Dimension, u64, Nanos),
}

impl WaitNote {
    /// Joins behind `waiters` others.
    #[inline(always)]
    pub(super) fn behind(waiters: usize) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = waiters;
        Self {
            #[cfg(feature = "tracing")]
            why: Why::Queue(waiters),
        }
    }

    /// Joins at the head, held back by `verdict` at `now`.
    #[inline(always)]
    pub(super) fn held(policy: &Policy, verdict: Verdict, cost: &Cost, now: Nanos) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = (policy, verdict, cost, now);
        Self {
            #[cfg(feature = "tracing")]
            why: {
                let (dimension, amount) = match verdict {
                    Verdict::Wait { limit, .. } => {
                        let l = &policy.limits[limit];
                        (
                            l.dimension.clone(),
                            l.measure.amount(cost).unwrap_or(u64::MAX),
                        )
                    }
                    _ => (Dimension::InFlight, 1),
                };
                Why::Verdict(verdict, dimension, amount, now)
            },
        }
    }

    /// The debug event for an acquisition that starts waiting.
    #[inline(always)]
    pub(super) fn emit(self) {
        #[cfg(feature = "tracing")]
        match self.why {
            Why::Queue(waiters) => tracing::debug!(
                target: TARGET,
                reason = "waiters_ahead",
                waiters,
                "waiting"
            ),
            Why::Verdict(Verdict::Wait { until, .. }, dimension, cost, now) => tracing::debug!(
                target: TARGET,
                reason = "rate_limited",
                dimension = dimension.name(),
                cost,
                wait_secs = secs(until.saturating_sub(now)),
                "waiting"
            ),
            Why::Verdict(Verdict::Paused { until }, _, _, now) => tracing::debug!(
                target: TARGET,
                reason = "paused",
                wait_secs = secs(until.saturating_sub(now)),
                "waiting"
            ),
            Why::Verdict(_, _, cost, _) => tracing::debug!(
                target: TARGET,
                reason = "in_flight",
                dimension = Dimension::InFlight.name(),
                cost,
                "waiting"
            ),
        }
    }
}

/// A waiting acquisition failed with `error` after `waited` ns: counts it when it is a
/// timeout.
#[inline(always)]
pub(super) fn failed(error: &AcquireError, waited: Nanos) {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    if matches!(
        error,
        AcquireError::Timeout { .. }
            | AcquireError::Paused { .. }
            | AcquireError::QueueTimeout { .. }
    ) {
        #[cfg(feature = "tracing")]
        tracing::debug!(target: TARGET, error = %error, waited_secs = secs(waited), "timed out");
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_timed_out_total").increment(1);
    }
    #[cfg(not(feature = "tracing"))]
    let _ = waited;
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = error;
}

/// A queued acquisition was dropped after `waited` ns; `revoked` when it had been admitted
/// on its behalf and the admission was taken back.
#[inline(always)]
pub(super) fn cancelled(waited: Nanos, revoked: bool) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: TARGET, waited_secs = secs(waited), revoked, "cancelled");
    #[cfg(feature = "metrics")]
    metrics::counter!("tokengate_cancelled_total").increment(1);
    #[cfg(not(feature = "tracing"))]
    let _ = (waited, revoked);
}

/// A permit that reserved `reserved` settled with `used`: per dimension, the units refunded
/// or charged beyond the reservation (as [`LimitStats`](crate::LimitStats) counts them).
#[inline(always)]
pub(super) fn settled(scope: &Scope, reserved: &Cost, used: &Cost) {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    let (policy, budget) = (&*scope.policy, &scope.budget);
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    for i in dimensions(policy) {
        let l = &policy.limits[i];
        let reserved = l.measure.amount(reserved).unwrap_or(0);
        let used = l.measure.amount(used).unwrap_or(u64::MAX);
        let refunded = reserved.saturating_sub(used);
        let charged = used.saturating_sub(reserved).min(l.rule.amount());
        #[cfg(feature = "tracing")]
        tracing::trace!(
            target: TARGET,
            budget = budget.as_str(),
            dimension = l.dimension.name(),
            reserved,
            used,
            refunded,
            charged,
            "settled"
        );
        #[cfg(feature = "metrics")]
        {
            if refunded > 0 {
                metrics::counter!("tokengate_units_refunded_total", "dimension" => label(&l.dimension), "budget" => budget.clone())
                    .increment(refunded);
            }
            if charged > 0 {
                metrics::counter!("tokengate_units_charged_total", "dimension" => label(&l.dimension), "budget" => budget.clone())
                    .increment(charged);
            }
        }
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (scope, reserved, used);
}

/// Admissions pause for `retry_after` (a provider's answer); `throttled` when it was a 429;
/// `clamped` when it asked for more than the longest pause allowed.
#[inline(always)]
pub(super) fn paused(retry_after: Duration, throttled: bool, paused_for: Duration, clamped: bool) {
    #[cfg(feature = "tracing")]
    if clamped {
        tracing::warn!(
            target: TARGET,
            retry_after_secs = retry_after.as_secs_f64(),
            paused_for_secs = paused_for.as_secs_f64(),
            "a pause longer than the longest allowed was cut to it (Limiter::set_max_pause)"
        );
    } else {
        tracing::info!(
            target: TARGET,
            retry_after_secs = retry_after.as_secs_f64(),
            throttled,
            paused_for_secs = paused_for.as_secs_f64(),
            "paused"
        );
    }
    #[cfg(feature = "metrics")]
    {
        if throttled {
            metrics::counter!("tokengate_throttled_total").increment(1);
        }
        if clamped {
            metrics::counter!("tokengate_pauses_clamped_total").increment(1);
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (retry_after, throttled, paused_for, clamped);
}

/// A 429 lowered a limit's amount in force, or time without one raised it a step.
#[inline(always)]
pub(super) fn taught(change: &super::teach::Change) {
    #[cfg(feature = "tracing")]
    if change.lowered {
        tracing::info!(
            target: TARGET,
            dimension = change.dimension.name(),
            amount = change.amount,
            configured = change.configured,
            "lowered after a 429"
        );
    } else {
        tracing::debug!(
            target: TARGET,
            dimension = change.dimension.name(),
            amount = change.amount,
            configured = change.configured,
            "raised a step"
        );
    }
    #[cfg(feature = "metrics")]
    {
        let dimension = label(&change.dimension);
        if change.lowered {
            metrics::counter!("tokengate_rate_decreases_total", "dimension" => dimension.clone())
                .increment(1);
        }
        metrics::gauge!("tokengate_limit_amount", "dimension" => dimension)
            .set(change.amount as f64);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = change;
}

/// `observe` charged the limit on `dimension` `units` the provider had counted beyond it.
#[inline(always)]
pub(super) fn lowered(dimension: &Dimension, units: u64) {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    if units > 0 {
        #[cfg(feature = "tracing")]
        tracing::debug!(target: TARGET, dimension = dimension.name(), units, "lowered");
        #[cfg(feature = "metrics")]
        metrics::counter!("tokengate_units_lowered_total", "dimension" => label(dimension))
            .increment(units);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (dimension, units);
}
