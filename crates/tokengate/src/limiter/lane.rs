//! The lane: admissions on the limiter's own budget without taking the lock.
//!
//! # Why
//! A decision under the limiter's mutex pays for the lock twice (two atomic read-modify-write
//! instructions: lock, then unlock), which is more than the decision itself. When the
//! limiter's own policy is made of buckets (token or leaky, at most [`LANE_LIMITS`] limits on
//! the built-in dimensions), its whole state is a few integers per limit: the lane keeps them
//! in atomics beside the lock, with a copy of each rule, and admits a request with one
//! compare-and-swap to enter and a plain store to leave.
//!
//! # How
//! The lane is a small spin lock (`word`) over those atomics, held for one decision at a time
//! (tens of nanoseconds, nothing that blocks). Its state is in one of two places:
//! - **on**: the lane holds the budget's bucket states, in-flight count and counters, and a
//!   caller that finds the word free decides in the lane ([`try_admit`](Lane::try_admit),
//!   [`try_release`](Lane::try_release));
//! - **off**: the budget under the mutex holds them; every caller takes the mutex.
//!
//! A caller skips the word altogether while the lane is off: `open_hint`, which only the
//! mutex holder writes when the lane opens or closes, tells it so from a line that stays in
//! every core's cache.
//!
//! Whoever takes the mutex also [`claim`](Lane::claim)s the lane (waiting out a caller inside
//! it), and, if it was on, [`pull`](Lane::pull)s its state into the budget. So under the mutex
//! the budget is always exact, and every step of the engine (queues, settlements, reloads,
//! stats) works on it as if there were no lane. When the mutex is let go the lane is
//! [`open`](Lane::open)ed again (the state pushed back) if it can decide alone: the policy
//! fits, the limiter has no keys (every request on a key takes the mutex and would claim the
//! lane of the budget they all share), admissions are not reported (the `tracing` and
//! `metrics` features name the budget's policy in each report, read under the mutex), and
//! nobody is queued on the limiter's own budget (a newcomer must not overtake a waiter).
//! Otherwise it stays off, and every caller takes the mutex.
//!
//! The lane decides with the very bucket code the engine uses (`gcra::admit`, through which
//! [`LimitRule::decide`](crate::core::LimitRule::decide) goes for a bucket, reading the rule
//! from the lane's integers one field at a time, as it needs them), and admits only what the
//! engine would: whenever it cannot admit at once (a
//! limit that says wait, a full in-flight cap, a pause, an amount that overflows, a lane
//! closed or wanted by the mutex holder), the caller takes the mutex and the engine decides,
//! with its queue and its exact error. A caller that finds another caller inside waits for it
//! in the lane. The loom model (`crates/tokengate-loom/tests/lane.rs`) checks that no unit and
//! no slot is lost or counted twice whichever way the two paths interleave, and
//! `tests/lane.rs` that the lane and the engine give the same answers.

use super::budget::Budget;
use super::route::{Admission, Marks};
use crate::core::gcra::{self, Bucket};
use crate::core::{BucketParts, GcraState, LimitState, Nanos, Rate, Span};
use crate::cost::Cost;
use crate::policy::{Measure, Policy};
use crate::sync::{spin, spin_for, yield_now, AtomicBool, AtomicU32, AtomicU64, Ordering};

use Ordering::{Acquire, Relaxed, Release};

/// The most limits a policy can have and be decided in the lane: requests, input and output
/// tokens, and a daily cap.
pub(crate) const LANE_LIMITS: usize = 4;

/// The word: free, and the lane holds the state.
const OPEN: u32 = 0;
/// A caller decides in the lane.
const FAST: u32 = 1;
/// Free, and the budget under the mutex holds the state.
const CLOSED: u32 = 2;
/// The mutex holder has the lane.
const SLOW: u32 = 3;

/// How many times a caller spins on the word while another caller decides in the lane, before
/// it yields its core between tries.
const FAST_SPINS: u32 = 64;

/// How many pauses a caller that finds another inside the lane waits before it looks again
/// (see [`Lane::enter_busy`]).
const BACKOFF: u32 = 8;

/// How many times the mutex holder spins on the word before yielding its core between tries
/// (the caller inside may have been preempted).
const SLOW_SPINS: u32 = 128;

