//! Slots freed, heard on the namespace's channel: a settlement that frees an in-flight slot
//! publishes its budget's state key there (`decide.lua`, `settle`), and a store whose caller
//! waits for a slot listens, so that the waiter asks again as soon as one comes back rather
//! than when its backoff ends.
//!
//! One subscription per store, made when a caller first waits for a slot (a store whose caps
//! are never full never subscribes). What it may miss (a message sent while it subscribes or
//! reconnects, a lease that ran out, which publishes nothing) the caller's backoff covers: a
//! wait for a release is always bounded by it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::task::AbortHandle;

use super::DEFAULT_TIMEOUT;
use crate::store::freed::Freed;

/// How often a lost subscription is made again, at most.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// The releases heard, by budget state key, and the subscription that hears them.
#[derive(Debug, Default)]
pub(super) struct Releases {
    heard: Freed,
    listener: Mutex<Listener>,
}

/// The subscription's task, while it runs, and when it was last started.
#[derive(Debug, Default)]
struct Listener {
    task: Option<AbortHandle>,
    started: Option<Instant>,
}

impl Releases {
    /// How many releases were heard on the budget whose state key is `key`: taken before an
    /// ask, so that a release heard after it wakes the waiter.
    pub(super) fn mark(&self, key: &str) -> u64 {
        self.heard.mark(key)
    }

    /// Resolves once a release on `key` heard after `mark` falls to this waiter (each wakes
    /// one; never, should none: the caller bounds the wait). Subscribes first, on `client`,
    /// if no subscription runs.
    pub(super) async fn after(
        self: &Arc<Self>,
        client: &redis::Client,
        channel: &str,
        key: &str,
        mark: u64,
    ) {
        self.listen(client, channel);
        self.heard.after(key, mark).await;
    }

    /// Starts the subscription unless it runs, or was started less than [`RESUBSCRIBE`] ago.
    fn listen(self: &Arc<Self>, client: &redis::Client, channel: &str) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.task.as_ref().is_some_and(|t| !t.is_finished())
            || listener.started.is_some_and(|t| t.elapsed() < RESUBSCRIBE)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, channel) = (client.clone(), channel.to_owned());
        let releases = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            let subscribed = tokio::time::timeout(DEFAULT_TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let Ok(Ok(mut pubsub)) = subscribed else {
                return;
            };
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // The store gone, its subscription goes.
                let Some(releases) = releases.upgrade() else {
                    return;
                };
                let Ok(key) = std::str::from_utf8(message.get_payload_bytes()) else {
                    continue;
                };
                // One slot came back: one waiter here asks again (every process hears it and
                // sends one; waking every waiter would send an ask per waiter).
                releases.heard.free(key);
            }
        });
        listener.task = Some(task.abort_handle());
        listener.started = Some(Instant::now());
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        let listener = self
            .listener
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = listener.task.take() {
            task.abort();
        }
    }
}
