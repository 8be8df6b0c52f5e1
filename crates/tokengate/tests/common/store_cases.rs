//! One body of tests for every store: `tests/store.rs` runs each against the in-memory store,
//! `tests/redis_store.rs` against the Redis store, both on a manual clock. Each takes a
//! prefix for its budget names, so cases never share state.

use std::collections::BTreeMap;
use std::time::Duration;

use tokengate::config::Config;
use tokengate::store::{Answer, Ask, Place, Refusal, Reservation, Store, StoreBudget, StoreError};
use tokengate::{AcquireError, Algorithm, Cost, Dimension, Limit, ManualClock, Policy, Usage};

use super::request_vectors::{after, load, Case, Expect, Op, Word};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The budgets a key falls under, as a limiter built from `config` charges them: the
/// account's, the model's or its family's, the tenant's. `None` when the file refuses the
/// model.
pub fn budgets_of(
    prefix: &str,
    config: &Config,
    tenant: Option<&str>,
    model: Option<&str>,
) -> Option<Vec<StoreBudget>> {
    let mut budgets = Vec::new();
    if let Some(policy) = config.account() {
        budgets.push(StoreBudget::new(format!("{prefix}account"), policy.clone()));
    }
    if let Some(model) = model {
        if config.refuses_model(model) {
            return None;
        }
        if let Some((budget, policy)) = config.model_policy(model) {
            budgets.push(StoreBudget::new(
                format!("{prefix}{budget}"),
                policy.clone(),
            ));
        }
    }
    if let Some((name, policy)) = tenant.and_then(|t| config.tenant_policy(t)) {
        budgets.push(StoreBudget::new(
            format!("{prefix}tenant {name}"),
            policy.clone(),
        ));
    }
    Some(budgets)
}

/// What a store answered, in the vectors' terms.
fn answer(
    t: u64,
    budgets: &[StoreBudget],
    got: Result<Answer, StoreError>,
) -> (Expect, Option<Reservation>) {
    let at = |wait: Duration| after(t, wait);
    match got {
        Ok(Answer::Reserved(r)) => {
            assert_eq!(
                r.wait(),
                Duration::ZERO,
                "nothing is reserved in the future"
            );
            (Expect::Word(Word::Admit), Some(r))
        }
        Ok(Answer::Refused(Refusal::Wait {
            wait,
            budget,
            limit,
        })) => {
            let (dimension, _) = budgets[budget].policy().limits().nth(limit).unwrap();
            let expect = Expect::NotUntil {
                not_until: at(wait),
                dimension: dimension.name().to_owned(),
            };
            (expect, None)
        }
        Ok(Answer::Refused(Refusal::Paused { wait, .. })) => (
            Expect::PausedUntil {
                paused_until: at(wait),
            },
            None,
        ),
        Ok(Answer::Refused(Refusal::InFlightFull { .. })) => {
            (Expect::Word(Word::InFlightFull), None)
        }
        Err(StoreError::Refused(AcquireError::Exceeds { dimension, .. })) => (
            Expect::Impossible {
                impossible: dimension.name().to_owned(),
            },
            None,
        ),
        other => panic!("an answer outside the vectors' terms: {other:?}"),
    }
}

fn config(case: &str, text: &str) -> Config {
    Config::from_toml_str(text, case).unwrap_or_else(|e| panic!("{case}: limits: {e}"))
}

/// Replays one case of `requests.json`; returns whether it ran whole (a `reload` ends it:
/// a store holds one policy per budget and reports another as a mismatch, checked apart).
async fn replay(store: &dyn Store, clock: &ManualClock, prefix: &str, case: &Case) -> bool {
    let prefix = format!("{prefix}{}/", case.name);
    let config = config(&case.name, &case.limits);
    let mut held: BTreeMap<usize, Reservation> = BTreeMap::new();
    for (i, step) in case.ops.iter().enumerate() {
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
                let Some(budgets) =
                    budgets_of(&prefix, &config, tenant.as_deref(), model.as_deref())
                else {
                    assert_eq!(expect, &Expect::Word(Word::UnknownModel), "{at}");
                    continue;
                };
                let cost = cost.cost();
                let got = store.acquire(Ask::new(&budgets, &cost)).await;
                let (got, reservation) = answer(step.t, &budgets, got);
                assert_eq!(&got, expect, "{at}");
                if let Some(r) = reservation {
                    held.insert(i, r);
                }
            }
            Op::Settle {
                admission, usage, ..
            } => {
                let r = held
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no admission {admission}"));
                store
                    .settle(&r, Some(&usage.usage()))
                    .await
                    .expect("settles");
            }
            Op::Release { admission, .. } => {
                let r = held
                    .remove(admission)
                    .unwrap_or_else(|| panic!("{at}: no admission {admission}"));
                store.settle(&r, None).await.expect("releases");
            }
            Op::Pause { model, for_ns, .. } => {
                let budgets = budgets_of(&prefix, &config, None, model.as_deref()).expect("listed");
                let budget = budgets.last().expect("a budget to pause");
                store
                    .pause(budget, Duration::from_nanos(*for_ns), true)
                    .await
                    .expect("pauses");
            }
            Op::Reload { .. } => return false,
        }
    }
    true
}

