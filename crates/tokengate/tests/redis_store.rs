//! The Redis store through the body of tests every store runs (`tests/common/store_cases.rs`;
//! the in-memory store runs the same in `tests/store.rs`), on a real `redis-server` the test
//! starts on a free loopback port, with the instant of a manual clock passed to the script.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_store`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{command_stat, RedisServer};
use common::store_cases as cases;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreBudget};
use tokengate::{Algorithm, Cost, Dimension, Limit, ManualClock, Policy};

const LEASE: Duration = Duration::from_secs(30);

/// Runs `test` against a server of its own (stopped when it ends), within 60 s.
fn run<F: std::future::Future>(test: impl FnOnce(redis::aio::ConnectionManager) -> F) -> F::Output {
    run_with_server(|_, connection| test(connection))
}

/// [`run`], the test given the server too.
fn run_with_server<F: std::future::Future>(
    test: impl FnOnce(Arc<RedisServer>, redis::aio::ConnectionManager) -> F,
) -> F::Output {
    let server = Arc::new(RedisServer::start());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let connection = redis::aio::ConnectionManager::new(client)
                .await
                .expect("connects");
            tokio::time::timeout(
                Duration::from_secs(60),
                test(Arc::clone(&server), connection),
            )
            .await
            .expect("within 60 s")
        })
}

/// A store with a namespace no other store in this file uses, on a fresh manual clock.
fn store(connection: &redis::aio::ConnectionManager) -> (RedisStore, ManualClock) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let clock = ManualClock::new();
    let namespace = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = RedisStore::with_connection(connection.clone())
        .namespace("tokengate-test", &namespace)
        .lease(LEASE)
        .with_manual_clock(clock.clone());
    (store, clock)
}

#[test]
fn the_request_vectors_hold() {
    run(|c| async move { cases::replays_the_request_vectors(|| store(&c), "").await });
}

#[test]
fn reservations_are_exact_and_first_come_first_served() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::reservations_are_exact_and_first_come_first_served(&store, &clock, "").await
    });
}

#[test]
fn nothing_overtakes_a_reservation() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::nothing_overtakes_a_reservation(&store, &clock, "").await
    });
}

#[test]
fn a_provider_count_lowers_a_budget() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::a_provider_count_lowers_a_budget(&store, &clock, "").await
    });
}

#[test]
fn a_settlement_under_other_limits_charges_the_state_it_finds() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::a_settlement_under_other_limits_charges_the_state_it_finds(&store, &clock, "").await
    });
}

#[test]
fn beyond_the_horizon_a_request_keeps_its_place_in_line() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::beyond_the_horizon_a_request_keeps_its_place_in_line(&store, &clock, "").await
    });
}

#[test]
fn a_forgotten_budget_refunds_nothing_to_its_successor() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::a_forgotten_budget_refunds_nothing_to_its_successor(&store, &clock, "").await
    });
}

#[test]
fn a_cancelled_reservation_gives_its_place_back() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::a_cancelled_reservation_gives_its_place_back(&store, &clock, "").await
    });
}

#[test]
fn in_flight_slots_are_leases() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::in_flight_slots_are_leases(&store, &clock, "", LEASE).await
    });
}

#[test]
fn other_limits_on_one_budget_are_a_mismatch() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::other_limits_on_one_budget_are_a_mismatch(&store, &clock, "").await
    });
}

#[test]
fn snapshots_pauses_and_resets() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::snapshots_pauses_and_resets(&store, &clock, "").await
    });
}

// ---------------------------------------------------------------------------------------
// The function's library, missing: the store loads it again by itself.

/// 100 requests, then nothing for an hour (the manual clock does not move).
fn hundred() -> Vec<StoreBudget> {
    let limit = Limit::new(100, Duration::from_secs(3_600))
        .algorithm(Algorithm::FixedWindow)
        .margin(Duration::ZERO);
    let policy = Policy::builder()
        .limit(Dimension::Requests, limit)
        .build()
        .unwrap();
    vec![StoreBudget::new("flush", policy)]
}

/// The libraries the server holds.
async fn libraries(connection: &mut redis::aio::ConnectionManager) -> usize {
    let list: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(connection)
        .await
        .unwrap();
    list.len()
}

