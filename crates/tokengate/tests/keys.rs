//! Keys: a request charged to its model's (or family's) budget and its tenant's together, all or
//! none; arrival order among waiters that a budget holds back, without one tenant's limit
//! holding up another tenant on a shared model; 429s that pause one model; idle budgets
//! dropped without loss, a cap with a shared overflow budget; limits reloaded at run time
//! without losing what is counted; and a property test of all of it against a plain log of
//! admissions checked window by window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tokengate::config::Config;
use tokengate::feedback::ProviderReport;
use tokengate::{
    AcquireError, Clock, Cost, Denied, Dimension, Limiter, ManualClock, TokioClock, Usage,
};

const SEC: u64 = 1_000_000_000;

/// The limits file `text`, its limits exact: with no safety margin (`Limit::margin`), as these
/// tests count exact instants and waits.
fn config(text: &str) -> Config {
    let text = format!("margin = \"0s\"\n{text}");
    Config::from_toml_str(&text, "limits.toml").expect("valid config")
}

/// gpt-4o: 10 requests a second (token bucket, burst 10); tenants: acme 2 a second (burst 2),
/// others 5 a second (burst 5).
const TWO_LEVELS: &str = r#"
    [[models.gpt-4o.limits]]
    dimension = "requests"
    amount = 10
    per = "1s"
    algorithm = "token_bucket"

    [[tenants.acme.limits]]
    dimension = "requests"
    amount = 2
    per = "1s"
    algorithm = "token_bucket"

    [[defaults.tenant.limits]]
    dimension = "requests"
    amount = 5
    per = "1s"
    algorithm = "token_bucket"
"#;

fn manual(text: &str) -> Limiter<ManualClock> {
    Limiter::from_config_with_clock(config(text), ManualClock::new())
}

/// `(budget, used)` of every budget of the key.
fn used(stats: &[tokengate::Stats]) -> Vec<(String, u64)> {
    stats
        .iter()
        .filter(|s| !s.limits.is_empty())
        .map(|s| (s.budget.clone(), s.limits[0].used))
        .collect()
}

#[test]
fn a_request_is_charged_to_its_model_and_its_tenant_together() {
    let limiter = manual(TWO_LEVELS);
    let acme = limiter.key("acme", "gpt-4o");
    let _a = acme.try_acquire(Cost::request()).unwrap();
    let _b = acme.try_acquire(Cost::request()).unwrap();
    assert_eq!(
        used(&acme.stats()),
        [("model gpt-4o".into(), 2), ("tenant acme".into(), 2)]
    );
    // The tenant is out; its denial charges the model nothing.
    let denied = acme.try_acquire(Cost::request()).unwrap_err();
    assert_eq!(denied.wait(), Some(Duration::from_millis(500)));
    assert_eq!(
        used(&acme.stats()),
        [("model gpt-4o".into(), 2), ("tenant acme".into(), 2)]
    );
    // Another tenant still gets the model's room.
    let globex = limiter.key("globex", "gpt-4o");
    for _ in 0..5 {
        std::mem::forget(globex.try_acquire(Cost::request()).unwrap());
    }
    assert_eq!(
        used(&globex.stats()),
        [("model gpt-4o".into(), 7), ("tenant globex".into(), 5)]
    );
    // The limiter's own stats count every request.
    assert_eq!(limiter.stats().admitted, 7);
    assert_eq!(limiter.stats().denied, 1);
}

#[test]
fn a_model_denial_names_the_model_limit_and_charges_no_tenant() {
    let limiter = manual(TWO_LEVELS);
    let others: Vec<_> = (0..10)
        .map(|i| {
            let key = limiter.key(&format!("t{}", i % 5), "gpt-4o");
            key.try_acquire(Cost::request()).unwrap()
        })
        .collect();
    let key = limiter.key("acme", "gpt-4o");
    match key.try_acquire(Cost::request()) {
        Err(Denied::RateLimited {
            dimension, wait, ..
        }) => {
            assert_eq!(dimension, Dimension::Requests);
            assert_eq!(wait, Duration::from_millis(100));
        }
        other => panic!("expected the model to deny, got {other:?}"),
    }
    assert_eq!(used(&key.stats())[1], ("tenant acme".into(), 0));
    drop(others);
}

#[test]
fn names_the_config_does_not_cover_add_no_budget() {
    let text = "unlisted_models = \"pass\"\n[models.gpt-4o]\nrequests_per_minute = 60";
    let limiter = manual(text);
    // Passed through by choice, no tenant policy: only what is configured applies.
    let key = limiter.key("acme", "some-other-model");
    for _ in 0..100 {
        drop(key.try_acquire(Cost::request()).unwrap());
    }
    assert_eq!(key.stats().len(), 1); // the limiter's own only
    let gpt = limiter.key("acme", "GPT-4o"); // model names ignore case
    drop(gpt.try_acquire(Cost::request()).unwrap());
    assert!(gpt.try_acquire(Cost::request()).is_err());
}

