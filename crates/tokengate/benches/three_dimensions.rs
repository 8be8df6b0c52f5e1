//! Requests, input tokens and output tokens in one decision (all or nothing), next to
//! governor's single `check` in the same run: what a three-limit LLM policy costs compared with
//! one plain rate limit.
//!
//! Every case admits every decision; each sample builds a fresh limiter. The cost is
//! `Cost::request().input(1_200).output(800)`, built inside the loop as a caller would.
//! - `governor/quanta_clock`, `governor/fake_clock`, `governor/fake_clock_paced`: baselines, as
//!   in `single_dimension` (one check, one limit).
//! - `tokengate/system_clock/token_bucket`, `tokengate/manual_clock/token_bucket`: three
//!   `TokenBucket` limits of 2^40 per second; the manual clock is frozen. That rate is not a
//!   whole number of nanoseconds per unit, so each limit divides 128-bit numbers twice.
//! - `tokengate/{system,manual}_clock/token_bucket_exact`: three limits of one unit per
//!   nanosecond exactly (3.6 * 10^12 per hour, burst the whole hour), the multiply-only path
//!   most real limits take.
//! - `tokengate/system_clock/smooth_window_1ms`: three default-algorithm limits of `u32::MAX` per
//!   1 ms: each log holds about 1 ms of admissions (see `single_dimension` for why not per second).
//! - `tokengate/manual_clock/smooth_window_paced`: the realistic default policy
//!   `requests_per_minute(10_000)`, `input_tokens_per_minute(12_000_000)`,
//!   `output_tokens_per_minute(8_000_000)`, the clock advanced by exactly 6 ms per decision, so
//!   all three limits run at 100% with full 10,000-entry windows; compared with governor paced
//!   the same way on one limit.

mod common;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::Criterion;
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use tokengate::{Algorithm, Cost, Dimension, Limit, Limiter, ManualClock, Policy};

const GROUP: &str = "three_dimensions";
const SAMPLES: usize = 30;
const PACE: Duration = Duration::from_millis(6);
const PACED_RPM: u32 = 10_000;
const INPUT: u64 = 1_200;
const OUTPUT: u64 = 800;

fn three(limit: impl Fn() -> Limit) -> Policy {
    Policy::builder()
        .limit(Dimension::Requests, limit())
        .limit(Dimension::InputTokens, limit())
        .limit(Dimension::OutputTokens, limit())
        .build()
        .expect("a valid policy")
}

/// 2^40 (about 10^12) units per second: `u32::MAX` would not keep up with 1,200 input tokens
/// per decision at tens of millions of decisions a second.
const HUGE_PER_SECOND: u64 = 1 << 40;

fn token_buckets() -> Policy {
    three(|| Limit::per_second(HUGE_PER_SECOND).algorithm(Algorithm::TokenBucket))
}

/// One unit per nanosecond, exactly; a bucket of an hour's worth.
fn token_buckets_exact() -> Policy {
    three(|| {
        Limit::new(3_600_000_000_000, Duration::from_secs(3_600)).algorithm(Algorithm::TokenBucket)
    })
}

fn smooth_1ms() -> Policy {
    three(|| Limit::new(u64::from(u32::MAX), Duration::from_millis(1)))
}

/// Every limit at exactly the pace of 10,000 requests of 1,200 + 800 tokens per minute.
fn paced_policy() -> Policy {
    let rpm = u64::from(PACED_RPM);
    Policy::builder()
        .requests_per_minute(rpm)
        .input_tokens_per_minute(rpm * INPUT)
        .output_tokens_per_minute(rpm * OUTPUT)
        .build()
        .expect("a valid policy")
}

fn huge_quota() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn tokengate_loop<C: tokengate::Clock>(
    limiter: &Limiter<C>,
    iters: u64,
    before: impl Fn(),
) -> Duration {
    let mut admitted = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        before();
        let cost = Cost::request()
            .input(black_box(INPUT))
            .output(black_box(OUTPUT));
        let permit = limiter.try_acquire(cost);
        admitted += u64::from(black_box(permit.is_ok()));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        admitted, iters,
        "a decision was denied: the benchmark would be wrong"
    );
    elapsed
}

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
        |iters| tokengate_loop(&Limiter::new(token_buckets()), iters, || {}),
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/manual_clock/token_bucket",
        |iters| {
            tokengate_loop(
                &Limiter::with_clock(token_buckets(), ManualClock::new()),
                iters,
                || {},
            )
        },
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/system_clock/token_bucket_exact",
        |iters| tokengate_loop(&Limiter::new(token_buckets_exact()), iters, || {}),
    );
    common::bench(
        &mut g,
        GROUP,
        "tokengate/manual_clock/token_bucket_exact",
        |iters| {
            tokengate_loop(
                &Limiter::with_clock(token_buckets_exact(), ManualClock::new()),
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
    println!("\n== three_dimensions summary (ns per decision; governor checks one limit)");
    common::print_ratio(
        "3 token buckets, system clock vs governor single check (quanta)",
        &key("tokengate/system_clock/token_bucket"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "3 token buckets, manual clock vs governor single check (fake clock)",
        &key("tokengate/manual_clock/token_bucket"),
        &key("governor/fake_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "3 token buckets, exact rates, system clock vs governor single check (quanta)",
        &key("tokengate/system_clock/token_bucket_exact"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "3 token buckets, exact rates, manual clock vs governor single check (fake clock)",
        &key("tokengate/manual_clock/token_bucket_exact"),
        &key("governor/fake_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "3 smooth windows (default), 1 ms windows, system clock vs governor (quanta)",
        &key("tokengate/system_clock/smooth_window_1ms"),
        &key("governor/quanta_clock"),
        SAMPLES,
    );
    common::print_ratio(
        "3 smooth windows (default), paced at 100%, manual clock vs governor paced (fake clock)",
        &key("tokengate/manual_clock/smooth_window_paced"),
        &key("governor/fake_clock_paced"),
        SAMPLES,
    );
}
