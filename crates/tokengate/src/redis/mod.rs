//! The Redis store (feature `redis`): one set of limits shared by every process and machine
//! that uses the same Redis, decided by one Lua script a call on Redis's own clock.
//!
//! See [`RedisStore`], and [`store`](crate::store) for what every store does.

mod batch;
mod client;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod connection;
mod keys;
mod lazy;
mod making;
mod released;
pub(crate) mod script;
mod store;

pub use store::{RedisStore, DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_TIMEOUT};
