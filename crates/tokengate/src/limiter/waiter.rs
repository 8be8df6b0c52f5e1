//! One waiting acquisition, independent of how it sleeps.
//!
//! [`Waiting::poll_step`] does everything under the lock. With nobody queued on its budgets
//! and the limits allowing it, it admits at once. Otherwise it joins a queue (the first of its
//! budgets' queues with waiters, else the queue of the budget that holds it back), handing its
//! cost to the queue entry; from then on the engine admits it *on its behalf* as soon as the
//! limits allow (when the waiter ahead is admitted, a settlement refunds, a permit frees a
//! slot, or the head timer fires) and wakes it once, with the permit ready. It answers when the waiter must
//! wake itself: the async front end sleeps on tokio's timer until then, the blocking one parks
//! the thread.
//!
//! Dropping a `Waiting` leaves the queue and lets it move on; if it had been admitted but not
//! yet picked up its permit, the admission is taken back. Nothing is lost or counted twice
//! (but for a budget whose policy a reload or an adopted provider limit changed in between:
//! like any permit of an older policy, its reservation then stays, the safe side).

use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use super::budget::Verdict;
use super::keys::KeyNames;
use super::observe::{self, WaitNote};
use super::queue::{deadline, Entry};
use super::route::Route;
use super::timer::current_runtime;
use super::{Limiter, Permit};
use crate::clock::Clock;
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

/// `timeout_ns` of an acquisition without a timeout (a timeout of 584 years is one less).
const NO_TIMEOUT: u64 = u64::MAX;

/// What one step of a waiting acquisition came to.
#[derive(Debug)]
pub(crate) enum Step<'a, C: Clock> {
    /// Admitted, or failed for good.
    Done(Result<Permit<'a, C>, AcquireError>),
    /// Still waiting: the caller must wake itself at this instant (a deadline, or the head's
    /// admission time when the head timer is not set for it), or else wait to be woken.
    Pending(Option<Nanos>),
}

#[derive(Debug)]
pub(crate) struct Waiting<'a, C: Clock> {
    limiter: &'a Limiter<C>,
    /// The key whose budgets it is charged to (the limiter's own only, for `None`).
    key: Option<Arc<KeyNames>>,
    phase: Phase,
    /// The timeout in nanoseconds, `NO_TIMEOUT` for none (one word: queued futures stay small).
    timeout_ns: u64,
    /// Whether the async front end polls this, so the shared head timer can wake it.
    uses_head_timer: bool,
}

/// Where an acquisition is; the cost moves into the queue entry when it joins the queue.
#[derive(Debug)]
enum Phase {
    New(Cost),
    /// Queued, or admitted on its behalf and not yet picked up.
    Queued {
        id: u64,
        route: Route,
        started: Nanos,
    },
    Finished,
}

impl<'a, C: Clock> Waiting<'a, C> {
    pub(crate) fn new(
        limiter: &'a Limiter<C>,
        key: Option<Arc<KeyNames>>,
        cost: Cost,
        timeout: Option<Duration>,
        uses_head_timer: bool,
    ) -> Self {
        Self {
            limiter,
            key,
            timeout_ns: timeout.map_or(NO_TIMEOUT, |t| {
                u64::try_from(t.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
            }),
            phase: Phase::New(cost),
            uses_head_timer,
        }
    }

    /// The timeout it was given.
    fn timeout(&self) -> Option<Duration> {
        (self.timeout_ns != NO_TIMEOUT).then(|| Duration::from_nanos(self.timeout_ns))
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn clock_now(&self) -> Nanos {
        self.limiter.shared.clock.now()
    }

    /// Tries to admit; see the module docs.
    pub(crate) fn poll_step(&mut self, waker: &Waker) -> Step<'a, C> {
        let now = self.limiter.shared.clock.now();
        match std::mem::replace(&mut self.phase, Phase::Finished) {
            Phase::New(cost) => self.first_step(cost, now, waker),
            Phase::Queued { id, route, started } => {
                self.phase = Phase::Queued { id, route, started };
                self.queued_step(id, route, started, now, waker)
            }
            Phase::Finished => Step::Pending(None), // polled again after completion
        }
    }

    /// Admits at once when nobody is queued on its budgets and the limits allow it;
    /// otherwise joins a queue (or fails at once when the wait is known to outlast the
    /// timeout).
    fn first_step(&mut self, cost: Cost, now: Nanos, waker: &Waker) -> Step<'a, C> {
        let limiter = self.limiter;
        let started = now;
        let deadline = self.timeout().map(|t| deadline(started, t));
        if self.key.is_none() {
            if let Some(admission) = limiter.shared.lane.try_admit(now, &cost) {
                return Step::Done(Ok(limiter.lane_permit(now, cost, admission)));
            }
        }
        let (mut st, now) = limiter.lock_at(now);
        let route = match limiter.route(&mut st, self.key.as_deref(), now) {
            Ok(route) => route,
            Err(refused) => {
                st.root.counters.rejected += 1;
                return Step::Done(Err(refused));
            }
        };
        if let Some(queue) = st.first_queue(&route) {
            // Join the queue behind the others, unless the cost can never be admitted.
            let possible = route
                .ids()
                .iter()
                .filter_map(|&id| st.budget(id))
                .try_for_each(|b| b.policy.check_possible(&cost));
            if let Err(e) = possible {
                st.count(&route, |c| c.rejected += 1);
                return Step::Done(Err(e));
            }
            let note = WaitNote::behind(st.queued_on(&route));
            let id = st.ticket();
            st.pin(&route);
            st.enqueue(
                queue,
                Entry::new(id, route, waker, cost, started, self.timeout()),
            );
            self.phase = Phase::Queued { id, route, started };
            drop(st);
            note.emit();
            return Step::Pending(deadline);
        }
        let verdict = match st.verdict(&route, now, &cost) {
            Ok(v) if v.verdict == Verdict::Admit => {
                let admission = st.admit(route, now, &cost, 0);
                let scope = observe::Scope::of(&st, &route);
                drop(st);
                observe::admitted(&scope, &cost, None);
                return Step::Done(Ok(Permit::new(limiter, cost, now, admission)));
            }
            Err(e) => {
                st.count(&route, |c| c.rejected += 1);
                return Step::Done(Err(e));
            }
            Ok(v) => v,
        };
        let holder = route.ids()[verdict.at];
        if let Some(d) = deadline {
            // Fail now when the wait is known to outlast the deadline.
            if verdict.verdict.misses(now, d) {
                st.count(&route, |c| c.timed_out += 1);
                let timeout = self.timeout().unwrap_or_default();
                let error = st.budget(holder).unwrap_or(&st.root).timeout_error(
                    verdict.verdict,
                    &cost,
                    now,
                    timeout,
                );
                drop(st);
                observe::failed(&error, 0);
                return Step::Done(Err(error));
            }
        }
        let note = WaitNote::held(
            &st.budget(holder).unwrap_or(&st.root).policy,
            verdict.verdict,
            &cost,
            now,
        );
        let id = st.ticket();
        st.pin(&route);
        st.enqueue(
            holder,
            Entry::new(id, route, waker, cost, started, self.timeout()),
        );
        self.phase = Phase::Queued { id, route, started };
        let until = verdict.verdict.timer();
        let armed = match (
            until,
            st.budget_mut(holder).and_then(|b| b.waiters.as_mut()),
        ) {
            (Some(u), Some(w)) if self.uses_head_timer => {
                w.timer.arm(id, current_runtime(), now, u, waker)
            }
            _ => false,
        };
        drop(st);
        note.emit();
        Step::Pending(wake_at(if armed { None } else { until }, deadline))
    }

