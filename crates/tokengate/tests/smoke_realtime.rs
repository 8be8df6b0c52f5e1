//! Real-time smoke test: the async front end on the system clock and a multi-thread tokio
//! runtime. 200 tasks share a limiter of 50 requests per 200 ms (the default algorithm with a
//! burst of 25, so both the window and the bucket bind) and at most 10 in flight; the admission
//! times are checked against every limit, and the run must take at least as long as the
//! fastest schedule the limits allow (computed on a `ManualClock`).
//!
//! When the `check-admissions` script is there (named by `TOKENGATE_CHECK_ADMISSIONS`, or
//! beside the work tree), the admission log is also checked by it, with `python3`.

mod common;

use common::windows::most_in_window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokengate::core::Nanos;
use tokengate::{Clock, Cost, Dimension, Limit, Limiter, ManualClock, Policy, Usage};

const AMOUNT: u64 = 50;
const PERIOD: Duration = Duration::from_millis(200);
const PERIOD_NS: Nanos = 200_000_000;
const BURST: u64 = 25;
const MAX_IN_FLIGHT: u64 = 10;
const TASKS: u64 = 200;
/// How long a task holds its permit ("the call").
const HOLD: Duration = Duration::from_millis(20);

/// The limits, exact: no safety margin (`Limit::margin`), so that the fastest schedule is the
/// limits' own.
fn policy(in_flight: bool) -> Policy {
    let builder = Policy::builder()
        .limit(Dimension::Requests, Limit::new(AMOUNT, PERIOD).burst(BURST))
        .margin(Duration::ZERO);
    let builder = if in_flight {
        builder.max_in_flight(MAX_IN_FLIGHT)
    } else {
        builder
    };
    builder.build().expect("a valid policy")
}

/// The earliest instant at which the last of `TASKS` requests can be admitted: a client that
/// asks again at exactly the instant each denial names, on a manual clock, with no in-flight
/// cap (holding permits can only delay admissions).
fn fastest_last_admission() -> Nanos {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(policy(false), clock.clone());
    let mut admitted = 0;
    let mut last = 0;
    while admitted < TASKS {
        match limiter.try_acquire(Cost::request()) {
            Ok(permit) => {
                admitted += 1;
                last = permit.admitted_at();
            }
            Err(denied) => clock.advance(denied.wait().expect("rate-limited, with a wait")),
        }
    }
    last
}

/// The largest excess over the token-bucket reading, in units x period: over every
/// `[t_i, t_j]`, `count * period - (burst * period + amount * (t_j - t_i))`; at most 0 when the
/// bucket (refill `AMOUNT` per `PERIOD`, capacity `BURST`) was kept.
fn largest_bucket_excess(times: &[Nanos]) -> i128 {
    let mut worst = i128::MIN;
    for i in 0..times.len() {
        for j in i..times.len() {
            let count = (j - i + 1) as i128;
            let allowed =
                BURST as i128 * PERIOD_NS as i128 + AMOUNT as i128 * (times[j] - times[i]) as i128;
            worst = worst.max(count * PERIOD_NS as i128 - allowed);
        }
    }
    worst
}

/// Runs `check-admissions` on the log when it is there.
fn check_with_script(times: &[Nanos]) {
    let lines: String = times
        .iter()
        .map(|&t| {
            format!(
                "{{\"t\": {}.{:09}, \"key\": \"smoke\", \"requests\": 1}}\n",
                t / 1_000_000_000,
                t % 1_000_000_000
            )
        })
        .collect();
    let args = ["--limit", "requests=50/0.2", "--bucket", "requests=250:25"].map(String::from);
    if let Some(stdout) = common::check_admissions::check("smoke-realtime", &lines, &args) {
        assert!(stdout.contains(&format!("admissions: {TASKS}")), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_on_the_system_clock_keep_every_limit() {
    let fastest = fastest_last_admission();
    // Burst 25 at 0, 25 more paced 4 ms apart, then the window is full until 200 ms: the
    // 200th request cannot come before 700 ms.
    assert_eq!(fastest, 700_000_000);

    let limiter = Limiter::new(policy(true));
    let times = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (limiter, times, in_flight, peak) = (
                limiter.clone(),
                Arc::clone(&times),
                Arc::clone(&in_flight),
                Arc::clone(&peak),
            );
            tokio::spawn(async move {
                let permit = limiter.acquire(Cost::request()).await.expect("admissible");
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                times.lock().unwrap().push(permit.admitted_at());
                tokio::time::sleep(HOLD).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                // Half settle, half drop: both free the slot.
                if i % 2 == 0 {
                    permit.settle(Usage::new());
                } else {
                    drop(permit);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a task panicked");
    }
    let elapsed = started.elapsed();

    let mut times = std::mem::take(&mut *times.lock().unwrap());
    times.sort_unstable();
    assert_eq!(times.len() as u64, TASKS);
    let stats = limiter.stats();
    assert_eq!(
        (
            stats.admitted,
            stats.settled,
            stats.in_flight,
            stats.waiters
        ),
        (TASKS, TASKS / 2, 0, 0)
    );

    // Every limit, from the admission instants on the limiter's own clock.
    let points: Vec<(Duration, u64)> = times
        .iter()
        .map(|&t| (Duration::from_nanos(t), 1))
        .collect();
    let window = most_in_window(&points, PERIOD);
    assert!(
        window <= AMOUNT,
        "{window} admissions in one window of {PERIOD:?}"
    );
    let excess = largest_bucket_excess(&times);
    assert!(excess <= 0, "the bucket was exceeded by {excess} unit-ns");
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= MAX_IN_FLIGHT, "{peak} requests in flight at once");

    // Timing: never faster than the limits allow (exact, on the limiter's clock; a little
    // slack for the wall clock), and not absurdly slow on a loaded machine.
    let last = *times.last().expect("admissions");
    assert!(
        last >= fastest,
        "last admission at {last} ns, before the earliest possible {fastest} ns"
    );
    assert!(
        elapsed + Duration::from_millis(1) >= Duration::from_nanos(fastest) + HOLD,
        "finished in {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}, expected about 0.7 s"
    );
    assert!(limiter.clock().now() >= last);
    println!(
        "{TASKS} admissions in {elapsed:?} (fastest possible {:?}); largest window {window}/{AMOUNT}, peak in flight {peak}/{MAX_IN_FLIGHT}, waits p50 <= {:?}, max {:?}",
        Duration::from_nanos(fastest),
        stats.waits.p50,
        stats.waits.max
    );

    check_with_script(&times);
}