/// Acquires of a request, each in a task of its own, on the store's one connection.
fn spawn_acquires(
    tasks: &mut tokio::task::JoinSet<bool>,
    store: &Arc<RedisStore>,
    budgets: &Arc<Vec<StoreBudget>>,
    n: usize,
) {
    for _ in 0..n {
        let (store, budgets) = (store.clone(), budgets.clone());
        tasks.spawn(async move {
            let cost = Cost::request();
            let answer = store.acquire(Ask::new(&budgets, &cost)).await;
            answer
                .expect("answered, the library loaded again if need be")
                .reserved()
                .is_some()
        });
    }
}

/// How many of `tasks` were admitted. Every one must be answered.
async fn admitted(mut tasks: tokio::task::JoinSet<bool>) -> usize {
    let mut admitted = 0;
    while let Some(done) = tasks.join_next().await {
        admitted += usize::from(done.unwrap());
    }
    admitted
}

/// `n` acquires at once: how many were admitted.
async fn admitted_at_once(
    store: &Arc<RedisStore>,
    budgets: &Arc<Vec<StoreBudget>>,
    n: usize,
) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    spawn_acquires(&mut tasks, store, budgets, n);
    admitted(tasks).await
}

/// The calls of the function that failed and the loads of the library (`INFO commandstats`).
async fn misses_and_loads(connection: &mut redis::aio::ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    (
        command_stat(&info, "cmdstat_fcall", "failed_calls"),
        command_stat(&info, "cmdstat_function|load", "calls"),
    )
}

async fn flush(connection: &mut redis::aio::ConnectionManager) {
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(connection)
        .await
        .unwrap();
}

#[test]
fn a_flushed_library_is_loaded_again_under_concurrent_calls() {
    run(|mut c| async move {
        let (store, _clock) = store(&c);
        let (store, budgets) = (Arc::new(store), Arc::new(hundred()));
        // A new server has no library: the first calls, all in flight at once on the one
        // connection, find the function missing, load it (one of them first, the others
        // finding it there) and run.
        assert_eq!(libraries(&mut c).await, 0);
        assert_eq!(admitted_at_once(&store, &budgets, 16).await, 16);
        assert_eq!(libraries(&mut c).await, 1);
        // Flushed between calls.
        flush(&mut c).await;
        assert_eq!(libraries(&mut c).await, 0);
        assert_eq!(admitted_at_once(&store, &budgets, 16).await, 16);
        // Flushed while calls are in flight: the flush goes down the connection (the store's
        // own, pipelined) after the first 50 and before the next 50.
        let mut tasks = tokio::task::JoinSet::new();
        spawn_acquires(&mut tasks, &store, &budgets, 50);
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        let before = misses_and_loads(&mut c).await;
        flush(&mut c).await;
        spawn_acquires(&mut tasks, &store, &budgets, 50);
        // Each call ran once: the limit's 100 went to exactly 100 of the 132 calls.
        assert_eq!(admitted(tasks).await, 100 - 32);
        // Calls found the function missing, and loaded it.
        let after = misses_and_loads(&mut c).await;
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "{before:?} {after:?}"
        );
        assert_eq!(admitted_at_once(&store, &budgets, 10).await, 0);
        assert_eq!(libraries(&mut c).await, 1);
    });
}

#[test]
fn the_library_is_loaded_again_after_a_restart() {
    let mut server = RedisServer::start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let client = redis::Client::open(server.url()).unwrap();
            let mut c = redis::aio::ConnectionManager::new(client).await.unwrap();
            let (store, _clock) = store(&c);
            let (budgets, cost) = (hundred(), Cost::request());
            let ask = || Ask::new(&budgets, &cost);
            assert!(store.acquire(ask()).await.unwrap().reserved().is_some());
            assert_eq!(libraries(&mut c).await, 1);
            // The server stops (losing everything: nothing is saved) and starts again on its
            // port; the connection finds it again by itself.
            server.kill();
            server.restart();
            let deadline = Instant::now() + Duration::from_secs(20);
            let answer = loop {
                match store.acquire(ask()).await {
                    Ok(answer) => break answer,
                    // The connection lost, not yet found again.
                    Err(e) if Instant::now() < deadline => {
                        assert!(!e.to_string().contains("Function"), "{e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("no answer after the restart: {e}"),
                }
            };
            // A new server, with nothing of the old one: the limit starts again.
            assert!(answer.reserved().is_some());
            assert_eq!(libraries(&mut c).await, 1);
        });
}

