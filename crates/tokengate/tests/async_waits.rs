//! The waiting front end under tokio's paused (virtual) time with `TokioClock`: exact sleeps,
//! FIFO order, one wake-up per admission (counted with a hand-made waker on futures polled by
//! hand), cancel safety, and timeouts that fail at once when the wait is known to be too long.
//!
//! Waits are whole milliseconds: tokio's timer fires on millisecond ticks.

mod common;

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokengate::{
    AcquireError, Algorithm, Cost, Denied, Dimension, Limit, Limiter, ManualClock, Permit, Policy,
    PolicyBuilder, TokioClock,
};
use tokio::time::Instant;

const MS: u64 = 1_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A limiter of `builder`'s policy on tokio's clock, exact: these tests are about exact waits,
/// order and wake-ups.
fn tokio_limiter(builder: PolicyBuilder) -> Limiter<TokioClock> {
    common::limiters::exact_tokio_limiter(builder)
}

/// `amount` per second as a token bucket with the given burst.
fn bucket(amount: u64, burst: u64) -> Limit {
    Limit::per_second(amount)
        .algorithm(Algorithm::TokenBucket)
        .burst(burst)
}

/// A waker that counts how often it is woken.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `n` counting wakers.
struct Wakers(Vec<(Arc<CountingWaker>, Waker)>);

impl Wakers {
    fn new(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    let counter = Arc::new(CountingWaker::default());
                    let waker = Waker::from(Arc::clone(&counter));
                    (counter, waker)
                })
                .collect(),
        )
    }

    fn waker(&self, i: usize) -> &Waker {
        &self.0[i].1
    }

    /// Wake-ups of every waker so far.
    fn counts(&self) -> Vec<usize> {
        self.0
            .iter()
            .map(|(c, _)| c.0.load(Ordering::SeqCst))
            .collect()
    }
}

/// Polls `fut` once with `waker`.
fn poll_with<F: Future + ?Sized>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Polls a pending acquisition once; it must be admitted now.
fn expect_admitted<'a, C: tokengate::Clock, F>(fut: Pin<&mut F>, waker: &Waker) -> Permit<'a, C>
where
    F: Future<Output = Result<Permit<'a, C>, AcquireError>> + ?Sized,
{
    match poll_with(fut, waker) {
        Poll::Ready(Ok(permit)) => permit,
        Poll::Ready(Err(e)) => panic!("expected admission, got {e}"),
        Poll::Pending => panic!("expected admission, still pending"),
    }
}

fn expect_pending<F: Future + ?Sized>(fut: Pin<&mut F>, waker: &Waker) {
    assert!(
        poll_with(fut, waker).is_pending(),
        "expected the acquisition to wait"
    );
}

/// Yields until `limiter` has `n` waiters (tasks queue in the order they are spawned this way).
async fn until_waiters<C: tokengate::Clock>(limiter: &Limiter<C>, n: usize) {
    for _ in 0..10_000 {
        if limiter.stats().waiters == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached {n} waiters: {:?}", limiter.stats());
}

/// Awaits `fut`, failing the test after a virtual hour instead of hanging (a lost wake-up).
async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3_600), fut)
        .await
        .expect("nothing happened for a virtual hour: a wake-up was lost")
}

/// Virtual time since `start`, in whole nanoseconds.
fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Exact sleeps.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn acquire_sleeps_exactly_the_reported_wait() {
    let cases: [(Limit, Cost, Duration); 3] = [
        // Token bucket, 10 a second, burst 1: one every 100 ms.
        (bucket(10, 1), Cost::request(), ms(100)),
        // Fixed window of 1 s: the next window opens at 1 s.
        (
            Limit::per_second(4).algorithm(Algorithm::FixedWindow),
            Cost::request().with_requests(4),
            ms(1_000),
        ),
        // Sliding log, 5 per 250 ms: 3 more when the first admission leaves the window.
        (
            Limit::new(5, ms(250)).algorithm(Algorithm::SlidingWindowLog),
            Cost::request().with_requests(3),
            ms(250),
        ),
    ];
    for (limit, cost, expected) in cases {
        let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, limit.clone()));
        let start = Instant::now();
        drop(limiter.try_acquire(cost.clone()).unwrap());
        let reported = limiter.try_acquire(cost.clone()).unwrap_err().wait();
        assert_eq!(reported, Some(expected), "{limit}");
        let permit = limiter.acquire(cost.clone()).await.unwrap();
        assert_eq!(start.elapsed(), expected, "{limit}: slept exactly the wait");
        assert_eq!(permit.admitted_at(), since(start), "{limit}");
        let waits = limiter.stats().waits;
        assert_eq!((waits.waited, waits.max), (1, expected), "{limit}");
    }
}

