//! The two stores side by side on random schedules: the same asks (several budgets, waits,
//! horizons, places in line, in-flight caps), settlements, cancellations, places given back,
//! provider counts (lowering) and time steps on
//! the in-memory store and on the Redis store (where asks made at once go to Redis together,
//! in one call: the memory store takes them one after another) (a real `redis-server` of the test's own, the
//! instant of a manual clock passed to its script) give the same answers, and leave the same
//! snapshots, at every step. `tests/redis_script.rs` holds the script to the core limit by
//! limit; this holds the stores' own rules (floors, lines, leases) to one another.
//!
//! A failure prints its seed: `TOKENGATE_STORE_SEED=<seed>` replays it.
//!
//! Run: `cargo test -p tokengate --features redis --test store_differential`.

#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestError;
use tokengate::redis::RedisStore;
use tokengate::store::{
    Answer, Ask, MemoryStore, Place, Refusal, Reservation, Store, StoreBudget, StoreError,
};
use tokengate::{Algorithm, Cost, Limit, ManualClock, Policy, Usage};

use common::policies::{policy_strategy, seeded_runner};
use common::redis_server::RedisServer;

/// Longer than any schedule: leases never run out here (the Redis store counts them in
/// whole milliseconds, the in-memory one in nanoseconds).
const LEASE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    /// An ask on the budgets the mask picks (at least one).
    Acquire {
        mask: u8,
        cost: [u64; 3],
        max_wait: u64,
        horizon: Option<u64>,
        /// The budgets (bit i: the ith picked) on which it presents the latest place in line
        /// given there, if any.
        placed: u8,
    },
    /// Asks made at once (mask, cost, max_wait, horizon), at one instant: on Redis the first
    /// goes alone and the others in one call, a batch (`src/redis/batch.rs`).
    Together(Vec<(u8, [u64; 3], u64, Option<u64>)>),
    /// The `pick`th place in line given so far, given back.
    Leave {
        pick: usize,
    },
    /// A provider's count on limit `limit` of budget `budget` (modulo their numbers).
    Lower {
        budget: usize,
        limit: usize,
        counted: u64,
    },
    /// The `pick`th reservation still held, settled with this usage (`None`: as reserved;
    /// all zero: cancelled).
    Settle {
        pick: usize,
        used: Option<[u64; 3]>,
    },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let amount = || prop_oneof![1 => Just(0u64), 3 => 0u64..=14];
    let amounts = move || [amount(), amount(), amount()];
    let waits = || prop_oneof![Just(0u64), 0u64..=50, 0u64..=600];
    prop_oneof![
        3 => prop_oneof![0u64..=3, 0u64..=60, 0u64..=400].prop_map(Step::Wait),
        5 => (
            1u8..=3,
            amounts(),
            waits(),
            proptest::option::of(0u64..=60),
            prop_oneof![2 => Just(0u8), 1 => 0u8..8]
        )
            .prop_map(|(mask, cost, max_wait, horizon, placed)| Step::Acquire {
                mask,
                cost,
                max_wait,
                horizon,
                placed,
            }),
        2 => (0usize..8, proptest::option::of(amounts()))
            .prop_map(|(pick, used)| Step::Settle { pick, used }),
        2 => proptest::collection::vec(
            (1u8..=7, amounts(), waits(), proptest::option::of(0u64..=60)),
            3..=8
        )
        .prop_map(Step::Together),
        1 => (0usize..8).prop_map(|pick| Step::Leave { pick }),
        1 => (0usize..3, 0usize..3, 0u64..=30).prop_map(|(budget, limit, counted)| Step::Lower {
            budget,
            limit,
            counted
        }),
    ]
}

fn cost_of(amounts: [u64; 3]) -> Cost {
    amounts
        .iter()
        .enumerate()
        .fold(Cost::zero(), |c, (i, &a)| c.with(format!("d{i}"), a))
}

fn usage_of(amounts: [u64; 3]) -> Usage {
    amounts
        .iter()
        .enumerate()
        .fold(Usage::new(), |u, (i, &a)| u.with(format!("d{i}"), a))
}