    /// Picks up a grant made on this waiter's behalf, or lets the queue move (this waiter may
    /// have been woken by the head timer), or gives up at the deadline.
    fn queued_step(
        &mut self,
        id: u64,
        route: Route,
        started: Nanos,
        now: Nanos,
        waker: &Waker,
    ) -> Step<'a, C> {
        let limiter = self.limiter;
        let deadline = self.timeout().map(|t| deadline(started, t));
        let (mut st, now) = limiter.lock_at(now);
        let queue = st.set_waker(&route, id, waker);
        let mut head = None;
        if let Some(b) = queue {
            st.serve(now, b, Some(id));
            head = st.take_head_wait(id);
        }
        if let Some(outcome) = st.grants.take(id) {
            self.phase = Phase::Finished;
            let scope = observe::Scope::of(&st, &route);
            drop(st);
            return Step::Done(match outcome {
                Ok(g) => {
                    let waited = g.admitted_at.saturating_sub(started);
                    observe::admitted(&scope, &g.cost, Some(waited));
                    Ok(Permit::new(limiter, g.cost, g.admitted_at, g.admission))
                }
                Err(error) => {
                    observe::failed(&error, now.saturating_sub(started));
                    Err(error)
                }
            });
        }
        let Some(queue) = st.queue_of(&route, id) else {
            // Neither queued nor granted: the engine lost this waiter, which it never does
            // (every removal from a queue leaves a grant). Fail rather than wait forever.
            debug_assert!(false, "waiter {id} is neither queued nor granted");
            self.phase = Phase::Finished;
            return Step::Done(Err(AcquireError::QueueTimeout {
                waiters_ahead: st.queued_on(&route),
                timeout: self.timeout().unwrap_or_default(),
            }));
        };
        if deadline.is_some_and(|d| now >= d) {
            // Behind others at the deadline (a head that cannot make it fails in serve).
            let waiters_ahead = st.budget(queue).and_then(|b| b.position(id)).unwrap_or(0);
            if st.dequeue(queue, id, now).is_some() {
                st.unpin(&route);
            }
            self.phase = Phase::Finished;
            st.count(&route, |c| c.timed_out += 1);
            drop(st);
            let error = AcquireError::QueueTimeout {
                waiters_ahead,
                timeout: self.timeout().unwrap_or_default(),
            };
            observe::failed(&error, now.saturating_sub(started));
            return Step::Done(Err(error));
        }
        let own = head.filter(|h| !h.armed).map(|h| h.until);
        Step::Pending(wake_at(own, deadline))
    }
}

fn wake_at(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<C: Clock> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        let Phase::Queued { id, route, started } = self.phase else {
            return;
        };
        let limiter = self.limiter;
        let now = limiter.shared.clock.now();
        let (mut st, now) = limiter.lock_at(now);
        let mut revoked = false;
        let mut failed = None;
        if let Some(queue) = st.queue_of(&route, id) {
            st.count(&route, |c| c.cancelled += 1);
            if st.dequeue(queue, id, now).is_some() {
                st.unpin(&route);
            }
        } else {
            match st.grants.take(id) {
                Some(Ok(granted)) => {
                    st.count(&route, |c| c.cancelled += 1);
                    st.revoke(now, granted);
                    revoked = true;
                }
                // Failed (timed out at the head, counted then) before it picked up the error.
                Some(Err(error)) => failed = Some(error),
                None => {}
            }
        }
        drop(st);
        let waited = now.saturating_sub(started);
        observe::cancelled(waited, revoked);
        if let Some(error) = failed {
            observe::failed(&error, waited);
        }
    }
}
