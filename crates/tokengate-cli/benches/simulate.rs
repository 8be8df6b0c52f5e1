//! One hour of traffic at 500 requests per minute through the real limiter and the simulated
//! provider, in virtual time. The target is under 0.5 s a run; the figure is printed.
//!
//! ```text
//! cargo bench -p tokengate-cli --bench simulate
//! ```

use std::time::{Duration, Instant};

use criterion::Criterion;
use tokengate_cli::provider::ProviderSpec;
use tokengate_cli::workload::Workload;
use tokengate_cli::{simulate, SimInput, SimOptions};

/// An hour at 500 requests a minute, Poisson, a little under the limits so that it flows.
const WORKLOAD: &str = r#"
duration = "1h"
concurrency = 64
max_tokens = 512
[arrivals]
rate_per_minute = 500
[input_tokens]
kind = "uniform"
min = 100
max = 1500
[output_tokens]
kind = "uniform"
min = 20
max = 400
[latency]
base_ms = { kind = "uniform", min = 200, max = 1500 }
[[models]]
name = "gpt-4o"
"#;

const LIMITS: &str = r#"
[models."gpt-4o"]
requests_per_minute = 600
tokens_per_minute = 1_000_000
max_in_flight = 64
"#;

fn input() -> SimInput {
    let limits = tokengate::config::Config::from_toml_str(LIMITS, "bench limits").unwrap();
    SimInput {
        provider: ProviderSpec::enforcing(limits.clone()),
        limits,
        workload: Workload::from_toml_str(WORKLOAD, "bench workload").unwrap(),
        names: [
            "bench limits".into(),
            "bench workload".into(),
            "bench provider".into(),
        ],
    }
}

fn bench(c: &mut Criterion) {
    let input = input();
    let options = SimOptions {
        seed: Some(1),
        ..SimOptions::default()
    };
    // The figure the issue asks for, once, before criterion's statistics.
    let started = Instant::now();
    let sim = simulate(&input, &options).unwrap();
    let took = started.elapsed();
    println!(
        "one hour at 500 requests/min: {} admissions in {:.3} s (target < 0.5 s)",
        sim.records.len(),
        took.as_secs_f64()
    );
    let mut group = c.benchmark_group("simulate");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("one hour at 500 rpm", |b| {
        b.iter(|| simulate(&input, &options).unwrap().records.len())
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
