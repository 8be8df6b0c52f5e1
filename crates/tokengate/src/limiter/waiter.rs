//! One waiting acquisition, independent of how it sleeps.
//!
//! [`Waiting::poll_step`] does everything under the lock: admit at once when nothing is
//! queued and the limits allow it, otherwise join the FIFO queue; at the head, admit as soon
//! as the limits allow and wake the next head. It answers when to try again; the async front
//! end sleeps on tokio's timer until then, the blocking one parks the thread. Dropping a
//! `Waiting` leaves the queue (and wakes the next head), so cancellation loses nothing:
//! nothing is charged before admission, and admission hands the permit over in the same step.

use std::task::Waker;
use std::time::Duration;

use super::{Limiter, Permit, Verdict};
use crate::clock::Clock;
use crate::core::Nanos;
use crate::cost::Cost;
use crate::error::AcquireError;

/// What one step of a waiting acquisition came to.
#[derive(Debug)]
pub(crate) enum Step<'a, C: Clock> {
    /// Admitted, or failed for good.
    Done(Result<Permit<'a, C>, AcquireError>),
    /// Still waiting: try again at this instant, or (`None`) when woken.
    Pending(Option<Nanos>),
}

#[derive(Debug)]
pub(crate) struct Waiting<'a, C: Clock> {
    limiter: &'a Limiter<C>,
    cost: Option<Cost>,
    timeout: Option<Duration>,
    /// Set on the first step.
    started: Option<Nanos>,
    /// The queue id, while queued.
    id: Option<u64>,
}

impl<'a, C: Clock> Waiting<'a, C> {
    pub(crate) fn new(limiter: &'a Limiter<C>, cost: Cost, timeout: Option<Duration>) -> Self {
        Self {
            limiter,
            cost: Some(cost),
            timeout,
            started: None,
            id: None,
        }
    }

    /// Tries to admit; see the module docs.
    pub(crate) fn poll_step(&mut self, waker: &Waker) -> Step<'a, C> {
        let limiter = self.limiter;
        let Some(cost) = self.cost.as_ref() else {
            return Step::Pending(None); // already finished; polled again after completion
        };
        let now = limiter.shared.clock.now();
        let started = *self.started.get_or_insert(now);
        let deadline = self
            .timeout
            .map(|t| started.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)));
        let mut st = limiter.lock();

        let at_head = match self.id {
            None => st.queue.is_empty(),
            Some(id) => st.queue.is_head(id),
        };
        if !at_head {
            if deadline.is_some_and(|d| now >= d) {
                self.leave(&mut st);
                st.counters.timed_out += 1;
                let waiters_ahead = st.queue.len();
                drop(st);
                return self.fail(AcquireError::QueueTimeout {
                    waiters_ahead,
                    timeout: self.timeout.unwrap_or_default(),
                });
            }
            match self.id {
                None => self.id = Some(st.queue.push(waker)),
                Some(id) => st.queue.set_waker(id, waker),
            }
            return Step::Pending(deadline);
        }

        match limiter.verdict(&st, now, cost) {
            Ok(Verdict::Admit) => {
                let holds_slot = limiter.admit(&mut st, now, cost, now - started);
                if let Some(id) = self.id.take() {
                    st.queue.remove(id); // wakes the next head
                }
                drop(st);
                let cost = self.cost.take().unwrap_or_default();
                Step::Done(Ok(Permit::new(limiter, cost, now, holds_slot)))
            }
            Ok(verdict) => {
                let until = match verdict {
                    Verdict::Wait { until, .. } => Some(until),
                    _ => None,
                };
                if let Some(d) = deadline {
                    // Fail now when the wait is known to outlast the deadline.
                    if until.map_or(now >= d, |u| u > d) {
                        let (dimension, cost) = limiter.binding(verdict, cost);
                        self.leave(&mut st);
                        st.counters.timed_out += 1;
                        drop(st);
                        return self.fail(AcquireError::Timeout {
                            dimension,
                            cost,
                            wait: until.map(|u| Duration::from_nanos(u - now)),
                            timeout: self.timeout.unwrap_or_default(),
                        });
                    }
                }
                match self.id {
                    None => self.id = Some(st.queue.push(waker)),
                    Some(id) => st.queue.set_waker(id, waker),
                }
                Step::Pending(until.or(deadline))
            }
            Err(e) => {
                self.leave(&mut st);
                st.counters.rejected += 1;
                drop(st);
                self.fail(e)
            }
        }
    }

    pub(crate) fn clock_now(&self) -> Nanos {
        self.limiter.shared.clock.now()
    }

    fn fail(&mut self, e: AcquireError) -> Step<'a, C> {
        self.cost = None;
        Step::Done(Err(e))
    }

    /// Leaves the queue, waking the next head if this was the head.
    fn leave(&mut self, st: &mut super::State) {
        if let Some(id) = self.id.take() {
            st.queue.remove(id);
        }
    }
}

impl<C: Clock> Drop for Waiting<'_, C> {
    fn drop(&mut self) {
        if self.id.is_some() {
            let mut st = self.limiter.lock();
            st.counters.cancelled += 1;
            self.leave(&mut st);
        }
    }
}
