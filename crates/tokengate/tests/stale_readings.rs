//! Readings of the clock that come late: a caller reads the clock, then waits for the limiter
//! (its lock, a preemption) while others go first. Played here on one thread by a clock that
//! steps back: each operation reads real time, or (a third of the time) real time less up to
//! half a period, as a caller that read it that much earlier would. Acquisitions, settlements
//! that give back part or all of what was reserved, and dropped permits, for every algorithm.
//!
//! What must hold: the admissions, each at the instant its permit reports and charged what it
//! finally used, are what a limiter on an honest clock admits too. Replayed in order of those
//! instants on a fresh limiter of the same policy (on a manual clock, never settled), every one
//! is admitted. A request decided at its late reading against a state that later admissions
//! had already moved on (a log rid of what had left the window by then), or a refund made at
//! such a reading (giving back time a later admission had taken), fails this.
//!
//! So is a limiter built from a limits file, whose requests fall under several budgets (the
//! account's, a model's, a tenant's), with idle budgets evicted now and then: a budget forgotten
//! at one instant must not be made afresh at an earlier one.
//!
//! The in-memory store is held to the same, with its reservations: a request that fits within
//! half a period is reserved at the instant it will fit (ahead of now), and settlements may
//! come before a later request's reserved instant.
//!
//! Run with the default features too (`cargo test -p tokengate --test stale_readings`): the
//! `tracing` and `metrics` features keep the lock-free lane closed, and the default build is
//! the one that puts the lane's buckets through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokengate::config::Config;
use tokengate::core::Nanos;
use tokengate::store::{Ask, MemoryStore, Store, StoreBudget};
use tokengate::{
    Algorithm, BuildError, Clock, Cost, Dimension, Limit, Limiter, ManualClock, Policy, Usage,
};

mod common;

/// The period of every limit.
const P: Nanos = 1_000_000_000;

/// A clock that reads whatever the test set last: it may step back.
#[derive(Clone, Default)]
struct SetClock(Arc<AtomicU64>);

impl SetClock {
    fn set(&self, t: Nanos) {
        self.0.store(t, Ordering::Relaxed);
    }
}

impl Clock for SetClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Real time moves on by this much.
    Step(Nanos),
    /// An acquisition of this many tokens, read this long ago.
    Acquire { tokens: u64, late: Nanos },
    /// The oldest permit held settles, having used this share (in 1/4ths) of its tokens, read
    /// this long ago; or is dropped (keeping all).
    End {
        quarters: u64,
        late: Nanos,
        drop: bool,
    },
}

fn op(n: u64) -> impl Strategy<Value = Op> {
    let late = prop_oneof![2 => Just(0), 1 => 0..P / 2];
    prop_oneof![
        3 => (0..P / 4).prop_map(Op::Step),
        4 => (1..=n, late.clone()).prop_map(|(tokens, late)| Op::Acquire { tokens, late }),
        2 => (0..=4u64, late, any::<bool>())
            .prop_map(|(quarters, late, drop)| Op::End { quarters, late, drop }),
    ]
}

/// One limit of `n` tokens a period, with no margin: refused where the algorithm cannot hold it.
fn built(algorithm: Algorithm, n: u64, burst: Option<u64>) -> Result<Policy, BuildError> {
    let limit = Limit::new(n, Duration::from_nanos(P))
        .algorithm(algorithm)
        .margin(Duration::ZERO);
    let limit = match burst {
        Some(b) => limit.burst(b),
        None => limit,
    };
    Policy::builder()
        .limit(Dimension::InputTokens, limit)
        .build()
}

fn policy(algorithm: Algorithm, n: u64, burst: Option<u64>) -> Policy {
    built(algorithm, n, burst).expect("a valid policy")
}

fn limit_case() -> impl Strategy<Value = (Algorithm, u64, Option<u64>)> {
    (
        prop::sample::select(Algorithm::ALL.to_vec()),
        2..=20u64,
        prop::option::of(1..=20u64),
    )
        .prop_filter_map("a burst only where the algorithm has one", |(a, n, b)| {
            let burst = match a {
                Algorithm::TokenBucket | Algorithm::SmoothWindow => b,
                _ => None,
            };
            built(a, n, burst).is_ok().then_some((a, n, burst))
        })
}

