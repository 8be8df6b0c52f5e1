//! Helpers shared by the integration tests: each test file that needs them says `mod common;`
//! and uses what it needs (hence `dead_code` allowed: no file uses all of it).
#![allow(dead_code, unreachable_pub)]

// A test's future on a runtime of its own, within a time bound.
#[cfg(feature = "tokio")]
pub mod bounded;
pub mod check_admissions;
// How soon a waiter has an in-flight slot another limiter frees.
#[cfg(feature = "tokio")]
pub mod freed_slot;
pub mod limiters;
pub mod meters;
// Random limits and policies for property tests.
pub mod policies;
// How many cases a property test runs, and where it keeps its failures.
pub mod properties;
// A redis-server of the test's own, for the Redis store's tests.
#[cfg(feature = "redis")]
pub mod redis_server;
// A test's body against a redis-server of its own, and stores on it.
#[cfg(feature = "redis")]
pub mod redis_run;
// The Redis user of docs/redis.md, and a round of every call a store makes, as that user.
#[cfg(feature = "redis")]
pub mod redis_acl;
// What a Redis holds (keys and their expiry), for the Redis store's tests.
#[cfg(feature = "redis")]
pub mod redis_keys;
// A store wrapped to log its answers and count its calls (a tokio task-local says which
// acquisitions the store decided).
#[cfg(feature = "tokio")]
pub mod logged_store;
// A TCP proxy that can stop forwarding, for fault tests.
pub mod tcp_proxy;
pub mod windows;
// Its HTTP server uses crates the `reqwest` feature brings.
#[cfg(feature = "reqwest")]
pub mod mock_provider;
pub mod request_vectors;
pub mod rng;
#[cfg(feature = "config")]
pub mod store_cases;
