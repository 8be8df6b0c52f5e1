//! One limit, always admitted: the cost of one decision, tokengate's `try_acquire` (the permit
//! dropped at once) next to governor's `check`, in the same run.
//!
//! Cases (all limits are large enough that every decision is admitted; each sample builds a
//! fresh limiter):
//! - `governor/quanta_clock`: `RateLimiter::direct(Quota::per_second(u32::MAX)).check()` on
//!   governor's default clock (quanta). The baseline of every ratio on a real clock.
//! - `governor/fake_clock`: the same on `FakeRelativeClock`, time frozen: no clock cost.
//! - `tokengate/system_clock/token_bucket`: `u32::MAX` per second, `Algorithm::TokenBucket`
//!   (GCRA, the same mathematics as governor), on the default `SystemClock`.
//! - `tokengate/manual_clock/token_bucket`: the same on a `ManualClock`, time frozen.
//! - `tokengate/{system,manual}_clock/token_bucket_exact`: 10^9 per second instead, one unit per
//!   nanosecond exactly. `u32::MAX` per second is not a whole number of nanoseconds per unit, so
//!   every decision divides 128-bit numbers (twice); most real limits (500 per minute: 120 ms
//!   each) take the multiply-only path this case shows. governor rounds its interval to whole
//!   nanoseconds once, at construction, and never divides.
//! - `tokengate/system_clock/smooth_window_1ms`: the default algorithm on the system clock.
//!   `SmoothWindow` keeps one log entry per distinct admission instant for a whole period, so
//!   `u32::MAX` per *second* would hold tens of millions of entries at benchmark speed, which no
//!   real limit does. Here the period is 1 ms (amount `u32::MAX`): the log holds about 1 ms of
//!   admissions (tens of thousands of entries), and each decision expires about one entry and
//!   appends one, which is the steady state of a real, busy per-minute limit.
//! - `tokengate/manual_clock/smooth_window_paced` vs `governor/fake_clock_paced`: the realistic
//!   default case: `requests_per_minute(10_000)`, the clock advanced by exactly 6 ms (the
//!   limit's pace) before each decision, so the limiter runs at 100% of its limit with a full
//!   window of 10,000 entries; governor gets `Quota::per_minute(10_000)` paced the same way.
//!   Both include one atomic clock advance per decision.

mod common;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::Criterion;
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use tokengate::{Algorithm, Cost, Dimension, Limit, Limiter, ManualClock, Policy};

const GROUP: &str = "single_dimension";
const SAMPLES: usize = 30;
/// The pace of 10,000 per minute.
const PACE: Duration = Duration::from_millis(6);
const PACED_RPM: u32 = 10_000;

fn policy(limit: Limit) -> Policy {
    Policy::builder()
        .limit(Dimension::Requests, limit)
        .build()
        .expect("a valid policy")
}

fn huge_quota() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn token_bucket() -> Policy {
    policy(Limit::per_second(u64::from(u32::MAX)).algorithm(Algorithm::TokenBucket))
}

fn token_bucket_exact() -> Policy {
    policy(Limit::per_second(1_000_000_000).algorithm(Algorithm::TokenBucket))
}

fn smooth_1ms() -> Policy {
    policy(Limit::new(u64::from(u32::MAX), Duration::from_millis(1)))
}

fn paced_policy() -> Policy {
    Policy::builder()
        .requests_per_minute(u64::from(PACED_RPM))
        .build()
        .expect("a valid policy")
}

/// Times `iters` tokengate decisions, each admitted and its permit dropped at once.
fn tokengate_loop<C: tokengate::Clock>(
    limiter: &Limiter<C>,
    iters: u64,
    before: impl Fn(),
) -> Duration {
    let mut admitted = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        before();
        let permit = limiter.try_acquire(black_box(Cost::request()));
        admitted += u64::from(black_box(permit.is_ok()));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        admitted, iters,
        "a decision was denied: the benchmark would be wrong"
    );
    elapsed
}

