//! A store wrapped for fault tests: every call passes through to the store inside, and the
//! wrapper keeps what a test asserts on.
//!
//! - Every reservation the store answered, at its instant on the store's clock
//!   ([`Reservation::admitted_at`]) with its cost: the admissions to check each limit's window
//!   on, exactly.
//! - The calls in flight now, the most ever in flight at once, and the slowest call: a store
//!   whose calls pile up or hang shows here.
//! - Optionally, renewals made slow ([`Logged::slow_renewals`]): a renewal under way for a
//!   while, as on a distant store.
//! - Per task, what the last acquisition asked of the store led to ([`LAST_ASK`], a tokio
//!   task-local the wrapper sets when the task has one in scope): so a task that got a permit
//!   from a store-backed `Limiter` knows whether the store admitted it or the limiter fell back
//!   (`OnStoreError`) after the store failed.
#![allow(unreachable_pub)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokengate::store::{
    Answer, Ask, BudgetSnapshot, Place, Reservation, Store, StoreBudget, StoreError, StoreFuture,
};
use tokengate::{Cost, Usage};

/// What an acquisition's last ask of the store led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Reserved, at this instant on the store's clock.
    Reserved(Duration),
    /// Refused (a wait too long, a full in-flight cap).
    Refused,
    /// The store failed (a timeout, a lost connection, a server error).
    Failed,
}

tokio::task_local! {
    /// Set by [`Logged`] on each acquisition made within its scope.
    pub static LAST_ASK: Cell<Option<Asked>>;
}

/// The last ask made from this task since the last call, taken (`None` when no store was
/// asked, or outside a [`LAST_ASK`] scope).
pub fn take_last_ask() -> Option<Asked> {
    LAST_ASK.try_with(Cell::take).ok().flatten()
}

/// A reservation the store answered.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Its instant on the store's clock ([`Reservation::admitted_at`]).
    pub at: Duration,
    /// When its answer came back.
    pub answered: Instant,
    /// What it reserved.
    pub cost: Cost,
}

/// A store whose calls are logged and counted.
#[derive(Debug)]
pub struct Logged<S> {
    inner: S,
    admitted: Mutex<Vec<Admitted>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    calls: AtomicU64,
    failures: AtomicU64,
    slowest_ns: AtomicU64,
    /// How long each renewal waits (on the caller's runtime) before it goes to the store.
    renew_delay: Duration,
}

impl<S: Store> Logged<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            admitted: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slowest_ns: AtomicU64::new(0),
            renew_delay: Duration::ZERO,
        }
    }

    /// Each renewal waits `delay`, on the tokio runtime that makes it, before it goes to the
    /// store inside (counted in flight meanwhile).
    pub fn slow_renewals(mut self, delay: Duration) -> Self {
        self.renew_delay = delay;
        self
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Every reservation answered so far, in the order the answers came.
    pub fn admitted(&self) -> Vec<Admitted> {
        self.admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The most calls ever in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// Calls made (all kinds).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that failed (all kinds).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// The longest any call took, answered or failed (a call dropped before its end is not
    /// counted).
    pub fn slowest(&self) -> Duration {
        Duration::from_nanos(self.slowest_ns.load(Ordering::SeqCst))
    }

    /// Runs `call`, counted.
    async fn counted<T>(&self, call: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let _guard = InFlight::enter(self);
        let started = Instant::now();
        let result = call.await;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.slowest_ns.fetch_max(took, Ordering::SeqCst);
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn record(&self, result: &Result<Answer, StoreError>) {
        let asked = match result {
            Ok(Answer::Reserved(r)) => {
                let at = r
                    .admitted_at()
                    .expect("every budget of these tests has a limit");
                self.admitted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Admitted {
                        at,
                        answered: Instant::now(),
                        cost: r.reserved().clone(),
                    });
                Asked::Reserved(at)
            }
            Ok(Answer::Refused(_)) => Asked::Refused,
            Err(_) => Asked::Failed,
        };
        let _ = LAST_ASK.try_with(|last| last.set(Some(asked)));
    }
}

/// One call in flight, counted until it ends or is dropped.
struct InFlight<'a> {
    gauge: &'a AtomicUsize,
}

impl<'a> InFlight<'a> {
    fn enter<S>(store: &'a Logged<S>) -> Self {
        store.calls.fetch_add(1, Ordering::SeqCst);
        let now = store.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        store.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            gauge: &store.in_flight,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S: Store> Store for Logged<S> {
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer> {
        Box::pin(async move {
            let result = self.counted(self.inner.acquire(ask)).await;
            self.record(&result);
            result
        })
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.counted(self.inner.settle(reservation, used)))
    }

    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        let delay = self.renew_delay;
        Box::pin(self.counted(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.inner.renew(reservation).await
        })))
    }

    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration> {
        Box::pin(self.counted(self.inner.pause(budget, pause, replace)))
    }

    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot> {
        Box::pin(self.counted(self.inner.snapshot(budget)))
    }

    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.counted(self.inner.reset(budget)))
    }

    fn leave<'a>(&'a self, budget: &'a StoreBudget, place: Place) -> StoreFuture<'a, ()> {
        Box::pin(self.counted(self.inner.leave(budget, place)))
    }

    fn lower<'a>(
        &'a self,
        budget: &'a StoreBudget,
        limit: usize,
        counted: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.counted(self.inner.lower(budget, limit, counted)))
    }

    // Not store calls: a mark read locally, a wait for the subscription (not counted).
    fn release_mark(&self, budget: &StoreBudget) -> u64 {
        self.inner.release_mark(budget)
    }

    fn released<'a>(&'a self, budget: &'a StoreBudget, mark: u64) -> StoreFuture<'a, ()> {
        self.inner.released(budget, mark)
    }

    fn any_runtime(&self) -> bool {
        self.inner.any_runtime()
    }
}