/// A model the file does not cover, where it lists models and has no default: refused, by every
/// way of acquiring, with the model, the closest name and what to add; never admitted with no
/// model limit. The account's limits are untouched by the refusal.
#[tokio::test(start_paused = true)]
async fn a_model_the_file_does_not_cover_is_refused_everywhere() {
    let text = "[account]\nrequests_per_minute = 6000\n[models.gpt-4o]\nrequests_per_minute = 60\n\
                [families.mini]\nmatch = [\"gpt-4o-mini-*\"]\nrequests_per_minute = 60";
    let limiter = tokio_limiter(text);
    let key = limiter.key("acme", "gpt4o");
    let refused = |e: &AcquireError| {
        matches!(e, AcquireError::UnknownModel { model, suggestion, .. }
            if model == "gpt4o" && suggestion.as_deref() == Some("gpt-4o"))
    };
    let Err(Denied::Never(e)) = key.try_acquire(Cost::request()) else {
        panic!("admitted a model the file does not cover");
    };
    assert!(refused(&e), "{e:?}");
    assert_eq!(
        e.to_string(),
        "model \"gpt4o\" is not in limits.toml (did you mean \"gpt-4o\"?): add [models.\"gpt4o\"] \
         (or a family whose `match` covers it, or [defaults.model]), or set \
         `unlisted_models = \"pass\"` to charge it to the account and tenant budgets only; \
         listed: gpt-4o, family mini"
    );
    assert!(matches!(
        key.try_admit(Cost::request()),
        Err(Denied::Never(_))
    ));
    assert!(refused(&key.acquire(Cost::request()).await.unwrap_err()));
    assert!(refused(
        &key.acquire_timeout(Cost::request(), Duration::from_secs(1))
            .await
            .unwrap_err()
    ));
    assert!(refused(&key.acquire_blocking(Cost::request()).unwrap_err()));
    let body =
        serde_json::json!({"model": "gpt4o", "messages": [{"role": "user", "content": "hi"}]});
    let mut called = false;
    let run = key
        .run(&body, |_| {
            called = true;
            async { serde_json::Value::Null }
        })
        .await;
    assert!(refused(&run.unwrap_err()));
    assert!(!called, "the call was made");
    // Nothing was charged anywhere; every refusal counted on the limiter's own budget.
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.limits[0].used), (0, 0));
    assert_eq!(stats.rejected, 6);
    // Listed names, names a family covers, and names in any case still go.
    for model in ["gpt-4o", "GPT-4o", "gpt-4o-mini-2024-07-18"] {
        let decided = limiter.key("acme", model).try_acquire(Cost::request());
        assert!(!matches!(decided, Err(Denied::Never(_))), "{model}");
    }
    // A request with no model at all is the account's.
    assert!(limiter.tenant("acme").try_acquire(Cost::request()).is_ok());
    // What the provider says of a refused model lands nowhere: not on the account.
    let typo = limiter.key("acme", "gpt4o");
    typo.pause(Duration::from_secs(60));
    typo.observe_throttled(&ProviderReport::from_headers(
        [
            ("retry-after", "30"),
            ("x-ratelimit-remaining-requests", "0"),
        ],
        SystemTime::now(),
    ));
    let account = limiter.stats();
    assert_eq!((account.paused_for, account.throttled), (None, 0));
    assert_eq!(
        account.limits[0].amount,
        account.limits[0].configured_amount
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(limiter
        .key("acme", "gpt-4o")
        .try_acquire(Cost::request())
        .is_ok());
}

/// A file that limits no model (only the account) passes every model: nothing to refuse it for.
#[test]
fn a_file_without_model_limits_passes_every_model() {
    let limiter = manual("[account]\nrequests_per_minute = 60");
    assert!(limiter
        .model("anything")
        .try_acquire(Cost::request())
        .is_ok());
    let limiter =
        manual("[defaults.model]\nrequests_per_minute = 60\n[models.a]\nrequests_per_minute = 5");
    assert!(limiter.model("b").try_acquire(Cost::request()).is_ok());
}

#[test]
fn a_family_is_one_budget_for_all_its_models() {
    let limiter = manual(
        r#"
        [families.mini]
        match = ["gpt-4o-mini*"]
        requests_per_minute = 120
        "#,
    );
    drop(
        limiter
            .model("gpt-4o-mini")
            .try_acquire(Cost::request())
            .unwrap(),
    );
    drop(
        limiter
            .model("gpt-4o-mini-2024-07-18")
            .try_acquire(Cost::request())
            .unwrap(),
    );
    // Burst 2 (ceil(120 / 60)): the family is spent for both names.
    assert!(limiter
        .model("gpt-4o-mini")
        .try_acquire(Cost::request())
        .is_err());
    let stats = limiter.model("gpt-4o-mini-x").stats();
    assert_eq!(stats[1].budget, "family mini");
    assert_eq!(stats[1].admitted, 2);
}

