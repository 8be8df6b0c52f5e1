//! The bucket algorithms of [`tokengate::core::LimitRule`] (`Algorithm::TokenBucket` and
//! `Algorithm::LeakyBucket`) held to EXACT rational arithmetic: no rounding may accumulate
//! across admissions, so a full burst is admitted at once whatever the rate (3 per second,
//! burst 3: all three requests at t = 0).
//!
//! The reference model keeps `X`, the exact theoretical arrival time (TAT) multiplied by the
//! amount `N` (a `u128`; the exact TAT is `X / N` ns), and decides with plain integer
//! arithmetic, written from the documented semantics, not from the library's code:
//! - token bucket, burst `B`: cost `c > B` is impossible; else with `base = max(X, t*N)` it is
//!   admitted iff `base + c*P <= t*N + B*P` (then `X = base + c*P`), else it waits until
//!   `ceil((X + c*P - B*P) / N)`; cost 0 is a peek that changes nothing;
//! - leaky bucket (burst 1, capacity `N`): `c <= 1` as the token bucket with `B = 1`; `1 < c <= N`
//!   is admitted iff `X <= t*N` (the bucket is full), else it waits until `ceil(X / N)`;
//! - `charge(u)`: `X = max(X, t*N) + min(u, N)*P`;
//! - token bucket snapshot: `remaining = B - min(B, ceil(max(X - t*N, 0) / P))`.
//!
//! Every decision (and, for token buckets, the snapshot's `remaining` after every step) must
//! equal the model's, and every `NotUntil(T)` must be exact: the same cost is denied at `T - 1`
//! and admitted at `T`. Rates are mostly not a whole number of nanoseconds per unit (N in 1..=20
//! per P in 1..=200 ns), plus realistic rates (3 .. 30,000 per second, minute or day).
//!
//! Failures are persisted in `proptest-regressions/gcra_exact.txt` and replayed first on the
//! next run; proptest prints the minimal failing schedule and its seed.
//!
//! Run: `cargo test -p tokengate --test gcra_exact` (512 cases per property, or
//! `PROPTEST_CASES` when set).

use std::time::Duration;

use proptest::prelude::*;
use tokengate::core::{Decision, LimitRule, LimitState, Nanos};
use tokengate::{Algorithm, Limit};

mod common;

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

/// A bucket of `n` units per `p` ns in exact rational arithmetic.
#[derive(Debug, Clone)]
struct Model {
    n: u128,
    p: u128,
    /// The burst (1 for the leaky bucket).
    b: u128,
    leaky: bool,
    /// The exact TAT times `n`.
    x: u128,
}

impl Model {
    fn new(n: u64, p: u64, burst: Option<u64>) -> Self {
        Self {
            n: n.into(),
            p: p.into(),
            b: burst.unwrap_or(1).into(),
            leaky: burst.is_none(),
            x: 0,
        }
    }

    fn not_until(num: u128, den: u128) -> Decision {
        Decision::NotUntil(Nanos::try_from(num.div_ceil(den)).expect("wait fits in u64"))
    }

    fn decide(&self, t: Nanos, c: u64) -> Decision {
        let (n, p, x) = (self.n, self.p, self.x);
        let tn = u128::from(t) * n;
        let c = u128::from(c);
        if self.leaky {
            if c > n {
                return Decision::Impossible { capacity: n as u64 };
            }
            if c > 1 {
                return if x <= tn {
                    Decision::Admit
                } else {
                    Self::not_until(x, n)
                };
            }
        }
        // Token bucket rule (burst 1 for the leaky bucket's costs of at most one).
        let b = self.b;
        if c > b {
            return Decision::Impossible { capacity: b as u64 };
        }
        let base = x.max(tn);
        if base + c * p <= tn + b * p {
            Decision::Admit
        } else {
            // Denied: base > t*N (else c*P > B*P), so base = X and X + c*P > B*P.
            Self::not_until(x + c * p - b * p, n)
        }
    }

    /// Records an admission (after `decide` said `Admit`).
    fn commit(&mut self, t: Nanos, c: u64) {
        if c == 0 {
            return;
        }
        self.x = self.x.max(u128::from(t) * self.n) + u128::from(c) * self.p;
    }

