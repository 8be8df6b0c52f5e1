//! 10,000 acquisitions waiting on one async limiter: wake-ups per admission and memory per
//! waiter, then the time to queue and admit them all.
//!
//! Printed once, before criterion runs (and summarised at the end):
//! - **Wake-ups per admission** (target <= 1), counted by wrapping every waker the limiter is
//!   given:
//!   - `released`, hand-polled: a `ManualClock` limiter with `max_in_flight(1)`; one permit is
//!     held, 10,000 `Acquire` futures are polled once each (all queue), then the permit is
//!     dropped and each woken future is polled, its permit dropped at once.
//!   - `released`, tokio: a `TokioClock` limiter (`requests_per_minute(600_000)`, burst 10,000)
//!     under a paused current-thread runtime; the burst is spent, 10,000 spawned tasks queue on
//!     the rate, then virtual time jumps by 1 s, after which every queued cost fits at once.
//!   - `paced`, tokio: the same with `requests_per_minute(60_000)` (burst 1,000) and time left to
//!     run: every head has to wait 1 ms on its own timer after the previous admission woke it.
//!   - `holding permits`, hand-polled: as the first, but each admitted permit is held until the
//!     next woken waiter has been polled once, as a permit is held during a real call.
//! - **Bytes per waiter** (target <= 256): `size_of::<Acquire>()` plus the heap bytes the limiter
//!   keeps per queued waiter (net allocated, counted by `stats_alloc`'s instrumented global
//!   allocator around the 10,000 first polls). Also the whole cost of a spawned tokio task per
//!   waiter, for reference.
//!
//! Timed by criterion: the hand-polled `released` run (queue 10,000, admit 10,000) and the tokio
//! `released` run (spawn, queue and admit 10,000 tasks), in ns per run; the summary divides by
//! 10,000.

mod common;

use std::alloc::System;
use std::collections::VecDeque;
use std::future::Future;
use std::mem::size_of;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokengate::{Acquire, Cost, Limiter, ManualClock, Permit, Policy, TokioClock};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const GROUP: &str = "waiters";
const SAMPLES: usize = 10;
const WAITERS: usize = 10_000;

/// Net heap bytes allocated since the region began: `stats_alloc` counts the growth of a
/// reallocation in `bytes_allocated` (and a shrink in `bytes_deallocated`) already.
fn net_bytes(region: &Region<'_, System>) -> i64 {
    let s = region.change();
    i64::try_from(s.bytes_allocated).unwrap_or(i64::MAX)
        - i64::try_from(s.bytes_deallocated).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Hand-polled futures: a ready list and one counting waker per future.

#[derive(Default)]
struct ReadyList {
    ready: Mutex<VecDeque<usize>>,
    wakes: AtomicU64,
}

struct Flag {
    index: usize,
    list: Arc<ReadyList>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.list.wakes.fetch_add(1, Ordering::Relaxed);
        self.list
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(self.index);
    }
}

#[derive(Debug)]
struct HandPolled {
    admitted: u64,
    wakes: u64,
    polls: u64,
    /// Net heap bytes allocated by the first poll of every waiter (joining the queue).
    queued_net_bytes: i64,
    queued_allocations: usize,
    /// From the first poll to the last admission.
    elapsed: Duration,
}

