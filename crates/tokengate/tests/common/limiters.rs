//! Limiters the tests build often.

use std::time::Duration;

use tokengate::{Limiter, PolicyBuilder, TokioClock};

/// A limiter of `builder`'s policy on tokio's clock, its limits exact: no safety margin
/// (`Limit::margin`), for tests of exact waits, order, wake-ups and the figures they report.
pub fn exact_tokio_limiter(builder: PolicyBuilder) -> Limiter<TokioClock> {
    Limiter::with_clock(
        builder
            .margin(Duration::ZERO)
            .build()
            .expect("valid policy"),
        TokioClock::new(),
    )
}
