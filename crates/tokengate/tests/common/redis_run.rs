//! A test's body against a `redis-server` of its own: the server started on a free loopback
//! port and stopped when the body ends, a connection to it, and stores on it, each in a
//! namespace of its own, on a manual clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokengate::redis::RedisStore;
use tokengate::ManualClock;

use super::redis_server::RedisServer;

/// The lease of [`store`]'s in-flight slots.
pub const LEASE: Duration = Duration::from_secs(30);

/// Runs `test` against a server of its own (stopped when it ends), within 60 s.
pub fn run<F: std::future::Future>(
    test: impl FnOnce(redis::aio::ConnectionManager) -> F,
) -> F::Output {
    run_with_server(|_, connection| test(connection))
}

/// [`run`], the test given the server too.
pub fn run_with_server<F: std::future::Future>(
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
pub fn store(connection: &redis::aio::ConnectionManager) -> (RedisStore, ManualClock) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let clock = ManualClock::new();
    let namespace = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = RedisStore::with_connection(connection.clone())
        .namespace("tokengate-test", &namespace)
        .lease(LEASE)
        .with_manual_clock(clock.clone());
    (store, clock)
}

/// The text of `INFO commandstats`, asked on `connection`: read with
/// [`command_stat`](super::redis_server::command_stat).
pub async fn command_stats_on(connection: &mut impl redis::aio::ConnectionLike) -> String {
    redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO commandstats")
}

/// The text of `INFO commandstats` of `server`, asked on a connection of its own, from
/// synchronous code.
pub fn command_stats(server: &RedisServer) -> String {
    let mut connection = redis::Client::open(server.url())
        .expect("a Redis URL")
        .get_connection()
        .expect("connects");
    redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .expect("INFO commandstats")
}