/// Acquisitions made at once go to Redis together (all but the first, here, in one call: the
/// first is held in flight, Redis paused, until the others wait); one whose budget's state
/// cannot be read fails alone, and the others are decided and written as they would be one by
/// one.
#[test]
fn a_state_that_cannot_be_read_fails_only_its_own_acquisition_of_a_batch() {
    run_with_server(|server, mut c| async move {
        let store = store_named(&c, "batch");
        let policy = bucket_policy(100);
        let good = [StoreBudget::new("good", policy.clone())];
        let bad = [StoreBudget::new("bad", policy)];
        spoil(&mut c, "tokengate-test:{batch}:b:bad:s").await;
        let one = Cost::request();
        // The library loaded, on a budget of its own.
        let warm = [StoreBudget::new("warm", good[0].policy().clone())];
        let warmed = store.acquire(Ask::new(&warm, &one)).await.unwrap();
        assert!(warmed.reserved().is_some());
        let asks = [
            Ask::new(&good, &one),
            Ask::new(&good, &one),
            Ask::new(&good, &one),
            Ask::new(&bad, &one),
            Ask::new(&good, &one),
        ];
        let before = function_calls(&mut c).await;
        server.pause();
        let (answers, ()) = tokio::join!(
            futures_util::future::join_all(asks.iter().map(|a| store.acquire(*a))),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                server.resume();
            }
        );
        // The first alone, the four others in one call.
        assert_eq!(function_calls(&mut c).await - before, 2);
        for (i, answer) in answers.iter().enumerate() {
            if i == 3 {
                let error = answer.as_ref().expect_err("the unreadable state fails");
                assert!(
                    error.to_string().contains("holds no state of this version"),
                    "{error}"
                );
            } else {
                let answer = answer.as_ref().expect("the others are decided");
                assert!(
                    matches!(answer, tokengate::store::Answer::Reserved(_)),
                    "ask {i}: {answer:?}"
                );
            }
        }
        let snapshot = store.snapshot(&good[0]).await.unwrap();
        assert_eq!(snapshot.limits[0].used, 4, "{snapshot:?}");
    });
}

/// A store with namespace `namespace`, on a fresh manual clock.
fn store_named(connection: &redis::aio::ConnectionManager, namespace: &str) -> RedisStore {
    RedisStore::with_connection(connection.clone())
        .namespace("tokengate-test", namespace)
        .with_manual_clock(ManualClock::new())
}

/// Writes at `key` what no store wrote: not a state.
async fn spoil(connection: &mut redis::aio::ConnectionManager, key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("not a state")
        .query_async(connection)
        .await
        .unwrap();
}

/// How many function calls (`FCALL`) the server ran.
async fn function_calls(connection: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    command_stat(&info, "cmdstat_fcall", "calls")
}

fn bucket_policy(per_minute: u64) -> Policy {
    Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::per_minute(per_minute).algorithm(Algorithm::TokenBucket),
        )
        .build()
        .unwrap()
}

/// A store on a connection made on a runtime of the test's own, driven throughout, with a
/// short deadline.
fn store_on_own_runtime(
    server: &RedisServer,
    namespace: &str,
) -> (
    tokio::runtime::Runtime,
    Arc<RedisStore<redis::aio::MultiplexedConnection>>,
) {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let connection = main
        .block_on(client.get_multiplexed_async_connection())
        .expect("connects");
    let store = RedisStore::with_connection(connection)
        .namespace("tokengate-test", namespace)
        .timeout(Duration::from_millis(500));
    (main, Arc::new(store))
}

