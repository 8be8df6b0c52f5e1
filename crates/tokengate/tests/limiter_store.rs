//! The limiter's front ends on a store (`Limiter::with_store`): the same calls deciding on a
//! `MemoryStore`, on tokio's paused clock (the store reads it through a `TokioClock`), so
//! every wait is exact and each test bounded in virtual time. What is checked: admission and
//! settlement through the store, two limiters sharing one store's limits, timeouts,
//! cancellation, the in-flight cap (polled, leases renewed), unknown models, the synchronous
//! and blocking calls, what a failing store leads to, provider pauses shared, reloads, and the
//! reqwest middleware, the tower layer and `Key::run` unchanged on a store-backed limiter.
//!
//! Run: `cargo test -p tokengate --test limiter_store` (with `--features reqwest,tower` for
//! the middleware's and the layer's tests).
#![cfg(all(feature = "config", feature = "tokio"))]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokengate::config::Config;
use tokengate::store::{
    Answer, Ask, BudgetSnapshot, MemoryStore, Reservation, Store, StoreBudget, StoreError,
    StoreFuture,
};
use tokengate::{
    AcquireError, Cost, Denied, Dimension, Limiter, OnStoreError, Policy, TokioClock, Usage,
};
use tokio::time::Instant;

type Shared = Arc<MemoryStore<TokioClock>>;

/// A bound on every test, in virtual time: a test that hangs fails here.
async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3_600), test)
        .await
        .expect("the test ends within its bound")
}

/// A store on tokio's clock.
fn store() -> Shared {
    Arc::new(MemoryStore::with_clock(TokioClock::new()))
}

/// One request a second, burst 1 (the smooth window of 60 a minute), exact instants.
fn one_a_second() -> Policy {
    Policy::builder()
        .requests_per_minute(60)
        .margin(Duration::ZERO)
        .build()
        .unwrap()
}

fn limiter(policy: Policy, store: &Shared) -> Limiter<TokioClock> {
    Limiter::with_clock(policy, TokioClock::new()).with_store(Arc::clone(store))
}

/// Lets the tasks the limiter spawned (settlements, pauses) run.
async fn let_tasks_run() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

async fn snapshot(store: &Shared, name: &str, policy: &Policy) -> BudgetSnapshot {
    store
        .snapshot(&StoreBudget::new(name, policy.clone()))
        .await
        .unwrap()
}

/// 600 requests and 60,000 output tokens a minute, exact instants; `cap` slots if given.
fn requests_and_output(cap: Option<u64>) -> Policy {
    let builder = Policy::builder()
        .requests_per_minute(600)
        .output_tokens_per_minute(60_000)
        .margin(Duration::ZERO);
    match cap {
        Some(cap) => builder.max_in_flight(cap),
        None => builder,
    }
    .build()
    .unwrap()
}

/// A limiter on `store` and its permit for a request and 800 output tokens, charged there.
async fn holding_800(
    store: &Shared,
    policy: &Policy,
) -> (Limiter<TokioClock>, tokengate::Permit<'static, TokioClock>) {
    let limiter = limiter(policy.clone(), store);
    let permit = limiter
        .acquire_owned(Cost::request().output(800))
        .await
        .unwrap();
    let held = snapshot(store, "account", policy).await;
    assert_eq!((held.limits[0].used, held.limits[1].used), (1, 800));
    (limiter, permit)
}

#[tokio::test(start_paused = true)]
async fn an_acquisition_is_admitted_and_settled_through_the_store() {
    within(async {
        let (store, policy) = (store(), requests_and_output(None));
        let (limiter, permit) = holding_800(&store, &policy).await;
        permit.settle(Usage::new().output(300));
        let_tasks_run().await;
        let settled = snapshot(&store, "account", &policy).await;
        assert_eq!((settled.limits[0].used, settled.limits[1].used), (1, 300));
        assert_eq!(
            limiter.store_stats().calls,
            2,
            "an acquisition and a settlement"
        );
        // The in-memory state took no part.
        assert_eq!(limiter.stats().admitted, 0);

        // An owned permit (what the middleware keeps) settles the same.
        let owned = limiter
            .acquire_owned(Cost::request().output(100))
            .await
            .unwrap();
        tokio::spawn(async move { owned.settle(Usage::new().output(40)) })
            .await
            .unwrap();
        let_tasks_run().await;
        let after = snapshot(&store, "account", &policy).await;
        assert_eq!((after.limits[0].used, after.limits[1].used), (2, 340));
    })
    .await;
}