/// Laid out so that a decision on one limit writes one cache line (the word, the counters and
/// the first limit's state come first), and what it only reads comes after: two threads
/// deciding in turn pass one line between their cores, not several.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Lane {
    word: AtomicU32,
    /// How many of `limits` are in use (the low bits, [`LEN`]), and [`CAPPED`] when the policy
    /// caps in-flight requests (at `max_in_flight`): one load tells a decision both.
    shape: AtomicU32,
    /// The budget's policy epoch, recorded in each admission.
    epoch: AtomicU32,
    /// Set while the mutex holder waits for the word: callers go to the mutex rather than
    /// keep taking the word before it.
    pending: AtomicBool,
    in_flight: AtomicU64,
    /// Admissions since the last [`pull`](Lane::pull).
    admitted: AtomicU64,
    /// The latest instant the lane admitted at: a pull hands it to the state under the mutex,
    /// which then never decides or refunds at an earlier one (`State::at`).
    latest: AtomicU64,
    paused_until: AtomicU64,
    limits: [LaneLimit; LANE_LIMITS],
    max_in_flight: AtomicU64,
    /// Whether the lane is open, as the mutex holder last left it: read by every caller before
    /// it tries the word, and written only when the lane opens or closes, so it stays in every
    /// core's cache while the word's line passes between them. A stale `true` costs a failed
    /// compare-and-swap; the word alone decides.
    open_hint: AtomicBool,
}

/// The bits of [`Lane::shape`] that hold the number of limits.
const LEN: u32 = 0xff;
/// The bit of [`Lane::shape`] set when the policy caps in-flight requests.
const CAPPED: u32 = 0x100;

/// One limit in the lane: what a decision writes (its bucket's TAT, the units charged since the
/// last pull), then what every decision reads, then what only some read (the rate of one that
/// is not a whole number of nanoseconds per unit or of a cost above the burst, the weights of
/// a weighted measure). Each field a decision does not need is never loaded.
#[derive(Debug, Default)]
#[repr(C)]
struct LaneLimit {
    tat: AtomicU64,
    charged: AtomicU64,
    /// The TAT's overshoot ([`GcraState::overshoot`]): always 0, and not read, at a rate that is
    /// a whole number of nanoseconds per unit.
    overshoot: AtomicU64,
    refunded: AtomicU64,
    exact_unit: AtomicU64,
    capacity: AtomicU64,
    burst: AtomicU64,
    tolerance: AtomicU64,
    measure: AtomicU32,
    amount: AtomicU64,
    period: AtomicU64,
    tolerance_over: AtomicU64,
    input_weight: AtomicU64,
    output_weight: AtomicU64,
    margin: AtomicU64,
}

/// One limit's part of an admission: its bucket's TAT after it (and the TAT's overshoot), the
/// admission's mark, and the units charged.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    tat: Nanos,
    overshoot: u64,
    mark: Nanos,
    amount: u64,
}

/// The lane's copy of a rule as the bucket's decision reads it, field by field as it asks,
/// with the exact unit loaded first: it says whether the rest of the rate (and the state's
/// overshoot) is read at all.
struct LaneBucket<'a> {
    limit: &'a LaneLimit,
    exact_unit: Nanos,
}

impl Bucket for LaneBucket<'_> {
    #[inline(always)]
    fn capacity(&self) -> u64 {
        self.limit.capacity.load(Relaxed)
    }

    #[inline(always)]
    fn burst(&self) -> u64 {
        self.limit.burst.load(Relaxed)
    }

    #[inline(always)]
    fn exact_unit(&self) -> Nanos {
        self.exact_unit
    }

    #[inline(always)]
    fn tolerance(&self) -> Nanos {
        self.limit.tolerance.load(Relaxed)
    }

    #[inline(always)]
    fn tolerance_span(&self) -> Span {
        Span {
            time: self.limit.tolerance.load(Relaxed),
            over: self.limit.tolerance_over.load(Relaxed),
        }
    }

    #[inline(always)]
    fn rate(&self) -> Rate {
        Rate::from_parts(
            self.limit.amount.load(Relaxed),
            self.limit.period.load(Relaxed),
            0,
        )
    }

    #[inline(always)]
    fn margin(&self) -> Nanos {
        self.limit.margin.load(Relaxed)
    }
}

impl LaneLimit {
    /// The amount of `cost` this limit counts (`None` when it overflows).
    #[inline(always)]
    fn amount(&self, cost: &Cost) -> Option<u64> {
        let weights = || {
            (
                self.input_weight.load(Relaxed),
                self.output_weight.load(Relaxed),
            )
        };
        Measure::coded_amount(self.measure.load(Relaxed), weights, cost)
    }