/// A limits file with the account's, two models' and a tenant's budgets, every limit on input
/// tokens per second with `algorithm` (the account's twice the others' amount).
fn limits_file(algorithm: Algorithm, n: u64, burst: Option<u64>) -> Config {
    let burst = burst.map_or(String::new(), |b| format!("burst = {b}\n"));
    let table = |header: &str, amount: u64| {
        format!(
            "[[{header}.limits]]\ndimension = \"input_tokens\"\namount = {amount}\nper = \"1s\"\n\
             algorithm = \"{}\"\n{burst}",
            algorithm.name()
        )
    };
    let text = format!(
        "margin = \"0s\"\n{}{}{}{}",
        table("account", 2 * n),
        table("models.a", n),
        table("models.b", n),
        table("tenants.t", n)
    );
    Config::from_toml_str(&text, "limits.toml").expect("a valid limits file")
}

/// What a run admitted: each admission's key (its token count picks it: [`key_of`]), the
/// instant it reports, and the tokens it finally used.
type Admitted = Vec<(u64, Nanos, u64)>;

/// A request's key: a tenant (`t`, or one with no budget of its own) and a model (`a`, `b`).
fn key_of(tokens: u64) -> (&'static str, &'static str) {
    [("t", "a"), ("t", "b"), ("u", "a"), ("u", "b")][(tokens % 4) as usize]
}

/// Plays `ops` with `clock` set to each operation's reading: `acquire(tokens)` answers an
/// admission's instant and what ends it, `end(held, used)` settles it (`None`: dropped).
fn play<H>(
    clock: &SetClock,
    ops: &[Op],
    mut acquire: impl FnMut(u64) -> Option<(Nanos, H)>,
    mut end: impl FnMut(H, Option<u64>),
) -> Admitted {
    let mut real: Nanos = P; // (room to read up to half a period late from the start)
    let mut held = std::collections::VecDeque::new();
    let mut admitted = Vec::new();
    for op in ops {
        match *op {
            Op::Step(d) => real += d,
            Op::Acquire { tokens, late } => {
                clock.set(real - late);
                if let Some((at, h)) = acquire(tokens) {
                    admitted.push((tokens, at, tokens));
                    held.push_back((h, admitted.len() - 1));
                }
            }
            Op::End {
                quarters,
                late,
                drop,
            } => {
                let Some((h, i)) = held.pop_front() else {
                    continue;
                };
                clock.set(real - late);
                let used = (!drop).then(|| admitted[i].2 * quarters / 4);
                end(h, used);
                if let Some(used) = used {
                    admitted[i].2 = used;
                }
            }
        }
        clock.set(real);
    }
    admitted
}

/// [`play`] on a limiter of `policy`.
fn play_limiter(policy: &Policy, ops: &[Op]) -> Admitted {
    let clock = SetClock::default();
    let limiter = Limiter::with_clock(policy.clone(), clock.clone());
    play(
        &clock,
        ops,
        |tokens| {
            let permit = limiter.try_acquire(Cost::zero().input(tokens)).ok()?;
            Some((permit.admitted_at(), permit))
        },
        |permit, used| match used {
            Some(used) => permit.settle(Usage::new().input(used)),
            None => drop(permit),
        },
    )
}

/// [`play`] on a limiter built from `config`, each acquisition on its [`key_of`], with idle
/// budgets evicted (at a reading as late as the operation's) whenever a permit is dropped.
fn play_keyed(config: &Config, ops: &[Op]) -> Admitted {
    let clock = SetClock::default();
    let limiter = Limiter::from_config_with_clock(config.clone(), clock.clone());
    play(
        &clock,
        ops,
        |tokens| {
            let (tenant, model) = key_of(tokens);
            let key = limiter.key(tenant, model);
            let permit = key.try_acquire(Cost::zero().input(tokens)).ok()?;
            Some((permit.admitted_at(), permit))
        },
        |permit, used| match used {
            Some(used) => permit.settle(Usage::new().input(used)),
            None => {
                drop(permit);
                limiter.evict_idle();
            }
        },
    )
}

/// The answer of a store's call, which the in-memory store gives at once.
fn at_once<T>(call: impl std::future::Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    match call
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(answer) => answer,
        std::task::Poll::Pending => panic!("the in-memory store answers at once"),
    }
}

