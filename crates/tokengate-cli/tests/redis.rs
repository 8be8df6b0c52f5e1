//! `simulate --realtime --redis URL [--processes N]`: the client's limiter keeps its state in a
//! Redis (one started by each test, on a port of its own), alone or shared by N processes, and
//! the provider is replayed on the processes' merged log.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::redis_server::{free_port, RedisServer};
use common::{fails_with, quick, report, scratch, text, tokengate_within, write};
use serde_json::Value;

/// The bound on a run of a few seconds in real time (several processes, a debug build).
const REALTIME_BOUND: Duration = Duration::from_secs(60);

/// The runs in real time take turns: two at once on a small machine would delay each
/// other's calls, which is not what they measure.
static REALTIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REALTIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// One model's limits over 2 s (so that a run of a few seconds holds several periods), with
/// bursts of a tenth of a period: the client's and the provider's alike.
macro_rules! model_limits {
    () => {
        r#"
[models.m]
[[models.m.limits]]
dimension = "requests"
amount = 240
per = "2s"
burst = 24
[[models.m.limits]]
dimension = "tokens"
amount = 60_000
per = "2s"
burst = 6_000
"#
    };
}

/// The client's limits: the model's, and a budget per tenant.
const LIMITS: &str = concat!(
    model_limits!(),
    r#"
[defaults.tenant]
requests_per_minute = 100_000
"#
);

/// The provider: the model's limits, enforced both ways strictly (no margin).
const PROVIDER: &str = concat!(
    r#"
[provider]
algorithm = "smooth_window"
output_tokens = "usage"
"#,
    model_limits!()
);

/// Six seconds at twice the model's request limit, from two tenants.
const WORKLOAD: &str = r#"
duration = "6s"
seed = 11
concurrency = 64
max_tokens = 50

[arrivals]
rate_per_minute = 14_400

[input_tokens]
kind = "fixed"
value = 100

[output_tokens]
kind = "uniform"
min = 10
max = 50

[latency]
base_ms = { kind = "uniform", min = 20, max = 60 }

[[models]]
name = "m"

[[tenants]]
name = "a"

[[tenants]]
name = "b"
"#;

