//! The admission rules of the in-process limiter, held on a manual clock through the public
//! API: all or nothing, exact waits for every algorithm, the binding dimension, impossible
//! costs, zero-cost peeks, settlement, and the blocking front end (one real-time smoke test).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::windows::most_in_window;
use tokengate::{
    core::Nanos, AcquireError, Algorithm, Clock, Cost, Denied, Dimension, Limit, Limiter,
    ManualClock, Permit, Policy, PolicyBuilder, Stats, SystemClock, Usage,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// A limiter of `builder`'s policy on a manual clock. Its limits are exact, with no safety
/// margin (`Limit::margin`): these tests are about the algorithms' exact instants.
fn manual(builder: PolicyBuilder) -> (Limiter<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(
        builder
            .margin(Duration::ZERO)
            .build()
            .expect("valid policy"),
        clock.clone(),
    );
    (limiter, clock)
}

fn one(dimension: Dimension, limit: Limit) -> (Limiter<ManualClock>, ManualClock) {
    manual(Policy::builder().limit(dimension, limit))
}

fn bucket(amount: u64, period: Duration) -> Limit {
    Limit::new(amount, period).algorithm(Algorithm::TokenBucket)
}

/// Unwraps a rate-limit denial: `(dimension, cost, wait)`.
fn rate_limited<C: Clock>(result: Result<Permit<'_, C>, Denied>) -> (Dimension, u64, Duration) {
    match result {
        Err(Denied::RateLimited {
            dimension,
            cost,
            wait,
            ..
        }) => (dimension, cost, wait),
        Err(other) => panic!("expected RateLimited, got {other:?}"),
        Ok(permit) => panic!("expected RateLimited, got admitted: {permit:?}"),
    }
}

fn wait_of<C: Clock>(result: Result<Permit<'_, C>, Denied>) -> Duration {
    rate_limited(result).2
}

fn exceeds(err: &AcquireError) -> (&Dimension, u64, u64) {
    match err {
        AcquireError::Exceeds {
            dimension,
            cost,
            capacity,
            ..
        } => (dimension, *cost, *capacity),
        other => panic!("expected Exceeds, got {other:?}"),
    }
}

fn never<C: Clock>(result: Result<Permit<'_, C>, Denied>) -> AcquireError {
    match result {
        Err(Denied::Never(e)) => e,
        Err(other) => panic!("expected Never, got {other:?}"),
        Ok(permit) => panic!("expected Never, got admitted: {permit:?}"),
    }
}

/// The wait `try_acquire(cost)` reports at the clock's now must be `expected`, and exact: one
/// nanosecond earlier the cost is still denied (with a wait of 1 ns), at `now + expected` it is
/// admitted. Returns the permit.
fn assert_exact_wait<'a>(
    limiter: &'a Limiter<ManualClock>,
    clock: &ManualClock,
    cost: &Cost,
    expected: Duration,
) -> Permit<'a, ManualClock> {
    let now = clock.now();
    let wait = wait_of(limiter.try_acquire(cost.clone()));
    assert_eq!(wait, expected, "wait at {now} ns for {cost:?}");
    let wait = u64::try_from(wait.as_nanos()).unwrap();
    clock.set(now + wait - 1);
    assert_eq!(
        wait_of(limiter.try_acquire(cost.clone())),
        ns(1),
        "1 ns before the reported instant the cost is still denied"
    );
    clock.set(now + wait);
    limiter
        .try_acquire(cost.clone())
        .expect("admitted at exactly now + wait")
}

/// `stats` after one more denial of `before`: nothing else changed.
fn after_one_denial(before: &Stats) -> Stats {
    let mut expected = before.clone();
    expected.denied += 1;
    expected
}

/// Runs a blocking acquisition that must return at once on a manual clock (which never moves
/// by itself, so one that waited would never return): fails the test after 30 s of real time
/// instead of hanging. Returns when the permit was admitted, or the error.
fn blocking_at_once(
    limiter: &Limiter<ManualClock>,
    cost: Cost,
    timeout: Option<Duration>,
) -> Result<u64, AcquireError> {
    let limiter = limiter.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = match timeout {
            Some(t) => limiter.acquire_blocking_timeout(cost, t),
            None => limiter.acquire_blocking(cost),
        };
        let _ = tx.send(result.map(|p| p.admitted_at()));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the blocking acquisition waited instead of returning at once")
}

fn limit_stats<'s>(stats: &'s Stats, dimension: &Dimension) -> &'s tokengate::LimitStats {
    stats
        .limits
        .iter()
        .find(|l| &l.dimension == dimension)
        .unwrap_or_else(|| panic!("no {dimension} limit in {stats:?}"))
}

// ---------------------------------------------------------------------------------------------
// All or nothing; a denial changes no state.
// ---------------------------------------------------------------------------------------------

fn three_limits() -> PolicyBuilder {
    Policy::builder()
        .limit(Dimension::Requests, bucket(10, Duration::from_secs(1)))
        .limit(
            Dimension::InputTokens,
            Limit::per_second(100).algorithm(Algorithm::FixedWindow),
        )
        .limit(
            Dimension::OutputTokens,
            Limit::per_second(50).algorithm(Algorithm::SlidingWindowLog),
        )
}

#[test]
fn one_limit_denying_charges_nothing_on_the_others() {
    let (limiter, clock) = manual(three_limits());
    let _held = limiter.try_acquire(Cost::request().output(40)).unwrap();
    let before = limiter.stats();

    // Requests and input tokens would admit; output tokens (40 of 50 used) deny.
    let denied = limiter.try_acquire(Cost::request().input(30).output(20));
    let (dimension, cost, wait) = rate_limited(denied);
    assert_eq!(
        (dimension, cost, wait),
        (Dimension::OutputTokens, 20, ns(S))
    );
    assert_eq!(limiter.stats(), after_one_denial(&before));

    // Nothing was charged on the input window: its whole capacity is still there.
    let s = limiter.stats();
    assert_eq!(limit_stats(&s, &Dimension::InputTokens).used, 0);
    assert_eq!(limit_stats(&s, &Dimension::InputTokens).charged, 0);
    assert_eq!(limit_stats(&s, &Dimension::Requests).charged, 1);
    let _full_input = limiter
        .try_acquire(Cost::request().input(100))
        .expect("input untouched by the denial");
    // And the request bucket holds 10 - 2 = 8 more, no fewer.
    for _ in 0..8 {
        drop(
            limiter
                .try_acquire(Cost::request())
                .expect("requests untouched"),
        );
    }
    assert_eq!(wait_of(limiter.try_acquire(Cost::request())), ns(100 * MS));
    assert_eq!(clock.now(), 0);
}

