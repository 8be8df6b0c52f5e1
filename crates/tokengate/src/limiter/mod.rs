//! The in-memory limiter: one engine under the non-blocking, blocking and async front ends.

mod observe;
mod permit;
mod provider;
mod queue;
mod timer;
mod waiter;

#[cfg(feature = "tokio")]
mod async_acquire;
mod blocking;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::core::{
    commit_all, decide_all, settle_all, CombinedDecision, LimitState, Nanos, Receipt,
};
use crate::cost::Cost;
use crate::dimension::Dimension;
use crate::error::{AcquireError, Denied};
use crate::policy::Policy;
use crate::stats::{Counters, LimitStats, Stats};

#[cfg(feature = "tokio")]
pub use async_acquire::Acquire;
pub use permit::Permit;

use queue::{Granted, WaitQueue};
use timer::HeadTimer;

/// Admits requests under a [`Policy`]: every limit at once or none, FIFO, with exact waits.
///
/// Cheap to clone: clones share one state. `Send + Sync`.
///
/// # Examples
/// ```
/// use tokengate::{Cost, Limiter, Policy, Usage};
///
/// let policy = Policy::builder()
///     .requests_per_minute(500)
///     .input_tokens_per_minute(30_000)
///     .output_tokens_per_minute(8_000)
///     .max_in_flight(10)
///     .build()?;
/// let limiter = Limiter::new(policy);
///
/// let permit = limiter.try_acquire(Cost::request().input(1_200).output(800))?;
/// // ... call the model ...
/// permit.settle(Usage::new().input(1_180).output(312)); // 488 output tokens come back at once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Limiter<C: Clock = SystemClock> {
    shared: Arc<Shared<C>>,
}

impl<C: Clock> Clone for Limiter<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<C> {
    clock: C,
    policy: Policy,
    state: Mutex<State>,
}

/// Everything that changes, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    limits: Vec<LimitState>,
    in_flight: u64,
    /// Nothing is admitted before this instant: the provider answered 429 with a retry-after.
    paused_until: Nanos,
    queue: WaitQueue,
    timer: HeadTimer,
    counters: Counters,
}

/// The head of the queue waits for `until`; `armed` says whether the head timer will wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadWait {
    pub(crate) id: u64,
    pub(crate) until: Nanos,
    pub(crate) armed: bool,
}

/// Each limit's bucket mark from one admission (see [`Receipt`]), for its settlement: in
/// place for the first four limits (requests, input, output and a daily cap), on the heap past
/// that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    first: [u64; 4],
    rest: Option<Box<[u64]>>,
}

impl Marks {
    /// Room for `len` marks, all zero.
    #[inline]
    fn new(len: usize) -> Self {
        let rest = (len > 4).then(|| vec![0; len - 4].into_boxed_slice());
        Self {
            first: [0; 4],
            rest,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, mark: u64) {
        match (self.first.get_mut(i), &mut self.rest) {
            (Some(slot), _) => *slot = mark,
            (None, Some(rest)) => {
                if let Some(slot) = rest.get_mut(i - 4) {
                    *slot = mark;
                }
            }
            (None, None) => {}
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> u64 {
        match self.first.get(i) {
            Some(&mark) => mark,
            None => self
                .rest
                .as_ref()
                .and_then(|r| r.get(i - 4))
                .copied()
                .unwrap_or(0),
        }
    }
}

/// What an admission took: whether it holds an in-flight slot, and for each limit the instant
/// its bucket drains the units taken (see [`Receipt`](crate::core::Receipt)).
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) holds_slot: bool,
    pub(crate) marks: Marks,
}

/// What the policy says about one cost at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit,
    /// Rate-limited until this instant; `limit` is the index of the limit with the longest wait.
    Wait {
        until: Nanos,
        limit: usize,
    },
    /// The provider asked for a pause (a 429) that lasts until this instant.
    Paused {
        until: Nanos,
    },
    /// Every in-flight slot is held.
    InFlightFull,
}

