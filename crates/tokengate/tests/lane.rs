//! The lock-free lane against the engine under the mutex, differentially.
//!
//! A limiter whose own policy is made of at most four token or leaky buckets on built-in
//! dimensions admits (and frees in-flight slots) in its lane, without the mutex; everything the
//! lane cannot decide at once goes to the engine, which must mean exactly the same. Each case
//! runs one random schedule on two limiters sharing one [`ManualClock`]:
//! - **A**: a random policy that fits the lane (0 to 4 buckets, small amounts, periods of 1 s to
//!   120 s in whole or odd nanoseconds, optional bursts, an optional in-flight cap);
//! - **B**: the same policy plus a token bucket on a user-named dimension that no cost carries,
//!   with an amount so large it never binds: B does not fit the lane, so every one of its
//!   decisions is the engine's.
//!
//! Operations: `try_acquire` (zero costs, costs above capacity, weighted amounts that overflow),
//! `try_admit` (on B: the engine's `try_admit`, or `try_acquire` with the permit dropped at once,
//! which is what it means),
//! acquisitions with a zero timeout (blocking, and async polled once by hand), settlements with
//! random usage, dropped permits, `into_owned`, clock steps (0, 1 ns, milliseconds, seconds),
//! pauses, provider reports that lower a limit or (when adopted) replace its amount, and stats.
//! After every step A and B must give the same answer (the same permit, or the same
//! [`Denied`] / [`AcquireError`]); stats (everything but B's extra limit) are compared after
//! every step in half the cases, and only at `Stats` steps and at the end in the other half, so
//! that state the lane accumulates between two pulls is checked too. A second property adds
//! waiters (async acquisitions polled by hand inside a paused tokio runtime, which close the
//! lane while they wait) to the same schedules.
//!
//! Plain tests pin the lane's edge cases: a slot freed in the lane, a pause while it is open,
//! costs of `u64::MAX`, an exact refund of a lane admission, a waiter closing the lane (a zero
//! cost that the limits would admit is still `WaitersAhead`; a freed slot goes to the waiter).
//!
//! Failures are persisted next to this file (`lane.proptest-regressions`) and replayed first.
//!
//! Run it without the `tracing` and `metrics` features: with either, the lane stays closed
//! (each admission is reported with its budget's policy, read under the lock), and both
//! limiters are the engine's. `cargo test -p tokengate --test lane` (256 cases per property);
//! `PROPTEST_CASES=2000 cargo test --release -p tokengate --test lane` for more.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use tokengate::feedback::ProviderReport;
use tokengate::{
    Acquire, AcquireError, Algorithm, Cost, Denied, Dimension, Limit, Limiter, ManualClock, Permit,
    Policy, PolicyBuilder, Stats, Usage,
};

/// The user-named dimension of B's extra limit: no cost carries it.
const UNUSED: &str = "unused_dimension";

// ---------------------------------------------------------------------------------------------
// Policies.
// ---------------------------------------------------------------------------------------------

/// What a limit counts.
#[derive(Debug, Clone, Copy)]
enum Dim {
    Requests,
    Input,
    Output,
    /// `Dimension::Tokens` through `PolicyBuilder::limit` (weights 1 and 1).
    Tokens,
    /// `combined_tokens` with these input and output weights.
    Weighted(u64, u64),
}

#[derive(Debug, Clone)]
struct LimitSpec {
    dim: Dim,
    leaky: bool,
    amount: u64,
    period_ns: u64,
    /// Only for token buckets.
    burst: Option<u64>,
    /// The safety margin (given always, so that the lane and the engine are held to it
    /// whatever the default).
    margin_ns: u64,
}

impl LimitSpec {
    fn limit(&self) -> Limit {
        let algorithm = if self.leaky {
            Algorithm::LeakyBucket
        } else {
            Algorithm::TokenBucket
        };
        let limit = Limit::new(self.amount, Duration::from_nanos(self.period_ns))
            .algorithm(algorithm)
            .margin(Duration::from_nanos(self.margin_ns));
        match self.burst {
            Some(b) if !self.leaky => limit.burst(b),
            _ => limit,
        }
    }

    fn add_to(&self, builder: PolicyBuilder) -> PolicyBuilder {
        let limit = self.limit();
        match self.dim {
            Dim::Requests => builder.limit(Dimension::Requests, limit),
            Dim::Input => builder.limit(Dimension::InputTokens, limit),
            Dim::Output => builder.limit(Dimension::OutputTokens, limit),
            Dim::Tokens => builder.limit(Dimension::Tokens, limit),
            Dim::Weighted(i, o) => builder.combined_tokens(limit, i, o),
        }
    }
}