#[test]
fn in_flight_denial_charges_no_rate_limit() {
    let (limiter, _clock) = manual(three_limits().max_in_flight(1));
    let held = limiter.try_acquire(Cost::request().input(1)).unwrap();
    let before = limiter.stats();
    assert!(matches!(
        limiter.try_acquire(Cost::request().input(50).output(50)),
        Err(Denied::InFlightFull { max: 1 })
    ));
    assert_eq!(limiter.stats(), after_one_denial(&before));
    drop(held);
    // The whole reservation that was denied fits now: it was never charged.
    let _p = limiter
        .try_acquire(Cost::request().input(99).output(50))
        .unwrap();
}

#[test]
fn impossible_cost_on_a_later_limit_charges_nothing_on_earlier_ones() {
    let (limiter, _clock) = manual(three_limits());
    let before = limiter.stats();
    let err = never(limiter.try_acquire(Cost::request().input(10).output(51)));
    assert_eq!(exceeds(&err), (&Dimension::OutputTokens, 51, 50));
    let mut expected = before.clone();
    expected.rejected += 1;
    assert_eq!(limiter.stats(), expected);
    assert!(limiter
        .stats()
        .limits
        .iter()
        .all(|l| l.charged == 0 && l.used == 0));
}

#[test]
fn a_denial_changes_no_state_for_any_algorithm() {
    for algorithm in Algorithm::ALL {
        let (limiter, clock) = one(
            Dimension::InputTokens,
            Limit::new(10, Duration::from_secs(1)).algorithm(algorithm),
        );
        clock.set(250 * MS);
        let _p = limiter.try_acquire(Cost::request().input(10)).unwrap();
        clock.set(400 * MS);
        let before = limiter.stats();
        let first = wait_of(limiter.try_acquire(Cost::request().input(7)));
        // Denials repeated any number of times push nothing back.
        for _ in 0..100 {
            assert_eq!(
                wait_of(limiter.try_acquire(Cost::request().input(7))),
                first
            );
        }
        let mut expected = before.clone();
        expected.denied += 101;
        assert_eq!(limiter.stats(), expected, "{algorithm}");
    }
}

/// A manual clock that can stall the next reader right after it has read the time, as a thread
/// preempted between reading the clock and taking the limiter's lock would be.
#[derive(Clone, Default)]
struct StallingClock {
    time: ManualClock,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Default)]
struct Gate {
    armed: bool,
    stalled: bool,
    released: bool,
}

impl StallingClock {
    fn arm(&self) {
        self.gate.0.lock().unwrap().armed = true;
    }

    fn until_stalled(&self) {
        let (gate, cv) = &*self.gate;
        let _g = cv.wait_while(gate.lock().unwrap(), |g| !g.stalled).unwrap();
    }

    fn release(&self) {
        let (gate, cv) = &*self.gate;
        gate.lock().unwrap().released = true;
        cv.notify_all();
    }
}

impl Clock for StallingClock {
    fn now(&self) -> Nanos {
        let t = self.time.now();
        let (gate, cv) = &*self.gate;
        let mut g = gate.lock().unwrap();
        if g.armed {
            g.armed = false;
            g.stalled = true;
            cv.notify_all();
            let _g = cv.wait_while(g, |g| !g.released).unwrap();
        }
        t
    }
}

