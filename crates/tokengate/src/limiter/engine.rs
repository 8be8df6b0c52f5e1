//! Everything that changes, behind the limiter's one lock, and the steps over it: decide a
//! route, admit, settle, and serve the queues.
//!
//! # Queues over several budgets
//! A request falls under up to three budgets (its [`Route`]). A waiter sits in the queue of
//! one of them at a time: the budget that holds it back now. Queues are in ticket (arrival)
//! order, and a waiter is admitted only when every budget of its route allows it *and* no
//! waiter that came before it is queued on any of them. So waiters that share a scarce
//! budget are admitted in arrival order, while a waiter held back by one budget (a tenant
//! over its own limit) never holds up the others of a budget it only passes through (the
//! model it asks for). When the head of a queue is held back by another of its budgets, it
//! moves to that budget's queue, in ticket order; the earliest waiter of all is always at the
//! head of its queue, so something always moves.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::task::Waker;

use super::budget::{Budget, Taken, Verdict};
use super::directory::{Directory, Names};
use super::queue::{Entry, Granted, Grants};
use super::route::{Admission, BudgetId, KeyedAdmission, Marks, Route, MAX_ROUTE, ROOT};
use crate::core::{decide_request, BudgetView, Nanos};
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::policy::Policy;
use crate::stats::BudgetCounters;

/// The head of a queue waits for `until`; `armed` says whether the head timer will wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadWait {
    pub(crate) id: u64,
    pub(crate) until: Nanos,
    pub(crate) armed: bool,
}

/// What a route's budgets say together: the verdict of the one that holds the request back
/// longest (`at` is its position in the route), or admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteVerdict {
    pub(crate) verdict: Verdict,
    pub(crate) at: usize,
}

/// Budget ids are handed out in order: hashing them is multiplying.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<BudgetId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) root: Budget,
    pub(crate) budgets: IdMap<Budget>,
    pub(crate) names: Names,
    /// The policies of models, families and tenants, for a limiter built from a config.
    pub(crate) directory: Option<Arc<Directory>>,
    pub(crate) grants: Grants,
    next_ticket: u64,
    /// The latest instant the state was used at (see [`at`](Self::at)).
    latest: Nanos,
    /// Acquisitions queued, in all queues.
    pub(crate) waiting: usize,
    /// Whether limits the provider reports replace the configured ones.
    pub(crate) adopt_reported: bool,
    /// The longest pause a provider's answer (or `pause`) puts in force, in nanoseconds.
    pub(crate) max_pause: Nanos,
    /// Whether the limiter's own policy is a config's `[account]` (it follows reloads).
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) root_from_config: bool,
    /// Where the polling waiter stands after [`serve`](Self::serve), when it heads a queue.
    head_wait: Option<HeadWait>,
    /// The policy whose rules the lane holds, and whether it fits the lane (see
    /// [`StateGuard`](super::StateGuard)).
    pub(crate) lane_policy: Option<Arc<crate::policy::Policy>>,
    pub(crate) lane_fits: bool,
    /// Whether the limiter's state lives in a store (`limiter/remote`): then the lane stays
    /// closed, so every in-memory call reaches the store's check.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) remote: bool,
    /// What an acquisition does when the store fails, and the store's lease.
    #[cfg(feature = "tokio")]
    pub(crate) store: super::remote::StoreSettings,
}

impl State {
    pub(crate) fn new(root: Budget) -> Self {
        Self {
            root,
            budgets: IdMap::default(),
            names: Names::default(),
            directory: None,
            grants: Grants::default(),
            next_ticket: 0,
            latest: 0,
            waiting: 0,
            adopt_reported: false,
            max_pause: super::provider::DEFAULT_MAX_PAUSE_NANOS,
            root_from_config: false,
            head_wait: None,
            lane_policy: None,
            lane_fits: false,
            remote: false,
            #[cfg(feature = "tokio")]
            store: super::remote::StoreSettings::default(),
        }
    }

    /// The instant to use the state at, for a caller that read `now` before it took the lock:
    /// `now`, or the latest instant the state was used at when that is later (the caller
    /// waited for the lock, or was preempted, while others went first; or the clock stepped
    /// back). So time under the lock never runs backwards: every admission is decided on a
    /// state that holds nothing later than itself, and recorded and reported in the order it
    /// was made. Decided at its stale instant instead, against a log that a later admission
    /// had already rid of what left the window by then, a request could be admitted "before"
    /// that one, in a window the limit had filled.
    #[inline]
    pub(crate) fn at(&mut self, now: Nanos) -> Nanos {
        self.latest = self.latest.max(now);
        self.latest
    }

