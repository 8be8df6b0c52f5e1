//! Requests, input tokens and output tokens in one decision (all or nothing), next to
//! governor's single `check` in the same run: what a three-limit LLM policy costs compared with
//! one plain rate limit.
//!
//! Every case admits every decision; each sample builds a fresh limiter. Every limit is exact,
//! with no safety margin (`Limit::margin`), as in `single_dimension`. The cost is
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
use std::time::Duration;

use common::vs_governor::{self, Cases, Labels, PACED_RPM};
use tokengate::{Algorithm, Cost, Dimension, Limit, Policy};

const INPUT: u64 = 1_200;
const OUTPUT: u64 = 800;
/// 2^40 (about 10^12) units per second: `u32::MAX` would not keep up with 1,200 input tokens
/// per decision at tens of millions of decisions a second.
const HUGE_PER_SECOND: u64 = 1 << 40;

/// `limit()` on requests, input and output tokens, exact (no safety margin).
fn three(limit: impl Fn() -> Limit) -> Policy {
    Policy::builder()
        .limit(Dimension::Requests, limit())
        .limit(Dimension::InputTokens, limit())
        .limit(Dimension::OutputTokens, limit())
        .margin(Duration::ZERO)
        .build()
        .expect("a valid policy")
}

struct ThreeDimensions;

impl Cases for ThreeDimensions {
    const GROUP: &'static str = "three_dimensions";
    const SUMMARY: &'static str =
        "three_dimensions summary (ns per decision; governor checks one limit)";
    const LABELS: Labels = Labels {
        token_bucket_system: "3 token buckets, system clock vs governor single check (quanta)",
        token_bucket_manual: "3 token buckets, manual clock vs governor single check (fake clock)",
        token_bucket_exact_system:
            "3 token buckets, exact rates, system clock vs governor single check (quanta)",
        token_bucket_exact_manual:
            "3 token buckets, exact rates, manual clock vs governor single check (fake clock)",
        token_bucket_exact_admit_system:
            "3 token buckets, exact rates, try_admit (no permit), system clock vs governor single check (quanta)",
        token_bucket_exact_admit_manual:
            "3 token buckets, exact rates, try_admit (no permit), manual clock vs governor single check (fake clock)",
        smooth_window_1ms:
            "3 smooth windows (default), 1 ms windows, system clock vs governor (quanta)",
        smooth_window_paced:
            "3 smooth windows (default), paced at 100%, manual clock vs governor paced (fake clock)",
    };

    fn token_bucket() -> Policy {
        three(|| Limit::per_second(HUGE_PER_SECOND).algorithm(Algorithm::TokenBucket))
    }

    /// One unit per nanosecond, exactly; a bucket of an hour's worth.
    fn token_bucket_exact() -> Policy {
        three(|| {
            Limit::new(3_600_000_000_000, Duration::from_secs(3_600))
                .algorithm(Algorithm::TokenBucket)
        })
    }

    fn smooth_window_1ms() -> Policy {
        three(|| Limit::new(u64::from(u32::MAX), Duration::from_millis(1)))
    }

    /// Every limit at exactly the pace of 10,000 requests of 1,200 + 800 tokens per minute.
    fn smooth_window_paced() -> Policy {
        let rpm = u64::from(PACED_RPM);
        Policy::builder()
            .requests_per_minute(rpm)
            .input_tokens_per_minute(rpm * INPUT)
            .output_tokens_per_minute(rpm * OUTPUT)
            .margin(Duration::ZERO)
            .build()
            .expect("a valid policy")
    }

    fn cost() -> Cost {
        Cost::request()
            .input(black_box(INPUT))
            .output(black_box(OUTPUT))
    }
}

fn main() {
    vs_governor::main::<ThreeDimensions>();
}