/// Thread A reads the clock at 999 ms, in a window that another admission already filled, and
/// reaches the lock only after thread B has admitted `b_cost` at 1.5 s, in the next window. A must
/// be judged against what its window holds (or at B's later instant), not against an empty
/// window.
fn assert_a_stale_instant_cannot_overfill(algorithm: Algorithm, b_cost: u64) {
    let clock = StallingClock::default();
    let limiter = Limiter::with_clock(
        Policy::builder()
            .limit(
                Dimension::Requests,
                Limit::per_second(10).algorithm(algorithm),
            )
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let ten = Cost::zero().with_requests(10);
    clock.time.set(500 * MS);
    let _c = limiter.try_acquire(ten.clone()).unwrap(); // window [0, 1 s) is full
    clock.time.set(999 * MS);
    clock.arm();
    let a = std::thread::scope(|s| {
        let a = s.spawn(|| limiter.try_acquire(ten.clone()).map(|p| p.admitted_at()));
        clock.until_stalled();
        clock.time.set(1_500 * MS);
        let _b = limiter
            .try_acquire(Cost::zero().with_requests(b_cost))
            .unwrap_or_else(|d| panic!("{algorithm}: B: {d}"));
        clock.release();
        a.join().unwrap()
    });
    assert!(
        a.is_err(),
        "{algorithm}: 10 more admitted (at {a:?} ns) on top of the 10 of [0, 1 s) and the \
         {b_cost} of B: {:?}",
        limiter.stats().limits[0]
    );
}

#[test]
fn an_instant_read_before_the_lock_cannot_overfill_a_fixed_window() {
    assert_a_stale_instant_cannot_overfill(Algorithm::FixedWindow, 10);
}

#[test]
fn an_instant_read_before_the_lock_cannot_overfill_a_sliding_window_counter() {
    // At 1.5 s the previous window's 10 weigh 5: B takes the other 5.
    assert_a_stale_instant_cannot_overfill(Algorithm::SlidingWindowCounter, 5);
}

#[test]
fn an_instant_read_before_the_lock_is_harmless_for_the_other_algorithms() {
    // The same schedule, for the algorithms whose state is kept in absolute instants.
    for (algorithm, b_cost) in [
        (Algorithm::SlidingWindowLog, 5),
        (Algorithm::TokenBucket, 5),
        (Algorithm::SmoothWindow, 5),
    ] {
        assert_a_stale_instant_cannot_overfill(algorithm, b_cost);
    }
}

/// Thread A reads the clock at 990 ms, when [0, 1 s) already holds 3 of 3, and reaches the
/// lock only after thread B, at 1.05 s, has admitted 1 and let the 2 admitted at 0 leave the
/// log. Judged at its stale instant against that log, A would see room for 1 and be admitted
/// "at 990 ms": a fourth admission in [0, 1 s) by the instants the permits report. It must be
/// decided, and reported, no earlier than B.
#[test]
fn an_instant_read_before_the_lock_is_never_reported_before_a_later_admission() {
    let smooth = Limit::per_second(3).burst(3);
    for limit in [
        Limit::per_second(3).algorithm(Algorithm::SlidingWindowLog),
        smooth,
    ] {
        let name = limit.to_string();
        let clock = StallingClock::default();
        let limiter = Limiter::with_clock(
            Policy::builder()
                .limit(Dimension::Requests, limit)
                .margin(Duration::ZERO)
                .build()
                .unwrap(),
            clock.clone(),
        );
        let mut admitted = vec![(0, 2)];
        let _c = limiter.try_acquire(Cost::zero().with_requests(2)).unwrap();
        clock.time.set(750 * MS);
        let _d = limiter.try_acquire(Cost::request()).unwrap();
        admitted.push((750 * MS, 1));
        clock.time.set(990 * MS);
        clock.arm();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                limiter
                    .try_acquire(Cost::request())
                    .map(|p| p.admitted_at())
            });
            clock.until_stalled();
            clock.time.set(1_050 * MS);
            let b = limiter
                .try_acquire(Cost::request())
                .unwrap_or_else(|d| panic!("{name}: B: {d}"))
                .admitted_at();
            clock.release();
            (a.join().unwrap(), b)
        });
        admitted.push((b, 1));
        if let Ok(at) = a {
            assert!(at >= b, "{name}: A reported at {at} ns, before B at {b} ns");
            admitted.push((at, 1));
        }
        admitted.sort_unstable();
        // At most 3 in any window [t, t + 1 s), by the reported instants.
        let points: Vec<(Duration, u64)> = admitted.iter().map(|&(t, n)| (ns(t), n)).collect();
        let most = most_in_window(&points, Duration::from_secs(1));
        assert!(most <= 3, "{name}: {most} in one second: {admitted:?}");
    }
}

/// A settlement reads the clock at 0.2 s and reaches the lock only after B, at 1 s, has taken a
/// full bucket (in the lock-free lane, when the features leave it open). Refunded at its stale
/// instant, A's settlement would give back 0.8 s that B's admission already took, and let C
/// in at 1.2 s: 2,000 tokens in 0.2 s from a bucket of 1,000.
#[test]
fn a_settlement_that_read_the_clock_before_a_later_admission_refunds_nothing_it_took() {
    let clock = StallingClock::default();
    let limiter = Limiter::with_clock(
        Policy::builder()
            .limit(
                Dimension::OutputTokens,
                Limit::per_second(1_000).algorithm(Algorithm::TokenBucket),
            )
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let thousand = Cost::zero().output(1_000);
    let a = limiter.try_acquire(thousand.clone()).unwrap();
    clock.time.set(200 * MS);
    clock.arm();
    let b = std::thread::scope(|s| {
        let settling = s.spawn(|| a.settle(Usage::new().output(0)));
        clock.until_stalled();
        clock.time.set(S);
        let b = limiter.try_acquire(thousand.clone()).unwrap();
        clock.release();
        settling.join().unwrap();
        b
    });
    assert_eq!(b.admitted_at(), S);
    clock.time.set(1_200 * MS);
    // B's 1,000 have left the bucket only at 2 s.
    assert_eq!(wait_of(limiter.try_acquire(thousand)), ns(800 * MS));
}

// ---------------------------------------------------------------------------------------------
// Exact waits, per algorithm, through the limiter.
// ---------------------------------------------------------------------------------------------

#[test]
fn exact_wait_smooth_window_pace() {
    // 7 per minute: burst 1, one unit every 60/7 s = 8_571_428_571.4 ns, rounded up.
    let (limiter, clock) = manual(Policy::builder().requests_per_minute(7));
    let _a = limiter.try_acquire(Cost::request()).unwrap();
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(8_571_428_572));
    let _c = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(8_571_428_572));
}

#[test]
fn exact_wait_smooth_window_bound_by_the_window() {
    // 3 per 3 s with a burst of 3: the bucket would admit one unit at 1 s, the exact window
    // only when the first admission leaves it, at 3 s.
    let (limiter, clock) = one(
        Dimension::Requests,
        Limit::new(3, Duration::from_secs(3)).burst(3),
    );
    let _a = limiter
        .try_acquire(Cost::request().with_requests(3))
        .unwrap();
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(3 * S));
}

#[test]
fn exact_wait_smooth_window_after_an_oversize_cost() {
    // 60 per minute, burst 1: a cost of 5 is admitted on a full bucket and leaves 4 s of debt.
    let (limiter, clock) = manual(Policy::builder().requests_per_minute(60));
    let _a = limiter
        .try_acquire(Cost::zero().with_requests(5))
        .expect("oversize cost admitted when the bucket is full");
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(5 * S));
}

#[test]
fn exact_wait_token_bucket() {
    // 3 per second, burst 3: two units take ceil(2e9 / 3) ns to come back.
    let (limiter, clock) = one(Dimension::InputTokens, bucket(3, Duration::from_secs(1)));
    let _a = limiter.try_acquire(Cost::request().input(3)).unwrap();
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request().input(2), ns(666_666_667));
}

