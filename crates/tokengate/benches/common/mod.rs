//! Helpers shared by the benchmarks: a record of the samples criterion takes, so each bench can
//! print a summary line (`ratio to governor: 1.23x`) from the very figures it measured.
//!
//! Every benchmark runs through [`bench`], which times its routine with `iter_custom` and keeps
//! `(iterations, elapsed)` of every call. Criterion calls the routine for its warm-up first and
//! then exactly `sample_size` times for the measurement, so the last `sample_size` calls are the
//! measured samples; [`ns_per_iter`] is their total time over their total iterations (the slope
//! criterion reports, within noise).
//!
//! Also here: [`timed_loop`] and [`tokengate_loop`], the timed decision loops, and
//! [`vs_governor`], the case list `single_dimension` and `three_dimensions` both run.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use tokengate::{Clock, Cost, Limiter};

/// `(iterations, elapsed)` of every call, by `group/function`.
static CALLS: Mutex<BTreeMap<String, Vec<(u64, Duration)>>> = Mutex::new(BTreeMap::new());

/// Benchmarks `routine` (which runs `iters` iterations and returns the time they took) as
/// `id` in `group`, and records every call under `group_name/id`.
pub(crate) fn bench<R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    id: &str,
    mut routine: R,
) where
    R: FnMut(u64) -> Duration,
{
    let key = format!("{group_name}/{id}");
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let elapsed = routine(iters);
            CALLS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default()
                .push((iters, elapsed));
            elapsed
        })
    });
}

/// Mean nanoseconds per iteration over the last `samples` calls of `key`, or `None` when the
/// benchmark did not run a full measurement (filtered out, or `--test` mode).
pub(crate) fn ns_per_iter(key: &str, samples: usize) -> Option<f64> {
    let calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    let v = calls.get(key)?;
    if v.len() < samples {
        return None;
    }
    let tail = &v[v.len() - samples..];
    let iters: u64 = tail.iter().map(|c| c.0).sum();
    let nanos: f64 = tail.iter().map(|c| c.1.as_secs_f64() * 1e9).sum();
    (iters > 0).then(|| nanos / iters as f64)
}

#[allow(dead_code)] // not every bench prints a ratio to governor
/// Prints `label: subject X ns, baseline Y ns per decision; ratio to governor: Z.ZZx` when
/// both were measured.
pub(crate) fn print_ratio(label: &str, subject: &str, baseline: &str, samples: usize) {
    match (
        ns_per_iter(subject, samples),
        ns_per_iter(baseline, samples),
    ) {
        (Some(s), Some(b)) => println!(
            "{label}: {s:.1} ns vs governor {b:.1} ns per decision; ratio to governor: {:.2}x",
            s / b
        ),
        _ => println!("{label}: not measured in this run (filtered out or --test mode)"),
    }
}

#[allow(dead_code)] // not every bench times decisions in a loop
/// Times `iters` decisions, each made by `decide` after calling `before` (which is timed too);
/// every decision must admit, or the benchmark would be wrong.
pub(crate) fn timed_loop(iters: u64, before: impl Fn(), decide: impl Fn() -> bool) -> Duration {
    let mut admitted = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        before();
        admitted += u64::from(black_box(decide()));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        admitted, iters,
        "a decision was denied: the benchmark would be wrong"
    );
    elapsed
}

#[allow(dead_code)] // not every bench times tokengate decisions
/// Times `iters` tokengate decisions of `cost()` (built inside the loop), each admitted and its
/// permit dropped at once, each after calling `before`.
pub(crate) fn tokengate_loop<C: Clock>(
    limiter: &Limiter<C>,
    iters: u64,
    cost: impl Fn() -> Cost,
    before: impl Fn(),
) -> Duration {
    timed_loop(iters, before, || limiter.try_acquire(cost()).is_ok())
}

