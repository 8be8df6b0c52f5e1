//! The Redis store's Lua script (`src/redis/decide.lua`) held to the Rust core on a real Redis
//! (a redis-server of each test's own), with the time passed in: the test vectors
//! (`tests/vectors/`), random schedules against `core::decide_request`, `commit_budget` and
//! `settle_budget` over plain states, reservations, leases, expiries, mismatched limits and
//! the rebase of a budget's epoch.
//!
//! The arguments and replies go through `src/redis/script.rs` itself, compiled into this test
//! by path over the library's public API.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_script` (needs `redis-server`:
//! `apt-get install -y redis-server`). The random schedules print their seed when they fail;
//! `TOKENGATE_REDIS_SEED=<seed>` replays them.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestError;
use redis::{Connection, Value};
use serde::Deserialize;

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../src/redis/script.rs"]
mod script;

// What `script.rs` reads as `crate::...`: the library's public API.
use tokengate::{core, Algorithm, Cost, Limit, Policy};

use common::policies::{policy_strategy, seeded_runner};
use common::redis_server::RedisServer;
use common::request_vectors::{self, Expect as RequestExpect, Op as RequestOp, Word};
use core::{
    commit_budget, decide_request, settle_budget, BudgetDecision, BudgetView, Decision, LimitRule,
    LimitState, Nanos, Receipt, Snapshot,
};
use script::{AcquireReply, BudgetKeys, Peeked};
use tokengate::config::Config;
use tokengate::Dimension;

const S: Nanos = 1_000_000_000;
const DAY: Nanos = 86_400 * S;
/// The script's exact range: instants and figures below 2^53.
const EXACT: u64 = 1 << 53;

/// A server of the test's own and a connection to it.
fn connect() -> (RedisServer, Connection) {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("a redis url");
    let con = client
        .get_connection()
        .expect("a connection to the test's redis");
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    (server, con)
}

fn call<T: redis::FromRedisValue>(con: &mut Connection, invocation: script::Invocation) -> T {
    invocation.invoke(con).expect("the script runs")
}

fn peek(con: &mut Connection, keys: &BudgetKeys, policy: &Policy, now: Nanos) -> Peeked {
    call(con, script::peek(keys, policy, Some(now)))
}

fn rule_of(limit: &Limit) -> LimitRule {
    LimitRule::new(limit).expect("a valid limit")
}

fn rules(policy: &Policy) -> Vec<LimitRule> {
    policy.limits().map(|(_, l)| rule_of(l)).collect()
}

/// A number in `0..n`.
fn below(seed: &mut u64, n: u64) -> u64 {
    common::rng::between(seed, 0, n - 1)
}

/// Every key the server holds.
fn all_keys(con: &mut Connection) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        keys.extend(found);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Copies a budget's keys to `to` (nothing is written to the original).
fn copy_keys(con: &mut Connection, from: &BudgetKeys, to: &BudgetKeys) {
    let pairs = [(&from.state, &to.state), (&from.leases, &to.leases)]
        .into_iter()
        .chain(from.lists.iter().zip(&to.lists));
    for (a, b) in pairs {
        let _: i64 = redis::cmd("DEL").arg(b).query(con).expect("DEL");
        let _: i64 = redis::cmd("COPY")
            .arg(a)
            .arg(b)
            .arg("REPLACE")
            .query(con)
            .expect("COPY");
    }
}

// ---------------------------------------------------------------------------------------
// algorithms.json

#[derive(Debug, Deserialize)]
struct AlgorithmFile {
    version: u32,
    cases: Vec<AlgorithmCase>,
}

#[derive(Debug, Deserialize)]
struct AlgorithmCase {
    name: String,
    #[serde(default)]
    skip: Option<String>,
    limit: LimitSpec,
    ops: Vec<AlgorithmStep>,
}

#[derive(Debug, Deserialize)]
struct LimitSpec {
    amount: u64,
    period_ns: u64,
    burst: Option<u64>,
    algorithm: String,
    #[serde(default)]
    margin_ns: u64,
}