#[test]
fn exact_wait_leaky_bucket() {
    // 3 per second, evenly spaced: one unit every ceil(1e9 / 3) ns.
    let (limiter, clock) = one(
        Dimension::Requests,
        Limit::per_second(3).algorithm(Algorithm::LeakyBucket),
    );
    let _a = limiter.try_acquire(Cost::request()).unwrap();
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(333_333_334));
    // An oversize cost waits for a full (empty of debt) bucket, then the next waits it out.
    let _c = assert_exact_wait(
        &limiter,
        &clock,
        &Cost::zero().with_requests(3),
        ns(333_333_334),
    );
    let _d = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(S));
}

#[test]
fn exact_wait_sliding_window_log() {
    let (limiter, clock) = one(
        Dimension::InputTokens,
        Limit::per_second(5).algorithm(Algorithm::SlidingWindowLog),
    );
    let _a = limiter.try_acquire(Cost::request().input(2)).unwrap();
    clock.set(300 * MS);
    let _b = limiter.try_acquire(Cost::request().input(3)).unwrap();
    clock.set(400 * MS);
    // Three units need both admissions to leave the window (the second at 1.3 s); two need
    // only the first (at 1 s).
    assert_eq!(
        wait_of(limiter.try_acquire(Cost::request().input(3))),
        ns(900 * MS)
    );
    let _c = assert_exact_wait(&limiter, &clock, &Cost::request().input(2), ns(600 * MS));
}

#[test]
fn exact_wait_sliding_window_counter() {
    let (limiter, clock) = one(
        Dimension::InputTokens,
        Limit::per_second(10).algorithm(Algorithm::SlidingWindowCounter),
    );
    clock.set(300 * MS);
    let _a = limiter.try_acquire(Cost::request().input(7)).unwrap();
    clock.set(1_250 * MS);
    // The previous window's 7 weigh ceil(7 * (1 - e)); 5 more fit when that is at most 5:
    // e >= 1 - floor(5e9 / 7) ns = 285_714_286 ns into the window.
    let _b = assert_exact_wait(
        &limiter,
        &clock,
        &Cost::request().input(5),
        ns(S + 285_714_286 - 1_250 * MS),
    );
}

#[test]
fn exact_wait_fixed_window() {
    let (limiter, clock) = one(
        Dimension::Requests,
        Limit::per_second(4).algorithm(Algorithm::FixedWindow),
    );
    clock.set(700 * MS);
    let _a = limiter
        .try_acquire(Cost::request().with_requests(4))
        .unwrap();
    let _b = assert_exact_wait(&limiter, &clock, &Cost::request(), ns(300 * MS));
}

// ---------------------------------------------------------------------------------------------
// The binding dimension.
// ---------------------------------------------------------------------------------------------

fn binding_policy() -> PolicyBuilder {
    Policy::builder()
        .limit(Dimension::Requests, bucket(2, Duration::from_secs(1)))
        .limit(Dimension::InputTokens, bucket(100, Duration::from_secs(1)))
        .limit(
            Dimension::OutputTokens,
            Limit::per_second(50).algorithm(Algorithm::FixedWindow),
        )
}