// ---------------------------------------------------------------------------------------------
// FIFO.
// ---------------------------------------------------------------------------------------------

/// Spawns one task per cost, in order (each queued before the next is spawned); each records
/// `(index, admitted_at)` as it is admitted. Returns the handles and the record.
async fn spawn_in_order(
    limiter: &Limiter<TokioClock>,
    costs: &[u64],
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Arc<Mutex<Vec<(usize, u64)>>>,
) {
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let already = limiter.stats().waiters;
    let mut handles = Vec::new();
    for (i, &c) in costs.iter().enumerate() {
        let task_limiter = limiter.clone();
        let record = Arc::clone(&admitted);
        handles.push(tokio::spawn(async move {
            let permit = task_limiter
                .acquire(Cost::request().input(c))
                .await
                .expect("admitted");
            record.lock().unwrap().push((i, permit.admitted_at()));
        }));
        until_waiters(limiter, already + i + 1).await;
    }
    (handles, admitted)
}

/// Admission instants of a FIFO queue of `costs` on a token bucket (one unit every `unit` ns,
/// `burst` units) whose theoretical arrival time is `tat`: each is admitted at its own
/// earliest instant, never before the one ahead of it.
fn token_bucket_schedule(mut tat: u64, unit: u64, burst: u64, costs: &[u64]) -> Vec<(usize, u64)> {
    let tolerance = unit * burst;
    let mut previous = 0;
    costs
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let at = previous.max((tat + c * unit).saturating_sub(tolerance));
            tat = tat.max(at) + c * unit;
            previous = at;
            (i, at)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_in_arrival_order_at_exact_instants() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::InputTokens, bucket(100, 100)));
    let start = Instant::now();
    drop(limiter.try_acquire(Cost::request().input(100)).unwrap()); // empty until 1 s
    let costs = [50, 1, 30, 1, 100, 2, 7, 1];
    let (handles, admitted) = spawn_in_order(&limiter, &costs).await;
    assert_eq!(start.elapsed(), Duration::ZERO, "queueing takes no time");

    // While the queue exists try_acquire never overtakes it, not even with a peek.
    for cost in [Cost::zero(), Cost::request().input(1)] {
        assert_eq!(
            limiter.try_acquire(cost).unwrap_err(),
            Denied::WaitersAhead {
                waiters: costs.len()
            }
        );
    }

    for handle in handles {
        within(handle).await.unwrap();
    }
    let admitted = admitted.lock().unwrap().clone();
    assert_eq!(
        admitted,
        token_bucket_schedule(1_000 * MS, 10 * MS, 100, &costs)
    );
    let s = limiter.stats();
    assert_eq!(
        (s.admitted, s.waiters, s.waits.waited),
        (1 + costs.len() as u64, 0, 8)
    );
    assert_eq!(
        s.waits.max,
        Duration::from_nanos(admitted.last().unwrap().1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_large_cost_at_the_head_is_not_overtaken() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::InputTokens, bucket(100, 100)));
    drop(limiter.try_acquire(Cost::request().input(100)).unwrap()); // empty until 1 s
                                                                    // The head needs the whole bucket (1 s); each small one alone would fit after 10 ms.
    let costs = [100, 1, 1, 1, 1, 1];
    let (handles, admitted) = spawn_in_order(&limiter, &costs).await;

    tokio::time::sleep(ms(500)).await;
    assert!(
        admitted.lock().unwrap().is_empty(),
        "nobody overtook the head"
    );
    assert_eq!(
        limiter.stats().limits[0].remaining,
        50,
        "half the bucket is back, unused"
    );
    assert_eq!(
        limiter.try_acquire(Cost::request().input(1)).unwrap_err(),
        Denied::WaitersAhead { waiters: 6 }
    );

    for handle in handles {
        within(handle).await.unwrap();
    }
    let admitted = admitted.lock().unwrap().clone();
    let order: Vec<usize> = admitted.iter().map(|a| a.0).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    assert_eq!(admitted[0].1, 1_000 * MS, "the head at 1 s");
    assert_eq!(
        admitted,
        token_bucket_schedule(1_000 * MS, 10 * MS, 100, &costs)
    );
}

