//! A store-backed permit whose runtime stops driving its tasks while it lives (a runtime made
//! for one call, as synchronous code does, then dropped, or kept but left idle through the
//! call): its lease is still renewed while it lives, from the process's own runtime, and its
//! slot freed when it ends; and on Redis, a store connected on such a runtime answers from
//! another. In memory and on Redis. Real time (the renewals are what is measured), with
//! generous bounds.
#![cfg(all(feature = "tokio", feature = "config"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::logged_store::Logged;
use tokengate::store::{MemoryStore, Store, StoreBudget};
use tokengate::{Cost, Limiter, Permit, Policy, SystemClock};

/// A current-thread runtime, as made for one call.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A multi-thread runtime of one worker, as made for one call too: its tasks are driven
/// whatever the caller does, until it shuts down.
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

/// The slots `store` holds on its `account` budget of [`one_slot`], read on `reader`.
fn in_flight(reader: &tokio::runtime::Runtime, store: &dyn Store) -> u64 {
    reader
        .block_on(store.snapshot(&StoreBudget::new("account", one_slot())))
        .unwrap()
        .in_flight
}

/// Checks, every 20 ms for `time`, that the slot is held: a lease that lapsed, even if renewed
/// after (a renewal extends a lease the store has not yet dropped), is seen.
fn held_throughout(time: Duration, held: &impl Fn() -> u64) {
    let start = Instant::now();
    while start.elapsed() < time {
        assert_eq!(
            held(),
            1,
            "the lease was renewed ({:?} in)",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What becomes of the runtime a permit was acquired on, while the permit lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Dropped.
    ShutDown,
    /// Kept, but not driven (nothing blocks on it) until the permit has ended.
    Idle,
    /// Kept, and never driven again, not even once the permit has ended (on Redis only).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    IdleForGood,
}

/// Acquires a slot of `limiter`'s on `call`, a runtime made for it, which then shuts down or
/// idles (`then`) with the permit alive. With a `lease`, the slot is still held after twice
/// the lease (renewed all along); once the permit ends, it is freed within 5 s (settled, not
/// left to the lease: an idle runtime is driven again for that, unless idle for good). No
/// store call fails but those `failing` allows.
fn outlive_the_call(
    limiter: &Limiter,
    call: tokio::runtime::Runtime,
    then: Then,
    lease: Option<Duration>,
    failing: u64,
    held: impl Fn() -> u64,
) {
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    let call = match then {
        Then::ShutDown => {
            drop(call);
            None
        }
        Then::Idle | Then::IdleForGood => Some(call),
    };
    let driven = call.as_ref().filter(|_| then == Then::Idle);
    held_then_freed(permit, driven, lease, &held);
    let errors = limiter.store_stats().errors;
    assert!(errors <= failing, "{errors} store calls failed");
}

/// `permit`'s slot is held, and with a `lease` still after twice the lease; once `permit`
/// ends, it is freed within 5 s (with `idle`, the runtime it was acquired on, driven again).
fn held_then_freed(
    permit: Permit<'_, SystemClock>,
    idle: Option<&tokio::runtime::Runtime>,
    lease: Option<Duration>,
    held: &impl Fn() -> u64,
) {
    assert_eq!(held(), 1);
    if let Some(lease) = lease {
        held_throughout(2 * lease, held);
    }
    drop(permit);
    freed(idle, held);
}

/// The slot is freed within 5 s (with `idle`, the runtime a permit was acquired on, driven
/// meanwhile).
fn freed(idle: Option<&tokio::runtime::Runtime>, held: &impl Fn() -> u64) {
    let start = Instant::now();
    while held() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slot is freed within 5 s"
        );
        let pause = Duration::from_millis(5);
        match idle {
            Some(call) => call.block_on(async { tokio::time::sleep(pause).await }),
            None => std::thread::sleep(pause),
        }
    }
}

/// In memory, a lease of 1.5 s (renewed every 0.5 s), a permit acquired on `call`.
fn in_memory(call: tokio::runtime::Runtime, then: Then) {
    let lease = Duration::from_millis(1_500);
    let store = Arc::new(MemoryStore::new().lease(lease));
    let limiter = Limiter::new(one_slot())
        .with_store(Arc::clone(&store))
        .with_store_lease(lease);
    let reader = runtime();
    outlive_the_call(&limiter, call, then, Some(lease), 0, || {
        in_flight(&reader, &*store)
    });
}

