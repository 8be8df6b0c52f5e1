//! Acquisitions made at once on the Redis store go to Redis together, in one call
//! (`src/redis/batch.rs`): each is decided as it would be alone, one that fails fails alone,
//! no caller waits past its deadline or for a runtime that is not driven, and no admission
//! whose answer is lost keeps its in-flight slot. On a real `redis-server` the test starts on a
//! free loopback port, paused (SIGSTOP) where a call must be held in flight.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_batch`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_run::{command_stats, run, run_with_server, store};
use common::redis_server::{command_stat, RedisServer};
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreBudget};
use tokengate::{Algorithm, Cost, Dimension, Limit, ManualClock, Policy};

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
        let before = function_calls(&server);
        server.pause();
        let (answers, ()) = tokio::join!(
            futures_util::future::join_all(asks.iter().map(|a| store.acquire(*a))),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                server.resume();
            }
        );
        // The first alone, the four others in one call.
        assert_eq!(function_calls(&server) - before, 2);
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
fn function_calls(server: &RedisServer) -> u64 {
    command_stat(&command_stats(server), "cmdstat_fcall", "calls")
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
    assert_reserved(&again);
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
/// `n` budgets of six token buckets each.
fn of_six_buckets(n: usize) -> Vec<StoreBudget> {
    (0..n)
        .map(|i| StoreBudget::new(format!("b{i}"), six_buckets()))
        .collect()
}

fn assert_reserved(answer: &tokengate::store::Answer) {
    assert!(
        matches!(answer, tokengate::store::Answer::Reserved(_)),
        "{answer:?}"
    );
}

/// Every limit of `budget` counts `used`.
async fn all_used(store: &RedisStore, budget: &StoreBudget, used: u64) {
    let snapshot = store.snapshot(budget).await.unwrap();
    assert!(
        snapshot.limits.iter().all(|l| l.used == used),
        "{snapshot:?}"
    );
}

/// Six token buckets on requests, far above what a test uses.
fn six_buckets() -> Policy {
    let mut builder = Policy::builder();
    for secs in [1, 10, 60, 600, 3_600, 86_400] {
        let limit =
            Limit::new(1_000_000, Duration::from_secs(secs)).algorithm(Algorithm::TokenBucket);
        builder = builder.limit(Dimension::Requests, limit);
    }
    builder.build().unwrap()
}

/// A call of 64 acquisitions of six budgets of six limits each carries 8,961 numbers, more than
/// Lua's stack holds at once: it is decided whole, each acquisition as alone.
#[test]
fn a_call_of_large_asks_is_decided_whole() {
    run_with_server(|server, c| async move {
        let store = store_named(&c, "large");
        let budgets = of_six_buckets(6);
        let one = Cost::request();
        // The library loaded.
        assert!(store
            .acquire(Ask::new(&budgets, &one))
            .await
            .unwrap()
            .reserved()
            .is_some());
        let before = function_calls(&server);
        server.pause();
        // The first goes alone, the next eight in a second call; the other 64 wait for one of
        // the two, and go together.
        let asks: Vec<_> = (0..73)
            .map(|_| store.acquire(Ask::new(&budgets, &one)))
            .collect();
        let (answers, ()) = tokio::join!(futures_util::future::join_all(asks), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            server.resume();
        });
        assert_eq!(function_calls(&server) - before, 3);
        for (i, answer) in answers.iter().enumerate() {
            let answer = answer.as_ref().unwrap_or_else(|e| panic!("ask {i}: {e}"));
            assert_reserved(answer);
        }
        all_used(&store, &budgets[5], 74).await;
    });
}

/// One ask whose answer carries more numbers than Lua's stack holds at once (700 budgets of
/// six limits: 15,405 numbers asked, 9,104 answered) is answered whole.
#[test]
fn an_answer_of_many_numbers_is_answered_whole() {
    run_with_server(|_, c| async move {
        let store = store_named(&c, "huge");
        let budgets = of_six_buckets(700);
        let one = Cost::request();
        for _ in 0..2 {
            assert_reserved(&store.acquire(Ask::new(&budgets, &one)).await.unwrap());
        }
        all_used(&store, &budgets[699], 2).await;
    });
}

