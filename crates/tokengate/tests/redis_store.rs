//! The Redis store through the body of tests every store runs (`tests/common/store_cases.rs`;
//! the in-memory store runs the same in `tests/store.rs`), on a real `redis-server` the test
//! starts on a free loopback port, with the instant of a manual clock passed to the script.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_store`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::redis_server::RedisServer;
use common::store_cases as cases;
use tokengate::redis::RedisStore;
use tokengate::ManualClock;

const LEASE: Duration = Duration::from_secs(30);

/// Runs `test` against a server of its own (stopped when it ends), within 60 s.
fn run<F: std::future::Future>(test: impl FnOnce(redis::aio::ConnectionManager) -> F) -> F::Output {
    let server = RedisServer::start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let connection = redis::aio::ConnectionManager::new(client)
                .await
                .expect("connects");
            tokio::time::timeout(Duration::from_secs(60), test(connection))
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