#[test]
fn a_permit_whose_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends() {
    in_memory(runtime(), Then::ShutDown);
}

#[test]
fn a_permit_whose_multi_thread_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends() {
    in_memory(multi_thread_runtime(), Then::ShutDown);
}

#[test]
fn a_permit_whose_runtime_idles_keeps_its_slot_and_frees_it_when_it_ends() {
    in_memory(runtime(), Then::Idle);
}

/// A permit's runtime left idle in the middle of a renewal (a `block_on` ends while the
/// renewal waits for its answer, which that runtime would deliver): the lease runs from the
/// renewal before, and is renewed from elsewhere in time.
#[test]
fn a_permit_whose_runtime_idles_in_the_middle_of_a_renewal_keeps_its_slot() {
    // A lease of 1.5 s, renewed every 0.5 s; each renewal takes 0.2 s.
    let lease = Duration::from_millis(1_500);
    let store = Arc::new(
        Logged::new(MemoryStore::new().lease(lease)).slow_renewals(Duration::from_millis(200)),
    );
    let limiter = Limiter::new(one_slot())
        .with_store(Arc::clone(&store))
        .with_store_lease(lease);
    let call = runtime();
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    // Driven until the first renewal is under way (from 0.5 s to 0.7 s), then left idle.
    call.block_on(async { tokio::time::sleep(Duration::from_millis(600)).await });
    assert_eq!(store.in_flight(), 1, "a renewal is under way");
    let reader = runtime();
    held_then_freed(permit, Some(&call), Some(lease), &|| {
        in_flight(&reader, store.inner())
    });
}

#[test]
fn a_permit_ended_after_its_runtime_shut_down_frees_its_slot() {
    // A lease far longer than the test: only the settlement frees the slot.
    let store = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(one_slot()).with_store(Arc::clone(&store));
    let reader = runtime();
    outlive_the_call(&limiter, runtime(), Then::ShutDown, None, 0, || {
        in_flight(&reader, &*store)
    });
}

/// On Redis, the store connected on the runtime that shuts down or idles: its connection is
/// made on a runtime that is always driven (a connection made on this one would go, or stop,
/// with it), and no call fails. The calls' deadline is short, so that a call on a connection
/// that stopped would fail within the test.
#[cfg(feature = "redis")]
fn on_redis(call: tokio::runtime::Runtime, then: Then, lease: Option<Duration>) {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    let on = |runtime: &tokio::runtime::Runtime| {
        let store = runtime
            .block_on(RedisStore::connect(&server.url()))
            .unwrap()
            .namespace("tokengate-test", "runtimes")
            .timeout(Duration::from_millis(300));
        match lease {
            Some(lease) => store.lease(lease),
            None => store,
        }
    };
    // What the store holds, read on a connection of a runtime that lives.
    let reader = runtime();
    let read = on(&reader);
    let limiter = Limiter::new(one_slot()).with_store(on(&call));
    let limiter = match lease {
        Some(lease) => limiter.with_store_lease(lease),
        None => limiter,
    };
    outlive_the_call(&limiter, call, then, lease, 0, || in_flight(&reader, &read));
}

#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_whose_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends() {
    // A lease of 3 s, renewed every second.
    on_redis(runtime(), Then::ShutDown, Some(Duration::from_secs(3)));
}

#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_whose_multi_thread_runtime_shut_down_keeps_its_slot_and_frees_it_when_it_ends()
{
    on_redis(
        multi_thread_runtime(),
        Then::ShutDown,
        Some(Duration::from_secs(3)),
    );
}

#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_ended_after_its_runtime_shut_down_frees_its_slot() {
    on_redis(runtime(), Then::ShutDown, None);
}

#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_whose_runtime_idles_keeps_its_slot_and_frees_it_when_it_ends() {
    on_redis(runtime(), Then::Idle, Some(Duration::from_secs(3)));
}

/// On Redis, a permit ended while the current-thread runtime it was acquired on idles for
/// good: its settlement goes from a runtime that is driven, and frees the slot (no lease
/// renewed: the default lease is far longer than the test).
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_ended_while_its_runtime_idles_for_good_frees_its_slot() {
    on_redis(runtime(), Then::IdleForGood, None);
}

