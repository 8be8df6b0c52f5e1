//! The `tokengate` binary end to end: the shipped example (report, JSON, admission log checked
//! independently, SVG chart), `check`, broken inputs, a client that disagrees with its
//! provider, and a short real-time run. Everything but the real-time run is in virtual time
//! with fixed seeds.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{examples, fails_with, report, scratch, text, tokengate};
use serde_json::Value;

/// The shipped example, run once with every output.
struct Example {
    stdout: String,
    report: Value,
    log: Vec<Value>,
    log_path: PathBuf,
    svg: String,
}

fn example() -> &'static Example {
    static RUN: OnceLock<Example> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("example");
        let (json, log, svg) = (
            dir.join("report.json"),
            dir.join("admissions.jsonl"),
            dir.join("report.svg"),
        );
        let out = tokengate(&[
            "simulate",
            "--json",
            json.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--chart",
            svg.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON");
        let log_lines = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
            .collect();
        Example {
            stdout: text(&out.stdout),
            report,
            log: log_lines,
            log_path: log,
            svg: std::fs::read_to_string(&svg).unwrap(),
        }
    })
}

#[test]
fn the_example_prints_a_report_table() {
    let e = example();
    for needle in [
        "tokengate simulate: virtual time, seed 7",
        "requests ",
        "waits     p50",
        "queue     max",
        "gpt-4o-mini    client    requests       500 per minute",
        "gpt-4o-mini    provider  requests       500 per minute",
        "queue over time:",
        "binding limit: ",
    ] {
        assert!(e.stdout.contains(needle), "no {needle:?} in\n{}", e.stdout);
    }
}

#[test]
fn json_report_has_its_documented_fields() {
    let r = &example().report;
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(r),
        [
            "binding",
            "client",
            "duration_secs",
            "inputs",
            "interrupted",
            "mode",
            "processes",
            "provider",
            "queue",
            "requests",
            "seed",
            "store",
            "tokens",
            "waits",
            "wall_secs"
        ]
    );
    assert_eq!(keys(&r["inputs"]), ["limits", "provider", "workload"]);
    assert_eq!(
        keys(&r["requests"]),
        [
            "admitted",
            "arrived",
            "completed",
            "gave_up",
            "refused",
            "refused_reasons",
            "retried",
            "throttled",
            "unfinished"
        ]
    );
    assert_eq!(keys(&r["tokens"]), ["input", "output", "reserved_output"]);
    assert_eq!(
        keys(&r["waits"]),
        [
            "count",
            "max_secs",
            "mean_secs",
            "p50_secs",
            "p95_secs",
            "p99_secs",
            "waited"
        ]
    );
    assert_eq!(keys(&r["queue"]), ["every_secs", "max", "mean", "samples"]);
    assert_eq!(
        keys(&r["queue"]["samples"][0]),
        ["in_flight", "queued", "t"]
    );
    assert_eq!(
        keys(&r["provider"]),
        [
            "algorithm",
            "keys",
            "output_tokens",
            "replayed",
            "throttled"
        ]
    );
    assert_eq!(r["processes"], 1);
    assert_eq!(
        keys(&r["store"]),
        [
            "calls",
            "errors",
            "in_flight_polls",
            "kind",
            "namespace",
            "url"
        ]
    );
    assert_eq!(r["store"]["kind"], "memory");
    assert_eq!(r["provider"]["replayed"], false);
    assert_eq!(
        keys(&r["binding"]),
        ["dimension", "key", "limit", "side", "utilisation_pct"]
    );
    let limit = &r["client"][0]["limits"][0];
    assert_eq!(
        keys(limit),
        [
            "algorithm",
            "amount",
            "burst",
            "charged",
            "dimension",
            "limit",
            "period_secs",
            "rate_per_period",
            "refunded",
            "used",
            "utilisation_pct",
            "worst_window",
            "worst_window_pct"
        ]
    );
    assert_eq!(
        keys(&r["client"][0]),
        ["admitted", "key", "limits", "throttled"]
    );
    assert_eq!(r["seed"], 7);
    assert_eq!(r["mode"], "virtual");
    assert_eq!(r["duration_secs"], 3600.0);
    // The figures agree with each other.
    let req = &r["requests"];
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(n(&req["admitted"]), example().log.len() as u64);
    assert_eq!(
        n(&req["arrived"]),
        n(&req["completed"]) + n(&req["gave_up"]) + n(&req["unfinished"]) + n(&req["refused"])
    );
    assert!(n(&r["waits"]["count"]) == n(&req["admitted"]));
}

