//! Random limits and policies for property tests: every algorithm, small amounts and
//! periods (nanoseconds, on a manual clock), margins and bursts.

use std::time::Duration;

use proptest::prelude::*;
use tokengate::{Algorithm, Limit, Policy};

/// One limit: any algorithm, 1-12 units per 1-200 ns, a margin below the period, a burst
/// sometimes.
pub fn limit_strategy() -> impl Strategy<Value = Limit> {
    (
        0..6usize,
        1u64..=12,
        1u64..=200,
        0u64..200,
        proptest::option::of(1u64..=24),
    )
        .prop_map(|(a, amount, period, margin, burst)| {
            let alg = [
                Algorithm::SmoothWindow,
                Algorithm::TokenBucket,
                Algorithm::LeakyBucket,
                Algorithm::SlidingWindowLog,
                Algorithm::SlidingWindowCounter,
                Algorithm::FixedWindow,
            ][a];
            let mut limit = Limit::new(amount, Duration::from_nanos(period))
                .algorithm(alg)
                .margin(Duration::from_nanos(margin % period));
            match (alg, burst) {
                (Algorithm::TokenBucket, Some(b)) => limit = limit.burst(b),
                (Algorithm::SmoothWindow, Some(b)) => limit = limit.burst(1 + (b - 1) % amount),
                _ => {}
            }
            limit
        })
}

/// One to three limits, on dimensions `d0`, `d1`, `d2`.
pub fn policy_strategy() -> impl Strategy<Value = Policy> {
    proptest::collection::vec(limit_strategy(), 1..=3).prop_map(|limits| {
        let mut builder = Policy::builder();
        for (i, l) in limits.into_iter().enumerate() {
            builder = builder.custom(format!("d{i}"), l);
        }
        builder.build().expect("valid limits")
    })
}

/// A proptest runner of `cases` cases seeded from the environment variable `var` when set,
/// else from the clock; the seed, printed, replays the run. Returns the seed with the runner.
pub fn seeded_runner(
    var: &str,
    cases: u32,
    max_shrink_iters: u32,
) -> (u64, proptest::test_runner::TestRunner) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} ({var}={seed} replays it)");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (seed, TestRunner::new_with_rng(config, rng))
}
