//! One waiting acquisition, independent of how it sleeps.
//!
//! [`Waiting::poll_step`] does everything under the lock. With nobody queued and the limits
//! allowing it, it admits at once. Otherwise it joins the FIFO queue, handing its cost to the
//! queue entry; from then on the engine admits it *on its behalf* as soon as the limits allow
//! (when the waiter ahead is admitted, a settlement refunds, a permit frees a slot, or the
//! head timer fires) and wakes it once, with the permit ready. It answers when the waiter must
//! wake itself: the async front end sleeps on tokio's timer until then, the blocking one parks
//! the thread.
//!
//! Dropping a `Waiting` leaves the queue and lets it move on; if it had been admitted but not
//! yet picked up its permit, the admission is taken back. Nothing is lost or counted twice.

use std::task::Waker;
use std::time::Duration;

use super::observe::{self, WaitNote};
use super::queue::deadline;
use super::{Limiter, Permit};
use crate::clock::Clock;
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

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
    phase: Phase,
    timeout: Option<Duration>,
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
        started: Nanos,
    },
    Finished,
}

impl<'a, C: Clock> Waiting<'a, C> {
    pub(crate) fn new(
        limiter: &'a Limiter<C>,
        cost: Cost,
        timeout: Option<Duration>,
        uses_head_timer: bool,
    ) -> Self {
        Self {
            limiter,
            phase: Phase::New(cost),
            timeout,
            uses_head_timer,
        }
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
            Phase::Queued { id, started } => {
                self.phase = Phase::Queued { id, started };
                self.queued_step(id, started, now, waker)
            }
            Phase::Finished => Step::Pending(None), // polled again after completion
        }
    }

    /// Admits at once when nobody is queued and the limits allow it; otherwise joins the queue
    /// (or fails at once when the wait is known to outlast the timeout).
    fn first_step(&mut self, cost: Cost, now: Nanos, waker: &Waker) -> Step<'a, C> {
        let limiter = self.limiter;
        let started = now;
        let deadline = self.timeout.map(|t| deadline(started, t));
        let mut st = limiter.lock();
        if !st.queue.is_empty() {
            // Join the queue behind the others, unless the cost can never be admitted.
            if let Err(e) = limiter.shared.policy.check_possible(&cost) {
                st.counters.rejected += 1;
                return Step::Done(Err(e));
            }
            let note = WaitNote::behind(st.queue.len());
            let id = st.queue.push(waker, cost, started, self.timeout);
            self.phase = Phase::Queued { id, started };
            drop(st);
            note.emit(&limiter.shared.policy);
            return Step::Pending(deadline);
        }
        let verdict = match limiter.try_admit(&mut st, now, &cost, 0) {
            Ok(Ok(admission)) => {
                drop(st);
                observe::admitted(&limiter.shared.policy, &cost, None);
                return Step::Done(Ok(Permit::new(limiter, cost, now, admission)));
            }
            Err(e) => {
                st.counters.rejected += 1;
                return Step::Done(Err(e));
            }
            Ok(Err(verdict)) => verdict,
        };
        let until = verdict.until();
        if let Some(d) = deadline {
            // Fail now when the wait is known to outlast the deadline.
            if until.map_or(now >= d, |u| u > d) {
                st.counters.timed_out += 1;
                drop(st);
                let timeout = self.timeout.unwrap_or_default();
                let error = limiter.timeout_error(verdict, &cost, now, timeout);
                observe::failed(&error, 0);
                return Step::Done(Err(error));
            }
        }
        let note = WaitNote::held(&limiter.shared.policy, verdict, &cost, now);
        let id = st.queue.push(waker, cost, started, self.timeout);
        self.phase = Phase::Queued { id, started };
        let armed = match until {
            Some(u) if self.uses_head_timer => st.timer.arm(id, now, u, waker),
            _ => false,
        };
        drop(st);
        note.emit(&limiter.shared.policy);
        Step::Pending(wake_at(if armed { None } else { until }, deadline))
    }

    /// Picks up a grant made on this waiter's behalf, or lets the queue move (this waiter may
    /// have been woken by the head timer), or gives up at the deadline.
    fn queued_step(&mut self, id: u64, started: Nanos, now: Nanos, waker: &Waker) -> Step<'a, C> {
        let limiter = self.limiter;
        let deadline = self.timeout.map(|t| deadline(started, t));
        let mut st = limiter.lock();
        let queued = st.queue.set_waker(id, waker);
        let head = if queued {
            limiter.serve_queue(&mut st, now, Some(id))
        } else {
            None
        };
        if let Some(outcome) = st.queue.take_grant(id) {
            self.phase = Phase::Finished;
            drop(st);
            return Step::Done(match outcome {
                Ok(g) => {
                    let waited = g.admitted_at.saturating_sub(started);
                    observe::admitted(&limiter.shared.policy, &g.cost, Some(waited));
                    Ok(Permit::new(limiter, g.cost, g.admitted_at, g.admission))
                }
                Err(error) => {
                    observe::failed(&error, now.saturating_sub(started));
                    Err(error)
                }
            });
        }
        if !queued {
            // Neither queued nor granted: the engine lost this waiter, which it never does
            // (every removal from the queue leaves a grant). Fail rather than wait forever.
            debug_assert!(false, "waiter {id} is neither queued nor granted");
            self.phase = Phase::Finished;
            return Step::Done(Err(AcquireError::QueueTimeout {
                waiters_ahead: st.queue.len(),
                timeout: self.timeout.unwrap_or_default(),
            }));
        }
        if deadline.is_some_and(|d| now >= d) {
            // Behind others at the deadline (a head that cannot make it fails in serve_queue).
            let waiters_ahead = st.queue.position(id).unwrap_or(0);
            if let Some((_, was_head)) = st.queue.remove(id) {
                if was_head {
                    limiter.serve_queue(&mut st, now, None);
                }
            }
            self.phase = Phase::Finished;
            st.counters.timed_out += 1;
            drop(st);
            let error = AcquireError::QueueTimeout {
                waiters_ahead,
                timeout: self.timeout.unwrap_or_default(),
            };
            observe::failed(&error, now.saturating_sub(started));
            return Step::Done(Err(error));
        }
        let own = head.filter(|h| h.id == id && !h.armed).map(|h| h.until);
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
        let Phase::Queued { id, started } = self.phase else {
            return;
        };
        let limiter = self.limiter;
        let now = limiter.shared.clock.now();
        let mut st = limiter.lock();
        st.counters.cancelled += 1;
        let mut revoked = false;
        let mut failed = None;
        if let Some((_, was_head)) = st.queue.remove(id) {
            if was_head {
                limiter.serve_queue(&mut st, now, None);
            }
        } else {
            match st.queue.take_grant(id) {
                Some(Ok(granted)) => {
                    limiter.revoke(&mut st, now, granted);
                    revoked = true;
                }
                // Failed (timed out at the head) before it picked up the error.
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
