//! What a decision costs Redis, in instructions: the same figure within 2% on every run and
//! whatever else the machine does, where the time a decision takes (`redis_store`) varies from
//! run to run by a third. For changes to the library's Lua, whose cost is Redis's alone.
//!
//! It starts its own `redis-server` under valgrind's callgrind (`valgrind` must be
//! installed: `apt-get install -y valgrind`), makes the same calls one at a time as the
//! `redis_store` bench's workloads, and reads the instructions Redis ran for them: callgrind's
//! counters are zeroed before and dumped after each workload's calls (`callgrind_control`).
//! What Redis does per call whatever it runs (reading the command, writing the reply) is in
//! every figure; the ceiling, a trivial `EVALSHA`, is that and little else.
//!
//! Two more columns split a call's instructions, as `callgrind_annotate --inclusive=yes`
//! reads the same dump: those run inside the Lua call (`lua_pcall`: the script or function
//! with whatever it calls), and, of those, inside the Redis commands it calls (`scriptCall`:
//! `TIME`, `GET`, `SET` ...). Debian's `redis-server` keeps both symbols.
//!
//! Run: `cargo bench -p tokengate --features redis --bench redis_instructions`

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;
#[path = "common/redis_work.rs"]
#[allow(dead_code)] // `parse` is for the other bench's child processes.
mod redis_work;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use redis_work::Work;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreBudget};

/// Calls made (and counted) per workload, after as many unmeasured ones.
const CALLS: u64 = 1_000;

