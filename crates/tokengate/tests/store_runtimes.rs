//! A store-backed permit that outlives the runtime it was acquired on (a runtime made for one
//! call, as synchronous code does, then dropped with the permit alive): its lease is still
//! renewed while it lives, and its slot freed when it ends, from the process's own runtime.
//! Real time (the renewals are what is measured), with generous bounds.
#![cfg(all(feature = "tokio", feature = "config"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokengate::store::{MemoryStore, Store, StoreBudget};
use tokengate::{Cost, Limiter, Policy};

/// A current-thread runtime, as made for one call.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn one_slot() -> Policy {
    Policy::builder()
        .requests_per_minute(60_000)
        .max_in_flight(1)
        .build()
        .unwrap()
}

/// The slots held on the store's `account` budget, read from a runtime of its own.
fn in_flight(store: &Arc<MemoryStore>, policy: &Policy) -> u64 {
    runtime()
        .block_on(store.snapshot(&StoreBudget::new("account", policy.clone())))
        .unwrap()
        .in_flight
}

/// Waits (5 s at most) until `store` holds `slots`.
fn until_in_flight(store: &Arc<MemoryStore>, policy: &Policy, slots: u64) {
    let start = Instant::now();
    while in_flight(store, policy) != slots {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the store holds {slots} slots within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_permit_whose_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends() {
    // A lease of 1.5 s, renewed every 0.5 s.
    let lease = Duration::from_millis(1_500);
    let policy = one_slot();
    let store = Arc::new(MemoryStore::new().lease(lease));
    let limiter = Limiter::new(policy.clone())
        .with_store(Arc::clone(&store))
        .with_store_lease(lease);
    let call = runtime();
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    drop(call);
    assert_eq!(in_flight(&store, &policy), 1);
    // Twice the lease: renewed all along, from the process's own runtime.
    std::thread::sleep(2 * lease);
    assert_eq!(in_flight(&store, &policy), 1, "the lease was renewed");
    // Settled from the process's own runtime too: the slot is free at once, not when the
    // lease runs out.
    drop(permit);
    until_in_flight(&store, &policy, 0);
}

#[test]
fn a_permit_ended_after_its_runtime_shut_down_frees_its_slot() {
    // A lease far longer than the test: only the settlement frees the slot.
    let policy = one_slot();
    let store = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(policy.clone()).with_store(Arc::clone(&store));
    let call = runtime();
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    drop(call);
    drop(permit);
    until_in_flight(&store, &policy, 0);
}

#[cfg(feature = "redis")]
mod common;

/// The same on Redis, whose connection was made on the runtime that shut down (its task gone
/// with it): the first renewal fails on it, and the connection reconnects, from the process's
/// own runtime, in time for the next.
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_whose_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends() {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    // A lease of 3 s, renewed every second.
    let lease = Duration::from_secs(3);
    let policy = one_slot();
    let on = |runtime: &tokio::runtime::Runtime| {
        runtime
            .block_on(RedisStore::connect(&server.url()))
            .unwrap()
            .namespace("tokengate-test", "runtimes")
            .lease(lease)
    };
    // What the store holds, read on a connection of a runtime that lives.
    let reader = runtime();
    let read = on(&reader);
    let held = || {
        reader
            .block_on(read.snapshot(&StoreBudget::new("account", policy.clone())))
            .unwrap()
            .in_flight
    };
    let call = runtime();
    let limiter = Limiter::new(policy.clone())
        .with_store(on(&call))
        .with_store_lease(lease);
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    drop(call);
    assert_eq!(held(), 1);
    std::thread::sleep(2 * lease);
    assert_eq!(held(), 1, "the lease was renewed");
    drop(permit);
    let start = Instant::now();
    while held() != 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "freed within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}