#[test]
fn a_429_pauses_the_model_not_the_others() {
    let limiter = manual(
        r#"
        [models.gpt-4o]
        requests_per_minute = 600
        [models.gpt-4o-mini]
        requests_per_minute = 600
        "#,
    );
    let report = ProviderReport::from_headers([("retry-after", "2")], SystemTime::now());
    limiter.key("acme", "gpt-4o").observe_throttled(&report);
    let denied = limiter
        .model("gpt-4o")
        .try_acquire(Cost::request())
        .unwrap_err();
    assert_eq!(
        denied,
        Denied::Paused {
            wait: Duration::from_secs(2)
        }
    );
    assert!(limiter
        .model("gpt-4o-mini")
        .try_acquire(Cost::request())
        .is_ok());
    assert_eq!(limiter.model("gpt-4o").stats()[1].throttled, 1);
    assert_eq!(limiter.stats().throttled, 1);
    limiter.clock().advance(Duration::from_secs(2));
    assert!(limiter.model("gpt-4o").try_acquire(Cost::request()).is_ok());
}

#[test]
fn provider_remaining_lowers_the_model_budget() {
    let limiter = manual("[models.gpt-4o]\nrequests_per_minute = 500");
    let key = limiter.key("acme", "gpt-4o");
    let _p = key.try_acquire(Cost::request()).unwrap();
    let report = ProviderReport::from_headers(
        [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "480"),
        ],
        SystemTime::now(),
    );
    assert_eq!(key.observe(&report), 19);
    assert_eq!(key.stats()[1].limits[0].used, 20);
}

#[test]
fn idle_budgets_are_dropped_and_busy_ones_kept_with_their_state() {
    let limiter = manual(TWO_LEVELS);
    for i in 0..50 {
        drop(
            limiter
                .key(&format!("t{i}"), "gpt-4o")
                .try_acquire(Cost::zero()),
        );
    }
    // Fifty tenants and the model, none charged (zero costs peek): all idle.
    assert_eq!(limiter.budgets(), 52);
    assert_eq!(limiter.evict_idle(), 51);
    assert_eq!(limiter.budgets(), 1);

    let held = limiter
        .key("acme", "gpt-4o")
        .try_acquire(Cost::request())
        .unwrap();
    let _spent = limiter
        .key("globex", "gpt-4o")
        .try_acquire(Cost::request())
        .unwrap()
        .into_owned();
    drop(held);
    // Both tenants' buckets are still draining: nothing is idle.
    assert_eq!(limiter.evict_idle(), 0);
    limiter.clock().advance(Duration::from_secs(1));
    // Refilled: acme is idle now; the model and globex are pinned by globex's permit.
    assert_eq!(limiter.evict_idle(), 1);
    let stats = limiter.all_stats();
    let names: Vec<&str> = stats.iter().map(|s| s.budget.as_str()).collect();
    assert_eq!(names, ["limiter", "model gpt-4o", "tenant globex"]);
}

