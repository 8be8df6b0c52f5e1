//! A waiter sleeps once and is woken once: the engine admits queued waiters on their behalf
//! and hands the head timer from waiter to waiter, so each admission costs one wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokengate::{Cost, Limit, Limiter, Policy, TokioClock};

struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `n` acquisitions by hand like an executor that polls a future only when it was woken,
/// and returns the wake-ups each one received before it was admitted.
async fn wakeups_per_admission(
    limiter: &Limiter<TokioClock>,
    n: usize,
    cost: impl Fn(usize) -> Cost,
) -> Vec<usize> {
    let counters: Vec<Arc<Counter>> = (0..n)
        .map(|_| Arc::new(Counter(AtomicUsize::new(0))))
        .collect();
    let wakers: Vec<Waker> = counters.iter().map(|c| Waker::from(c.clone())).collect();
    let mut futures: Vec<_> = (0..n)
        .map(|i| Some(Box::pin(limiter.acquire(cost(i)))))
        .collect();
    let mut polled_at_wake = vec![0; n];
    let mut admitted = Vec::new();
    // First poll of each, in order: they queue in arrival order.
    for i in 0..n {
        let mut cx = Context::from_waker(&wakers[i]);
        if let Poll::Ready(r) = futures[i].as_mut().unwrap().as_mut().poll(&mut cx) {
            drop(r.expect("admitted"));
            futures[i] = None;
            admitted.push(i);
        }
    }
    let start = tokio::time::Instant::now();
    while admitted.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(3_600),
            "stalled: {} of {n} admitted",
            admitted.len()
        );
        // Let the runtime fire due timers (virtual time jumps to the next one).
        tokio::time::sleep(Duration::from_millis(10)).await;
        for i in 0..n {
            let woken = counters[i].0.load(Ordering::SeqCst);
            if futures[i].is_none() || woken == polled_at_wake[i] {
                continue;
            }
            polled_at_wake[i] = woken;
            let mut cx = Context::from_waker(&wakers[i]);
            let fut: &mut Pin<Box<_>> = futures[i].as_mut().unwrap();
            if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                drop(r.expect("admitted"));
                futures[i] = None;
                admitted.push(i);
            }
        }
    }
    assert_eq!(admitted, (0..n).collect::<Vec<_>>(), "FIFO order");
    counters
        .iter()
        .map(|c| c.0.load(Ordering::SeqCst))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn each_waiter_is_woken_once_under_a_rate_limit() {
    let policy = Policy::builder()
        .limit(tokengate::Dimension::Requests, Limit::per_second(10))
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, TokioClock::new());
    let wakes = wakeups_per_admission(&limiter, 200, |_| Cost::request()).await;
    assert_eq!(wakes[0], 0, "the first is admitted at once");
    for (i, w) in wakes.iter().enumerate().skip(1) {
        assert_eq!(*w, 1, "waiter {i} was woken {w} times");
    }
    let stats = limiter.stats();
    assert_eq!(stats.admitted, 200);
    assert_eq!(stats.waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn each_waiter_is_woken_once_with_mixed_costs_and_several_limits() {
    let policy = Policy::builder()
        .requests_per_minute(600)
        .input_tokens_per_minute(60_000)
        .output_tokens_per_minute(20_000)
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, TokioClock::new());
    let wakes = wakeups_per_admission(&limiter, 300, |i| {
        Cost::request()
            .input(100 + (i as u64 * 37) % 900)
            .output(50 + (i as u64 * 53) % 400)
    })
    .await;
    let extra: Vec<_> = wakes.iter().enumerate().filter(|(_, w)| **w > 1).collect();
    assert!(extra.is_empty(), "woken more than once: {extra:?}");
}