// ---------------------------------------------------------------------------------------------
// Wake-ups, counted on futures polled by hand.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn each_waiter_is_woken_once_when_it_is_admitted() {
    // 10 a second, burst 1: one admission every 100 ms.
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 1)));
    drop(limiter.try_acquire(Cost::request()).unwrap());
    let wakers = Wakers::new(3);
    let mut w0 = pin!(limiter.acquire(Cost::request()));
    let mut w1 = pin!(limiter.acquire(Cost::request()));
    let mut w2 = pin!(limiter.acquire(Cost::request()));
    expect_pending(w0.as_mut(), wakers.waker(0));
    expect_pending(w1.as_mut(), wakers.waker(1));
    expect_pending(w2.as_mut(), wakers.waker(2));
    assert_eq!(limiter.stats().waiters, 3);
    assert_eq!(wakers.counts(), [0, 0, 0]);

    tokio::time::advance(ms(99)).await;
    assert_eq!(
        wakers.counts(),
        [0, 0, 0],
        "nobody is woken before the head's instant"
    );
    tokio::time::advance(ms(1)).await;
    assert_eq!(wakers.counts(), [1, 0, 0], "the head, once, at its instant");

    let p0 = expect_admitted(w0.as_mut(), wakers.waker(0));
    assert_eq!(p0.admitted_at(), 100 * MS);
    assert_eq!(
        wakers.counts(),
        [1, 0, 0],
        "admitting the head woke nobody behind it"
    );

    tokio::time::advance(ms(99)).await;
    assert_eq!(wakers.counts(), [1, 0, 0]);
    tokio::time::advance(ms(1)).await;
    assert_eq!(
        wakers.counts(),
        [1, 1, 0],
        "the new head, once, at its instant"
    );
    let p1 = expect_admitted(w1.as_mut(), wakers.waker(1));
    assert_eq!(p1.admitted_at(), 200 * MS);
    assert_eq!(wakers.counts(), [1, 1, 0]);

    tokio::time::advance(ms(100)).await;
    assert_eq!(wakers.counts(), [1, 1, 1]);
    let p2 = expect_admitted(w2.as_mut(), wakers.waker(2));
    assert_eq!(p2.admitted_at(), 300 * MS);
    assert_eq!(wakers.counts(), [1, 1, 1], "one wake-up per admission");
    assert_eq!(limiter.stats().waiters, 0);
}

/// Waiters blocked on in-flight slots: each freed slot wakes exactly the head, once, with its
/// permit ready; nobody behind it is woken.
#[test]
fn releasing_a_slot_wakes_only_the_head() {
    const N: usize = 4;
    let limiter = Limiter::with_clock(
        Policy::builder().max_in_flight(1).build().unwrap(),
        ManualClock::new(),
    );
    let held = limiter.try_acquire(Cost::request()).unwrap();
    let wakers = Wakers::new(N);
    let mut futures: Vec<_> = (0..N)
        .map(|_| Box::pin(limiter.acquire(Cost::request())))
        .collect();
    for (i, f) in futures.iter_mut().enumerate() {
        expect_pending(f.as_mut(), wakers.waker(i));
    }
    assert_eq!(wakers.counts(), [0; N]);

    let mut permit = Some(held);
    for head in 0..N {
        let mut expected = wakers.counts();
        drop(permit.take()); // frees the slot
        expected[head] += 1;
        assert_eq!(
            wakers.counts(),
            expected,
            "freeing the slot wakes the head ({head}) only"
        );
        permit = Some(expect_admitted(futures[head].as_mut(), wakers.waker(head)));
        assert_eq!(
            wakers.counts(),
            expected,
            "picking up the permit wakes nobody"
        );
        if head + 1 < N {
            expect_pending(futures[head + 1].as_mut(), wakers.waker(head + 1));
        }
    }
    assert_eq!(wakers.counts(), [1; N]);
    assert_eq!(limiter.stats().admitted, 1 + N as u64);
}

