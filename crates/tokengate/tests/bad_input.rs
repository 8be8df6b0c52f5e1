//! Bad input is refused when a limit or policy is built, never later: every [`BuildError`],
//! with a message that names the dimension and limit at fault and says what to do.

use std::error::Error as _;
use std::time::Duration;

use tokengate::{Algorithm, BuildError, Dimension, Limit, Policy, PolicyBuilder};

/// Builds `builder`, expecting an error.
fn build_err(builder: PolicyBuilder) -> BuildError {
    match builder.build() {
        Ok(policy) => panic!("expected a build error, got {policy:?}"),
        Err(e) => e,
    }
}

/// Splits an [`BuildError::InLimit`] into its dimension, limit text and cause.
fn in_limit(err: &BuildError) -> (&Dimension, &str, &BuildError) {
    match err {
        BuildError::InLimit {
            dimension,
            limit,
            source,
        } => (dimension, limit.as_str(), &**source),
        other => panic!("expected InLimit, got {other:?}"),
    }
}

/// Asserts that `message` contains every one of `parts`.
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "message {message:?} should mention {part:?}"
        );
    }
}

/// Every error of one limit reads `"{dimension} limit {limit}: {cause}"`, and its source is
/// the cause.
fn assert_in_limit_message(err: &BuildError, dimension: &str, limit: &str) {
    let (dim, lim, cause) = in_limit(err);
    assert_eq!(dim.name(), dimension);
    assert_eq!(lim, limit);
    let message = err.to_string();
    assert_eq!(message, format!("{dimension} limit {limit}: {cause}"));
    let source = err.source().expect("InLimit has its cause as source");
    assert_eq!(source.to_string(), cause.to_string());
}

#[test]
fn zero_amount_is_refused_naming_the_dimension() {
    let err = build_err(Policy::builder().requests_per_minute(0));
    assert_in_limit_message(&err, "requests", "0 per minute");
    assert_eq!(in_limit(&err).2, &BuildError::ZeroAmount);
    assert_mentions(
        &err.to_string(),
        &["the amount is 0", "at least 1 unit per period"],
    );

    let err = build_err(Policy::builder().custom("images", Limit::per_hour(0)));
    assert_in_limit_message(&err, "images", "0 per hour");
    assert_eq!(in_limit(&err).2, &BuildError::ZeroAmount);
}

#[test]
fn the_bad_limit_is_named_not_the_first_one() {
    let err = build_err(
        Policy::builder()
            .requests_per_minute(500)
            .input_tokens_per_minute(30_000)
            .output_tokens_per_minute(0),
    );
    assert_in_limit_message(&err, "output_tokens", "0 per minute");
    assert_eq!(in_limit(&err).2, &BuildError::ZeroAmount);
}

#[test]
fn zero_period_is_refused() {
    let err =
        build_err(Policy::builder().limit(Dimension::InputTokens, Limit::new(10, Duration::ZERO)));
    assert_eq!(in_limit(&err).2, &BuildError::ZeroPeriod);
    let (_, limit, _) = in_limit(&err);
    assert_in_limit_message(&err, "input_tokens", limit);
    assert_mentions(
        &err.to_string(),
        &[
            "input_tokens limit 10 per",
            "the period is 0",
            "at least 1 ns",
        ],
    );
}

#[test]
fn zero_burst_is_refused_for_both_bucket_algorithms() {
    for algorithm in [Algorithm::TokenBucket, Algorithm::SmoothWindow] {
        let err = build_err(Policy::builder().limit(
            Dimension::OutputTokens,
            Limit::per_minute(8_000).algorithm(algorithm).burst(0),
        ));
        assert_eq!(in_limit(&err).2, &BuildError::ZeroBurst, "{algorithm}");
        assert_mentions(
            &err.to_string(),
            &[
                "output_tokens limit 8000 per minute",
                "the burst is 0",
                "leave the burst unset",
            ],
        );
    }
}

#[test]
fn smooth_window_burst_above_amount_is_refused() {
    let err =
        build_err(Policy::builder().limit(Dimension::Requests, Limit::per_minute(100).burst(101)));
    assert_in_limit_message(&err, "requests", "100 per minute");
    assert_eq!(
        in_limit(&err).2,
        &BuildError::BurstAboveAmount {
            burst: 101,
            amount: 100
        }
    );
    assert_mentions(
        &err.to_string(),
        &[
            "burst 101",
            "amount 100",
            "lower the burst",
            "Algorithm::TokenBucket",
        ],
    );

    // The boundary is allowed, and so is a token bucket's burst above its amount.
    assert!(Policy::builder()
        .limit(Dimension::Requests, Limit::per_minute(100).burst(100))
        .build()
        .is_ok());
    assert!(Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::per_minute(100)
                .algorithm(Algorithm::TokenBucket)
                .burst(1_000),
        )
        .build()
        .is_ok());
}

