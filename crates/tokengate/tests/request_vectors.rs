//! Replays the whole-request test vectors in `tests/vectors/requests.json` (format in
//! `tests/vectors/README.md`) against the in-memory limiter built from each case's limits
//! file, on a manual clock, and fails naming the case, the op index and both answers on any
//! mismatch. Every other store (Redis) and the CLI's simulated provider are to replay the same
//! file.
//!
//! Run: `cargo test -p tokengate --test request_vectors`.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::request_vectors::{after, load, Case, Expect, Op, Word};
use tokengate::config::Config;
use tokengate::{AcquireError, Clock, Denied, Limiter, ManualClock, Permit};

/// What the limiter answered, in the vectors' terms.
fn answer(t: u64, denied: &Denied) -> Expect {
    let at = |wait: Duration| after(t, wait);
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
    let file = load();
    assert!(file.cases.len() >= 9);
    for case in &file.cases {
        replay(case);
    }
}
