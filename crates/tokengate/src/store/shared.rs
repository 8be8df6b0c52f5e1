//! An `Arc` of a store is a store: several limiters (or a limiter and the code that reads the
//! store's state) share one.

use std::sync::Arc;
use std::time::Duration;

use crate::cost::Usage;
use crate::store::{
    Answer, Ask, BudgetSnapshot, Place, Reservation, Store, StoreBudget, StoreFuture,
};

impl<S: Store + ?Sized> Store for Arc<S> {
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer> {
        (**self).acquire(ask)
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()> {
        (**self).settle(reservation, used)
    }

    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        (**self).renew(reservation)
    }

    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration> {
        (**self).pause(budget, pause, replace)
    }

    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot> {
        (**self).snapshot(budget)
    }

    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()> {
        (**self).reset(budget)
    }

    fn leave<'a>(&'a self, budget: &'a StoreBudget, place: Place) -> StoreFuture<'a, ()> {
        (**self).leave(budget, place)
    }

    fn lower<'a>(
        &'a self,
        budget: &'a StoreBudget,
        limit: usize,
        counted: u64,
    ) -> StoreFuture<'a, u64> {
        (**self).lower(budget, limit, counted)
    }

    fn release_mark(&self, budget: &StoreBudget) -> u64 {
        (**self).release_mark(budget)
    }

    fn released<'a>(&'a self, budget: &'a StoreBudget, mark: u64) -> StoreFuture<'a, ()> {
        (**self).released(budget, mark)
    }

    fn any_runtime(&self) -> bool {
        (**self).any_runtime()
    }
}
