//! A store's reservation held by a [`Permit`](crate::Permit): settled when the permit is,
//! given back when it is dropped, its in-flight lease renewed while it lives; and the guard
//! that cancels a reservation whose acquisition is dropped before its instant; and the guard
//! that gives back the places in line of an acquisition that will not ask again.
//!
//! Each store call runs in a task spawned on the runtime the permit was acquired on (its
//! [`Handle`]), or, for a store whose calls may run on any ([`Store::any_runtime`]: Redis),
//! on one that is always driven (the process's own in place of a current-thread runtime,
//! which may be left idle between calls): a permit settles from synchronous code, and may be
//! dropped anywhere. Should that runtime shut down first (one made for a call, and dropped
//! with the permit alive), its calls go from the process's own runtime instead: its slots are
//! freed when it ends, not when the lease runs out. (The renewals: [`renewal`].)

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::counters::Counters;
use super::renewal::{self, Renewing};
use crate::cost::Usage;
use crate::store::background::spawn_kept;
use crate::store::{Place, Reservation, Store, StoreBudget};

/// What a permit of a store-backed limiter holds.
#[derive(Debug)]
pub(crate) enum Held {
    /// A reservation on the store.
    Reserved(Reserved),
    /// Nothing: admitted without limits (no budget to charge, or the store failed open).
    Unlimited,
}

impl Held {
    /// Ends it: settled with `used`, or (`None`) given back with its reservation counted.
    pub(crate) fn end(self, used: Option<Usage>) {
        if let Held::Reserved(reserved) = self {
            reserved.end(used);
        }
    }
}

/// A reservation, the store that holds it, and where its calls run.
pub(crate) struct Reserved {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    reservation: Arc<Reservation>,
    handle: Handle,
    renewal: Option<Renewing>,
}

impl std::fmt::Debug for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reserved")
            .field("reservation", &self.reservation)
            .field("renewed", &self.renewal.is_some())
            .finish_non_exhaustive()
    }
}

impl Reserved {
    fn end(mut self, used: Option<Usage>) {
        // (its renewals end with it)
        drop(self.renewal.take());
        // Given back with its reservation counted and no slot to free: the store has nothing
        // to change, and is not called.
        if used.is_none() && !self.reservation.holds_slots() {
            return;
        }
        let Reserved {
            store,
            counters,
            reservation,
            handle,
            ..
        } = self;
        counters.call();
        spawn_kept(&handle, async move {
            if let Err(error) = store.settle(&reservation, used.as_ref()).await {
                counters.failed("settle", &error, None);
            }
        });
    }
}

/// A reservation not yet taken up: dropped before [`hold`](Self::hold) (its acquisition was
/// cancelled while it slept towards its instant), it cancels the reservation on the store.
pub(super) struct Pending {
    reserved: Option<Reserved>,
}

impl Pending {
    pub(super) fn new(
        store: Arc<dyn Store>,
        counters: Arc<Counters>,
        reservation: Reservation,
        handle: Handle,
    ) -> Self {
        Self {
            reserved: Some(Reserved {
                store,
                counters,
                reservation: Arc::new(reservation),
                handle,
                renewal: None,
            }),
        }
    }

    /// The reservation, taken up by a permit: its lease (if it holds in-flight slots) renewed
    /// every `renew_every` from now until the permit ends.
    pub(super) fn hold(mut self, renew_every: Duration) -> Held {
        let Some(mut reserved) = self.reserved.take() else {
            return Held::Unlimited;
        };
        if reserved.reservation.holds_slots() {
            reserved.renewal = Some(renewal::start(
                Arc::clone(&reserved.store),
                Arc::clone(&reserved.counters),
                Arc::clone(&reserved.reservation),
                renew_every,
                &reserved.handle,
            ));
        }
        Held::Reserved(reserved)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(reserved) = self.reserved.take() {
            let nothing = Usage::nothing_of(reserved.reservation.reserved());
            reserved.end(Some(nothing));
        }
    }
}

/// The places in line an acquisition holds ([`Refusal::Ahead`](crate::store::Refusal::Ahead))
/// while it sleeps towards asking again: dropped before [`keep`](Self::keep) (the
/// acquisition was cancelled, or ends without a reservation), it gives them back, the latest
/// first.
pub(super) struct Places {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    handle: Handle,
    /// Each place, with its budget and that budget's index among the acquisition's.
    held: Vec<(usize, StoreBudget, Place)>,
}

impl Places {
    pub(super) fn new(store: Arc<dyn Store>, counters: Arc<Counters>, handle: Handle) -> Self {
        Self {
            store,
            counters,
            handle,
            held: Vec::new(),
        }
    }

    /// One more place, on `budget`, the `index`th of the acquisition's. (A place that moved
    /// no line, given to a request asking again with its place, adds nothing to the one it
    /// has there.)
    pub(super) fn add(&mut self, index: usize, budget: StoreBudget, place: Place) {
        let known = self.held.iter().any(|(i, ..)| *i == index);
        if place.moved_line() || !known {
            self.held.push((index, budget, place));
        }
    }

    /// The places, by budget index, for [`Ask::placed`](crate::store::Ask::placed).
    pub(super) fn list(&self) -> Vec<(usize, Place)> {
        self.held.iter().map(|&(i, _, p)| (i, p)).collect()
    }

    /// The acquisition was reserved: its places were used.
    pub(super) fn keep(mut self) {
        self.held.clear();
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let (store, counters) = (Arc::clone(&self.store), Arc::clone(&self.counters));
        spawn_kept(&self.handle, async move {
            for (_, budget, place) in held.iter().rev() {
                counters.call();
                if let Err(error) = store.leave(budget, *place).await {
                    counters.failed("leave", &error, None);
                }
            }
        });
    }
}
