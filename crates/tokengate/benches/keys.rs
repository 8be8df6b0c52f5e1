//! One million distinct keys through one limiter: the memory they take, and what is left after
//! idle eviction; then the time of a decision on a key.
//!
//! Printed once, before criterion runs:
//! - **Memory** (target: back to the active set, under 10 MiB of growth), net heap bytes
//!   counted by `stats_alloc`'s instrumented global allocator: a `ManualClock` limiter from a
//!   config (model `gpt-4o` with limits high enough to admit every request here; every tenant
//!   under `[defaults.tenant]`, 60,000 requests and 100,000 tokens a minute), the cap raised to
//!   2,000,000 so that every key gets a budget of its own. First an active set of 1,000 tenants
//!   (one request each), measured; then 1,000,000 one-off tenants, one request each, 1 µs
//!   apart (sweeps run on their own meanwhile, but nothing is idle yet: every budget counts its
//!   request for a minute); then 61 s later the active set asks again and `evict_idle` runs;
//!   measured again.
//! - The same run with the default cap (100,000): past it new tenants share the overflow
//!   budget, so memory stays bounded even with nothing idle.
//!
//! Timed by criterion: `try_acquire` on an existing key (the model's and tenant's budgets
//! found by name), on a new key each time (a budget made), and on the limiter alone for
//! comparison.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokengate::config::Config;
use tokengate::{Cost, Limiter, ManualClock, Policy};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CONFIG: &str = r#"
[models.gpt-4o]
requests_per_minute = 1_000_000_000
tokens_per_minute = 100_000_000_000

[defaults.tenant]
requests_per_minute = 60_000
tokens_per_minute = 100_000
"#;

const ACTIVE: usize = 1_000;
const ONE_OFF: usize = 1_000_000;
const MIB: f64 = 1024.0 * 1024.0;

fn limiter() -> Limiter<ManualClock> {
    let config = Config::from_toml_str(CONFIG, "keys.toml").expect("valid config");
    Limiter::from_config_with_clock(config, ManualClock::new())
}

/// Net heap bytes allocated in `region` so far.
fn net(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn ask(limiter: &Limiter<ManualClock>, tenant: &str) {
    if let Ok(p) = limiter
        .key(tenant, "gpt-4o")
        .try_acquire(Cost::request().input(10))
    {
        drop(p);
    }
}

fn memory(max_keys: Option<usize>) {
    let region = Region::new(GLOBAL);
    let limiter = limiter();
    if let Some(max) = max_keys {
        limiter.set_max_keys(max);
    }
    let active: Vec<String> = (0..ACTIVE).map(|i| format!("active-{i}")).collect();
    for t in &active {
        ask(&limiter, t);
    }
    let base = net(&region);
    let base_budgets = limiter.budgets();
    let started = Instant::now();
    let mut name = String::new();
    for i in 0..ONE_OFF {
        use std::fmt::Write;
        name.clear();
        let _ = write!(name, "one-off-{i}");
        ask(&limiter, &name);
        limiter.clock().advance(Duration::from_micros(1));
    }
    let took = started.elapsed();
    let peak = net(&region);
    let peak_budgets = limiter.budgets();
    limiter.clock().advance(Duration::from_secs(61));
    for t in &active {
        ask(&limiter, t);
    }
    let evicted = limiter.evict_idle();
    let after = net(&region);
    let cap = max_keys.map_or("default cap (100,000)".to_owned(), |m| format!("cap {m}"));
    println!("keys memory, {cap}:");
    println!(
        "  active set ({ACTIVE} tenants): {:.2} MiB, {base_budgets} budgets",
        base as f64 / MIB
    );
    println!(
        "  after {ONE_OFF} one-off tenants: {:.1} MiB, {peak_budgets} budgets ({:.0} bytes per key; {:.0} ns per new key)",
        peak as f64 / MIB,
        (peak - base) as f64 / ONE_OFF as f64,
        took.as_nanos() as f64 / ONE_OFF as f64
    );
    println!(
        "  after eviction ({evicted} dropped): {:.2} MiB, {} budgets; growth over the active set {:.3} MiB (target < 10 MiB)",
        after as f64 / MIB,
        limiter.budgets(),
        (after - base) as f64 / MIB
    );
    drop(limiter);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    let limiter = limiter();
    let key = limiter.key("acme", "gpt-4o");
    // Time never moves and the budgets are generous: refill by advancing a little each time.
    group.bench_function("existing key", |b| {
        b.iter(|| {
            limiter.clock().advance(Duration::from_millis(10));
            black_box(key.try_acquire(black_box(Cost::request())).is_ok())
        })
    });
    let mut i = 0u64;
    let fresh = self::limiter();
    fresh.set_max_keys(usize::MAX);
    group.bench_function("new key each time", |b| {
        b.iter(|| {
            i += 1;
            fresh.clock().advance(Duration::from_millis(10));
            let tenant = format!("t{i}");
            black_box(
                fresh
                    .key(&tenant, "gpt-4o")
                    .try_acquire(Cost::request())
                    .is_ok(),
            )
        })
    });
    let plain = Limiter::with_clock(
        Policy::builder()
            .requests_per_minute(10_000)
            .build()
            .expect("valid"),
        ManualClock::new(),
    );
    group.bench_function("limiter alone", |b| {
        b.iter(|| {
            plain.clock().advance(Duration::from_millis(10));
            black_box(plain.try_acquire(black_box(Cost::request())).is_ok())
        })
    });
    group.finish();
}

fn main() {
    memory(Some(2_000_000));
    memory(None);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