#[allow(dead_code)] // run only by single_dimension and three_dimensions
/// The cases `single_dimension` and `three_dimensions` both run, next to governor in the same
/// run: they differ only in the policies they build, the cost of a decision and the labels of
/// their summaries, which each supplies through [`vs_governor::Cases`]. See `single_dimension`
/// for what each case measures.
pub(crate) mod vs_governor {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use criterion::Criterion;
    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};
    use tokengate::{Cost, Limiter, ManualClock, Policy};

    use super::{bench, print_ratio, timed_loop, tokengate_loop};

    /// Measured samples per case.
    const SAMPLES: usize = 30;
    /// The pace of 10,000 per minute.
    pub(crate) const PACE: Duration = Duration::from_millis(6);
    /// The request rate of the paced cases.
    pub(crate) const PACED_RPM: u32 = 10_000;

    /// What one bench supplies: its group, its policies, its cost and its summary's labels.
    pub(crate) trait Cases {
        /// The criterion group, also the prefix of every benchmark id.
        const GROUP: &'static str;
        /// The summary's heading, after `== `.
        const SUMMARY: &'static str;
        /// The summary's labels.
        const LABELS: Labels;
        /// `tokengate/{system,manual}_clock/token_bucket`.
        fn token_bucket() -> Policy;
        /// `tokengate/{system,manual}_clock/token_bucket_exact`.
        fn token_bucket_exact() -> Policy;
        /// `tokengate/system_clock/smooth_window_1ms`.
        fn smooth_window_1ms() -> Policy;
        /// `tokengate/manual_clock/smooth_window_paced`, at exactly [`PACED_RPM`] requests a
        /// minute (one each [`PACE`]).
        fn smooth_window_paced() -> Policy;
        /// The cost of one decision, called inside the timed loop.
        fn cost() -> Cost;
    }

    /// The label of each summary line, in the order printed.
    pub(crate) struct Labels {
        /// `tokengate/system_clock/token_bucket` vs `governor/quanta_clock`.
        pub(crate) token_bucket_system: &'static str,
        /// `tokengate/manual_clock/token_bucket` vs `governor/fake_clock`.
        pub(crate) token_bucket_manual: &'static str,
        /// `tokengate/system_clock/token_bucket_exact` vs `governor/quanta_clock`.
        pub(crate) token_bucket_exact_system: &'static str,
        /// `tokengate/manual_clock/token_bucket_exact` vs `governor/fake_clock`.
        pub(crate) token_bucket_exact_manual: &'static str,
        /// `tokengate/system_clock/token_bucket_exact_admit` vs `governor/quanta_clock`.
        pub(crate) token_bucket_exact_admit_system: &'static str,
        /// `tokengate/manual_clock/token_bucket_exact_admit` vs `governor/fake_clock`.
        pub(crate) token_bucket_exact_admit_manual: &'static str,
        /// `tokengate/system_clock/smooth_window_1ms` vs `governor/quanta_clock`.
        pub(crate) smooth_window_1ms: &'static str,
        /// `tokengate/manual_clock/smooth_window_paced` vs `governor/fake_clock_paced`.
        pub(crate) smooth_window_paced: &'static str,
    }

    fn huge_quota() -> Quota {
        Quota::per_second(NonZeroU32::MAX)
    }

    fn benches<T: Cases>(c: &mut Criterion) {
        let group = T::GROUP;
        let mut g = c.benchmark_group(group);
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(SAMPLES);

        bench(&mut g, group, "governor/quanta_clock", |iters| {
            let lim = RateLimiter::direct(huge_quota());
            timed_loop(iters, || {}, || lim.check().is_ok())
        });
        bench(&mut g, group, "governor/fake_clock", |iters| {
            let lim = RateLimiter::direct_with_clock(huge_quota(), FakeRelativeClock::default());
            timed_loop(iters, || {}, || lim.check().is_ok())
        });
        bench(
            &mut g,
            group,
            "tokengate/system_clock/token_bucket",
            |iters| tokengate_loop(&Limiter::new(T::token_bucket()), iters, T::cost, || {}),
        );
        bench(
            &mut g,
            group,
            "tokengate/manual_clock/token_bucket",
            |iters| {
                let limiter = Limiter::with_clock(T::token_bucket(), ManualClock::new());
                tokengate_loop(&limiter, iters, T::cost, || {})
            },
        );
        bench(
            &mut g,
            group,
            "tokengate/system_clock/token_bucket_exact",
            |iters| {
                tokengate_loop(
                    &Limiter::new(T::token_bucket_exact()),
                    iters,
                    T::cost,
                    || {},
                )
            },
        );
        bench(
            &mut g,
            group,
            "tokengate/manual_clock/token_bucket_exact",
            |iters| {
                let limiter = Limiter::with_clock(T::token_bucket_exact(), ManualClock::new());
                tokengate_loop(&limiter, iters, T::cost, || {})
            },
        );
        // `try_admit`: the same decision, admitted and over at once, without a permit (what
        // governor's `check` is).
        bench(
            &mut g,
            group,
            "tokengate/system_clock/token_bucket_exact_admit",
            |iters| {
                let limiter = Limiter::new(T::token_bucket_exact());
                timed_loop(iters, || {}, || limiter.try_admit(T::cost()).is_ok())
            },
        );
        bench(
            &mut g,
            group,
            "tokengate/manual_clock/token_bucket_exact_admit",
            |iters| {
                let limiter = Limiter::with_clock(T::token_bucket_exact(), ManualClock::new());
                timed_loop(iters, || {}, || limiter.try_admit(T::cost()).is_ok())
            },
        );
        bench(
            &mut g,
            group,
            "tokengate/system_clock/smooth_window_1ms",
            |iters| tokengate_loop(&Limiter::new(T::smooth_window_1ms()), iters, T::cost, || {}),
        );
        bench(&mut g, group, "governor/fake_clock_paced", |iters| {
            let clock = FakeRelativeClock::default();
            let quota = Quota::per_minute(NonZeroU32::new(PACED_RPM).expect("non-zero"));
            let lim = RateLimiter::direct_with_clock(quota, clock.clone());
            // The same warm-up as tokengate's: one full window of admissions.
            let check = || lim.check().is_ok();
            timed_loop(u64::from(PACED_RPM), || clock.advance(PACE), check);
            timed_loop(iters, || clock.advance(PACE), check)
        });
        bench(
            &mut g,
            group,
            "tokengate/manual_clock/smooth_window_paced",
            |iters| {
                let clock = ManualClock::new();
                let limiter = Limiter::with_clock(T::smooth_window_paced(), clock.clone());
                // Fill the window: 10,000 entries, then each decision expires one and appends one.
                tokengate_loop(&limiter, u64::from(PACED_RPM), T::cost, || {
                    clock.advance(PACE)
                });
                tokengate_loop(&limiter, iters, T::cost, || clock.advance(PACE))
            },
        );
        g.finish();
    }

    /// Runs every case, then prints the summary: each bench's whole `main`.
    pub(crate) fn main<T: Cases>() {
        let mut c = Criterion::default().configure_from_args();
        benches::<T>(&mut c);
        c.final_summary();

        let key = |id: &str| format!("{}/{id}", T::GROUP);
        let labels = T::LABELS;
        println!("\n== {}", T::SUMMARY);
        for (label, subject, baseline) in [
            (
                labels.token_bucket_system,
                "tokengate/system_clock/token_bucket",
                "governor/quanta_clock",
            ),
            (
                labels.token_bucket_manual,
                "tokengate/manual_clock/token_bucket",
                "governor/fake_clock",
            ),
            (
                labels.token_bucket_exact_system,
                "tokengate/system_clock/token_bucket_exact",
                "governor/quanta_clock",
            ),
            (
                labels.token_bucket_exact_manual,
                "tokengate/manual_clock/token_bucket_exact",
                "governor/fake_clock",
            ),
            (
                labels.token_bucket_exact_admit_system,
                "tokengate/system_clock/token_bucket_exact_admit",
                "governor/quanta_clock",
            ),
            (
                labels.token_bucket_exact_admit_manual,
                "tokengate/manual_clock/token_bucket_exact_admit",
                "governor/fake_clock",
            ),
            (
                labels.smooth_window_1ms,
                "tokengate/system_clock/smooth_window_1ms",
                "governor/quanta_clock",
            ),
            (
                labels.smooth_window_paced,
                "tokengate/manual_clock/smooth_window_paced",
                "governor/fake_clock_paced",
            ),
        ] {
            print_ratio(label, &key(subject), &key(baseline), SAMPLES);
        }
    }
}
