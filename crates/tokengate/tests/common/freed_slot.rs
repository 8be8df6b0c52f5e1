//! How soon a waiter has an in-flight slot that another limiter frees, both on one store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokengate::{Cost, Limiter};

/// `holder` takes the one slot, `waiter` asks for it, and `holder` frees it 1.5 s later (past
/// the 640 ms step of the waiter's backoff, 10 ms doubling: without a wake-up it would ask next
/// some hundreds of milliseconds after). Returns how long after the release the waiter had it.
pub async fn time_to_a_freed_slot(holder: &Limiter, waiter: &Arc<Limiter>) -> Duration {
    let held = holder
        .acquire_timeout(Cost::request(), Duration::from_secs(5))
        .await
        .expect("the slot");
    let waiting = {
        let waiter = Arc::clone(waiter);
        tokio::spawn(async move {
            let permit = waiter
                .acquire_timeout(Cost::request(), Duration::from_secs(10))
                .await
                .expect("the slot, once freed");
            let got = Instant::now();
            drop(permit);
            got
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let freed = Instant::now();
    drop(held);
    let got = waiting.await.expect("the waiter");
    got.saturating_duration_since(freed)
}