    #[inline]
    pub(crate) fn budget(&self, id: BudgetId) -> Option<&Budget> {
        if id == ROOT {
            Some(&self.root)
        } else {
            self.budgets.get(&id)
        }
    }

    #[inline]
    pub(crate) fn budget_mut(&mut self, id: BudgetId) -> Option<&mut Budget> {
        if id == ROOT {
            Some(&mut self.root)
        } else {
            self.budgets.get_mut(&id)
        }
    }

    /// A snapshot of the limiter's own budget, whose waiters are all the queued acquisitions.
    pub(crate) fn root_stats(&self, now: Nanos) -> crate::stats::Stats {
        let mut stats = self.root.stats(now);
        stats.waiters = self.waiting;
        stats
    }

    /// Applies `f` to the counters of every budget of `route` (the limiter's own counts all).
    #[inline]
    pub(crate) fn count(&mut self, route: &Route, f: impl Fn(&mut BudgetCounters)) {
        for &id in route.ids() {
            if let Some(b) = self.budget_mut(id) {
                f(&mut b.counters);
            }
        }
    }

    /// Takes a reference on every budget of `route` but the limiter's own (which is never
    /// dropped): a permit or a queued acquisition holds one.
    #[inline]
    pub(crate) fn pin(&mut self, route: &Route) {
        for &id in route.keyed() {
            if let Some(b) = self.budgets.get_mut(&id) {
                b.pins += 1;
            }
        }
    }

    #[inline]
    pub(crate) fn unpin(&mut self, route: &Route) {
        for &id in route.keyed() {
            if let Some(b) = self.budgets.get_mut(&id) {
                b.pins = b.pins.saturating_sub(1);
            }
        }
    }

    /// A new ticket: tickets order waiters across every queue.
    pub(crate) fn ticket(&mut self) -> u64 {
        let id = self.next_ticket;
        self.next_ticket += 1;
        id
    }

    /// Waiters queued on the budgets of `route`.
    #[inline]
    pub(crate) fn queued_on(&self, route: &Route) -> usize {
        if route.is_root() {
            return self.root.queue_len();
        }
        route
            .ids()
            .iter()
            .filter_map(|&id| self.budget(id))
            .map(Budget::queue_len)
            .sum()
    }

    /// The first budget of `route` with a queue.
    pub(crate) fn first_queue(&self, route: &Route) -> Option<BudgetId> {
        route
            .ids()
            .iter()
            .copied()
            .find(|&id| self.budget(id).is_some_and(|b| b.queue_len() > 0))
    }

    /// The budget of `route` whose queue holds ticket `id`.
    pub(crate) fn queue_of(&self, route: &Route, id: u64) -> Option<BudgetId> {
        route
            .ids()
            .iter()
            .copied()
            .find(|&b| self.budget(b).is_some_and(|b| b.position(id).is_some()))
    }

    /// Stores the waker of queued ticket `id` (on one of `route`'s budgets); returns the budget
    /// whose queue holds it.
    pub(crate) fn set_waker(&mut self, route: &Route, id: u64, waker: &Waker) -> Option<BudgetId> {
        for &b in route.ids() {
            let Some(budget) = self.budget_mut(b) else {
                continue;
            };
            if let Some(i) = budget.position(id) {
                if let Some(entry) = budget.waiters.as_mut().and_then(|w| w.queue.get_mut(i)) {
                    entry.set_waker(waker);
                }
                return Some(b);
            }
        }
        None
    }

    /// Queues `entry` on budget `b`.
    pub(crate) fn enqueue(&mut self, b: BudgetId, entry: Entry) {
        if let Some(budget) = self.budget_mut(b) {
            budget.enqueue(entry);
            self.waiting += 1;
        }
    }

    /// Takes ticket `id` out of budget `b`'s queue; serves the queue if it was the first.
    pub(crate) fn dequeue(&mut self, b: BudgetId, id: u64, now: Nanos) -> Option<Entry> {
        let (entry, was_head) = self.budget_mut(b)?.dequeue(id)?;
        self.waiting = self.waiting.saturating_sub(1);
        if was_head {
            self.serve(now, b, None);
        }
        Some(entry)
    }