    /// What admitting `cost` at `now` does to this limit, if it admits it at once. The mark
    /// counts the refunds so far only for an admission that is held (`hold`: it makes a
    /// permit, which settles with its marks); otherwise the mark is not used, and the refunds
    /// are not read.
    #[inline(always)]
    fn step(&self, now: Nanos, cost: &Cost, hold: bool) -> Option<Step> {
        let amount = self.amount(cost)?;
        let bucket = LaneBucket {
            limit: self,
            exact_unit: self.exact_unit.load(Relaxed),
        };
        let state = GcraState {
            tat: self.tat.load(Relaxed),
            overshoot: if bucket.exact_unit == 0 {
                self.overshoot.load(Relaxed)
            } else {
                0
            },
            refunded: if hold { self.refunded.load(Relaxed) } else { 0 },
        };
        let (after, mark) = gcra::admit(&bucket, &state, now, amount).ok()?;
        Some(Step {
            tat: after.tat,
            overshoot: after.overshoot,
            mark,
            amount,
        })
    }

    /// Writes an admission's `step`.
    #[inline(always)]
    fn apply(&self, step: &Step) {
        self.tat.store(step.tat, Relaxed);
        self.overshoot.store(step.overshoot, Relaxed);
        self.charged.store(
            self.charged.load(Relaxed).saturating_add(step.amount),
            Relaxed,
        );
    }

    fn set(&self, parts: BucketParts, (kind, input, output): (u32, u64, u64)) {
        self.exact_unit.store(parts.exact_unit, Relaxed);
        self.capacity.store(parts.capacity, Relaxed);
        self.burst.store(parts.burst, Relaxed);
        self.tolerance.store(parts.tolerance, Relaxed);
        self.tolerance_over.store(parts.tolerance_over, Relaxed);
        self.measure.store(kind, Relaxed);
        self.amount.store(parts.amount, Relaxed);
        self.period.store(parts.period, Relaxed);
        self.input_weight.store(input, Relaxed);
        self.output_weight.store(output, Relaxed);
        self.margin.store(parts.margin, Relaxed);
    }
}