/// The budgets a mask picks.
fn picked(mask: u8, budgets: &[StoreBudget]) -> Vec<StoreBudget> {
    let which: Vec<StoreBudget> = (0..budgets.len())
        .filter(|&b| mask & (1 << b) != 0)
        .map(|b| budgets[b].clone())
        .collect();
    if which.is_empty() {
        vec![budgets[0].clone()]
    } else {
        which
    }
}

/// The amounts clamped to every capacity of the budgets (mostly: a cost above one is an
/// error, which both stores must word alike; one ask in eight keeps its amounts).
fn possible(budgets: &[StoreBudget], mut amounts: [u64; 3]) -> [u64; 3] {
    if amounts.iter().sum::<u64>() % 8 == 7 {
        return amounts;
    }
    for b in budgets {
        for (i, (_, limit)) in b.policy().limits().enumerate() {
            let rule = tokengate::core::LimitRule::new(limit).expect("a valid limit");
            amounts[i] = amounts[i].min(rule.capacity());
        }
    }
    amounts
}

/// What an answer says, comparably: the reservation's wait, instant and slots, or the
/// refusal, or the error's message.
fn said(answer: &Result<Answer, StoreError>) -> String {
    match answer {
        Ok(Answer::Reserved(r)) => format!(
            "reserved wait {:?} at {:?} slots {}",
            r.wait(),
            r.admitted_at(),
            r.holds_slots()
        ),
        Ok(Answer::Refused(r)) => format!("refused {r:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// An ask of `cost` on `which` that waits at most `max_wait` ns, with a horizon if given.
fn ask_of<'a>(
    which: &'a [StoreBudget],
    cost: &'a Cost,
    max_wait: u64,
    horizon: Option<u64>,
) -> Ask<'a> {
    let ask = Ask::new(which, cost).max_wait(Duration::from_nanos(max_wait));
    match horizon {
        Some(h) => ask.horizon(Duration::from_nanos(h)),
        None => ask,
    }
}

/// The two stores' answers to one ask on `which`, held to each other; what they say. A place
/// in line or a reservation they give is kept for the steps after.
fn alike(
    m: Result<Answer, StoreError>,
    r: Result<Answer, StoreError>,
    which: &[StoreBudget],
    context: &str,
    places: &mut Vec<(StoreBudget, Place)>,
    held: &mut Vec<(Reservation, Reservation)>,
) -> String {
    let said_m = said(&m);
    assert_eq!(
        said_m,
        said(&r),
        "{context}: the answers differ (memory, then redis)"
    );
    if let Ok(Answer::Refused(Refusal::Ahead { budget, place, .. })) = &m {
        places.push((which[*budget].clone(), *place));
    }
    if let (Ok(Answer::Reserved(m)), Ok(Answer::Reserved(r))) = (m, r) {
        held.push((m, r));
    }
    said_m
}

/// How many answers of each kind the schedules saw: the test says what it covered.
static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn seen(answer: &str) {
    let kind = match answer.split([' ', '{']).collect::<Vec<_>>().as_slice() {
        ["refused", why, ..] => format!("refused {why}"),
        [first, ..] => (*first).to_owned(),
        [] => String::new(),
    };
    *SEEN.lock().unwrap().entry(kind).or_default() += 1;
}

struct Pair {
    memory: MemoryStore<ManualClock>,
    memory_clock: ManualClock,
    redis: RedisStore,
    redis_clock: ManualClock,
}

impl Pair {
    fn set(&self, now: u64) {
        self.memory_clock.set(now);
        self.redis_clock.set(now);
    }

    async fn check(&self, budgets: &[StoreBudget], context: &str) {
        for b in budgets {
            let m = self.memory.snapshot(b).await.expect("a memory snapshot");
            let r = self.redis.snapshot(b).await.expect("a redis snapshot");
            assert_eq!(
                format!("{m:?}"),
                format!("{r:?}"),
                "{context}: the snapshots of {:?} differ (memory, then redis)",
                b.name()
            );
        }
    }
}

async fn run_schedule(
    connection: &redis::aio::ConnectionManager,
    case: usize,
    policies: Vec<Policy>,
    steps: &[Step],
) {
    let (memory_clock, redis_clock) = (ManualClock::new(), ManualClock::new());
    let pair = Pair {
        memory: MemoryStore::with_clock(memory_clock.clone()).lease(LEASE),
        memory_clock,
        redis: RedisStore::with_connection(connection.clone())
            .namespace("tokengate-differential", &format!("c{case}"))
            .lease(LEASE)
            .with_manual_clock(redis_clock.clone()),
        redis_clock,
    };
    let budgets: Vec<StoreBudget> = policies
        .into_iter()
        .enumerate()
        .map(|(i, p)| StoreBudget::new(format!("b{i}"), p))
        .collect();
    let mut now = 0;
    pair.set(now);
    let mut held: Vec<(Reservation, Reservation)> = Vec::new();
    // Every place in line given, with its budget (both stores gave the same: their answers
    // are compared whole).
    let mut places: Vec<(StoreBudget, Place)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let context = format!("step {i} ({step:?}) at {now} ns");
        match step {
            Step::Wait(dt) => {
                now += dt;
                pair.set(now);
            }
            Step::Acquire {
                mask,
                cost,
                max_wait,
                horizon,
                placed,
            } => {
                let which = picked(*mask, &budgets);
                let cost = cost_of(possible(&which, *cost));
                let ask = ask_of(&which, &cost, *max_wait, *horizon);
                let presented: Vec<(usize, Place)> = (0..which.len())
                    .filter(|b| placed & (1 << b) != 0)
                    .filter_map(|b| {
                        let latest = places
                            .iter()
                            .rev()
                            .find(|(on, _)| on.name() == which[b].name());
                        latest.map(|&(_, p)| (b, p))
                    })
                    .collect();
                let ask = ask.placed(&presented);
                let (m, r) = (
                    pair.memory.acquire(ask).await,
                    pair.redis.acquire(ask).await,
                );
                let said = alike(m, r, &which, &context, &mut places, &mut held);
                seen(&said);
            }
            Step::Together(asks) => {
                let made: Vec<(Vec<StoreBudget>, Cost, u64, Option<u64>)> = asks
                    .iter()
                    .map(|&(mask, cost, max_wait, horizon)| {
                        let which = picked(mask, &budgets);
                        let cost = cost_of(possible(&which, cost));
                        (which, cost, max_wait, horizon)
                    })
                    .collect();
                let asks: Vec<Ask<'_>> = made
                    .iter()
                    .map(|(which, cost, max_wait, horizon)| {
                        ask_of(which, cost, *max_wait, *horizon)
                    })
                    .collect();
                let mut m = Vec::new();
                for ask in &asks {
                    m.push(pair.memory.acquire(*ask).await);
                }
                let r = futures_util::future::join_all(asks.iter().map(|a| pair.redis.acquire(*a)))
                    .await;
                for (j, ((m, r), (which, ..))) in m.into_iter().zip(r).zip(&made).enumerate() {
                    let context = format!("{context}: ask {j} of those made at once");
                    let said = alike(m, r, which, &context, &mut places, &mut held);
                    seen(&format!("together {said}"));
                }
            }
            Step::Lower {
                budget,
                limit,
                counted,
            } => {
                let b = &budgets[budget % budgets.len()];
                let limit = limit % b.policy().limits().count();
                let m = pair.memory.lower(b, limit, *counted).await;
                let r = pair.redis.lower(b, limit, *counted).await;
                assert_eq!(
                    format!("{m:?}"),
                    format!("{r:?}"),
                    "{context}: the stores lowered differently (memory, then redis)"
                );
                seen(if matches!(m, Ok(0)) {
                    "lowered-nothing"
                } else {
                    "lowered-some"
                });
            }
            Step::Leave { pick } => {
                if !places.is_empty() {
                    let (budget, place) = places[pick % places.len()].clone();
                    pair.memory
                        .leave(&budget, place)
                        .await
                        .expect("the memory store leaves");
                    pair.redis
                        .leave(&budget, place)
                        .await
                        .expect("the redis store leaves");
                }
            }
            Step::Settle { pick, used } => {
                if !held.is_empty() {
                    let (m, r) = held.remove(pick % held.len());
                    let usage = used.map(usage_of);
                    pair.memory
                        .settle(&m, usage.as_ref())
                        .await
                        .expect("the memory store settles");
                    pair.redis
                        .settle(&r, usage.as_ref())
                        .await
                        .expect("the redis store settles");
                }
            }
        }
        pair.check(&budgets, &context).await;
    }
}

