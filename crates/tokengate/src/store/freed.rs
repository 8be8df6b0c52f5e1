//! Freed in-flight slots, by budget: a count, and the waiters a freed slot wakes (one each),
//! for [`Store::released`](super::Store::released). The in-memory store counts its own
//! settlements; the Redis store, what its subscription hears from every process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Budgets' freed slots, by key (a budget's name, or its state key in Redis).
#[derive(Debug, Default)]
pub(crate) struct Freed {
    by_key: Mutex<HashMap<String, Arc<Slots>>>,
}

/// One budget's: how many slots were freed, and its waiters.
#[derive(Debug, Default)]
struct Slots {
    count: AtomicU64,
    wake: Notify,
}

/// Budgets waited on are few; a map grown past this starts again (the waiters keep their
/// entries, and fall back on their backoff).
const KEYS: usize = 4096;

impl Freed {
    fn slots(&self, key: &str) -> Arc<Slots> {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = by_key.get(key) {
            return Arc::clone(s);
        }
        if by_key.len() >= KEYS {
            by_key.clear();
        }
        Arc::clone(by_key.entry(key.to_owned()).or_default())
    }

    /// How many slots were freed on `key`: taken before an ask, so that one freed after it
    /// wakes the waiter.
    pub(crate) fn mark(&self, key: &str) -> u64 {
        self.slots(key).count.load(Ordering::Acquire)
    }

    /// A slot of `key` was freed: one waiter asks again.
    pub(crate) fn free(&self, key: &str) {
        let slots = self.slots(key);
        slots.count.fetch_add(1, Ordering::AcqRel);
        slots.wake.notify_one();
    }

    /// Resolves once a slot of `key` freed after `mark` falls to this waiter (never, should
    /// none: the caller bounds the wait).
    pub(crate) async fn after(&self, key: &str, mark: u64) {
        let slots = self.slots(key);
        loop {
            let woken = slots.wake.notified();
            if slots.count.load(Ordering::Acquire) > mark {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_slot_wakes_one_waiter_and_a_mark_sees_what_came_before() {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let freed = Arc::new(Freed::default());
                let mark = freed.mark("b");
                // Freed between the mark and the wait: at once.
                freed.free("b");
                freed.after("b", mark).await;
                let mark = freed.mark("b");
                let (a, b) = (Arc::clone(&freed), Arc::clone(&freed));
                let mut first = tokio::spawn(async move { a.after("b", mark).await });
                let mut second = tokio::spawn(async move { b.after("b", mark).await });
                tokio::task::yield_now().await;
                // One slot freed: one waiter wakes, the other waits on.
                freed.free("b");
                let one = tokio::select! {
                    _ = &mut first => 1,
                    _ = &mut second => 2,
                };
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                let other = if one == 1 { &second } else { &first };
                assert!(!other.is_finished(), "one slot woke both waiters");
                // Another: the other wakes.
                freed.free("b");
                if one == 1 {
                    second.await.unwrap()
                } else {
                    first.await.unwrap()
                }
                assert_eq!(freed.mark("b"), 3);
                assert_eq!(freed.mark("other"), 0);
            });
    }
}
