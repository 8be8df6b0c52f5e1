//! Four OS processes, four tasks each, share one set of limits through the Redis store, in real
//! time on Redis's own clock, for a few seconds. Their merged admission log must hold every
//! limit: exactly on the store's instants (the window of each limit and the bucket of the
//! default algorithm), and within a few milliseconds of scheduling on the instants the
//! processes really went at (what a provider would see). The binding limit must be used to at
//! least 95%.
//!
//! The processes are this test binary again, running the ignored `child` test with the
//! server's address in the environment. The admission logs are checked by
//! `shared/tools/check-admissions` when it is beside the work tree (as in CI).
//!
//! Run: `cargo test -p tokengate --features redis --test redis_processes`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::redis_server::RedisServer;
use common::rng::between;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, MemoryStore, Store, StoreBudget};
use tokengate::{Cost, Policy, Usage};

const PROCESSES: usize = 4;
const TASKS: usize = 4;
const RUN: Duration = Duration::from_secs(6);
const REQUESTS_PER_SECOND: u64 = 20;
const TOKENS_PER_SECOND: u64 = 10_000;
/// Input tokens a request: uniform in this range (mean 600: tokens bind, at about 16.7 a second).
const TOKENS: (u64, u64) = (200, 1_000);
const CHILD: &str = "TOKENGATE_REDIS_CHILD";

fn policy() -> Policy {
    // Both per second, with the default algorithm: the smooth window holds a sixtieth of each
    // at once (at least one unit). No safety margin: a request above the bucket waits for a
    // full bucket plus the margin, which at these small, fast limits (60 ms of bucket a
    // request) would leave half the quota idle; what the margin costs at providers' limits
    // is measured by tests/strict_provider.rs. Sharing is what this test is about.
    Policy::builder()
        .margin(Duration::ZERO)
        .limit(
            tokengate::Dimension::Requests,
            tokengate::Limit::per_second(REQUESTS_PER_SECOND),
        )
        .limit(
            tokengate::Dimension::InputTokens,
            tokengate::Limit::per_second(TOKENS_PER_SECOND),
        )
        .build()
        .expect("a valid policy")
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// One process: `tasks` tasks acquiring from `store` until the run ends; each admission
/// logged twice, at the store's instant (less `origin`) and at the instant it went (Unix time
/// less `unix_origin`).
async fn work<S: Store + 'static>(
    store: std::sync::Arc<S>,
    tasks: usize,
    seed: u64,
    origin: Duration,
    unix_origin: Duration,
    until: Duration,
) -> (Vec<String>, Vec<String>) {
    let budgets = std::sync::Arc::new([StoreBudget::new("account", policy())]);
    let mut running = Vec::new();
    for task in 0..tasks {
        let (store, budgets) = (store.clone(), budgets.clone());
        running.push(tokio::spawn(async move {
            let mut rng = seed * 100 + task as u64 + 1;
            let (mut at_store, mut went) = (Vec::new(), Vec::new());
            while unix_now() < until {
                let tokens = between(&mut rng, TOKENS.0, TOKENS.1);
                let cost = Cost::request().input(tokens);
                let ask = Ask::new(&budgets[..], &cost).max_wait(Duration::from_secs(5));
                let Some(reservation) = store.acquire(ask).await.expect("answers").reserved()
                else {
                    continue;
                };
                tokio::time::sleep(reservation.wait()).await;
                let go = unix_now().saturating_sub(unix_origin);
                let admitted = reservation.admitted_at().expect("a limit");
                // Seconds from the run's origin: Unix seconds as a float would lose the
                // nanoseconds the exact check needs.
                let line = |t: Duration| {
                    format!(
                        "{{\"t\": {:.9}, \"requests\": 1, \"input_tokens\": {tokens}}}",
                        t.as_secs_f64()
                    )
                };
                at_store.push(line(admitted.saturating_sub(origin)));
                went.push(line(go));
                store
                    .settle(&reservation, Some(&Usage::new()))
                    .await
                    .expect("settles");
            }
            (at_store, went)
        }));
    }
    let (mut at_store, mut went) = (Vec::new(), Vec::new());
    for t in running {
        let (a, w) = t.await.expect("a task");
        at_store.extend(a);
        went.extend(w);
    }
    (at_store, went)
}

