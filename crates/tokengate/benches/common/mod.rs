//! Helpers shared by the benchmarks: a record of the samples criterion takes, so each bench can
//! print a summary line (`ratio to governor: 1.23x`) from the very figures it measured.
//!
//! Every benchmark runs through [`bench`], which times its routine with `iter_custom` and keeps
//! `(iterations, elapsed)` of every call. Criterion calls the routine for its warm-up first and
//! then exactly `sample_size` times for the measurement, so the last `sample_size` calls are the
//! measured samples; [`ns_per_iter`] is their total time over their total iterations (the slope
//! criterion reports, within noise).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

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