#[test]
fn denial_names_the_limit_with_the_longest_wait() {
    let (limiter, clock) = manual(binding_policy());
    let _p = limiter
        .try_acquire(Cost::request().with_requests(2).input(100).output(10))
        .unwrap();
    clock.set(MS);
    // Requests: 1 more needs 500 ms (499 ms from now); 10 input tokens need 100 ms.
    assert_eq!(
        rate_limited(limiter.try_acquire(Cost::request().input(10))),
        (Dimension::Requests, 1, ns(499 * MS))
    );
    // 80 input tokens need 800 ms: input binds, with its own cost.
    assert_eq!(
        rate_limited(limiter.try_acquire(Cost::request().input(80))),
        (Dimension::InputTokens, 80, ns(799 * MS))
    );
    // 45 output tokens wait for the next fixed window at 1 s; input 80 still binds at 800 ms.
    assert_eq!(
        rate_limited(limiter.try_acquire(Cost::request().input(80).output(45))),
        (Dimension::OutputTokens, 45, ns(999 * MS))
    );
    let denied = limiter
        .try_acquire(Cost::request().input(80).output(45))
        .unwrap_err();
    assert_eq!(denied.wait(), Some(ns(999 * MS)));
    let message = denied.to_string();
    for part in ["45 output_tokens", "50 per second (fixed window)", "999ms"] {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
}

#[test]
fn blocking_timeout_names_the_binding_limit_without_waiting() {
    let (limiter, clock) = manual(binding_policy());
    let _p = limiter
        .try_acquire(Cost::request().with_requests(2).input(100))
        .unwrap();
    let err = blocking_at_once(
        &limiter,
        Cost::request().input(80),
        Some(Duration::from_millis(700)),
    )
    .unwrap_err();
    assert_eq!(
        err,
        AcquireError::Timeout {
            dimension: Dimension::InputTokens,
            cost: 80,
            wait: Some(ns(800 * MS)),
            timeout: Duration::from_millis(700),
        }
    );
    let message = err.to_string();
    for part in ["80 input_tokens", "700ms", "800ms"] {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
    let s = limiter.stats();
    assert_eq!((s.timed_out, s.waiters, s.admitted), (1, 0, 1));
    assert_eq!(clock.now(), 0);
}

// ---------------------------------------------------------------------------------------------
// Costs above capacity, and overflow.
// ---------------------------------------------------------------------------------------------

#[test]
fn token_bucket_capacity_is_its_burst() {
    let limit = bucket(100, Duration::from_secs(1)).burst(10);
    let (limiter, _clock) = one(Dimension::InputTokens, limit);
    let err = never(limiter.try_acquire(Cost::request().input(11)));
    assert_eq!(exceeds(&err), (&Dimension::InputTokens, 11, 10));
    let message = err.to_string();
    for part in [
        "11 input_tokens",
        "100 per second (token bucket)",
        "at most 10",
        "split the request",
    ] {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
    let _p = limiter
        .try_acquire(Cost::request().input(10))
        .expect("exactly the burst is admitted");
    assert_eq!(limiter.stats().rejected, 1);
}

#[test]
fn capacity_is_the_amount_for_every_other_algorithm() {
    for algorithm in [
        Algorithm::SmoothWindow,
        Algorithm::LeakyBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::SlidingWindowCounter,
        Algorithm::FixedWindow,
    ] {
        let (limiter, _clock) = one(
            Dimension::OutputTokens,
            Limit::per_minute(600).algorithm(algorithm),
        );
        for over in [601, u64::MAX] {
            let err = never(limiter.try_acquire(Cost::request().output(over)));
            assert_eq!(
                exceeds(&err),
                (&Dimension::OutputTokens, over, 600),
                "{algorithm}"
            );
            assert!(err.to_string().contains("at most 600"), "{err}");
        }
        let _p = limiter
            .try_acquire(Cost::request().output(600))
            .unwrap_or_else(|d| panic!("{algorithm}: the whole amount is admitted: {d}"));
        assert_eq!(limiter.stats().rejected, 2);
    }
}

#[test]
fn impossible_costs_fail_at_once_on_the_blocking_front_end() {
    let (limiter, _clock) = manual(Policy::builder().requests_per_minute(60).limit(
        Dimension::InputTokens,
        bucket(1_000, Duration::from_secs(60)).burst(100),
    ));
    let err = blocking_at_once(&limiter, Cost::request().input(101), None).unwrap_err();
    assert_eq!(exceeds(&err), (&Dimension::InputTokens, 101, 100));
    let err = blocking_at_once(
        &limiter,
        Cost::zero().with_requests(u64::MAX),
        Some(Duration::from_secs(1)),
    )
    .unwrap_err();
    assert_eq!(exceeds(&err), (&Dimension::Requests, u64::MAX, 60));
    let s = limiter.stats();
    assert_eq!((s.rejected, s.waiters, s.admitted), (2, 0, 0));
}

#[test]
fn weighted_tokens_that_overflow_are_an_error() {
    let (limiter, _clock) = manual(Policy::builder().requests_per_minute(60).combined_tokens(
        Limit::per_minute(100_000),
        1,
        5,
    ));
    let huge = Cost::request().output(u64::MAX / 4);
    let err = never(limiter.try_acquire(huge.clone()));
    assert_eq!(
        err,
        AcquireError::Overflow {
            dimension: Dimension::Tokens
        }
    );
    assert!(err.to_string().contains("tokens amount"), "{err}");
    assert!(err.to_string().contains("overflows 64 bits"), "{err}");
    assert_eq!(
        blocking_at_once(&limiter, huge, None).unwrap_err(),
        AcquireError::Overflow {
            dimension: Dimension::Tokens
        }
    );
    // input * 1 + output * 5 that does not overflow but is above capacity is Exceeds.
    let err = never(limiter.try_acquire(Cost::request().input(1).output(20_000)));
    assert_eq!(exceeds(&err), (&Dimension::Tokens, 100_001, 100_000));
    let s = limiter.stats();
    assert_eq!((s.rejected, s.admitted), (3, 0));
    assert!(s.limits.iter().all(|l| l.charged == 0));
}

// ---------------------------------------------------------------------------------------------
// Zero-cost peeks.
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_cost_is_admitted_without_charging_or_holding_a_slot() {
    let (limiter, _clock) = manual(three_limits().max_in_flight(1));
    let held = limiter
        .try_acquire(Cost::request().input(60).output(50))
        .unwrap();
    let before = limiter.stats();
    // Output is at its window's amount and the only slot is held: a peek is still admitted.
    let peek = limiter.try_acquire(Cost::zero()).expect("peek admitted");
    let after = limiter.stats();
    assert_eq!(after.admitted, before.admitted + 1);
    assert_eq!(after.in_flight, 1);
    for (b, a) in before.limits.iter().zip(&after.limits) {
        assert_eq!(
            (a.used, a.charged, a.remaining),
            (b.used, b.charged, b.remaining)
        );
    }
    drop(peek);
    assert_eq!(
        limiter.stats().in_flight,
        1,
        "dropping a peek frees no slot"
    );
    drop(held);
    assert_eq!(limiter.stats().in_flight, 0);
}

#[test]
fn zero_cost_in_debt_is_denied_with_the_exact_wait() {
    // Token bucket 10/s: 10 reserved, 20 used: 1 s of debt beyond an empty bucket.
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(10, Duration::from_secs(1)));
    let p = limiter.try_acquire(Cost::request().output(10)).unwrap();
    // An empty bucket that is not in debt still admits a peek.
    drop(
        limiter
            .try_acquire(Cost::zero())
            .expect("empty but not in debt"),
    );
    p.settle(Usage::new().output(20));
    let (dimension, cost, _) = rate_limited(limiter.try_acquire(Cost::zero()));
    assert_eq!((dimension, cost), (Dimension::OutputTokens, 0));
    let _peek = assert_exact_wait(&limiter, &clock, &Cost::zero(), ns(S));
}

#[test]
fn zero_cost_after_an_oversize_admission_waits_out_the_debt() {
    // Smooth window, 60 per minute (burst 1): 5 at once leave the bucket 4 s in debt.
    let (limiter, clock) = manual(Policy::builder().requests_per_minute(60));
    let _p = limiter.try_acquire(Cost::zero().with_requests(5)).unwrap();
    let _peek = assert_exact_wait(&limiter, &clock, &Cost::zero(), ns(4 * S));
}

// ---------------------------------------------------------------------------------------------
// Settlement.
// ---------------------------------------------------------------------------------------------

#[test]
fn refund_comes_back_at_once() {
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)));
    let p = limiter.try_acquire(Cost::request().output(80)).unwrap();
    assert_eq!(limiter.stats().limits[0].remaining, 20);
    p.settle(Usage::new().output(30));
    let s = limiter.stats();
    assert_eq!(
        (
            s.limits[0].remaining,
            s.limits[0].refunded,
            s.limits[0].charged,
            s.settled
        ),
        (70, 50, 80, 1)
    );
    let _q = limiter
        .try_acquire(Cost::request().output(70))
        .expect("the refund is usable at once");
    assert_eq!(
        wait_of(limiter.try_acquire(Cost::request().output(1))),
        ns(10 * MS)
    );
    assert_eq!(clock.now(), 0);
}