/// Every case of `requests.json`, up to a `reload` (printed), each on a fresh store and
/// clock from `fresh` (the vectors' clocks start at 0).
pub async fn replays_the_request_vectors<S: Store>(
    fresh: impl Fn() -> (S, ManualClock),
    prefix: &str,
) {
    let file = load();
    let mut whole = 0;
    for case in &file.cases {
        let (store, clock) = fresh();
        if replay(&store, &clock, prefix, case).await {
            whole += 1;
        } else {
            eprintln!(
                "{}: replayed up to its reload (a store reports other limits as a mismatch)",
                case.name
            );
        }
    }
    assert!(whole >= 8, "{whole} cases replayed whole");
}

fn one(prefix: &str, name: &str, policy: Policy) -> [StoreBudget; 1] {
    [StoreBudget::new(format!("{prefix}{name}"), policy)]
}

async fn reserve(
    store: &dyn Store,
    budgets: &[StoreBudget],
    cost: &Cost,
    max_wait: Duration,
) -> Answer {
    store
        .acquire(Ask::new(budgets, cost).max_wait(max_wait))
        .await
        .expect("the store answers")
}

/// A reservation lands at the earliest instant the limits admit it, after every earlier
/// one (first come, first served), and a request that would wait longer than allowed is
/// refused with the wait, reserving nothing.
pub async fn reservations_are_exact_and_first_come_first_served(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    // 60 a minute, one at once: one a second.
    let policy = Policy::builder()
        .requests_per_minute(60)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let budgets = one(prefix, "fifo", policy);
    let one = Cost::request();
    let long = Duration::from_secs(10);
    let waits: Vec<Duration> = {
        let mut w = Vec::new();
        for _ in 0..4 {
            w.push(
                reserve(store, &budgets, &one, long)
                    .await
                    .reserved()
                    .expect("reserved")
                    .wait(),
            );
        }
        w
    };
    assert_eq!(waits, [0, 1, 2, 3].map(Duration::from_secs));
    // Allowed 2 s of waiting, the fifth would wait 4 s: refused, with that wait.
    let refused = reserve(store, &budgets, &one, Duration::from_secs(2)).await;
    assert_eq!(
        refused.refusal(),
        Some(Refusal::Wait {
            wait: Duration::from_secs(4),
            budget: 0,
            limit: 0
        })
    );
    // Nothing was reserved by the refusal: the next still lands at 4 s.
    let next = reserve(store, &budgets, &one, long)
        .await
        .reserved()
        .unwrap();
    assert_eq!(next.wait(), Duration::from_secs(4));
    // Half a second on, a try refuses (the floor is at 4 s), a wait lands after it.
    clock.set(S / 2);
    let tried = reserve(store, &budgets, &one, Duration::ZERO).await;
    assert_eq!(
        tried.refusal().and_then(|r| r.wait()),
        Some(Duration::from_millis(4_500))
    );
    let last = reserve(store, &budgets, &one, long)
        .await
        .reserved()
        .unwrap();
    assert_eq!(last.wait(), Duration::from_millis(4_500));
}