/// A runtime for a test, and a connection to `server` on it.
fn connected(server: &RedisServer) -> (tokio::runtime::Runtime, redis::aio::ConnectionManager) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let connection = runtime.block_on(async {
        let client = redis::Client::open(server.url()).expect("a redis url");
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("connects")
    });
    (runtime, connection)
}

/// A schedule a random run once found (seed 1796646116582346417, shrunk): a budget made
/// fresh by the time a settle comes is forgotten in memory and kept on Redis, and the line it
/// had passed must not show in the next place in line either way.
#[test]
fn a_passed_line_reads_alike_whether_the_budget_was_kept_or_forgotten() {
    let server = RedisServer::start();
    let (runtime, connection) = connected(&server);
    let limit = Limit::new(6, Duration::from_nanos(15))
        .algorithm(Algorithm::TokenBucket)
        .margin(Duration::from_nanos(4));
    let policy = Policy::builder()
        .custom("d0", limit)
        .build()
        .expect("a policy");
    let ask = |cost: u64, max_wait: u64, horizon: Option<u64>| Step::Acquire {
        mask: 1,
        cost: [cost, 0, 0],
        max_wait,
        horizon,
        placed: 0,
    };
    let steps = [
        ask(1, 0, None),
        ask(6, 7, None),
        ask(5, 24, Some(0)),
        Step::Wait(0),
        Step::Wait(37),
        Step::Settle {
            pick: 0,
            used: None,
        },
        ask(6, 0, None),
        ask(6, 19, Some(0)),
    ];
    runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            run_schedule(&connection, 0, vec![policy], &steps),
        )
        .await
        .expect("the schedule ends within 30 s")
    });
}