/// The documented rule "a waiter sleeps once and is woken once": a waiter blocked on the
/// in-flight cap needs no wake-up until a slot frees.
#[test]
fn a_waiter_blocked_on_in_flight_is_woken_once() {
    let limiter = Limiter::with_clock(
        Policy::builder().max_in_flight(1).build().unwrap(),
        ManualClock::new(),
    );
    let held = limiter.try_acquire(Cost::request()).unwrap();
    let wakers = Wakers::new(2);
    let mut w0 = pin!(limiter.acquire(Cost::request()));
    let mut w1 = pin!(limiter.acquire(Cost::request()));
    expect_pending(w0.as_mut(), wakers.waker(0));
    expect_pending(w1.as_mut(), wakers.waker(1));

    drop(held);
    let p0 = expect_admitted(w0.as_mut(), wakers.waker(0));
    assert_eq!(
        wakers.counts(),
        [1, 0],
        "w1 cannot run while w0 holds the only slot: waking it is wasted"
    );
    drop(p0);
    assert_eq!(wakers.counts(), [1, 1]);
    let _p1 = expect_admitted(w1.as_mut(), wakers.waker(1));
}

// ---------------------------------------------------------------------------------------------
// Cancel safety.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn dropping_the_queued_head_admits_those_behind_it() {
    // 10 a second, burst 10: empty until 1 s after the first admission.
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 10)));
    drop(limiter.try_acquire(Cost::zero().with_requests(10)).unwrap());
    let wakers = Wakers::new(4);
    let mut w0 = Some(Box::pin(limiter.acquire(Cost::zero().with_requests(10)))); // at 1 s
    let mut w1 = pin!(limiter.acquire(Cost::request())); // alone: at 100 ms
    let mut w2 = pin!(limiter.acquire(Cost::request())); // then at 200 ms
    let mut w3 = pin!(limiter.acquire(Cost::request())); // then at 300 ms
    expect_pending(w0.as_mut().unwrap().as_mut(), wakers.waker(0));
    expect_pending(w1.as_mut(), wakers.waker(1));
    expect_pending(w2.as_mut(), wakers.waker(2));
    expect_pending(w3.as_mut(), wakers.waker(3));

    tokio::time::advance(ms(200)).await;
    assert_eq!(wakers.counts(), [0, 0, 0, 0]);
    w0 = None; // cancel the head
    assert!(w0.is_none());
    assert_eq!(
        wakers.counts(),
        [0, 1, 1, 0],
        "the two that fit at 200 ms are admitted and woken once; the third is not"
    );
    let s = limiter.stats();
    assert_eq!((s.cancelled, s.waiters), (1, 1));

    let p1 = expect_admitted(w1.as_mut(), wakers.waker(1));
    let p2 = expect_admitted(w2.as_mut(), wakers.waker(2));
    assert_eq!((p1.admitted_at(), p2.admitted_at()), (200 * MS, 200 * MS));
    expect_pending(w3.as_mut(), wakers.waker(3));
    tokio::time::advance(ms(100)).await;
    assert_eq!(wakers.counts(), [0, 1, 1, 1]);
    let p3 = expect_admitted(w3.as_mut(), wakers.waker(3));
    assert_eq!(p3.admitted_at(), 300 * MS);
    let s = limiter.stats();
    assert_eq!(
        (s.cancelled, s.waiters, s.admitted, s.limits[0].charged),
        (1, 0, 4, 13),
        "nothing was charged for the cancelled head"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_waiter_behind_the_head_wakes_nobody() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 1)));
    drop(limiter.try_acquire(Cost::request()).unwrap());
    let wakers = Wakers::new(3);
    let mut w0 = pin!(limiter.acquire(Cost::request()));
    let mut w1 = Some(Box::pin(limiter.acquire(Cost::request())));
    let mut w2 = pin!(limiter.acquire(Cost::request()));
    expect_pending(w0.as_mut(), wakers.waker(0));
    expect_pending(w1.as_mut().unwrap().as_mut(), wakers.waker(1));
    expect_pending(w2.as_mut(), wakers.waker(2));

    w1 = None;
    assert!(w1.is_none());
    assert_eq!(wakers.counts(), [0, 0, 0]);
    let s = limiter.stats();
    assert_eq!((s.cancelled, s.waiters), (1, 2));

    tokio::time::advance(ms(100)).await;
    let p0 = expect_admitted(w0.as_mut(), wakers.waker(0));
    assert_eq!(p0.admitted_at(), 100 * MS);
    expect_pending(w2.as_mut(), wakers.waker(2));
    tokio::time::advance(ms(100)).await;
    assert_eq!(wakers.counts(), [1, 0, 1]);
    let p2 = expect_admitted(w2.as_mut(), wakers.waker(2));
    assert_eq!(
        p2.admitted_at(),
        200 * MS,
        "the cancelled waiter's turn was not kept"
    );
    let s = limiter.stats();
    assert_eq!((s.admitted, s.limits[0].charged, s.cancelled), (3, 3, 1));
}

