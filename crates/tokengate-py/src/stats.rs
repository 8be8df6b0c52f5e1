//! Stats as plain dicts: durations in seconds (floats), `None` where the crate has none.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokengate::{BudgetKind, LimitStats, SharedBudget, Stats, StoreStats, WaitStats};

use crate::errors::seconds;

/// One budget's stats.
pub(crate) fn budget<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("budget", &stats.budget)?;
    let (kind, name) = match &stats.kind {
        BudgetKind::Limiter => ("limiter", None),
        BudgetKind::Model(n) => ("model", Some(n.as_str())),
        BudgetKind::Family(n) => ("family", Some(n.as_str())),
        BudgetKind::Tenant(n) => ("tenant", Some(n.as_str())),
        BudgetKind::ModelOverflow => ("model_overflow", None),
        BudgetKind::TenantOverflow => ("tenant_overflow", None),
        _ => ("other", None),
    };
    d.set_item("kind", kind)?;
    d.set_item("name", name)?;
    let limits = PyList::empty(py);
    for limit in &stats.limits {
        limits.append(self::limit(py, limit)?)?;
    }
    d.set_item("limits", limits)?;
    d.set_item("in_flight", stats.in_flight)?;
    d.set_item("max_in_flight", stats.max_in_flight)?;
    d.set_item("waiters", stats.waiters)?;
    d.set_item("admitted", stats.admitted)?;
    d.set_item("denied", stats.denied)?;
    d.set_item("timed_out", stats.timed_out)?;
    d.set_item("rejected", stats.rejected)?;
    d.set_item("cancelled", stats.cancelled)?;
    d.set_item("settled", stats.settled)?;
    d.set_item("throttled", stats.throttled)?;
    d.set_item("paused_for", stats.paused_for.map(seconds))?;
    d.set_item("pauses_clamped", stats.pauses_clamped)?;
    d.set_item("waits", waits(py, &stats.waits)?)?;
    Ok(d)
}

/// Several budgets' stats.
pub(crate) fn budgets<'py>(py: Python<'py>, all: &[Stats]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for stats in all {
        list.append(budget(py, stats)?)?;
    }
    Ok(list)
}

fn limit<'py>(py: Python<'py>, limit: &LimitStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dimension", limit.dimension.name())?;
    d.set_item("limit", &limit.limit)?;
    d.set_item("amount", limit.amount)?;
    d.set_item("period", seconds(limit.period))?;
    d.set_item("used", limit.used)?;
    d.set_item("remaining", limit.remaining)?;
    d.set_item("reset_in", limit.reset_in.map(seconds))?;
    d.set_item("next_refill_in", limit.next_refill_in.map(seconds))?;
    d.set_item("charged", limit.charged)?;
    d.set_item("refunded", limit.refunded)?;
    d.set_item("lowered", limit.lowered)?;
    d.set_item("reported_amount", limit.reported_amount)?;
    d.set_item("configured_amount", limit.configured_amount)?;
    d.set_item("decreases", limit.decreases)?;
    Ok(d)
}

fn waits<'py>(py: Python<'py>, waits: &WaitStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("waited", waits.waited)?;
    d.set_item("count", waits.count)?;
    d.set_item("total", seconds(waits.total))?;
    d.set_item("max", seconds(waits.max))?;
    d.set_item("p50", seconds(waits.p50))?;
    d.set_item("p99", seconds(waits.p99))?;
    Ok(d)
}

/// How a limiter has used its store.
pub(crate) fn store<'py>(py: Python<'py>, stats: &StoreStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("calls", stats.calls)?;
    d.set_item("errors", stats.errors)?;
    d.set_item("fail_open", stats.fail_open)?;
    d.set_item("local_share", stats.local_share)?;
    d.set_item("in_flight_polls", stats.in_flight_polls)?;
    Ok(d)
}

/// What a store holds for budgets, as every process sharing it sees them.
pub(crate) fn shared<'py>(py: Python<'py>, all: &[SharedBudget]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for budget in all {
        let d = PyDict::new(py);
        d.set_item("budget", &budget.name)?;
        let limits = PyList::empty(py);
        for ((dimension, limit), snapshot) in budget.policy.limits().zip(&budget.snapshot.limits) {
            let l = PyDict::new(py);
            l.set_item("dimension", dimension.name())?;
            l.set_item("amount", limit.amount())?;
            l.set_item("period", seconds(limit.period()))?;
            l.set_item("used", snapshot.used)?;
            l.set_item("remaining", snapshot.remaining)?;
            limits.append(l)?;
        }
        d.set_item("limits", limits)?;
        d.set_item("in_flight", budget.snapshot.in_flight)?;
        d.set_item("max_in_flight", budget.policy.max_in_flight())?;
        d.set_item("paused_for", seconds(budget.snapshot.paused_for))?;
        list.append(d)?;
    }
    Ok(list)
}