/// Times `iters` governor checks.
fn governor_loop(check: impl Fn() -> bool, iters: u64, before: impl Fn()) -> Duration {
    let mut admitted = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        before();
        admitted += u64::from(black_box(check()));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        admitted, iters,
        "a check was denied: the benchmark would be wrong"
    );
    elapsed
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(SAMPLES);

    common::bench(&mut g, GROUP, "governor/quanta_clock", |iters| {
        let lim = RateLimiter::direct(huge_quota());
        governor_loop(|| lim.check().is_ok(), iters, || {})
    });
    common::bench(&mut g, GROUP, "governor/fake_clock", |iters| {
        let lim = RateLimiter::direct_with_clock(huge_quota(), FakeRelativeClock::default());
        governor_loop(|| lim.check().is_ok(), iters, || {})
    });
    common::bench(
        &mut g,
        GROUP,
        "tokengate/system_clock/token_bucket",
        |iters| tokengate_loop(&Limiter::new(token_bucket()), iters, || {}),
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/manual_clock/token_bucket",
        |iters| {
            tokengate_loop(
                &Limiter::with_clock(token_bucket(), ManualClock::new()),
                iters,
                || {},
            )
        },
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/system_clock/token_bucket_exact",
        |iters| tokengate_loop(&Limiter::new(token_bucket_exact()), iters, || {}),
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/manual_clock/token_bucket_exact",
        |iters| {
            tokengate_loop(
                &Limiter::with_clock(token_bucket_exact(), ManualClock::new()),
                iters,
                || {},
            )
        },
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/system_clock/smooth_window_1ms",
        |iters| tokengate_loop(&Limiter::new(smooth_1ms()), iters, || {}),
    );
    common::bench(&mut g, GROUP, "governor/fake_clock_paced", |iters| {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_minute(NonZeroU32::new(PACED_RPM).expect("non-zero"));
        let lim = RateLimiter::direct_with_clock(quota, clock.clone());
        // The same warm-up as tokengate's: one full window of admissions.
        governor_loop(
            || lim.check().is_ok(),
            u64::from(PACED_RPM),
            || clock.advance(PACE),
        );
        governor_loop(|| lim.check().is_ok(), iters, || clock.advance(PACE))
    });
    common::bench(
        &mut g,
        GROUP,
        "tokengate/manual_clock/smooth_window_paced",
        |iters| {
            let clock = ManualClock::new();
            let limiter = Limiter::with_clock(paced_policy(), clock.clone());
            // Fill the window: 10,000 entries, then each decision expires one and appends one.
            tokengate_loop(&limiter, u64::from(PACED_RPM), || clock.advance(PACE));
            tokengate_loop(&limiter, iters, || clock.advance(PACE))
        },
    );
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();

    let key = |id: &str| format!("{GROUP}/{id}");
    println!("\n== single_dimension summary (ns per decision, mean of the measured samples)");
    common::print_ratio(
        "token bucket, system clock vs governor (quanta)",
        &key("tokengate/system_clock/token_bucket"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "token bucket, manual clock vs governor (fake clock)",
        &key("tokengate/manual_clock/token_bucket"),
        &key("governor/fake_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "token bucket, exact rate (1/ns), system clock vs governor (quanta)",
        &key("tokengate/system_clock/token_bucket_exact"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "token bucket, exact rate (1/ns), manual clock vs governor (fake clock)",
        &key("tokengate/manual_clock/token_bucket_exact"),
        &key("governor/fake_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "smooth window (default), 1 ms window, system clock vs governor (quanta)",
        &key("tokengate/system_clock/smooth_window_1ms"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "smooth window (default), 10k/min paced, manual clock vs governor paced (fake clock)",
        &key("tokengate/manual_clock/smooth_window_paced"),
        &key("governor/fake_clock_paced"),
        SAMPLES,
    );
}
