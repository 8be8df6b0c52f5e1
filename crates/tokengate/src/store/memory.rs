//! The in-process store: the core's whole-request rules over a map of budgets, under one lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{
    Answer, Ask, BudgetSnapshot, Place, Refusal, Reservation, Store, StoreBudget, StoreError,
    StoreFuture,
};
use crate::clock::{Clock, SystemClock};
use crate::core::{
    commit_budget, decide_request, settle_budget, BudgetDecision, BudgetView, LimitState, Nanos,
};
use crate::cost::Usage;
use crate::policy::Policy;

/// How many times a reservation looks for an instant at which every budget admits it (a
/// pause's end, then a limit's, then another's...) before it answers with the wait.
pub(crate) const SEARCH_STEPS: usize = 16;

/// The lease of an in-flight slot a store gives when none is set: a request holds its slot
/// this long unless it renews it.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The budgets held, by name, and the latest instant they were used at (see `lock_now`).
#[derive(Debug, Default)]
struct Budgets {
    map: HashMap<Arc<str>, Kept>,
    latest: Nanos,
}

impl std::ops::Deref for Budgets {
    type Target = HashMap<Arc<str>, Kept>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Budgets {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// One budget's state.
#[derive(Debug)]
struct Kept {
    policy: Arc<Policy>,
    limits: Vec<LimitState>,
    /// In-flight slots: lease id and expiry.
    leases: Vec<(u64, Nanos)>,
    paused_until: Nanos,
    /// The latest reservation's instant: nothing is admitted before it.
    floor: Nanos,
    /// The end of the line of requests told to ask again ([`Refusal::Ahead`]): a request
    /// without a place is admitted no earlier.
    line: Nanos,
    /// The limit that held back the latest place taken with a limit holding it (its room
    /// in line is that limit's), if any.
    line_limit: Option<usize>,
    /// When it was made: a receipt admitted before belongs to an earlier state of the
    /// budget, forgotten since, and refunds nothing here.
    born: Nanos,
}

impl Kept {
    fn new(policy: &Arc<Policy>, born: Nanos) -> Self {
        Self {
            born,
            policy: Arc::clone(policy),
            limits: policy.new_states(),
            leases: Vec::new(),
            paused_until: 0,
            floor: 0,
            line: 0,
            line_limit: None,
        }
    }

    fn view(&self) -> BudgetView<'_> {
        BudgetView {
            policy: &self.policy,
            limits: &self.limits,
            in_flight: self.leases.len() as u64,
            paused_until: self.paused_until,
        }
    }

    fn expire_leases(&mut self, now: Nanos) {
        self.leases.retain(|&(_, expiry)| expiry > now);
    }

    /// Whether forgetting it changes no future decision.
    fn is_fresh(&self, now: Nanos) -> bool {
        self.leases.is_empty()
            && self.paused_until <= now
            && self.floor <= now
            && self.line <= now
            && self.policy.is_fresh(&self.limits, now)
    }
}

/// The store that keeps every budget in this process: [`Store`]'s rules over a map, under one
/// lock. What the Redis store is tested against, and a store for a single process that wants
/// [`Store`]'s reservations.
///
/// # Examples
/// ```
/// use tokengate::store::{Ask, MemoryStore, Store, StoreBudget};
/// use tokengate::{Cost, Policy};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let budgets = [StoreBudget::new("account", Policy::builder().requests_per_minute(600).build()?)];
/// let reservation = store.acquire(Ask::new(&budgets, &Cost::request())).await?.reserved().unwrap();
/// store.settle(&reservation, None).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore<C: Clock = SystemClock> {
    clock: C,
    lease: Duration,
    budgets: Mutex<Budgets>,
    next_lease: AtomicU64,
    /// Slots freed by settlements, for the callers waiting for one.
    #[cfg(feature = "tokio")]
    freed: super::freed::Freed,
}

impl<C: Clock> std::fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("lease", &self.lease)
            .field("budgets", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore<SystemClock> {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }
}

