//! [`RedisStore::connect_cluster`]: the Redis store on a Redis Cluster (feature
//! `redis-cluster`).
//!
//! Nothing else changes for a cluster: every key of a namespace carries the hash tag
//! `{NAMESPACE}`, so every call (one `FCALL`) names keys of one slot and goes to the primary
//! that owns it; the library is loaded with `FUNCTION LOAD`, which the cluster connection
//! sends to every primary.

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};

use super::connection::Make;
use super::store::{RedisStore, DEFAULT_TIMEOUT};
use crate::store::StoreError;

/// How many times the cluster connection retries a command (a redirection after the slots
/// moved, a node reconnecting, `TRYAGAIN`, `CLUSTERDOWN`) before it answers the error.
/// redis-rs's default (16, with waits growing to minutes) would outlive any store call.
const RETRIES: u32 = 4;

/// The longest wait between two retries, in milliseconds (they start at about 10 ms and
/// double): four of them fit well within [`DEFAULT_TIMEOUT`].
const MAX_RETRY_WAIT_MS: u64 = 250;

// The retries' waits, all at their longest, take at most half a default call's deadline.
const _: () = assert!(MAX_RETRY_WAIT_MS * RETRIES as u64 * 2 <= DEFAULT_TIMEOUT.as_millis() as u64);

impl RedisStore<ClusterConnection> {
    /// Connects to the Redis Cluster that `nodes` belong to (`redis://host:port` each; one
    /// reachable node is enough, the others are found from it), with a connection that
    /// follows the cluster's slots as they move and reconnects to each node by itself; the
    /// store makes a new one when a call times out with nothing answered on it since the call
    /// was sent (a node whose path went silent without closing its connection, which the
    /// cluster connection would keep, and retry, for as long as the socket lives).
    ///
    /// Each call goes to the primary that owns its namespace's slot (every key of a namespace
    /// shares its hash tag). A command is retried at most a few times, with short waits, and
    /// never past the store's deadline ([`RedisStore::timeout`], [`DEFAULT_TIMEOUT`] unless
    /// set): a cluster without a primary for a slot fails the calls to that slot at the
    /// deadline, which [`OnStoreError`](crate::OnStoreError) decides about.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a URL is malformed, or no node answers with the cluster's
    /// slots within [`DEFAULT_TIMEOUT`].
    ///
    /// # Examples
    /// ```no_run
    /// use tokengate::redis::RedisStore;
    /// use tokengate::{Cost, Limiter, Policy};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
    /// // Everything of namespace `acme` lives on the node that owns the slot of `{acme}`.
    /// let store = RedisStore::connect_cluster(&nodes).await?.namespace("tokengate", "acme");
    /// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).build()?)
    ///     .with_store(store);
    /// let permit = limiter.acquire(Cost::request()).await?;
    /// drop(permit);
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster(nodes: &[&str]) -> Result<Self, StoreError> {
        let client = ClusterClientBuilder::new(nodes.iter().copied())
            .connection_timeout(DEFAULT_TIMEOUT)
            // Each attempt on a node is bounded; the whole command, retries included, is
            // bounded by the store's own deadline (`timeout`), which may be set longer.
            .response_timeout(DEFAULT_TIMEOUT)
            .overall_response_timeout(None)
            .retries(RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(MAX_RETRY_WAIT_MS)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = Self::made(maker(client)).await?;
        // Freed slots are published cluster-wide: any node's subscription hears them.
        Ok(match nodes.first().map(|n| redis::Client::open(*n)) {
            Some(Ok(node)) => store.subscribing_through(node),
            _ => store,
        })
    }
}

/// Makes a cluster connection through `client`: connected to the nodes, the slots read, within
/// [`DEFAULT_TIMEOUT`].
fn maker(client: ClusterClient) -> Make<ClusterConnection> {
    Box::new(move || {
        let client = client.clone();
        Box::pin(async move {
            tokio::time::timeout(DEFAULT_TIMEOUT, client.get_async_connection())
                .await
                .map_err(|_| {
                    RedisError::from((
                        redis::ErrorKind::Client,
                        "the Redis Cluster did not answer",
                        format!("within {DEFAULT_TIMEOUT:?}"),
                    ))
                })?
        })
    })
}

/// Runs `cmd` on the primary that owns `key`'s slot, whatever keys `cmd` names: `SCAN` names
/// none, and the cluster connection would send it to a node at random.
pub(super) async fn query_on_owner<T: FromRedisValue>(
    connection: &mut ClusterConnection,
    key: &str,
    cmd: &Cmd,
) -> RedisResult<T> {
    let owner = Route::with_key(key, SlotAddr::Master);
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(owner));
    let value = connection.route_command(cmd.clone(), routing).await?;
    Ok(redis::from_redis_value(value.extract_error()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_malformed_node_is_an_error_at_once() {
        let e = RedisStore::connect_cluster(&["not a url"])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
        let e = RedisStore::connect_cluster(&[]).await.unwrap_err();
        assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    }
}
