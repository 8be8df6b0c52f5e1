//! The format of the whole-request test vectors, `tests/vectors/requests.json` (described in
//! `tests/vectors/README.md`), for every replayer: the in-memory limiter's
//! (`tests/request_vectors.rs`) and the CLI's simulated provider's
//! (`crates/tokengate-cli/tests/provider_vectors.rs`, which includes this file by path).
#![allow(dead_code, unreachable_pub)]

use serde::Deserialize;
use tokengate::{Cost, Usage};

/// The vectors file, as text.
pub const VECTORS: &str = include_str!("../vectors/requests.json");

/// The instant `wait` after `t`, as the vectors write it (the end of the clock for never).
pub fn after(t: u64, wait: std::time::Duration) -> u64 {
    t.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX))
}

/// The vectors, parsed and checked for their format and version.
pub fn load() -> File {
    let file: File = serde_json::from_str(VECTORS).expect("requests.json parses");
    assert_eq!(file.format, "tokengate-request-vectors");
    assert_eq!(file.version, 1);
    file
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub format: String,
    pub version: u32,
    #[allow(dead_code)]
    pub description: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub note: Option<String>,
    pub limits: String,
    pub ops: Vec<Step>,
}

#[derive(Debug, Deserialize)]
pub struct Step {
    pub t: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Acquire {
        #[serde(default)]
        tenant: Option<String>,
        #[serde(default)]
        model: Option<String>,
        cost: Amounts,
        expect: Expect,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Settle {
        admission: usize,
        usage: Amounts,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Release {
        admission: usize,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Pause {
        #[serde(default)]
        model: Option<String>,
        for_ns: u64,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Reload {
        limits: String,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
}

/// Amounts on the built-in dimensions; absent ones are 0 in a cost and "as reserved" in a
/// usage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    pub requests: Option<u64>,
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Amounts {
    pub fn cost(&self) -> Cost {
        Cost::zero()
            .with_requests(self.requests.unwrap_or(0))
            .input(self.input.unwrap_or(0))
            .output(self.output.unwrap_or(0))
    }

    pub fn usage(&self) -> Usage {
        let mut usage = Usage::new();
        if let Some(n) = self.requests {
            usage = usage.requests(n);
        }
        if let Some(n) = self.input {
            usage = usage.input(n);
        }
        if let Some(n) = self.output {
            usage = usage.output(n);
        }
        usage
    }
}

/// What an acquire must get.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Expect {
    Word(Word),
    NotUntil { not_until: u64, dimension: String },
    PausedUntil { paused_until: u64 },
    Impossible { impossible: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Word {
    Admit,
    InFlightFull,
    UnknownModel,
}
