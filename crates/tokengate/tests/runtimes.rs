//! Waiters polled on one tokio runtime while another runtime (entered, but never driven, by
//! synchronous code) serves their queue: the head timer is set only on the waiter's own
//! runtime, else the waiter wakes itself. Real time, with generous bounds.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokengate::{Cost, Limiter, Policy};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// A queued waiter on runtime B; a 429 reported from inside runtime A (a synchronous facade
/// that runs each call with `block_on`) re-serves the queue from A. Nothing else happens
/// after (the held permit has no in-flight slot to give back), so only a timer on B, or the
/// waiter's own, can admit it.
fn stranded_by_another_runtime(report_in_a: bool) {
    let policy = Policy::builder().requests_per_minute(60).build().unwrap(); // burst 1
    let limiter = Arc::new(Limiter::new(policy));
    let held = limiter.try_acquire(Cost::request()).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = Arc::clone(&limiter);
    std::thread::spawn(move || {
        runtime().block_on(async {
            drop(waiter.acquire(Cost::request()).await.unwrap());
        });
        let _ = tx.send(());
    });
    // Wait (generously) for the waiter to queue.
    for _ in 0..200 {
        if limiter.stats().waiters == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(limiter.stats().waiters, 1);
    // Runtime A outlives the test's wait, never driven again (dropping it would fire its
    // timers).
    let a = runtime();
    if report_in_a {
        a.block_on(async { limiter.pause(Duration::from_millis(1_500)) });
    } else {
        limiter.pause(Duration::from_millis(1_500));
    }
    drop(held);
    // The pause (longer than the waiter's own wait of a second, whose timer it replaces)
    // ends 1.5 s from now.
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the waiter was never admitted"
    );
    drop(a);
}

#[test]
fn a_queue_served_from_another_runtime_does_not_strand_its_head() {
    stranded_by_another_runtime(true);
}

#[test]
fn a_queue_served_outside_any_runtime_does_not_strand_its_head() {
    stranded_by_another_runtime(false);
}
