//! Waiting for an in-flight slot on the Redis store: a settlement that frees one publishes it
//! on the namespace's channel, and a limiter waiting for a slot (in another process: here
//! another store, so another connection) asks again as soon as it hears it, rather than when
//! its backoff (up to a second) ends. Real time, on a redis-server of the test's own; small
//! smoke tests with generous bounds.
//!
//! Run: `cargo test -p tokengate --features redis --test redis_slots -- --nocapture`.

#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::freed_slot::time_to_a_freed_slot;
use common::redis_server::RedisServer;
use tokengate::redis::RedisStore;
use tokengate::{Cost, Limiter, Policy};

fn run<F: std::future::Future<Output = ()>>(test: F) {
    common::bounded::block_on_within(2, Duration::from_secs(60), test);
}

fn capped(slots: u64) -> Policy {
    Policy::builder()
        .requests_per_minute(6_000_000)
        .max_in_flight(slots)
        .build()
        .expect("a valid policy")
}

async fn limiter(url: &str, namespace: &str, slots: u64) -> Limiter {
    let store = RedisStore::connect(url)
        .await
        .expect("the store connects")
        .namespace("tokengate-slots", namespace);
    Limiter::new(capped(slots)).with_store(store)
}

/// One slot, held by one process for long enough that the other's backoff has grown to its
/// longest; freed, it reaches the other within milliseconds, five times over.
#[test]
fn a_freed_slot_wakes_a_waiter_in_another_process_at_once() {
    run(async {
        let server = RedisServer::start();
        let (holder, waiter) = (
            limiter(&server.url(), "wake", 1).await,
            Arc::new(limiter(&server.url(), "wake", 1).await),
        );
        let mut worst = Duration::ZERO;
        for round in 0..5 {
            let late = time_to_a_freed_slot(&holder, &waiter).await;
            println!("round {round}: the waiter had the slot {late:?} after it was freed");
            worst = worst.max(late);
        }
        let stats = waiter.store_stats();
        println!(
            "worst {worst:?}; the waiter asked {} times after a full cap",
            stats.in_flight_polls
        );
        assert!(
            worst < Duration::from_millis(150),
            "a freed slot waited {worst:?}"
        );
    });
}

/// Four slots, sixteen tasks each holding its slot 50 ms: through Redis the slots are used
/// about as fully as by one limiter in memory.
#[test]
fn a_full_cap_is_used_through_redis_as_in_memory() {
    run(async {
        let server = RedisServer::start();
        const SLOTS: u64 = 4;
        const HOLD: Duration = Duration::from_millis(50);
        const FOR: Duration = Duration::from_secs(3);
        async fn drive(limiters: Vec<Arc<Limiter>>) -> u64 {
            let done = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + FOR;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..16 {
                let (limiter, done) =
                    (Arc::clone(&limiters[i % limiters.len()]), Arc::clone(&done));
                tasks.spawn(async move {
                    while Instant::now() < until {
                        let left = until.saturating_duration_since(Instant::now());
                        if let Ok(permit) = limiter.acquire_timeout(Cost::request(), left).await {
                            tokio::time::sleep(HOLD).await;
                            drop(permit);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            done.load(Ordering::Relaxed)
        }
        let memory = drive(vec![Arc::new(Limiter::new(capped(SLOTS)))]).await;
        let mut shared = Vec::new();
        for _ in 0..4 {
            shared.push(Arc::new(limiter(&server.url(), "full", SLOTS).await));
        }
        let redis = drive(shared.clone()).await;
        let most = (FOR.as_millis() / HOLD.as_millis()) as u64 * SLOTS;
        let polls: u64 = shared.iter().map(|l| l.store_stats().in_flight_polls).sum();
        println!(
            "{SLOTS} slots held {HOLD:?} each for {FOR:?} (at most {most} calls): {memory} in \
             memory, {redis} through Redis by 4 limiters ({polls} asks after a full cap)"
        );
        assert!(
            redis * 10 >= memory * 8,
            "through Redis {redis} calls, in memory {memory}"
        );
    });
}