#[derive(Debug, Clone)]
struct PolicySpec {
    limits: Vec<LimitSpec>,
    max_in_flight: Option<u64>,
}

impl PolicySpec {
    fn builder(&self) -> PolicyBuilder {
        let mut builder = self
            .limits
            .iter()
            .fold(Policy::builder(), |b, l| l.add_to(b));
        if let Some(n) = self.max_in_flight {
            builder = builder.max_in_flight(n);
        }
        builder
    }

    /// A's policy: fits the lane.
    fn lane(&self) -> Policy {
        self.builder().build().expect("valid policy")
    }

    /// B's policy: A's plus a limit on a dimension no cost carries, too large to ever bind.
    fn engine(&self) -> Policy {
        let never = Limit::per_second(1 << 50).algorithm(Algorithm::TokenBucket);
        self.builder()
            .custom(UNUSED, never)
            .build()
            .expect("valid policy")
    }

    /// The two limiters on one clock.
    fn limiters(&self) -> (Limiter<ManualClock>, Limiter<ManualClock>) {
        let clock = ManualClock::new();
        (
            Limiter::with_clock(self.lane(), clock.clone()),
            Limiter::with_clock(self.engine(), clock),
        )
    }
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        3 => Just(Dim::Requests),
        3 => Just(Dim::Input),
        3 => Just(Dim::Output),
        1 => Just(Dim::Tokens),
        2 => (0..=3u64, 1..=5u64).prop_map(|(i, o)| Dim::Weighted(i, o)),
    ]
}

fn limit_spec() -> impl Strategy<Value = LimitSpec> {
    const S: u64 = 1_000_000_000;
    let period = prop_oneof![(1..=120u64).prop_map(|s| s * S), S..=120 * S];
    let margin = prop_oneof![Just(0u64), 1..=50_000_000u64];
    (dim(), any::<bool>(), 1..=50u64, period, margin).prop_flat_map(
        |(dim, leaky, amount, period_ns, margin_ns)| {
            prop::option::of(1..=amount).prop_map(move |burst| LimitSpec {
                dim,
                leaky,
                amount,
                period_ns,
                burst,
                margin_ns,
            })
        },
    )
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        prop::collection::vec(limit_spec(), 0..=4),
        prop::option::of(1..=4u64),
    )
        .prop_map(|(limits, max_in_flight)| PolicySpec {
            // A policy needs a limit or an in-flight cap.
            max_in_flight: if limits.is_empty() {
                max_in_flight.or(Some(2))
            } else {
                max_in_flight
            },
            limits,
        })
}

// ---------------------------------------------------------------------------------------------
// Schedules.
// ---------------------------------------------------------------------------------------------

fn tokens() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        8 => 1..=5u64,
        4 => 0..=20u64,
        2 => 0..=120u64,
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX / 2), Just(1u64 << 62)],
    ]
}

fn cost() -> impl Strategy<Value = Cost> {
    prop_oneof![
        1 => Just(Cost::zero()),
        12 => (prop_oneof![6 => Just(1u64), 1 => Just(0u64), 1 => 0..=3u64], tokens(), tokens())
            .prop_map(|(r, i, o)| Cost::request().with_requests(r).input(i).output(o)),
    ]
}

fn usage() -> impl Strategy<Value = Usage> {
    // Mostly below what was reserved (a refund), sometimes above (a charge into debt).
    let figure = prop_oneof![
        6 => 0..=3u64,
        3 => 0..=20u64,
        1 => 0..=80u64,
        1 => Just(u64::MAX),
    ];
    (prop::option::of(figure.clone()), prop::option::of(figure)).prop_map(|(i, o)| {
        let mut usage = Usage::new();
        if let Some(i) = i {
            usage = usage.input(i);
        }
        if let Some(o) = o {
            usage = usage.output(o);
        }
        usage
    })
}

fn step_ns() -> impl Strategy<Value = u64> {
    const MS: u64 = 1_000_000;
    prop_oneof![
        2 => Just(0u64),
        2 => Just(1u64),
        1 => 1..=1_000u64,
        4 => (1..=3_000u64).prop_map(|n| n * MS),
        2 => 1..=5_000 * MS,
        2 => (1..=200u64).prop_map(|s| s * 1_000 * MS),
    ]
}

