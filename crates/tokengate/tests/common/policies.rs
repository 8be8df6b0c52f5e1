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