#[derive(Debug, Deserialize)]
struct AlgorithmStep {
    t: Nanos,
    #[serde(flatten)]
    op: AlgorithmOp,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum AlgorithmOp {
    Acquire {
        cost: u64,
        expect: Option<AlgorithmExpect>,
    },
    Refund {
        units: u64,
        admitted_at: Nanos,
        #[serde(default)]
        admission: Option<usize>,
    },
    Charge {
        units: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AlgorithmExpect {
    Admit,
    NotUntil(Nanos),
    Never,
    Impossible(u64),
}

impl AlgorithmExpect {
    /// What the script's answer to an acquire at `t` means in the vectors' terms.
    fn of(t: Nanos, reply: &AcquireReply) -> Self {
        match *reply {
            AcquireReply::Admitted { wait: 0, .. } => AlgorithmExpect::Admit,
            AcquireReply::Wait {
                wait: Nanos::MAX, ..
            } => AlgorithmExpect::Never,
            AcquireReply::Wait { wait, .. } => AlgorithmExpect::NotUntil(t + wait),
            ref other => panic!("an answer outside the vectors' terms: {other:?}"),
        }
    }
}

fn algorithm(name: &str) -> Algorithm {
    match name {
        "smooth_window" => Algorithm::SmoothWindow,
        "token_bucket" => Algorithm::TokenBucket,
        "leaky_bucket" => Algorithm::LeakyBucket,
        "sliding_window_log" => Algorithm::SlidingWindowLog,
        "sliding_window_counter" => Algorithm::SlidingWindowCounter,
        "fixed_window" => Algorithm::FixedWindow,
        other => panic!("unknown algorithm {other:?}"),
    }
}

/// The one-limit policy of a case, counting requests.
fn case_policy(spec: &LimitSpec) -> Policy {
    let mut limit = Limit::new(spec.amount, Duration::from_nanos(spec.period_ns))
        .algorithm(algorithm(&spec.algorithm))
        .margin(Duration::from_nanos(spec.margin_ns));
    if let Some(b) = spec.burst {
        limit = limit.burst(b);
    }
    Policy::builder()
        .limit(Dimension::Requests, limit)
        .build()
        .expect("a valid limit")
}

/// Why a case cannot be replayed through the script, if it cannot.
fn outside_the_domain(case: &AlgorithmCase, policy: &Policy) -> Option<String> {
    if let Some(why) = &case.skip {
        return Some(format!("skipped by the vectors: {why}"));
    }
    if let Err(e) = script::check_domain(policy) {
        return Some(format!("a limit the Redis store refuses: {e}"));
    }
    for step in &case.ops {
        let expected = match &step.op {
            AlgorithmOp::Acquire {
                expect: Some(AlgorithmExpect::NotUntil(t)),
                ..
            } => *t,
            _ => 0,
        };
        if step.t >= EXACT || expected >= EXACT {
            return Some("instants at or past 2^53 ns (near the end of the 64-bit clock)".into());
        }
        if let AlgorithmOp::Acquire {
            expect: Some(AlgorithmExpect::Never),
            ..
        } = step.op
        {
            return Some("\"never\" at the end of the 64-bit clock".into());
        }
    }
    None
}

/// The acquire of op `i` that a refund names.
fn refunded(case: &AlgorithmCase, i: usize, admitted_at: Nanos, admission: Option<usize>) -> usize {
    admission.unwrap_or_else(|| {
        (0..i)
            .rev()
            .find(|&j| {
                case.ops[j].t == admitted_at
                    && matches!(
                        case.ops[j].op,
                        AlgorithmOp::Acquire {
                            expect: Some(AlgorithmExpect::Admit),
                            ..
                        }
                    )
            })
            .expect("the vectors name an earlier admission")
    })
}

fn replay_algorithm_case(
    con: &mut Connection,
    index: usize,
    case: &AlgorithmCase,
    policy: &Policy,
) {
    let keys = BudgetKeys::new(&format!("{{v}}:a{index}"), 1);
    let scratch = BudgetKeys::new(&format!("{{v}}:a{index}:copy"), 1);
    let budgets = [(&keys, policy)];
    let rule = rules(policy).remove(0);
    // Per op: the admission's receipt and epoch.
    let mut receipts: Vec<Option<(Vec<Vec<Receipt>>, u64)>> = vec![None; case.ops.len()];
    let requests = |n: u64| Cost::zero().with_requests(n);
    for (i, step) in case.ops.iter().enumerate() {
        let (t, at) = (step.t, format!("case {:?} op {i} at {}", case.name, step.t));
        match step.op {
            AlgorithmOp::Acquire { cost, expect } => {
                let want = expect.expect("every acquire has an expectation");
                if cost > rule.capacity() {
                    // The store refuses it before the script is called.
                    let got = AlgorithmExpect::Impossible(rule.capacity());
                    assert_eq!(got, want, "{at}");
                    continue;
                }
                let invocation = script::acquire(&budgets, &requests(cost), Some(t), 0, "l", 1);
                let reply: AcquireReply = call(con, invocation);
                let got = AlgorithmExpect::of(t, &reply);
                assert_eq!(got, want, "{at}: acquire {cost}");
                match reply {
                    AcquireReply::Admitted {
                        epoch, receipts: r, ..
                    } => receipts[i] = Some((r, epoch)),
                    AcquireReply::Wait { wait, .. } => {
                        // Denied one nanosecond before, admitted at the instant (on copies).
                        let until = t + wait;
                        for (when, admit) in [(until - 1, false), (until, true)] {
                            copy_keys(con, &keys, &scratch);
                            let copy = [(&scratch, policy)];
                            let invocation =
                                script::acquire(&copy, &requests(cost), Some(when), 0, "l", 1);
                            let reply: AcquireReply = call(con, invocation);
                            let admitted = matches!(reply, AcquireReply::Admitted { .. });
                            assert_eq!(
                                admitted, admit,
                                "{at}: not_until {until}, at {when}: {reply:?}"
                            );
                        }
                    }
                    _ => unreachable!(),
                }
            }
            AlgorithmOp::Refund {
                units,
                admitted_at,
                admission,
            } => {
                let j = refunded(case, i, admitted_at, admission);
                let AlgorithmOp::Acquire { cost, .. } = case.ops[j].op else {
                    panic!("{at}: op {j} is no acquire")
                };
                let (r, epoch) = receipts[j].clone().expect("an admitted acquire");
                let invocation = script::settle(
                    &budgets,
                    &requests(cost),
                    &requests(cost - units),
                    epoch,
                    &r,
                    Some(t),
                    None,
                );
                let _: Value = call(con, invocation);
            }
            AlgorithmOp::Charge { units } => {
                let invocation = script::settle(
                    &budgets,
                    &Cost::zero(),
                    &requests(units),
                    0,
                    &[],
                    Some(t),
                    None,
                );
                let _: Value = call(con, invocation);
            }
        }
    }
}

#[test]
fn the_algorithm_vectors_hold_in_redis() {
    let file: AlgorithmFile =
        serde_json::from_str(include_str!("vectors/algorithms.json")).expect("algorithms.json");
    assert_eq!(file.version, 7);
    let (_server, mut con) = connect();
    let (mut replayed, mut skipped) = (0, Vec::new());
    for (index, case) in file.cases.iter().enumerate() {
        let policy = case_policy(&case.limit);
        if let Some(why) = outside_the_domain(case, &policy) {
            skipped.push(format!("{}: {why}", case.name));
            continue;
        }
        replay_algorithm_case(&mut con, index, case, &policy);
        replayed += 1;
    }
    println!(
        "algorithms.json: {replayed} cases replayed, {} skipped:",
        skipped.len()
    );
    for s in &skipped {
        println!("  skipped {s}");
    }
    assert!(replayed >= 40, "only {replayed} cases replayed");
}

// ---------------------------------------------------------------------------------------
// requests.json

/// The budgets a request on (`tenant`, `model`) falls under, in the limiter's order: the
/// account's, the model's or its family's, the tenant's (public `Config` lookups).
fn route(config: &Config, tenant: Option<&str>, model: Option<&str>) -> Vec<(String, Policy)> {
    let mut budgets = Vec::new();
    if let Some(p) = config.account() {
        budgets.push(("account".to_owned(), p.clone()));
    }
    if let Some((budget, p)) = model.and_then(|m| config.model_policy(m)) {
        budgets.push((budget.to_string(), p.clone()));
    }
    if let Some((name, p)) = tenant.and_then(|t| config.tenant_policy(t)) {
        budgets.push((format!("tenant {name}"), p.clone()));
    }
    budgets
}

/// The dimension of limit `limit` of `policy`.
fn dimension(policy: &Policy, limit: usize) -> String {
    let (d, _) = policy.limits().nth(limit).expect("a limit of the policy");
    d.name().to_owned()
}

/// The first limit (budget by budget) that can never admit `cost`: what the store checks
/// before the script.
fn impossible(budgets: &[(String, Policy)], cost: &Cost) -> Option<String> {
    budgets.iter().find_map(|(_, p)| {
        p.limits()
            .zip(p.measure(cost))
            .find(|((_, l), amount)| amount.unwrap_or(u64::MAX) > rule_of(l).capacity())
            .map(|((d, _), _)| d.name().to_owned())
    })
}

fn keys_of(case: usize, name: &str, policy: &Policy) -> BudgetKeys {
    let name: String = name
        .chars()
        .map(|c| if c == ' ' { '_' } else { c })
        .collect();
    BudgetKeys::new(&format!("{{r}}:{case}:{name}"), policy.limits().count())
}

/// What an admitted request keeps for its settlement.
struct Held {
    budgets: Vec<(String, Policy)>,
    cost: Cost,
    epoch: u64,
    receipts: Vec<Vec<Receipt>>,
    lease: String,
}

#[test]
fn the_request_vectors_hold_in_redis() {
    let file = request_vectors::load();
    let (_server, mut con) = connect();
    let mut skipped = Vec::new();
    for (index, case) in file.cases.iter().enumerate() {
        let mut config = Config::from_toml_str(&case.limits, &case.name).expect("limits");
        let mut held: Vec<Option<Held>> = (0..case.ops.len()).map(|_| None).collect();
        for (i, step) in case.ops.iter().enumerate() {
            let (t, at) = (step.t, format!("{}: op {i} at {}", case.name, step.t));
            let settle = |con: &mut Connection, h: &Held, used: &Cost| {
                let keys: Vec<BudgetKeys> = h
                    .budgets
                    .iter()
                    .map(|(n, p)| keys_of(index, n, p))
                    .collect();
                let pairs: Vec<(&BudgetKeys, &Policy)> = keys
                    .iter()
                    .zip(&h.budgets)
                    .map(|(k, (_, p))| (k, p))
                    .collect();
                let invocation = script::settle(
                    &pairs,
                    &h.cost,
                    used,
                    h.epoch,
                    &h.receipts,
                    Some(t),
                    Some(&h.lease),
                );
                let _: Value = call(con, invocation);
            };
            match &step.op {
                RequestOp::Acquire {
                    tenant,
                    model,
                    cost,
                    expect,
                    ..
                } => {
                    let (tenant, model) = (tenant.as_deref(), model.as_deref());
                    let cost = cost.cost();
                    let budgets = route(&config, tenant, model);
                    let got = if model.is_some_and(|m| config.refuses_model(m)) {
                        RequestExpect::Word(Word::UnknownModel)
                    } else if let Some(d) = impossible(&budgets, &cost) {
                        RequestExpect::Impossible { impossible: d }
                    } else {
                        let keys: Vec<BudgetKeys> =
                            budgets.iter().map(|(n, p)| keys_of(index, n, p)).collect();
                        let pairs: Vec<(&BudgetKeys, &Policy)> = keys
                            .iter()
                            .zip(&budgets)
                            .map(|(k, (_, p))| (k, p))
                            .collect();
                        let lease = format!("lease{i}");
                        let invocation = script::acquire(&pairs, &cost, Some(t), 0, &lease, 60_000);
                        match call::<AcquireReply>(&mut con, invocation) {
                            AcquireReply::Admitted {
                                wait: 0,
                                epoch,
                                receipts,
                            } => {
                                held[i] = Some(Held {
                                    budgets,
                                    cost,
                                    epoch,
                                    receipts,
                                    lease,
                                });
                                RequestExpect::Word(Word::Admit)
                            }
                            AcquireReply::Wait {
                                wait,
                                budget,
                                limit,
                            } => RequestExpect::NotUntil {
                                not_until: t.saturating_add(wait),
                                dimension: dimension(&budgets[budget].1, limit),
                            },
                            AcquireReply::Paused { wait, .. } => RequestExpect::PausedUntil {
                                paused_until: t + wait,
                            },
                            AcquireReply::InFlightFull { .. } => {
                                RequestExpect::Word(Word::InFlightFull)
                            }
                            other => panic!("{at}: {other:?}"),
                        }
                    };
                    assert_eq!(&got, expect, "{at}");
                }
                RequestOp::Settle {
                    admission, usage, ..
                } => {
                    let h = held[*admission].take().expect("an admitted request");
                    let r = &h.cost;
                    let used = Cost::zero()
                        .with_requests(usage.requests.unwrap_or(r.requests()))
                        .input(usage.input.unwrap_or(r.input_tokens()))
                        .output(usage.output.unwrap_or(r.output_tokens()));
                    settle(&mut con, &h, &used);
                }
                RequestOp::Release { admission, .. } => {
                    let h = held[*admission].take().expect("an admitted request");
                    settle(&mut con, &h, &h.cost.clone());
                }
                RequestOp::Pause { model, for_ns, .. } => {
                    let budgets = route(&config, None, model.as_deref());
                    let (name, policy) = budgets.last().expect("a budget to pause");
                    let keys = keys_of(index, name, policy);
                    let _: Value = call(&mut con, script::pause(&keys, Some(t), *for_ns, true));
                }
                RequestOp::Reload { limits, .. } => {
                    // The Redis store has no reload: processes with the new limits find the
                    // state; the same limits carry on, other ones are a mismatch.
                    skipped.push(format!(
                        "{at}: reload replayed as processes with the new limits (the Redis \
                         store carries state over only for unchanged limits)"
                    ));
                    config = Config::from_toml_str(limits, &case.name).expect("limits");
                }
            }
        }
    }
    for s in &skipped {
        println!("  {s}");
    }
}

// ---------------------------------------------------------------------------------------
// The core as the reference store: `decide_request`, `commit_budget`, `settle_budget` over
// plain states, with the store's floors and reservations, side by side with the script.

struct TwinBudget {
    keys: BudgetKeys,
    policy: Policy,
    rules: Vec<LimitRule>,
    limits: Vec<LimitState>,
    floor: Nanos,
}

/// An admission, in both.
#[derive(Debug, Clone)]
struct Admitted {
    cost: Cost,
    core: Vec<Vec<Receipt>>,
    redis: Vec<Vec<Receipt>>,
    epoch: u64,
}

struct Twin<'c> {
    con: &'c mut Connection,
    budgets: Vec<TwinBudget>,
    /// The core's clock less the script's: `u64::MAX - 2^52` puts the end of the core's
    /// clock where the script's budgets' clocks end.
    shift: Nanos,
}

/// The answer of both to an acquire, in one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Admitted {
        wait: Nanos,
    },
    Wait {
        wait: Nanos,
        budget: usize,
        limit: usize,
    },
}

impl<'c> Twin<'c> {
    fn new(con: &'c mut Connection, prefix: &str, policies: Vec<Policy>) -> Self {
        let budgets = policies
            .into_iter()
            .enumerate()
            .map(|(i, policy)| TwinBudget {
                keys: BudgetKeys::new(&format!("{prefix}:b{i}"), policy.limits().count()),
                rules: rules(&policy),
                limits: policy.new_states(),
                policy,
                floor: 0,
            })
            .collect();
        Self {
            con,
            budgets,
            shift: 0,
        }
    }