/// Queues `WAITERS` acquisitions behind one held in-flight slot, then releases it and admits
/// them one by one. With `hold_permits`, each permit is held until the next woken waiter has
/// been polled (a call in progress); otherwise it is dropped at once.
fn hand_polled(hold_permits: bool) -> HandPolled {
    let policy = Policy::builder()
        .requests_per_minute(1_000_000_000)
        .max_in_flight(1)
        .build()
        .expect("a valid policy");
    let limiter = Limiter::with_clock(policy, ManualClock::new());
    let list = Arc::new(ReadyList::default());
    list.ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reserve(2 * WAITERS);
    let wakers: Vec<Waker> = (0..WAITERS)
        .map(|index| {
            Waker::from(Arc::new(Flag {
                index,
                list: Arc::clone(&list),
            }))
        })
        .collect();
    let mut futures: Vec<Option<Acquire<'_, ManualClock>>> = (0..WAITERS)
        .map(|_| Some(limiter.acquire(Cost::request())))
        .collect();
    let blocker = limiter
        .try_acquire(Cost::request())
        .expect("the first admission");

    let start = Instant::now();
    let region = Region::new(GLOBAL);
    let mut polls = 0u64;
    for (fut, waker) in futures.iter_mut().zip(&wakers) {
        let fut = fut.as_mut().expect("not yet polled");
        polls += 1;
        assert!(Pin::new(fut)
            .poll(&mut Context::from_waker(waker))
            .is_pending());
    }
    let queued_net_bytes = net_bytes(&region);
    let queued_allocations = region.change().allocations + region.change().reallocations;
    assert_eq!(
        list.wakes.load(Ordering::Relaxed),
        0,
        "nobody is woken while queueing"
    );

    drop(blocker);
    let mut admitted = 0u64;
    let mut held: Option<Permit<'_, ManualClock>> = None;
    loop {
        let next = list
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(i) = next {
            let Some(fut) = futures[i].as_mut() else {
                continue; // woken after completion: counted as a wake-up already
            };
            polls += 1;
            match Pin::new(fut).poll(&mut Context::from_waker(&wakers[i])) {
                Poll::Ready(result) => {
                    let permit = result.expect("admitted");
                    admitted += 1;
                    futures[i] = None;
                    if hold_permits {
                        held = Some(permit);
                    }
                }
                Poll::Pending => {
                    // The held call ends after the next waiter has looked.
                    drop(held.take());
                }
            }
        } else if let Some(permit) = held.take() {
            drop(permit);
        } else {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(admitted, WAITERS as u64, "every waiter is admitted");
    HandPolled {
        admitted,
        wakes: list.wakes.load(Ordering::Relaxed),
        polls,
        queued_net_bytes,
        queued_allocations,
        elapsed,
    }
}

// ---------------------------------------------------------------------------------------------
// Tokio: spawned tasks under paused time, wake-ups counted by a wrapping waker.

struct CountingWaker {
    inner: Waker,
    wakes: Arc<AtomicU64>,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}

/// Passes a counting waker (wrapping the task's own) to `inner`.
struct CountWakes<F> {
    inner: F,
    wakes: Arc<AtomicU64>,
    /// The task waker wrapped, and the wrapper.
    wrapped: Option<(Waker, Waker)>,
}

impl<F: Future + Unpin> Future for CountWakes<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let task = cx.waker();
        let waker = match &this.wrapped {
            Some((wrapped, waker)) if wrapped.will_wake(task) => waker.clone(),
            _ => {
                let waker = Waker::from(Arc::new(CountingWaker {
                    inner: task.clone(),
                    wakes: Arc::clone(&this.wakes),
                }));
                this.wrapped = Some((task.clone(), waker.clone()));
                waker
            }
        };
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&waker))
    }
}

#[derive(Debug)]
struct TokioRun {
    admitted: u64,
    wakes: u64,
    /// Net heap bytes of spawning the tasks until all are queued (without the counting wrapper).
    queued_net_bytes: Option<i64>,
    /// Virtual time from the end of queueing to the last admission.
    virtual_elapsed: Duration,
    /// Real time from the first spawn to the last admission.
    elapsed: Duration,
}

/// `WAITERS` spawned tasks queue on a spent `requests_per_minute(rpm)` limit; with `jump`,
/// virtual time then jumps by 1 s, otherwise it runs from timer to timer. With `count`, every
/// waker is wrapped to count wake-ups; without, the tasks' memory is measured. The limit is
/// exact, with no safety margin (`Limit::margin`): after the jump every queued cost fits at
/// once, and the paced heads wait exactly 1 ms each.
fn tokio_run(rpm: u64, jump: bool, count: bool) -> TokioRun {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let policy = Policy::builder()
            .requests_per_minute(rpm)
            .margin(Duration::ZERO)
            .build()
            .expect("a valid policy");
        let limiter = Limiter::with_clock(policy, TokioClock::new());
        // Spend the burst: every acquisition below waits.
        drop(
            limiter
                .try_acquire(Cost::request().with_requests(rpm.div_ceil(60)))
                .expect("the burst"),
        );
        let wakes = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::with_capacity(WAITERS);
        let start = Instant::now();
        let region = Region::new(GLOBAL);
        for _ in 0..WAITERS {
            let l = limiter.clone();
            let handle = if count {
                let wakes = Arc::clone(&wakes);
                tokio::spawn(async move {
                    let acquire = CountWakes {
                        inner: l.acquire(Cost::request()),
                        wakes,
                        wrapped: None,
                    };
                    acquire.await.is_ok()
                })
            } else {
                tokio::spawn(async move { l.acquire(Cost::request()).await.is_ok() })
            };
            handles.push(handle);
        }
        while limiter.stats().waiters < WAITERS {
            tokio::task::yield_now().await;
        }
        let queued_net_bytes = (!count).then(|| net_bytes(&region));
        let queued_at = tokio::time::Instant::now();
        if jump {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let mut admitted = 0u64;
        for h in handles {
            admitted += u64::from(h.await.expect("a waiter task panicked"));
        }
        assert_eq!(admitted, WAITERS as u64, "every waiter is admitted");
        TokioRun {
            admitted,
            wakes: wakes.load(Ordering::Relaxed),
            queued_net_bytes,
            virtual_elapsed: queued_at.elapsed(),
            elapsed: start.elapsed(),
        }
    })
}

