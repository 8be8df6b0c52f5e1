//! Waiting acquisitions, and the grants handed to them.
//!
//! A queued entry carries its cost and route, so whoever changes the limiter's state (an
//! admission, a settlement, a dropped permit, the head's timer) can admit it *on its behalf*
//! and wake it once, with its permit ready. Entries hold only what the engine needs; the
//! waiting future keeps nothing but its ticket.

use std::task::Waker;
use std::time::Duration;

use super::route::{Admission, Route};
use super::timer::{current_runtime, RuntimeTag};
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

#[derive(Debug)]
pub(crate) struct Entry {
    /// The ticket: tickets grow in arrival order, and every queue is in ticket order.
    pub(crate) id: u64,
    pub(crate) route: Route,
    /// The runtime the waiter was last polled on: only a timer of that runtime may wake it.
    pub(crate) runtime: RuntimeTag,
    pub(crate) waker: Option<Waker>,
    pub(crate) cost: Cost,
    /// When the acquisition started, for wait-time stats.
    pub(crate) started: Nanos,
    /// When it gives up; `NO_DEADLINE` for never (kept in one word: entries stay small).
    deadline: Nanos,
}

/// The deadline of an acquisition without a timeout.
const NO_DEADLINE: Nanos = u64::MAX;

impl Entry {
    pub(crate) fn new(
        id: u64,
        route: Route,
        waker: &Waker,
        cost: Cost,
        started: Nanos,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            id,
            route,
            runtime: current_runtime(),
            waker: Some(waker.clone()),
            cost,
            started,
            deadline: timeout.map_or(NO_DEADLINE, |t| deadline(started, t)),
        }
    }

    /// Stores the waker to use, and the runtime it is polled on.
    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        self.runtime = current_runtime();
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }

    /// When it gives up, if it has a timeout.
    pub(crate) fn deadline(&self) -> Option<Nanos> {
        (self.deadline != NO_DEADLINE).then_some(self.deadline)
    }

    /// The timeout it was given, for error messages.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.deadline.saturating_sub(self.started))
    }
}

/// `started + timeout`, saturating at the clock's last instant but one: a deadline is never
/// taken for none (`NO_DEADLINE`), so a wait that never ends by time fails it at once.
pub(crate) fn deadline(started: Nanos, timeout: Duration) -> Nanos {
    started
        .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX))
        .min(NO_DEADLINE - 1)
}

/// An admission made on behalf of a queued waiter, waiting for it to pick it up.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) id: u64,
    pub(crate) outcome: Result<Granted, AcquireError>,
}

#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) cost: Cost,
    pub(crate) admitted_at: Nanos,
    /// How long it waited, as counted in the stats (taken back with the grant).
    pub(crate) waited: Nanos,
    pub(crate) admission: Admission,
}

/// Grants not yet picked up.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    grants: Vec<Grant>,
}

impl Grants {
    pub(crate) fn grant(&mut self, id: u64, outcome: Result<Granted, AcquireError>) {
        self.grants.push(Grant { id, outcome });
    }

    /// Takes the grant made to `id`, if any.
    pub(crate) fn take(&mut self, id: u64) -> Option<Result<Granted, AcquireError>> {
        let i = self.grants.iter().position(|g| g.id == id)?;
        Some(self.grants.swap_remove(i).outcome)
    }
}
