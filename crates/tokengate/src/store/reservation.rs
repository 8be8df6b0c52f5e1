//! What a store answers a request: a reservation, or why not.

use std::time::Duration;

use super::StoreBudget;
use crate::core::{Nanos, Receipt};
use crate::cost::Cost;

/// A store's answer to [`Store::acquire`](super::Store::acquire).
#[derive(Debug, Clone)]
#[must_use = "a reservation holds budget until it is settled"]
pub enum Answer {
    /// Admitted, at once or after [`Reservation::wait`].
    Reserved(Reservation),
    /// Not reserved: not admissible within the wait allowed (nothing was recorded), or only
    /// beyond the ask's horizon ([`Refusal::Ahead`]: its place in line was recorded).
    Refused(Refusal),
}

impl Answer {
    /// The reservation, if admitted.
    pub fn reserved(self) -> Option<Reservation> {
        match self {
            Answer::Reserved(r) => Some(r),
            Answer::Refused(_) => None,
        }
    }

    /// Why it was refused, if it was.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Answer::Reserved(_) => None,
            Answer::Refused(r) => Some(*r),
        }
    }
}

/// Why a store refused a request now, and which of its budgets (an index into the budgets
/// asked) holds it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A limit admits it only after `wait` ([`Duration::MAX`]: never, by time alone).
    Wait {
        /// How long from now.
        wait: Duration,
        /// The budget.
        budget: usize,
        /// The limit's index in the budget's policy.
        limit: usize,
    },
    /// Earlier reservations on the budget come first: it is admitted only after `wait`
    /// (first come, first served across every process sharing the store).
    Queued {
        /// How long from now.
        wait: Duration,
        /// The budget.
        budget: usize,
    },
    /// The budget is paused for `wait` more (a provider's 429).
    Paused {
        /// How long from now.
        wait: Duration,
        /// The budget.
        budget: usize,
    },
    /// Every in-flight slot of the budget is held: it ends when a request ends.
    InFlightFull {
        /// The budget.
        budget: usize,
    },
    /// Admissible after `wait`, within the wait allowed but beyond the ask's
    /// [`horizon`](super::Ask::horizon): nothing is reserved; the request has a place in line
    /// on `budget`, the one that holds it back. Ask again, with
    /// [`placed`](super::Ask::placed), shortly before `wait` has passed.
    Ahead {
        /// How long from now.
        wait: Duration,
        /// The budget.
        budget: usize,
        /// The place: what [`Store::leave`](super::Store::leave) gives back when the request
        /// will not come back.
        place: Place,
    },
}

/// A request's place in line on a budget ([`Refusal::Ahead`]): where the budget's line was
/// before it and is after it, in the store's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The line's end before the place (0 when it had passed: no line).
    pub(crate) from: Nanos,
    /// The line's end after it.
    pub(crate) to: Nanos,
    /// The frame of both, in seconds (the Redis store's epoch of the budget; 0 in memory).
    pub(crate) epoch: u64,
}

impl Place {
    /// Whether it moved the line: a request asking again with a place it holds is given one
    /// that moves nothing (its instant is within the line already).
    pub fn moved_line(&self) -> bool {
        self.to != self.from
    }
}

impl Refusal {
    /// The wait, when it is known (not for an in-flight slot).
    pub fn wait(&self) -> Option<Duration> {
        match *self {
            Refusal::Wait { wait, .. }
            | Refusal::Queued { wait, .. }
            | Refusal::Paused { wait, .. }
            | Refusal::Ahead { wait, .. } => Some(wait),
            Refusal::InFlightFull { .. } => None,
        }
    }

    /// The budget that holds the request back.
    pub fn budget(&self) -> usize {
        match *self {
            Refusal::Wait { budget, .. }
            | Refusal::Queued { budget, .. }
            | Refusal::Paused { budget, .. }
            | Refusal::Ahead { budget, .. }
            | Refusal::InFlightFull { budget } => budget,
        }
    }
}

/// A request recorded on every limit of its budgets: admitted [`wait`](Self::wait) from the
/// store's answer, holding an in-flight slot on each budget with a cap until it is settled
/// ([`Store::settle`](super::Store::settle)).
#[derive(Debug, Clone)]
pub struct Reservation {
    pub(crate) budgets: Vec<StoreBudget>,
    pub(crate) reserved: Cost,
    pub(crate) wait: Duration,
    /// Per budget, per limit: what its settlement needs.
    pub(crate) receipts: Vec<Vec<Receipt>>,
    /// The frame the receipts' instants count from, in seconds (the Redis store's epoch; 0 in
    /// memory).
    pub(crate) epoch: u64,
    /// The lease of its in-flight slots, when a budget caps them.
    pub(crate) lease: Option<String>,
}

impl Reservation {
    /// How long after the store's answer the request is admitted: zero when at once.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The cost reserved.
    pub fn reserved(&self) -> &Cost {
        &self.reserved
    }

    /// The budgets it is recorded on.
    pub fn budgets(&self) -> &[StoreBudget] {
        &self.budgets
    }

    /// The instant it is admitted at on the store's clock, from that clock's origin: the Unix
    /// epoch for the Redis store (Redis's `TIME`), the clock's own origin in memory. `None`
    /// when its budgets have no limits.
    pub fn admitted_at(&self) -> Option<Duration> {
        let receipt = self.receipts.iter().flatten().next()?;
        Some(Duration::from_secs(self.epoch) + Duration::from_nanos(receipt.admitted_at))
    }

    /// Whether it holds in-flight slots.
    pub fn holds_slots(&self) -> bool {
        self.lease.is_some()
    }

    /// The receipts of one budget's limits.
    pub(crate) fn receipts(&self, budget: usize) -> &[Receipt] {
        &self.receipts[budget]
    }
}