    fn pairs(&self, which: &[usize]) -> Vec<(&BudgetKeys, &Policy)> {
        which
            .iter()
            .map(|&b| (&self.budgets[b].keys, &self.budgets[b].policy))
            .collect()
    }

    /// `cost` on budgets `which` at `now`, reserved within `max_wait`: the core (as the
    /// store's search for an instant) and the script must answer alike.
    fn acquire(
        &mut self,
        which: &[usize],
        now: Nanos,
        cost: &Cost,
        max_wait: Nanos,
    ) -> (Outcome, Option<Admitted>) {
        // The core, on its own clock.
        let cnow = now + self.shift;
        let mut at = which
            .iter()
            .map(|&b| self.budgets[b].floor)
            .fold(cnow, Nanos::max);
        let mut core = None;
        for _ in 0..16 {
            let views = which.iter().map(|&b| BudgetView {
                policy: &self.budgets[b].policy,
                limits: &self.budgets[b].limits,
                in_flight: 0,
                paused_until: 0,
            });
            let d = decide_request(views, at, cost).expect("a possible cost");
            match d.decision {
                BudgetDecision::Admit => {
                    core = None;
                    break;
                }
                BudgetDecision::Wait { until, limit } => {
                    core = Some(Outcome::Wait {
                        wait: if until == Nanos::MAX {
                            until
                        } else {
                            until - cnow
                        },
                        budget: d.budget,
                        limit,
                    });
                    if until == Nanos::MAX || until - cnow > max_wait {
                        break;
                    }
                    at = until;
                }
                other => panic!("{other:?}"),
            }
        }
        let mut core_receipts = Vec::new();
        let core = match core {
            Some(refused) => refused,
            None => {
                for &b in which {
                    let budget = &mut self.budgets[b];
                    let (mut mine, mut in_flight) = (Vec::new(), 0);
                    commit_budget(
                        &budget.policy,
                        &mut budget.limits,
                        &mut in_flight,
                        at,
                        cost,
                        |r| mine.push(r),
                    );
                    budget.floor = at;
                    core_receipts.push(mine);
                }
                Outcome::Admitted { wait: at - cnow }
            }
        };
        // The script.
        let invocation = script::acquire(&self.pairs(which), cost, Some(now), max_wait, "l", 1);
        let reply: AcquireReply = call(self.con, invocation);
        let (redis, admitted) = match reply {
            AcquireReply::Admitted {
                wait,
                epoch,
                receipts,
            } => (
                Outcome::Admitted { wait },
                Some(Admitted {
                    cost: cost.clone(),
                    core: core_receipts,
                    redis: receipts,
                    epoch,
                }),
            ),
            AcquireReply::Wait {
                wait,
                budget,
                limit,
            } => (
                Outcome::Wait {
                    wait,
                    budget,
                    limit,
                },
                None,
            ),
            other => panic!("at {now}: {other:?}"),
        };
        assert_eq!(
            redis, core,
            "acquire {cost:?} at {now} (max wait {max_wait})"
        );
        (core, admitted)
    }

    /// Settles `admission` (on budgets `which`) with `used` at `now`, in both: each budget no
    /// earlier than its latest reservation (its floor), as every store does.
    fn settle(&mut self, which: &[usize], now: Nanos, admission: &Admitted, used: &Cost) {
        for (i, &b) in which.iter().enumerate() {
            let budget = &mut self.budgets[b];
            let receipts = &admission.core[i];
            settle_budget(
                &budget.policy,
                &mut budget.limits,
                (now + self.shift).max(budget.floor),
                &admission.cost,
                used,
                |l| receipts[l],
                |_| false,
            );
        }
        let invocation = script::settle(
            &self.pairs(which),
            &admission.cost,
            used,
            admission.epoch,
            &admission.redis,
            Some(now),
            None,
        );
        let _: Value = call(self.con, invocation);
    }

    /// Usage beyond a reservation of nothing: a charge on every limit of budgets `which`.
    fn charge(&mut self, which: &[usize], now: Nanos, used: &Cost) {
        let nothing = Admitted {
            cost: Cost::zero(),
            core: which
                .iter()
                .map(|&b| vec![Receipt::default(); self.budgets[b].rules.len()])
                .collect(),
            redis: Vec::new(),
            epoch: 0,
        };
        self.settle(which, now, &nothing, used);
    }

    /// Drops budget `b`'s keys, as their expiry does once its state is fresh (which the core
    /// says it is at `now`); the core keeps its state.
    fn expire(&mut self, b: usize, now: Nanos) {
        let budget = &self.budgets[b];
        let fresh = budget
            .rules
            .iter()
            .zip(&budget.limits)
            .all(|(r, s)| r.is_fresh(s, now + self.shift));
        assert!(fresh, "budget {b} is not fresh at {now}");
        let keys = [&budget.keys.state, &budget.keys.leases]
            .into_iter()
            .chain(&budget.keys.lists);
        for key in keys {
            let _: i64 = redis::cmd("DEL").arg(key).query(self.con).expect("DEL");
        }
    }

