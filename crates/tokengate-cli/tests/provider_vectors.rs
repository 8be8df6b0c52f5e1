//! Holds the simulated provider to the library's whole-request test vectors,
//! `crates/tokengate/tests/vectors/requests.json` (format in that directory's README.md), the
//! file the in-memory limiter replays (`tokengate/tests/request_vectors.rs`): one
//! specification of the admission decision.
//!
//! A provider has no tenants, no client-side pause and no reload; it is asked for one request
//! to a model at a time, counts its input as it arrives and its output as produced. A case
//! with an op or a key it cannot express is skipped as a whole, with the reason; the test
//! asserts how many cases were replayed, so it cannot silently replay none.
//!
//! Each replayed case builds the provider from the case's `limits` text (margin 0, as a
//! provider counts; the cases name `token_bucket` on every limit, which the provider keeps) on
//! a clock at 0, and compares, op by op:
//! - `"admit"`: the call is accepted;
//! - `{"not_until": T}`: a 429 whose `retry-after-ms` and `retry-after` are `T - t` rounded up
//!   to the millisecond and to the second (what the headers can say), and, exactly to the
//!   nanosecond, that the same call on a copy of the provider is refused at `T - 1` and
//!   accepted at `T`. The dimension is not compared: a 429 does not name one;
//! - `"in_flight_full"`: a 429 with `retry-after: 1` and no `retry-after-ms`;
//! - `{"impossible": D}`: a 429 with `retry-after: 60`, and the provider's reason
//!   ([`Provider::impossible`]) names a limit on `D`;
//! - `"unknown_model"`: the provider refuses the model.
//!
//! `settle` ends the call with its output (`usage.output`; absent, as reserved); `release`
//! (a failed call: slots freed, the reservation stays counted) ends it with the output it
//! reserved, which settles nothing.

use std::collections::BTreeMap;

// The vectors' format, shared with the library's replayer.
#[path = "../../tokengate/tests/common/request_vectors.rs"]
mod request_vectors;

use request_vectors::{load, Case, Expect, Op, Word};
use tokengate::{Algorithm, OutputCount};
use tokengate_cli::provider::{Answer, Provider, ProviderSpec, Ticket};

/// The cases of version 1 the provider can express: those with neither tenants, nor a request
/// without a model, nor a pause, nor a reload.
const REPLAYED: usize = 4;

/// Why the provider cannot replay `case`, if it cannot.
fn inexpressible(case: &Case) -> Option<&'static str> {
    // The input each admission reserved, by the index of its op.
    let mut reserved: BTreeMap<usize, u64> = BTreeMap::new();
    for (i, step) in case.ops.iter().enumerate() {
        match &step.op {
            Op::Acquire {
                tenant: Some(_), ..
            } => return Some("tenant budgets: a provider limits its account and its models"),
            Op::Acquire { model: None, .. } => {
                return Some("a request without a model: every call to a provider names one")
            }
            Op::Acquire { cost, .. } if cost.requests != Some(1) => {
                return Some("a cost of other than one request: a call is one request")
            }
            Op::Acquire { cost, .. } => {
                reserved.insert(i, cost.input.unwrap_or(0));
            }
            Op::Settle {
                admission, usage, ..
            } => {
                let input = reserved.get(admission).copied();
                let same_input = usage.input.is_none() || usage.input == input;
                if usage.requests.is_some_and(|n| n != 1) || !same_input {
                    return Some(
                        "a usage of other input or requests than reserved: a provider counts the input as it arrives",
                    );
                }
            }
            Op::Release { .. } => {}
            Op::Pause { .. } => return Some("a pause: the provider has no client-side pause"),
            Op::Reload { .. } => return Some("a reload: the provider's limits are fixed"),
        }
    }
    None
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The headers of a 429, failing `at` on an acceptance.
fn throttled(answer: Answer, at: &str, expect: &Expect) -> Vec<(String, String)> {
    match answer {
        Answer::Throttled(headers) => headers,
        Answer::Accepted(_) => panic!("{at}: accepted, expected {expect:?}"),
    }
}