#[test]
fn a_dropped_budget_comes_back_as_it_was() {
    // Replaying a schedule with eviction after every step gives the same decisions as without.
    let run = |evict: bool| {
        let limiter = manual(TWO_LEVELS);
        let mut decisions = Vec::new();
        for step in 0..400u64 {
            let tenant = ["acme", "globex", "initech"][(step % 3) as usize];
            let d = limiter.key(tenant, "gpt-4o").try_acquire(Cost::request());
            decisions.push(d.map(|p| p.admitted_at()).map_err(|e| e.wait()));
            limiter
                .clock()
                .advance(Duration::from_millis(37 + step % 50));
            if evict {
                limiter.evict_idle();
            }
        }
        decisions
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn past_the_cap_new_tenants_share_one_overflow_budget() {
    // A model the file does not cover passes, so that tenants alone are counted.
    let limiter = manual(&format!("unlisted_models = \"pass\"\n{TWO_LEVELS}"));
    limiter.set_max_keys(3);
    let held: Vec<_> = ["t1", "t2", "t3"]
        .iter()
        .map(|t| {
            limiter
                .key(t, "other-model")
                .try_acquire(Cost::request())
                .unwrap()
        })
        .collect();
    // t4 and t5 share the overflow budget: 5 a second between them (the default), never
    // unlimited, never nothing.
    let mut admitted = 0;
    for i in 0..20 {
        let t = if i % 2 == 0 { "t4" } else { "t5" };
        if let Ok(p) = limiter.key(t, "other-model").try_acquire(Cost::request()) {
            std::mem::forget(p);
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    let stats = limiter.key("t4", "other-model").stats();
    assert_eq!(stats[1].budget, "tenant (overflow)");
    // Tenants with a budget keep it.
    assert_eq!(
        limiter.key("t1", "other-model").stats()[1].budget,
        "tenant t1"
    );
    drop(held);
}

#[test]
fn reload_keeps_what_is_counted() {
    let limiter = manual(TWO_LEVELS);
    let acme = limiter.key("acme", "gpt-4o");
    let _a = acme.try_acquire(Cost::request()).unwrap();
    let _b = acme.try_acquire(Cost::request()).unwrap();
    assert!(acme.try_acquire(Cost::request()).is_err());
    // acme is raised to 4 a second; the model is unchanged.
    limiter.reload(config(&TWO_LEVELS.replace(
        "amount = 2\n    per = \"1s\"",
        "amount = 4\n    per = \"1s\"",
    )));
    let stats = acme.stats();
    assert_eq!(stats[2].limits[0].amount, 4);
    assert_eq!(stats[2].limits[0].used, 2); // still counted
    assert_eq!(stats[1].limits[0].used, 2); // the model's state kept exactly
    let _c = acme.try_acquire(Cost::request()).unwrap();
    let _d = acme.try_acquire(Cost::request()).unwrap();
    assert!(acme.try_acquire(Cost::request()).is_err());
}

/// A reload that changes an amount moves nothing: each admission stays in the window where
/// it was, and the bucket keeps the units it holds, draining at the new rate.
#[test]
fn a_reload_keeps_each_admission_where_it_was() {
    let clock = ManualClock::new();
    let limiter = Limiter::from_config_with_clock(
        config("[models.m]\nrequests_per_minute = 2\n"),
        clock.clone(),
    );
    let m = limiter.model("m");
    // 2 a minute: one every 30 s (a burst of one).
    drop(m.try_acquire(Cost::request()).unwrap());
    clock.advance(Duration::from_secs(30));
    drop(m.try_acquire(Cost::request()).unwrap());
    clock.advance(Duration::from_secs(10));
    // At 40 s, raised to 3 a minute: one every 20 s. The bucket holds what is left of the
    // request at 30 s (20 s at the old pace, a unit, 20 s at the new one): full again at 60 s.
    limiter.reload(config("[models.m]\nrequests_per_minute = 3\n"));
    assert_eq!(m.stats()[1].limits[0].used, 2);
    clock.advance(Duration::from_secs(20) - Duration::from_nanos(1));
    assert!(m.try_acquire(Cost::request()).is_err());
    clock.advance(Duration::from_nanos(1));
    // At 60 s the request at 0 leaves the window: 2 in it with this one, of 3. Counted afresh
    // at 40 s, the window would hold 3 until 100 s.
    drop(m.try_acquire(Cost::request()).unwrap());
    assert_eq!(m.stats()[1].limits[0].used, 2);
}

#[test]
fn blocking_acquire_on_a_key() {
    let limiter = Limiter::from_config(config(TWO_LEVELS));
    let key = limiter.key("acme", "gpt-4o");
    let start = std::time::Instant::now();
    for _ in 0..3 {
        drop(key.acquire_blocking(Cost::request()).unwrap());
    }
    // The third waits for acme's bucket: about half a second (generous bounds).
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let err = key
        .acquire_blocking_timeout(Cost::request().with_requests(3), Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, AcquireError::Exceeds { .. }), "{err:?}");
}

fn tokio_limiter(text: &str) -> Limiter<TokioClock> {
    Limiter::from_config_with_clock(config(text), TokioClock::new())
}

#[tokio::test(start_paused = true)]
async fn waiters_on_a_shared_model_are_admitted_in_arrival_order() {
    let limiter = Arc::new(tokio_limiter(
        r#"
        [[models.gpt-4o.limits]]
        dimension = "requests"
        amount = 10
        per = "1s"
        algorithm = "token_bucket"
        burst = 1
        [defaults.tenant]
        requests_per_minute = 6000
        "#,
    ));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let limiter = Arc::clone(&limiter);
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let tenant = format!("t{}", i % 4);
            let permit = limiter
                .key(&tenant, "gpt-4o")
                .acquire(Cost::request())
                .await
                .unwrap();
            order.lock().unwrap().push((i, permit.admitted_at()));
        }));
        tokio::task::yield_now().await; // arrive in order
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let ids: Vec<u64> = order.iter().map(|&(i, _)| i).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    // Exactly one every 100 ms.
    for (n, &(_, at)) in order.iter().enumerate() {
        assert_eq!(at - order[0].1, n as u64 * SEC / 10);
    }
}