    /// Every limit of every budget looks the same in both at `now`.
    fn check(&mut self, now: Nanos) {
        let shift = self.shift;
        for (b, budget) in self.budgets.iter().enumerate() {
            let peeked = peek(self.con, &budget.keys, &budget.policy, now);
            let origin = peeked.epoch * S;
            assert_eq!(origin + peeked.now_rel, now, "budget {b}: now");
            let redis: Vec<Snapshot> = peeked
                .snapshots(&budget.policy)
                .into_iter()
                .map(|s| {
                    // On the core's clock; never stays never.
                    let at = |t: Nanos| {
                        if t == Nanos::MAX {
                            t
                        } else {
                            t + origin + shift
                        }
                    };
                    Snapshot {
                        reset_at: s.reset_at.map(at),
                        next_refill_at: s.next_refill_at.map(at),
                        ..s
                    }
                })
                .collect();
            let core: Vec<Snapshot> = budget
                .rules
                .iter()
                .zip(&budget.limits)
                .map(|(r, s)| r.snapshot(s, now + shift))
                .collect();
            assert_eq!(redis, core, "budget {b} at {now}: {peeked}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Random schedules.

#[derive(Debug, Clone)]
enum Step {
    Wait(Nanos),
    /// A try, on the budgets the mask picks (at least one).
    Acquire {
        mask: u8,
        cost: [u64; 3],
    },
    /// The `pick`th admission still held, with this usage.
    Settle {
        pick: usize,
        used: [u64; 3],
    },
    Charge {
        mask: u8,
        used: [u64; 3],
    },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    // Nothing, often: a peek, or a usage of nothing.
    let amount = || prop_oneof![1 => Just(0u64), 3 => 0u64..=14];
    let amounts = move || [amount(), amount(), amount()];
    prop_oneof![
        3 => prop_oneof![0u64..=3, 0u64..=60, 0u64..=400].prop_map(Step::Wait),
        4 => (1u8..=3, amounts()).prop_map(|(mask, cost)| Step::Acquire { mask, cost }),
        2 => (0usize..8, amounts()).prop_map(|(pick, used)| Step::Settle { pick, used }),
        1 => (1u8..=3, [0u64..=4, 0u64..=4, 0u64..=4]).prop_map(|(mask, used)| Step::Charge { mask, used }),
    ]
}

fn costs(amounts: [u64; 3]) -> Cost {
    amounts
        .iter()
        .enumerate()
        .fold(Cost::zero(), |c, (i, &a)| c.with(format!("d{i}"), a))
}

/// The budgets a mask picks among `n`.
fn picked(mask: u8, n: usize) -> Vec<usize> {
    let which: Vec<usize> = (0..n).filter(|&b| mask & (1 << b) != 0).collect();
    if which.is_empty() {
        vec![0]
    } else {
        which
    }
}

/// Costs within every capacity of the budgets picked.
fn possible(twin: &Twin<'_>, which: &[usize], mut amounts: [u64; 3]) -> Cost {
    for &b in which {
        for (i, r) in twin.budgets[b].rules.iter().enumerate() {
            amounts[i] = amounts[i].min(r.capacity());
        }
    }
    costs(amounts)
}

fn run_schedule(con: &mut Connection, case: usize, policies: Vec<Policy>, steps: &[Step]) {
    let n = policies.len();
    let mut twin = Twin::new(con, &format!("{{p}}:{case}"), policies);
    let mut now: Nanos = 0;
    let mut held: Vec<(Vec<usize>, Admitted)> = Vec::new();
    for step in steps {
        match step {
            Step::Wait(dt) => now += dt,
            Step::Acquire { mask, cost } => {
                let which = picked(*mask, n);
                let cost = possible(&twin, &which, *cost);
                if let (_, Some(a)) = twin.acquire(&which, now, &cost, 0) {
                    held.push((which, a));
                }
            }
            Step::Settle { pick, used } => {
                if !held.is_empty() {
                    let (which, a) = held.remove(pick % held.len());
                    twin.settle(&which, now, &a, &costs(*used));
                }
            }
            Step::Charge { mask, used } => twin.charge(&picked(*mask, n), now, &costs(*used)),
        }
        twin.check(now);
    }
}

#[test]
fn random_schedules_decide_as_the_core() {
    let (_server, con) = connect();
    let (seed, mut runner) = seeded_runner("TOKENGATE_REDIS_SEED", 64, 2_000);
    // One budget, two, or two under the same limits (whose waits tie).
    let budgets = (policy_strategy(), policy_strategy(), 0..3usize).prop_map(|(a, b, k)| match k {
        0 => vec![a],
        1 => vec![a, b],
        _ => vec![a.clone(), a],
    });
    let strategy = (budgets, proptest::collection::vec(step_strategy(), 1..40));
    let con = std::cell::RefCell::new(con);
    let case = std::cell::Cell::new(0usize);
    // A panic in a schedule fails the case (proptest catches it), and shrinks it.
    let result = runner.run(&strategy, |(policies, steps)| {
        case.set(case.get() + 1);
        run_schedule(&mut con.borrow_mut(), case.get(), policies, &steps);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (policies, steps))) => panic!(
            "seed {seed} (rerun with TOKENGATE_REDIS_SEED={seed}): {why}\npolicies: {:#?}\nsteps: {steps:?}",
            policies.iter().map(describe).collect::<Vec<_>>()
        ),
        Err(e) => panic!("seed {seed}: {e}"),
    }
}

fn describe(policy: &Policy) -> Vec<String> {
    policy
        .limits()
        .map(|(d, l)| format!("{d}: {}", script::fingerprint(l)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reservations, leases, expiries, mismatches.

fn bucket(amount: u64, period: Nanos) -> Limit {
    Limit::new(amount, Duration::from_nanos(period))
        .algorithm(Algorithm::TokenBucket)
        .margin(Duration::ZERO)
}

fn one(limit: Limit) -> Policy {
    Policy::builder()
        .limit(Dimension::Requests, limit)
        .build()
        .expect("a valid limit")
}

fn requests(n: u64) -> Cost {
    Cost::zero().with_requests(n)
}

#[test]
fn reservations_land_in_order_where_the_core_admits_them() {
    let (_server, mut con) = connect();
    // 10 per 1000 ns (100 ns each), burst 10; and a smooth window beside it on a second budget.
    let policies = vec![
        one(bucket(10, 1_000)),
        Policy::builder()
            .limit(
                Dimension::Requests,
                Limit::new(20, Duration::from_nanos(2_000)).margin(Duration::from_nanos(7)),
            )
            .build()
            .unwrap(),
    ];
    let mut twin = Twin::new(&mut con, "{res}", policies);
    let both = [0, 1];
    let (_, first) = twin.acquire(&both, 0, &requests(10), 0);
    assert!(first.is_some());
    // Reserved at the core's instant.
    let (second, a2) = twin.acquire(&both, 0, &requests(5), 10_000);
    let Outcome::Admitted { wait: w2 } = second else {
        panic!("{second:?}")
    };
    assert!(w2 > 0);
    // A third lands after it, never before.
    let (third, a3) = twin.acquire(&both, 10, &requests(5), 10_000);
    let Outcome::Admitted { wait: w3 } = third else {
        panic!("{third:?}")
    };
    assert!(10 + w3 >= w2, "{w3} after {w2}");
    twin.check(10);
    // Beyond the wait allowed: refused with the wait; reserved when it is just allowed.
    let (fourth, _) = twin.acquire(&both, 20, &requests(5), 100);
    let Outcome::Wait { wait: w4, .. } = fourth else {
        panic!("{fourth:?}")
    };
    let (again, _) = twin.acquire(&both, 20, &requests(5), w4 - 1);
    assert_eq!(again, fourth);
    let (just, a4) = twin.acquire(&both, 20, &requests(5), w4);
    assert_eq!(just, Outcome::Admitted { wait: w4 });
    twin.settle(&both, 25, &a4.unwrap(), &requests(0));
    // The third is cancelled before its instant: what it held comes back as the core's refund.
    twin.settle(&both, 30, &a3.unwrap(), &requests(0));
    twin.check(30);
    let (fifth, _) = twin.acquire(&both, 40, &requests(3), 10_000);
    assert!(matches!(fifth, Outcome::Admitted { .. }), "{fifth:?}");
    twin.settle(&both, 50, &a2.unwrap(), &requests(1));
    for t in [60, 500, 1_000, 5_000] {
        twin.check(t);
        let _ = twin.acquire(&both, t, &requests(4), 2_000);
    }
}

#[test]
fn an_in_flight_cap_holds_while_its_lease_lives() {
    let (_server, mut con) = connect();
    const MS: Nanos = 1_000_000;
    let policy = Policy::builder()
        .limit(Dimension::Requests, bucket(1_000, S))
        .max_in_flight(1)
        .build()
        .unwrap();
    let keys = BudgetKeys::new("{lease}", 1);
    let budgets = [(&keys, &policy)];
    let acquire = |con: &mut Connection, now: Nanos, lease: &str| -> AcquireReply {
        call(
            con,
            script::acquire(&budgets, &requests(1), Some(now), 0, lease, 100),
        )
    };
    let full = AcquireReply::InFlightFull { budget: 0 };
    let AcquireReply::Admitted {
        epoch, receipts, ..
    } = acquire(&mut con, 0, "a")
    else {
        panic!("admitted")
    };
    assert_eq!(acquire(&mut con, MS, "b"), full);
    assert_eq!(acquire(&mut con, 100 * MS - 1, "b"), full);
    // Lease "a" ran out at 100 ms.
    assert!(matches!(
        acquire(&mut con, 100 * MS, "b"),
        AcquireReply::Admitted { .. }
    ));
    assert_eq!(acquire(&mut con, 150 * MS, "c"), full);
    // Settling "a" late changes nothing; settling "b" frees the slot.
    let settle = |con: &mut Connection, now: Nanos, lease: &str| {
        let invocation = script::settle(
            &budgets,
            &requests(1),
            &requests(1),
            epoch,
            &receipts,
            Some(now),
            Some(lease),
        );
        let _: Value = call(con, invocation);
    };
    settle(&mut con, 150 * MS, "a");
    assert_eq!(acquire(&mut con, 150 * MS, "c"), full);
    settle(&mut con, 150 * MS, "b");
    assert!(matches!(
        acquire(&mut con, 150 * MS, "c"),
        AcquireReply::Admitted { .. }
    ));
    // "c" runs to 250 ms; renewed at 200 ms, to 300 ms.
    let renewed: u64 = call(
        &mut con,
        script::renew(&[&keys.leases], Some(200 * MS), "c", 100),
    );
    assert_eq!(renewed, 1);
    let absent: u64 = call(
        &mut con,
        script::renew(&[&keys.leases], Some(200 * MS), "zz", 100),
    );
    assert_eq!(absent, 0);
    assert_eq!(acquire(&mut con, 299 * MS, "d"), full);
    let peeked = peek(&mut con, &keys, &policy, 299 * MS);
    assert_eq!(peeked.in_flight, 1);
    assert!(matches!(
        acquire(&mut con, 300 * MS, "d"),
        AcquireReply::Admitted { .. }
    ));
    // A cost of nothing takes no slot.
    assert!(matches!(
        call::<AcquireReply>(
            &mut con,
            script::acquire(&budgets, &Cost::zero(), Some(300 * MS), 0, "e", 100)
        ),
        AcquireReply::Admitted { .. }
    ));
    // Leases count whole milliseconds, rounded up: one taken at 400.5 ms for 100 ms runs to
    // 501 ms. Run out, it no longer counts, though no call has removed it yet.
    assert!(matches!(
        acquire(&mut con, 400 * MS + MS / 2, "f"),
        AcquireReply::Admitted { .. }
    ));
    assert_eq!(acquire(&mut con, 500 * MS + 700_000, "g"), full);
    assert_eq!(peek(&mut con, &keys, &policy, 501 * MS).in_flight, 0);
    assert!(matches!(
        acquire(&mut con, 501 * MS, "g"),
        AcquireReply::Admitted { .. }
    ));
}

#[test]
fn every_key_expires_and_a_fresh_budget_leaves_none() {
    let (_server, mut con) = connect();
    // A run of everything: the request vectors' limits and random-ish traffic.
    let policies = vec![
        Policy::builder()
            .limit(Dimension::Requests, bucket(10, 1_000))
            .limit(
                Dimension::InputTokens,
                Limit::new(100, Duration::from_nanos(1_000))
                    .algorithm(Algorithm::SlidingWindowLog)
                    .margin(Duration::from_nanos(10)),
            )
            .max_in_flight(3)
            .build()
            .unwrap(),
        Policy::builder()
            .limit(
                Dimension::Requests,
                Limit::new(10, Duration::from_nanos(1_000)).algorithm(Algorithm::FixedWindow),
            )
            .limit(
                Dimension::InputTokens,
                Limit::new(100, Duration::from_nanos(1_000))
                    .algorithm(Algorithm::SlidingWindowCounter),
            )
            .limit(
                Dimension::OutputTokens,
                Limit::new(100, Duration::from_nanos(1_000)).margin(Duration::from_nanos(3)),
            )
            .build()
            .unwrap(),
    ];
    let keys: Vec<BudgetKeys> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| BudgetKeys::new(&format!("{{ttl}}:{i}"), p.limits().count()))
        .collect();
    let pairs: Vec<(&BudgetKeys, &Policy)> = keys.iter().zip(&policies).collect();
    let mut admitted = Vec::new();
    for i in 0..30u64 {
        let now = i * 37;
        let cost = Cost::request().input(7 + i % 5).output(3);
        let lease = format!("l{i}");
        if let AcquireReply::Admitted {
            epoch, receipts, ..
        } = call(
            &mut con,
            script::acquire(&pairs, &cost, Some(now), 0, &lease, 60_000),
        ) {
            admitted.push((cost, epoch, receipts, lease));
        }
        if i % 3 == 2 {
            let (cost, epoch, receipts, lease) = admitted.remove(0);
            let used = Cost::request().input(2).output(5);
            let _: Value = call(
                &mut con,
                script::settle(
                    &pairs,
                    &cost,
                    &used,
                    epoch,
                    &receipts,
                    Some(now),
                    Some(&lease),
                ),
            );
        }
        let _: Value = call(&mut con, script::pause(&keys[1], Some(now), 5, i % 2 == 0));
    }
    let all = all_keys(&mut con);
    assert!(!all.is_empty());
    for key in &all {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }

    // Fresh again at a later instant (nothing refunded): no key left.
    let policy = Policy::builder()
        .limit(Dimension::Requests, bucket(10, 1_000))
        .limit(
            Dimension::InputTokens,
            Limit::new(100, Duration::from_nanos(1_000)).algorithm(Algorithm::FixedWindow),
        )
        .limit(
            Dimension::OutputTokens,
            Limit::new(100, Duration::from_nanos(1_000)).margin(Duration::from_nanos(3)),
        )
        .build()
        .unwrap();
    let keys = BudgetKeys::new("{fresh}", 3);
    let budgets = [(&keys, &policy)];
    let cost = Cost::request().input(50).output(50);
    let admit = |con: &mut Connection, now: Nanos| -> (u64, Vec<Vec<Receipt>>) {
        let reply: AcquireReply = call(con, script::acquire(&budgets, &cost, Some(now), 0, "a", 1));
        match reply {
            AcquireReply::Admitted {
                epoch, receipts, ..
            } => (epoch, receipts),
            other => panic!("{other:?}"),
        }
    };
    // A settlement that gives back everything (as much as the limits still hold).
    let cancel =
        |con: &mut Connection, now: Nanos, (epoch, receipts): &(u64, Vec<Vec<Receipt>>)| {
            let invocation = script::settle(
                &budgets,
                &cost,
                &Cost::zero(),
                *epoch,
                receipts,
                Some(now),
                None,
            );
            let _: Value = call(con, invocation);
        };
    let mine = |con: &mut Connection| -> Vec<String> {
        let mut keys: Vec<String> = all_keys(con)
            .into_iter()
            .filter(|k| k.starts_with("{fresh}"))
            .collect();
        keys.sort();
        keys
    };
    let first = admit(&mut con, 0);
    // The state alone (no lease: no cap), holding the smooth window's log's one entry.
    assert_eq!(mine(&mut con), ["{fresh}:state"]);
    // At 2 µs every window is over and every bucket full for its margin: a settlement (which
    // gives nothing back by then) leaves nothing. (An acquire would not: it sets the buckets'
    // TAT to now, and the margin counts from there.)
    cancel(&mut con, 2_000, &first);
    assert!(mine(&mut con).is_empty(), "{:?}", mine(&mut con));

    // A refund gives time back: the fresh budget stays for the slack (1 s) only.
    let second = admit(&mut con, 10_000);
    cancel(&mut con, 10_000, &second);
    cancel(&mut con, 20_000, &second);
    // Its state (with its log's emptied entry).
    let left = mine(&mut con);
    assert_eq!(left, ["{fresh}:state"]);
    for key in &left {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(ttl > 0 && ttl <= 1_000, "{key}: {ttl}");
    }

    // A pause alone lives as long as the pause (and the slack).
    let paused = BudgetKeys::new("{pause}", 0);
    let reply: (String, u64) = call(&mut con, script::pause(&paused, Some(0), 5 * S, true));
    assert_eq!(reply.1, 5 * S);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&paused.state)
        .query(&mut con)
        .unwrap();
    assert!(ttl > 5_000 && ttl <= 6_000, "{ttl}");
    let reply: (String, u64) = call(&mut con, script::pause(&paused, Some(S), 0, false));
    assert_eq!(reply.1, 4 * S);
    // Longer than the budget's clock: until its end, 2^52 ns from its epoch (0 here).
    let reply: (String, u64) = call(&mut con, script::pause(&paused, Some(S), u64::MAX, false));
    assert_eq!(reply.1, (1 << 52) - S);
    let reply: (String, u64) = call(&mut con, script::pause(&paused, Some(S), 0, true));
    assert_eq!(reply.1, 0);
    let gone: bool = redis::cmd("EXISTS")
        .arg(&paused.state)
        .query(&mut con)
        .unwrap();
    assert!(!gone);
}

#[test]
fn other_limits_on_a_budget_are_a_mismatch() {
    let (_server, mut con) = connect();
    let keys = BudgetKeys::new("{mm}", 2);
    let a = Policy::builder()
        .limit(Dimension::Requests, bucket(10, 1_000))
        .limit(Dimension::InputTokens, bucket(100, 1_000))
        .build()
        .unwrap();
    let b = Policy::builder()
        .limit(Dimension::Requests, bucket(10, 1_000))
        .limit(Dimension::InputTokens, bucket(200, 1_000))
        .build()
        .unwrap();
    let shorter = one(bucket(10, 1_000));
    let cost = Cost::request().input(5);
    let reply: AcquireReply = call(
        &mut con,
        script::acquire(&[(&keys, &a)], &cost, Some(0), 0, "x", 1),
    );
    assert!(matches!(reply, AcquireReply::Admitted { .. }), "{reply:?}");
    let stored = script::fingerprint(&bucket(100, 1_000));
    let reply: AcquireReply = call(
        &mut con,
        script::acquire(&[(&keys, &b)], &cost, Some(0), 0, "x", 1),
    );
    assert_eq!(
        reply,
        AcquireReply::Mismatch {
            budget: 0,
            limit: 1,
            stored: stored.clone()
        }
    );
    let fewer = BudgetKeys::new("{mm}", 1);
    let other = BudgetKeys::new("{mm2}", 1);
    let reply: AcquireReply = call(
        &mut con,
        script::acquire(
            &[(&other, &shorter), (&fewer, &shorter)],
            &cost,
            Some(0),
            0,
            "x",
            1,
        ),
    );
    assert_eq!(
        reply,
        AcquireReply::Mismatch {
            budget: 1,
            limit: 1,
            stored
        }
    );
    // Nothing was written by either: the other budget does not exist.
    let exists: bool = redis::cmd("EXISTS")
        .arg(&other.state)
        .query(&mut con)
        .unwrap();
    assert!(!exists);
    // A peek under other limits is an error, not a misread state.
    let peeked: redis::RedisResult<Peeked> = script::peek(&keys, &b, Some(0)).invoke(&mut con);
    assert!(peeked.is_err());
    // A settlement under other limits refunds nothing and charges under the stored limits.
    let reply: AcquireReply = call(
        &mut con,
        script::acquire(&[(&keys, &a)], &cost, Some(0), 0, "x", 1),
    );
    let AcquireReply::Admitted {
        epoch, receipts, ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    let _: Value = call(
        &mut con,
        script::settle(
            &[(&keys, &b)],
            &cost,
            &Cost::request().input(50),
            epoch,
            &receipts,
            Some(0),
            None,
        ),
    );
    // Stored: 100 per 1000 ns (10 ns each): 5 + 5 admitted and 45 charged fill it to 550 ns
    // (under the given 200 per 1000 ns, the charge would have left 325 ns).
    let rule = rule_of(&bucket(100, 1_000));
    let peeked = peek(&mut con, &keys, &a, 0);
    assert_eq!(
        rule.decide(&peeked.limits[1], 0, 46),
        Decision::NotUntil(10)
    );
    assert_eq!(rule.decide(&peeked.limits[1], 0, 45), Decision::Admit);
}

#[test]
fn the_counter_divides_exactly_past_two_to_the_fifty_three() {
    // room * P reaches 2^100: the script's limbs against the core's 128-bit arithmetic.
    let (_server, mut con) = connect();
    let amount = (1u64 << 52) - 3;
    let period = (1u64 << 49) - 7;
    let policy =
        one(Limit::new(amount, Duration::from_nanos(period))
            .algorithm(Algorithm::SlidingWindowCounter));
    let mut twin = Twin::new(&mut con, "{big}", vec![policy]);
    let mut rng = 7u64;
    let _ = twin.acquire(&[0], 0, &requests(amount - 12_345), 0);
    // In the next window the previous one's count fades: each probe reads the instant it has
    // faded enough for its cost, floor(room * P / previous) with room * P up to 2^101.
    let mut now = period;
    for _ in 0..40 {
        now += below(&mut rng, period / 64);
        for _ in 0..10 {
            let cost = amount / 2 + below(&mut rng, amount / 2);
            let _ = twin.acquire(&[0], now, &requests(cost), 0);
        }
        twin.check(now);
    }
    // And whatever comes after, under 2^51 ns in all (no rebase here).
    for _ in 0..30 {
        now += below(&mut rng, period / 8);
        let cost = match below(&mut rng, 3) {
            0 => below(&mut rng, 1_000),
            1 => below(&mut rng, amount / 1_000),
            _ => amount - below(&mut rng, amount / 2),
        };
        let _ = twin.acquire(&[0], now, &requests(cost), 0);
        twin.check(now);
    }
}

#[test]
fn the_end_of_a_budget_s_clock_is_the_core_s() {
    // The core's clock shifted so that its end (2^64 - 1) falls where a budget's own clock
    // ends in the script (2^52 ns from its epoch); charges (a period each at most) push the
    // buckets there, where acquires are never admitted and refunds give nothing back.
    let (_server, mut con) = connect();
    let near = |amount: u64, period: Nanos, alg: Algorithm, margin: Nanos| {
        Limit::new(amount, Duration::from_nanos(period))
            .algorithm(alg)
            .margin(Duration::from_nanos(margin))
    };
    let policy = Policy::builder()
        .custom("a", near(3, (1 << 49) - 5, Algorithm::TokenBucket, 3))
        .custom(
            "b",
            near(4, (1 << 49) - 3, Algorithm::SmoothWindow, 7).burst(2),
        )
        .custom("c", near(5, (1 << 48) + 3, Algorithm::LeakyBucket, 11))
        .build()
        .unwrap();
    let capacity = [3, 4, 5];
    let mut twin = Twin::new(&mut con, "{end}", vec![policy]);
    twin.shift = u64::MAX - (1 << 52);
    let mut rng = 5u64;
    let mut held: Vec<Admitted> = Vec::new();
    // Within the first day (one epoch, no rebase).
    let mut now = 1;
    for _ in 0..200 {
        now += below(&mut rng, 1 << 38);
        let mut amounts = [0; 3];
        for (a, cap) in amounts.iter_mut().zip(capacity) {
            *a = below(&mut rng, cap + 2);
        }
        match below(&mut rng, 4) {
            0 => twin.charge(&[0], now, &costs_named(amounts)),
            1 | 2 => {
                let cost = costs_named([
                    amounts[0].min(capacity[0]),
                    amounts[1].min(capacity[1]),
                    amounts[2].min(capacity[2]),
                ]);
                let max_wait = if below(&mut rng, 2) == 0 { 0 } else { 1 << 50 };
                if let (_, Some(a)) = twin.acquire(&[0], now, &cost, max_wait) {
                    held.push(a);
                }
            }
            _ => {
                if !held.is_empty() {
                    let a = held.remove(below(&mut rng, held.len() as u64) as usize);
                    twin.settle(&[0], now, &a, &costs_named(amounts));
                }
            }
        }
        twin.check(now);
    }
    // It got there.
    let budget = &twin.budgets[0];
    let peeked = peek(twin.con, &budget.keys, &budget.policy, now);
    let LimitState::Gcra(g) = &peeked.limits[0] else {
        panic!("{peeked}")
    };
    assert_eq!(g.tat, 1 << 52, "{peeked}");

    // A limit admits at an instant where another, full by then, would pass the end: never
    // (decide_all asks every limit again at the instant it found).
    let x = near(8, 1 << 49, Algorithm::LeakyBucket, 0);
    let y = near(1, (1 << 49) - 1, Algorithm::TokenBucket, 0);
    let policy = Policy::builder()
        .custom("a", x)
        .custom("b", y)
        .build()
        .unwrap();
    let mut twin = Twin::new(twin.con, "{end2}", vec![policy]);
    twin.shift = u64::MAX - (1 << 52);
    // x's TAT to 2^52 - 2^47 + 1: a unit admitted (2^46 ns), 7 periods and 5 more units
    // charged.
    let (_, held) = twin.acquire(&[0], 1, &costs_named([1, 0, 0]), 0);
    for _ in 0..7 {
        twin.charge(&[0], 1, &costs_named([8, 0, 0]));
    }
    for _ in 0..5 {
        twin.charge(&[0], 1, &costs_named([1, 0, 0]));
    }
    let (never, _) = twin.acquire(&[0], 2, &costs_named([1, 1, 0]), 0);
    assert_eq!(
        never,
        Outcome::Wait {
            wait: Nanos::MAX,
            budget: 0,
            limit: 1
        }
    );
    // Alone, x admits it then.
    let (alone, _) = twin.acquire(&[0], 2, &costs_named([1, 0, 0]), 0);
    assert!(
        matches!(alone, Outcome::Wait { wait, .. } if wait < Nanos::MAX),
        "{alone:?}"
    );
    twin.check(2);
    // Charged to the end, the bucket stays there: the unit it still holds of the first
    // admission does not come back.
    twin.charge(&[0], 2, &costs_named([8, 0, 0]));
    twin.settle(&[0], 2, &held.unwrap(), &costs_named([0, 0, 0]));
    twin.check(2);
}

/// Amounts on the dimensions a, b, c.
fn costs_named(amounts: [u64; 3]) -> Cost {
    Cost::zero()
        .with("a", amounts[0])
        .with("b", amounts[1])
        .with("c", amounts[2])
}

#[test]
fn a_bucket_is_fresh_only_once_full_for_its_margin() {
    // A peek (an acquire of nothing) sets a full bucket's TAT to now: for its margin after,
    // the bucket admits as of then, not as a fresh one; the script keeps it until then.
    let (_server, mut con) = connect();
    let margin = |alg: Algorithm| {
        Limit::new(10, Duration::from_nanos(1_000))
            .algorithm(alg)
            .margin(Duration::from_nanos(30))
    };
    let policies = [
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::SmoothWindow,
        Algorithm::SlidingWindowLog,
    ]
    .map(|alg| one(margin(alg).clone()))
    .to_vec();
    let mut twin = Twin::new(&mut con, "{margin}", policies);
    for b in 0..3 {
        let _ = twin.acquire(&[b], 0, &requests(10), 0);
        let _ = twin.acquire(&[b], 5_000, &requests(0), 0);
        twin.check(5_010);
        let _ = twin.acquire(&[b], 5_010, &requests(10), 0);
        twin.check(5_030);
    }
    // A log counts an admission for its period and margin: at 1010 it still counts the 10 of 0.
    let _ = twin.acquire(&[3], 0, &requests(10), 0);
    let _ = twin.acquire(&[3], 1_010, &requests(0), 0);
    let _ = twin.acquire(&[3], 1_020, &requests(1), 0);
    twin.check(1_020);
}

/// A state's bytes and each of its lists' chunks.
type Stored = (Vec<u8>, Vec<Vec<Vec<u8>>>);

/// A budget's state as stored, less its version (bytes 8 to 15 of a "tg6" state: new at every
/// write), and its lists' chunks; `None` when it has no state.
fn stored(con: &mut Connection, keys: &BudgetKeys) -> Option<Stored> {
    let state: Option<Vec<u8>> = redis::cmd("GET").arg(&keys.state).query(con).unwrap();
    let mut state = state?;
    if state.starts_with(b"tg6") {
        state.drain(8..16);
    }
    let lists = keys
        .lists
        .iter()
        .map(|list| {
            redis::cmd("LRANGE")
                .arg(list)
                .arg(0)
                .arg(-1)
                .query(con)
                .unwrap()
        })
        .collect();
    Some((state, lists))
}

fn pttl(con: &mut Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

/// `calls` in one batch (`acquires`): each one's answer, none of them an error.
fn batched(
    con: &mut Connection,
    calls: &[&script::Invocation],
    context: &str,
) -> Vec<AcquireReply> {
    let together: script::Batched = call(con, script::acquires(calls));
    together
        .0
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{context}: {e}")))
        .collect()
}

#[test]
fn a_batch_leaves_each_budget_as_its_acquisitions_one_by_one_would() {
    // A batch (`acquires`) writes each budget once, at its end: what it writes, and until
    // when, is what the same acquisitions made one after another leave, and a budget they
    // leave fresh is deleted. Rounds at instants apart, so that windows pass and buckets
    // refill; asks of nothing, which leave a fresh budget fresh (no margin) or keep it for
    // its margin.
    const MS: Nanos = 1_000_000;
    let (_server, mut con) = connect();
    let window = |alg: Algorithm, margin: Nanos| {
        Limit::new(10, Duration::from_nanos(S))
            .algorithm(alg)
            .margin(Duration::from_nanos(margin))
    };
    let three = |a: Algorithm, b: Algorithm, c: Algorithm| {
        Policy::builder()
            .custom("a", window(a, 0))
            .custom("b", window(b, 0))
            .custom("c", window(c, MS))
            .build()
            .unwrap()
    };
    // Each with whether it has a bucket with a margin: asked for nothing at an instant every
    // limit is fresh, such a bucket sets its TAT to now and counts from it for its margin.
    let policies = [
        (one(bucket(10, S)), false),
        (one(window(Algorithm::SmoothWindow, 50 * MS)), true),
        (
            three(
                Algorithm::FixedWindow,
                Algorithm::SlidingWindowCounter,
                Algorithm::SlidingWindowLog,
            ),
            false,
        ),
        (
            three(
                Algorithm::LeakyBucket,
                Algorithm::SmoothWindow,
                Algorithm::TokenBucket,
            ),
            true,
        ),
    ];
    let rounds: [(Nanos, &[[u64; 3]]); 5] = [
        (0, &[[1, 2, 3], [0, 0, 0], [2, 1, 0], [3, 3, 3]]),
        (
            S / 3,
            &[[2, 2, 2], [1, 0, 1], [2, 2, 2], [1, 1, 1], [2, 2, 2]],
        ),
        (S / 3 + 1, &[[0, 0, 0], [1, 1, 1]]),
        (3 * S, &[[1, 1, 1]]),
        (10 * S, &[[0, 0, 0], [0, 0, 0]]),
    ];
    for (p, (policy, bucket_with_margin)) in policies.iter().enumerate() {
        let n = policy.limits().count();
        let single = BudgetKeys::new(&format!("{{batch}}:single:{p}"), n);
        let batch = BudgetKeys::new(&format!("{{batch}}:batch:{p}"), n);
        for &(now, asks) in &rounds {
            let context = format!("policy {p} at {now}");
            let cost = |amounts: &[u64; 3]| {
                if n == 1 {
                    requests(amounts[0])
                } else {
                    costs_named(*amounts)
                }
            };
            let one_by_one: Vec<AcquireReply> = asks
                .iter()
                .map(|a| {
                    let budgets = [(&single, policy)];
                    call(
                        &mut con,
                        script::acquire(&budgets, &cost(a), Some(now), 0, "", 1),
                    )
                })
                .collect();
            let budgets = [(&batch, policy)];
            let invocations: Vec<script::Invocation> = asks
                .iter()
                .map(|a| script::acquire(&budgets, &cost(a), Some(now), 0, "", 1))
                .collect();
            let calls: Vec<&script::Invocation> = invocations.iter().collect();
            let together = batched(&mut con, &calls, &context);
            assert_eq!(together, one_by_one, "{context}");
            assert_eq!(
                stored(&mut con, &batch),
                stored(&mut con, &single),
                "{context}"
            );
            let (a, b) = (pttl(&mut con, &single.state), pttl(&mut con, &batch.state));
            // (the two are set a few milliseconds apart, in Redis's own time)
            assert!(
                (a - b).abs() <= 100,
                "{context}: expiry {b} ms, one by one {a} ms"
            );
            if now == 10 * S && !bucket_with_margin {
                assert_eq!(stored(&mut con, &single), None, "{context}: fresh");
            } else if now == 10 * S {
                // Kept for its margin (and the slack) only.
                assert!(a > 0 && a <= 1_050, "{context}: expiry {a} ms");
            } else {
                assert!(a > 1_000, "{context}: expiry {a} ms");
            }
        }
    }
}

#[test]
fn pauses_leave_the_limits_as_they_are() {
    // A pause written alone keeps what the limits hold; lifted on a budget whose limits are
    // fresh it drops the state, and a new one starts clean.
    let (_server, mut con) = connect();
    let log = Limit::new(10, Duration::from_nanos(1_000))
        .algorithm(Algorithm::SlidingWindowLog)
        .margin(Duration::ZERO);
    let policy = Policy::builder()
        .limit(Dimension::Requests, log)
        .limit(Dimension::InputTokens, bucket(100, 1_000))
        .build()
        .unwrap();
    let mut twin = Twin::new(&mut con, "{pauses}", vec![policy]);
    let cost = Cost::request().input(50);
    let _ = twin.acquire(&[0], 0, &Cost::zero().with_requests(5).input(50), 0);
    let keys = twin.budgets[0].keys.clone();
    let pause = |con: &mut Connection, now: Nanos, for_ns: Nanos| -> Nanos {
        let (_, left): (String, Nanos) = call(con, script::pause(&keys, Some(now), for_ns, true));
        left
    };
    assert_eq!(pause(twin.con, 10, 100), 100);
    assert_eq!(pause(twin.con, 20, 0), 0);
    twin.check(20);
    let _ = twin.acquire(&[0], 30, &cost, 0);
    twin.check(30);
    // At 2000 every limit is fresh: lifting the pause drops the state (its log's list may
    // outlive it for the slack), and what follows starts from nothing.
    assert_eq!(pause(twin.con, 2_000, 0), 0);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&keys.state)
        .query(twin.con)
        .unwrap();
    assert!(!exists);
    for (t, n) in [(2_000, 10), (2_000, 1), (2_500, 3)] {
        let _ = twin.acquire(&[0], t, &Cost::zero().with_requests(n), 0);
        twin.check(t);
    }
}

#[test]
fn refunds_past_two_to_the_fifty_three_ns_stay_exact() {
    // Every refund adds to the bucket's refunded total, which marks count from: 2^49 ns a
    // cycle, past 2^53 after 16.
    let (_server, mut con) = connect();
    let policy = one(bucket(1_000, 1 << 49));
    let mut twin = Twin::new(&mut con, "{refunded}", vec![policy]);
    let mut rng = 3u64;
    let mut now = 0;
    let mut held = VecDeque::new();
    for _ in 0..150 {
        now += below(&mut rng, 1_000);
        if let (_, Some(a)) = twin.acquire(&[0], now, &requests(1 + below(&mut rng, 1_000)), 0) {
            held.push_back(a);
        }
        if held.len() > 2 || below(&mut rng, 2) == 0 {
            if let Some(a) = held.pop_front() {
                twin.settle(&[0], now, &a, &requests(below(&mut rng, 20)));
            }
        }
        twin.check(now);
    }
    let budget = &twin.budgets[0];
    let peeked = peek(twin.con, &budget.keys, &budget.policy, now);
    assert_eq!(peeked.limits, budget.limits, "{peeked}");
    let LimitState::Gcra(g) = &budget.limits[0] else {
        panic!()
    };
    assert!(g.refunded > 1 << 53, "{g:?}");
}

#[test]
fn an_old_receipt_gives_nothing_back_to_a_new_incarnation() {
    let (_server, mut con) = connect();
    let mut twin = Twin::new(&mut con, "{born}", vec![one(bucket(10, 1_000))]);
    // All of the first given back (500 ns refunded in all); the second's mark counts them.
    let (_, first) = twin.acquire(&[0], 0, &requests(5), 0);
    twin.settle(&[0], 0, &first.unwrap(), &requests(0));
    let (_, second) = twin.acquire(&[0], 0, &requests(5), 0);
    // Full at 500 and expired (kept only for its refunds); a new state from 700.
    twin.expire(0, 600);
    let _ = twin.acquire(&[0], 700, &requests(5), 0);
    // The second's units drained at 500: nothing comes back. (Its mark read against the new
    // state's refunded total, 0, would give 200 ns back.)
    twin.settle(&[0], 800, &second.unwrap(), &requests(0));
    twin.check(800);
}

#[test]
fn a_tie_goes_to_the_first_budget() {
    let (_server, mut con) = connect();
    let mut twin = Twin::new(
        &mut con,
        "{tie}",
        vec![one(bucket(10, 1_000)), one(bucket(10, 1_000))],
    );
    let _ = twin.acquire(&[0, 1], 0, &requests(10), 0);
    let (refused, _) = twin.acquire(&[0, 1], 0, &requests(1), 0);
    assert_eq!(
        refused,
        Outcome::Wait {
            wait: 100,
            budget: 0,
            limit: 0
        }
    );
}

// ---------------------------------------------------------------------------------------
// The rebase of a budget's epoch.

#[test]
fn decisions_straddling_a_rebase_are_the_core_s() {
    let (_server, mut con) = connect();
    const H: Nanos = 3_600 * S;
    // Windows of a day and of 7 hours (which does not divide a day), a day's log and
    // buckets, with margins: kept busy from day 0 past 2^51 ns (26.06 days), where the
    // script moves the epoch.
    let day = |alg: Algorithm| Limit::new(1_000, Duration::from_nanos(DAY)).algorithm(alg);
    let account = Policy::builder()
        .custom("a", day(Algorithm::FixedWindow))
        .custom(
            "b",
            Limit::new(1_000, Duration::from_nanos(7 * H)).algorithm(Algorithm::FixedWindow),
        )
        .custom(
            "c",
            Limit::new(1_000, Duration::from_nanos(7 * H))
                .algorithm(Algorithm::SlidingWindowCounter),
        )
        .build()
        .unwrap();
    let model = Policy::builder()
        .custom(
            "a",
            day(Algorithm::SlidingWindowLog).margin(Duration::from_secs(60)),
        )
        .custom(
            "b",
            day(Algorithm::TokenBucket)
                .burst(300)
                .margin(Duration::from_secs(1)),
        )
        .custom(
            "c",
            day(Algorithm::SmoothWindow)
                .burst(200)
                .margin(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let tenant = Policy::builder()
        .custom("a", day(Algorithm::SlidingWindowCounter))
        .custom(
            "b",
            Limit::new(100, Duration::from_nanos(DAY)).algorithm(Algorithm::LeakyBucket),
        )
        .build()
        .unwrap();
    let mut twin = Twin::new(&mut con, "{rebase}", vec![account, model, tenant]);
    let mut rng = 11u64;
    let mut held: VecDeque<(Vec<usize>, Admitted)> = VecDeque::new();
    let rebase_at: Nanos = 1 << 51;
    // Every 5 hours from 0 (the tenant's budget made on day 3: another epoch), then close
    // around the rebase instant.
    let mut instants: Vec<Nanos> = (0..140).map(|i| i * 5 * H + below(&mut rng, S)).collect();
    instants.extend([rebase_at - 1, rebase_at, rebase_at + 1, rebase_at + 3 * S]);
    instants.extend((0..60).map(|i| rebase_at - 10 * H + i * H / 2));
    instants.sort_unstable();
    for now in instants {
        let which: Vec<usize> = if now < 3 * DAY + H {
            vec![0, 1]
        } else {
            vec![0, 1, 2]
        };
        let amounts = [
            1 + below(&mut rng, 20),
            1 + below(&mut rng, 20),
            1 + below(&mut rng, 20),
        ];
        let cost = Cost::zero()
            .with("a", amounts[0])
            .with("b", amounts[1])
            .with("c", amounts[2]);
        let max_wait = if below(&mut rng, 4) == 0 { 6 * H } else { 0 };
        if let (_, Some(a)) = twin.acquire(&which, now, &cost, max_wait) {
            held.push_back((which, a));
        }
        // Settled at once half the time (while the buckets still hold it: refunds convert
        // its receipts between frames), else a few instants later.
        let settled = if below(&mut rng, 2) == 0 {
            held.pop_back()
        } else if held.len() > 3 {
            held.pop_front()
        } else {
            None
        };
        if let Some((which, a)) = settled {
            let used = [
                below(&mut rng, 25),
                below(&mut rng, 25),
                below(&mut rng, 25),
            ];
            twin.settle(&which, now, &a, &costs_named(used));
        }
        twin.check(now);
    }
    // The account was rebased: its epoch moved by whole days, its windows kept in place.
    let budget = &twin.budgets[0];
    let peeked = peek(twin.con, &budget.keys, &budget.policy, rebase_at + 4 * S);
    assert!(
        peeked.epoch > 0 && peeked.epoch.is_multiple_of(86_400),
        "{peeked}"
    );
    assert!(peeked.offsets[1] != 0, "{peeked}");
}

#[test]
fn a_rebase_drops_log_entries_older_than_every_window() {
    // The log's entry of day 0 is never expired by a commit (only the bucket beside it is
    // charged, which keeps the budget alive): the rebase past 2^51 ns drops it, and its
    // units from the log's total.
    let (_server, mut con) = connect();
    let policy = Policy::builder()
        .custom(
            "a",
            Limit::new(5, Duration::from_nanos(DAY))
                .algorithm(Algorithm::SlidingWindowLog)
                .margin(Duration::ZERO),
        )
        .custom("b", bucket(1, 6 * DAY))
        .build()
        .unwrap();
    let mut twin = Twin::new(&mut con, "{drop}", vec![policy]);
    let (_, first) = twin.acquire(&[0], 0, &costs_named([3, 0, 0]), 0);
    // The bucket's debt stays within its period: it admits what costs it nothing.
    for day in (6..=24).step_by(6) {
        twin.charge(&[0], day * DAY, &costs_named([0, 1, 0]));
        twin.check(day * DAY);
    }
    let late = (1 << 51) + DAY;
    twin.check(late);
    // A release writes nothing but the rebase.
    let first = first.unwrap();
    twin.settle(&[0], late, &first, &first.cost.clone());
    twin.check(late);
    let (admitted, _) = twin.acquire(&[0], late, &costs_named([4, 0, 0]), 0);
    assert_eq!(admitted, Outcome::Admitted { wait: 0 });
    let (admitted, _) = twin.acquire(&[0], late, &costs_named([1, 0, 0]), 0);
    assert_eq!(admitted, Outcome::Admitted { wait: 0 });
    twin.check(late);
    let budget = &twin.budgets[0];
    let peeked = peek(twin.con, &budget.keys, &budget.policy, late);
    assert!(peeked.epoch > 0, "rebased: {peeked}");
}

/// A sliding log of 100 per 10 s beside a bucket of 1 per 100 s and a fixed window, and a
/// history of the log's entries (instant, amounts) whose list's last chunk ends seconds before
/// 2^51 ns, the tail holding one entry in the window; then the instant past the rebase.
fn rebuilt_log() -> (Policy, Vec<(Nanos, [u64; 3])>, Nanos) {
    const MS: Nanos = 1_000_000;
    let policy = Policy::builder()
        .custom(
            "a",
            Limit::new(100, Duration::from_nanos(10 * S))
                .algorithm(Algorithm::SlidingWindowLog)
                .margin(Duration::ZERO),
        )
        .custom("b", bucket(1, 100 * S))
        .custom(
            "c",
            Limit::new(1000, Duration::from_nanos(S))
                .algorithm(Algorithm::FixedWindow)
                .margin(Duration::ZERO),
        )
        .build()
        .unwrap();
    let a0: Nanos = (1 << 51) - 14 * S;
    let mut history = vec![(S, [1, 0, 0]), (a0, [1, 0, 0])];
    history.extend((0..8).map(|k| (a0 + S + k * MS, [1, 0, 0])));
    history.extend([
        (a0 + 8 * S, [1, 0, 0]),
        (a0 + 8 * S + MS, [1, 0, 0]),
        (a0 + 9 * S, [1, 0, 0]),
        (a0 + 10 * S, [1, 1, 0]),
    ]);
    (policy, history, a0 + 15 * S)
}

#[test]
fn a_rebase_past_a_log_list_s_expiry_keeps_the_log_s_tail() {
    // A rebase rebuilds a log's head, list and tail from its entries; when every entry left in
    // the list has left the window by then, so has the list's expiry (Redis drops the list at
    // once): the log keeps its tail only, and a decision that walks the log finds no chunk
    // missing.
    let (_server, mut con) = connect();
    let (policy, history, late) = rebuilt_log();
    let mut twin = Twin::new(&mut con, "{rebuilt}", vec![policy]);
    for (now, amounts) in history {
        let (outcome, _) = twin.acquire(&[0], now, &costs_named(amounts), 0);
        assert_eq!(outcome, Outcome::Admitted { wait: 0 }, "at {now}");
    }
    // Past 2^51 ns: this acquisition rebases the budget, then counts the log's entries.
    let (outcome, _) = twin.acquire(&[0], late, &costs_named([95, 0, 0]), 0);
    assert_eq!(outcome, Outcome::Admitted { wait: 0 });
    twin.check(late);
    let (outcome, _) = twin.acquire(&[0], late, &costs_named([5, 0, 0]), 0);
    assert!(matches!(outcome, Outcome::Wait { .. }), "{outcome:?}");
    twin.check(late);
}

#[test]
fn a_batch_after_a_rebase_finds_the_log_as_one_call_would() {
    // The same rebase, by the first acquisition of a batch that only takes a place in line
    // (its bucket is empty for 95 s), so that the log is written back, not charged; the next
    // acquisition of the batch walks the log. Both answer as the same calls one by one.
    let (_server, mut con) = connect();
    let (policy, history, late) = rebuilt_log();
    let mut answers = Vec::new();
    for (name, in_batch) in [("single", false), ("batch", true)] {
        let keys = BudgetKeys::new(&format!("{{rebuilt}}:{name}"), 3);
        let compiled = script::Compiled::new(&policy).unwrap();
        let budgets = [(&keys, &policy, &compiled)];
        let ask = |now: Nanos, amounts: [u64; 3], max_wait: Nanos, horizon: Nanos| {
            script::acquire_with(
                &budgets,
                &costs_named(amounts),
                Some(now),
                max_wait,
                horizon,
                &[],
                "",
                1,
            )
        };
        for &(now, amounts) in &history {
            let reply: AcquireReply = call(&mut con, ask(now, amounts, 0, Nanos::MAX));
            assert!(
                matches!(reply, AcquireReply::Admitted { .. }),
                "{now}: {reply:?}"
            );
        }
        let first = ask(late, [1, 1, 0], 200 * S, S);
        let second = ask(late, [95, 0, 0], 200 * S, S);
        let replies: Vec<AcquireReply> = if in_batch {
            batched(&mut con, &[&first, &second], name)
        } else {
            vec![call(&mut con, first), call(&mut con, second)]
        };
        assert!(
            replies
                .iter()
                .all(|r| matches!(r, AcquireReply::Ahead { .. })),
            "{name}: {replies:?}"
        );
        answers.push(replies);
    }
    assert_eq!(answers[0], answers[1]);
}

// ---------------------------------------------------------------------------------------
// Long logs: the script keeps a log's first and last 16 entries in the budget's state and
// whole chunks of 16 in its list between them.

#[test]
fn long_logs_go_through_their_lists_as_the_core_s() {
    // Logs far longer than what the state keeps: entries spill to the list and come back as
    // they leave the window; refunds reach into every part; reservations merge at the back; a
    // quiet spell past a list's expiry drops it (the fixed window of 6 s keeps the budget);
    // a rebase rewrites it all.
    let (_server, mut con) = connect();
    let log = |amount: u64, period: u64, margin: u64| {
        Limit::new(amount, Duration::from_nanos(period))
            .algorithm(Algorithm::SlidingWindowLog)
            .margin(Duration::from_nanos(margin))
    };
    let policies = vec![
        Policy::builder()
            .custom("a", log(300, 2_000, 7))
            .custom(
                "b",
                Limit::new(200, Duration::from_nanos(1_500)).margin(Duration::from_nanos(3)),
            )
            .custom(
                "c",
                Limit::new(1_000_000, Duration::from_secs(6)).algorithm(Algorithm::FixedWindow),
            )
            .build()
            .unwrap(),
        Policy::builder()
            .custom("a", log(150, 900, 0))
            .build()
            .unwrap(),
    ];
    let mut twin = Twin::new(&mut con, "{long}", policies);
    let mut rng = 17u64;
    let mut held: VecDeque<(Vec<usize>, Admitted)> = VecDeque::new();
    let mut run = |twin: &mut Twin<'_>, from: Nanos, steps: usize, rng: &mut u64| -> Nanos {
        let mut now = from;
        for step in 0..steps {
            now += match below(rng, 100) {
                0 => 2 * S + below(rng, S), // past every list's expiry (1 s of slack)
                1..=3 => 500 + below(rng, 3_000),
                _ => below(rng, 12),
            };
            let which = if below(rng, 3) == 0 {
                vec![0, 1]
            } else {
                vec![0]
            };
            let amounts = [1 + below(rng, 3), 1 + below(rng, 3), 1 + below(rng, 2)];
            // Reserved in the future when it waits (the twin has no queue: one wait for all).
            if let (_, Some(a)) = twin.acquire(&which, now, &costs_named(amounts), 5_000) {
                held.push_back((which, a));
            }
            // Settled (a refund of some of it, or a charge beyond it) a while later, or at
            // once, or at random.
            let settled = match below(rng, 4) {
                0 if held.len() > 40 => held.pop_front(),
                1 => held.pop_back(),
                2 if !held.is_empty() => {
                    let k = below(rng, held.len() as u64) as usize;
                    held.remove(k)
                }
                _ => None,
            };
            if let Some((which, a)) = settled {
                let used = [below(rng, 4), below(rng, 4), below(rng, 3)];
                twin.settle(&which, now, &a, &costs_named(used));
            }
            if step % 3 == 0 {
                twin.check(now);
            }
        }
        now
    };
    let now = run(&mut twin, 0, 1_500, &mut rng);
    twin.check(now);
    // Across the rebase (2^51 ns from the epoch).
    let now = run(&mut twin, (1 << 51) - 20_000, 1_000, &mut rng);
    twin.check(now);
    let budget = &twin.budgets[0];
    let peeked = peek(twin.con, &budget.keys, &budget.policy, now);
    assert!(peeked.epoch > 0, "rebased: {peeked}");
    // The lists were used: chunks went to them, came back, and were refunded into.
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(twin.con)
        .unwrap();
    for command in ["rpush", "lpop", "lset"] {
        let calls =
            common::redis_server::command_stat(&info, &format!("cmdstat_{command}"), "calls");
        assert!(calls > 0, "no {command}");
    }
}

#[test]
fn a_state_put_back_behind_the_script_s_back_is_read_as_it_is() {
    // The script keeps the states of the budgets with logs it last read or wrote, and reads
    // 8 bytes of a state (its version) to know whether it still holds: a state put back from
    // a copy, or deleted, is read again.
    let (_server, mut con) = connect();
    let policy = one(Limit::new(100, Duration::from_nanos(1_000))
        .algorithm(Algorithm::SlidingWindowLog)
        .margin(Duration::ZERO));
    let keys = BudgetKeys::new("{back}", 1);
    let saved = BudgetKeys::new("{back}:saved", 1);
    let budgets = [(&keys, &policy)];
    let admit = |con: &mut Connection, now: Nanos, n: u64| -> bool {
        let reply: AcquireReply = call(
            con,
            script::acquire(&budgets, &requests(n), Some(now), 0, "l", 1),
        );
        matches!(reply, AcquireReply::Admitted { .. })
    };
    for (t, n) in [(0, 3), (1, 2), (2, 4), (3, 1), (4, 5), (5, 2)] {
        assert!(admit(&mut con, t, n));
    }
    let then = peek(&mut con, &keys, &policy, 10);
    copy_keys(&mut con, &keys, &saved);
    for t in 10..30 {
        assert!(admit(&mut con, t, 4));
    }
    assert_ne!(peek(&mut con, &keys, &policy, 30).limits, then.limits);
    // Put back: 17 used, 83 left.
    copy_keys(&mut con, &saved, &keys);
    assert_eq!(peek(&mut con, &keys, &policy, 10).limits, then.limits);
    assert!(!admit(&mut con, 40, 84));
    assert!(admit(&mut con, 40, 83));
    // Deleted: a new budget.
    let _: i64 = redis::cmd("DEL").arg(&keys.state).query(&mut con).unwrap();
    assert!(admit(&mut con, 50, 100));
}