/// A call goes on until the last of its callers stops waiting: one whose deadline comes first
/// leaves alone, and the call answers the others. (Redis paused past the first call's
/// deadline: the second call, of two callers, goes when the first ends, and Redis answers it
/// after the first of the two has left.)
#[test]
fn a_caller_about_to_leave_does_not_fail_the_others_of_its_call() {
    run_with_server(|server, _| async move {
        // A connection with no deadline of its own (redis-rs gives its calls 500 ms unless
        // told otherwise): the store's are the only ones.
        let client = redis::Client::open(server.url()).unwrap();
        let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(None);
        let c = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        let store = store_named(&c, "late").timeout(Duration::from_secs(1));
        let budgets = [StoreBudget::new("x", bucket_policy(100_000))];
        let one = Cost::request();
        assert!(store
            .acquire(Ask::new(&budgets, &one))
            .await
            .unwrap()
            .reserved()
            .is_some());
        server.pause();
        let after = |ms| {
            let (store, budgets, one) = (&store, &budgets, &one);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                store.acquire(Ask::new(budgets, one)).await
            }
        };
        let (first, early, late, ()) = tokio::join!(after(0), after(100), after(800), async {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            server.resume();
        });
        assert!(
            first.is_err(),
            "nothing answered the first within its deadline"
        );
        assert!(
            early.is_err(),
            "nothing answered the second within its deadline"
        );
        let late =
            late.expect("the third is answered: its call went on past the second's deadline");
        assert_reserved(&late);
    });
}

/// A store on a runtime of its own (see `store_on_own_runtime`), its library loaded, and a
/// budget of one in-flight slot.
fn one_slot_store(
    server: &RedisServer,
    namespace: &str,
) -> (
    tokio::runtime::Runtime,
    Arc<RedisStore<redis::aio::MultiplexedConnection>>,
    [StoreBudget; 1],
) {
    let (main, store) = store_on_own_runtime(server, namespace);
    three_at_once_on_a_runtime_of_their_own(
        &store,
        &[StoreBudget::new("warm", bucket_policy(100))],
    );
    (main, store, [StoreBudget::new("x", one_slot())])
}

/// A multi-thread runtime of one worker thread: a caller's, to shut down.
fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// One in-flight slot, on a bucket far above what a test uses.
fn one_slot() -> Policy {
    Policy::builder()
        .max_in_flight(1)
        .limit(
            Dimension::Requests,
            Limit::per_minute(100_000).algorithm(Algorithm::TokenBucket),
        )
        .build()
        .unwrap()
}

/// A call whose task is dropped while it is in flight (its runtime shut down) ends the leases
/// of its acquisitions: none of its callers has an answer, so none holds the slot.
#[test]
fn a_call_dropped_in_flight_ends_its_leases() {
    let server = RedisServer::start();
    let (_main, store, budgets) = one_slot_store(&server, "dropped");
    server.pause();
    {
        let caller = one_worker();
        let (store, budgets) = (Arc::clone(&store), budgets.clone());
        let _asking = caller.spawn(async move {
            let _ = store.acquire(Ask::new(&budgets, &Cost::request())).await;
        });
        // Sent (from a task of the caller's runtime), then that runtime shuts down.
        std::thread::sleep(Duration::from_millis(50));
    }
    server.resume();
    assert_admitted_again(
        &store,
        &budgets,
        "the slot came back when the call was dropped, not when its lease ran out",
    );
}

/// An admission whose answer reached its caller's channel, and which its caller never read
/// (it left at that moment), ends its lease.
#[test]
fn an_answer_its_caller_never_reads_ends_its_lease() {
    let server = RedisServer::start();
    let (main, store, budgets) = one_slot_store(&server, "unread");
    let one = Cost::request();
    let asking = store.acquire(Ask::new(&budgets, &one));
    drop(answered_unread(&server, &main, asking));
    assert_admitted_again(
        &store,
        &budgets,
        "the slot came back when the answer was dropped unread",
    );
}