#[test]
fn refund_never_fills_a_bucket_above_its_capacity() {
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)));
    let p = limiter.try_acquire(Cost::request().output(100)).unwrap();
    clock.set(500 * MS); // 50 have come back by refill
    p.settle(Usage::new().output(0)); // 100 more would make 150
    assert_eq!(limiter.stats().limits[0].remaining, 100);
    let _q = limiter.try_acquire(Cost::request().output(100)).unwrap();
    let _r = assert_exact_wait(&limiter, &clock, &Cost::request().output(1), ns(10 * MS));
}

#[test]
fn refund_in_a_window_gives_back_only_to_that_window() {
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindowLog] {
        let (limiter, clock) = one(
            Dimension::OutputTokens,
            Limit::per_second(100).algorithm(algorithm),
        );
        clock.set(100 * MS);
        let p = limiter.try_acquire(Cost::request().output(60)).unwrap();
        let _q = limiter.try_acquire(Cost::request().output(40)).unwrap();
        p.settle(Usage::new().output(10));
        assert_eq!(limiter.stats().limits[0].used, 50, "{algorithm}");
        let _r = limiter.try_acquire(Cost::request().output(50)).unwrap();
        assert!(
            limiter.try_acquire(Cost::request().output(1)).is_err(),
            "{algorithm}: never above the amount"
        );
    }
}

/// A permit admitted in an earlier window settles after another admission filled the current
/// one: the refund must not make room in the current window.
#[test]
fn late_refund_in_a_window_that_moved_on_is_harmless() {
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindowLog] {
        let (limiter, clock) = one(
            Dimension::OutputTokens,
            Limit::per_second(100).algorithm(algorithm),
        );
        let early = limiter.try_acquire(Cost::request().output(100)).unwrap();
        clock.set(S);
        let _current = limiter.try_acquire(Cost::request().output(100)).unwrap();
        let before = limiter.stats();
        early.settle(Usage::new().output(0));
        let after = limiter.stats();
        assert_eq!(after.limits[0].used, before.limits[0].used, "{algorithm}");
        assert_eq!(after.limits[0].remaining, 0, "{algorithm}");
        let (_, _, wait) = rate_limited(limiter.try_acquire(Cost::request().output(1)));
        assert_eq!(wait, ns(S), "{algorithm}");
    }
}

/// The same for the bucket algorithms: 100 units admitted at 0 have all come back by refill at
/// 1 s. A refund of them at 2 s, when the bucket has just been emptied by another admission,
/// must not refill it a second time (a provider's bucket would be empty: 429s).
#[test]
fn late_refund_does_not_refill_a_token_bucket_twice() {
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)));
    let early = limiter.try_acquire(Cost::request().output(100)).unwrap();
    clock.set(2 * S);
    let _current = limiter.try_acquire(Cost::request().output(100)).unwrap();
    early.settle(Usage::new().output(0));
    assert_eq!(
        limiter.stats().limits[0].remaining,
        0,
        "the early permit's units already came back by refill"
    );
    let (_, _, wait) = rate_limited(limiter.try_acquire(Cost::request().output(1)));
    assert_eq!(wait, ns(10 * MS));
}

/// The same for the smoothing bucket of the default algorithm: 6_000 per minute with a burst
/// of 100 paces at 100 a second.
#[test]
fn late_refund_does_not_refill_the_smooth_window_bucket_twice() {
    let (limiter, clock) = one(Dimension::OutputTokens, Limit::per_minute(6_000).burst(100));
    let early = limiter.try_acquire(Cost::request().output(100)).unwrap();
    clock.set(2 * S);
    let _current = limiter.try_acquire(Cost::request().output(100)).unwrap();
    early.settle(Usage::new().output(0));
    let (_, _, wait) = rate_limited(limiter.try_acquire(Cost::request().output(100)));
    assert_eq!(
        wait,
        ns(S),
        "200 tokens in one instant against a pace of 100 a second"
    );
}

#[test]
fn charge_goes_into_debt_and_later_requests_wait_the_extra_time() {
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)));
    let p = limiter.try_acquire(Cost::request().output(50)).unwrap();
    // Without the charge one more unit is admitted at once.
    drop(limiter.try_acquire(Cost::zero().output(1)).unwrap());
    p.settle(Usage::new().output(120)); // 70 more: the bucket (49 left) goes 21 into debt
    let s = limiter.stats();
    assert_eq!(
        (s.limits[0].charged, s.limits[0].refunded),
        (50 + 1 + 70, 0)
    );
    assert_eq!(s.limits[0].remaining, 0);
    // 21 units of debt + 1 unit at 10 ms each.
    let _q = assert_exact_wait(&limiter, &clock, &Cost::request().output(1), ns(220 * MS));
}

#[test]
fn one_charge_is_capped_at_one_period_amount() {
    let (limiter, clock) = one(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)));
    let p = limiter.try_acquire(Cost::request().output(50)).unwrap();
    p.settle(Usage::new().output(1_000_000));
    // 50 reserved + at most 100 charged: 50 units of debt beyond an empty bucket, + 1 unit.
    let _q = assert_exact_wait(&limiter, &clock, &Cost::request().output(1), ns(510 * MS));
}

#[test]
fn usage_equal_to_the_reservation_changes_nothing() {
    for algorithm in Algorithm::ALL {
        let (limiter, clock) = manual(
            Policy::builder()
                .limit(
                    Dimension::InputTokens,
                    Limit::per_second(1_000).algorithm(algorithm),
                )
                .limit(
                    Dimension::OutputTokens,
                    Limit::per_second(1_000).algorithm(algorithm),
                ),
        );
        let p = limiter
            .try_acquire(Cost::request().input(10).output(20))
            .unwrap();
        clock.set(3 * MS);
        let before = limiter.stats();
        let wait_before = limiter.try_acquire(Cost::request().input(1_000)).err();
        p.settle(Usage::new().input(10).output(20));
        let mut expected = before.clone();
        expected.settled += 1;
        expected.denied += 1; // the probe above
        assert_eq!(limiter.stats(), expected, "{algorithm}");
        assert_eq!(
            limiter.try_acquire(Cost::request().input(1_000)).err(),
            wait_before,
            "{algorithm}"
        );
    }
}