#[tokio::test(start_paused = true)]
async fn one_tenant_over_its_limit_does_not_hold_up_another_on_the_model() {
    let limiter = Arc::new(tokio_limiter(TWO_LEVELS));
    let start = limiter.clock().now();
    // acme queues 10 requests: its own limit (2 a second) holds them back for seconds.
    let mut acme = Vec::new();
    for _ in 0..10 {
        let limiter = Arc::clone(&limiter);
        acme.push(tokio::spawn(async move {
            limiter
                .key("acme", "gpt-4o")
                .acquire(Cost::request())
                .await
                .map(|p| p.admitted_at())
        }));
        tokio::task::yield_now().await;
    }
    // globex arrives after them and has its own room: admitted at once, not after acme's.
    let p = limiter
        .key("globex", "gpt-4o")
        .acquire(Cost::request())
        .await
        .unwrap();
    assert_eq!(p.admitted_at(), start);
    drop(p);
    let mut times = Vec::new();
    for t in acme {
        times.push(t.await.unwrap().unwrap() - start);
    }
    // acme: 2 at once, then one every 500 ms, in order.
    let expected: Vec<u64> = (0..10u64).map(|i| i.saturating_sub(1) * SEC / 2).collect();
    assert_eq!(times, expected);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_while_queued_gives_everything_back() {
    let limiter = Arc::new(tokio_limiter(TWO_LEVELS));
    let key = limiter.key("acme", "gpt-4o");
    let _a = key.acquire(Cost::request()).await.unwrap();
    let _b = key.acquire(Cost::request()).await.unwrap();
    let waiting =
        tokio::time::timeout(Duration::from_millis(100), key.acquire(Cost::request())).await;
    assert!(waiting.is_err());
    let stats = key.stats();
    assert_eq!(stats[0].cancelled, 1);
    assert_eq!(stats[0].waiters, 0);
    // Nothing charged for the cancelled one; the model (10 a second) refilled one in 100 ms.
    assert_eq!(
        used(&stats),
        [("model gpt-4o".into(), 1), ("tenant acme".into(), 2)]
    );
    // The budgets are not pinned by the cancelled waiter: once refilled, they are idle.
    drop((_a, _b));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(limiter.evict_idle(), 2);
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Op {
    Acquire {
        tenant: u8,
        model: u8,
        tokens: u64,
    },
    Settle {
        index: usize,
        used: u64,
    },
    Drop {
        index: usize,
    },
    Advance {
        ms: u64,
    },
    Evict,
    /// Puts the raised config in force (or back to the first).
    Reload {
        raised: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..3u8, 0..400u64).prop_map(|(tenant, model, tokens)| Op::Acquire { tenant, model, tokens }),
        2 => (any::<usize>(), 0..600u64).prop_map(|(index, used)| Op::Settle { index, used }),
        1 => any::<usize>().prop_map(|index| Op::Drop { index }),
        3 => (1..3_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Evict),
        1 => any::<bool>().prop_map(|raised| Op::Reload { raised }),
    ]
}

/// Models 0 and 1 in one family (10 requests and 1,000 input tokens per 10 s, smooth
/// window), model 2 on its own (5 per 10 s, sliding log); tenants 0-1 listed (4 per 10 s),
/// 2-3 under the default (3 per 10 s, fixed window).
const PROPERTY: &str = r#"
    [families.f]
    match = ["m0", "m1"]
    [[families.f.limits]]
    dimension = "requests"
    amount = 10
    per = "10s"
    [[families.f.limits]]
    dimension = "input_tokens"
    amount = 1000
    per = "10s"
    [[models.m2.limits]]
    dimension = "requests"
    amount = 5
    per = "10s"
    algorithm = "sliding_window_log"
    [[tenants.t0.limits]]
    dimension = "requests"
    amount = 4
    per = "10s"
    [[tenants.t1.limits]]
    dimension = "requests"
    amount = 4
    per = "10s"
    [[defaults.tenant.limits]]
    dimension = "requests"
    amount = 3
    per = "10s"
    algorithm = "fixed_window"
"#;

/// `PROPERTY` with every limit raised, and model `m2` listed in capitals (model names ignore
/// case): the family 12 per 10 s, m2 7, tenants t0-t1 6, the default 5.
fn raised() -> String {
    PROPERTY
        .replace(
            "amount = 10\n    per = \"10s\"",
            "amount = 12\n    per = \"10s\"",
        )
        .replace(
            "[[models.m2.limits]]\n    dimension = \"requests\"\n    amount = 5",
            "[[models.M2.limits]]\n    dimension = \"requests\"\n    amount = 7",
        )
        .replace("amount = 4", "amount = 6")
        .replace("amount = 3", "amount = 5")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the schedule (acquires on random keys, settlements, drops, time, evictions,
    /// reloads), each budget's admissions stay within its limit in every window: a request is
    /// counted against both of its budgets, a budget dropped while idle comes back with
    /// nothing forgotten, and a reload carries what is counted over.
    #[test]
    fn budgets_never_over_admit(ops in proptest::collection::vec(op(), 1..120)) {
        let limiter = manual(PROPERTY);
        let clock = limiter.clock().clone();
        let mut permits = Vec::new();
        // Admissions per budget: (time, input tokens).
        let mut log: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        let mut admitted = 0u64;
        for op in ops {
            match op {
                Op::Acquire { tenant, model, tokens } => {
                    let (t, m) = (format!("t{tenant}"), format!("m{model}"));
                    let key = limiter.key(&t, &m);
                    if let Ok(p) = key.try_acquire(Cost::request().input(tokens)) {
                        admitted += 1;
                        let family = if model < 2 { "f".to_string() } else { m.clone() };
                        log.entry(family).or_default().push((p.admitted_at(), tokens));
                        log.entry(t).or_default().push((p.admitted_at(), 0));
                        permits.push((p, model < 2));
                    }
                }
                Op::Settle { index, used } if !permits.is_empty() => {
                    let (p, _) = permits.swap_remove(index % permits.len());
                    p.settle(Usage::new().input(used));
                }
                Op::Drop { index } if !permits.is_empty() => {
                    drop(permits.swap_remove(index % permits.len()));
                }
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
                Op::Evict => { limiter.evict_idle(); }
                Op::Reload { raised: up } => {
                    let text = if up { raised() } else { PROPERTY.to_owned() };
                    limiter.reload(config(&text));
                }
                _ => {}
            }
        }
        prop_assert_eq!(limiter.stats().admitted, admitted);
        // The higher of the two configs' figures: a window that spans a reload may hold what
        // was admitted under either, never more (what is counted is carried over).
        let caps: HashMap<&str, u64> =
            [("f", 12), ("m2", 7), ("t0", 6), ("t1", 6), ("t2", 5), ("t3", 5)].into();
        for (budget, entries) in &log {
            let cap = caps[budget.as_str()];
            let window = if budget.starts_with("t2") || budget.starts_with("t3") {
                // A fixed window admits up to 2N across a boundary; check its aligned windows.
                None
            } else {
                Some(10 * SEC)
            };
            for (i, &(t, _)) in entries.iter().enumerate() {
                let in_window = match window {
                    Some(w) => entries[..=i].iter().filter(|&&(u, _)| u + w > t).count(),
                    None => entries[..=i].iter().filter(|&&(u, _)| u / (10 * SEC) == t / (10 * SEC)).count(),
                } as u64;
                prop_assert!(in_window <= cap, "{} admitted {} in a window at {}", budget, in_window, t);
            }
        }
    }
}

/// gpt-4o: 100,000 tokens a minute (input and output combined); tenants 20,000.
const TOKENS: &str = r#"
    [models.gpt-4o]
    tokens_per_minute = 100_000
    [defaults.tenant]
    tokens_per_minute = 20_000
"#;

#[tokio::test(start_paused = true)]
async fn run_prices_the_request_and_settles_from_the_reply() {
    let limiter = tokio_limiter(TOKENS);
    let key = limiter.key("acme", "gpt-4o");
    let request = serde_json::json!({"model": "gpt-4o", "max_tokens": 2_000,
        "messages": [{"role": "user", "content": "Write a haiku about rate limits."}]});
    let expected = tokengate::estimate::ChatRequest::from_value(None, &request)
        .unwrap()
        .cost(&limiter.estimator());
    assert_eq!(expected.output_tokens(), 2_000);
    let seen = Arc::new(Mutex::new(None));
    let reply = key
        .run(&request, |_req| {
            let seen = Arc::clone(&seen);
            let limiter = &limiter;
            async move {
                // While the call runs, the whole estimate is reserved on both budgets.
                *seen.lock().unwrap() = Some(limiter.key("acme", "gpt-4o").stats());
                Ok::<_, String>(serde_json::json!({"object": "chat.completion",
                    "usage": {"prompt_tokens": 14, "completion_tokens": 17}}))
            }
        })
        .await
        .unwrap();
    assert!(reply.is_ok());
    let during = seen.lock().unwrap().take().unwrap();
    let reserved = expected.input_tokens() + 2_000;
    assert_eq!(
        used(&during),
        [
            ("model gpt-4o".into(), reserved),
            ("tenant acme".into(), reserved)
        ]
    );
    // Settled as OpenAI counts: the prompt as the reply says (14), the 2,000 reserved for
    // output kept (it charges max_tokens and gives nothing back).
    assert_eq!(
        used(&key.stats()),
        [
            ("model gpt-4o".into(), 2_014),
            ("tenant acme".into(), 2_014)
        ]
    );
}

/// With an estimator that learns input counts, `run` teaches it what each reply says the
/// provider counted, for requests the estimator priced.
#[tokio::test(start_paused = true)]
async fn run_teaches_a_learning_estimator_the_input_counted() {
    let limiter = tokio_limiter("[models.claude-x]\ninput_tokens_per_minute = 100_000");
    limiter.set_estimator(
        tokengate::estimate::Estimator::builder()
            .learn_input(tokengate::estimate::InputLearning::new().min_observations(1))
            .build()
            .unwrap(),
    );
    // A model without a tokenizer here: its input is the heuristic's.
    let request = serde_json::json!({"model": "claude-x", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Write a haiku about rate limits, please."}]});
    let estimated = limiter.estimator().count_chat(
        "claude-x",
        &[tokengate::estimate::ChatMessage::user(
            "Write a haiku about rate limits, please.",
        )],
    );
    let half = estimated.tokens / 2;
    let reply = limiter
        .model("claude-x")
        .run(&request, |_| async move {
            serde_json::json!({"type": "message",
                "usage": {"input_tokens": half, "output_tokens": 3}})
        })
        .await
        .unwrap();
    assert_eq!(reply["usage"]["output_tokens"], 3);
    let stats = limiter
        .estimator()
        .input_stats("claude-x")
        .expect("observed");
    assert!(
        stats.trusted && (0.4..=0.5).contains(&stats.factor),
        "{stats:?}"
    );
    // Input read from the prompt cache counts as input too (the provider counted the prompt),
    // though it is not charged: all of it from the cache leaves the factor at 1.
    let full = estimated.tokens;
    limiter.reload(config(
        "[models.claude-x]\ninput_tokens_per_minute = 100_000\n\
         [models.claude-y]\ninput_tokens_per_minute = 100_000",
    ));
    let request = serde_json::json!({"model": "claude-y", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Write a haiku about rate limits, please."}]});
    limiter
        .model("claude-y")
        .run(&request, |_| async move {
            serde_json::json!({"type": "message", "usage": {"input_tokens": 0,
                "cache_read_input_tokens": full, "output_tokens": 3}})
        })
        .await
        .unwrap();
    let stats = limiter
        .estimator()
        .input_stats("claude-y")
        .expect("observed");
    assert!((0.99..=1.01).contains(&stats.factor), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn run_keeps_the_reservation_of_a_failed_call_and_refuses_the_impossible() {
    let limiter = tokio_limiter(TOKENS);
    let key = limiter.key("acme", "gpt-4o");
    let request = serde_json::json!({"model": "claude-x", "system": "Be brief.", "max_tokens": 500,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
    let reply = key
        .run(&request, |_| async {
            Err::<serde_json::Value, _>("connection reset")
        })
        .await
        .unwrap();
    assert!(reply.is_err());
    let used_now = used(&key.stats());
    assert!(used_now[1].1 > 500, "{used_now:?}"); // the whole reservation stands
    assert_eq!(key.stats()[0].settled, 0);
    // More than the tenant could ever admit: fails at once, the call is never made.
    let huge = serde_json::json!({"model": "gpt-4o", "max_tokens": 50_000, "messages": []});
    let err = key
        .run(&huge, |_| async {
            panic!("not called") as Result<serde_json::Value, ()>
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AcquireError::Exceeds {
                capacity: 20_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_serves_the_waiters_under_the_new_limits() {
    let limiter = Arc::new(tokio_limiter(TWO_LEVELS));
    let start = limiter.clock().now();
    let key = limiter.key("acme", "gpt-4o");
    let _a = key.acquire(Cost::request()).await.unwrap();
    let _b = key.acquire(Cost::request()).await.unwrap();
    // acme (2 a second) is spent: the next waits 500 ms under the old limits.
    let waiter = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move {
            let p = limiter
                .key("acme", "gpt-4o")
                .acquire(Cost::request())
                .await
                .unwrap();
            p.admitted_at()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(limiter.stats().waiters, 1);
    // Raised to 20 a second (burst 20): the waiter fits at once.
    limiter.reload(config(&TWO_LEVELS.replace(
        "amount = 2\n    per = \"1s\"",
        "amount = 20\n    per = \"1s\"",
    )));
    let admitted_at = waiter.await.unwrap();
    assert_eq!(admitted_at - start, 100_000_000);
}

#[test]
fn the_account_limits_every_request_whatever_its_model() {
    let limiter = manual(
        r#"
        [account]
        requests_per_minute = 120   # paced at 2 a second, burst 2
        [defaults.model]
        requests_per_minute = 600
        "#,
    );
    let _a = limiter
        .model("gpt-4o")
        .try_acquire(Cost::request())
        .unwrap();
    let _b = limiter
        .model("gpt-4o-mini")
        .try_acquire(Cost::request())
        .unwrap();
    // Each model has room; the account does not.
    let denied = limiter
        .key("acme", "o3")
        .try_acquire(Cost::request())
        .unwrap_err();
    assert_eq!(denied.wait(), Some(Duration::from_millis(500)));
    let stats = limiter.stats();
    assert_eq!(
        (stats.budget.as_str(), stats.limits[0].used),
        ("limiter", 2)
    );
    // A reload without [account] lifts it; the models' budgets keep their counts.
    limiter.reload(config("[defaults.model]\nrequests_per_minute = 600"));
    assert!(limiter.stats().limits.is_empty());
    assert!(limiter
        .key("acme", "o3")
        .try_acquire(Cost::request())
        .is_ok());
    assert_eq!(limiter.model("gpt-4o").stats()[1].limits[0].used, 1);
}

#[test]
fn a_reload_keeps_a_models_count_whatever_the_spelling_of_its_name() {
    // Under the defaults, then listed in capitals (model names ignore case).
    let limiter = manual("[defaults.model]\nrequests_per_minute = 2");
    let m = limiter.model("gpt-4o");
    let _a = m.try_acquire(Cost::request()).unwrap();
    assert!(m.try_acquire(Cost::request()).is_err());
    limiter.reload(config("[models.GPT-4o]\nrequests_per_minute = 2"));
    let stats = m.stats();
    assert_eq!(
        (stats[1].budget.as_str(), stats[1].limits[0].used),
        ("model GPT-4o", 1)
    );
    assert!(m.try_acquire(Cost::request()).is_err());
    // And back under the defaults.
    limiter.reload(config("[defaults.model]\nrequests_per_minute = 2"));
    assert_eq!(m.stats()[1].limits[0].used, 1);
    assert!(m.try_acquire(Cost::request()).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_grant_taken_back_after_an_unchanged_reload_gives_everything_back() {
    let text = "[models.m]\nrequests_per_minute = 60\ninput_tokens_per_minute = 1000";
    let limiter = tokio_limiter(text);
    let m = limiter.model("m");
    let first = m.try_acquire(Cost::request().input(100)).unwrap();
    // Queued behind the request limit (one a second).
    let mut waiting = Box::pin(m.acquire(Cost::request().input(500)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(std::future::Future::poll(waiting.as_mut(), &mut cx).is_pending());
    drop(first);
    tokio::time::advance(Duration::from_secs(1)).await;
    limiter.reload(config(text)); // serves the queue: granted on its behalf
    limiter.reload(config(text)); // the same limits again: nothing changes
    drop(waiting); // never picked up: the grant is taken back
    let stats = m.stats();
    assert_eq!(stats[1].limits[1].used, 100);
    assert_eq!(stats[0].admitted, 1);
}

/// `Key::try_admit` is `try_acquire` with the permit dropped at once: on two limiters of one
/// config (a model capped at one request in flight, 3 requests per 3 s; a tenant's 100 input
/// tokens a second), one admits through
/// `try_admit` and the other through `try_acquire` + drop, step by step; every answer and
/// every budget's stats must be the same, and `try_admit` never leaves a slot held.
#[test]
fn key_try_admit_is_try_acquire_with_the_permit_dropped() {
    const CAPPED: &str = r#"
        [models.gpt-4o]
        max_in_flight = 1
        [[models.gpt-4o.limits]]
        dimension = "requests"
        amount = 3
        per = "3s"
        algorithm = "token_bucket"
        [[tenants.acme.limits]]
        dimension = "input_tokens"
        amount = 100
        per = "1s"
        algorithm = "token_bucket"
    "#;
    let (a, b) = (manual(CAPPED), manual(CAPPED));
    let (ka, kb) = (a.key("acme", "gpt-4o"), b.key("acme", "gpt-4o"));
    let same = |step: &str| {
        assert_eq!(a.all_stats(), b.all_stats(), "stats after {step}");
    };
    let admit = |cost: Cost, step: &str| {
        let ra = ka.try_admit(cost.clone());
        let rb = kb.try_acquire(cost).map(drop);
        assert_eq!(ra, rb, "{step}");
        same(step);
        ra
    };
    assert_eq!(admit(Cost::request().input(40), "first"), Ok(()));
    assert_eq!(a.all_stats()[1].in_flight, 0, "try_admit holds no slot");
    // A held permit fills the model's cap: both deny for it, and neither takes the tenant's
    // tokens.
    let (pa, pb) = (
        ka.try_acquire(Cost::request()).expect("admitted"),
        kb.try_acquire(Cost::request()).expect("admitted"),
    );
    let full = admit(Cost::request().input(10), "cap full");
    assert!(
        matches!(full, Err(Denied::InFlightFull { max: 1 })),
        "{full:?}"
    );
    drop((pa, pb));
    same("permits dropped");
    // The tenant's tokens, then the model's requests, run out.
    assert!(matches!(
        admit(Cost::request().input(70), "tenant out of tokens"),
        Err(Denied::RateLimited { .. })
    ));
    assert_eq!(admit(Cost::request().input(60), "third request"), Ok(()));
    assert!(matches!(
        admit(Cost::request(), "model out of requests"),
        Err(Denied::RateLimited { .. })
    ));
    a.clock().advance(Duration::from_secs(1));
    b.clock().advance(Duration::from_secs(1));
    assert_eq!(admit(Cost::request().input(100), "a second later"), Ok(()));
    assert!(a.all_stats().iter().all(|s| s.in_flight == 0));
}