/// A provider report on one dimension: its limit and remaining figures, if given.
#[derive(Debug, Clone)]
struct Report {
    dim: usize,
    limit: Option<u64>,
    remaining: Option<u64>,
    retry_after_secs: Option<u64>,
}

impl Report {
    fn report(&self) -> ProviderReport {
        let names = [
            (
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
            ),
            ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"),
            (
                "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-remaining",
            ),
            (
                "anthropic-ratelimit-output-tokens-limit",
                "anthropic-ratelimit-output-tokens-remaining",
            ),
        ];
        let (limit, remaining) = names[self.dim % names.len()];
        let mut headers = Vec::new();
        if let Some(l) = self.limit {
            headers.push((limit.to_owned(), l.to_string()));
        }
        if let Some(r) = self.remaining {
            headers.push((remaining.to_owned(), r.to_string()));
        }
        if let Some(s) = self.retry_after_secs {
            headers.push(("retry-after".to_owned(), s.to_string()));
        }
        ProviderReport::from_headers(headers, SystemTime::UNIX_EPOCH)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Try(Cost),
    /// `try_admit` on A; on B, `try_admit` too (the engine's, which frees the slot under the
    /// same lock) or, when the flag is set, what it is defined as: `try_acquire` and the permit
    /// dropped.
    Admit(Cost, bool),
    /// `acquire_blocking_timeout(cost, 0)`, or `acquire_timeout(cost, 0)` polled once: never
    /// waits (without waiters ahead, it never even queues).
    ZeroTimeout {
        cost: Cost,
        blocking: bool,
    },
    Settle(Index, Usage),
    Drop(Index),
    IntoOwned(Index),
    Advance(u64),
    Pause(u64),
    Stats,
    Observe(Report),
    Adopt(bool),
    /// `acquire` (no timeout) or `acquire_timeout`, polled once; kept while it waits.
    Wait {
        cost: Cost,
        timeout_ns: Option<u64>,
    },
    /// Polls one waiter again.
    Poll(Index),
    /// Polls every waiter, in arrival order.
    PollAll,
    /// Cancels one waiter.
    Cancel(Index),
}

fn report() -> impl Strategy<Value = Report> {
    (
        0..4usize,
        prop::option::of(1..=60u64),
        prop::option::of(0..=60u64),
        prop::option::weighted(0.2, 0..=5u64),
    )
        .prop_map(|(dim, limit, remaining, retry_after_secs)| Report {
            dim,
            limit,
            remaining,
            retry_after_secs,
        })
}

/// Operations without waiters.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => cost().prop_map(Op::Try),
        6 => (cost(), any::<bool>()).prop_map(|(cost, defined)| Op::Admit(cost, defined)),
        3 => (cost(), any::<bool>()).prop_map(|(cost, blocking)| Op::ZeroTimeout { cost, blocking }),
        5 => (any::<Index>(), usage()).prop_map(|(i, u)| Op::Settle(i, u)),
        5 => any::<Index>().prop_map(Op::Drop),
        2 => any::<Index>().prop_map(Op::IntoOwned),
        12 => step_ns().prop_map(Op::Advance),
        1 => (0..=3_000_000_000u64).prop_map(Op::Pause),
        2 => Just(Op::Stats),
        1 => report().prop_map(Op::Observe),
        1 => any::<bool>().prop_map(Op::Adopt),
    ]
}

/// Operations with waiters too.
fn op_with_waiters() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => op(),
        3 => (cost(), prop::option::of(prop_oneof![Just(0u64), step_ns()]))
            .prop_map(|(cost, timeout_ns)| Op::Wait { cost, timeout_ns }),
        2 => any::<Index>().prop_map(Op::Poll),
        2 => Just(Op::PollAll),
        1 => any::<Index>().prop_map(Op::Cancel),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running a schedule on both limiters.
// ---------------------------------------------------------------------------------------------

type Pair<'a> = (Permit<'a, ManualClock>, Permit<'a, ManualClock>);

/// B's stats without its extra limit (checked to be untouched), to compare with A's.
fn shared_stats(b: &Limiter<ManualClock>) -> Result<Stats, TestCaseError> {
    let mut stats = b.stats();
    let extra = stats.limits.pop().expect("B has its extra limit");
    prop_assert_eq!(extra.dimension, Dimension::Custom(UNUSED.into()));
    prop_assert_eq!(extra.used, 0);
    Ok(stats)
}

