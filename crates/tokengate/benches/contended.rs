//! Two threads deciding on one shared limiter at once, for governor and tokengate, next to the
//! same decisions from one thread: the ratio of contended to uncontended time per decision.
//!
//! Each contended sample spawns two scoped threads that meet at a barrier and then make `K`
//! decisions each (`K` = criterion's iteration count) on the same limiter; the sample's time is
//! the longer of the two threads' own timings, so criterion's "time per iteration" is the time
//! one decision takes while another thread hammers the same limiter (1.00x of the uncontended
//! figure would be perfect scaling; 2.00x is full serialisation). Each sample builds a fresh
//! limiter. Limits are `u32::MAX` per second (always admitted): governor on its default quanta
//! clock, tokengate with `Algorithm::TokenBucket` on its default system clock.

mod common;

use std::num::NonZeroU32;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use criterion::Criterion;
use governor::{Quota, RateLimiter};
use tokengate::{Algorithm, Cost, Dimension, Limit, Limiter, Policy};

const GROUP: &str = "contended";
const SAMPLES: usize = 20;
const THREADS: usize = 2;

fn policy() -> Policy {
    Policy::builder()
        .limit(
            Dimension::Requests,
            Limit::per_second(u64::from(u32::MAX)).algorithm(Algorithm::TokenBucket),
        )
        .build()
        .expect("a valid policy")
}

/// `THREADS` threads make `iters` decisions each at once; the longer thread's time.
fn contended(decide: impl Fn() -> bool + Sync, iters: u64) -> Duration {
    let barrier = Barrier::new(THREADS);
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    common::timed_loop(iters, || {}, &decide)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(SAMPLES);

    let quota = Quota::per_second(NonZeroU32::MAX);
    common::bench(&mut g, GROUP, "governor/uncontended", |iters| {
        let lim = RateLimiter::direct(quota);
        common::timed_loop(iters, || {}, || lim.check().is_ok())
    });
    common::bench(&mut g, GROUP, "governor/2_threads", |iters| {
        let lim = RateLimiter::direct(quota);
        contended(|| lim.check().is_ok(), iters)
    });
    common::bench(&mut g, GROUP, "tokengate/uncontended", |iters| {
        let limiter = Limiter::new(policy());
        common::tokengate_loop(&limiter, iters, Cost::request, || {})
    });
    common::bench(&mut g, GROUP, "tokengate/2_threads", |iters| {
        let limiter = Limiter::new(policy());
        contended(|| limiter.try_acquire(Cost::request()).is_ok(), iters)
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();

    let key = |id: &str| format!("{GROUP}/{id}");
    println!("\n== contended summary (ns per decision per thread; 2 threads on one limiter)");
    let mut contended_ns = Vec::new();
    for name in ["governor", "tokengate"] {
        let one = common::ns_per_iter(&key(&format!("{name}/uncontended")), SAMPLES);
        let two = common::ns_per_iter(&key(&format!("{name}/2_threads")), SAMPLES);
        match (one, two) {
            (Some(one), Some(two)) => {
                println!(
                    "{name}: uncontended {one:.1} ns, contended {two:.1} ns per decision \
                     ({:.1} ns per decision overall); contended/uncontended: {:.2}x",
                    two / THREADS as f64,
                    two / one
                );
                contended_ns.push(two);
            }
            _ => println!("{name}: not measured in this run (filtered out or --test mode)"),
        }
    }
    if let [governor, tokengate] = contended_ns[..] {
        println!(
            "contended, tokengate vs governor: ratio to governor: {:.2}x",
            tokengate / governor
        );
    }
}
