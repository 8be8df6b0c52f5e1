//! A store that connects at its first call ([`RedisStore::lazy`]): made by synchronous code,
//! outside any runtime (a limits file's `[store]` read before `main` starts tokio), it never
//! panics for want of one and never blocks.

use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::{RedisStore, DEFAULT_TIMEOUT};
use crate::store::StoreError;

/// The connection of a store made by [`RedisStore::lazy`]: a redis-rs `ConnectionManager`
/// (reconnecting by itself, with backoff, when its connection is closed or refused) made at
/// the first call, on the tokio runtime of that call, and made anew after a call on it timed
/// out (a server gone silent without closing the connection). Clones share it.
///
/// Its `Debug` shows the address and database, never a password.
///
/// # Examples
/// ```
/// use tokengate::redis::{LazyConnection, RedisStore};
///
/// // No runtime, no server: nothing connects yet.
/// let store: RedisStore<LazyConnection> = RedisStore::lazy("redis://127.0.0.1:6379/0")?;
/// # Ok::<(), tokengate::store::StoreError>(())
/// ```
#[derive(Clone)]
pub struct LazyConnection {
    client: redis::Client,
    slot: Arc<Mutex<Slot>>,
}

/// The manager in use, if made, and how many were made (which one a call used).
#[derive(Default)]
struct Slot {
    manager: Option<(ConnectionManager, u64)>,
    made: u64,
}

impl std::fmt::Debug for LazyConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.client.get_connection_info();
        f.debug_struct("LazyConnection")
            .field("addr", &info.addr().to_string())
            .field("db", &info.redis_settings().db())
            .field("connected", &self.lock().manager.is_some())
            .finish()
    }
}

impl LazyConnection {
    fn new(client: redis::Client) -> Self {
        Self {
            client,
            slot: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot is whole at every instant.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection manager and its number, made now if there is none.
    fn manager(&self) -> RedisResult<(ConnectionManager, u64)> {
        let mut slot = self.lock();
        if let Some(current) = slot.manager.as_ref() {
            return Ok(current.clone());
        }
        // redis-rs spawns the manager's tasks on the current runtime, and panics without one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "the Redis store is called outside a tokio runtime: call it from one",
            )));
        }
        // `rediss://` needs a rustls crypto provider, as `RedisStore::connect` makes sure.
        #[cfg(feature = "redis-tls")]
        super::client::default_crypto_provider();
        // As `RedisStore::connect`; the store's own deadline bounds each call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_TIMEOUT))
            .set_number_of_retries(3);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        slot.made += 1;
        slot.manager = Some((manager.clone(), slot.made));
        Ok((manager, slot.made))
    }

    /// Gives up manager number `number` after a call on it timed out: the next call makes a
    /// new one.
    fn judge<T>(&self, number: u64, result: &RedisResult<T>) {
        if matches!(result, Err(e) if e.is_timeout()) {
            let mut slot = self.lock();
            // Only the one that timed out: another call may have replaced it already.
            if slot.manager.as_ref().is_some_and(|(_, n)| *n == number) {
                slot.manager = None;
            }
        }
    }
}

impl ConnectionLike for LazyConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut manager, number) = self.manager()?;
            let result = manager.send_packed_command(cmd).await;
            self.judge(number, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut manager, number) = self.manager()?;
            let result = manager.send_packed_commands(pipeline, offset, count).await;
            self.judge(number, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }
}

impl RedisStore<LazyConnection> {
    /// A store on the Redis at `url` (`redis://[user:password@]host:port/db`) that connects
    /// at its first call rather than now: made without a runtime and without waiting, so that
    /// synchronous code (a limits file's `[store]`, read by
    /// [`Limiter::from_config_file`](crate::Limiter::from_config_file)) can make one. A Redis
    /// that does not answer is seen at the first call, as a failing store
    /// ([`StoreError::Backend`], which [`OnStoreError`](crate::OnStoreError) handles), and each
    /// later call tries again. Calls must run on a tokio runtime (a limiter's do); the
    /// connection lives on the runtime of the first call, and is made anew on the runtime of a
    /// later one if that runtime ends. To find an unreachable Redis at start-up instead, use
    /// [`RedisStore::connect`].
    ///
    /// # Errors
    /// [`StoreError::Backend`] when `url` is not a Redis URL (nothing is connected).
    ///
    /// # Examples
    /// ```
    /// use tokengate::redis::RedisStore;
    /// use tokengate::{Limiter, OnStoreError, Policy};
    ///
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
        Self::with_connection(LazyConnection::new(client))
    }
}
