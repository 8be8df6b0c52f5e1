//! The Redis store on loopback: decisions per second and latency (p50, p99) at 1, 16 and 64
//! concurrent tasks and with 4 processes, for a one-limit token bucket and for the default
//! three-limit policy (requests, input and output tokens, smooth window), next to the ceiling:
//! a trivial EVALSHA (`return 1`) on the same connection at the same concurrency. Server time
//! per decision comes from Redis's own `INFO commandstats` (`evalsha` for the ceiling, `fcall`
//! for the store: its microseconds over the decisions made), with the decisions each call
//! made (the store sends concurrent acquisitions together). Client time per decision is the
//! CPU time of the bench's own process (every thread: the tasks, the runtime, the connection;
//! user and system, from `/proc/self/stat`, in steps of 10 ms) over its decisions.
//!
//! It starts its own `redis-server` on a free loopback port and stops it. Every decision admits
//! (the limits are far above what a run can use), so each one writes its state, the costlier
//! path.
//!
//! Run: `cargo bench -p tokengate --features redis --bench redis_store`
//! (`TOKENGATE_BENCH_SECS` sets each run's length, 3 s unless set.)

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;
#[path = "common/redis_work.rs"]
mod redis_work;

use std::process::Command;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis_work::Work;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreBudget};

/// Tasks of one process: the 1 and 16, and 64, where more acquisitions wait for each
/// call (at 16 the rate is bound by the cadence of the calls in flight: docs/redis.md).
const TASKS: [usize; 3] = [1, 16, 64];
const PROCESSES: usize = 4;
/// Tasks in each process of the multi-process run.
const TASKS_PER_PROCESS: usize = 4;
const CHILD: &str = "TOKENGATE_BENCH_CHILD";

/// What one run measured.
#[derive(Debug, Default, Clone)]
struct Figures {
    decisions: u64,
    secs: f64,
    /// CPU time this process spent, in seconds (`None` where `/proc` cannot tell).
    cpu: Option<f64>,
    /// Latencies in ns, sorted.
    latencies: Vec<u64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.decisions as f64 / self.secs
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        Duration::from_nanos(self.latencies[i])
    }
}

/// The CPU time, user and system, of every thread of this process so far, in seconds; `None`
/// without Linux's `/proc`. (Its clock ticks are USER_HZ, 100 a second on Linux.)
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime: fields 14 and 15 of the line, 12th and 13th after the name.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Microseconds a decision from CPU seconds.
fn per_decision(cpu: Option<f64>, decisions: u64) -> String {
    cpu.map_or_else(
        || "-".to_string(),
        |secs| format!("{:.2}", secs * 1e6 / decisions.max(1) as f64),
    )
}

fn run_secs() -> Duration {
    let secs = std::env::var("TOKENGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

async fn connect(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("a Redis URL");
    ConnectionManager::new(client).await.expect("connects")
}

/// `tasks` tasks deciding as fast as they can for `secs` on one connection.
async fn drive(url: &str, work: Work, tasks: usize, secs: Duration, namespace: &str) -> Figures {
    let connection = connect(url).await;
    let store = std::sync::Arc::new(
        RedisStore::with_connection(connection.clone()).namespace("tokengate-bench", namespace),
    );
    let budgets = std::sync::Arc::new([StoreBudget::new("account", work.policy())]);
    let ceiling = std::sync::Arc::new(redis::Script::new("return 1"));
    let cpu = cpu_secs();
    let start = Instant::now();
    let end = start + secs;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, budgets, ceiling) = (store.clone(), budgets.clone(), ceiling.clone());
        let mut connection = connection.clone();
        let key = format!("tokengate-bench:{{{namespace}}}:ceiling");
        handles.push(tokio::spawn(async move {
            let cost = work.cost();
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                match work {
                    Work::Ceiling => {
                        let one: i64 = ceiling
                            .key(&key)
                            .invoke_async(&mut connection)
                            .await
                            .expect("EVALSHA");
                        assert_eq!(one, 1);
                    }
                    _ => {
                        let answer = store
                            .acquire(Ask::new(&budgets[..], &cost))
                            .await
                            .expect("the store answers");
                        assert!(answer.reserved().is_some(), "every decision admits");
                    }
                }
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            latencies
        }));
    }
    let mut figures = Figures::default();
    for h in handles {
        figures.latencies.extend(h.await.expect("a bench task"));
    }
    figures.secs = start.elapsed().as_secs_f64();
    figures.cpu = cpu.zip(cpu_secs()).map(|(before, after)| after - before);
    figures.decisions = figures.latencies.len() as u64;
    figures.latencies.sort_unstable();
    figures
}