/// A request is never admitted before an earlier reservation on any of its budgets, even
/// where its own limits have room: one that cannot wait that long is refused as queued.
pub async fn nothing_overtakes_a_reservation(store: &dyn Store, clock: &ManualClock, prefix: &str) {
    clock.set(0);
    let limits = |rpm| {
        Policy::builder()
            .requests_per_minute(rpm)
            .margin(Duration::ZERO)
            .build()
            .unwrap()
    };
    let account = StoreBudget::new(format!("{prefix}account"), limits(6_000));
    let a = [
        account.clone(),
        StoreBudget::new(format!("{prefix}a"), limits(60)),
    ];
    let b = [account, StoreBudget::new(format!("{prefix}b"), limits(60))];
    let req = Cost::request();
    let long = Duration::from_secs(10);
    assert_eq!(
        reserve(store, &a, &req, long)
            .await
            .reserved()
            .unwrap()
            .wait(),
        Duration::ZERO
    );
    // Model a allows one a second: the second is reserved at 1 s, and so is the account.
    let second = reserve(store, &a, &req, long).await.reserved().unwrap();
    assert_eq!(second.wait(), Duration::from_secs(1));
    assert_eq!(second.admitted_at(), Some(Duration::from_secs(1)));
    // Model b has room now, the account has room, but the account's floor is at 1 s.
    let tried = reserve(store, &b, &req, Duration::ZERO).await;
    assert_eq!(
        tried.refusal(),
        Some(Refusal::Queued {
            wait: Duration::from_secs(1),
            budget: 0
        })
    );
    let waited = reserve(store, &b, &req, long).await.reserved().unwrap();
    assert_eq!(waited.wait(), Duration::from_secs(1));
}

/// The wait, budget and place of an answer that gives a place in line.
fn ahead(answer: &Answer) -> (Duration, usize, Place) {
    match answer.refusal() {
        Some(Refusal::Ahead {
            wait,
            budget,
            place,
        }) => (wait, budget, place),
        other => panic!("expected a place in line, got {other:?}"),
    }
}

/// Beyond the ask's horizon a request is not reserved: it is told its instant and keeps its
/// place in line on the budget that holds it back, taking no slot and holding back no other
/// budget; later asks go after the line; asking again shortly before its instant, it is
/// reserved there.
pub async fn beyond_the_horizon_a_request_keeps_its_place_in_line(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    let limits = |rpm, slots| {
        Policy::builder()
            .requests_per_minute(rpm)
            .max_in_flight(slots)
            .margin(Duration::ZERO)
            .build()
            .unwrap()
    };
    // The model allows one a second; the tenant has room for ten at once.
    let tenant = StoreBudget::new(format!("{prefix}tenant"), limits(600, 100));
    let model = [
        StoreBudget::new(format!("{prefix}model"), limits(60, 8)),
        tenant.clone(),
    ];
    let other = [
        StoreBudget::new(format!("{prefix}other"), limits(600, 100)),
        tenant,
    ];
    let req = Cost::request();
    let horizon = Duration::from_millis(200);
    let ask = |budgets| {
        Ask::new(budgets, &req)
            .max_wait(Duration::from_secs(10))
            .horizon(horizon)
    };
    let acquire = |ask| async move { store.acquire(ask).await.expect("the store answers") };
    let first = acquire(ask(&model)).await.reserved().expect("at once");
    assert_eq!(first.wait(), Duration::ZERO);
    // The next one a second ahead, beyond the horizon: a place in line on the model.
    let (wait, budget, second_place) = ahead(&acquire(ask(&model)).await);
    assert_eq!((wait, budget), (Duration::from_secs(1), 0));
    // It holds back neither the tenant nor the slots.
    let elsewhere = acquire(ask(&other)).await.reserved().expect("reserved");
    assert_eq!(
        elsewhere.wait(),
        Duration::ZERO,
        "the tenant is not held back"
    );
    let snapshot = store.snapshot(&model[0]).await.expect("a snapshot");
    assert_eq!(snapshot.in_flight, 1, "a place in line takes no slot");
    // A later ask goes after the line: the second's second.
    let (wait, _, third_place) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_secs(2));
    // Each asks again shortly before its instant and is reserved there.
    clock.set(900_000_000);
    let held = [(0, second_place)];
    let second = acquire(ask(&model).placed(&held))
        .await
        .reserved()
        .expect("reserved");
    assert_eq!(second.admitted_at(), Some(Duration::from_secs(1)));
    // A newcomer now goes after the third's place (3 s).
    let (wait, _, newcomer_place) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_millis(2_100));
    // The third asks again, is reserved at 2 s; the newcomer's place is the last in line
    // (the third's is not, and stays).
    clock.set(1_900_000_000);
    let held = [(0, third_place)];
    let third = acquire(ask(&model).placed(&held))
        .await
        .reserved()
        .expect("reserved");
    assert_eq!(third.admitted_at(), Some(Duration::from_secs(2)));
    // Within the horizon it is reserved, as without one; one that cannot wait is refused.
    clock.set(2_900_000_000);
    let held = [(0, newcomer_place)];
    let near = acquire(ask(&model).placed(&held))
        .await
        .reserved()
        .expect("reserved");
    assert_eq!(near.wait(), Duration::from_millis(100));
    // Reserved, it left the line, whose end it was: the line ends where it did before it (at
    // 3 s, its own instant), and a newcomer goes right after it, at 4 s (not 5 s).
    let (wait, _, _) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_millis(1_100));
    let hurried = Ask::new(&model, &req)
        .max_wait(Duration::from_millis(500))
        .horizon(horizon);
    let refused = acquire(hurried).await.refusal();
    assert!(
        matches!(refused, Some(Refusal::Queued { budget: 0, .. })),
        "{refused:?}"
    );
    // Places at 5 s and 6 s (the line was at 5 s): giving back one that is not the last
    // changes nothing; giving back the last brings the line back to where it was before it.
    let (_, _, first_place) = ahead(&acquire(ask(&model)).await);
    let (wait, _, last_place) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_millis(3_100));
    store.leave(&model[0], first_place).await.expect("left");
    let (wait, _, _) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_millis(4_100), "not the last: kept");
    store.leave(&model[0], last_place).await.expect("left");
    let (wait, _, _) = ahead(&acquire(ask(&model)).await);
    assert_eq!(
        wait,
        Duration::from_millis(5_100),
        "not the last any more: kept"
    );
    // The last in line leaves: the next newcomer takes its place.
    let (_, _, latest) = ahead(&acquire(ask(&model)).await);
    store.leave(&model[0], latest).await.expect("left");
    let (wait, _, _) = ahead(&acquire(ask(&model)).await);
    assert_eq!(wait, Duration::from_millis(6_100), "the place came back");
}