    /// What every budget of `route` says about `cost` at `now`; changes nothing. Every budget
    /// is asked, so a cost that one budget can never admit fails even while another waits.
    #[inline]
    pub(crate) fn verdict(
        &self,
        route: &Route,
        now: Nanos,
        cost: &Cost,
    ) -> Result<RouteVerdict, AcquireError> {
        if route.is_root() {
            return self
                .root
                .verdict(now, cost)
                .map(|verdict| RouteVerdict { verdict, at: 0 });
        }
        self.verdict_route(route, now, cost)
    }

    #[inline(never)]
    fn verdict_route(
        &self,
        route: &Route,
        now: Nanos,
        cost: &Cost,
    ) -> Result<RouteVerdict, AcquireError> {
        // A budget missing from the route (never, once pinned) decides like one with no limit.
        let empty = BudgetView {
            policy: &Policy::EMPTY,
            limits: &[],
            in_flight: 0,
            paused_until: 0,
        };
        let views = route
            .ids()
            .iter()
            .map(|&id| self.budget(id).map_or(empty, Budget::view));
        let decided = decide_request(views, now, cost)?;
        Ok(RouteVerdict {
            verdict: decided.decision,
            at: decided.budget,
        })
    }

    /// Charges `cost` on every budget of `route` (after [`verdict`](Self::verdict) said admit).
    #[inline]
    pub(crate) fn admit(
        &mut self,
        route: Route,
        now: Nanos,
        cost: &Cost,
        waited: Nanos,
    ) -> Admission {
        if route.is_root() {
            return self.admit_root(now, cost, waited);
        }
        self.admit_route(route, now, cost, waited)
    }

    /// [`admit`](Self::admit) on the limiter's own budget alone: the path of a limiter of one
    /// policy, kept short.
    #[inline(always)]
    pub(crate) fn admit_root(&mut self, now: Nanos, cost: &Cost, waited: Nanos) -> Admission {
        let root = &mut self.root;
        let mut marks = Marks::new(root.limits.len());
        let slots = u8::from(root.admit(now, cost, waited, &mut marks, 0));
        Admission {
            slots,
            epoch: root.epoch,
            marks,
            keyed: None,
        }
    }

    #[inline(never)]
    fn admit_route(&mut self, route: Route, now: Nanos, cost: &Cost, waited: Nanos) -> Admission {
        let total: usize = route
            .ids()
            .iter()
            .filter_map(|&id| self.budget(id))
            .map(|b| b.limits.len())
            .sum();
        let mut marks = Marks::new(total);
        let mut slots = 0;
        let mut offset = 0;
        let mut lens = [0; MAX_ROUTE];
        let mut epochs = [0; MAX_ROUTE];
        for (i, &id) in route.ids().iter().enumerate() {
            if let Some(b) = self.budget_mut(id) {
                if b.admit(now, cost, waited, &mut marks, offset) {
                    slots |= 1 << i;
                }
                // A policy has at most a few limits; more than 255 would only lose refunds.
                lens[i] = u8::try_from(b.limits.len()).unwrap_or(u8::MAX);
                epochs[i] = b.epoch;
                offset += b.limits.len();
            }
        }
        self.pin(&route);
        Admission {
            slots,
            epoch: epochs[0],
            marks,
            keyed: Some(Box::new(KeyedAdmission {
                route,
                lens,
                epochs,
            })),
        }
    }

    /// Settles `admission` (of `reserved` at `admitted_at`) with what it `used`.
    pub(crate) fn settle(
        &mut self,
        now: Nanos,
        admission: &Admission,
        reserved: &Cost,
        used: &Cost,
        admitted_at: Nanos,
    ) {
        let mut offset = 0;
        let root_len = self.root.limits.len();
        for (i, &id) in admission.route().ids().iter().enumerate() {
            let (len, epoch) = admission.budget_at(i, root_len);
            if let Some(b) = self.budget_mut(id) {
                let taken = Taken {
                    marks: &admission.marks,
                    offset,
                    epoch,
                };
                b.settle(now, reserved, used, admitted_at, taken);
            }
            offset += len;
        }
    }