#[test]
fn burst_on_an_algorithm_without_one_is_refused() {
    for (algorithm, name) in [
        (Algorithm::LeakyBucket, "leaky bucket"),
        (Algorithm::SlidingWindowLog, "sliding window log"),
        (Algorithm::SlidingWindowCounter, "sliding window counter"),
        (Algorithm::FixedWindow, "fixed window"),
    ] {
        let limit = Limit::per_minute(100).algorithm(algorithm).burst(10);
        let err = build_err(Policy::builder().limit(Dimension::InputTokens, limit));
        assert_in_limit_message(&err, "input_tokens", &format!("100 per minute ({name})"));
        assert_eq!(
            in_limit(&err).2,
            &BuildError::BurstNotApplicable { algorithm },
            "{name}"
        );
        assert_mentions(
            &err.to_string(),
            &[name, "has no burst", "remove .burst(..)"],
        );
        // Without the burst it builds.
        assert!(Policy::builder()
            .limit(
                Dimension::InputTokens,
                Limit::per_minute(100).algorithm(algorithm)
            )
            .build()
            .is_ok());
    }
}

#[test]
fn burst_that_takes_centuries_to_refill_is_refused() {
    let limit = Limit::new(1, Duration::from_nanos(u64::MAX))
        .algorithm(Algorithm::TokenBucket)
        .burst(2);
    let err = build_err(Policy::builder().limit(Dimension::Requests, limit));
    assert!(
        matches!(
            in_limit(&err).2,
            BuildError::BurstTooLarge {
                burst: 2,
                amount: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(
        &err.to_string(),
        &[
            "requests limit 1 per",
            "burst 2",
            "584 years",
            "lower the burst",
        ],
    );
}

#[test]
fn period_beyond_584_years_is_refused() {
    for period in [
        Duration::MAX,
        Duration::from_nanos(u64::MAX) + Duration::from_nanos(1),
    ] {
        let err = build_err(Policy::builder().limit(Dimension::Requests, Limit::new(5, period)));
        assert_eq!(
            in_limit(&err).2,
            &BuildError::PeriodTooLong { period },
            "{period:?}"
        );
        assert_mentions(
            &err.to_string(),
            &[
                "requests limit 5 per",
                "longer than 584 years",
                "use a shorter period",
            ],
        );
    }
    // The longest period that fits in 64-bit nanoseconds is accepted.
    assert!(Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::new(5, Duration::from_nanos(u64::MAX)).algorithm(Algorithm::SlidingWindowLog),
        )
        .build()
        .is_ok());
}

#[test]
fn zero_max_in_flight_is_refused() {
    let err = build_err(Policy::builder().requests_per_minute(10).max_in_flight(0));
    assert_eq!(err, BuildError::ZeroInFlight);
    assert_mentions(&err.to_string(), &["max_in_flight is 0", "give at least 1"]);

    // The same through the generic `limit` on the in-flight dimension.
    let err = build_err(Policy::builder().limit(Dimension::InFlight, Limit::per_minute(0)));
    assert_eq!(err, BuildError::ZeroInFlight);

    // A cap of in-flight requests alone is a policy.
    assert_eq!(
        Policy::builder()
            .max_in_flight(1)
            .build()
            .unwrap()
            .max_in_flight(),
        Some(1)
    );
}

#[test]
fn empty_policy_is_refused() {
    let err = build_err(Policy::builder());
    assert_eq!(err, BuildError::Empty);
    assert_mentions(
        &err.to_string(),
        &["no limit", "add at least one", "requests_per_minute"],
    );
}

#[test]
fn combined_tokens_with_zero_output_weight_is_refused() {
    for input_weight in [0, 1] {
        let err = build_err(Policy::builder().combined_tokens(
            Limit::per_minute(100_000),
            input_weight,
            0,
        ));
        assert_eq!(
            err,
            BuildError::BadWeight {
                which: "output",
                weight: 0
            }
        );
        assert_mentions(
            &err.to_string(),
            &[
                "output weight of combined tokens is 0",
                "at least 1 for output",
            ],
        );
    }
    // Input weight 0 with a positive output weight is valid (count output only).
    let policy = Policy::builder()
        .combined_tokens(Limit::per_minute(100_000), 0, 5)
        .build()
        .unwrap();
    assert_eq!(policy.limits().next().unwrap().0, &Dimension::Tokens);
}

#[test]
fn combined_tokens_limit_errors_name_the_tokens_dimension() {
    let err = build_err(Policy::builder().combined_tokens(Limit::per_minute(0), 1, 5));
    assert_in_limit_message(&err, "tokens", "0 per minute");
    assert_eq!(in_limit(&err).2, &BuildError::ZeroAmount);
}

/// Unwraps a `BadNumber` from [`Limit::try_from_f64`].
fn bad_number(amount: f64, period_secs: f64) -> (&'static str, f64, String) {
    match Limit::try_from_f64(amount, period_secs) {
        Err(BuildError::BadNumber { what, value, .. }) => (
            what,
            value,
            Limit::try_from_f64(amount, period_secs)
                .unwrap_err()
                .to_string(),
        ),
        other => panic!("try_from_f64({amount}, {period_secs}): expected BadNumber, got {other:?}"),
    }
}

#[test]
fn float_amount_must_be_a_positive_whole_number() {
    for amount in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        -0.0,
        0.0,
        2.5,
        0.5,
        1e300,
    ] {
        let (what, value, message) = bad_number(amount, 60.0);
        assert_eq!(what, "amount", "{amount}");
        assert!(
            value.to_bits() == amount.to_bits() || (value.is_nan() && amount.is_nan()),
            "the error carries the value given: {value} vs {amount}"
        );
        assert_mentions(
            &message,
            &["the amount", "is invalid", "a whole number from 1 up"],
        );
    }
}

#[test]
fn float_amount_of_two_to_the_64_is_refused() {
    // 2^64 does not fit in a u64: it must not be quietly saturated to u64::MAX.
    let two_64 = 18_446_744_073_709_551_616.0_f64;
    let result = Limit::try_from_f64(two_64, 60.0);
    assert!(
        matches!(result, Err(BuildError::BadNumber { what: "amount", .. })),
        "try_from_f64(2^64, 60) should be refused, got {result:?}"
    );
}

#[test]
fn float_period_must_be_positive_finite_and_fit() {
    for period in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        -0.0,
        0.0,
        1e12,
        18_446_744_074.0,
        1e-10, // rounds to 0 ns
    ] {
        let (what, value, message) = bad_number(500.0, period);
        assert_eq!(what, "period", "{period}");
        assert!(
            value.to_bits() == period.to_bits() || (value.is_nan() && period.is_nan()),
            "the error carries the value given: {value} vs {period}"
        );
        assert_mentions(&message, &["the period", "is invalid", "expected"]);
    }
    let (_, _, message) = bad_number(500.0, 1e12);
    assert_mentions(&message, &["below 584 years"]);
    let (_, _, message) = bad_number(500.0, 1e-10);
    assert_mentions(&message, &["at least one nanosecond"]);
}