// ---------------------------------------------------------------------------------------------

struct Findings {
    lines: Vec<String>,
}

impl Findings {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }
}

fn per_admission(wakes: u64, admitted: u64) -> f64 {
    wakes as f64 / admitted as f64
}

fn measure_once() -> Findings {
    let mut f = Findings { lines: Vec::new() };
    let n = WAITERS as f64;

    let released = hand_polled(false);
    let tokio_released = tokio_run(600_000, true, true);
    let paced = tokio_run(60_000, false, true);
    let holding = hand_polled(true);
    let tokio_mem = tokio_run(600_000, true, false);

    let worst = [
        per_admission(released.wakes, released.admitted),
        per_admission(tokio_released.wakes, tokio_released.admitted),
        per_admission(paced.wakes, paced.admitted),
        per_admission(holding.wakes, holding.admitted),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    f.line(format!(
        "wake-ups per admission: {worst:.3} (worst of the 4 scenarios below; target <= 1: {})",
        if worst <= 1.0 { "met" } else { "NOT met" }
    ));
    f.line(format!(
        "  released, hand-polled (in-flight slot freed): {} wake-ups, {} polls for {} admissions: {:.3} per admission",
        released.wakes,
        released.polls,
        released.admitted,
        per_admission(released.wakes, released.admitted)
    ));
    f.line(format!(
        "  released, tokio (rate, virtual time +1 s): {} wake-ups for {} admissions: {:.3} per admission ({:?} virtual)",
        tokio_released.wakes,
        tokio_released.admitted,
        per_admission(tokio_released.wakes, tokio_released.admitted),
        tokio_released.virtual_elapsed
    ));
    f.line(format!(
        "  paced, tokio (rate, each head waits 1 ms on its timer): {} wake-ups for {} admissions: {:.3} per admission ({:?} virtual)",
        paced.wakes,
        paced.admitted,
        per_admission(paced.wakes, paced.admitted),
        paced.virtual_elapsed
    ));
    f.line(format!(
        "  holding permits, hand-polled (in-flight 1, permit held until the next waiter polled): {} wake-ups, {} polls for {} admissions: {:.3} per admission",
        holding.wakes,
        holding.polls,
        holding.admitted,
        per_admission(holding.wakes, holding.admitted)
    ));

    let future = size_of::<Acquire<'static, ManualClock>>();
    let future_tokio = size_of::<Acquire<'static, TokioClock>>();
    let heap = released.queued_net_bytes as f64 / n;
    let bytes = future as f64 + heap;
    f.line(format!(
        "bytes per waiter: {bytes:.0} (target <= 256: {}) = size_of::<Acquire>() {future} + {heap:.1} heap bytes the limiter keeps per queued waiter ({} allocations and reallocations for {} waiters)",
        if bytes <= 256.0 { "met" } else { "NOT met" },
        released.queued_allocations,
        WAITERS
    ));
    f.line(format!(
        "  size_of::<Acquire<'_, TokioClock>>() = {future_tokio}; a spawned tokio task per waiter, all told (task, future, queue entry): {:.0} bytes",
        tokio_mem.queued_net_bytes.unwrap_or(0) as f64 / n
    ));
    f.line(format!(
        "  one-shot times: hand-polled queue + admit {:.0} ns per waiter; tokio spawn + queue + admit {:.0} ns per waiter",
        released.elapsed.as_secs_f64() * 1e9 / n,
        tokio_mem.elapsed.as_secs_f64() * 1e9 / n
    ));
    f
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(SAMPLES);
    common::bench(&mut g, GROUP, "hand_polled_released_10000", |iters| {
        (0..iters).map(|_| hand_polled(false).elapsed).sum()
    });
    common::bench(&mut g, GROUP, "tokio_released_10000", |iters| {
        (0..iters)
            .map(|_| tokio_run(600_000, true, false).elapsed)
            .sum()
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    println!("== waiters: {WAITERS} acquisitions on one limiter");
    let findings = measure_once();
    benches(&mut c);
    c.final_summary();

    println!("\n== waiters summary");
    for l in &findings.lines {
        println!("{l}");
    }
    for id in ["hand_polled_released_10000", "tokio_released_10000"] {
        match common::ns_per_iter(&format!("{GROUP}/{id}"), SAMPLES) {
            Some(ns) => println!(
                "{id}: {:.2} ms per run, {:.0} ns per waiter",
                ns / 1e6,
                ns / WAITERS as f64
            ),
            None => println!("{id}: not measured in this run (filtered out or --test mode)"),
        }
    }
}