#[test]
fn random_schedules_answer_alike_on_both_stores() {
    let server = RedisServer::start();
    let (seed, mut runner) = seeded_runner("TOKENGATE_STORE_SEED", 256, 1_000);
    let (runtime, connection) = connected(&server);
    // One budget, two, or three; some with an in-flight cap.
    let capped =
        (policy_strategy(), proptest::option::of(1u64..=3)).prop_map(|(p, cap)| match cap {
            Some(cap) => rebuilt_with_cap(&p, cap),
            None => p,
        });
    let strategy = (
        proptest::collection::vec(capped, 1..=3),
        proptest::collection::vec(step_strategy(), 1..40),
    );
    let case = std::cell::Cell::new(0usize);
    let result = runner.run(&strategy, |(policies, steps)| {
        case.set(case.get() + 1);
        runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                run_schedule(&connection, case.get(), policies, &steps),
            )
            .await
            .expect("a schedule ends within 30 s")
        });
        Ok(())
    });
    println!("answers seen: {:?}", SEEN.lock().unwrap());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (policies, steps))) => panic!(
            "seed {seed} (rerun with TOKENGATE_STORE_SEED={seed}): {why}\npolicies: \
             {policies:#?}\nsteps: {steps:?}"
        ),
        Err(e) => panic!("seed {seed}: {e}"),
    }
}

/// `policy` with an in-flight cap of `cap`.
fn rebuilt_with_cap(policy: &Policy, cap: u64) -> Policy {
    let mut builder = Policy::builder().max_in_flight(cap);
    for (dimension, limit) in policy.limits() {
        builder = builder.limit(dimension.clone(), limit.clone());
    }
    builder.build().expect("valid limits")
}
