//! A store that connects at its first call ([`RedisStore::lazy`]): made by synchronous code,
//! outside any runtime (a limits file's `[store]` read before `main` starts tokio), it never
//! panics for want of one and never blocks.

use redis::aio::ConnectionManager;
use redis::IntoConnectionInfo;

use super::RedisStore;
use crate::store::StoreError;

impl RedisStore<ConnectionManager> {
    /// A store on the Redis at `url` (`redis://[user:password@]host:port/db`) that connects
    /// at its first call rather than now: made without a runtime and without waiting, so that
    /// synchronous code (a limits file's `[store]`, read by
    /// [`Limiter::from_config_file`](crate::Limiter::from_config_file)) can make one. A Redis
    /// that does not answer is seen at the first call, as a failing store
    /// ([`StoreError::Backend`], which [`OnStoreError`](crate::OnStoreError) handles), and each
    /// later call tries again. Calls must run on a tokio runtime (a limiter's do: its blocking
    /// calls on a runtime of its own); the connection is made, as every one the store makes,
    /// on a runtime that is always driven: the first call's when it has worker threads, else
    /// the process's own. Once made, it is the connection [`RedisStore::connect`] makes:
    /// reconnecting by itself when closed, given up for a new one when silent. To find an
    /// unreachable Redis at start-up instead, use [`RedisStore::connect`].
    ///
    /// # Errors
    /// [`StoreError::Backend`] when `url` is not a Redis URL (nothing is connected).
    ///
    /// # Examples
    /// ```
    /// use tokengate::redis::RedisStore;
    /// use tokengate::{Limiter, OnStoreError, Policy};
    ///
    /// // No runtime, no server: nothing connects yet.
    /// let store = RedisStore::lazy("redis://127.0.0.1:6379/0")?.namespace("tokengate", "prod");
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).build()?)
    ///     .with_store(store)
    ///     .on_store_error(OnStoreError::LocalShare(0.25));
    /// assert!(RedisStore::lazy("http://127.0.0.1:6379").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lazy(url: impl IntoConnectionInfo) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self::lazy_on(client))
    }

    /// [`lazy`](Self::lazy) on a client already made.
    pub(crate) fn lazy_on(client: redis::Client) -> Self {
        Self::lazily(client)
    }
}