fn check_stats(
    a: &Limiter<ManualClock>,
    b: &Limiter<ManualClock>,
    step: usize,
) -> Result<(), TestCaseError> {
    let sa = a.stats();
    let sb = shared_stats(b)?;
    prop_assert_eq!(sa, sb, "stats differ after step {}", step);
    Ok(())
}

/// Compares the two outcomes of one acquisition; keeps the permits.
fn compare<'a, E: PartialEq + std::fmt::Debug>(
    ra: Result<Permit<'a, ManualClock>, E>,
    rb: Result<Permit<'a, ManualClock>, E>,
    held: &mut Vec<Pair<'a>>,
    step: usize,
) -> Result<(), TestCaseError> {
    match (ra, rb) {
        (Ok(pa), Ok(pb)) => {
            prop_assert_eq!(pa.cost(), pb.cost(), "step {}", step);
            prop_assert_eq!(pa.admitted_at(), pb.admitted_at(), "step {}", step);
            held.push((pa, pb));
        }
        (Err(ea), Err(eb)) => prop_assert_eq!(ea, eb, "step {}", step),
        (ra, rb) => {
            return Err(TestCaseError::fail(format!(
                "step {step}: A (lane) {:?} but B (engine) {:?}",
                ra.map(|p| p.cost().clone()),
                rb.map(|p| p.cost().clone())
            )))
        }
    }
    Ok(())
}

/// Polls `fut` once by hand, with a waker that does nothing (the tests poll again themselves).
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

type Waiter<'a> = (Acquire<'a, ManualClock>, Acquire<'a, ManualClock>);

/// Polls both futures of waiter `i` once: both must still wait, or both be done alike.
/// Returns whether they are done (and then removes them).
fn poll_waiter<'a>(
    waiters: &mut Vec<Waiter<'a>>,
    i: usize,
    held: &mut Vec<Pair<'a>>,
    step: usize,
) -> Result<bool, TestCaseError> {
    let (fa, fb) = &mut waiters[i];
    match (poll_once(fa), poll_once(fb)) {
        (Poll::Pending, Poll::Pending) => Ok(false),
        (Poll::Ready(ra), Poll::Ready(rb)) => {
            compare(ra, rb, held, step)?;
            drop(waiters.remove(i));
            Ok(true)
        }
        (pa, pb) => Err(TestCaseError::fail(format!(
            "step {step}: waiter {i} is {:?} on A (lane) but {:?} on B (engine)",
            pa.map(|r| r.map(|p| p.cost().clone())),
            pb.map(|r| r.map(|p| p.cost().clone()))
        ))),
    }
}

