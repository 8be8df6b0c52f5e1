//! The Redis store through the body of tests every store runs (`tests/common/store_cases.rs`;
//! the in-memory store runs the same in `tests/store.rs`), on a real `redis-server` the test
//! starts on a free loopback port, with the instant of a manual clock passed to the script.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_store`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_run::{command_stats_on, run, store, LEASE};
use common::redis_server::{command_stat, RedisServer};
use common::store_cases as cases;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreBudget};
use tokengate::{Algorithm, Cost, Dimension, Limit, Policy};

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
fn a_settlement_refunds_nothing_a_later_reservation_took() {
    run(|c| async move {
        let (store, clock) = store(&c);
        cases::a_settlement_refunds_nothing_a_later_reservation_took(&store, &clock, "").await
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
    let info = command_stats_on(connection).await;
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

// ---------------------------------------------------------------------------------------
// Settings out of range: cut to what the store can hold, never a panic or a limit lost.

/// A deadline of `Duration::MAX` is cut to a day, and a lease of it kept below what a Redis score
/// holds: calls are made (no instant overflows), and a slot stays held (a lease whose end did
/// not fit in a score would free it at once).
#[test]
fn a_deadline_or_a_lease_without_end_neither_panics_nor_frees_a_slot() {
    run(|c| async move {
        let (store, _clock) = store(&c);
        let store = store.timeout(Duration::MAX).lease(Duration::MAX);
        let policy = Policy::builder()
            .max_in_flight(1)
            .requests_per_minute(1_000)
            .build()
            .unwrap();
        let budgets = [StoreBudget::new("x", policy)];
        let one = Cost::request();
        let first = store.acquire(Ask::new(&budgets, &one)).await.unwrap();
        assert!(first.reserved().is_some());
        let second = store.acquire(Ask::new(&budgets, &one)).await.unwrap();
        assert!(
            matches!(
                second,
                tokengate::store::Answer::Refused(tokengate::store::Refusal::InFlightFull { .. })
            ),
            "{second:?}"
        );
    });
}