/// The test's files in `dir`: limits, provider, workload.
fn files(dir: &Path) -> [String; 3] {
    [
        write(dir, "limits.toml", LIMITS),
        write(dir, "provider.toml", PROVIDER),
        write(dir, "workload.toml", WORKLOAD),
    ]
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn sharing_options_need_one_another() {
    let url = "redis://127.0.0.1:6379/";
    for (args, needles) in [
        (
            &["simulate", "--processes", "2"][..],
            &["--processes 2 needs --redis URL and --realtime"][..],
        ),
        (
            &["simulate", "--processes", "4", "--realtime"][..],
            &["--processes 4 needs --redis URL"][..],
        ),
        (
            &["simulate", "--processes", "3", "--redis", url][..],
            &["--processes 3 needs --realtime"][..],
        ),
        (
            &["simulate", "--redis", url][..],
            &["--redis needs --realtime"][..],
        ),
        (
            &["simulate", "--redis", url, "--duration", "10s"][..],
            &["--redis needs --realtime"][..],
        ),
        (
            &["simulate", "--realtime", "--worker", "1/2,0,x"][..],
            &["--worker", "not for use by hand"][..],
        ),
    ] {
        fails_with(args, needles);
    }
    // Values clap refuses: status 1 and what was wrong, as for every other bad argument.
    for (args, needle) in [
        (&["simulate", "--processes", "0"][..], "from 1 to 64"),
        (&["simulate", "--processes", "65"][..], "from 1 to 64"),
        (&["simulate", "--processes", "many"][..], "\"many\""),
        (&["simulate", "--redis"][..], "--redis <URL>"),
    ] {
        let out = quick(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: no {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // --help says what they do, and that each run has a namespace of its own.
    let help = text(&quick(&["simulate", "--help"]).stdout);
    for needle in ["--redis <URL>", "--processes <N>", "namespace of its own"] {
        assert!(help.contains(needle), "no {needle:?} in {help}");
    }
    assert!(!help.contains("--worker"), "{help}");
}

#[test]
fn a_redis_that_does_not_answer_fails_before_the_run() {
    let dir = scratch("redis-absent");
    let json = dir.join("r.json");
    // Nothing listens on a port the OS just handed out and took back.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    for processes in ["1", "2"] {
        let err = fails_with(
            &[
                "simulate",
                "--realtime",
                "--redis",
                &url,
                "--processes",
                processes,
                "--duration",
                "10s",
                "--json",
                path(&json),
            ],
            &["--redis", &url, "cannot use it as the limiter's store"],
        );
        assert!(!json.exists(), "{err}");
    }
}

/// The shape of a JSON value: its objects' keys, recursively, and its arrays' first elements.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        Value::Bool(_) => Value::from("bool"),
        Value::Null => Value::Null,
    }
}

#[test]
fn one_process_on_redis_reports_as_one_in_memory() {
    let _turn = one_at_a_time();
    let server = RedisServer::start();
    let dir = scratch("redis-one");
    let [limits, provider, workload] = files(&dir);
    let run = |json: &PathBuf, redis: Option<&str>| {
        let mut args = vec![
            "simulate",
            "--realtime",
            "--limits",
            &limits,
            "--provider",
            &provider,
            "--workload",
            &workload,
            "--duration",
            "3s",
            "--json",
            path(json),
        ];
        if let Some(url) = redis {
            args.extend(["--redis", url]);
        }
        let out = tokengate_within(REALTIME_BOUND, &args);
        (report(&out, json), text(&out.stdout))
    };
    let url = server.url();
    let (memory, memory_table) = run(&dir.join("memory.json"), None);
    let (redis, redis_table) = run(&dir.join("redis.json"), Some(&url));
    // The same report, field for field, but for what names the store.
    let mut expected = shape(&memory);
    expected["store"]["url"] = Value::from("string");
    expected["store"]["namespace"] = Value::from("string");
    assert_eq!(shape(&redis), expected);
    assert_eq!(memory["store"]["kind"], "memory");
    assert_eq!(redis["store"]["kind"], "redis");
    assert_eq!(redis["store"]["url"], url.as_str());
    let namespace = redis["store"]["namespace"].as_str().unwrap();
    assert!(namespace.starts_with("simulate-"), "{namespace}");
    assert!(redis["store"]["calls"].as_u64().unwrap() > 0);
    assert_eq!(redis["store"]["errors"], 0);
    for r in [&memory, &redis] {
        assert_eq!(r["processes"], 1);
        assert_eq!(r["provider"]["replayed"], false);
    }
    // The same requests arrive, and the client's budgets are the same.
    assert_eq!(memory["requests"]["arrived"], redis["requests"]["arrived"]);
    let keys = |r: &Value| -> Vec<Value> {
        r["client"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].clone())
            .collect()
    };
    assert_eq!(keys(&memory), keys(&redis));
    // Through the store, the client's limiter admitted work: the binding limit is used.
    assert!(
        redis["requests"]["completed"].as_u64().unwrap() > 100,
        "{redis}"
    );
    assert_eq!(redis["requests"]["throttled"], 0, "{}", redis["requests"]);
    // The table says where the limits were kept; otherwise its lines are those of the run
    // in memory.
    assert!(
        redis_table.contains(&format!("store: redis at {url}, namespace {namespace}")),
        "{redis_table}"
    );
    assert!(!memory_table.contains("store:"), "{memory_table}");
    let labels = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("  store:"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(labels(&memory_table), labels(&redis_table));
}

#[test]
fn four_processes_share_one_set_of_limits() {
    let _turn = one_at_a_time();
    let server = RedisServer::start();
    let dir = scratch("redis-four");
    let [limits, provider, workload] = files(&dir);
    let json = dir.join("r.json");
    let log = dir.join("admissions.jsonl");
    let url = server.url();
    let out = tokengate_within(
        REALTIME_BOUND,
        &[
            "simulate",
            "--realtime",
            "--redis",
            &url,
            "--processes",
            "4",
            "--limits",
            &limits,
            "--provider",
            &provider,
            "--workload",
            &workload,
            "--json",
            path(&json),
            "--log",
            path(&log),
        ],
    );
    let r = report(&out, &json);
    let table = text(&out.stdout);
    println!("{table}");
    assert_eq!(r["processes"], 4);
    assert_eq!(r["store"]["kind"], "redis");
    assert_eq!(r["store"]["errors"], 0, "{}", r["store"]);
    assert!(r["store"]["calls"].as_u64().unwrap() > 0);
    assert_eq!(r["provider"]["replayed"], true);
    assert!(table.contains("4 processes sharing it"), "{table}");
    assert!(
        table.contains("replayed from the processes' merged log"),
        "{table}"
    );
    // Together the processes sent the workload's requests: those one process sends.
    let single = dir.join("single.json");
    let virtual_run = quick(&[
        "simulate",
        "--limits",
        &limits,
        "--provider",
        &provider,
        "--workload",
        &workload,
        "--json",
        path(&single),
        "-q",
    ]);
    let single = report(&virtual_run, &single);
    assert_eq!(r["requests"]["arrived"], single["requests"]["arrived"]);
    // No 429 from the strict provider, and the binding limit used (the window of the
    // requests limit: 240 in each of the three 2 s periods at most).
    assert_eq!(r["requests"]["throttled"], 0, "{}", r["requests"]);
    assert_eq!(r["provider"]["throttled"], 0);
    let binding = &r["binding"];
    assert_eq!(binding["key"], "m", "{binding}");
    assert_eq!(binding["dimension"], "requests", "{binding}");
    let used = binding["utilisation_pct"].as_f64().unwrap();
    assert!(used >= 95.0, "{used}% of the binding limit: {binding}");
    // The merged log holds under both readings of every limit, the provider's and the
    // client's.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        r["requests"]["admitted"].as_u64().unwrap()
    );
    let times: Vec<f64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["t"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the log is in time order"
    );
    for file in [&provider, &limits] {
        let out = quick(&["audit", path(&log), "--limits", file]);
        let said = text(&out.stdout);
        assert!(out.status.success(), "{file}:\n{said}{}", text(&out.stderr));
        assert!(said.contains("violations: 0"), "{said}");
    }
    check_admissions(&log);
}

/// The merged log against the model's limits, by the independent checker when it is there
/// (beside the checkout, as CI finds it, or where `TOKENGATE_CHECK_ADMISSIONS` says).
fn check_admissions(log: &Path) {
    let text = std::fs::read_to_string(log).expect("the merged log");
    let args: Vec<String> = [
        "--key",
        "m",
        "--limit",
        "requests=240/2",
        "--limit",
        "tokens=60000/2",
        "--bucket",
        "requests=120:24",
        "--bucket",
        "tokens=30000:6000",
    ]
    .map(String::from)
    .into();
    common::check_admissions::check("simulate-redis", &text, &args);
}