#[test]
fn log_lines_carry_every_dimension_and_the_wait() {
    let log = &example().log;
    assert!(
        log.len() > 30_000,
        "an hour of traffic: {} admissions",
        log.len()
    );
    let mut last = 0.0;
    for line in log {
        for field in [
            "t",
            "key",
            "provider_key",
            "model",
            "tenant",
            "status",
            "attempt",
            "requests",
            "input_tokens",
            "output_tokens",
            "tokens",
            "reserved_input_tokens",
            "reserved_output_tokens",
            "wait",
        ] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        let t = line["t"].as_f64().unwrap();
        assert!(
            t >= last && t < 3600.0,
            "admissions in time order within the run"
        );
        last = t;
        let (input, output) = (
            line["input_tokens"].as_u64().unwrap(),
            line["output_tokens"].as_u64().unwrap(),
        );
        assert_eq!(line["tokens"].as_u64().unwrap(), input + output);
        assert!(output <= line["reserved_output_tokens"].as_u64().unwrap());
        assert!(line["wait"].as_f64().unwrap() >= 0.0);
    }
    // Every model and tenant of the workload appears.
    for model in ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"] {
        assert!(log.iter().any(|l| l["model"] == model), "{model}");
    }
    for tenant in ["acme", "globex"] {
        assert!(log.iter().any(|l| l["tenant"] == tenant), "{tenant}");
    }
    // The models of a family share its key.
    assert!(log
        .iter()
        .filter(|l| l["model"] == "gpt-4o-mini-2024-07-18")
        .all(|l| l["key"] == "gpt-4o-mini"));
}

/// The provider's limits of the shipped example, read from the report: (key, dimension,
/// amount, period in seconds).
fn provider_limits(report: &Value) -> Vec<(String, String, f64, f64)> {
    let mut out = Vec::new();
    for key in report["provider"]["keys"].as_array().unwrap() {
        for l in key["limits"].as_array().unwrap() {
            out.push((
                key["key"].as_str().unwrap().to_owned(),
                l["dimension"].as_str().unwrap().to_owned(),
                l["amount"].as_f64().unwrap(),
                l["period_secs"].as_f64().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn the_example_stays_under_the_providers_limits_and_uses_them() {
    let e = example();
    assert_eq!(
        e.report["requests"]["throttled"], 0,
        "no 429 from the provider"
    );
    assert_eq!(e.report["provider"]["throttled"], 0);
    let limits = provider_limits(&e.report);
    // The provider's limits are those of provider.toml.
    assert!(limits.contains(&("gpt-4o".into(), "tokens".into(), 100_000.0, 60.0)));
    assert!(limits.contains(&("gpt-4o-mini".into(), "requests".into(), 500.0, 60.0)));
    // Independently of the report: the largest amount in any window of each limit, and the
    // rate over the hour, from the log alone.
    let duration = 3600.0;
    let mut best = 0.0f64;
    for (key, dimension, amount, period) in &limits {
        let points: Vec<(f64, f64)> = e
            .log
            .iter()
            .filter(|l| l["provider_key"] == key.as_str() && l["status"] == 200)
            .map(|l| {
                (
                    l["t"].as_f64().unwrap(),
                    l[dimension.as_str()].as_f64().unwrap(),
                )
            })
            .collect();
        let (mut sum, mut first, mut worst) = (0.0, 0, 0.0f64);
        for &(t, a) in &points {
            sum += a;
            while points[first].0 + period <= t + 1e-9 {
                sum -= points[first].1;
                first += 1;
            }
            worst = worst.max(sum);
        }
        assert!(
            worst <= *amount,
            "{key} {dimension}: {worst} in one window > {amount}"
        );
        if *period <= duration {
            let total: f64 = points.iter().map(|p| p.1).sum();
            best = best.max(total * period / duration / amount);
        }
    }
    assert!(best >= 0.95, "utilisation of the binding limit {best:.3}");
    let binding = e.report["binding"]["utilisation_pct"].as_f64().unwrap();
    assert!(
        (binding / 100.0 - best).abs() < 1e-6,
        "report {binding} vs log {best}"
    );
}

#[test]
fn the_example_log_passes_check_admissions() {
    // Beside the checkout (as .ci/run finds it), or where TOKENGATE_CHECK_ADMISSIONS says.
    let checker = std::env::var_os("TOKENGATE_CHECK_ADMISSIONS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/check-admissions")
        });
    if !checker.exists() {
        println!(
            "note: {} is absent: check-admissions not run",
            checker.display()
        );
        return;
    }
    let e = example();
    let mut keys: Vec<String> = provider_limits(&e.report)
        .into_iter()
        .map(|l| l.0)
        .collect();
    keys.dedup();
    for key in keys {
        // The log's key is the client's budget; the example's client and provider budgets agree.
        assert!(e
            .log
            .iter()
            .filter(|l| l["provider_key"] == key.as_str())
            .all(|l| l["key"] == key.as_str()));
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(&checker).arg(&e.log_path).arg("--key").arg(&key);
        for (k, dimension, amount, period) in provider_limits(&e.report) {
            if k == key {
                cmd.arg("--limit")
                    .arg(format!("{dimension}={amount}/{period}"));
            }
        }
        let out = cmd.output().expect("python3 runs");
        let stdout = text(&out.stdout);
        println!("{key}:\n{stdout}");
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("violations: 0"), "{stdout}");
    }
}

#[test]
fn the_chart_is_valid_svg_with_labelled_axes_and_series() {
    let svg = &example().svg;
    let doc = roxmltree::Document::parse(svg).expect("valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    for label in [
        "time (minutes)",
        "requests per window",
        "tokens per window",
        "Queue length",
        "queued (arrived, not yet admitted)",
        "calls in flight",
        "gpt-4o-mini requests admitted in the last 1 min",
        "gpt-4o-mini requests limit (500 per minute)",
        "gpt-4o tokens limit (100000 per minute)",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(label)),
            "no label {label:?}"
        );
    }
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(lines >= 8, "{lines} polylines");
}