/// The calls and microseconds of the scripts and functions run (`cmdstat_evalsha` and
/// `cmdstat_fcall`: the ceiling is the one, the store the other).
async fn script_stats(url: &str) -> (u64, u64) {
    let mut connection = connect(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    let field = |name: &str| -> u64 {
        ["cmdstat_evalsha", "cmdstat_fcall"]
            .iter()
            .map(|command| redis_server::command_stat(&info, command, name))
            .sum()
    };
    (field("calls"), field("usec"))
}

/// The child of a multi-process run: drives and prints `decisions secs p50_ns p99_ns cpu_s`
/// (`cpu_s` -1 when unknown).
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let (url, work, secs, namespace) = (
        parts[0],
        Work::parse(parts[1]),
        Duration::from_secs_f64(parts[2].parse().expect("secs")),
        parts[3],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let f = runtime.block_on(drive(url, work, TASKS_PER_PROCESS, secs, namespace));
    println!(
        "{} {} {} {} {}",
        f.decisions,
        f.secs,
        f.quantile(0.5).as_nanos(),
        f.quantile(0.99).as_nanos(),
        f.cpu.unwrap_or(-1.0)
    );
}

/// `PROCESSES` copies of this bench deciding at once on one namespace: their decisions a
/// second, their decisions, the worst of their p50 and p99, and their CPU seconds.
fn processes(
    url: &str,
    work: Work,
    secs: Duration,
    namespace: &str,
) -> (f64, u64, Duration, Duration, Option<f64>) {
    let me = std::env::current_exe().expect("the bench's own path");
    let spec = format!("{url} {} {} {namespace}", work.code(), secs.as_secs_f64());
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&me)
                .env(CHILD, &spec)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("a child bench process")
        })
        .collect();
    let (mut rate, mut decisions, mut p50, mut p99) = (0.0, 0, Duration::ZERO, Duration::ZERO);
    let mut cpu = Some(0.0);
    for c in children {
        let out = c.wait_with_output().expect("a child's figures");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().expect("a figure"))
            .collect();
        rate += f[0] / f[1];
        decisions += f[0] as u64;
        p50 = p50.max(Duration::from_nanos(f[2] as u64));
        p99 = p99.max(Duration::from_nanos(f[3] as u64));
        cpu = cpu
            .zip(Some(f[4]).filter(|c| *c >= 0.0))
            .map(|(a, b)| a + b);
    }
    (rate, decisions, p50, p99, cpu)
}

/// Server microseconds a decision, and decisions a call, from `INFO commandstats` before
/// and after `decisions`.
fn server_figures(before: (u64, u64), after: (u64, u64), decisions: u64) -> (f64, f64) {
    let (calls, usec) = (after.0 - before.0, after.1 - before.1);
    (
        usec as f64 / decisions.max(1) as f64,
        decisions as f64 / calls.max(1) as f64,
    )
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick {
        Duration::from_millis(200)
    } else {
        run_secs()
    };
    let server = redis_server::RedisServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "Redis store on loopback ({} s a run; every decision admits and writes)",
        secs.as_secs_f64()
    );
    println!(
        "{:<28} {:>10} {:>14} {:>10} {:>10} {:>12} {:>11} {:>7} {:>11}",
        "workload",
        "concurrency",
        "decisions/s",
        "p50",
        "p99",
        "% of ceiling",
        "server µs",
        "a call",
        "client µs"
    );
    let mut n = 0;
    for &tasks in &TASKS {
        let mut ceiling = 0.0;
        for work in Work::ALL {
            n += 1;
            let namespace = format!("run{n}");
            let before = runtime.block_on(script_stats(&url));
            let f = runtime.block_on(drive(&url, work, tasks, secs, &namespace));
            let after = runtime.block_on(script_stats(&url));
            let (server_us, per_call) = server_figures(before, after, f.decisions);
            if work == Work::Ceiling {
                ceiling = f.rate();
            }
            println!(
                "{:<28} {:>10} {:>14.0} {:>10.1?} {:>10.1?} {:>11.0}% {:>11.2} {:>7.1} {:>11}",
                work.name(),
                format!("{tasks} tasks"),
                f.rate(),
                f.quantile(0.5),
                f.quantile(0.99),
                100.0 * f.rate() / ceiling,
                server_us,
                per_call,
                per_decision(f.cpu, f.decisions)
            );
        }
    }
    let mut ceiling = 0.0;
    for work in Work::ALL {
        n += 1;
        let namespace = format!("run{n}");
        let before = runtime.block_on(script_stats(&url));
        let (rate, decisions, p50, p99, cpu) = processes(&url, work, secs, &namespace);
        let after = runtime.block_on(script_stats(&url));
        let (server_us, per_call) = server_figures(before, after, decisions);
        if work == Work::Ceiling {
            ceiling = rate;
        }
        println!(
            "{:<28} {:>10} {:>14.0} {:>10.1?} {:>10.1?} {:>11.0}% {:>11.2} {:>7.1} {:>11}",
            work.name(),
            format!("{PROCESSES}x{TASKS_PER_PROCESS}"),
            rate,
            p50,
            p99,
            100.0 * rate / ceiling,
            server_us,
            per_call,
            per_decision(cpu, decisions)
        );
    }
    drop(server);
}
