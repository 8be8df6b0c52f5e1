//! A randomized workload on a keyed limiter under tokio's paused clock: hundreds of tasks on
//! random tenants and models (and on no key), acquiring in every way (wait, wait with a
//! timeout, cancelled by an outer timeout, try), holding, settling or dropping (owned permits
//! too), while a controller reloads between two configs, pauses models and evicts idle
//! budgets. Whatever happens: nothing stalls, no waiter or in-flight slot is left, the
//! limiter's own count of admissions equals the permits delivered, and once time has passed
//! every budget is idle and dropped (no reference leaked). Seeds are printed on failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokengate::config::Config;
use tokengate::{Cost, Limiter, TokioClock, Usage};

const FIRST: &str = r#"
    [models.m0]
    requests_per_minute = 120
    max_in_flight = 2
    [families.f]
    match = ["m1", "m2"]
    requests_per_minute = 60
    input_tokens_per_minute = 6000
    max_in_flight = 3
    [defaults.model]
    requests_per_minute = 240
    [tenants.t0]
    requests_per_minute = 60
    max_in_flight = 1
    [defaults.tenant]
    requests_per_minute = 120
    max_in_flight = 2
"#;

/// Other limits, another in-flight cap, a model moved into the family, a tenant listed.
const SECOND: &str = r#"
    [account]
    requests_per_minute = 600
    [models.m0]
    requests_per_minute = 180
    max_in_flight = 1
    [families.f]
    match = ["m1", "m2", "m3"]
    requests_per_minute = 90
    input_tokens_per_minute = 3000
    [defaults.model]
    requests_per_minute = 240
    max_in_flight = 2
    [tenants.t1]
    requests_per_minute = 30
    [defaults.tenant]
    requests_per_minute = 120
    max_in_flight = 2
"#;

/// xorshift64: a seeded sequence, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config(text: &str) -> Config {
    Config::from_toml_str(text, "limits.toml").expect("valid config")
}

async fn run(seed: u64, reloads: bool, tasks: usize, spread_ms: u64) {
    let limiter = Arc::new(Limiter::from_config_with_clock(
        config(FIRST),
        TokioClock::new(),
    ));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(seed.wrapping_mul(2_654_435_761).wrapping_add(1));
    let mut handles = Vec::new();
    for i in 0..tasks {
        let limiter = Arc::clone(&limiter);
        let delivered = Arc::clone(&delivered);
        let tenant = format!("t{}", rng.below(4));
        let model = format!("m{}", rng.below(4));
        let tokens = rng.below(2_000);
        let delay = rng.below(spread_ms);
        let hold = rng.below(4_000);
        let mode = rng.below(6);
        let settle = rng.below(3) > 0;
        let used = rng.below(2_500);
        let timeout = Duration::from_millis(rng.below(8_000) + 1);
        let keyless = rng.below(8) == 0;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let cost = Cost::request().input(tokens);
            let key = if keyless {
                limiter.key_of(None, None)
            } else {
                limiter.key(&tenant, &model)
            };
            let permit = match mode {
                0 => key.acquire_timeout(cost, timeout).await.ok(),
                1 => tokio::time::timeout(timeout, key.acquire(cost))
                    .await
                    .ok()
                    .and_then(Result::ok),
                2 => key.try_acquire(cost).ok(),
                _ => key.acquire(cost).await.ok(),
            };
            let Some(permit) = permit else { return };
            delivered.fetch_add(1, Ordering::SeqCst);
            let permit = if i % 2 == 0 {
                permit.into_owned()
            } else {
                permit
            };
            tokio::time::sleep(Duration::from_millis(hold)).await;
            if settle {
                permit.settle(Usage::new().input(used));
            }
        }));
        if rng.below(50) == 0 {
            tokio::task::yield_now().await;
        }
    }
    let controller = {
        let limiter = Arc::clone(&limiter);
        let mut rng = Rng(seed + 77);
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(rng.below(2_000))).await;
                match rng.below(5) {
                    0 if reloads => limiter.reload(config(SECOND)),
                    1 if reloads => limiter.reload(config(FIRST)),
                    2 => limiter
                        .model(&format!("m{}", rng.below(4)))
                        .pause(Duration::from_millis(rng.below(1_500))),
                    3 => {
                        limiter.evict_idle();
                    }
                    _ => {}
                }
            }
        })
    };
    let all = async {
        for h in handles {
            h.await.expect("a task panicked");
        }
        controller.await.expect("the controller panicked");
    };
    // A day of virtual time is far more than any wait here: reaching it means a stall.
    if tokio::time::timeout(Duration::from_secs(86_400), all)
        .await
        .is_err()
    {
        let left: Vec<_> = limiter
            .all_stats()
            .into_iter()
            .map(|s| (s.budget, s.waiters, s.in_flight))
            .collect();
        panic!("seed {seed}: stalled; (budget, waiters, in flight): {left:?}");
    }
    let stats = limiter.all_stats();
    for s in &stats {
        assert_eq!(
            s.in_flight, 0,
            "seed {seed}: {} has slots in flight",
            s.budget
        );
        assert_eq!(s.waiters, 0, "seed {seed}: {} has waiters", s.budget);
        // Every admission counted has its wait counted, and no other (a grant taken back
        // from a cancelled waiter takes back both).
        assert_eq!(
            s.waits.count, s.admitted,
            "seed {seed}: {} counts waits vs admissions",
            s.budget
        );
    }
    assert_eq!(
        stats[0].admitted,
        delivered.load(Ordering::SeqCst),
        "seed {seed}: admissions counted vs permits delivered"
    );
    tokio::time::advance(Duration::from_secs(3 * 86_400)).await;
    limiter.evict_idle();
    let left: Vec<String> = limiter.all_stats().into_iter().map(|s| s.budget).collect();
    assert_eq!(left, ["limiter"], "seed {seed}: budgets still referenced");
}

fn each_seed(
    seeds: std::ops::Range<u64>,
    reloads: impl Fn(u64) -> bool,
    tasks: usize,
    spread_ms: u64,
) {
    for seed in seeds {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        rt.block_on(run(seed, reloads(seed), tasks, spread_ms));
    }
}

#[test]
fn spread_out_without_reloads() {
    each_seed(0..60, |_| false, 120, 3_000);
}

#[test]
fn spread_out_with_reloads() {
    each_seed(0..60, |_| true, 120, 3_000);
}

#[test]
fn dense_with_and_without_reloads() {
    each_seed(0..60, |seed| seed % 2 == 0, 300, 300);
}
