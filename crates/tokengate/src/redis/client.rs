//! Stores on a [`redis::Client`] of your own (your TLS roots, a client certificate), the
//! library's text for a Redis whose users may not load it, and the TLS crypto provider.

use redis::aio::ConnectionManager;

use super::script::LIBRARY;
use super::store::RedisStore;
use crate::store::StoreError;

impl RedisStore<ConnectionManager> {
    /// Connects through `client`, as [`connect`](Self::connect) does through the client of a
    /// URL: one connection that reconnects by itself, with backoff, and that the store gives
    /// up for a new one when it goes silent. For what a URL cannot say,
    /// such as the roots a `rediss://` server's certificate is checked against (`connect`
    /// trusts the system's, and those of the file `SSL_CERT_FILE` names when set) or a client
    /// certificate: build the client with [`redis::Client::build_with_tls`].
    ///
    /// # Errors
    /// [`StoreError::Backend`] when Redis does not answer within
    /// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT), refuses the user, or the TLS handshake fails.
    ///
    /// # Examples
    /// With the feature `redis-tls`, trusting a CA of your own:
    /// ```no_run
    /// # #[cfg(feature = "redis-tls")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis::{Client, TlsCertificates};
    /// use tokengate::redis::RedisStore;
    ///
    /// let ca = std::fs::read("/etc/redis/ca.pem")?;
    /// let client = Client::build_with_tls(
    ///     "rediss://tokengate:secret@redis.internal:6380/0",
    ///     TlsCertificates { client_tls: None, root_cert: Some(ca) },
    /// )?;
    /// let store = RedisStore::from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(client: redis::Client) -> Result<Self, StoreError> {
        Self::connected(client).await
    }

    /// The name of the Redis Functions library this version of the crate calls: `tokengate_`
    /// and 8 hex digits of its text's hash (its functions are `NAME_acquire`, `NAME_settle`,
    /// ...).
    ///
    /// # Examples
    /// ```
    /// use tokengate::redis::RedisStore;
    ///
    /// assert!(RedisStore::library_name().starts_with("tokengate_"));
    /// ```
    pub fn library_name() -> &'static str {
        &LIBRARY.name
    }

    /// The library's text, as `FUNCTION LOAD` takes it. A store loads it by itself when its
    /// function is missing; where its ACL user may not (no `+function|load`), an administrator
    /// loads this text once per server and version of the crate, before the stores call it.
    ///
    /// # Examples
    /// An administrator's connection loads it (the reply is the library's name; a server that
    /// has it already answers an error saying so):
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokengate::redis::RedisStore;
    ///
    /// let admin = redis::Client::open("redis://admin:admin-secret@127.0.0.1:6379/0")?;
    /// let mut connection = admin.get_multiplexed_async_connection().await?;
    /// let name: String = redis::cmd("FUNCTION")
    ///     .arg("LOAD")
    ///     .arg(RedisStore::library_code())
    ///     .query_async(&mut connection)
    ///     .await?;
    /// assert_eq!(name, RedisStore::library_name());
    /// # Ok(()) }
    /// ```
    pub fn library_code() -> &'static str {
        &LIBRARY.code
    }
}

/// Makes rustls's `ring` provider the process's default when no provider is set, so that
/// `rediss://` connections work whichever rustls providers the build enables (rustls finds
/// none by itself when both `ring` and `aws-lc-rs` are on). A provider the application set
/// first stays.
#[cfg(feature = "redis-tls")]
pub(crate) fn default_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may set one meanwhile: then that one stays, as wanted. Deprecated
        // for its lack of post-quantum key exchange, which Redis servers do not offer either;
        // rustls itself uses it so when `ring` is its only provider.
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        let _ = ring.install_default();
    }
}