/// On Redis, a provider's pause reported on a current-thread runtime that then idles for good
/// reaches the store, for every process sharing it, without that runtime being driven again.
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_pause_reported_on_a_runtime_left_idle_is_shared() {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    let call = runtime();
    let store = call
        .block_on(RedisStore::connect(&server.url()))
        .unwrap()
        .namespace("tokengate-test", "runtimes");
    let limiter = Limiter::new(one_slot()).with_store(store);
    call.block_on(async { limiter.pause(Duration::from_secs(30)) });
    let reader = runtime();
    let read = reader
        .block_on(RedisStore::connect(&server.url()))
        .unwrap()
        .namespace("tokengate-test", "runtimes");
    let start = Instant::now();
    let paused = loop {
        let snapshot = reader
            .block_on(read.snapshot(&StoreBudget::new("account", one_slot())))
            .unwrap();
        if !snapshot.paused_for.is_zero() || start.elapsed() > Duration::from_secs(5) {
            break snapshot.paused_for;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        paused > Duration::from_secs(20),
        "the pause is shared within 5 s ({paused:?} left)"
    );
    assert_eq!(limiter.store_stats().errors, 0);
}

/// Three blocking acquisitions of `limiter`'s, each admitted (and released), and no store
/// call failed.
#[cfg(feature = "redis")]
fn answers_blocking_calls(limiter: &Limiter) {
    for call in 0..3 {
        let permit = limiter.acquire_blocking(Cost::request());
        assert!(permit.is_ok(), "call {call}: {}", permit.unwrap_err());
    }
    assert_eq!(limiter.store_stats().errors, 0);
}

/// A store connected on a runtime made for that alone, then dropped, and used from another:
/// its first call answers. On a current-thread runtime the connection is made elsewhere; on
/// a multi-thread one it is made there, goes with it, and the first call opens a new one.
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_store_connected_on_a_runtime_since_shut_down_answers_its_first_call() {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    for connect_on in [runtime(), multi_thread_runtime()] {
        let store = connect_on
            .block_on(RedisStore::connect(&server.url()))
            .unwrap()
            .namespace("tokengate-test", "connected");
        drop(connect_on);
        let limiter = Limiter::new(one_slot()).with_store(store);
        answers_blocking_calls(&limiter);
    }
}

/// A store from a limits file (`RedisStore::lazy`) connects at its first call: one made on a
/// runtime for that call alone (a snapshot), which then shuts down or idles, does not leave
/// the store's connection there. The calls after it, from `acquire_blocking`, answer.
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_lazy_store_first_called_on_a_runtime_made_for_it_answers_after() {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    for then in [Then::ShutDown, Then::IdleForGood] {
        let store = Arc::new(
            RedisStore::lazy(server.url().as_str())
                .unwrap()
                .namespace("tokengate-test", "lazy")
                .timeout(Duration::from_millis(300)),
        );
        let limiter = Limiter::new(one_slot()).with_store(Arc::clone(&store));
        let first = runtime();
        assert_eq!(in_flight(&first, &*store), 0);
        let _idle = (then == Then::IdleForGood).then_some(first);
        answers_blocking_calls(&limiter);
    }
}

/// On a connection of your own, made on a current-thread runtime that is driven only while a
/// call blocks on it: a permit ended while that runtime idles (longer than the store's
/// deadline) settles when it is driven again, on the runtime its connection needs.
#[cfg(feature = "redis")]
#[test]
fn on_redis_a_permit_on_a_connection_of_your_own_settles_when_its_runtime_is_driven() {
    use tokengate::redis::RedisStore;
    let server = common::redis_server::RedisServer::start();
    let call = runtime();
    let connection = call
        .block_on(
            redis::Client::open(server.url())
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .unwrap();
    let store = RedisStore::with_connection(connection)
        .namespace("tokengate-test", "own")
        .timeout(Duration::from_millis(300));
    let limiter = Limiter::new(one_slot()).with_store(store);
    let reader = runtime();
    let read = reader
        .block_on(RedisStore::connect(&server.url()))
        .unwrap()
        .namespace("tokengate-test", "own");
    let permit = call.block_on(limiter.acquire(Cost::request())).unwrap();
    drop(permit);
    std::thread::sleep(Duration::from_secs(1));
    freed(Some(&call), &|| in_flight(&reader, &read));
    assert_eq!(limiter.store_stats().errors, 0);
}