/// A cancelled permit gives the store back all it reserved, the request included, and its
/// in-flight slot.
#[tokio::test(start_paused = true)]
async fn a_cancelled_permit_gives_everything_back_to_the_store() {
    within(async {
        let (store, policy) = (store(), requests_and_output(Some(1)));
        let (_limiter, permit) = holding_800(&store, &policy).await;
        assert_eq!(snapshot(&store, "account", &policy).await.in_flight, 1);
        permit.cancel();
        let_tasks_run().await;
        let after = snapshot(&store, "account", &policy).await;
        assert_eq!((after.limits[0].used, after.limits[1].used), (0, 0));
        assert_eq!(after.in_flight, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn two_limiters_on_one_store_share_one_limit_exactly() {
    within(async {
        let store = store();
        let (a, b) = (
            limiter(one_a_second(), &store),
            limiter(one_a_second(), &store),
        );
        let start = Instant::now();
        let _first = a.acquire(Cost::request()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Alone, `b` would admit at once: the store holds `a`'s request against it.
        let _second = b.acquire(Cost::request()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let _third = a.acquire(Cost::request()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_the_timeout_fails_at_once_with_the_wait() {
    within(async {
        let store = store();
        let limiter = limiter(one_a_second(), &store);
        let _first = limiter.acquire(Cost::request()).await.unwrap();
        let start = Instant::now();
        let err = limiter
            .acquire_timeout(Cost::request(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AcquireError::Timeout {
                dimension: Dimension::Requests,
                cost: 1,
                wait: Some(Duration::from_secs(1)),
                timeout: Duration::from_millis(500),
            }
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "at once");
        // Within the timeout: reserved, and admitted at its instant.
        let _second = limiter
            .acquire_timeout(Cost::request(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // A cost no limit can ever admit (above the window's 60).
        let err = limiter
            .acquire(Cost::request().with_requests(61))
            .await
            .unwrap_err();
        assert!(matches!(err, AcquireError::Exceeds { .. }), "{err}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_request_behind_an_earlier_reservation_beyond_the_timeout_is_queued() {
    within(async {
        // Ten input tokens a second; requests are plenty.
        let policy = Policy::builder()
            .requests_per_minute(6_000)
            .input_tokens_per_minute(600)
            .margin(Duration::ZERO)
            .build()
            .unwrap();
        let store = store();
        let (a, b) = (limiter(policy.clone(), &store), limiter(policy, &store));
        let start = Instant::now();
        let _first = a.acquire(Cost::request().input(10)).await.unwrap();
        // Reserved at 1 s, when the tokens are back.
        let reserved =
            tokio::spawn(async move { b.acquire_owned(Cost::request().input(10)).await });
        let_tasks_run().await;
        // No tokens, but first come first served: it would go at 1 s, beyond 500 ms.
        let err = a
            .acquire_timeout(Cost::request(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AcquireError::QueueTimeout {
                waiters_ahead: 1,
                timeout: Duration::from_millis(500),
            }
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "at once");
        drop(reserved.await.unwrap().unwrap());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_acquisition_gives_its_reservation_back() {
    within(async {
        let store = store();
        let limiter = limiter(one_a_second(), &store);
        let start = Instant::now();
        let _first = limiter.acquire(Cost::request()).await.unwrap();
        // Reserved at 1 s, and dropped at 300 ms while it sleeps towards it.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(300), limiter.acquire(Cost::request()))
                .await;
        assert!(cancelled.is_err(), "the timeout dropped the acquisition");
        let_tasks_run().await;
        // Its place came back: the next request gets the instant at 1 s (not 2 s).
        let _next = limiter
            .acquire_timeout(Cost::request(), Duration::from_millis(900))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_full_in_flight_cap_is_waited_for_until_a_slot_is_freed() {
    within(async {
        let policy = Policy::builder()
            .requests_per_minute(60_000)
            .max_in_flight(1)
            .build()
            .unwrap();
        let store = store();
        let limiter = limiter(policy.clone(), &store);
        let first = limiter.acquire_owned(Cost::request()).await.unwrap();
        let start = Instant::now();
        // No slot within 50 ms: a timeout naming the in-flight cap, at the deadline.
        let err = limiter
            .acquire_timeout(Cost::request(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AcquireError::Timeout {
                dimension: Dimension::InFlight,
                cost: 1,
                wait: None,
                timeout: Duration::from_millis(50),
            }
        );
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        let polls = limiter.store_stats().in_flight_polls;
        assert!((2..=4).contains(&polls), "{polls} polls in 50 ms");
        // The slot frees at 150 ms: the next ask after it is admitted.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(first);
        });
        let _second = limiter
            .acquire_timeout(Cost::request(), Duration::from_secs(5))
            .await
            .unwrap();
        // Woken by the settlement that freed it (the store says so), not at its next backoff.
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        assert!(limiter.store_stats().in_flight_polls > polls);
        assert_eq!(snapshot(&store, "account", &policy).await.in_flight, 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_permit_renews_its_lease_while_it_lives() {
    within(async {
        let lease = Duration::from_secs(3);
        let policy = Policy::builder()
            .requests_per_minute(60_000)
            .max_in_flight(1)
            .build()
            .unwrap();
        let store: Shared = Arc::new(MemoryStore::with_clock(TokioClock::new()).lease(lease));
        let renewing = limiter(policy.clone(), &store).with_store_lease(lease);
        let permit = renewing.acquire(Cost::request()).await.unwrap();
        // A long call: renewed every second, its slot outlives the lease.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(snapshot(&store, "account", &policy).await.in_flight, 1);
        let err = renewing
            .acquire_timeout(Cost::request(), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AcquireError::Timeout { ref dimension, .. } if *dimension == Dimension::InFlight),
            "{err}"
        );
        drop(permit);
        let_tasks_run().await;
        assert_eq!(snapshot(&store, "account", &policy).await.in_flight, 0);
        let renewals = renewing.store_stats().calls;
        assert!(renewals >= 10, "{renewals} calls");

        // A limiter told a lease of 60 s (the default) renews only after 20 s: the store's
        // 3 s lease runs out first, and the slot is free again while the call goes on.
        let late = limiter(policy.clone(), &store);
        let _long = late.acquire(Cost::request()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(snapshot(&store, "account", &policy).await.in_flight, 0);
    })
    .await;
}

const LIMITS: &str = r#"
    [account]
    requests_per_minute = 6_000
    [models.gpt-4o]
    requests_per_minute = 500
    tokens_per_minute = 30_000
    [defaults.tenant]
    tokens_per_minute = 10_000
"#;

fn config() -> Config {
    Config::from_toml_str(LIMITS, "limits.toml").unwrap()
}

fn config_limiter(store: &Shared) -> Limiter<TokioClock> {
    Limiter::from_config_with_clock(config(), TokioClock::new()).with_store(Arc::clone(store))
}

#[tokio::test(start_paused = true)]
async fn a_key_is_charged_to_its_budgets_on_the_store_and_an_unlisted_model_is_refused() {
    within(async {
        let store = store();
        let limiter = config_limiter(&store);
        let config = config();
        let permit = limiter
            .key("acme", "GPT-4o")
            .acquire(Cost::request().input(1_000).output(500))
            .await
            .unwrap();
        let account = snapshot(&store, "account", config.account().unwrap()).await;
        let (_, model_policy) = config.model_policy("gpt-4o").unwrap();
        let model = snapshot(&store, "model gpt-4o", model_policy).await;
        let (_, tenant_policy) = config.tenant_policy("acme").unwrap();
        let tenant = snapshot(&store, "tenant acme", tenant_policy).await;
        assert_eq!(account.limits[0].used, 1);
        assert_eq!((model.limits[0].used, model.limits[1].used), (1, 1_500));
        assert_eq!(tenant.limits[0].used, 1_500);
        drop(permit);

        let err = limiter
            .model("gpt4o")
            .acquire(Cost::request())
            .await
            .unwrap_err();
        match err {
            AcquireError::UnknownModel { suggestion, .. } => {
                assert_eq!(suggestion.as_deref(), Some("gpt-4o"))
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            limiter.store_stats().calls,
            1,
            "the acquisition only: a release with no slot asks nothing, nor the refused model"
        );
    })
    .await;
}

/// What the store holds for a key's budgets, as another process sees it; a refused model and
/// a limiter without a store are errors.
#[tokio::test(start_paused = true)]
async fn a_key_reads_its_budgets_shared_state_from_the_store() {
    within(async {
        let store = store();
        let (a, b) = (config_limiter(&store), config_limiter(&store));
        let _permit = a
            .key("acme", "gpt-4o")
            .acquire(Cost::request().input(1_000).output(500))
            .await
            .unwrap();
        let shared = b.key("acme", "gpt-4o").shared_state().await.unwrap();
        let used: Vec<(&str, Vec<u64>)> = shared
            .iter()
            .map(|s| {
                let used = s.snapshot.limits.iter().map(|l| l.used).collect();
                (s.name.as_str(), used)
            })
            .collect();
        assert_eq!(
            used,
            [
                ("account", vec![1]),
                ("model gpt-4o", vec![1, 1_500]),
                ("tenant acme", vec![1_500]),
            ]
        );
        let own = b.shared_state().await.unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].name, "account");
        assert!(matches!(
            b.key("acme", "o1").shared_state().await,
            Err(AcquireError::UnknownModel { .. })
        ));
        let alone = Limiter::from_config_with_clock(config(), TokioClock::new());
        let e = alone.shared_state().await.unwrap_err();
        assert!(e.to_string().contains("stats()"), "{e}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_synchronous_calls_say_to_use_acquire_timeout() {
    within(async {
        let store = store();
        let limiter = config_limiter(&store);
        let denials = [
            limiter.try_acquire(Cost::request()).map(drop).unwrap_err(),
            limiter.try_admit(Cost::request()).unwrap_err(),
            limiter
                .key("acme", "gpt-4o")
                .try_acquire(Cost::request())
                .map(drop)
                .unwrap_err(),
            limiter
                .model("gpt-4o")
                .try_admit(Cost::request())
                .unwrap_err(),
        ];
        for denied in denials {
            match denied {
                Denied::Never(AcquireError::Store { message }) => {
                    assert!(
                        message.contains("acquire_timeout(cost, Duration::ZERO)"),
                        "{message}"
                    )
                }
                other => panic!("{other}"),
            }
        }
        // What it says works.
        let permit = limiter
            .acquire_timeout(Cost::request(), Duration::ZERO)
            .await
            .unwrap();
        drop(permit);
    })
    .await;
}

#[test]
fn blocking_outside_a_runtime_runs_on_the_limiters_own() {
    let policy = one_a_second();
    let store = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(policy.clone()).with_store(Arc::clone(&store));
    let permit = limiter.acquire_blocking(Cost::request()).unwrap();
    let read = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let used = |store: &Arc<MemoryStore>| {
        read.block_on(store.snapshot(&StoreBudget::new("account", policy.clone())))
            .unwrap()
            .limits[0]
            .used
    };
    assert_eq!(used(&store), 1);
    // The limit is spent for a second: a blocking call with no time to wait fails at once.
    let err = limiter
        .acquire_blocking_timeout(Cost::request(), Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, AcquireError::Timeout { .. }), "{err}");
    // Settled in a task of the limiter's own runtime, which goes on after the call returned.
    permit.settle(Usage::new().requests(0));
    let mut tries = 0;
    while used(&store) != 0 {
        tries += 1;
        assert!(tries < 5_000, "the settlement reached the store within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn blocking_inside_a_runtime_is_a_clear_error() {
    let store = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(one_a_second()).with_store(Arc::clone(&store));
    let err = limiter.acquire_blocking(Cost::request()).unwrap_err();
    match err {
        AcquireError::Store { message } => {
            assert!(message.contains("inside a tokio runtime"), "{message}")
        }
        other => panic!("{other}"),
    }
    let key = limiter.model("gpt-4o");
    assert!(matches!(
        key.acquire_blocking_timeout(Cost::request(), Duration::ZERO),
        Err(AcquireError::Store { .. })
    ));
}

/// A store that fails on demand, as a store whose server is unreachable does; otherwise the
/// in-memory store behind it answers.
#[derive(Debug)]
struct FailingStore {
    inner: Shared,
    failing: AtomicBool,
}

impl FailingStore {
    fn new(inner: &Shared) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::clone(inner),
            failing: AtomicBool::new(false),
        })
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn down<'a, T: Send + 'a>(&self) -> Option<StoreFuture<'a, T>> {
        self.failing.load(Ordering::SeqCst).then(|| {
            Box::pin(std::future::ready(Err(StoreError::Backend(
                "connection refused".into(),
            )))) as StoreFuture<'a, T>
        })
    }
}

impl Store for FailingStore {
    fn acquire<'a>(&'a self, ask: Ask<'a>) -> StoreFuture<'a, Answer> {
        self.down().unwrap_or_else(|| self.inner.acquire(ask))
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        used: Option<&'a Usage>,
    ) -> StoreFuture<'a, ()> {
        self.down()
            .unwrap_or_else(|| self.inner.settle(reservation, used))
    }

    fn renew<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        self.down().unwrap_or_else(|| self.inner.renew(reservation))
    }

    fn pause<'a>(
        &'a self,
        budget: &'a StoreBudget,
        pause: Duration,
        replace: bool,
    ) -> StoreFuture<'a, Duration> {
        self.down()
            .unwrap_or_else(|| self.inner.pause(budget, pause, replace))
    }

    fn snapshot<'a>(&'a self, budget: &'a StoreBudget) -> StoreFuture<'a, BudgetSnapshot> {
        self.down().unwrap_or_else(|| self.inner.snapshot(budget))
    }

    fn reset<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, ()> {
        self.down().unwrap_or_else(|| self.inner.reset(budget))
    }
}

fn failing_limiter(failing: &Arc<FailingStore>, on_error: OnStoreError) -> Limiter<TokioClock> {
    Limiter::with_clock(
        Policy::builder()
            .requests_per_minute(120)
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        TokioClock::new(),
    )
    .with_store(Arc::clone(failing))
    .on_store_error(on_error)
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_closed_by_default() {
    within(async {
        let failing = FailingStore::new(&store());
        let limiter = failing_limiter(&failing, OnStoreError::default());
        failing.fail(true);
        let err = limiter.acquire(Cost::request()).await.unwrap_err();
        match err {
            AcquireError::Store { message } => {
                assert!(message.contains("connection refused"), "{message}");
                assert!(message.contains("fails closed"), "{message}");
            }
            other => panic!("{other}"),
        }
        let stats = limiter.store_stats();
        assert_eq!((stats.calls, stats.errors, stats.fail_open), (1, 1, 0));
        // Back up: admitted through the store again.
        failing.fail(false);
        drop(limiter.acquire(Cost::request()).await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_open_when_asked() {
    within(async {
        let failing = FailingStore::new(&store());
        let limiter = failing_limiter(&failing, OnStoreError::FailOpen);
        failing.fail(true);
        let start = Instant::now();
        // Far more than the limit (2 a second, burst 2), none waiting.
        for _ in 0..10 {
            let permit = limiter.acquire(Cost::request()).await.unwrap();
            permit.settle(Usage::new());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        let stats = limiter.store_stats();
        assert_eq!(
            (stats.errors, stats.fail_open, stats.local_share),
            (10, 10, 0)
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_falls_back_on_a_local_share_of_the_limits() {
    within(async {
        let failing = FailingStore::new(&store());
        // 120 a minute (2 a second); half of it locally: 1 a second, burst 1.
        let limiter = failing_limiter(&failing, OnStoreError::LocalShare(0.5));
        failing.fail(true);
        let start = Instant::now();
        let _first = limiter.acquire(Cost::request()).await.unwrap();
        let err = limiter
            .acquire_timeout(Cost::request(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AcquireError::Timeout { wait: Some(w), .. } if w == Duration::from_secs(1)),
            "{err}"
        );
        let _second = limiter.acquire(Cost::request()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let stats = limiter.store_stats();
        assert_eq!((stats.errors, stats.local_share, stats.fail_open), (3, 3, 0));
        // Back up: the store decides again (2 at once: its own bucket is full).
        failing.fail(false);
        let _third = limiter
            .acquire_timeout(Cost::request(), Duration::ZERO)
            .await
            .unwrap();
        let _fourth = limiter
            .acquire_timeout(Cost::request(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(limiter.store_stats().local_share, 3);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn other_limits_on_a_budget_are_never_masked() {
    within(async {
        let store = store();
        let failing = FailingStore::new(&store);
        let first = limiter(one_a_second(), &store);
        drop(first.acquire(Cost::request()).await.unwrap());
        // Another process with other limits for the same budget, failing open: still an
        // error, naming the budget and what to do.
        let other = failing_limiter(&failing, OnStoreError::FailOpen);
        let err = other.acquire(Cost::request()).await.unwrap_err();
        match err {
            AcquireError::Store { message } => {
                assert!(message.contains("\"account\""), "{message}");
                assert!(message.contains("the same limits"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(other.store_stats().fail_open, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_other_limits_reports_the_mismatch_until_the_budget_is_reset() {
    within(async {
        let store = store();
        let limiter = config_limiter(&store);
        drop(
            limiter
                .model("gpt-4o")
                .acquire(Cost::request())
                .await
                .unwrap(),
        );
        let_tasks_run().await;
        let v2 = LIMITS.replace("requests_per_minute = 500", "requests_per_minute = 5_000");
        limiter.reload(Config::from_toml_str(&v2, "v2.toml").unwrap());
        let err = limiter
            .model("gpt-4o")
            .acquire(Cost::request())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AcquireError::Store { message } if message.contains("\"model gpt-4o\"")),
            "{err}"
        );
        // Once every process has the new limits, the budget is reset and starts afresh.
        store.reset("model gpt-4o").await.unwrap();
        drop(
            limiter
                .model("gpt-4o")
                .acquire(Cost::request())
                .await
                .unwrap(),
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pause_is_shared_by_every_limiter_on_the_store() {
    within(async {
        let store = store();
        let (a, b) = (config_limiter(&store), config_limiter(&store));
        a.model("gpt-4o").pause(Duration::from_secs(2));
        let_tasks_run().await;
        let err = b
            .key("acme", "gpt-4o")
            .acquire_timeout(Cost::request(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AcquireError::Paused {
                wait: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
            }
        );
        // Without a timeout (up to the longest pause), it waits out the pause.
        let start = Instant::now();
        drop(b.model("gpt-4o").acquire(Cost::request()).await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        // A 429 seen by `b` pauses `a`, at most the longest pause.
        b.set_max_pause(Duration::from_secs(30));
        let throttled = tokengate::feedback::ProviderReport::from_headers(
            [("retry-after", "600")],
            std::time::SystemTime::now(),
        );
        b.model("gpt-4o").observe_throttled(&throttled);
        let_tasks_run().await;
        let err = a
            .model("gpt-4o")
            .acquire_timeout(Cost::request(), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AcquireError::Paused { wait, .. } if wait == Duration::from_secs(30)),
            "{err}"
        );
        // Other models go on; `resume` lifts it everywhere.
        a.model("gpt-4o").resume();
        let_tasks_run().await;
        drop(
            b.model("gpt-4o")
                .acquire_timeout(Cost::request(), Duration::ZERO)
                .await
                .unwrap(),
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn key_run_works_unchanged_on_a_store() {
    within(async {
        let store = store();
        let limiter = config_limiter(&store);
        let request = json!({"model": "gpt-4o", "max_tokens": 800,
            "messages": [{"role": "user", "content": "Say hello."}]});
        let reply: std::io::Result<Value> = limiter
            .key("acme", "gpt-4o")
            .run(&request, |_| async {
                Ok(json!({"object": "chat.completion",
                    "usage": {"prompt_tokens": 11, "completion_tokens": 4}}))
            })
            .await
            .unwrap();
        assert_eq!(reply.unwrap()["usage"]["completion_tokens"], 4);
        let_tasks_run().await;
        // Settled as OpenAI counts: the prompt, and the 800 reserved for output, kept.
        let config = config();
        let (_, model_policy) = config.model_policy("gpt-4o").unwrap();
        let (_, tenant_policy) = config.tenant_policy("acme").unwrap();
        let model = snapshot(&store, "model gpt-4o", model_policy).await;
        let tenant = snapshot(&store, "tenant acme", tenant_policy).await;
        assert_eq!((model.limits[1].used, tenant.limits[0].used), (811, 811));
    })
    .await;
}

#[cfg(feature = "reqwest")]
#[tokio::test(start_paused = true)]
async fn the_reqwest_middleware_works_unchanged_on_a_store() {
    use common::meters::Enforcement;
    use common::mock_provider::{chat_body, Api, MockLimits, MockProvider, MockSpec};
    use tokengate::reqwest::TokenGateMiddleware;
    use tokengate::OutputCount;

    within(async {
        let mock = MockProvider::start(MockSpec::new(
            MockLimits::openai(10_000, 1_000_000),
            Enforcement::MinuteBucket,
            OutputCount::Reserved,
        ))
        .await;
        let store = store();
        let limits = Config::from_toml_str(
            "[models.gpt-4o-mini]\nrequests_per_minute = 500\ntokens_per_minute = 200_000",
            "limits.toml",
        )
        .unwrap();
        let limiter = Limiter::from_config_with_clock(limits.clone(), TokioClock::new())
            .with_store(Arc::clone(&store));
        let client = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
        .with(TokenGateMiddleware::new(limiter.clone()))
        .build();
        for n in 0..3 {
            let body = chat_body(Api::OpenAi, "gpt-4o-mini", 300, n == 1, "Name a prime.");
            let response = client
                .post(mock.url(Api::OpenAi))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap();
        }
        let_tasks_run().await;
        let (_, policy) = limits.model_policy("gpt-4o-mini").unwrap();
        let model = snapshot(&store, "model gpt-4o-mini", policy).await;
        let counted = mock.state.lock().unwrap().counted("tokens", 3_600.0);
        assert_eq!(model.limits[0].used, 3);
        assert_eq!(
            model.limits[1].used, counted,
            "the store counts as the provider"
        );
        assert_eq!(model.in_flight, 0);
        assert_eq!(limiter.store_stats().errors, 0);
    })
    .await;
}

#[cfg(feature = "tower")]
#[tokio::test(start_paused = true)]
async fn the_tower_layer_works_unchanged_on_a_store() {
    use tokengate::tower::TokenGateLayer;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    within(async {
        let policy = Policy::builder()
            .requests_per_minute(60)
            .output_tokens_per_minute(6_000)
            .margin(Duration::ZERO)
            .build()
            .unwrap();
        let store = store();
        let limiter = limiter(policy.clone(), &store);
        let model =
            service_fn(|max_tokens: u64| async move { Ok::<_, std::io::Error>(max_tokens / 4) });
        let service = ServiceBuilder::new()
            .layer(TokenGateLayer::new(
                limiter.clone(),
                |max_tokens: &u64| Cost::request().output(*max_tokens),
                |r: &Result<u64, std::io::Error>| r.as_ref().ok().map(|&n| Usage::new().output(n)),
            ))
            .service(model);
        let start = Instant::now();
        // Spawned: the layer's future is `Send + 'static` on a store too.
        let first = tokio::spawn(service.clone().oneshot(80)).await.unwrap();
        assert_eq!(first.unwrap(), 20);
        let second = service.oneshot(40).await.unwrap();
        assert_eq!(second, 10);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "one request a second"
        );
        let_tasks_run().await;
        let account = snapshot(&store, "account", &policy).await;
        assert_eq!((account.limits[0].used, account.limits[1].used), (2, 30));
    })
    .await;
}

/// A request that waits half a minute for its model's tokens keeps a place in line there (it
/// asks again shortly before its instant), rather than a reservation: its tenant's other
/// requests go at once, and it holds none of its model's in-flight slots while it waits.
#[tokio::test(start_paused = true)]
async fn a_long_wait_holds_back_neither_the_tenant_nor_the_slots() {
    within(async {
        const LINE: &str = r#"
            margin = "0s"
            [models.big]
            tokens_per_minute = { amount = 6_000, burst = 3_000 }
            max_in_flight = 4
            [models.small]
            requests_per_minute = 6_000
            [defaults.tenant]
            requests_per_minute = 600
        "#;
        let store = store();
        let config = Config::from_toml_str(LINE, "limits.toml").unwrap();
        let limiter = Arc::new(
            Limiter::from_config_with_clock(config.clone(), TokioClock::new())
                .with_store(Arc::clone(&store)),
        );
        let start = Instant::now();
        let big = Cost::request().input(3_000);
        let _first = limiter
            .key("acme", "big")
            .acquire(big.clone())
            .await
            .unwrap();
        // The second waits 30 s for the model's tokens.
        let waiting = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let permit = limiter.key("acme", "big").acquire(big).await.unwrap();
                let at = start.elapsed();
                drop(permit);
                at
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Meanwhile the tenant's requests to another model go at once.
        for _ in 0..5 {
            drop(
                limiter
                    .key("acme", "small")
                    .acquire(Cost::request())
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(10),
            "the tenant is not held back"
        );
        let (_, policy) = config.model_policy("big").unwrap();
        let slots = snapshot(&store, "model big", policy).await.in_flight;
        assert_eq!(slots, 1, "the waiting request holds no slot");
        assert_eq!(waiting.await.unwrap(), Duration::from_secs(30));
    })
    .await;
}

/// A provider's remaining seen by one limiter lowers the store's budget for every limiter on
/// it: what another client used of the account is counted by all.
#[tokio::test(start_paused = true)]
async fn a_lower_remaining_seen_by_one_limiter_lowers_the_store_for_all() {
    within(async {
        let store = store();
        let (a, b) = (config_limiter(&store), config_limiter(&store));
        drop(a.model("gpt-4o").acquire(Cost::request()).await.unwrap());
        // The provider has 480 of its 500 requests left where the store counts 1.
        let report = tokengate::feedback::ProviderReport::from_headers(
            [
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-remaining-requests", "480"),
            ],
            std::time::SystemTime::now(),
        );
        a.model("gpt-4o").observe(&report);
        let_tasks_run().await;
        let config = config();
        let (_, policy) = config.model_policy("gpt-4o").unwrap();
        let used = snapshot(&store, "model gpt-4o", policy).await.limits[0].used;
        assert_eq!(used, 20, "the store counts what the provider counted");
        assert_eq!(b.store_stats().errors + a.store_stats().errors, 0);
    })
    .await;
}