/// The instructions callgrind counted since its counters were last zeroed, and the dump it
/// wrote them to (a new file in `dir`, whose `totals:` line holds them).
fn dump(pid: u32, dir: &Path) -> (u64, PathBuf) {
    let before: Vec<PathBuf> = files(dir);
    callgrind_control("--dump", pid);
    // The dump is written by the server's own thread, soon after.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new: Vec<PathBuf> = files(dir)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        for file in &new {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let total = text.lines().find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            });
            if let Some(n) = total.and_then(|t| t.split_whitespace().next()?.parse().ok()) {
                return (n, file.clone());
            }
        }
        assert!(Instant::now() < deadline, "no callgrind dump in {dir:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The instructions run inside each of `functions` (with what they call), as
/// `callgrind_annotate --inclusive=yes` reads `dump`; 0 for one it does not list.
fn inclusive(dump: &Path, functions: &[&str]) -> Vec<u64> {
    let output = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg("--threshold=100")
        .arg(dump)
        .output()
        .expect("callgrind_annotate runs");
    assert!(
        output.status.success(),
        "callgrind_annotate: {}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    functions
        .iter()
        .map(|function| {
            // A line such as `191,742,710 (85.79%)  ???:lua_pcall [/usr/bin/redis-server]`.
            let suffix = format!(":{function} ");
            text.lines()
                .find(|l| l.contains(&suffix))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.replace(',', "").parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// How many function calls (`FCALL`) the server ran.
async fn function_calls(connection: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO");
    redis_server::command_stat(&info, "cmdstat_fcall", "calls")
}

fn zero(pid: u32) {
    callgrind_control("--zero", pid);
}

/// `callgrind_control OPTION PID`, which must succeed.
fn callgrind_control(option: &str, pid: u32) {
    let status = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("callgrind_control runs");
    assert!(status.success(), "callgrind_control {option}: {status}");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// Acquisitions made at once in the batched rows: the store sends the first alone, the next
/// eight together while it is in flight, and the rest together after it.
const AT_ONCE: u64 = 16;

/// `n` decisions of `work` made `AT_ONCE` at a time.
async fn at_once(store: &RedisStore, work: Work, n: u64) {
    let budgets = [StoreBudget::new(work.code(), work.policy())];
    let cost = work.cost();
    for _ in 0..n / AT_ONCE {
        let asks = (0..AT_ONCE).map(|_| store.acquire(Ask::new(&budgets, &cost)));
        for answer in futures_util::future::join_all(asks).await {
            let answer = answer.expect("the store answers");
            assert!(answer.reserved().is_some(), "every decision admits");
        }
    }
}

/// `calls` calls of `work`, one at a time.
async fn calls(
    store: &RedisStore,
    connection: &mut redis::aio::ConnectionManager,
    work: Work,
    calls: u64,
) {
    let budgets = [StoreBudget::new(work.code(), work.policy())];
    let cost = work.cost();
    let ceiling = redis::Script::new("return 1");
    for _ in 0..calls {
        match work {
            Work::Ceiling => {
                let one: i64 = ceiling
                    .key("tokengate-bench:{instructions}:ceiling")
                    .invoke_async(connection)
                    .await
                    .expect("EVALSHA");
                assert_eq!(one, 1);
            }
            _ => {
                let answer = store
                    .acquire(Ask::new(&budgets, &cost))
                    .await
                    .expect("the store answers");
                assert!(answer.reserved().is_some(), "every decision admits");
            }
        }
    }
}

fn main() {
    // `cargo test --benches` runs it once, with few calls.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 20 } else { CALLS };
    let dir = std::env::temp_dir().join(format!("tokengate-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for callgrind's files");
    let out = format!("--callgrind-out-file={}/callgrind.%p.out", dir.display());
    let server =
        redis_server::RedisServer::start_under(&["valgrind", "--tool=callgrind", &out], &[]);
    let pid = server.pid();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "Instructions Redis runs a decision ({n} decisions, one at a time, then {AT_ONCE} at \
         once; each admitted and written)"
    );
    println!(
        "{:<40} {:>14} {:>14} {:>14} {:>14} {:>7}",
        "workload", "instructions", "x ceiling", "in Lua", "in commands", "a call"
    );
    runtime.block_on(async {
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connects")
            .namespace("tokengate-bench", "instructions");
        let client = redis::Client::open(server.url()).expect("a Redis URL");
        let mut connection = redis::aio::ConnectionManager::new(client)
            .await
            .expect("connects");
        let mut ceiling = 0;
        for work in Work::ALL {
            // Loaded, warmed, then counted.
            calls(&store, &mut connection, work, n).await;
            zero(pid);
            calls(&store, &mut connection, work, n).await;
            let (total, file) = dump(pid, &dir);
            let per_call = total / n;
            if work == Work::Ceiling {
                ceiling = per_call;
            }
            let split = inclusive(&file, &["lua_pcall", "scriptCall"]);
            println!(
                "{:<40} {:>14} {:>14.1} {:>14} {:>14} {:>7.1}",
                work.name(),
                per_call,
                per_call as f64 / ceiling.max(1) as f64,
                split[0] / n,
                split[1] / n,
                1.0
            );
        }
        // The same decisions made AT_ONCE at a time: per decision.
        for work in Work::ALL.into_iter().filter(|w| *w != Work::Ceiling) {
            at_once(&store, work, n).await;
            zero(pid);
            let before = function_calls(&mut connection).await;
            at_once(&store, work, n).await;
            let (total, file) = dump(pid, &dir);
            let made = n / AT_ONCE * AT_ONCE;
            let calls = function_calls(&mut connection).await - before;
            let split = inclusive(&file, &["lua_pcall", "scriptCall"]);
            println!(
                "{:<40} {:>14} {:>14.1} {:>14} {:>14} {:>7.1}",
                format!("{}, {AT_ONCE} at once", work.name()),
                total / made,
                (total / made) as f64 / ceiling.max(1) as f64,
                split[0] / made,
                split[1] / made,
                made as f64 / calls.max(1) as f64
            );
        }
    });
    drop(server);
    // `TOKENGATE_KEEP_DUMPS=1` keeps the dumps, to read with `callgrind_annotate`.
    if std::env::var_os("TOKENGATE_KEEP_DUMPS").is_some() {
        println!("callgrind's dumps are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