fn replay(case: &Case) {
    let spec = ProviderSpec::from_toml_str(&case.limits, &case.name)
        .unwrap_or_else(|e| panic!("{}: limits: {e}", case.name));
    assert_eq!(spec.output, OutputCount::Produced, "{}", case.name);
    let mut provider = Provider::new(spec).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut tickets: BTreeMap<usize, (Ticket, u64)> = BTreeMap::new();
    let mut now = 0;
    for (i, step) in case.ops.iter().enumerate() {
        assert!(step.t >= now, "{}: op {i}: time goes back", case.name);
        now = step.t;
        let t = step.t;
        let at = format!("{}: op {i} at {t}", case.name);
        match &step.op {
            Op::Acquire {
                model,
                cost,
                expect,
                ..
            } => {
                let model = model.as_deref().unwrap_or_default();
                let (input, output) = (cost.input.unwrap_or(0), cost.output.unwrap_or(0));
                let b = match provider.budget_of(model) {
                    Ok(b) => b,
                    Err(e) => {
                        assert_eq!(
                            expect,
                            &Expect::Word(Word::UnknownModel),
                            "{at}: the provider refused the model: {e}"
                        );
                        continue;
                    }
                };
                let budgets = provider.budgets()[b..=b].iter().chain(provider.account());
                for l in budgets.flat_map(|budget| &budget.limits) {
                    assert_eq!(l.rule.algorithm(), Algorithm::TokenBucket, "{at}: {l:?}");
                }
                let probe = provider.clone();
                let answer = provider.call(b, input, output, t);
                match expect {
                    Expect::Word(Word::Admit) => match answer {
                        Answer::Accepted(ticket) => {
                            tickets.insert(i, (ticket, output));
                        }
                        Answer::Throttled(h) => panic!("{at}: a 429 ({h:?}), expected admit"),
                    },
                    Expect::Word(Word::UnknownModel) => {
                        panic!("{at}: the provider knows the model, expected unknown_model")
                    }
                    Expect::Word(Word::InFlightFull) => {
                        let headers = throttled(answer, &at, expect);
                        assert_eq!(header(&headers, "retry-after"), Some("1"), "{at}");
                        assert_eq!(header(&headers, "retry-after-ms"), None, "{at}");
                    }
                    Expect::NotUntil { not_until, .. } => {
                        let headers = throttled(answer, &at, expect);
                        let wait = not_until - t;
                        let ms = wait.div_ceil(1_000_000).to_string();
                        let s = wait.div_ceil(1_000_000_000).to_string();
                        assert_eq!(header(&headers, "retry-after-ms"), Some(&*ms), "{at}");
                        assert_eq!(header(&headers, "retry-after"), Some(&*s), "{at}");
                        // Exactly: refused 1 ns before, accepted at the instant.
                        let before = probe.clone().call(b, input, output, not_until - 1);
                        assert!(
                            matches!(before, Answer::Throttled(_)),
                            "{at}: accepted at {}, expected not before {not_until}",
                            not_until - 1
                        );
                        if *not_until != u64::MAX {
                            let then = probe.clone().call(b, input, output, *not_until);
                            assert!(
                                matches!(then, Answer::Accepted(_)),
                                "{at}: refused at {not_until}, expected accepted then"
                            );
                        }
                    }
                    Expect::Impossible { impossible } => {
                        let headers = throttled(answer, &at, expect);
                        assert_eq!(header(&headers, "retry-after"), Some("60"), "{at}");
                        let why = provider.impossible(b, input, output);
                        assert!(
                            why.as_deref()
                                .is_some_and(|w| w.starts_with(&format!("{impossible} "))),
                            "{at}: the provider's reason {why:?}, expected a limit on {impossible}"
                        );
                    }
                    Expect::PausedUntil { .. } => {
                        panic!("{at}: a pause in a case without one")
                    }
                }
            }
            Op::Settle {
                admission, usage, ..
            } => {
                let (ticket, reserved) = tickets
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no admission at op {admission}"));
                provider.finish(ticket, usage.output.unwrap_or(reserved), t);
            }
            Op::Release { admission, .. } => {
                let (ticket, reserved) = tickets
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no admission at op {admission}"));
                provider.finish(ticket, reserved, t);
            }
            Op::Pause { .. } | Op::Reload { .. } => unreachable!("{at}: skipped"),
        }
    }
}

#[test]
fn the_provider_answers_every_request_vector_it_can_express() {
    let file = load();
    let (mut replayed, mut skipped) = (Vec::new(), Vec::new());
    for case in &file.cases {
        match inexpressible(case) {
            Some(why) => skipped.push(format!("{}: {why}", case.name)),
            None => {
                replay(case);
                replayed.push(case.name.as_str());
            }
        }
    }
    assert_eq!(
        replayed.len(),
        REPLAYED,
        "replayed {replayed:?}; skipped {skipped:#?}"
    );
}