    /// Gives back the in-flight slots in `slots` and the references of a permit on `route`
    /// that is done; the queues may move.
    pub(crate) fn release(&mut self, now: Nanos, route: &Route, slots: u8) {
        for (i, &id) in route.ids().iter().enumerate() {
            if slots & (1 << i) != 0 {
                if let Some(b) = self.budget_mut(id) {
                    b.in_flight = b.in_flight.saturating_sub(1);
                }
            }
        }
        self.unpin(route);
        self.serve_route(now, route);
    }

    /// Takes back an admission whose permit was never delivered (its waiter was dropped after
    /// the grant): every limit gets its amounts back, and its slots are freed.
    pub(crate) fn revoke(&mut self, now: Nanos, granted: Granted) {
        let Granted {
            cost,
            admitted_at,
            waited,
            admission,
        } = granted;
        self.settle(now, &admission, &cost, &Cost::zero(), admitted_at);
        let route = admission.route();
        // Neither an admission nor a wait: both counts go back, so that every admission
        // counted has its wait counted, and no other.
        self.count(&route, |c| {
            c.admitted = c.admitted.saturating_sub(1);
            c.waits.unrecord(waited);
        });
        self.release(now, &route, admission.slots);
    }

    /// Serves the queue of every budget of `route` that has one.
    pub(crate) fn serve_route(&mut self, now: Nanos, route: &Route) {
        if self.waiting == 0 {
            return;
        }
        for &id in route.ids() {
            if self.budget(id).is_some_and(|b| b.queue_len() > 0) {
                self.serve(now, id, None);
            }
        }
    }

    /// Serves every queue (after the policies changed).
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn serve_all(&mut self, now: Nanos) {
        if self.waiting == 0 {
            return;
        }
        let queued: Vec<BudgetId> = std::iter::once(ROOT)
            .chain(self.budgets.keys().copied())
            .filter(|&id| self.budget(id).is_some_and(|b| b.queue_len() > 0))
            .collect();
        for id in queued {
            self.serve(now, id, None);
        }
    }

    /// Where `id` stands after the last [`serve`](Self::serve) polled by it, if it heads a
    /// queue and waits for an instant.
    pub(crate) fn take_head_wait(&mut self, id: u64) -> Option<HeadWait> {
        self.head_wait.take().filter(|h| h.id == id)
    }

    /// Admits waiters from the head of budget `b`'s queue, in order, while their budgets
    /// allow, each on its behalf and woken once with its permit ready; a head held back by
    /// another of its budgets moves to that budget's queue (which is served in turn). When a
    /// head must wait for an instant, sets the queue's timer for it; when it waits for an
    /// in-flight slot, stops (a released slot serves the queue again).
    ///
    /// `polling` is the waiter whose own poll runs this: it is not woken for its own grant.
    pub(crate) fn serve(&mut self, now: Nanos, b: BudgetId, polling: Option<u64>) {
        // Budgets whose queues a moved waiter joined: served in turn. Empty (no allocation)
        // unless a waiter moves, which only a request on a key can.
        let mut work = Vec::new();
        let mut next = Some(b);
        // Every step admits, fails or moves a waiter, or ends a queue's turn. A waiter moves
        // only to a queue where a waiter that came before it waits, or to the budget that
        // holds it back longest, which only an admission can change: a few steps per waiter.
        // The bound only guards against a mistake turning into a hang.
        let mut steps = 16 * (self.waiting + 4);
        while let Some(b) = next.take().or_else(|| work.pop()) {
            if steps == 0 {
                // Out of steps (never seen): wake the heads left, each serves its own queue
                // when it runs, so none is left without a wake-up.
                self.wake_head(b);
                continue;
            }
            while steps > 0 {
                steps -= 1;
                if !self.serve_head(now, b, polling, &mut work) {
                    break;
                }
            }
            if steps == 0 {
                self.wake_head(b);
            }
        }
        debug_assert!(steps > 0, "serving the queues did not settle");
    }

    /// Wakes the head of `b`'s queue, so it serves the queue itself.
    fn wake_head(&mut self, b: BudgetId) {
        let head = self
            .budget_mut(b)
            .and_then(|budget| budget.waiters.as_mut())
            .and_then(|w| w.queue.front_mut());
        if let Some(waker) = head.and_then(|e| e.waker.take()) {
            waker.wake();
        }
    }