    fn charge(&mut self, t: Nanos, u: u64) {
        let u = u128::from(u).min(self.n);
        self.x = self.x.max(u128::from(t) * self.n) + u * self.p;
    }

    /// The token bucket's `remaining` at `t`.
    fn remaining(&self, t: Nanos) -> u64 {
        let ahead = self.x.saturating_sub(u128::from(t) * self.n);
        (self.b - self.b.min(ahead.div_ceil(self.p))) as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Advance the clock by this many ns.
    Ns(u64),
    /// Advance the clock to the last `NotUntil` returned, if it is ahead.
    ToLastNotUntil,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Acquire(u64),
    Charge(u64),
}

#[derive(Debug, Clone, Copy)]
struct Step {
    wait: Wait,
    op: Op,
}

#[derive(Debug, Clone)]
struct Case {
    n: u64,
    p: Nanos,
    /// `Some(B)`: a token bucket with burst B; `None`: a leaky bucket.
    burst: Option<u64>,
    steps: Vec<Step>,
}

fn step(n: u64, p: Nanos, capacity: u64) -> impl Strategy<Value = Step> {
    // Time for about one unit, so small steps land near refills.
    let unit = p.div_ceil(n).max(1);
    let small = (2 * unit).min(p);
    let wait = prop_oneof![
        4 => Just(Wait::Ns(0)),
        3 => (0..=small).prop_map(Wait::Ns),
        1 => (0..=p).prop_map(Wait::Ns),
        1 => Just(Wait::ToLastNotUntil),
    ];
    let op = prop_oneof![
        3 => (0..=capacity + 2).prop_map(Op::Acquire),
        2 => (0..=(capacity + 2).min(3)).prop_map(Op::Acquire),
        1 => (0..=2 * n).prop_map(Op::Charge),
    ];
    (wait, op).prop_map(|(wait, op)| Step { wait, op })
}

/// A token bucket (burst 1..=N+3) or a leaky bucket at one of `rates`, and 1..60 steps.
fn case(rates: impl Strategy<Value = (u64, Nanos)>) -> impl Strategy<Value = Case> {
    (rates, any::<bool>())
        .prop_flat_map(|((n, p), token)| {
            let burst = if token {
                (1..=n + 3).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (Just(n), Just(p), burst)
        })
        .prop_flat_map(|(n, p, burst)| {
            let capacity = burst.unwrap_or(n);
            prop::collection::vec(step(n, p, capacity), 1..60).prop_map(move |steps| Case {
                n,
                p,
                burst,
                steps,
            })
        })
}

/// Small rates, mostly not a whole number of ns per unit.
fn small_rates() -> impl Strategy<Value = (u64, Nanos)> {
    (1..=20u64, 1..=200u64)
}

/// Realistic rates: per second, minute and day.
fn realistic_rates() -> impl Strategy<Value = (u64, Nanos)> {
    const S: Nanos = 1_000_000_000;
    (
        prop::sample::select(vec![3u64, 7, 61, 500, 1000, 30_000]),
        prop::sample::select(vec![S, 60 * S, 86_400 * S]),
    )
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

/// The rule under test: `n` per `p` ns, exact (no safety margin: the model has none).
fn rule_of(n: u64, p: Nanos, burst: Option<u64>) -> LimitRule {
    let limit = Limit::new(n, Duration::from_nanos(p)).margin(Duration::ZERO);
    let limit = match burst {
        Some(b) => limit.algorithm(Algorithm::TokenBucket).burst(b),
        None => limit.algorithm(Algorithm::LeakyBucket),
    };
    LimitRule::new(&limit).expect("valid limit")
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let rule = rule_of(case.n, case.p, case.burst);
    let mut model = Model::new(case.n, case.p, case.burst);
    let mut state = rule.new_state();
    let mut now: Nanos = 0;
    let mut last_wait: Option<Nanos> = None;
    for (i, step) in case.steps.iter().enumerate() {
        match step.wait {
            Wait::Ns(d) => now += d,
            Wait::ToLastNotUntil => now = now.max(last_wait.unwrap_or(now)),
        }
        match step.op {
            Op::Acquire(c) => {
                let got = rule.decide(&state, now, c);
                let want = model.decide(now, c);
                prop_assert_eq!(
                    got,
                    want,
                    "rule {:?}: op #{} {:?} at t={}: library {:?}, exact model {:?} (X/N = {}/{})",
                    rule,
                    i,
                    step.op,
                    now,
                    got,
                    want,
                    model.x,
                    model.n
                );
                match got {
                    Decision::Admit => {
                        rule.commit(&mut state, now, c);
                        model.commit(now, c);
                    }
                    Decision::NotUntil(at) => {
                        last_wait = Some(at);
                        check_wait_is_exact(&rule, &state, now, c, at, i)?;
                    }
                    Decision::Impossible { .. } => {}
                }
            }
            Op::Charge(u) => {
                rule.charge(&mut state, now, u);
                model.charge(now, u);
            }
        }
        if case.burst.is_some() {
            let got = rule.snapshot(&state, now).remaining;
            let want = model.remaining(now);
            prop_assert_eq!(
                got,
                want,
                "rule {:?}: snapshot after op #{} {:?} at t={}: library remaining {}, exact model {} (X/N = {}/{})",
                rule,
                i,
                step.op,
                now,
                got,
                want,
                model.x,
                model.n
            );
        }
    }
    Ok(())
}

/// `NotUntil(at)` at `now` for `cost`: on a copy of the state, denied at `at - 1`, admitted at
/// `at`.
fn check_wait_is_exact(
    rule: &LimitRule,
    state: &LimitState,
    now: Nanos,
    cost: u64,
    at: Nanos,
    i: usize,
) -> Result<(), TestCaseError> {
    if at <= now {
        return Ok(());
    }
    let copy = state.clone();
    let before = rule.decide(&copy, at - 1, cost);
    prop_assert_eq!(
        before,
        Decision::NotUntil(at),
        "rule {:?}: op #{} cost {} at t={} said NotUntil({}), but at {} it says {:?}",
        rule,
        i,
        cost,
        now,
        at,
        at - 1,
        before
    );
    let then = rule.decide(&copy, at, cost);
    prop_assert_eq!(
        then,
        Decision::Admit,
        "rule {:?}: op #{} cost {} at t={} said NotUntil({}), but at {} it says {:?}",
        rule,
        i,
        cost,
        now,
        at,
        at,
        then
    );
    Ok(())
}

proptest! {
    #![proptest_config(common::properties::config(512, "gcra_exact"))]

    /// Small rates, mostly fractional ns per unit.
    #[test]
    fn buckets_are_exact_at_small_rates(case in case(small_rates())) {
        run(&case)?;
    }

    /// Realistic rates per second, minute and day.
    #[test]
    fn buckets_are_exact_at_realistic_rates(case in case(realistic_rates())) {
        run(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Worked examples
// ---------------------------------------------------------------------------------------------

/// Decides `cost` at `now` with both the library and the model, checks both say `want`, and
/// commits on admission.
fn expect(
    rule: &LimitRule,
    state: &mut LimitState,
    model: &mut Model,
    (now, cost): (Nanos, u64),
    want: Decision,
) {
    let got = rule.decide(state, now, cost);
    assert_eq!(got, want, "library: cost {cost} at t={now}");
    assert_eq!(
        model.decide(now, cost),
        want,
        "model: cost {cost} at t={now}"
    );
    if want == Decision::Admit {
        rule.commit(state, now, cost);
        model.commit(now, cost);
    }
}

#[test]
fn three_per_second_admits_a_full_burst_at_once() {
    let rule = rule_of(3, 1_000_000_000, Some(3));
    let mut model = Model::new(3, 1_000_000_000, Some(3));
    let mut s = rule.new_state();
    for _ in 0..3 {
        expect(&rule, &mut s, &mut model, (0, 1), Decision::Admit);
    }
    let fourth = Decision::NotUntil(333_333_334);
    expect(&rule, &mut s, &mut model, (0, 1), fourth);
}

#[test]
fn three_per_ten_ns_keeps_the_fraction() {
    let rule = rule_of(3, 10, Some(3));
    let mut model = Model::new(3, 10, Some(3));
    let mut s = rule.new_state();
    expect(&rule, &mut s, &mut model, (0, 3), Decision::Admit);
    expect(&rule, &mut s, &mut model, (0, 1), Decision::NotUntil(4));
    expect(&rule, &mut s, &mut model, (4, 1), Decision::Admit);
    expect(&rule, &mut s, &mut model, (4, 2), Decision::NotUntil(10));
}
