//! One limit, always admitted: the cost of one decision, tokengate's `try_acquire` (the permit
//! dropped at once) next to governor's `check`, in the same run.
//!
//! Cases (all limits are large enough that every decision is admitted; each sample builds a
//! fresh limiter). Every limit is exact, with no safety margin (`Limit::margin`): governor has
//! none, a 1 ms period cannot hold the default one, and at exactly the limit's pace the margin
//! would deny.
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
//! - `tokengate/{system,manual}_clock/token_bucket_exact_admit`: the same limiter through
//!   `try_admit`, which admits without a permit (nothing to settle, no slot held): the call that
//!   does what governor's `check` does. The other cases build and drop a permit per decision.
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
use std::time::Duration;

use common::vs_governor::{self, Cases, Labels, PACED_RPM};
use tokengate::{Algorithm, Cost, Dimension, Limit, Policy};

/// A policy of `limit` on requests, exact (no safety margin).
fn policy(limit: Limit) -> Policy {
    Policy::builder()
        .limit(Dimension::Requests, limit)
        .margin(Duration::ZERO)
        .build()
        .expect("a valid policy")
}

struct SingleDimension;

impl Cases for SingleDimension {
    const GROUP: &'static str = "single_dimension";
    const SUMMARY: &'static str =
        "single_dimension summary (ns per decision, mean of the measured samples)";
    const LABELS: Labels = Labels {
        token_bucket_system: "token bucket, system clock vs governor (quanta)",
        token_bucket_manual: "token bucket, manual clock vs governor (fake clock)",
        token_bucket_exact_system:
            "token bucket, exact rate (1/ns), system clock vs governor (quanta)",
        token_bucket_exact_manual:
            "token bucket, exact rate (1/ns), manual clock vs governor (fake clock)",
        token_bucket_exact_admit_system:
            "token bucket, exact rate, try_admit (no permit), system clock vs governor (quanta)",
        token_bucket_exact_admit_manual:
            "token bucket, exact rate, try_admit (no permit), manual clock vs governor (fake clock)",
        smooth_window_1ms:
            "smooth window (default), 1 ms window, system clock vs governor (quanta)",
        smooth_window_paced:
            "smooth window (default), 10k/min paced, manual clock vs governor paced (fake clock)",
    };

    fn token_bucket() -> Policy {
        policy(Limit::per_second(u64::from(u32::MAX)).algorithm(Algorithm::TokenBucket))
    }

    fn token_bucket_exact() -> Policy {
        policy(Limit::per_second(1_000_000_000).algorithm(Algorithm::TokenBucket))
    }

    fn smooth_window_1ms() -> Policy {
        policy(Limit::new(u64::from(u32::MAX), Duration::from_millis(1)))
    }

    fn smooth_window_paced() -> Policy {
        Policy::builder()
            .requests_per_minute(u64::from(PACED_RPM))
            .margin(Duration::ZERO)
            .build()
            .expect("a valid policy")
    }

    fn cost() -> Cost {
        black_box(Cost::request())
    }
}

fn main() {
    vs_governor::main::<SingleDimension>();
}