/// A waiter admitted on its behalf (woken with its permit ready) and dropped before it picks
/// the permit up: the admission is taken back in full, and the next waiter gets its turn.
#[tokio::test(start_paused = true)]
async fn dropping_a_waiter_admitted_on_its_behalf_gives_everything_back() {
    let limiter = tokio_limiter(
        Policy::builder()
            .limit(Dimension::OutputTokens, bucket(100, 100))
            .max_in_flight(1),
    );
    let held = limiter.try_acquire(Cost::request()).unwrap();
    let wakers = Wakers::new(2);
    let mut w0 = Some(Box::pin(limiter.acquire(Cost::request().output(60))));
    let mut w1 = pin!(limiter.acquire(Cost::request().output(70)));
    expect_pending(w0.as_mut().unwrap().as_mut(), wakers.waker(0));
    expect_pending(w1.as_mut(), wakers.waker(1));
    let before = limiter.stats();

    drop(held);
    // w0 is admitted on its behalf; w1 (60 + 70 > 100) gets the head timer for 300 ms.
    assert_eq!(wakers.counts(), [1, 0], "w0 admitted on its behalf");
    w0 = None; // never picks its permit up
    assert!(w0.is_none());
    assert_eq!(
        wakers.counts(),
        [1, 1],
        "the slot and the 60 tokens went to w1"
    );
    let s = limiter.stats();
    assert_eq!((s.cancelled, s.in_flight), (1, 1));
    let p1 = expect_admitted(w1.as_mut(), wakers.waker(1));
    assert_eq!(p1.admitted_at(), 0);
    let s = limiter.stats();
    assert_eq!(
        (s.admitted, s.waiters, s.in_flight),
        (before.admitted + 1, 0, 1)
    );
    assert_eq!(s.limits[0].remaining, 30, "only w1's 70 are held");
}