impl Lane {
    /// A closed lane: the first release of the mutex opens it.
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU32::new(CLOSED),
            pending: AtomicBool::new(false),
            shape: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            max_in_flight: AtomicU64::new(0),
            open_hint: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            limits: Default::default(),
        }
    }

    /// Whether `policy` can be decided in the lane: at most [`LANE_LIMITS`] bucket limits on
    /// built-in dimensions.
    pub(crate) fn fits(policy: &Policy) -> bool {
        policy.limits.len() <= LANE_LIMITS
            && policy
                .limits
                .iter()
                .all(|l| l.rule.bucket_parts().is_some() && l.measure.code().is_some())
    }

    /// Enters the lane as a caller: false when it is closed or the mutex holder wants it (a
    /// caller inside is waited for, in [`enter_busy`](Self::enter_busy)).
    ///
    /// The word is tried at once, not read first: when two threads take turns, a read brings
    /// the word's line over shared and the compare-and-swap then has to take it again, two
    /// trips between cores instead of one (this alone took two threads at once from about 120
    /// to about 80 ns a decision). The mutex holder's wish (`pending`) is read inside, where
    /// the line is already this core's.
    #[inline(always)]
    fn enter(&self) -> bool {
        // A closed lane (a policy that does not fit it, waiters queued) is told by a load of a
        // line nobody writes meanwhile: a failed compare-and-swap costs as much as one that
        // succeeds.
        if !self.open_hint.load(Relaxed) {
            return false;
        }
        match self
            .word
            .compare_exchange_weak(OPEN, FAST, Acquire, Relaxed)
        {
            Ok(_) => {
                if self.pending.load(Relaxed) {
                    self.leave();
                    return false;
                }
                true
            }
            Err(FAST | OPEN) => self.enter_busy(),
            Err(_) => false,
        }
    }

    /// [`enter`](Self::enter) while another caller is inside: waits for it to leave (a
    /// decision takes tens of nanoseconds; past a few spins, it yields its core in case that
    /// caller was preempted), then tries again. Gives up only when the lane closes or the mutex
    /// holder wants it: contention between callers is resolved here, not on the mutex, where a
    /// sleeping caller would cost a system call to wake.
    #[cold]
    #[inline(never)]
    fn enter_busy(&self) -> bool {
        let mut spins = 0u32;
        // Back off before looking again: the caller inside is usually about to decide again,
        // and letting it run a few decisions on its own core beats passing the line between
        // cores for every decision. Two threads deciding on one limiter (`contended` bench)
        // took 96-112 ns a decision each when the caller looked at once, 91-93 ns after one
        // pause, 65 ns after four, 55 ns after eight (governor: 51-61 ns), on a VM whose pause
        // takes 36 ns.
        spin_for(BACKOFF);
        loop {
            loop {
                if self.pending.load(Relaxed) {
                    return false;
                }
                match self.word.load(Relaxed) {
                    OPEN => break,
                    FAST => {
                        if spins < FAST_SPINS {
                            spins += 1;
                            spin();
                        } else {
                            yield_now();
                        }
                    }
                    _ => return false,
                }
            }
            if self
                .word
                .compare_exchange_weak(OPEN, FAST, Acquire, Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    #[inline]
    fn leave(&self) {
        self.word.store(OPEN, Release);
    }

    /// Admits `cost` at `now` if the lane is open and every limit (and the in-flight cap)
    /// admits it at once; `None` sends the caller to the mutex, where the engine decides.
    ///
    /// The caller reads the clock before entering: the lane is held for as short a time as
    /// can be, which is what two callers at once wait for.
    #[inline(always)]
    pub(crate) fn try_admit(&self, now: Nanos, cost: &Cost) -> Option<Admission> {
        if !self.enter() {
            return None;
        }
        let admission = self.admit_inside(now, cost, true);
        self.leave();
        admission
    }

    /// [`try_admit`](Self::try_admit) for an admission that is over at once, with no permit
    /// ([`Limiter::try_admit`](super::Limiter::try_admit)): a full in-flight cap still denies
    /// it, but it takes no slot, which it would give back at once. False sends the caller to
    /// the mutex.
    #[inline(always)]
    pub(crate) fn try_count(&self, now: Nanos, cost: &Cost) -> bool {
        if !self.enter() {
            return false;
        }
        // Not held: no slot is taken, and the admission (whose marks are not worked out: they
        // would only serve a permit's settlement) is dropped here.
        let admitted = self.admit_inside(now, cost, false).is_some();
        self.leave();
        admitted
    }

    /// The decision and its writes, with the lane entered. A held admission (`hold`: it makes a
    /// permit) takes its in-flight slot and records its policy epoch and marks; one that is
    /// not only checks the cap, and its marks are not to be used.
    #[inline(always)]
    fn admit_inside(&self, now: Nanos, cost: &Cost, hold: bool) -> Option<Admission> {
        if now < self.paused_until.load(Relaxed) {
            return None;
        }
        let shape = self.shape.load(Relaxed);
        let len = (shape & LEN) as usize;
        // As the engine: every non-zero cost takes a slot when the policy caps them.
        let takes_slot = shape & CAPPED != 0 && !cost.is_zero();
        let in_flight = if takes_slot {
            let held = self.in_flight.load(Relaxed);
            if held >= self.max_in_flight.load(Relaxed) {
                return None;
            }
            held
        } else {
            0
        };
        let marks = if len == 1 {
            // One limit (a plain rate limit): its own short path, which keeps no other
            // limits' steps in registers.
            let l = &self.limits[0];
            let step = l.step(now, cost, hold)?;
            l.apply(&step);
            Marks::inline([step.mark, 0, 0, 0])
        } else {
            self.admit_all(len, now, cost, hold)?
        };
        self.admitted
            .store(self.admitted.load(Relaxed) + 1, Relaxed);
        if now > self.latest.load(Relaxed) {
            self.latest.store(now, Relaxed);
        }
        let takes_slot = takes_slot && hold;
        if takes_slot {
            self.in_flight.store(in_flight + 1, Relaxed);
        }
        Some(Admission {
            slots: u8::from(takes_slot),
            epoch: if hold { self.epoch.load(Relaxed) } else { 0 },
            marks,
            keyed: None,
        })
    }

    /// The limits' part of [`admit_inside`](Self::admit_inside) for `len` limits, all or
    /// nothing: every limit decides (and works out its state after the admission), then every
    /// limit is written. Place by place, so the steps stay in registers.
    #[inline(always)]
    fn admit_all(&self, len: usize, now: Nanos, cost: &Cost, hold: bool) -> Option<Marks> {
        let steps = [
            self.step_at(0, len, now, cost, hold)?,
            self.step_at(1, len, now, cost, hold)?,
            self.step_at(2, len, now, cost, hold)?,
            self.step_at(3, len, now, cost, hold)?,
        ];
        for (l, step) in self.limits.iter().zip(&steps).take(len) {
            l.apply(step);
        }
        Some(Marks::inline(steps.map(|s| s.mark)))
    }

    /// The step of the limit in place `i` (of `len` in use), or none.
    #[inline(always)]
    fn step_at(&self, i: usize, len: usize, now: Nanos, cost: &Cost, hold: bool) -> Option<Step> {
        match self.limits.get(i) {
            Some(l) if i < len => l.step(now, cost, hold),
            _ => Some(Step::default()),
        }
    }

    /// Gives back an in-flight slot of the limiter's own budget if the lane is open (then
    /// nobody waits on that budget, so nobody is to be served); false sends the caller to
    /// the mutex.
    #[inline]
    pub(crate) fn try_release(&self) -> bool {
        if !self.enter() {
            return false;
        }
        let held = self.in_flight.load(Relaxed);
        self.in_flight.store(held.saturating_sub(1), Relaxed);
        self.leave();
        true
    }

    /// Takes the lane for the mutex holder, waiting out a caller inside it; returns whether it
    /// was open (it held the state: [`pull`](Self::pull) it). A closed lane is left as it is:
    /// only the mutex holder opens it, so nobody else can enter it meanwhile.
    #[inline]
    pub(crate) fn claim(&self) -> bool {
        if self.word.load(Acquire) == CLOSED {
            return false;
        }
        self.claim_open()
    }

    /// [`claim`](Self::claim) of a lane that is not closed.
    #[inline(never)]
    fn claim_open(&self) -> bool {
        self.pending.store(true, Relaxed);
        let mut tries = 0u32;
        loop {
            // Open, or a caller inside (the mutex holder is the only one to close it). Read
            // before trying, so the wait does not take the line from the caller inside.
            if self.word.load(Relaxed) == OPEN
                && self
                    .word
                    .compare_exchange_weak(OPEN, SLOW, Acquire, Relaxed)
                    .is_ok()
            {
                self.pending.store(false, Relaxed);
                return true;
            }
            if tries < SLOW_SPINS {
                tries += 1;
                spin();
            } else {
                yield_now();
            }
        }
    }

    /// Moves the state the open lane held into `root` (claimed, and `root`'s policy is the
    /// one the lane was opened with), and returns the latest instant it admitted at.
    #[inline(never)]
    pub(crate) fn pull(&self, root: &mut Budget) -> Nanos {
        let len = root.limits.len().min(LANE_LIMITS);
        for ((l, state), counters) in self.limits[..len]
            .iter()
            .zip(root.limits.iter_mut())
            .zip(root.counters.limits.iter_mut())
        {
            *state = LimitState::Gcra(GcraState {
                tat: l.tat.load(Relaxed),
                overshoot: l.overshoot.load(Relaxed),
                refunded: l.refunded.load(Relaxed),
            });
            counters.charged = counters.charged.saturating_add(l.charged.load(Relaxed));
            l.charged.store(0, Relaxed);
        }
        let admitted = self.admitted.load(Relaxed);
        self.admitted.store(0, Relaxed);
        root.counters.admitted = root.counters.admitted.saturating_add(admitted);
        root.counters.waits.record_no_waits(admitted);
        root.in_flight = self.in_flight.load(Relaxed);
        self.latest.load(Relaxed)
    }

    /// Writes the rules of `policy` (which [`fits`](Self::fits)) into the claimed lane.
    #[cold]
    pub(crate) fn set_policy(&self, policy: &Policy) {
        let len = policy.limits.len().min(LANE_LIMITS);
        for (l, p) in self.limits.iter().zip(&policy.limits[..len]) {
            if let (Some(parts), Some(code)) = (p.rule.bucket_parts(), p.measure.code()) {
                l.set(parts, code);
            }
        }
        let capped = if policy.max_in_flight.is_some() {
            CAPPED
        } else {
            0
        };
        self.shape.store(len as u32 | capped, Relaxed);
        self.max_in_flight
            .store(policy.max_in_flight.unwrap_or(0), Relaxed);
    }

    /// Lets go of the lane the mutex holder has (claimed, or closed): open with `root`'s state
    /// when `open` (its policy was set with [`set_policy`](Self::set_policy)), else closed.
    #[inline]
    pub(crate) fn release(&self, root: &Budget, open: bool) {
        if open {
            self.open(root);
        } else if self.word.load(Relaxed) != CLOSED {
            // Claimed: close it. (Closed already: nothing changes, and nothing is written.)
            self.open_hint.store(false, Relaxed);
            self.word.store(CLOSED, Release);
        }
    }

    /// Opens the lane with `root`'s state.
    #[inline(never)]
    fn open(&self, root: &Budget) {
        for (l, state) in self.limits.iter().zip(&root.limits) {
            if let LimitState::Gcra(s) = state {
                l.tat.store(s.tat, Relaxed);
                l.overshoot.store(s.overshoot, Relaxed);
                l.refunded.store(s.refunded, Relaxed);
            }
        }
        self.epoch.store(root.epoch, Relaxed);
        self.in_flight.store(root.in_flight, Relaxed);
        self.paused_until.store(root.paused_until, Relaxed);
        if !self.open_hint.load(Relaxed) {
            self.open_hint.store(true, Relaxed);
        }
        self.word.store(OPEN, Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limiter::{Limiter, LANE_IN_USE};
    use crate::{Algorithm, Cost, Dimension, Limit, ManualClock, Policy};

    fn limiter(limit: Limit) -> Limiter<ManualClock> {
        // Exact instants: these tests are about the lane, not the safety margin.
        let policy = Policy::builder()
            .limit(Dimension::Requests, limit)
            .margin(std::time::Duration::ZERO)
            .build()
            .expect("a valid policy");
        Limiter::with_clock(policy, ManualClock::new())
    }

    /// Admissions the lane made and the mutex holder has not yet pulled into the budget.
    fn in_lane(limiter: &Limiter<ManualClock>) -> u64 {
        limiter.shared.lane.admitted.load(Relaxed)
    }

    /// The tests of tests/lane.rs hold the lane to the engine's answers; this one holds the
    /// limiter to using it: a policy that fits decides there, without the mutex (whose holder
    /// would have pulled the count), and one that does not fit never opens it.
    #[test]
    fn a_policy_that_fits_is_decided_in_the_lane() {
        let bucket = limiter(Limit::per_second(10).algorithm(Algorithm::TokenBucket));
        let open = bucket.shared.lane.word.load(Relaxed) == OPEN;
        assert_eq!(open, LANE_IN_USE);
        assert_eq!(bucket.shared.lane.open_hint.load(Relaxed), LANE_IN_USE);
        let permit = bucket.try_acquire(Cost::request()).expect("admitted");
        bucket.try_admit(Cost::request()).expect("admitted");
        assert_eq!(in_lane(&bucket), if LANE_IN_USE { 2 } else { 0 });
        // Stats take the mutex, which pulls the lane's state into the budget: nothing is lost.
        assert_eq!(bucket.stats().admitted, 2);
        assert_eq!(in_lane(&bucket), 0);
        drop(permit);

        let window = limiter(Limit::per_second(10));
        window.try_admit(Cost::request()).expect("admitted");
        assert_eq!(window.shared.lane.word.load(Relaxed), CLOSED);
        assert!(!window.shared.lane.open_hint.load(Relaxed));
        assert_eq!(in_lane(&window), 0);
        assert_eq!(window.stats().admitted, 1);
    }

    /// A waiter closes the lane (nobody may overtake it), and the lane opens again once the
    /// queue is empty. The waiter is an async acquisition polled by hand in a paused runtime.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_waiter_closes_the_lane_until_it_is_served() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};

        if !LANE_IN_USE {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let bucket = limiter(Limit::per_second(1).algorithm(Algorithm::TokenBucket));
        let mut cx = Context::from_waker(Waker::noop());
        bucket.try_admit(Cost::request()).expect("admitted");
        let mut waiting = pin!(bucket.acquire(Cost::request()));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(bucket.shared.lane.word.load(Relaxed), CLOSED);
        assert!(!bucket.shared.lane.open_hint.load(Relaxed));
        bucket.clock().advance(Duration::from_secs(1));
        let Poll::Ready(Ok(permit)) = waiting.as_mut().poll(&mut cx) else {
            panic!("the waiter is admitted once its wait is over");
        };
        assert_eq!(bucket.shared.lane.word.load(Relaxed), OPEN);
        assert!(bucket.shared.lane.open_hint.load(Relaxed));
        drop(permit);
        bucket
            .try_admit(Cost::request())
            .expect_err("the second within the second");
    }
}
