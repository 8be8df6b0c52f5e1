//! Replays the hand-computed test vectors in `tests/vectors/algorithms.json` (format in
//! `tests/vectors/README.md`) against [`tokengate::core::LimitRule`], and fails naming the case,
//! the op index and both values on any mismatch.
//!
//! Run: `cargo test -p tokengate --test vectors`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tokengate::core::{Decision, LimitRule, Nanos, Receipt};
use tokengate::{Algorithm, Limit};

const VECTORS: &str = include_str!("vectors/algorithms.json");

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
    /// Why the case is not replayed.
    #[serde(default)]
    skip: Option<String>,
    limit: LimitSpec,
    ops: Vec<OpSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    amount: u64,
    period_ns: u64,
    burst: Option<u64>,
    algorithm: String,
    /// The safety margin; 0 when absent (whatever the library's default).
    #[serde(default)]
    margin_ns: u64,
}

#[derive(Debug, Deserialize)]
struct OpSpec {
    t: Nanos,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Acquire {
        cost: u64,
        #[serde(default)]
        expect: Option<Expect>,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Refund {
        units: u64,
        admitted_at: Nanos,
        /// The index (in `ops`) of the acquire being refunded; by default the latest one
        /// admitted at `admitted_at` before this op.
        #[serde(default)]
        admission: Option<usize>,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
    Charge {
        units: u64,
        #[serde(default)]
        #[allow(dead_code)]
        note: Option<String>,
    },
}

/// `"admit"`, `{"not_until": ns}`, `"never"` or `{"impossible": capacity}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Admit,
    NotUntil(Nanos),
    /// `NotUntil(u64::MAX)`: past the end of the clock.
    Never,
    Impossible(u64),
}

impl From<Decision> for Expect {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Admit => Expect::Admit,
            Decision::NotUntil(Nanos::MAX) => Expect::Never,
            Decision::NotUntil(t) => Expect::NotUntil(t),
            Decision::Impossible { capacity } => Expect::Impossible(capacity),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Admit => f.write_str("\"admit\""),
            Expect::NotUntil(t) => write!(f, "{{\"not_until\": {t}}}"),
            Expect::Never => f.write_str("\"never\""),
            Expect::Impossible(c) => write!(f, "{{\"impossible\": {c}}}"),
        }
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "smooth_window" => Algorithm::SmoothWindow,
        "token_bucket" => Algorithm::TokenBucket,
        "leaky_bucket" => Algorithm::LeakyBucket,
        "sliding_window_log" => Algorithm::SlidingWindowLog,
        "sliding_window_counter" => Algorithm::SlidingWindowCounter,
        "fixed_window" => Algorithm::FixedWindow,
        _ => return None,
    })
}

fn load() -> File {
    let file: File = serde_json::from_str(VECTORS).expect("algorithms.json parses");
    assert_eq!(file.format, "tokengate-algorithm-vectors");
    assert_eq!(file.version, 7);
    file
}

fn rule_of(case: &Case) -> Result<LimitRule, String> {
    let l = &case.limit;
    let alg =
        algorithm(&l.algorithm).ok_or_else(|| format!("unknown algorithm {:?}", l.algorithm))?;
    let mut limit = Limit::new(l.amount, Duration::from_nanos(l.period_ns))
        .algorithm(alg)
        .margin(Duration::from_nanos(l.margin_ns));
    if let Some(b) = l.burst {
        limit = limit.burst(b);
    }
    LimitRule::new(&limit).map_err(|e| format!("invalid limit: {e}"))
}

/// The op index of the acquire a refund at op `i` names: `admission` if given, else the latest
/// acquire before op `i` expected to be admitted at `admitted_at`.
fn refunded_admission(
    case: &Case,
    i: usize,
    admitted_at: Nanos,
    admission: Option<usize>,
) -> Result<usize, String> {
    let admitted = |j: usize| {
        matches!(
            case.ops[j].op,
            Op::Acquire {
                expect: Some(Expect::Admit),
                ..
            }
        ) && case.ops[j].t == admitted_at
    };
    match admission {
        Some(j) if j < i && admitted(j) => Ok(j),
        Some(j) => Err(format!(
            "op {i}: \"admission\": {j} is not an earlier acquire admitted at {admitted_at}"
        )),
        None => (0..i)
            .rev()
            .find(|&j| admitted(j))
            .ok_or_else(|| format!("op {i}: nothing was admitted at {admitted_at}")),
    }
}