#[tokio::test(start_paused = true)]
async fn aborting_the_task_at_the_head_lets_the_next_one_in_at_once() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 10)));
    drop(limiter.try_acquire(Cost::zero().with_requests(10)).unwrap());
    let l = limiter.clone();
    let head = tokio::spawn(async move {
        drop(l.acquire(Cost::zero().with_requests(10)).await);
    });
    until_waiters(&limiter, 1).await;
    let l = limiter.clone();
    let next = tokio::spawn(async move { l.acquire(Cost::request()).await.unwrap().admitted_at() });
    until_waiters(&limiter, 2).await;

    tokio::time::sleep(ms(300)).await;
    assert!(
        !next.is_finished(),
        "FIFO: the small cost waits behind the head"
    );
    head.abort();
    assert_eq!(within(next).await.unwrap(), 300 * MS);
    assert!(head.await.unwrap_err().is_cancelled());
    let s = limiter.stats();
    assert_eq!((s.cancelled, s.admitted, s.limits[0].charged), (1, 2, 11));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_permit_wakes_a_waiter_blocked_on_in_flight() {
    let limiter = tokio_limiter(
        Policy::builder()
            .limit(Dimension::Requests, bucket(1_000, 1_000))
            .max_in_flight(1),
    );
    let held = limiter.try_acquire(Cost::request()).unwrap();
    let l = limiter.clone();
    let waiter = tokio::spawn(async move {
        let permit = l.acquire(Cost::request()).await.unwrap();
        let at = permit.admitted_at();
        (at, l.stats().in_flight)
    });
    until_waiters(&limiter, 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiter.is_finished());
    assert_eq!(limiter.stats().in_flight, 1);
    drop(held);
    assert_eq!(within(waiter).await.unwrap(), (5_000 * MS, 1));
    let s = limiter.stats();
    assert_eq!((s.in_flight, s.waiters, s.admitted), (0, 0, 2));
    assert_eq!(s.waits.max, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Timeouts.
// ---------------------------------------------------------------------------------------------

fn two_buckets() -> PolicyBuilder {
    Policy::builder()
        .limit(Dimension::Requests, bucket(2, 2))
        .limit(Dimension::InputTokens, bucket(100, 100))
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_fails_at_once_when_the_known_wait_is_longer() {
    let limiter = tokio_limiter(two_buckets());
    drop(
        limiter
            .try_acquire(Cost::request().with_requests(2).input(100))
            .unwrap(),
    );
    let start = Instant::now();
    let before = limiter.stats();

    // Input binds (800 ms) over requests (500 ms).
    let err = limiter
        .acquire_timeout(Cost::request().input(80), ms(700))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AcquireError::Timeout {
            dimension: Dimension::InputTokens,
            cost: 80,
            wait: Some(ms(800)),
            timeout: ms(700),
        }
    );
    // Requests bind (500 ms) over input (100 ms).
    let err = limiter
        .acquire_timeout(Cost::request().input(10), ms(400))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AcquireError::Timeout {
            dimension: Dimension::Requests,
            cost: 1,
            wait: Some(ms(500)),
            timeout: ms(400),
        }
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "failed without sleeping");
    let s = limiter.stats();
    assert_eq!((s.timed_out, s.waiters, s.admitted), (2, 0, 1));
    assert_eq!(s.limits, before.limits, "nothing charged");
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_succeeds_when_the_wait_fits() {
    for timeout in [ms(800), ms(801), Duration::from_secs(60)] {
        let limiter = tokio_limiter(two_buckets());
        drop(
            limiter
                .try_acquire(Cost::request().with_requests(2).input(100))
                .unwrap(),
        );
        let start = Instant::now();
        let permit = limiter
            .acquire_timeout(Cost::request().input(80), timeout)
            .await
            .unwrap_or_else(|e| panic!("timeout {timeout:?}: {e}"));
        assert_eq!(start.elapsed(), ms(800), "timeout {timeout:?}");
        assert_eq!(permit.admitted_at(), 800 * MS);
        assert_eq!(limiter.stats().timed_out, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_behind_others_fails_at_its_deadline() {
    // 1 a second, burst 10: the head needs 10 s.
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(1, 10)));
    drop(limiter.try_acquire(Cost::zero().with_requests(10)).unwrap());
    let l = limiter.clone();
    let head = tokio::spawn(async move {
        l.acquire(Cost::zero().with_requests(10))
            .await
            .unwrap()
            .admitted_at()
    });
    until_waiters(&limiter, 1).await;
    let start = Instant::now();
    let err = limiter
        .acquire_timeout(Cost::request(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        err,
        AcquireError::QueueTimeout {
            waiters_ahead: 1,
            timeout: Duration::from_secs(2)
        }
    );
    assert!(
        err.to_string()
            .contains("1 requests are still queued ahead"),
        "{err}"
    );
    let s = limiter.stats();
    assert_eq!((s.timed_out, s.waiters), (1, 1));
    assert_eq!(within(head).await.unwrap(), 10_000 * MS);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_counts_only_the_waiters_ahead() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(1, 10)));
    drop(limiter.try_acquire(Cost::zero().with_requests(10)).unwrap());
    let wakers = Wakers::new(3);
    let mut head = pin!(limiter.acquire(Cost::zero().with_requests(10)));
    let mut timed = pin!(limiter.acquire_timeout(Cost::request(), Duration::from_secs(2)));
    let mut behind = pin!(limiter.acquire(Cost::request()));
    expect_pending(head.as_mut(), wakers.waker(0));
    expect_pending(timed.as_mut(), wakers.waker(1));
    expect_pending(behind.as_mut(), wakers.waker(2));

    tokio::time::advance(Duration::from_secs(2)).await;
    match poll_with(timed.as_mut(), wakers.waker(1)) {
        Poll::Ready(Err(err)) => assert_eq!(
            err,
            AcquireError::QueueTimeout {
                waiters_ahead: 1, // the head; the waiter behind is not ahead
                timeout: Duration::from_secs(2)
            }
        ),
        other => panic!("expected a queue timeout, got {other:?}"),
    }
    assert_eq!(limiter.stats().waiters, 2);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_fails_when_it_reaches_the_head_with_too_long_a_wait() {
    // 10 a second, burst 10: the head's 10 are admitted at 1 s, the next 10 could be at 2 s.
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 10)));
    drop(limiter.try_acquire(Cost::zero().with_requests(10)).unwrap());
    let l = limiter.clone();
    let head = tokio::spawn(async move {
        l.acquire(Cost::zero().with_requests(10))
            .await
            .unwrap()
            .admitted_at()
    });
    until_waiters(&limiter, 1).await;
    let start = Instant::now();
    let err = limiter
        .acquire_timeout(Cost::zero().with_requests(10), ms(1_500))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        ms(1_000),
        "failed as soon as it became the head"
    );
    assert_eq!(
        err,
        AcquireError::Timeout {
            dimension: Dimension::Requests,
            cost: 10,
            wait: Some(ms(1_000)),
            timeout: ms(1_500),
        }
    );
    assert_eq!(within(head).await.unwrap(), 1_000 * MS);
}