#[test]
fn usage_not_reported_is_taken_as_reserved() {
    let (limiter, _clock) = manual(
        Policy::builder()
            .limit(
                Dimension::InputTokens,
                bucket(1_000, Duration::from_secs(1)),
            )
            .limit(
                Dimension::OutputTokens,
                bucket(1_000, Duration::from_secs(1)),
            )
            .custom("images", bucket(10, Duration::from_secs(1))),
    );
    let p = limiter
        .try_acquire(Cost::request().input(100).output(200).with("images", 4))
        .unwrap();
    // Output refunded, images charged, input as reserved.
    p.settle(Usage::new().output(50).with("images", 6));
    let s = limiter.stats();
    let get = |d: Dimension| {
        let l = limit_stats(&s, &d);
        (l.charged, l.refunded, l.remaining)
    };
    assert_eq!(get(Dimension::InputTokens), (100, 0, 900));
    assert_eq!(get(Dimension::OutputTokens), (200, 150, 950));
    assert_eq!(get(Dimension::Custom("images".into())), (6, 0, 4));
}

#[test]
fn settle_frees_the_in_flight_slot() {
    let (limiter, _clock) = manual(
        Policy::builder()
            .requests_per_minute(6_000)
            .max_in_flight(1),
    );
    let p = limiter.try_acquire(Cost::request()).unwrap();
    assert!(matches!(
        limiter.try_acquire(Cost::request()),
        Err(Denied::InFlightFull { max: 1 })
    ));
    p.settle(Usage::new());
    let s = limiter.stats();
    assert_eq!((s.in_flight, s.settled), (0, 1));
    let _q = limiter
        .try_acquire(Cost::request())
        .expect("the slot is free");
}

#[test]
fn dropping_a_permit_frees_the_slot_and_keeps_the_reservation() {
    let (limiter, _clock) = manual(
        Policy::builder()
            .limit(Dimension::OutputTokens, bucket(100, Duration::from_secs(1)))
            .max_in_flight(1),
    );
    let p = limiter.try_acquire(Cost::request().output(60)).unwrap();
    drop(p);
    let s = limiter.stats();
    assert_eq!((s.in_flight, s.settled), (0, 0));
    assert_eq!((s.limits[0].remaining, s.limits[0].refunded), (40, 0));
}

// ---------------------------------------------------------------------------------------------
// The blocking front end, on the system clock (real time: generous bounds).
// ---------------------------------------------------------------------------------------------

/// The system clock, counting how often it is read.
#[derive(Clone)]
struct CountingClock(SystemClock, Arc<AtomicU64>);

impl Clock for CountingClock {
    fn now(&self) -> Nanos {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.now()
    }
}

