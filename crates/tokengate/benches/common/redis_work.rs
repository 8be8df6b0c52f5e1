//! The workloads of the Redis store's benches: a trivial script (the ceiling), a one-limit
//! token bucket, and the default three-limit policy, each admitting every decision (their
//! limits are far above what a run can use), so that each one writes its state.

#![allow(unreachable_pub)]

use tokengate::{Algorithm, Cost, Dimension, Limit, Policy};

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Ceiling,
    OneBucket,
    DefaultThree,
}

impl Work {
    pub const ALL: [Work; 3] = [Work::Ceiling, Work::OneBucket, Work::DefaultThree];

    pub fn name(self) -> &'static str {
        match self {
            Work::Ceiling => "ceiling: EVALSHA return 1",
            Work::OneBucket => "one-limit token bucket",
            Work::DefaultThree => "default three-limit policy",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Work::Ceiling => "ceiling",
            Work::OneBucket => "bucket",
            Work::DefaultThree => "three",
        }
    }

    pub fn parse(code: &str) -> Work {
        *Work::ALL
            .iter()
            .find(|w| w.code() == code)
            .expect("a work code")
    }

    pub fn policy(self) -> Policy {
        match self {
            Work::Ceiling | Work::OneBucket => Policy::builder()
                .limit(
                    Dimension::Requests,
                    Limit::per_second(1 << 40).algorithm(Algorithm::TokenBucket),
                )
                .build(),
            Work::DefaultThree => Policy::builder()
                .requests_per_minute(1 << 40)
                .input_tokens_per_minute(1 << 50)
                .output_tokens_per_minute(1 << 50)
                .build(),
        }
        .expect("a valid policy")
    }

    pub fn cost(self) -> Cost {
        match self {
            Work::DefaultThree => Cost::request().input(1_200).output(300),
            _ => Cost::request(),
        }
    }
}