#[tokio::test(start_paused = true)]
async fn acquire_timeout_on_in_flight_fails_at_the_deadline() {
    let limiter = tokio_limiter(
        Policy::builder()
            .limit(Dimension::Requests, bucket(1_000, 1_000))
            .max_in_flight(1),
    );
    let _held = limiter.try_acquire(Cost::request()).unwrap();
    let start = Instant::now();
    let err = limiter
        .acquire_timeout(Cost::request(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        err,
        AcquireError::Timeout {
            dimension: Dimension::InFlight,
            cost: 1,
            wait: None,
            timeout: Duration::from_secs(2),
        }
    );
    assert!(err.to_string().contains("the limiter is busy"), "{err}");
    let s = limiter.stats();
    assert_eq!((s.timed_out, s.waiters, s.in_flight), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_of_duration_max_waits_like_acquire() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::Requests, bucket(10, 1)));
    drop(limiter.try_acquire(Cost::request()).unwrap());
    let l = limiter.clone();
    let head = tokio::spawn(async move {
        l.acquire_timeout(Cost::request(), Duration::MAX)
            .await
            .unwrap()
            .admitted_at()
    });
    until_waiters(&limiter, 1).await;
    let behind = limiter
        .acquire_timeout(Cost::request(), Duration::MAX)
        .await
        .unwrap();
    assert_eq!(within(head).await.unwrap(), 100 * MS);
    assert_eq!(behind.admitted_at(), 200 * MS);
}