#[test]
fn check_explains_every_budget() {
    let out = tokengate(&["check", examples().join("limits.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "limits.toml: valid: 1 model(s), 1 family and 1 tenant(s)",
        "model gpt-4o (a budget of its own)",
        "family gpt-4o-mini (one budget shared by every model matching \"gpt-4o-mini\", \"gpt-4o-mini-*\")",
        "tenant acme",
        "default tenant",
        "at most 64 requests at once",
    ] {
        assert!(s.contains(needle), "no {needle:?} in\n{s}");
    }
    // 500 a minute under the default algorithm: a burst of floor(500/60) = 8 requests at once,
    // at most 500 in any minute; tokens alike, a sixtieth of 2,000,000 at once.
    let line = |start: &str| -> Vec<String> {
        s.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        line("requests       500 per minute")[..9],
        ["requests", "500", "per", "minute", "smooth", "window", "8", "8", "500"]
    );
    assert_eq!(
        line("tokens         2000000 per minute")[..9],
        [
            "tokens",
            "2000000",
            "per",
            "minute",
            "smooth",
            "window",
            "33,333",
            "33,333",
            "2,000,000"
        ]
    );
}

#[test]
fn check_gives_each_algorithm_its_worst_case() {
    let dir = scratch("algorithms");
    let path = dir.join("limits.toml");
    std::fs::write(
        &path,
        r#"
[models.m]
limits = [
  { dimension = "requests", amount = 100, per = "1m", algorithm = "token_bucket", burst = 10 },
  { dimension = "input_tokens", amount = 1000, per = "1m", algorithm = "fixed_window" },
  { dimension = "output_tokens", amount = 600, per = "1m", algorithm = "leaky_bucket" },
]
"#,
    )
    .unwrap();
    let out = tokengate(&["check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let row = |dim: &str| -> Vec<String> {
        s.lines()
            .find(|l| l.trim_start().starts_with(dim))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // token bucket: the burst at once, burst + amount in a period.
    assert_eq!(
        row("requests")[4..9],
        ["token", "bucket", "10", "10", "110"]
    );
    // fixed window: the amount at once, twice it across a boundary.
    assert_eq!(
        row("input_tokens")[4..9],
        ["fixed", "window", "-", "1,000", "2,000"]
    );
    // leaky bucket: one at a time, then one cost of the whole amount.
    assert_eq!(
        row("output_tokens")[4..9],
        ["leaky", "bucket", "1", "1", "1,200"]
    );
}

#[test]
fn a_missing_file_is_named() {
    fails_with(
        &["simulate", "--limits", "/nonexistent/limits.toml"],
        &["/nonexistent/limits.toml", "cannot read"],
    );
    fails_with(
        &["simulate", "--workload", "/nonexistent/w.toml"],
        &["/nonexistent/w.toml", "cannot read"],
    );
    fails_with(
        &["check", "/nonexistent/limits.toml"],
        &["/nonexistent/limits.toml"],
    );
}

#[test]
fn bad_toml_names_file_line_and_field() {
    let dir = scratch("bad");
    let limits = dir.join("limits.toml");
    std::fs::write(&limits, "[models.m]\nrequests_per_minute = \n").unwrap();
    let l = limits.to_str().unwrap();
    fails_with(&["check", l], &[&format!("{l}:2:")]);
    fails_with(&["simulate", "--limits", l], &[&format!("{l}:2:")]);

    std::fs::write(&limits, "[models.m]\nrequests_per_minute = \"500\"\n").unwrap();
    fails_with(
        &["check", l],
        &[&format!("{l}:2:"), "models.m.requests_per_minute"],
    );

    // An unknown field in the workload, with its line.
    let workload = std::fs::read_to_string(examples().join("workload.toml"))
        .unwrap()
        .replace("rate_per_minute = 590", "rate_per_minit = 590");
    let w = dir.join("workload.toml");
    std::fs::write(&w, &workload).unwrap();
    let line = workload
        .lines()
        .position(|l| l.starts_with("rate_per_minit"))
        .unwrap()
        + 1;
    fails_with(
        &["simulate", "--workload", w.to_str().unwrap()],
        &[
            &format!("{}:{line}:", w.display()),
            "unknown field `rate_per_minit`",
        ],
    );

    // A bad value in the workload names its field.
    let workload = std::fs::read_to_string(examples().join("workload.toml"))
        .unwrap()
        .replace("duration = \"1h\"", "duration = \"an hour\"");
    std::fs::write(&w, &workload).unwrap();
    fails_with(
        &["simulate", "--workload", w.to_str().unwrap()],
        &[
            &format!("{}:", w.display()),
            "field `duration`",
            "\"an hour\"",
        ],
    );

    // The provider's own table is checked too.
    let provider = std::fs::read_to_string(examples().join("provider.toml"))
        .unwrap()
        .replace("algorithm = \"smooth_window\"", "algorithm = \"bucket\"");
    let p = dir.join("provider.toml");
    std::fs::write(&p, &provider).unwrap();
    let line = provider
        .lines()
        .position(|l| l.starts_with("algorithm"))
        .unwrap()
        + 1;
    fails_with(
        &["simulate", "--provider", p.to_str().unwrap()],
        &[
            &format!("{}:{line}:", p.display()),
            "provider.algorithm",
            "token_bucket",
        ],
    );
}

#[test]
fn an_impossible_workload_is_refused_up_front() {
    let dir = scratch("impossible");
    // max_tokens above gpt-4o's 100,000 tokens a minute: no request could ever pass.
    let workload = std::fs::read_to_string(examples().join("workload.toml"))
        .unwrap()
        .replace("max_tokens = 1024", "max_tokens = 200000");
    let w = dir.join("workload.toml");
    std::fs::write(&w, workload).unwrap();
    fails_with(
        &["simulate", "--workload", w.to_str().unwrap()],
        &[
            "impossible workload",
            "\"gpt-4o\"",
            "200000 output tokens",
            "max_tokens",
        ],
    );
    // A model with no limits at all.
    let workload = std::fs::read_to_string(examples().join("workload.toml"))
        .unwrap()
        .replace("name = \"gpt-4o\"\n", "name = \"claude-3-5-sonnet\"\n");
    std::fs::write(&w, workload).unwrap();
    fails_with(
        &["simulate", "--workload", w.to_str().unwrap()],
        &["no limits for model \"claude-3-5-sonnet\""],
    );
}

#[test]
fn a_client_above_the_providers_limits_gets_429s_and_pauses() {
    let dir = scratch("disagree");
    // The provider allows 300 requests a minute to the mini family; the client thinks 500.
    let provider = std::fs::read_to_string(examples().join("provider.toml"))
        .unwrap()
        .replace("requests_per_minute = 500", "requests_per_minute = 300");
    let p = dir.join("provider.toml");
    std::fs::write(&p, provider).unwrap();
    let json = dir.join("r.json");
    let log = dir.join("a.jsonl");
    let out = tokengate(&[
        "simulate",
        "--provider",
        p.to_str().unwrap(),
        "--duration",
        "5m",
        "--seed",
        "3",
        "--json",
        json.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    let r = report(&out, &json);
    let throttled = r["requests"]["throttled"].as_u64().unwrap();
    assert!(throttled > 0);
    assert_eq!(r["provider"]["throttled"].as_u64().unwrap(), throttled);
    assert!(r["requests"]["retried"].as_u64().unwrap() > 0);
    // The client's limiter was told of every 429.
    let told: u64 = r["client"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["throttled"].as_u64().unwrap())
        .sum();
    assert_eq!(told, throttled);
    let lines = std::fs::read_to_string(&log).unwrap();
    let refused = lines
        .lines()
        .filter(|l| l.contains("\"status\": 429"))
        .count() as u64;
    assert_eq!(refused, throttled);
    // Still, what the provider accepted stays under its limit in every minute.
    let mini = r["provider"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "gpt-4o-mini")
        .unwrap();
    let req = mini["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["dimension"] == "requests" && l["period_secs"] == 60.0)
        .unwrap();
    assert!(
        req["worst_window"].as_u64().unwrap() <= 300 + 300,
        "a token bucket allows burst + amount"
    );
}

#[test]
fn a_seed_gives_the_same_run_and_another_seed_another() {
    use tokengate_cli::{simulate, SimInput, SimOptions};
    let input = SimInput::example().expect("the example is valid");
    let run = |seed| {
        let options = SimOptions {
            seed: Some(seed),
            duration: Some(std::time::Duration::from_secs(300)),
            ..SimOptions::default()
        };
        let sim = simulate(&input, &options).expect("it runs");
        let mut v = serde_json::to_value(&sim.report).unwrap();
        v["wall_secs"] = Value::Null;
        (v, sim.records.len())
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.1 > 2_000);
}

#[test]
fn realtime_runs_against_the_wall_clock() {
    let started = std::time::Instant::now();
    let dir = scratch("realtime");
    let json = dir.join("r.json");
    let out = tokengate(&[
        "simulate",
        "--realtime",
        "--duration",
        "2s",
        "--seed",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let elapsed = started.elapsed().as_secs_f64();
    assert!((2.0..30.0).contains(&elapsed), "took {elapsed} s");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mode"], "realtime");
    assert!(r["requests"]["admitted"].as_u64().unwrap() > 0);
    assert!(r["wall_secs"].as_f64().unwrap() >= 2.0);
}

#[test]
fn tenant_budgets_are_charged_with_the_model_budgets() {
    let dir = scratch("tenants");
    // Tight tenant budgets: acme 30 requests a minute, everyone else 20 (paced, as the
    // default algorithm does); the models allow far more.
    let limits = std::fs::read_to_string(examples().join("limits.toml"))
        .unwrap()
        .replace(
            "[tenants.acme]\nrequests_per_minute = 600",
            "[tenants.acme]\nrequests_per_minute = 30",
        )
        .replace(
            "[defaults.tenant]\nrequests_per_minute = 300",
            "[defaults.tenant]\nrequests_per_minute = 20",
        );
    assert!(
        limits.contains("requests_per_minute = 30") && limits.contains("requests_per_minute = 20")
    );
    let l = dir.join("limits.toml");
    std::fs::write(&l, limits).unwrap();
    let log = dir.join("a.jsonl");
    let out = tokengate(&[
        "simulate",
        "--limits",
        l.to_str().unwrap(),
        "--duration",
        "5m",
        "--seed",
        "5",
        "--log",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (tenant, cap) in [("acme", 30usize), ("globex", 20)] {
        // In whole nanoseconds: an admission at u counts in the window of t while u + 60 s > t.
        let times: Vec<u64> = lines
            .iter()
            .filter(|l| l["tenant"] == tenant)
            .map(|l| (l["t"].as_f64().unwrap() * 1e9).round() as u64)
            .collect();
        // Held to its budget in every 60 s window, and using it: the workload asks for more.
        let worst = times
            .iter()
            .map(|&t| {
                times
                    .iter()
                    .filter(|&&u| u <= t && u + 60_000_000_000 > t)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            worst <= cap,
            "{tenant}: {worst} in one minute, budget {cap}"
        );
        assert!(
            times.len() >= 4 * cap,
            "{tenant}: only {} admitted in 5 minutes",
            times.len()
        );
    }
}
