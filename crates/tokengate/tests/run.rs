//! `Limiter::run`: acquire, call, settle from the result; a result without usage keeps the
//! reservation; an acquisition that cannot succeed never calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokengate::{AcquireError, Cost, Limiter, Policy, TokioClock, Usage};

/// One request a second, 1,000 output tokens a minute, one in flight; exact waits (no safety
/// margin, `Limit::margin`).
fn limiter() -> Limiter<TokioClock> {
    let policy = Policy::builder()
        .requests_per_minute(60)
        .output_tokens_per_minute(1_000)
        .max_in_flight(1)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    Limiter::with_clock(policy, TokioClock::new())
}

#[tokio::test(start_paused = true)]
async fn settles_from_the_result_and_holds_the_slot_only_while_calling() {
    let limiter = limiter();
    let in_flight_during_call = limiter
        .run(
            Cost::request().output(500),
            None,
            || async { limiter.stats().in_flight },
            |_| Some(Usage::new().output(120)),
        )
        .await
        .unwrap();
    assert_eq!(in_flight_during_call, 1);
    let s = limiter.stats();
    assert_eq!(
        (
            s.in_flight,
            s.settled,
            s.limits[1].used,
            s.limits[1].refunded
        ),
        (0, 1, 120, 380)
    );
}

#[tokio::test(start_paused = true)]
async fn a_result_without_usage_keeps_the_reservation() {
    let limiter = limiter();
    let failed: Result<(), &str> = limiter
        .run(
            Cost::request().output(500),
            None,
            || async { Err("boom") },
            |_| None,
        )
        .await
        .unwrap();
    assert_eq!(failed, Err("boom"));
    let s = limiter.stats();
    assert_eq!((s.in_flight, s.settled, s.limits[1].used), (0, 0, 500));
}

#[tokio::test(start_paused = true)]
async fn an_acquisition_that_cannot_succeed_never_calls() {
    let limiter = limiter();
    let calls = AtomicUsize::new(0);
    let call = || async {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let err = limiter
        .run(Cost::request().output(5_000), None, call, |_| None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AcquireError::Exceeds {
            cost: 5_000,
            capacity: 1_000,
            ..
        }
    ));
    // One a second with a burst of one: the second run would wait a second, beyond the timeout.
    limiter
        .run(Cost::request(), None, call, |_| None)
        .await
        .unwrap();
    let err = limiter
        .run(
            Cost::request(),
            Some(Duration::from_millis(10)),
            call,
            |_| None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AcquireError::Timeout { wait: Some(w), .. } if w == Duration::from_secs(1))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