impl Default for MemoryStore<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryStore<C> {
    /// An empty store on `clock` (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            lease: DEFAULT_LEASE,
            budgets: Mutex::new(Budgets::default()),
            next_lease: AtomicU64::new(1),
            #[cfg(feature = "tokio")]
            freed: super::freed::Freed::default(),
        }
    }

    /// How long an in-flight slot is held without a renewal (60 s unless set).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Budgets> {
        // Every change is made whole before the guard drops: a panic elsewhere leaves no
        // half-written state behind.
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, and the instant to use the budgets at: the clock's, read under the lock, or
    /// the latest instant they were used at when that is later (a clock that steps back a
    /// little). So time under the lock never runs backwards: nothing is decided, refunded or
    /// made afresh at an instant before one already used (a budget forgotten as idle at one
    /// instant, made again at an earlier one, would admit what the forgotten one held).
    fn lock_now(&self) -> (MutexGuard<'_, Budgets>, Nanos) {
        let mut map = self.lock();
        let now = self.clock.now().max(map.latest);
        map.latest = now;
        (map, now)
    }

    fn lease_nanos(&self) -> Nanos {
        u64::try_from(self.lease.as_nanos()).unwrap_or(Nanos::MAX)
    }

    fn decide_now(&self, ask: Ask<'_>) -> Result<Answer, StoreError> {
        let (budgets, cost) = (ask.budgets(), ask.cost());
        for b in budgets {
            b.policy().check_possible(cost)?;
        }
        let max_wait = u64::try_from(ask.wait_limit().as_nanos()).unwrap_or(Nanos::MAX);
        let horizon = u64::try_from(ask.horizon_limit().as_nanos()).unwrap_or(Nanos::MAX);
        let (mut map, now) = self.lock_now();
        for b in budgets {
            kept_as_given(&mut map, b, now)?.expire_leases(now);
        }
        let kept: Vec<&Kept> = budgets.iter().map(|b| &map[&b.name]).collect();
        // First come, first served: nothing before the latest reservation of any budget, nor,
        // without a place in line, before the line's end.
        let (mut at, mut floor_of) = (now, 0);
        for (i, k) in kept.iter().enumerate() {
            let floor = if ask.place_on(i).is_some() {
                k.floor
            } else {
                k.floor.max(k.line)
            };
            if floor > at {
                (at, floor_of) = (floor, i);
            }
        }
        // What holds the request back: a budget, and its limit when one does.
        let mut held_by = (floor_of, None);
        let mut refusal = None;
        for _ in 0..SEARCH_STEPS {
            let decision = decide_request(kept.iter().map(|k| k.view()), at, cost)?;
            let (until, refused) = match decision.decision {
                BudgetDecision::Admit => {
                    refusal = None;
                    break;
                }
                BudgetDecision::Wait { until, limit } => (
                    until,
                    Refusal::Wait {
                        wait: BudgetDecision::wait_for(now, until),
                        budget: decision.budget,
                        limit,
                    },
                ),
                BudgetDecision::Paused { until } => (
                    until,
                    Refusal::Paused {
                        wait: BudgetDecision::wait_for(now, until),
                        budget: decision.budget,
                    },
                ),
                BudgetDecision::InFlightFull => {
                    return Ok(Answer::Refused(Refusal::InFlightFull {
                        budget: decision.budget,
                    }))
                }
            };
            held_by = match refused {
                Refusal::Wait { budget, limit, .. } => (budget, Some(limit)),
                other => (other.budget(), None),
            };
            refusal = Some(refused);
            if until == Nanos::MAX || until - now > max_wait {
                break;
            }
            at = until;
        }
        if let Some(refused) = refusal {
            return Ok(Answer::Refused(refused));
        }
        if at - now > max_wait {
            return Ok(Answer::Refused(Refusal::Queued {
                wait: Duration::from_nanos(at - now),
                budget: floor_of,
            }));
        }
        drop(kept);
        if at - now > horizon {
            // A place in line on the budget that holds it back (see `Policy::room_in_line`).
            let (budget, limit) = held_by;
            let b = &budgets[budget];
            let kept = map.get_mut(&b.name).expect("inserted above");
            let room = b.policy().room_in_line(limit, kept.line_limit, cost);
            if limit.is_some() {
                kept.line_limit = limit;
            }
            // A line already passed is no line: whether a fresh budget was kept or forgotten
            // (and made again) says nothing.
            let from = if kept.line > now { kept.line } else { 0 };
            kept.line = kept.line.max(at.saturating_add(room));
            return Ok(Answer::Refused(Refusal::Ahead {
                wait: Duration::from_nanos(at - now),
                budget,
                place: Place {
                    from,
                    to: kept.line,
                    epoch: 0,
                },
            }));
        }
        let takes_slot =
            budgets.iter().any(|b| b.policy().max_in_flight.is_some()) && !cost.is_zero();
        let lease = takes_slot.then(|| self.next_lease.fetch_add(1, Ordering::Relaxed));
        let expiry = at.saturating_add(self.lease_nanos());
        let mut receipts = Vec::with_capacity(budgets.len());
        for (i, b) in budgets.iter().enumerate() {
            let kept = map.get_mut(&b.name).expect("inserted above");
            let mut mine = Vec::with_capacity(kept.limits.len());
            let mut in_flight = 0;
            let slot = commit_budget(
                &kept.policy,
                &mut kept.limits,
                &mut in_flight,
                at,
                cost,
                |r| mine.push(r),
            );
            if let (true, Some(id)) = (slot, lease) {
                kept.leases.push((id, expiry));
            }
            kept.floor = at;
            // Out of line: its place, still the last, is given back.
            if let Some(place) = ask.place_on(i) {
                if place.epoch == 0 && kept.line == place.to {
                    kept.line = place.from;
                }
            }
            receipts.push(mine);
        }
        Ok(Answer::Reserved(Reservation {
            budgets: budgets.to_vec(),
            reserved: cost.clone(),
            wait: Duration::from_nanos(at - now),
            receipts,
            epoch: 0,
            lease: lease.map(|id| id.to_string()),
        }))
    }

    fn lower_now(&self, b: &StoreBudget, limit: usize, counted: u64) -> Result<u64, StoreError> {
        let (mut map, now) = self.lock_now();
        let kept = kept_as_given(&mut map, b, now)?;
        let Some(rule) = kept.policy.limits.get(limit).map(|l| &l.rule) else {
            return Ok(0);
        };
        let excess = counted.saturating_sub(rule.snapshot(&kept.limits[limit], now).used);
        if excess > 0 {
            rule.lower(&mut kept.limits[limit], now, excess);
        }
        Ok(excess)
    }

    fn settle_now(&self, reservation: &Reservation, used: Option<&Usage>) {
        let used = used.map(|u| u.as_cost(&reservation.reserved));
        let lease = lease_id(reservation);
        let (mut map, now) = self.lock_now();
        for (i, b) in reservation.budgets.iter().enumerate() {
            // A budget forgotten since (fresh again) is made afresh: a usage above the
            // reservation is still charged.
            let kept = map
                .entry(Arc::clone(&b.name))
                .or_insert_with(|| Kept::new(&b.policy, now));
            // Settled no earlier than the budget's latest reservation: a refund at `now` would
            // give back what that one, committed ahead of now, already counted as taken.
            let at = now.max(kept.floor);
            if let Some(used) = &used {
                let receipts = reservation.receipts(i);
                // A budget whose limits changed since (a reset and another policy), or made
                // again since, keeps what it counted and is charged any use beyond the
                // reservation.
                let stale = !kept.policy.same_as(&b.policy)
                    || receipts.first().is_some_and(|r| r.admitted_at < kept.born);
                // Under the limits its state follows (the same but after a reset).
                let policy = Arc::clone(&kept.policy);
                settle_budget(
                    &policy,
                    &mut kept.limits,
                    at,
                    &reservation.reserved,
                    used,
                    |l| receipts[l],
                    |_| stale,
                );
            }
            if let Some(id) = lease {
                let held = kept.leases.len();
                kept.leases.retain(|&(l, _)| l != id);
                // A slot freed: one waiter for one asks again.
                #[cfg(feature = "tokio")]
                if kept.leases.len() < held {
                    self.freed.free(&b.name);
                }
                #[cfg(not(feature = "tokio"))]
                let _ = held;
            }
            kept.expire_leases(now);
            if kept.is_fresh(now) {
                map.remove(&b.name);
            }
        }
    }
}