    /// One step of [`serve`](Self::serve) on `b`'s head; false when `b`'s turn is over.
    fn serve_head(
        &mut self,
        now: Nanos,
        b: BudgetId,
        polling: Option<u64>,
        work: &mut Vec<BudgetId>,
    ) -> bool {
        let Some(budget) = self.budget(b) else {
            return false;
        };
        let Some(head) = budget.head() else {
            if let Some(budget) = self.budget_mut(b) {
                budget.disarm();
            }
            return false;
        };
        let (id, route) = (head.id, head.route);
        // A waiter that came earlier is queued on another of its budgets: go behind it.
        let earlier = route
            .ids()
            .iter()
            .copied()
            .find(|&o| o != b && self.budget(o).is_some_and(|x| x.has_waiter_before(id)));
        if let Some(other) = earlier {
            self.move_head(b, other);
            return true;
        }
        let verdict = self.verdict(&route, now, &head.cost);
        let missed_deadline = match (&verdict, head.deadline()) {
            (Ok(v), _) if v.verdict == Verdict::Admit => false,
            (Ok(v), Some(d)) => v.verdict.misses(now, d),
            (Err(_), Some(d)) => now >= d,
            (_, None) => false,
        };
        if let (Ok(v), false) = (&verdict, missed_deadline) {
            if v.verdict != Verdict::Admit {
                let holder = route.ids()[v.at];
                if holder != b {
                    self.move_head(b, holder);
                    work.push(holder);
                    return true;
                }
                let Some(until) = v.verdict.timer() else {
                    // Waits for an in-flight slot (a released slot serves this queue again),
                    // or for a change of state that no timer can bring.
                    if let Some(w) = self.budget_mut(b).and_then(|b| b.waiters.as_mut()) {
                        w.timer.disarm();
                    }
                    return false;
                };
                self.wait_for(b, id, now, until, polling);
                return false;
            }
        }
        let Some(entry) = self.budget_mut(b).and_then(Budget::pop_head) else {
            return false;
        };
        self.waiting = self.waiting.saturating_sub(1);
        let outcome = match verdict {
            Ok(v) if v.verdict == Verdict::Admit => {
                let waited = now.saturating_sub(entry.started);
                let admission = self.admit(route, now, &entry.cost, waited);
                Ok(Granted {
                    cost: entry.cost,
                    admitted_at: now,
                    waited,
                    admission,
                })
            }
            Ok(v) => {
                self.count(&route, |c| c.timed_out += 1);
                let holder = self.budget(route.ids()[v.at]).unwrap_or(&self.root);
                Err(holder.timeout_error(v.verdict, &entry.cost, now, entry.timeout()))
            }
            Err(e) => {
                self.count(&route, |c| c.rejected += 1);
                Err(e)
            }
        };
        // The queue's reference passes to the permit, or ends with the failure.
        self.unpin(&route);
        self.grants.grant(entry.id, outcome);
        if let Some(w) = entry.waker.filter(|_| polling != Some(entry.id)) {
            w.wake();
        }
        true
    }

    /// The head `id` of `b` waits for `until`: sets `b`'s timer for it, or has it set its own.
    fn wait_for(&mut self, b: BudgetId, id: u64, now: Nanos, until: Nanos, polling: Option<u64>) {
        let Some(w) = self.budget_mut(b).and_then(|b| b.waiters.as_mut()) else {
            return;
        };
        let Some(head) = w.queue.front_mut() else {
            return;
        };
        let owner = head.runtime;
        let armed = match head.waker.clone() {
            Some(waker) => {
                let armed = w.timer.arm(id, owner, now, until, &waker);
                if !armed && polling != Some(id) {
                    // No timer here: wake the head to set its own (not when the head itself
                    // is asking: it waits on its own timer then).
                    if let Some(waker) = w.queue.front_mut().and_then(|e| e.waker.take()) {
                        waker.wake();
                    }
                }
                armed
            }
            None => false, // woken already: it will set the timer when it runs
        };
        if polling == Some(id) {
            self.head_wait = Some(HeadWait { id, until, armed });
        }
    }

    /// Moves the head of `from`'s queue to `to`'s, in ticket order.
    fn move_head(&mut self, from: BudgetId, to: BudgetId) {
        if self.budget(to).is_none() {
            debug_assert!(false, "budget {to} of a queued route is gone");
            return;
        }
        let Some(entry) = self.budget_mut(from).and_then(Budget::pop_head) else {
            return;
        };
        if let Some(budget) = self.budget_mut(to) {
            budget.enqueue(entry);
        }
    }
}
