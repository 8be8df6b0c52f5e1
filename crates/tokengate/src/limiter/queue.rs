//! The FIFO queue of waiting acquisitions, and the grants handed to them.
//!
//! A queued entry carries its cost, so whoever changes the limiter's state (an admission, a
//! settlement, a dropped permit, the head's timer) can admit the head *on its behalf* and wake
//! it once, with its permit ready. Entries hold only what the engine needs; the waiting future
//! keeps nothing but its id.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::Duration;

use super::Admission;
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) waker: Option<Waker>,
    pub(crate) cost: Cost,
    /// When the acquisition started, for wait-time stats.
    pub(crate) started: Nanos,
    /// When it gives up; `NO_DEADLINE` for never (kept in one word: entries stay small).
    deadline: Nanos,
}

/// The deadline of an acquisition without a timeout (or one beyond 584 years).
const NO_DEADLINE: Nanos = u64::MAX;

impl Entry {
    /// When it gives up, if it has a timeout.
    pub(crate) fn deadline(&self) -> Option<Nanos> {
        (self.deadline != NO_DEADLINE).then_some(self.deadline)
    }

    /// The timeout it was given, for error messages.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.deadline.saturating_sub(self.started))
    }
}

/// `started + timeout`, saturating.
pub(crate) fn deadline(started: Nanos, timeout: Duration) -> Nanos {
    started.saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX))
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
    pub(crate) admission: Admission,
}

/// Waiters in arrival order (ids increase, so an entry is found by binary search), and the
/// grants not yet picked up.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    entries: VecDeque<Entry>,
    grants: Vec<Grant>,
    next_id: u64,
}

impl WaitQueue {
    /// Waiters not yet admitted.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a waiter and returns its id.
    pub(crate) fn push(
        &mut self,
        waker: &Waker,
        cost: Cost,
        started: Nanos,
        timeout: Option<Duration>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            waker: Some(waker.clone()),
            cost,
            started,
            deadline: timeout.map_or(NO_DEADLINE, |t| deadline(started, t)),
        });
        id
    }

    pub(crate) fn head(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub(crate) fn pop_head(&mut self) -> Option<Entry> {
        self.entries.pop_front()
    }

    /// Where `id` stands: the number of waiters ahead of it.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    /// Stores the waker to use for `id`; returns whether `id` is queued.
    pub(crate) fn set_waker(&mut self, id: u64, waker: &Waker) -> bool {
        let Some(i) = self.position(id) else {
            return false;
        };
        let slot = &mut self.entries[i].waker;
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        true
    }

    /// Removes a queued waiter; returns its entry and whether it was the head.
    pub(crate) fn remove(&mut self, id: u64) -> Option<(Entry, bool)> {
        let i = self.position(id)?;
        self.entries.remove(i).map(|e| (e, i == 0))
    }

    /// Wakes the head waiter, if any, so it tries again.
    pub(crate) fn wake_head(&mut self) {
        if let Some(w) = self.entries.front_mut().and_then(|e| e.waker.take()) {
            w.wake();
        }
    }

    pub(crate) fn grant(&mut self, id: u64, outcome: Result<Granted, AcquireError>) {
        self.grants.push(Grant { id, outcome });
    }

    /// Takes the grant made to `id`, if any.
    pub(crate) fn take_grant(&mut self, id: u64) -> Option<Result<Granted, AcquireError>> {
        let i = self.grants.iter().position(|g| g.id == id)?;
        Some(self.grants.swap_remove(i).outcome)
    }
}