/// [`play`] on the in-memory store, one budget of `policy`: each admission at its reserved
/// instant.
fn play_store(policy: &Policy, ops: &[Op]) -> Admitted {
    let clock = SetClock::default();
    let store = MemoryStore::with_clock(clock.clone());
    let budgets = [StoreBudget::new("budget", policy.clone())];
    let half = Duration::from_nanos(P / 2);
    play(
        &clock,
        ops,
        |tokens| {
            let cost = Cost::zero().input(tokens);
            let ask = Ask::new(&budgets, &cost).max_wait(half).horizon(half);
            let reservation = at_once(store.acquire(ask)).ok()?.reserved()?;
            let at = reservation.admitted_at().expect("an admission instant");
            Some((u64::try_from(at.as_nanos()).unwrap(), reservation))
        },
        |reservation, used| {
            let used = used.map(|u| Usage::new().input(u));
            at_once(store.settle(&reservation, used.as_ref())).expect("settled");
        },
    )
}

/// The first of `admitted`, in order of instants, that `admit(tokens, used)` refuses with
/// `clock` set to its instant: a fresh limiter on an honest clock, charged what each used.
fn refused_on_an_honest_clock(
    admitted: &Admitted,
    clock: &ManualClock,
    mut admit: impl FnMut(u64, u64) -> bool,
) -> Option<(u64, Nanos, u64)> {
    let mut sorted = admitted.clone();
    sorted.sort_by_key(|&(_, t, _)| t);
    sorted.into_iter().find(|&(tokens, t, used)| {
        clock.set(t);
        used > 0 && !admit(tokens, used)
    })
}

/// Asserts that a limiter of `policy` on an honest clock admits all of `admitted` again.
fn assert_honest(what: &str, policy: &Policy, admitted: &Admitted) {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(policy.clone(), clock.clone());
    let mut kept = Vec::new();
    let refused = refused_on_an_honest_clock(admitted, &clock, |_, used| {
        limiter
            .try_acquire(Cost::zero().input(used))
            .map(|p| kept.push(p))
            .is_ok()
    });
    assert!(
        refused.is_none(),
        "{what}: {refused:?} refused on an honest clock; (key, instant, used): {admitted:?}"
    );
}

/// [`assert_honest`] on a limiter built from `config`, each admission on its key.
fn assert_honest_keyed(what: &str, config: &Config, admitted: &Admitted) {
    let clock = ManualClock::new();
    let limiter = Limiter::from_config_with_clock(config.clone(), clock.clone());
    let mut kept = Vec::new();
    let refused = refused_on_an_honest_clock(admitted, &clock, |tokens, used| {
        let (tenant, model) = key_of(tokens);
        limiter
            .key(tenant, model)
            .try_acquire(Cost::zero().input(used))
            .map(|p| kept.push(p))
            .is_ok()
    });
    assert!(
        refused.is_none(),
        "{what}: {refused:?} refused on an honest clock; (key, instant, used): {admitted:?}"
    );
}

proptest! {
    #![proptest_config(common::properties::config(1_024, "stale_readings"))]

    #[test]
    fn late_readings_never_let_in_more_than_an_honest_clock(
        (algorithm, n, burst) in limit_case(),
        ops in prop::collection::vec(op(20), 1..120),
    ) {
        let policy = policy(algorithm, n, burst);
        let what = format!("{algorithm} {n}/s burst {burst:?}");
        assert_honest(&what, &policy, &play_limiter(&policy, &ops));
    }

    #[test]
    fn late_readings_never_let_a_store_reserve_more_than_an_honest_clock(
        (algorithm, n, burst) in limit_case(),
        ops in prop::collection::vec(op(20), 1..120),
    ) {
        let policy = policy(algorithm, n, burst);
        let what = format!("the store, {algorithm} {n}/s burst {burst:?}");
        assert_honest(&what, &policy, &play_store(&policy, &ops));
    }

    #[test]
    fn late_readings_never_let_keyed_budgets_take_more_than_an_honest_clock(
        (algorithm, n, burst) in limit_case(),
        ops in prop::collection::vec(op(20), 1..120),
    ) {
        let config = limits_file(algorithm, n, burst);
        let what = format!("keys, {algorithm} {n}/s burst {burst:?}");
        assert_honest_keyed(&what, &config, &play_keyed(&config, &ops));
    }
}
