//! The renewals of a permit's in-flight lease, every third of the lease while it lives, on the
//! runtime its calls run on (the one it was acquired on, or one always driven: see
//! [`held`](super::held)); and what keeps them going when that runtime stops driving them:
//! - it shuts down (a runtime made for one call, dropped with the permit alive): the renewals
//!   are handed over to the process's own runtime;
//! - it is a current-thread runtime, which runs its tasks only while something blocks on it:
//!   left idle through a long call, it renews nothing. A watchdog on the process's own runtime
//!   renews whenever the renewals there fall silent for an interval and a quarter (real
//!   time), and stays quiet while they keep up (a runtime driven, or its clock paused by a
//!   test: its renewals then come faster than real time).
//!
//! Either way the slots stay held while the permit lives, rather than come back when the
//! lease runs out while its call still runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::AbortHandle;

use super::counters::Counters;
use crate::store::background::{self, HANDED_OVER_AFTER};
use crate::store::{Reservation, Store};

/// The shortest time between two renewals of a lease (a lease of zero must not spin).
const MIN_RENEWAL: Duration = Duration::from_millis(1);

/// Starts renewing `reservation`'s lease every `every`, on `handle`'s runtime, until the
/// returned [`Renewing`] is dropped.
pub(super) fn start(
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    reservation: Arc<Reservation>,
    every: Duration,
    handle: &Handle,
) -> Renewing {
    let every = every.max(MIN_RENEWAL);
    let renewals = Arc::new(Renewals::default());
    renewals.heard();
    // A current-thread runtime other than the process's own (which its thread always drives)
    // may stop being driven: watched from the process's own.
    let watchdog = (handle.runtime_flavor() == RuntimeFlavor::CurrentThread)
        .then(background::runtime)
        .flatten()
        .filter(|own| own.id() != handle.id());
    let here = Renewal {
        store,
        counters,
        reservation,
        every,
        renewals: Arc::clone(&renewals),
        runs: if watchdog.is_some() {
            Runs::Watched
        } else {
            Runs::Here
        },
    };
    if let Some(own) = watchdog {
        renewals.running(own.spawn(here.again(Runs::Watchdog).run()).abort_handle());
    }
    renewals.running(handle.spawn(here.run()).abort_handle());
    Renewing(renewals)
}

/// Where a renewal loop runs, and what it does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runs {
    /// On the permit's runtime, handed over should that runtime drop it.
    Here,
    /// On the permit's runtime, which a watchdog watches.
    Watched,
    /// On the process's own runtime, handed over: renews once the runtime it came from is gone
    /// ([`HANDED_OVER_AFTER`]), then every `every`.
    HandedOver,
    /// On the process's own runtime: renews when the watched loop falls silent.
    Watchdog,
}

/// One renewal loop of a permit.
struct Renewal {
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    reservation: Arc<Reservation>,
    every: Duration,
    renewals: Arc<Renewals>,
    runs: Runs,
}

impl Renewal {
    /// Another loop of the same permit's renewals, running as `runs`.
    fn again(&self, runs: Runs) -> Renewal {
        Renewal {
            store: Arc::clone(&self.store),
            counters: Arc::clone(&self.counters),
            reservation: Arc::clone(&self.reservation),
            every: self.every,
            renewals: Arc::clone(&self.renewals),
            runs,
        }
    }

    async fn run(self) {
        match self.runs {
            Runs::Here | Runs::Watched => loop {
                tokio::time::sleep(self.every).await;
                self.renewals.heard();
                self.renew().await;
                self.renewals.heard();
            },
            Runs::HandedOver => {
                tokio::time::sleep(HANDED_OVER_AFTER).await;
                loop {
                    self.renew().await;
                    tokio::time::sleep(self.every).await;
                }
            }
            Runs::Watchdog => loop {
                tokio::time::sleep(self.every / 4).await;
                // Silent: no renewal begun or ended there for an interval and a quarter (its
                // timer may be late; a renewal under way for that long has stalled, or its
                // runtime stopped driving it: its lease runs from the renewal before, and
                // lapses an interval and three quarters later).
                // (a failed renewal is tried again at the next look)
                if self.renewals.quiet() >= self.every + self.every / 4 && self.renew().await {
                    self.renewals.heard();
                }
            },
        }
    }

    /// Whether the store renewed it.
    async fn renew(&self) -> bool {
        self.counters.call();
        match self.store.renew(&self.reservation).await {
            Ok(()) => true,
            Err(error) => {
                self.counters.failed("renew", &error, None);
                false
            }
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        if self.runs != Runs::Here || self.renewals.ended.load(Ordering::Acquire) {
            return;
        }
        // Dropped while its permit lives: its runtime shut down.
        let Some(own) = background::runtime() else {
            return;
        };
        let again = self.again(Runs::HandedOver);
        self.renewals.running(own.spawn(again.run()).abort_handle());
    }
}

/// What a permit's renewal loops share with it.
#[derive(Default)]
struct Renewals {
    /// Set when the permit ends.
    ended: AtomicBool,
    /// When the loop on the permit's runtime last began or ended a renewal (or the permit
    /// was admitted), or the watchdog last renewed, in real time: nanoseconds since [`base`].
    heard: AtomicU64,
    /// The loops' tasks, ended with the permit.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The instant real times here count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn since_base() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Renewals {
    fn heard(&self) {
        self.heard.store(since_base(), Ordering::Release);
    }

    /// Real time since [`heard`](Self::heard) last.
    fn quiet(&self) -> Duration {
        Duration::from_nanos(since_base().saturating_sub(self.heard.load(Ordering::Acquire)))
    }

    /// `task` renews: ended at once should the permit have ended meanwhile.
    fn running(&self, task: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // (`ended` is set before the lock is taken to end the tasks: seen here, or the task
        // is among those ended)
        if self.ended.load(Ordering::Acquire) {
            task.abort();
        } else {
            tasks.push(task);
        }
    }
}

/// The renewals of a permit that lives: ended when it is dropped (the permit ended).
pub(super) struct Renewing(Arc<Renewals>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut *self.0.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}