/// An answer left unread in a task of a runtime that then shuts down (the task dropped with
/// it) ends its lease too: from the process's own runtime, not the one going.
#[test]
fn an_answer_unread_when_its_runtime_shuts_down_ends_its_lease() {
    let server = RedisServer::start();
    let (_main, store, budgets) = one_slot_store(&server, "unread-shutdown");
    {
        let caller = one_worker();
        let (store, budgets) = (Arc::clone(&store), budgets.clone());
        let _holding = caller.spawn(async move {
            let one = Cost::request();
            let mut asking = store.acquire(Ask::new(&budgets, &one));
            // Sent (its call's task waits for this one to yield: one worker thread).
            std::future::poll_fn(|cx| {
                assert!(asking.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            // Holds its future, and never reads its answer.
            std::future::pending::<()>().await;
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_admitted_again(
        &store,
        &budgets,
        "the slot came back when the runtime shut down",
    );
}

/// `asking` polled once on `main`, Redis paused (so it waits: it is sent), then answered
/// by Redis, and not polled again: its answer waits in its channel, unread.
fn answered_unread<F: std::future::Future + Unpin>(
    server: &RedisServer,
    main: &tokio::runtime::Runtime,
    mut asking: F,
) -> F {
    let before = function_calls(server);
    server.pause();
    main.block_on(std::future::poll_fn(|cx| {
        let polled = std::pin::Pin::new(&mut asking).poll(cx);
        assert!(polled.is_pending(), "Redis is paused");
        std::task::Poll::Ready(())
    }));
    server.resume();
    let started = Instant::now();
    while function_calls(server) == before {
        assert!(started.elapsed() < Duration::from_secs(5), "the call ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its reply on its way to the channel.
    std::thread::sleep(Duration::from_millis(100));
    asking
}

/// An acquisition is admitted within a second of asking again and again: the slot came back
/// (`why`), not when its lease ran out.
fn assert_admitted_again(
    store: &RedisStore<redis::aio::MultiplexedConnection>,
    budgets: &[StoreBudget],
    why: &str,
) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let answer = current_thread()
            .block_on(store.acquire(Ask::new(budgets, &Cost::request())))
            .expect("the store answers");
        if answer.reserved().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not admitted again within a second: {why}");
}

/// A place in line whose answer its caller never reads is given back: the next request is
/// not held behind it.
#[test]
fn a_place_its_caller_never_learns_of_is_given_back() {
    let server = RedisServer::start();
    let (main, store) = store_on_own_runtime(&server, "place");
    let second = Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::per_second(1)
                .algorithm(Algorithm::TokenBucket)
                .margin(Duration::ZERO),
        )
        .build()
        .unwrap();
    let budgets = [StoreBudget::new("x", second)];
    let one = Cost::request();
    // Beyond the horizon (none), within the wait: a place in line, no reservation.
    let ahead = || {
        Ask::new(&budgets, &one)
            .max_wait(Duration::from_secs(10))
            .horizon(Duration::ZERO)
    };
    let first = current_thread()
        .block_on(store.acquire(Ask::new(&budgets, &one)))
        .unwrap();
    assert!(first.reserved().is_some());
    drop(answered_unread(&server, &main, store.acquire(ahead())));
    std::thread::sleep(Duration::from_millis(100));
    let next = current_thread().block_on(store.acquire(ahead())).unwrap();
    let tokengate::store::Answer::Refused(tokengate::store::Refusal::Ahead { wait, .. }) = next
    else {
        panic!("a place in line: {next:?}");
    };
    // Its own instant, when the bucket has the next request: within the second of the
    // first; behind the place not given back, a second later.
    assert!(wait < Duration::from_millis(900), "{wait:?}");
}
