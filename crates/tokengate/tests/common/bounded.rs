//! Running a test's future on a runtime of its own, within a time bound: a test that could
//! hang fails instead.

use std::future::Future;
use std::time::Duration;

/// Runs `test` on a new tokio runtime (current-thread when `workers` is 0, else
/// multi-thread with that many workers; timers and I/O enabled), and fails if it does not
/// end within `bound`.
pub fn block_on_within<F: Future>(workers: usize, bound: Duration, test: F) -> F::Output {
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            tokio::time::timeout(bound, test)
                .await
                .unwrap_or_else(|_| panic!("the test did not end within {bound:?}"))
        })
}