/// A receipt from before a budget was forgotten (fresh again, its keys dropped) gives
/// nothing back to the budget made since: the refund it would have made was time the old
/// state had already given back.
pub async fn a_forgotten_budget_refunds_nothing_to_its_successor(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    const MS: u64 = 1_000_000;
    clock.set(0);
    // A bucket of 10 tokens refilling 10 a second (100 ms a token).
    let policy = Policy::builder()
        .limit(
            tokengate::Dimension::InputTokens,
            tokengate::Limit::per_second(10)
                .algorithm(tokengate::Algorithm::TokenBucket)
                .margin(Duration::ZERO),
        )
        .build()
        .unwrap();
    let budgets = one(prefix, "forgotten", policy);
    let five = Cost::zero().input(5);
    let none = Usage::new().requests(0).input(0).output(0);
    let r1 = reserve(store, &budgets, &five, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    let r2 = reserve(store, &budgets, &five, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    // r1 used nothing: its 500 ms come back, and r2 drains at 500 ms.
    store.settle(&r1, Some(&none)).await.unwrap();
    clock.set(600 * MS);
    let r3 = reserve(store, &budgets, &Cost::zero().input(1), Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    // Settled at 800 ms, the bucket is full again: a store may forget the budget.
    clock.set(800 * MS);
    store.settle(&r3, None).await.unwrap();
    let ten = reserve(store, &budgets, &Cost::zero().input(10), Duration::ZERO).await;
    assert!(ten.reserved().is_some(), "a full bucket admits 10");
    // r2's tokens drained at 500 ms: nothing of them comes back.
    clock.set(900 * MS);
    store.settle(&r2, Some(&none)).await.unwrap();
    let snap = store.snapshot(&budgets[0]).await.unwrap();
    assert_eq!(snap.limits[0].remaining, 1, "{snap:?}");
}

/// A cancelled reservation gives back what the limits still hold of it: the next request
/// takes its place.
pub async fn a_cancelled_reservation_gives_its_place_back(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    let policy = Policy::builder()
        .input_tokens_per_minute(600)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    // A bucket of 10 tokens refilling 10 a second.
    let budgets = one(prefix, "cancel", policy);
    let ten = Cost::zero().input(10);
    let first = reserve(store, &budgets, &ten, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    assert_eq!(first.wait(), Duration::ZERO);
    // Cancelled at once (used nothing): the bucket is full again.
    store
        .settle(&first, Some(&Usage::new().requests(0).input(0).output(0)))
        .await
        .unwrap();
    let again = reserve(store, &budgets, &ten, Duration::ZERO).await;
    assert!(again.reserved().is_some(), "the cancelled tokens came back");
}

/// A settlement after a later reservation, committed ahead of now, gives back nothing that
/// reservation counted as taken: refunded at the settlement's own instant, the first request's
/// unused tokens would come back a second time, and a third request would land early.
pub async fn a_settlement_refunds_nothing_a_later_reservation_took(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    // A bucket of 1,000 tokens refilling 1,000 a second.
    let policy = Policy::builder()
        .limit(
            Dimension::InputTokens,
            Limit::per_second(1_000).algorithm(Algorithm::TokenBucket),
        )
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let budgets = one(prefix, "ahead", policy);
    let thousand = Cost::zero().input(1_000);
    let long = Duration::from_secs(10);
    let first = reserve(store, &budgets, &thousand, long)
        .await
        .reserved()
        .expect("reserved");
    assert_eq!(first.wait(), Duration::ZERO);
    clock.set(800 * MS);
    let second = reserve(store, &budgets, &thousand, long).await;
    assert_eq!(
        second.reserved().map(|r| r.wait()),
        Some(Duration::from_millis(200))
    );
    // The first used nothing: settled at 0.85 s, before the second's instant (1 s).
    clock.set(850 * MS);
    store
        .settle(&first, Some(&Usage::new().input(0)))
        .await
        .unwrap();
    clock.set(1_700 * MS);
    let third = reserve(store, &budgets, &thousand, long).await;
    // The second's 1,000 leave the bucket at 2 s.
    assert_eq!(
        third.reserved().map(|r| r.wait()),
        Some(Duration::from_millis(300))
    );
}

/// An in-flight cap lends slots: full while held, free again after a settlement or when the
/// lease runs out, and a renewal extends it.
pub async fn in_flight_slots_are_leases(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
    lease: Duration,
) {
    clock.set(0);
    let policy = Policy::builder().max_in_flight(1).build().unwrap();
    let budgets = one(prefix, "slots", policy);
    let req = Cost::request();
    let held = reserve(store, &budgets, &req, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    assert!(held.holds_slots());
    let full = reserve(store, &budgets, &req, Duration::ZERO).await;
    assert_eq!(full.refusal(), Some(Refusal::InFlightFull { budget: 0 }));
    assert_eq!(store.snapshot(&budgets[0]).await.unwrap().in_flight, 1);
    store.settle(&held, None).await.unwrap();
    let held = reserve(store, &budgets, &req, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    // Renewed half way, the lease runs to 1.5 leases from the start.
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap();
    clock.set(nanos(lease) / 2);
    store.renew(&held).await.unwrap();
    clock.set(nanos(lease) + nanos(lease) / 4);
    let still = reserve(store, &budgets, &req, Duration::ZERO).await;
    assert_eq!(still.refusal(), Some(Refusal::InFlightFull { budget: 0 }));
    // Past its end, as for a process that died holding it: the slot is free.
    clock.set(2 * nanos(lease));
    let freed = reserve(store, &budgets, &req, Duration::ZERO).await;
    assert!(
        freed.reserved().is_some(),
        "an expired lease frees its slot"
    );
}

/// A budget asked under other limits than its state's is a mismatch, naming both.
pub async fn other_limits_on_one_budget_are_a_mismatch(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    let a = one(
        prefix,
        "shared",
        Policy::builder().requests_per_minute(60).build().unwrap(),
    );
    let b = one(
        prefix,
        "shared",
        Policy::builder().requests_per_minute(61).build().unwrap(),
    );
    let req = Cost::request();
    let _kept = reserve(store, &a, &req, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    match store.acquire(Ask::new(&b, &req)).await {
        Err(StoreError::Mismatch { budget, .. }) => assert!(budget.ends_with("shared")),
        other => panic!("{other:?}"),
    }
}

/// A snapshot reads without charging; a pause refuses until it ends; a reset forgets.
/// A provider's count above the budget's (another client on the account) is charged: the
/// limit counts it from then on; a count at or below the budget's changes nothing.
pub async fn a_provider_count_lowers_a_budget(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    let policy = Policy::builder()
        .requests_per_minute(60)
        .limit(
            tokengate::Dimension::InputTokens,
            tokengate::Limit::per_minute(6_000).algorithm(tokengate::Algorithm::TokenBucket),
        )
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let budgets = one(prefix, "lowered", policy);
    let cost = Cost::request().input(1_000);
    let _ = reserve(store, &budgets, &cost, Duration::ZERO)
        .await
        .reserved()
        .expect("admitted");
    // The provider counts 10 requests in its window where the budget counts 1.
    assert_eq!(store.lower(&budgets[0], 0, 10).await.unwrap(), 9);
    let used = |s: tokengate::store::BudgetSnapshot| (s.limits[0].used, s.limits[1].used);
    assert_eq!(
        used(store.snapshot(&budgets[0]).await.unwrap()),
        (10, 1_000)
    );
    // As many, or fewer: nothing more.
    assert_eq!(store.lower(&budgets[0], 0, 10).await.unwrap(), 0);
    assert_eq!(store.lower(&budgets[0], 0, 4).await.unwrap(), 0);
    // The tokens' bucket: 2,500 counted there, 1,000 held here: 1,500 more, at once.
    assert_eq!(store.lower(&budgets[0], 1, 2_500).await.unwrap(), 1_500);
    assert_eq!(
        used(store.snapshot(&budgets[0]).await.unwrap()),
        (10, 2_500)
    );
    // A limit the policy does not have: nothing.
    assert_eq!(store.lower(&budgets[0], 7, 100).await.unwrap(), 0);
}

/// A reservation settled after its budget was reset and made again under other limits: its
/// use beyond the reservation is charged, under the limits the state follows now.
pub async fn a_settlement_under_other_limits_charges_the_state_it_finds(
    store: &dyn Store,
    clock: &ManualClock,
    prefix: &str,
) {
    clock.set(0);
    let tokens = |algorithm| {
        Policy::builder()
            .limit(
                tokengate::Dimension::InputTokens,
                tokengate::Limit::per_minute(6_000).algorithm(algorithm),
            )
            .margin(Duration::ZERO)
            .build()
            .unwrap()
    };
    let before = one(
        prefix,
        "changed",
        tokens(tokengate::Algorithm::SlidingWindowLog),
    );
    let after = one(prefix, "changed", tokens(tokengate::Algorithm::FixedWindow));
    let cost = Cost::zero().input(100);
    let old = reserve(store, &before, &cost, Duration::ZERO)
        .await
        .reserved()
        .expect("admitted");
    store.reset(before[0].name()).await.unwrap();
    let _new = reserve(store, &after, &cost, Duration::ZERO)
        .await
        .reserved()
        .expect("admitted under the new limits");
    // 300 used of 100 reserved: 200 more, charged to the state as it is now.
    store
        .settle(&old, Some(&Usage::new().input(300)))
        .await
        .unwrap();
    let used = store.snapshot(&after[0]).await.unwrap().limits[0].used;
    assert_eq!(used, 300);
}

pub async fn snapshots_pauses_and_resets(store: &dyn Store, clock: &ManualClock, prefix: &str) {
    clock.set(0);
    let policy = Policy::builder()
        .requests_per_minute(600)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let budgets = one(prefix, "admin", policy);
    let req = Cost::request();
    let _r = reserve(store, &budgets, &req, Duration::ZERO)
        .await
        .reserved()
        .unwrap();
    let snap = store.snapshot(&budgets[0]).await.unwrap();
    assert_eq!(snap.limits[0].used, 1);
    assert_eq!(
        store.snapshot(&budgets[0]).await.unwrap(),
        snap,
        "reading charges nothing"
    );
    let left = store
        .pause(&budgets[0], Duration::from_secs(3), true)
        .await
        .unwrap();
    assert_eq!(left, Duration::from_secs(3));
    let paused = reserve(store, &budgets, &req, Duration::ZERO).await;
    assert_eq!(
        paused.refusal(),
        Some(Refusal::Paused {
            wait: Duration::from_secs(3),
            budget: 0
        })
    );
    // Within a wait that covers the pause, it is reserved at its end.
    let after = reserve(store, &budgets, &req, Duration::from_secs(5))
        .await
        .reserved()
        .unwrap();
    assert_eq!(after.wait(), Duration::from_secs(3));
    store.reset(budgets[0].name()).await.unwrap();
    let fresh = store.snapshot(&budgets[0]).await.unwrap();
    assert_eq!(
        (fresh.limits[0].used, fresh.paused_for),
        (0, Duration::ZERO)
    );
}