// ---------------------------------------------------------------------------------------------
// Settlement while others wait.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_refund_lets_the_waiting_head_in_at_once() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::OutputTokens, bucket(100, 100)));
    let reserved = limiter.try_acquire(Cost::request().output(100)).unwrap();
    let l = limiter.clone();
    let waiter = tokio::spawn(async move {
        l.acquire(Cost::request().output(50))
            .await
            .unwrap()
            .admitted_at() // alone: at 500 ms
    });
    until_waiters(&limiter, 1).await;
    tokio::time::sleep(ms(100)).await;
    reserved.settle(tokengate::Usage::new().output(20)); // 80 back at 100 ms
    assert_eq!(within(waiter).await.unwrap(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_charge_delays_the_waiting_head_to_the_new_exact_instant() {
    let limiter = tokio_limiter(Policy::builder().limit(Dimension::OutputTokens, bucket(100, 100)));
    let reserved = limiter.try_acquire(Cost::request().output(100)).unwrap();
    let l = limiter.clone();
    let waiter = tokio::spawn(async move {
        l.acquire(Cost::request().output(50))
            .await
            .unwrap()
            .admitted_at() // alone: at 500 ms
    });
    until_waiters(&limiter, 1).await;
    tokio::time::sleep(ms(100)).await;
    reserved.settle(tokengate::Usage::new().output(130)); // 30 more: 300 ms later
    assert_eq!(within(waiter).await.unwrap(), 800 * MS);
    assert_eq!(limiter.stats().waits.max, ms(800));
}

/// At the end of the clock (2^64 - 1 ns) a bucket admits no unit again: a waiter there waits
/// for a change of state, with no timer to fire at once again and again, and a timeout that
/// no wait can meet fails at once.
///
/// A timer due at once would spin inside one poll, never to return: the test runs on its own
/// thread, and fails (rather than hangs) when that thread has not finished within a minute.
#[test]
fn a_wait_past_the_end_of_the_clock_sleeps_without_a_timer() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new();
            clock.set(u64::MAX);
            let policy = Policy::builder()
                .limit(Dimension::Requests, bucket(1, 1))
                .margin(Duration::ZERO)
                .build()
                .unwrap();
            let limiter = Limiter::with_clock(policy, clock);
            let waited = tokio::time::timeout(ms(1_000), limiter.acquire(Cost::request())).await;
            assert!(waited.is_err(), "still waiting after a second: {waited:?}");
            assert_eq!(
                limiter.stats().waiters,
                0,
                "the dropped waiter left the queue"
            );
            match limiter.acquire_timeout(Cost::request(), ms(1_000)).await {
                Err(AcquireError::Timeout { dimension, .. }) => {
                    assert_eq!(dimension, Dimension::Requests)
                }
                other => panic!("expected a timeout at once, got {other:?}"),
            };
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the waiter returned (a panic above, or a spin, if not)");
}

/// A waiter with a timeout that comes to the head of the queue on a wait that never ends by
/// time (its bucket would pass the end of the clock) fails at once, as it would have on its
/// first try, even when its deadline lies past the end of the clock.
#[tokio::test(start_paused = true)]
async fn a_queued_waiter_whose_wait_never_ends_times_out_at_once() {
    const S: u64 = 1_000 * MS;
    let clock = ManualClock::new();
    clock.set(u64::MAX - 3 * S);
    let policy = Policy::builder()
        .limit(Dimension::InputTokens, bucket(1, 2))
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, clock.clone());
    drop(limiter.try_acquire(Cost::zero().input(2)).unwrap()); // full again at the end - 1 s
    let first = limiter.clone();
    let first = tokio::spawn(async move {
        let permit = first.acquire(Cost::zero().input(1)).await.unwrap();
        permit.admitted_at()
    });
    tokio::task::yield_now().await;
    let second = limiter.clone();
    let second = tokio::spawn(async move {
        second
            .acquire_timeout(Cost::zero().input(2), ms(60_000))
            .await
            .map(|p| p.admitted_at())
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.stats().waiters, 2);
    // The first is admitted 1 s on (its units fit before the end); then the second heads the
    // queue, and 2 more units would take the bucket past the end.
    clock.set(u64::MAX - 2 * S);
    assert_eq!(first.await.unwrap(), u64::MAX - 2 * S);
    let second = tokio::time::timeout(ms(10_000), second)
        .await
        .expect("failed at once, not left waiting")
        .unwrap();
    match second {
        Err(AcquireError::Timeout { wait, .. }) => assert_eq!(wait, Some(Duration::MAX)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