#[test]
fn float_figures_that_are_valid_build() {
    let limit = Limit::try_from_f64(500.0, 60.0).unwrap();
    assert_eq!(
        (limit.amount(), limit.period()),
        (500, Duration::from_secs(60))
    );
    let limit = Limit::try_from_f64(3.0, 0.25).unwrap();
    assert_eq!(
        (limit.amount(), limit.period()),
        (3, Duration::from_millis(250))
    );
    // The largest period accepted still fits in 64-bit nanoseconds, so the policy builds.
    let limit = Limit::try_from_f64(1.0, 18_446_744_073.0).unwrap();
    assert!(Policy::builder()
        .limit(Dimension::Requests, limit.algorithm(Algorithm::FixedWindow))
        .build()
        .is_ok());
}

#[test]
fn a_margin_not_shorter_than_the_period_is_refused() {
    let err = Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::per_second(10).margin(Duration::from_secs(1)),
        )
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the margin 1s is not shorter than the period 1s"),
        "{err}"
    );
    // The approximate windows take none, so any margin is accepted and ignored.
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindowCounter] {
        let limit = Limit::per_second(10)
            .algorithm(algorithm)
            .margin(Duration::from_secs(5));
        let rule = tokengate::core::LimitRule::new(&limit).unwrap();
        assert_eq!(rule.margin(), 0, "{algorithm}");
    }
}