/// The child process: runs its tasks and prints its two logs, separated by a line `--`.
#[test]
#[ignore = "a child process of four_processes_share_one_set_of_limits"]
fn child() {
    let spec = std::env::var(CHILD).expect("run by the parent test");
    let mut parts = spec.split(' ');
    let url = parts.next().expect("url").to_owned();
    let seed: u64 = parts.next().expect("seed").parse().expect("seed");
    let origin = Duration::from_secs(parts.next().expect("origin").parse().expect("origin"));
    let until =
        origin + Duration::from_millis(parts.next().expect("until").parse().expect("until"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (at_store, went) = runtime.block_on(async {
        let store = RedisStore::connect(&url).await.expect("connects");
        let store = std::sync::Arc::new(store.namespace("tokengate-processes", "shared"));
        work(store, TASKS, seed, origin, origin, until).await
    });
    let mut out = std::io::stdout().lock();
    for line in at_store {
        writeln!(out, "{line}").unwrap();
    }
    writeln!(out, "--").unwrap();
    for line in went {
        writeln!(out, "{line}").unwrap();
    }
}

/// The lines of a merged log, sorted by time.
fn merged(mut lines: Vec<String>) -> String {
    let t = |l: &String| -> f64 {
        let v: serde_json::Value = serde_json::from_str(l).expect("a log line");
        v["t"].as_f64().expect("t")
    };
    lines.sort_by(|a, b| t(a).total_cmp(&t(b)));
    lines.join("\n") + "\n"
}

/// The input tokens admitted as a share of the limit, over the run less its first and last
/// second (the processes starting, and the last reservations going out).
fn steady_share(lines: &[String]) -> f64 {
    let rows: Vec<(f64, f64)> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a log line");
            (
                v["t"].as_f64().expect("t"),
                v["input_tokens"].as_f64().expect("tokens"),
            )
        })
        .collect();
    let first = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let last = rows.iter().map(|r| r.0).fold(f64::NEG_INFINITY, f64::max);
    let (from, to) = (first + 1.0, last - 1.0);
    assert!(to - from >= 2.0, "a steady part of {:.1} s", to - from);
    let tokens: f64 = rows
        .iter()
        .filter(|r| r.0 >= from && r.0 < to)
        .map(|r| r.1)
        .sum();
    tokens / ((to - from) * TOKENS_PER_SECOND as f64)
}

#[test]
fn four_processes_share_one_set_of_limits() {
    let server = RedisServer::start();
    let me = std::env::current_exe().expect("this test binary");
    let start = Instant::now();
    // Every process runs until the same instant; times are logged from a whole second.
    let origin = Duration::from_secs(unix_now().as_secs());
    let until = unix_now() + RUN + Duration::from_millis(500) - origin;
    // The same demand on one process's in-memory store, at the same time: what the limits
    // give without sharing, the baseline for what sharing them through Redis gives.
    let absolute_until = origin + until;
    let baseline = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let store = std::sync::Arc::new(MemoryStore::new());
            let tasks = PROCESSES * TASKS;
            work(store, tasks, 99, Duration::ZERO, origin, absolute_until)
                .await
                .0
        })
    });
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&me)
                .args(["child", "--exact", "--ignored", "--nocapture", "--quiet"])
                .env(
                    CHILD,
                    format!(
                        "{} {i} {} {}",
                        server.url(),
                        origin.as_secs(),
                        until.as_millis()
                    ),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("a child process")
        })
        .collect();
    let (mut at_store, mut went) = (Vec::new(), Vec::new());
    for child in children {
        let out = child.wait_with_output().expect("the child's output");
        assert!(out.status.success(), "a child failed: {:?}", out.status);
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut second = false;
        for line in text.lines() {
            match line {
                "--" => second = true,
                l if l.starts_with('{') && second => went.push(l.to_owned()),
                l if l.starts_with('{') => at_store.push(l.to_owned()),
                _ => {}
            }
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the run took too long"
    );
    let admitted = at_store.len();
    println!("{admitted} admissions by {PROCESSES} processes x {TASKS} tasks");
    assert!(admitted > 50, "too few admissions: {admitted}");
    let windows = [
        format!("--limit=requests={REQUESTS_PER_SECOND}/1"),
        format!("--limit=input_tokens={TOKENS_PER_SECOND}/1"),
    ];
    // The bucket of the smooth window: a sixtieth at once (one request), and a request above
    // it only into a full bucket (the largest request then).
    let buckets = [
        format!("--bucket=requests={REQUESTS_PER_SECOND}:1"),
        format!("--bucket=input_tokens={TOKENS_PER_SECOND}:{}", TOKENS.1),
    ];
    let exact: Vec<String> = windows.iter().chain(&buckets).cloned().collect();
    let used = steady_share(&at_store);
    let alone = steady_share(&baseline.join().expect("the baseline"));
    println!(
        "input tokens used in the steady part: {:.1}% of the limit by {PROCESSES} processes \
         through Redis, {:.1}% by one process in memory",
        used * 100.0,
        alone * 100.0
    );
    assert!(
        used >= 0.95 * alone,
        "sharing through Redis used {:.1}% of the limit, one process alone {:.1}%",
        used * 100.0,
        alone * 100.0
    );
    common::check_admissions::check("redis-store-instants", &merged(at_store), &exact);
    // What a provider sees: the instants the processes went at, a few ms later than the
    // store's (a timer's lateness), checked against the windows with that much slack.
    let mut seen: Vec<String> = windows.to_vec();
    seen.push("--slack=0.02".to_owned());
    common::check_admissions::check("redis-store-went", &merged(went), &seen);
    drop(server);
}