/// The lease id a [`MemoryStore`] gave, if any.
fn lease_id(reservation: &Reservation) -> Option<u64> {
    reservation.lease.as_deref().and_then(|l| l.parse().ok())
}

/// Budget `b`'s state (made now if there is none), when it follows `b`'s policy.
fn kept_as_given<'m>(
    map: &'m mut HashMap<Arc<str>, Kept>,
    b: &StoreBudget,
    now: Nanos,
) -> Result<&'m mut Kept, StoreError> {
    let kept = map
        .entry(Arc::clone(&b.name))
        .or_insert_with(|| Kept::new(&b.policy, now));
    if !kept.policy.same_as(&b.policy) {
        return Err(mismatch(b, &kept.policy));
    }
    Ok(kept)
}

/// The error for a budget kept under `stored` and asked under another policy.
fn mismatch(budget: &StoreBudget, stored: &Policy) -> StoreError {
    StoreError::Mismatch {
        budget: budget.name().to_owned(),
        stored: stored.describe(),
        given: budget.policy().describe(),
    }
}

impl<C: Clock> Store for MemoryStore<C> {
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer> {
        Box::pin(std::future::ready(self.decide_now(ask)))
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()> {
        self.settle_now(reservation, used);
        Box::pin(std::future::ready(Ok(())))
    }

    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        if let Some(id) = lease_id(reservation) {
            let (mut map, now) = self.lock_now();
            let expiry = now.saturating_add(self.lease_nanos());
            for b in &reservation.budgets {
                if let Some(kept) = map.get_mut(&b.name) {
                    for lease in kept.leases.iter_mut().filter(|(l, _)| *l == id) {
                        lease.1 = expiry;
                    }
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration> {
        let (mut map, now) = self.lock_now();
        let until = now.saturating_add(u64::try_from(pause.as_nanos()).unwrap_or(Nanos::MAX));
        let kept = map
            .entry(Arc::clone(&budget.name))
            .or_insert_with(|| Kept::new(&budget.policy, now));
        kept.paused_until = if replace {
            until
        } else {
            kept.paused_until.max(until)
        };
        let left = Duration::from_nanos(kept.paused_until.saturating_sub(now));
        Box::pin(std::future::ready(Ok(left)))
    }

    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot> {
        let (map, now) = self.lock_now();
        let fresh;
        let (policy, limits, in_flight, paused_until) = match map.get(&budget.name) {
            Some(k) => {
                let in_flight = k.leases.iter().filter(|&&(_, e)| e > now).count() as u64;
                (&*k.policy, &k.limits, in_flight, k.paused_until)
            }
            None => {
                fresh = budget.policy().new_states();
                (budget.policy(), &fresh, 0, 0)
            }
        };
        let snapshot = BudgetSnapshot::new(policy, limits, now, in_flight, paused_until);
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()> {
        self.lock().remove(budget);
        Box::pin(std::future::ready(Ok(())))
    }

    fn lower<'a>(
        &'a self,
        budget: &'a StoreBudget,
        limit: usize,
        counted: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(self.lower_now(budget, limit, counted)))
    }

    #[cfg(feature = "tokio")]
    fn release_mark(&self, budget: &StoreBudget) -> u64 {
        self.freed.mark(budget.name())
    }

    #[cfg(feature = "tokio")]
    fn released<'a>(&'a self, budget: &'a StoreBudget, mark: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.freed.after(budget.name(), mark).await;
            Ok(())
        })
    }

    fn leave<'a>(&'a self, budget: &'a StoreBudget, place: Place) -> StoreFuture<'a, ()> {
        if let Some(kept) = self.lock().get_mut(budget.name()) {
            if place.epoch == 0 && kept.line == place.to {
                kept.line = place.from;
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