/// Runs `ops` on A and B (see the module docs); `every_step` compares stats after each step.
fn run(spec: &PolicySpec, ops: &[Op], every_step: bool) -> Result<(), TestCaseError> {
    // Async acquisitions sleep on tokio's timer: a paused runtime that never runs, entered so
    // they can make their timers; the clock is the manual one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let (a, b) = spec.limiters();
    let clock = a.clock().clone();
    let mut held: Vec<Pair<'_>> = Vec::new();
    let mut waiters: Vec<Waiter<'_>> = Vec::new();
    check_stats(&a, &b, 0)?;
    for (step, op) in ops.iter().enumerate() {
        let step = step + 1;
        match op {
            Op::Try(cost) => {
                compare(
                    a.try_acquire(cost.clone()),
                    b.try_acquire(cost.clone()),
                    &mut held,
                    step,
                )?;
            }
            Op::Admit(cost, defined) => {
                let ra = a.try_admit(cost.clone());
                let rb = if *defined {
                    b.try_acquire(cost.clone()).map(drop)
                } else {
                    b.try_admit(cost.clone())
                };
                prop_assert_eq!(ra, rb, "step {}", step);
            }
            Op::ZeroTimeout {
                cost,
                blocking: true,
            } => compare(
                a.acquire_blocking_timeout(cost.clone(), Duration::ZERO),
                b.acquire_blocking_timeout(cost.clone(), Duration::ZERO),
                &mut held,
                step,
            )?,
            Op::ZeroTimeout {
                cost,
                blocking: false,
            } => {
                let mut fa = a.acquire_timeout(cost.clone(), Duration::ZERO);
                let mut fb = b.acquire_timeout(cost.clone(), Duration::ZERO);
                match (poll_once(&mut fa), poll_once(&mut fb)) {
                    (Poll::Ready(ra), Poll::Ready(rb)) => compare(ra, rb, &mut held, step)?,
                    (pa, pb) => prop_assert!(
                        false,
                        "step {}: a zero timeout still waits: A {:?}, B {:?}",
                        step,
                        pa.is_ready(),
                        pb.is_ready()
                    ),
                }
            }
            Op::Settle(i, usage) => {
                if !held.is_empty() {
                    let (pa, pb) = held.remove(i.index(held.len()));
                    pa.settle(usage.clone());
                    pb.settle(usage.clone());
                }
            }
            Op::Drop(i) => {
                if !held.is_empty() {
                    let (pa, pb) = held.remove(i.index(held.len()));
                    drop(pa);
                    drop(pb);
                }
            }
            Op::IntoOwned(i) => {
                if !held.is_empty() {
                    let i = i.index(held.len());
                    let (pa, pb) = held.swap_remove(i);
                    held.push((pa.into_owned(), pb.into_owned()));
                }
            }
            Op::Advance(ns) => clock.advance(Duration::from_nanos(*ns)),
            Op::Pause(ns) => {
                a.pause(Duration::from_nanos(*ns));
                b.pause(Duration::from_nanos(*ns));
            }
            Op::Stats => check_stats(&a, &b, step)?,
            Op::Observe(report) => {
                let report = report.report();
                prop_assert_eq!(a.observe(&report), b.observe(&report), "step {}", step);
            }
            Op::Adopt(on) => {
                a.adopt_reported_limits(*on);
                b.adopt_reported_limits(*on);
            }
            Op::Wait { cost, timeout_ns } => {
                let (fa, fb) = match timeout_ns {
                    None => (a.acquire(cost.clone()), b.acquire(cost.clone())),
                    Some(t) => (
                        a.acquire_timeout(cost.clone(), Duration::from_nanos(*t)),
                        b.acquire_timeout(cost.clone(), Duration::from_nanos(*t)),
                    ),
                };
                waiters.push((fa, fb));
                let last = waiters.len() - 1;
                poll_waiter(&mut waiters, last, &mut held, step)?;
            }
            Op::Poll(i) => {
                if !waiters.is_empty() {
                    let i = i.index(waiters.len());
                    poll_waiter(&mut waiters, i, &mut held, step)?;
                }
            }
            Op::PollAll => {
                let mut i = 0;
                while i < waiters.len() {
                    if !poll_waiter(&mut waiters, i, &mut held, step)? {
                        i += 1;
                    }
                }
            }
            Op::Cancel(i) => {
                if !waiters.is_empty() {
                    let (fa, fb) = waiters.remove(i.index(waiters.len()));
                    drop(fa);
                    drop(fb);
                }
            }
        }
        if every_step {
            check_stats(&a, &b, step)?;
        }
    }
    let end = ops.len() + 1;
    check_stats(&a, &b, end)?;
    // Cancel what still waits, then let every permit go, comparing as each goes.
    while let Some((fa, fb)) = waiters.pop() {
        drop(fa);
        drop(fb);
        check_stats(&a, &b, end)?;
    }
    while let Some((pa, pb)) = held.pop() {
        drop(pa);
        drop(pb);
        check_stats(&a, &b, end)?;
    }
    prop_assert_eq!(a.stats().in_flight, 0);
    // And both still agree on what comes next.
    let probe = Cost::request().input(1).output(1);
    compare(
        a.try_acquire(probe.clone()),
        b.try_acquire(probe),
        &mut held,
        end,
    )?;
    drop(held);
    check_stats(&a, &b, end)
}