impl Verdict {
    /// The instant the wait ends, when it is known.
    fn until(self) -> Option<Nanos> {
        match self {
            Verdict::Wait { until, .. } | Verdict::Paused { until } => Some(until),
            Verdict::Admit | Verdict::InFlightFull => None,
        }
    }
}

impl Limiter<SystemClock> {
    /// A limiter on the system's monotonic clock.
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, SystemClock::new())
    }
}

impl<C: Clock> Limiter<C> {
    /// A limiter reading time from `clock` ([`ManualClock`](crate::ManualClock) for tests,
    /// [`TokioClock`](crate::TokioClock) for virtual time).
    pub fn with_clock(policy: Policy, clock: C) -> Self {
        let limits = policy.limits.iter().map(|l| l.rule.new_state()).collect();
        let counters = Counters::new(policy.limits.len());
        Self {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(State {
                    limits,
                    in_flight: 0,
                    paused_until: 0,
                    queue: WaitQueue::default(),
                    timer: HeadTimer::default(),
                    counters,
                }),
                policy,
            }),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.shared.clock
    }

    /// Admits `cost` now, or says why not and for how long. Never waits, and never overtakes
    /// queued acquisitions.
    ///
    /// A zero cost ([`Cost::zero`]) peeks: it is admitted whenever no limit is in debt, and
    /// charges nothing.
    ///
    /// # Errors
    /// [`Denied`] with the dimension, the cost and the exact wait; or
    /// [`Denied::Never`] when the cost can never be admitted.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Denied, Limiter, ManualClock, Policy};
    ///
    /// let policy = Policy::builder().requests_per_minute(60).build()?; // one a second, burst 1
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let _first = limiter.try_acquire(Cost::request())?;
    /// let denied = limiter.try_acquire(Cost::request()).unwrap_err();
    /// assert_eq!(denied.wait(), Some(Duration::from_secs(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self, cost: Cost) -> Result<Permit<'_, C>, Denied> {
        let now = self.shared.clock.now();
        let mut st = self.lock();
        if !st.queue.is_empty() {
            st.counters.denied += 1;
            let waiters = st.queue.len();
            drop(st);
            return Err(self.denied(Denied::WaitersAhead { waiters }));
        }
        let denied = match self.try_admit(&mut st, now, &cost, 0) {
            Ok(Ok(admission)) => {
                drop(st);
                observe::admitted(&self.shared.policy, &cost, None);
                return Ok(Permit::new(self, cost, now, admission));
            }
            Ok(Err(Verdict::Wait { until, limit })) => {
                st.counters.denied += 1;
                drop(st);
                let l = &self.shared.policy.limits[limit];
                Denied::RateLimited {
                    dimension: l.dimension.clone(),
                    cost: l.measure.amount(&cost).unwrap_or(u64::MAX),
                    limit: l.limit.to_string(),
                    wait: Duration::from_nanos(until - now),
                }
            }
            Ok(Err(Verdict::Paused { until })) => {
                st.counters.denied += 1;
                drop(st);
                Denied::Paused {
                    wait: Duration::from_nanos(until - now),
                }
            }
            Ok(Err(_)) => {
                st.counters.denied += 1;
                drop(st);
                Denied::InFlightFull {
                    max: self.shared.policy.max_in_flight.unwrap_or(0),
                }
            }
            Err(e) => {
                st.counters.rejected += 1;
                drop(st);
                Denied::Never(e)
            }
        };
        Err(self.denied(denied))
    }

    /// Reports a denial of `try_acquire` (outside the lock) and returns it.
    #[inline(always)]
    fn denied(&self, denied: Denied) -> Denied {
        observe::denied(&denied);
        denied
    }

    /// A snapshot of every limit, in-flight requests, waiters and totals.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{Cost, Limiter, ManualClock, Policy, Usage};
    ///
    /// let policy = Policy::builder().requests_per_minute(60).input_tokens_per_minute(6_000).max_in_flight(2).build()?;
    /// let limiter = Limiter::with_clock(policy, ManualClock::new());
    /// let permit = limiter.try_acquire(Cost::request().input(1_000))?;
    /// let stats = limiter.stats();
    /// assert_eq!((stats.admitted, stats.in_flight), (1, 1));
    /// assert_eq!(stats.limits[1].dimension.name(), "input_tokens");
    /// assert_eq!((stats.limits[1].used, stats.limits[1].remaining), (1_000, 5_000));
    /// // The window is back to fresh 60 s after the admission, and refills then too.
    /// assert_eq!(stats.limits[1].reset_in, Some(Duration::from_secs(60)));
    /// assert_eq!(stats.limits[1].next_refill_in, Some(Duration::from_secs(60)));
    /// // Requests are paced at one a second (burst 1): the next one refills in a second.
    /// assert_eq!(stats.limits[0].next_refill_in, Some(Duration::from_secs(1)));
    /// permit.settle(Usage::new().input(400));
    /// assert_eq!(limiter.stats().limits[1].refunded, 600);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let now = self.shared.clock.now();
        let st = self.lock();
        let limits = self
            .shared
            .policy
            .limits
            .iter()
            .zip(&st.limits)
            .enumerate()
            .map(|(i, (l, s))| {
                let snap = l.rule.snapshot(s, now);
                LimitStats {
                    dimension: l.dimension.clone(),
                    limit: l.limit.to_string(),
                    amount: l.limit.amount(),
                    period: l.limit.period(),
                    used: snap.used,
                    remaining: snap.remaining,
                    reset_in: snap.reset_at.map(|t| Duration::from_nanos(t - now)),
                    next_refill_in: snap.next_refill_at.map(|t| Duration::from_nanos(t - now)),
                    charged: st.counters.charged[i],
                    refunded: st.counters.refunded[i],
                    lowered: st.counters.lowered[i],
                    reported_amount: st.counters.reported[i],
                }
            })
            .collect();
        let c = &st.counters;
        Stats {
            limits,
            in_flight: st.in_flight,
            max_in_flight: self.shared.policy.max_in_flight,
            waiters: st.queue.len(),
            admitted: c.admitted,
            denied: c.denied,
            timed_out: c.timed_out,
            rejected: c.rejected,
            cancelled: c.cancelled,
            settled: c.settled,
            throttled: c.throttled,
            paused_for: (st.paused_until > now)
                .then(|| Duration::from_nanos(st.paused_until - now)),
            waits: c.waits.stats(),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and every update keeps the state consistent,
        // so a poisoned lock (a panic elsewhere in the holder's thread) is safe to use.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `cost` takes an in-flight slot: every non-zero cost does when the policy caps
    /// in-flight requests.
    #[inline]
    fn takes_slot(&self, cost: &Cost) -> bool {
        self.shared.policy.max_in_flight.is_some() && !cost.is_zero()
    }

    /// What the policy says about `cost` at `now`; changes nothing.
    #[inline]
    fn verdict(&self, st: &State, now: Nanos, cost: &Cost) -> Result<Verdict, AcquireError> {
        let limits = &self.shared.policy.limits;
        if st.paused_until > now {
            // Even a cost that can never be admitted says so first.
            self.shared.policy.check_possible(cost)?;
            return Ok(Verdict::Paused {
                until: st.paused_until,
            });
        }
        // An amount that overflows 64 bits is above every capacity but that of a limit of
        // u64::MAX, which it may as well pass.
        let decisions = limits
            .iter()
            .zip(&st.limits)
            .map(|(l, s)| (&l.rule, s, l.measure.amount(cost).unwrap_or(u64::MAX)));
        match decide_all(decisions, now) {
            CombinedDecision::Admit => {}
            CombinedDecision::NotUntil { at, limit } => {
                return Ok(Verdict::Wait { until: at, limit })
            }
            CombinedDecision::Impossible { limit, .. } => {
                return Err(limits[limit].impossible(cost));
            }
        }
        if self.takes_slot(cost) && Some(st.in_flight) >= self.shared.policy.max_in_flight {
            return Ok(Verdict::InFlightFull);
        }
        Ok(Verdict::Admit)
    }

    /// Charges `amounts` on every limit at `now` (after [`verdict`](Self::verdict) said admit).
    #[inline]
    fn admit(&self, st: &mut State, now: Nanos, cost: &Cost, waited: Nanos) -> Admission {
        let State {
            limits, counters, ..
        } = st;
        let charged = counters.charged.iter_mut();
        let commits = self
            .shared
            .policy
            .limits
            .iter()
            .zip(limits.iter_mut())
            .zip(charged)
            .map(|((l, s), charged)| {
                // `verdict` admitted it, so the amount did not overflow.
                let amount = l.measure.amount(cost).unwrap_or(u64::MAX);
                *charged = charged.saturating_add(amount);
                (&l.rule, s, amount)
            });
        let mut marks = Marks::new(self.shared.policy.limits.len());
        let mut i = 0;
        commit_all(commits, now, |receipt| {
            marks.set(i, receipt.bucket_mark);
            i += 1;
        });
        counters.admitted += 1;
        counters.waits.record(waited);
        let holds_slot = self.takes_slot(cost);
        if holds_slot {
            st.in_flight += 1;
        }
        Admission { holds_slot, marks }
    }

    /// Decides `cost` at `now` and, when every limit allows it, admits it: `Ok(Ok(admission))`.
    /// Otherwise `Ok(Err(verdict))` with why it waits, or the error that it never can.
    #[inline]
    fn try_admit(
        &self,
        st: &mut State,
        now: Nanos,
        cost: &Cost,
        waited: Nanos,
    ) -> Result<Result<Admission, Verdict>, AcquireError> {
        match self.verdict(st, now, cost)? {
            Verdict::Admit => Ok(Ok(self.admit(st, now, cost, waited))),
            wait => Ok(Err(wait)),
        }
    }

    /// Gives back an in-flight slot; the queue may move.
    fn release_slot(&self, st: &mut State) {
        st.in_flight = st.in_flight.saturating_sub(1);
        self.serve_queue_now(st);
    }

    /// [`serve_queue`](Self::serve_queue) at the clock's now, if anyone is queued.
    fn serve_queue_now(&self, st: &mut State) {
        if !st.queue.is_empty() {
            self.serve_queue(st, self.shared.clock.now(), None);
        }
    }

    /// Admits queued waiters from the head, in order, while the limits allow, each on its
    /// behalf and woken once with its permit ready. When the head must wait for an instant,
    /// sets the head timer for it and returns the instant; when it waits for an in-flight
    /// slot, returns `None` (a released slot serves the queue again).
    ///
    /// `polling` is the waiter whose own poll runs this: it is not woken for its own grant.
    fn serve_queue(&self, st: &mut State, now: Nanos, polling: Option<u64>) -> Option<HeadWait> {
        loop {
            let Some(head) = st.queue.head() else {
                st.timer.disarm();
                return None;
            };
            let verdict = self.verdict(st, now, &head.cost);
            let until = verdict.as_ref().ok().and_then(|v| v.until());
            let missed_deadline = match (&verdict, head.deadline()) {
                (Ok(Verdict::Admit), _) | (_, None) => false,
                (_, Some(d)) => until.map_or(now >= d, |u| u > d),
            };
            match (&verdict, until, missed_deadline) {
                (Ok(_), Some(until), false) => {
                    let id = head.id;
                    let waker = head.waker.clone();
                    let armed = match waker {
                        Some(w) => {
                            let armed = st.timer.arm(id, now, until, &w);
                            if !armed && polling != Some(id) {
                                // No timer here: wake the head to set its own (not when the
                                // head itself is asking: it waits on its own timer then).
                                st.queue.wake_head();
                            }
                            armed
                        }
                        None => false, // woken already: it will set the timer when it runs
                    };
                    return Some(HeadWait { id, until, armed });
                }
                (Ok(Verdict::InFlightFull), _, false) => {
                    st.timer.disarm();
                    return None;
                }
                _ => {}
            }
            let entry = st.queue.pop_head()?;
            let outcome = match verdict {
                Ok(Verdict::Admit) => {
                    let waited = now.saturating_sub(entry.started);
                    let admission = self.admit(st, now, &entry.cost, waited);
                    Ok(Granted {
                        cost: entry.cost,
                        admitted_at: now,
                        admission,
                    })
                }
                Ok(verdict) => {
                    st.counters.timed_out += 1;
                    Err(self.timeout_error(verdict, &entry.cost, now, entry.timeout()))
                }
                Err(e) => {
                    st.counters.rejected += 1;
                    Err(e)
                }
            };
            st.queue.grant(entry.id, outcome);
            if let Some(w) = entry.waker.filter(|_| polling != Some(entry.id)) {
                w.wake();
            }
        }
    }

    /// Takes back an admission whose permit was never delivered (its waiter was dropped
    /// after the grant): every limit gets its amounts back, and its slot is freed.
    fn revoke(&self, st: &mut State, now: Nanos, granted: Granted) {
        self.settle_admission(
            st,
            now,
            &granted.cost,
            &Cost::zero(),
            granted.admitted_at,
            &granted.admission.marks,
        );
        st.counters.admitted = st.counters.admitted.saturating_sub(1);
        if granted.admission.holds_slot {
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        self.serve_queue(st, now, None);
    }

    /// Settles an admission of `reserved` made at `admitted_at` with what it `used`: refunds
    /// or charges every limit the difference, and counts it.
    fn settle_admission(
        &self,
        st: &mut State,
        now: Nanos,
        reserved: &Cost,
        used: &Cost,
        admitted_at: Nanos,
        marks: &Marks,
    ) {
        let State {
            limits, counters, ..
        } = st;
        let totals = counters
            .charged
            .iter_mut()
            .zip(counters.refunded.iter_mut());
        let each = self
            .shared
            .policy
            .limits
            .iter()
            .zip(limits.iter_mut())
            .zip(totals)
            .enumerate();
        settle_all(
            each.map(|(i, ((l, s), (charged, refunded)))| {
                let bucket_mark = marks.get(i);
                let reserved = l.measure.amount(reserved).unwrap_or(0);
                // A usage figure that overflows is charged as the most there is (capped by `charge`).
                let used = l.measure.amount(used).unwrap_or(u64::MAX);
                *refunded = refunded.saturating_add(reserved.saturating_sub(used));
                *charged =
                    charged.saturating_add(used.saturating_sub(reserved).min(l.rule.amount()));
                (
                    &l.rule,
                    s,
                    reserved,
                    used,
                    Receipt {
                        admitted_at,
                        bucket_mark,
                    },
                )
            }),
            now,
        );
    }

    /// The error for a wait that outlasts `timeout`: it names the dimension that holds the
    /// request back (the limit with the longest wait, or `in_flight`) and the cost on it, or the
    /// provider's pause.
    fn timeout_error(
        &self,
        verdict: Verdict,
        cost: &Cost,
        now: Nanos,
        timeout: Duration,
    ) -> AcquireError {
        let wait = verdict
            .until()
            .map(|u| Duration::from_nanos(u.saturating_sub(now)));
        match verdict {
            Verdict::Paused { .. } => AcquireError::Paused {
                wait: wait.unwrap_or_default(),
                timeout,
            },
            Verdict::Wait { limit, .. } => {
                let l = &self.shared.policy.limits[limit];
                AcquireError::Timeout {
                    dimension: l.dimension.clone(),
                    cost: l.measure.amount(cost).unwrap_or(u64::MAX),
                    wait,
                    timeout,
                }
            }
            Verdict::Admit | Verdict::InFlightFull => AcquireError::Timeout {
                dimension: Dimension::InFlight,
                cost: 1,
                wait,
                timeout,
            },
        }
    }
}