/// Checks the vector itself (not the library): instants never decrease, every acquire has an
/// expectation, every refund names an earlier admission, and the refunds of one admission add
/// up to at most what it was expected to take.
fn validate(case: &Case) -> Result<(), String> {
    let mut last = 0;
    let mut refunded: Vec<u64> = vec![0; case.ops.len()];
    for (i, o) in case.ops.iter().enumerate() {
        if o.t < last {
            return Err(format!("op {i}: t = {} is before {last}", o.t));
        }
        last = o.t;
        match o.op {
            Op::Acquire { expect: None, .. } => {
                return Err(format!("op {i}: acquire without \"expect\""))
            }
            Op::Acquire { .. } | Op::Charge { .. } => {}
            Op::Refund {
                units,
                admitted_at,
                admission,
                ..
            } => {
                let j = refunded_admission(case, i, admitted_at, admission)?;
                let Op::Acquire { cost, .. } = case.ops[j].op else {
                    unreachable!("refunded_admission returns acquires")
                };
                refunded[j] += units;
                if refunded[j] > cost {
                    return Err(format!(
                        "op {i}: refunds {} in all of the {cost} admitted by op {j}",
                        refunded[j]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Replays one case; the first mismatch is returned.
fn replay(case: &Case) -> Result<(), String> {
    let rule = rule_of(case)?;
    let mut state = rule.new_state();
    // The receipt of each admitted acquire, by op index.
    let mut receipts: Vec<Option<Receipt>> = vec![None; case.ops.len()];
    for (i, o) in case.ops.iter().enumerate() {
        let now = o.t;
        match o.op {
            Op::Acquire { cost, expect, .. } => {
                let want = expect.expect("validated");
                let decision = rule.decide(&state, now, cost);
                let got = Expect::from(decision);
                if got != want {
                    return Err(format!(
                        "op {i} (t = {now}, acquire {cost}): expected {want}, the library says {got}"
                    ));
                }
                match decision {
                    Decision::Admit => {
                        let receipt = rule.commit(&mut state, now, cost);
                        if receipt.admitted_at != now {
                            return Err(format!(
                                "op {i} (t = {now}, acquire {cost}): the receipt says admitted at {}",
                                receipt.admitted_at
                            ));
                        }
                        receipts[i] = Some(receipt);
                    }
                    Decision::NotUntil(Nanos::MAX) => {
                        // Never: still denied at the clock's last instant.
                        let last = rule.decide(&state, Nanos::MAX, cost);
                        if last == Decision::Admit {
                            return Err(format!(
                                "op {i} (t = {now}, acquire {cost}): never, but at {} the library admits",
                                Nanos::MAX
                            ));
                        }
                    }
                    Decision::NotUntil(t) => {
                        // The documented meaning of NotUntil(t): denied at t - 1, admitted at t.
                        let copy = state.clone();
                        let before = Expect::from(rule.decide(&copy, t - 1, cost));
                        let at = Expect::from(rule.decide(&copy, t, cost));
                        if before == Expect::Admit || at != Expect::Admit {
                            return Err(format!(
                                "op {i} (t = {now}, acquire {cost}): not_until {t}, but at {} the library says {before} and at {t} {at}",
                                t - 1
                            ));
                        }
                    }
                    Decision::Impossible { .. } => {}
                }
            }
            Op::Refund {
                units,
                admitted_at,
                admission,
                ..
            } => {
                let j = refunded_admission(case, i, admitted_at, admission)?;
                let receipt = receipts[j].expect("validated: op j was admitted");
                rule.refund(&mut state, now, &receipt, units);
            }
            Op::Charge { units, .. } => rule.charge(&mut state, now, units),
        }
    }
    Ok(())
}

#[test]
fn vectors_match_the_library() {
    let file = load();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for case in &file.cases {
        if case.skip.is_some() {
            continue;
        }
        let result = validate(case)
            .map_err(|e| format!("bad vector: {e}"))
            .and_then(|()| replay(case));
        match result {
            Ok(()) => replayed += 1,
            Err(e) => failures.push(format!("case {:?}: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        file.cases.len(),
        failures.join("\n")
    );
    assert!(replayed >= 30, "only {replayed} cases replayed");
}

#[test]
fn vectors_cover_every_algorithm_and_skips_are_justified() {
    let file = load();
    let mut names = BTreeSet::new();
    let mut algorithms = BTreeSet::new();
    for case in &file.cases {
        assert!(
            names.insert(&case.name),
            "duplicate case name {:?}",
            case.name
        );
        rule_of(case).unwrap_or_else(|e| panic!("case {:?}: {e}", case.name));
        if case.skip.is_some() {
            // A skipped case exists to document an unsupported schedule: time stepping back.
            assert!(
                case.ops.windows(2).any(|w| w[1].t < w[0].t),
                "case {:?} is skipped but its time never steps back",
                case.name
            );
        } else {
            algorithms.insert(case.limit.algorithm.as_str());
        }
    }
    let all = [
        "smooth_window",
        "token_bucket",
        "leaky_bucket",
        "sliding_window_log",
        "sliding_window_counter",
        "fixed_window",
    ];
    for a in all {
        assert!(algorithms.contains(a), "no replayed case for {a}");
    }
}