proptest! {
    /// Without waiters: every `try_acquire` A decides in its lane (or sends to the engine) is
    /// decided as B's engine decides it, with the same state and counters after.
    #[test]
    fn lane_agrees_with_engine(
        spec in policy_spec(),
        ops in prop::collection::vec(op(), 1..120),
        every_step in any::<bool>(),
    ) {
        run(&spec, &ops, every_step)?;
    }

    /// With waiters coming and going (the lane closes while one waits, and opens again).
    #[test]
    fn lane_agrees_with_engine_with_waiters(
        spec in policy_spec(),
        ops in prop::collection::vec(op_with_waiters(), 1..120),
        every_step in any::<bool>(),
    ) {
        run(&spec, &ops, every_step)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Edge cases of the lane.
// ---------------------------------------------------------------------------------------------

const S: u64 = 1_000_000_000;

fn bucket(amount: u64, secs: u64) -> Limit {
    Limit::new(amount, Duration::from_secs(secs)).algorithm(Algorithm::TokenBucket)
}

fn spec(limits: Vec<LimitSpec>, max_in_flight: Option<u64>) -> PolicySpec {
    PolicySpec {
        limits,
        max_in_flight,
    }
}

fn token_bucket(dim: Dim, amount: u64, secs: u64) -> LimitSpec {
    LimitSpec {
        dim,
        leaky: false,
        amount,
        period_ns: secs * S,
        burst: None,
        margin_ns: 0,
    }
}

/// Asserts A and B agree on their stats now.
fn same_stats(a: &Limiter<ManualClock>, b: &Limiter<ManualClock>) -> Stats {
    let sa = a.stats();
    let mut sb = b.stats();
    sb.limits.pop();
    assert_eq!(sa, sb);
    sa
}

#[test]
fn a_slot_freed_in_the_lane_shows_in_stats() {
    let (a, b) = spec(vec![token_bucket(Dim::Requests, 10, 1)], Some(2)).limiters();
    for l in [&a, &b] {
        let first = l.try_acquire(Cost::request()).expect("admitted");
        assert_eq!(l.stats().in_flight, 1);
        drop(first);
        assert_eq!(l.stats().in_flight, 0);
        // Both slots, then the cap; a dropped permit's slot serves the next at once.
        let one = l.try_acquire(Cost::request()).expect("admitted");
        let _two = l.try_acquire(Cost::request()).expect("admitted");
        assert_eq!(
            l.try_acquire(Cost::request()).unwrap_err(),
            Denied::InFlightFull { max: 2 }
        );
        // A zero cost takes no slot: admitted while the cap is reached.
        drop(l.try_acquire(Cost::zero()).expect("a peek needs no slot"));
        drop(one);
        let three = l.try_acquire(Cost::request()).expect("admitted");
        assert_eq!(l.stats().in_flight, 2);
        drop(three);
    }
    let stats = same_stats(&a, &b);
    assert_eq!((stats.in_flight, stats.admitted, stats.denied), (0, 5, 1));
}

#[test]
fn pause_denies_while_the_lane_is_open() {
    let (a, b) = spec(vec![token_bucket(Dim::Requests, 10, 1)], None).limiters();
    let clock = a.clock().clone();
    for l in [&a, &b] {
        drop(l.try_acquire(Cost::request()).expect("admitted"));
        l.pause(Duration::from_secs(2));
        assert_eq!(
            l.try_acquire(Cost::request()).unwrap_err(),
            Denied::Paused {
                wait: Duration::from_secs(2)
            }
        );
        // Even a peek, which no limit holds back.
        assert_eq!(
            l.try_acquire(Cost::zero()).unwrap_err(),
            Denied::Paused {
                wait: Duration::from_secs(2)
            }
        );
    }
    clock.advance(Duration::from_nanos(2 * S - 1));
    for l in [&a, &b] {
        assert_eq!(
            l.try_acquire(Cost::request()).unwrap_err(),
            Denied::Paused {
                wait: Duration::from_nanos(1)
            }
        );
    }
    clock.advance(Duration::from_nanos(1));
    for l in [&a, &b] {
        drop(l.try_acquire(Cost::request()).expect("the pause is over"));
    }
    let stats = same_stats(&a, &b);
    assert_eq!((stats.admitted, stats.denied, stats.throttled), (2, 3, 1));
}

#[test]
fn costs_of_u64_max_are_never_admitted_alike() {
    let (a, b) = spec(
        vec![
            token_bucket(Dim::Requests, 10, 1),
            token_bucket(Dim::Input, 50, 60),
            token_bucket(Dim::Weighted(1, 5), 50, 60),
        ],
        Some(3),
    )
    .limiters();
    let costs = [
        Cost::request().input(u64::MAX),
        Cost::request().output(u64::MAX),
        Cost::request().with_requests(u64::MAX),
        Cost::request().output(u64::MAX / 2),
    ];
    for cost in costs {
        let da = a.try_acquire(cost.clone()).unwrap_err();
        let db = b.try_acquire(cost.clone()).unwrap_err();
        assert_eq!(da, db, "{cost:?}");
        assert!(
            matches!(
                da,
                Denied::Never(AcquireError::Exceeds { .. } | AcquireError::Overflow { .. })
            ),
            "{cost:?}: {da:?}"
        );
    }
    // The weighted amount overflows 64 bits; the input one is above the capacity.
    for l in [&a, &b] {
        assert!(matches!(
            l.try_acquire(Cost::request().output(u64::MAX / 2)),
            Err(Denied::Never(AcquireError::Overflow {
                dimension: Dimension::Tokens
            }))
        ));
        assert!(matches!(
            l.try_acquire(Cost::request().input(u64::MAX)),
            Err(Denied::Never(AcquireError::Exceeds {
                dimension: Dimension::InputTokens,
                cost: u64::MAX,
                capacity: 50,
                ..
            }))
        ));
    }
    let stats = same_stats(&a, &b);
    assert_eq!((stats.admitted, stats.rejected, stats.in_flight), (0, 6, 0));
}

#[test]
fn settling_a_lane_admission_refunds_exactly() {
    let (a, b) = spec(
        vec![
            token_bucket(Dim::Requests, 10, 1),
            token_bucket(Dim::Input, 100, 60),
            token_bucket(Dim::Output, 100, 60),
        ],
        Some(1),
    )
    .limiters();
    for l in [&a, &b] {
        let permit = l.try_acquire(Cost::request().input(80).output(60)).unwrap();
        let stats = l.stats();
        assert_eq!(
            (stats.limits[1].used, stats.limits[2].used, stats.in_flight),
            (80, 60, 1)
        );
        permit.settle(Usage::new().input(30).output(90));
        let stats = l.stats();
        // Input: 50 back; output: 30 more charged.
        assert_eq!((stats.limits[1].used, stats.limits[1].refunded), (30, 50));
        assert_eq!((stats.limits[1].charged, stats.limits[2].charged), (80, 90));
        assert_eq!((stats.limits[2].used, stats.limits[2].refunded), (90, 0));
        assert_eq!((stats.in_flight, stats.settled), (0, 1));
    }
    same_stats(&a, &b);
    // A later settlement of an into_owned permit, after part of the bucket refilled.
    let clock = a.clock().clone();
    let pa = a
        .try_acquire(Cost::request().input(40))
        .unwrap()
        .into_owned();
    let pb = b
        .try_acquire(Cost::request().input(40))
        .unwrap()
        .into_owned();
    clock.advance(Duration::from_millis(6_300));
    same_stats(&a, &b);
    pa.settle(Usage::new().input(7));
    pb.settle(Usage::new().input(7));
    let stats = same_stats(&a, &b);
    assert_eq!(stats.in_flight, 0);
}

/// Refunds move every later admission forward; the running total of what they gave back must
/// survive the trips between the lane and the engine, or a later refund gives back units that
/// have drained already.
#[test]
fn refund_bookkeeping_survives_the_lane() {
    // One input token a second, burst 10.
    let (a, b) = spec(vec![token_bucket(Dim::Input, 10, 10)], None).limiters();
    let clock = a.clock().clone();
    let x = (
        a.try_acquire(Cost::request().input(4)).unwrap(),
        b.try_acquire(Cost::request().input(4)).unwrap(),
    );
    let y = (
        a.try_acquire(Cost::request().input(4)).unwrap(),
        b.try_acquire(Cost::request().input(4)).unwrap(),
    );
    // X comes back whole (under the mutex); Y now drains by 4 s.
    x.0.settle(Usage::new().input(0));
    x.1.settle(Usage::new().input(0));
    // Z in the lane: drains by 5 s.
    let _z = (
        a.try_acquire(Cost::request().input(1)).unwrap(),
        b.try_acquire(Cost::request().input(1)).unwrap(),
    );
    clock.advance(Duration::from_secs(3));
    // At 3 s one unit of Y and Z's unit are held; Y gives back its one.
    y.0.settle(Usage::new().input(0));
    y.1.settle(Usage::new().input(0));
    let stats = same_stats(&a, &b);
    assert_eq!(stats.limits[0].used, 1);
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

#[test]
fn a_waiter_closes_the_lane() {
    let runtime = paused_runtime();
    let _entered = runtime.enter();
    // One request a second, burst 1.
    let (a, b) = spec(vec![token_bucket(Dim::Requests, 1, 1)], None).limiters();
    let clock = a.clock().clone();
    let first = (
        a.try_acquire(Cost::request()),
        b.try_acquire(Cost::request()),
    );
    assert!(first.0.is_ok() && first.1.is_ok());
    let mut waiting = (a.acquire(Cost::request()), b.acquire(Cost::request()));
    assert!(poll_once(&mut waiting.0).is_pending());
    assert!(poll_once(&mut waiting.1).is_pending());
    for l in [&a, &b] {
        assert_eq!(l.stats().waiters, 1);
        assert_eq!(
            l.try_acquire(Cost::request()).unwrap_err(),
            Denied::WaitersAhead { waiters: 1 }
        );
        // A peek the limits would admit (no bucket is in debt) must not overtake either.
        assert_eq!(
            l.try_acquire(Cost::zero()).unwrap_err(),
            Denied::WaitersAhead { waiters: 1 }
        );
    }
    clock.advance(Duration::from_secs(1));
    let (Poll::Ready(Ok(pa)), Poll::Ready(Ok(pb))) =
        (poll_once(&mut waiting.0), poll_once(&mut waiting.1))
    else {
        panic!("the waiter is admitted once its wait is over");
    };
    assert_eq!((pa.admitted_at(), pb.admitted_at()), (S, S));
    same_stats(&a, &b);
    // Nobody waits any more: the lane decides again, as the engine does.
    clock.advance(Duration::from_secs(1));
    for l in [&a, &b] {
        drop(l.try_acquire(Cost::request()).expect("admitted"));
        assert!(matches!(
            l.try_acquire(Cost::request()),
            Err(Denied::RateLimited { .. })
        ));
    }
    let stats = same_stats(&a, &b);
    assert_eq!((stats.admitted, stats.denied, stats.waiters), (3, 3, 0));
}

#[test]
fn a_slot_freed_while_a_waiter_waits_goes_to_the_waiter() {
    let runtime = paused_runtime();
    let _entered = runtime.enter();
    let (a, b) = spec(vec![token_bucket(Dim::Requests, 100, 1)], Some(1)).limiters();
    let held = (
        a.try_acquire(Cost::request()).unwrap(),
        b.try_acquire(Cost::request()).unwrap(),
    );
    let mut waiting = (a.acquire(Cost::request()), b.acquire(Cost::request()));
    assert!(poll_once(&mut waiting.0).is_pending());
    assert!(poll_once(&mut waiting.1).is_pending());
    // The lane is closed: freeing the slot goes through the engine, which admits the waiter.
    drop(held);
    assert_eq!((a.stats().in_flight, a.stats().waiters), (1, 0));
    let (Poll::Ready(Ok(pa)), Poll::Ready(Ok(pb))) =
        (poll_once(&mut waiting.0), poll_once(&mut waiting.1))
    else {
        panic!("the waiter got the freed slot");
    };
    for l in [&a, &b] {
        assert_eq!(
            l.try_acquire(Cost::request()).unwrap_err(),
            Denied::InFlightFull { max: 1 }
        );
    }
    same_stats(&a, &b);
    drop((pa, pb));
    let stats = same_stats(&a, &b);
    assert_eq!((stats.in_flight, stats.admitted), (0, 2));
}

/// A cap of `u64::MAX` in flight is still a cap: every non-zero cost takes a slot, in the lane
/// as in the engine.
#[test]
fn an_in_flight_cap_of_u64_max_counts_slots_in_the_lane_too() {
    let (a, b) = spec(vec![token_bucket(Dim::Requests, 10, 1)], Some(u64::MAX)).limiters();
    let pa = a.try_acquire(Cost::request()).unwrap();
    let pb = b.try_acquire(Cost::request()).unwrap();
    assert_eq!(b.stats().in_flight, 1);
    assert_eq!(a.stats().in_flight, 1, "the lane took no slot");
    drop((pa, pb));
    same_stats(&a, &b);
}

#[test]
fn a_limit_on_a_custom_dimension_is_checked_too() {
    // The differential relies on B's extra limit never binding and never showing: check it.
    let policy = Policy::builder()
        .limit(Dimension::Requests, bucket(1, 1))
        .custom(UNUSED, bucket(1 << 50, 1))
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, ManualClock::new());
    let _p = limiter.try_acquire(Cost::request().input(5)).unwrap();
    let stats = limiter.stats();
    assert_eq!(stats.limits.len(), 2);
    assert_eq!(stats.limits[1].used, 0);
    assert!(matches!(
        limiter.try_acquire(Cost::request()),
        Err(Denied::RateLimited {
            dimension: Dimension::Requests,
            ..
        })
    ));
}

#[test]
fn debug_output_shows_what_the_lane_holds() {
    // Three admissions in the lane: the limiter's Debug output reads the state under the lock,
    // which takes the lane's part first.
    let (a, _) = spec(vec![token_bucket(Dim::Requests, 10, 1)], None).limiters();
    for _ in 0..3 {
        drop(a.try_acquire(Cost::request()).unwrap());
    }
    let debug = format!("{a:?}");
    assert!(debug.contains("admitted: 3"), "{debug}");
    assert!(debug.contains("charged: 3"), "{debug}");
}