#[test]
fn blocking_acquire_keeps_pace_across_threads_without_spinning() {
    const THREADS: usize = 4;
    const EACH: usize = 50;
    const ALL: u64 = (THREADS * EACH) as u64;
    let started = Instant::now();
    let reads = Arc::new(AtomicU64::new(0));
    // 1000 per second: burst ceil(1000 / 60) = 17, then one every millisecond.
    let limiter = Limiter::with_clock(
        Policy::builder()
            .limit(Dimension::Requests, Limit::per_second(1_000))
            .max_in_flight(2)
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        CountingClock(SystemClock::new(), Arc::clone(&reads)),
    );
    let admitted = Mutex::new(Vec::with_capacity(THREADS * EACH));
    let running = AtomicU64::new(0);
    let most_running = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..EACH {
                    let permit = limiter.acquire_blocking(Cost::request()).unwrap();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most_running.fetch_max(now, Ordering::SeqCst);
                    admitted.lock().unwrap().push(permit.admitted_at());
                    running.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let reads = reads.load(Ordering::Relaxed);
    let mut admitted = admitted.into_inner().unwrap();
    admitted.sort_unstable();
    assert_eq!(admitted.len() as u64, ALL);
    // The k-th admission (from 0) cannot come before (k + 1 - burst) ms.
    for (k, &at) in admitted.iter().enumerate() {
        let earliest = (k as u64 + 1).saturating_sub(17) * MS;
        assert!(
            at >= earliest,
            "admission {k} at {at} ns, before {earliest} ns"
        );
    }
    assert!(elapsed >= Duration::from_millis(183), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    assert!(most_running.load(Ordering::SeqCst) <= 2);
    let s = limiter.stats();
    assert_eq!((s.admitted, s.in_flight, s.waiters), (ALL, 0, 0));
    // A waiter parks until its instant: a few clock reads per admission, not a busy loop.
    assert!(
        reads <= 20 * ALL,
        "{reads} clock reads for {ALL} admissions in {elapsed:?}: blocked threads spin"
    );
}

#[test]
fn blocking_timeout_fails_at_once_when_the_wait_is_longer() {
    let limiter = Limiter::new(
        Policy::builder()
            .requests_per_minute(60)
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
    );
    let _p = limiter.acquire_blocking(Cost::request()).unwrap();
    let started = Instant::now();
    let err = limiter
        .acquire_blocking_timeout(Cost::request(), Duration::from_millis(500))
        .unwrap_err();
    let elapsed = started.elapsed();
    match err {
        AcquireError::Timeout {
            dimension,
            cost,
            wait: Some(wait),
            timeout,
        } => {
            assert_eq!((dimension, cost), (Dimension::Requests, 1));
            assert_eq!(timeout, Duration::from_millis(500));
            assert!(
                wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
                "{wait:?}"
            );
        }
        other => panic!("expected Timeout with a wait, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_millis(500),
        "it slept: {elapsed:?}"
    );
    assert_eq!(limiter.stats().timed_out, 1);
}

#[test]
fn an_owned_permit_keeps_the_slot_and_settles_once() {
    let (limiter, _clock) = manual(
        Policy::builder()
            // A second's worth (1,000) holds the 800 reserved: only the slot is in question.
            .output_tokens_per_minute(60_000)
            .max_in_flight(1),
    );
    let permit = limiter
        .try_acquire(Cost::request().output(800))
        .unwrap()
        .into_owned();
    // The borrowed permit is gone, the slot is not: a second request is held back.
    assert_eq!(limiter.stats().in_flight, 1);
    assert!(matches!(
        limiter.try_acquire(Cost::request().output(1)),
        Err(Denied::InFlightFull { max: 1 })
    ));
    let owned = std::thread::spawn(move || {
        permit.settle(Usage::new().output(300));
    });
    owned.join().unwrap();
    let stats = limiter.stats();
    assert_eq!((stats.in_flight, stats.settled), (0, 1));
    assert_eq!((stats.limits[0].used, stats.limits[0].refunded), (300, 500));
}

/// Near the end of the clock (2^64 - 1 ns, 584 years from its origin) every algorithm stays a
/// limit: an admission whose state would pass the end is never admitted, rather than admitted
/// on a state that wrapped or saturated into no limit.
#[test]
fn a_limit_at_the_end_of_the_clock_stays_a_limit() {
    for algorithm in Algorithm::ALL {
        let (limiter, clock) = one(
            Dimension::Requests,
            Limit::per_second(1).algorithm(algorithm),
        );
        clock.set(Nanos::MAX - 10 * S - S / 2);
        let mut admitted = 0;
        for _ in 0..20 {
            let result = limiter.try_acquire(Cost::request());
            if result.is_ok() {
                admitted += 1;
            } else {
                // A wait that ends before the end of the clock, or never.
                let wait = wait_of(result);
                assert!(
                    wait == Duration::MAX || wait <= ns(Nanos::MAX - clock.now()),
                    "{algorithm:?}: {wait:?}"
                );
            }
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(clock.now(), Nanos::MAX, "the manual clock stops at the end");
        // Calls at the end - 10.5 s, - 9.5 s, ..., - 0.5 s, then nine at the end itself. The
        // buckets need the second after an admission to fit before the end: the last is at
        // - 1.5 s. The log and the fixed window count an admission to the end when its window
        // would end past it (the fixed window's windows start 0.709551615 s before each call's
        // second), and admit the call at - 0.5 s. The counter weighs the window before at
        // 79%: every other call. Nothing at the end.
        let expected = match algorithm {
            Algorithm::SlidingWindowLog | Algorithm::FixedWindow => 11,
            Algorithm::SlidingWindowCounter => 6,
            _ => 10,
        };
        assert_eq!(admitted, expected, "{algorithm:?}");
    }
}

/// A period of centuries charged into debt puts a bucket's state past the end of the clock:
/// from there it admits nothing, and says so as a wait to the end, not an earlier instant.
#[test]
fn a_bucket_charged_past_the_end_of_the_clock_admits_no_more() {
    let three_centuries = Duration::from_secs(300 * 365 * 86_400);
    let (limiter, _clock) = one(Dimension::OutputTokens, bucket(1, three_centuries));
    let one_token = Cost::zero().output(1);
    let permit = limiter.try_acquire(one_token.clone()).unwrap();
    permit.settle(Usage::new().output(2)); // one more: 600 years of debt
    let denied = limiter.try_acquire(one_token.clone()).unwrap_err();
    assert_eq!(denied.wait(), Some(Duration::MAX), "never");
    assert!(
        denied.to_string().contains("admitted never by time alone"),
        "{denied}"
    );
    match limiter.acquire_blocking_timeout(one_token, Duration::from_secs(3_600)) {
        Err(AcquireError::Timeout { dimension, .. }) => {
            assert_eq!(dimension, Dimension::OutputTokens)
        }
        other => panic!("expected a timeout at once, got {other:?}"),
    };
}

/// Several limits near the end of the clock: the instant at which the last of them admits is
/// checked on every limit again. There a bucket is full, and the units starting from it would
/// pass the end: never, not a wait to an instant at which it turns out to be never.
#[test]
fn several_limits_at_the_end_of_the_clock_answer_never_at_once() {
    use tokengate::core::{decide_all, CombinedDecision, LimitRule};
    let window = LimitRule::new(&Limit::per_second(1).algorithm(Algorithm::FixedWindow)).unwrap();
    // 0.8 s a unit, burst 1.
    let bucket = LimitRule::new(&bucket(5, Duration::from_secs(4))).unwrap();
    let last_window = Nanos::MAX - Nanos::MAX % S; // 0.709551615 s before the end
    let now = last_window - 100 * MS;
    let (mut w, b) = (window.new_state(), bucket.new_state());
    let _ = window.commit(&mut w, now, 1);
    // Alone, each has an answer: the window at its next window, the bucket at once.
    assert_eq!(
        decide_all([(&window, &w, 1)], now),
        CombinedDecision::NotUntil {
            at: last_window,
            limit: 0
        }
    );
    assert_eq!(decide_all([(&bucket, &b, 1)], now), CombinedDecision::Admit);
    // Together: at the next window the bucket's unit would end 0.09 s past the end.
    assert_eq!(
        decide_all([(&window, &w, 1), (&bucket, &b, 1)], now),
        CombinedDecision::NotUntil {
            at: Nanos::MAX,
            limit: 1
        }
    );
}

/// Stats of a sliding window counter whose period is above 2^63 ns: its reset is past the end
/// of the clock, not an overflow.
#[test]
fn stats_of_a_counter_with_a_period_of_centuries() {
    let three_centuries = Duration::from_secs(300 * 365 * 86_400);
    let (limiter, _clock) = one(
        Dimension::Requests,
        Limit::new(2, three_centuries).algorithm(Algorithm::SlidingWindowCounter),
    );
    drop(limiter.try_acquire(Cost::request()).unwrap());
    let stats = limiter.stats();
    assert_eq!((stats.limits[0].used, stats.limits[0].remaining), (1, 1));
}