/// Three asks at once, on a runtime made for them and dropped after: all admitted.
fn three_at_once_on_a_runtime_of_their_own(
    store: &RedisStore<redis::aio::MultiplexedConnection>,
    budgets: &[StoreBudget],
) {
    three_at_once(&current_thread(), store, budgets);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Three asks at once on `runtime`: all admitted.
fn three_at_once(
    runtime: &tokio::runtime::Runtime,
    store: &RedisStore<redis::aio::MultiplexedConnection>,
    budgets: &[StoreBudget],
) {
    let one = Cost::request();
    let answers = runtime.block_on(futures_util::future::join_all(
        (0..3).map(|_| store.acquire(Ask::new(budgets, &one))),
    ));
    for answer in answers {
        assert!(
            answer.expect("the store answers").reserved().is_some(),
            "admitted"
        );
    }
}

/// A runtime made for each call (a synchronous facade), dropped after it, or left idle on a
/// thread: the store goes on answering. Its calls run on a runtime that is driven whatever
/// their callers do, never on one that may stop being driven.
#[test]
fn runtimes_made_for_one_call_then_dropped_or_idle_do_not_stop_the_store() {
    let server = RedisServer::start();
    let (_main, store) = store_on_own_runtime(&server, "runtimes");
    let budgets = [StoreBudget::new("x", bucket_policy(100_000))];
    let started = Instant::now();
    for _ in 0..5 {
        three_at_once_on_a_runtime_of_their_own(&store, &budgets);
    }
    // Two threads ask, then keep their runtimes without driving them.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let (store, budgets) = (Arc::clone(&store), budgets.clone());
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (asked, told) = std::sync::mpsc::channel::<()>();
        idle.push((
            std::thread::spawn(move || {
                let runtime = current_thread();
                three_at_once(&runtime, &store, &budgets);
                asked.send(()).unwrap();
                let _ = wait.recv();
            }),
            done,
        ));
        told.recv_timeout(Duration::from_secs(10))
            .expect("the thread asked");
    }
    for _ in 0..5 {
        three_at_once_on_a_runtime_of_their_own(&store, &budgets);
    }
    for (thread, done) in idle {
        drop(done);
        thread.join().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A runtime dropped while its acquisitions wait on a paused Redis: once Redis answers again,
/// so does the store.
#[test]
fn a_runtime_dropped_while_redis_is_paused_does_not_stop_the_store() {
    let server = RedisServer::start();
    let (_main, store) = store_on_own_runtime(&server, "paused");
    let budgets = [StoreBudget::new("x", bucket_policy(100_000))];
    three_at_once_on_a_runtime_of_their_own(&store, &budgets);
    server.pause();
    {
        let runtime = current_thread();
        let one = Cost::request();
        let gave_up = runtime.block_on(async {
            let asks = (0..3).map(|_| store.acquire(Ask::new(&budgets, &one)));
            tokio::time::timeout(
                Duration::from_millis(50),
                futures_util::future::join_all(asks),
            )
            .await
        });
        assert!(gave_up.is_err(), "nothing answers while Redis is paused");
    }
    server.resume();
    // The calls sent meanwhile come back, or pass their deadline.
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..3 {
        three_at_once_on_a_runtime_of_their_own(&store, &budgets);
    }
}

/// In one batch, after earlier calls used several budgets: a state that cannot be read fails
/// every acquisition that meets it, and stays as it was.
#[test]
fn an_unreadable_state_met_twice_in_a_batch_fails_both() {
    run(|mut c| async move {
        let store = store_named(&c, "unreadable");
        let policy = bucket_policy(100);
        let two = [
            StoreBudget::new("a", policy.clone()),
            StoreBudget::new("b", policy.clone()),
        ];
        let good = [StoreBudget::new("good", policy.clone())];
        let bad = [StoreBudget::new("bad", policy)];
        let one = Cost::request();
        for _ in 0..3 {
            let answer = store.acquire(Ask::new(&two, &one)).await.unwrap();
            assert!(answer.reserved().is_some());
        }
        let key = "tokengate-test:{unreadable}:b:bad:s";
        spoil(&mut c, key).await;
        let asks = [
            Ask::new(&good, &one),
            Ask::new(&good, &one),
            Ask::new(&bad, &one),
            Ask::new(&bad, &one),
        ];
        let answers = futures_util::future::join_all(asks.iter().map(|a| store.acquire(*a))).await;
        assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
        for answer in &answers[2..] {
            let error = answer.as_ref().expect_err("an unreadable state fails");
            assert!(
                error.to_string().contains("holds no state of this version"),
                "{error}"
            );
        }
        let state: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(state, "not a state");
    });
}

/// An acquisition refused after a new budget took its limits writes nothing: the next one,
/// under other limits, finds no state, in a batch as one by one.
#[test]
fn a_refused_acquisition_leaves_a_new_budget_unwritten_in_a_batch_too() {
    for together in [false, true] {
        run(|c| async move {
            let store = RedisStore::with_connection(c.clone())
                .namespace("tokengate-test", &format!("adopted-{together}"))
                .with_manual_clock(ManualClock::new());
            let (p1, p2) = (bucket_policy(100), bucket_policy(50));
            let paused = StoreBudget::new("paused", p1.clone());
            store
                .pause(&paused, Duration::from_secs(30), true)
                .await
                .unwrap();
            let g = [StoreBudget::new("g", p1.clone())];
            let first = [StoreBudget::new("x", p1), paused];
            let second = [StoreBudget::new("x", p2)];
            let one = Cost::request();
            let asks = [
                Ask::new(&g, &one),
                Ask::new(&g, &one),
                Ask::new(&first, &one),
                Ask::new(&second, &one),
            ];
            let answers = if together {
                futures_util::future::join_all(asks.iter().map(|a| store.acquire(*a))).await
            } else {
                let mut answers = Vec::new();
                for ask in asks {
                    answers.push(store.acquire(ask).await);
                }
                answers
            };
            let said: Vec<String> = answers
                .iter()
                .map(|a| match a {
                    Ok(tokengate::store::Answer::Reserved(_)) => "reserved".to_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(said[3], "reserved", "together: {together}: {said:?}");
            assert!(said[2].contains("Paused"), "together: {together}: {said:?}");
        });
    }
}

#[test]
fn an_ask_that_names_a_budget_twice_is_refused_with_a_clear_error() {
    run(|c| async move {
        let (store, _clock) = store(&c);
        let twice = [
            StoreBudget::new("x", bucket_policy(100)),
            StoreBudget::new("x", bucket_policy(100)),
        ];
        let error = store
            .acquire(Ask::new(&twice, &Cost::request()))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("named twice"), "{error}");
    });
}

/// A caller that leaves while its call is in flight: the call still ends, and ends the lease
/// of the admission nobody received, so its slot comes back at once rather than when the
/// lease runs out.
#[test]
fn a_caller_that_leaves_during_its_call_gives_its_slot_back() {
    let server = RedisServer::start();
    let (_main, store) = store_on_own_runtime(&server, "left");
    let capped = Policy::builder()
        .max_in_flight(1)
        .limit(
            Dimension::Requests,
            Limit::per_minute(100_000).algorithm(Algorithm::TokenBucket),
        )
        .build()
        .unwrap();
    let budgets = [StoreBudget::new("x", capped)];
    // The library loaded, on a budget of its own.
    three_at_once_on_a_runtime_of_their_own(
        &store,
        &[StoreBudget::new("warm", bucket_policy(100))],
    );
    server.pause();
    {
        let runtime = current_thread();
        let one = Cost::request();
        let left = runtime.block_on(async {
            let ask = store.acquire(Ask::new(&budgets, &one));
            tokio::time::timeout(Duration::from_millis(50), ask).await
        });
        assert!(left.is_err(), "nothing answers while Redis is paused");
    }
    server.resume();
    // Past the call's deadline: it was answered, or failed; either way its lease ended.
    std::thread::sleep(Duration::from_millis(700));
    let again = current_thread()
        .block_on(store.acquire(Ask::new(&budgets, &Cost::request())))
        .expect("the store answers");
    assert!(
        matches!(again, tokengate::store::Answer::Reserved(_)),
        "{again:?}"
    );
}

/// A call in flight for a caller whose runtime then stops being driven does not hold up the
/// others: it runs on a runtime that is.
#[test]
fn a_call_whose_caller_stops_being_polled_does_not_hold_up_others() {
    let server = RedisServer::start();
    let (_main, store) = store_on_own_runtime(&server, "unpolled");
    let budgets = [StoreBudget::new("x", bucket_policy(100_000))];
    three_at_once_on_a_runtime_of_their_own(&store, &budgets);
    server.pause();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (asked, told) = std::sync::mpsc::channel::<()>();
    let thread = {
        let (store, budgets) = (Arc::clone(&store), budgets.clone());
        std::thread::spawn(move || {
            let runtime = current_thread();
            let _ask = runtime.spawn(async move {
                let answer = store.acquire(Ask::new(&budgets, &Cost::request())).await;
                drop(answer);
            });
            // Driven long enough to send its call, then never again until the test ends.
            runtime.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
            asked.send(()).unwrap();
            let _ = wait.recv();
        })
    };
    told.recv_timeout(Duration::from_secs(10))
        .expect("the thread asked");
    server.resume();
    for _ in 0..4 {
        let answer = current_thread()
            .block_on(store.acquire(Ask::new(&budgets, &Cost::request())))
            .expect("the store answers");
        assert!(answer.reserved().is_some());
    }
    drop(done);
    thread.join().unwrap();
}
