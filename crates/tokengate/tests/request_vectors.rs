//! Replays the whole-request test vectors in `tests/vectors/requests.json` (format in
//! `tests/vectors/README.md`) against the in-memory limiter built from each case's limits
//! file, on a manual clock, and fails naming the case, the op index and both answers on any
//! mismatch. Every other store (Redis) and the CLI's simulated provider are to replay the same
//! file.
//!
//! Run: `cargo test -p tokengate --test request_vectors`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokengate::config::Config;
use tokengate::{AcquireError, Clock, Cost, Denied, Limiter, ManualClock, Permit, Usage};

const VECTORS: &str = include_str!("vectors/requests.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    #[allow(dead_code)]
    description: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    limits: String,
    ops: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    t: u64,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
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
struct Amounts {
    requests: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
}

impl Amounts {
    fn cost(&self) -> Cost {
        Cost::zero()
            .with_requests(self.requests.unwrap_or(0))
            .input(self.input.unwrap_or(0))
            .output(self.output.unwrap_or(0))
    }

    fn usage(&self) -> Usage {
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
enum Expect {
    Word(Word),
    NotUntil { not_until: u64, dimension: String },
    PausedUntil { paused_until: u64 },
    Impossible { impossible: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Word {
    Admit,
    InFlightFull,
    UnknownModel,
}

/// What the limiter answered, in the vectors' terms.
fn answer(t: u64, denied: &Denied) -> Expect {
    let at = |wait: Duration| t.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
    match denied {
        Denied::RateLimited {
            dimension, wait, ..
        } => Expect::NotUntil {
            not_until: at(*wait),
            dimension: dimension.name().to_owned(),
        },
        Denied::InFlightFull { .. } => Expect::Word(Word::InFlightFull),
        Denied::Paused { wait } => Expect::PausedUntil {
            paused_until: at(*wait),
        },
        Denied::Never(AcquireError::Exceeds { dimension, .. }) => Expect::Impossible {
            impossible: dimension.name().to_owned(),
        },
        Denied::Never(AcquireError::UnknownModel { .. }) => Expect::Word(Word::UnknownModel),
        other => panic!("an answer outside the vectors' terms: {other:?}"),
    }
}

fn config(case: &str, text: &str) -> Config {
    Config::from_toml_str(text, case).unwrap_or_else(|e| panic!("{case}: limits: {e}"))
}

fn replay(case: &Case) {
    let clock = ManualClock::new();
    let limiter = Limiter::from_config_with_clock(config(&case.name, &case.limits), clock.clone());
    let mut permits: BTreeMap<usize, Permit<'_, ManualClock>> = BTreeMap::new();
    for (i, step) in case.ops.iter().enumerate() {
        assert!(
            step.t >= clock.now(),
            "{}: op {i}: time goes back",
            case.name
        );
        clock.set(step.t);
        let at = format!("{}: op {i} at {}", case.name, step.t);
        match &step.op {
            Op::Acquire {
                tenant,
                model,
                cost,
                expect,
                ..
            } => {
                let key = limiter.key_of(tenant.as_deref(), model.as_deref());
                let got = match key.try_acquire(cost.cost()) {
                    Ok(permit) => {
                        permits.insert(i, permit);
                        Expect::Word(Word::Admit)
                    }
                    Err(denied) => answer(step.t, &denied),
                };
                assert_eq!(&got, expect, "{at}");
            }
            Op::Settle {
                admission, usage, ..
            } => {
                let permit = permits
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no permit from op {admission}"));
                permit.settle(usage.usage());
            }
            Op::Release { admission, .. } => {
                let permit = permits
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no permit from op {admission}"));
                drop(permit);
            }
            Op::Pause { model, for_ns, .. } => {
                limiter
                    .key_of(None, model.as_deref())
                    .pause(Duration::from_nanos(*for_ns));
            }
            Op::Reload { limits, .. } => limiter.reload(config(&case.name, limits)),
        }
    }
}

#[test]
fn every_request_vector_holds_in_memory() {
    let file: File = serde_json::from_str(VECTORS).expect("requests.json parses");
    assert_eq!(file.format, "tokengate-request-vectors");
    assert_eq!(file.version, 1);
    assert!(file.cases.len() >= 9);
    for case in &file.cases {
        replay(case);
    }
}
