//! Requests the client's limiter refuses at once (a cost that can never fit, a wait known at
//! once to outlast `max_wait`) never waited: the report counts them apart, as `refused`, with
//! the reason, in the table and the JSON, not as "gave up" or "still waiting".

mod common;

use common::{quick, scratch, text, write};
use serde_json::Value;

/// A workload of one model, `m`, at one request a second for two minutes, for the tenants
/// given (equal weights), `max_wait` if given.
fn workload(tenants: &[&str], max_wait: Option<&str>) -> String {
    let mut w = String::from(
        r#"
duration = "2m"
seed = 1
concurrency = 100
max_tokens = 100
[arrivals]
rate_per_minute = 60
process = "uniform"
[input_tokens]
kind = "fixed"
value = 400
[output_tokens]
kind = "fixed"
value = 50
[latency]
base_ms = { kind = "fixed", value = 100 }
[[models]]
name = "m"
"#,
    );
    if let Some(m) = max_wait {
        w = format!("max_wait = \"{m}\"\n{w}");
    }
    for t in tenants {
        w.push_str(&format!("[[tenants]]\nname = \"{t}\"\n"));
    }
    w
}

/// Runs the simulation and returns its JSON report and its table.
fn run(name: &str, limits: &str, workload: &str) -> (Value, String) {
    let dir = scratch(name);
    let l = write(&dir, "limits.toml", limits);
    let w = write(&dir, "workload.toml", workload);
    let json = dir.join("report.json");
    let out = quick(&[
        "simulate",
        "--limits",
        &l,
        "--workload",
        &w,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, text(&out.stdout))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every request that arrived is counted once: completed, gave up, still waiting or refused.
fn assert_accounted(r: &Value) {
    let q = &r["requests"];
    assert_eq!(
        n(&q["arrived"]),
        n(&q["completed"]) + n(&q["gave_up"]) + n(&q["unfinished"]) + n(&q["refused"]),
        "{q}"
    );
    let by_reason: u64 = q["refused_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| n(&e["requests"]))
        .sum();
    assert_eq!(by_reason, n(&q["refused"]));
}

#[test]
fn a_wait_known_to_outlast_max_wait_is_refused_not_given_up() {
    // Six requests a minute, one arriving every second, max_wait 1 s: the limiter knows at
    // once that most must wait ten seconds.
    let (r, table) = run(
        "refused-max-wait",
        "[models.m]\nrequests_per_minute = 6\n",
        &workload(&["acme"], Some("1s")),
    );
    assert_accounted(&r);
    let q = &r["requests"];
    assert!(n(&q["refused"]) >= 90, "{q}");
    assert_eq!(n(&q["gave_up"]), 0, "none of them waited: {q}");
    // The last second's: the run ends before max_wait does.
    let reasons = q["refused_reasons"].as_array().unwrap();
    let reason = |name: &str| reasons.iter().find(|e| e["reason"] == name);
    let past_max_wait = reason("wait_past_max_wait").expect("refusals past max_wait");
    assert!(n(&past_max_wait["requests"]) >= 90, "{q}");
    let message = past_max_wait["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be admitted within 1s"),
        "{message}"
    );
    assert!(reasons
        .iter()
        .all(|e| e["reason"] == "wait_past_max_wait" || e["reason"] == "wait_past_end"));
    let line = format!("{} refused at once", n(&q["refused"]));
    assert!(table.contains(&line), "no {line:?} in\n{table}");
    assert!(
        table.contains("wait_past_max_wait: the wait needed was known at once to exceed max_wait"),
        "{table}"
    );
}

#[test]
fn a_cost_that_can_never_fit_is_refused_with_its_reason() {
    // acme's budget is large; every other tenant's admits 100 tokens a minute, and a request
    // reserves 500: globex's requests can never be admitted.
    let limits = "[models.m]\ntokens_per_minute = 1_000_000\n\n[tenants.acme]\ntokens_per_minute = 1_000_000\n\n[defaults.tenant]\ntokens_per_minute = 100\n";
    let (r, table) = run(
        "refused-never",
        limits,
        &workload(&["acme", "globex"], None),
    );
    assert_accounted(&r);
    let q = &r["requests"];
    assert!(n(&q["refused"]) > 30, "{q}");
    assert_eq!(n(&q["gave_up"]) + n(&q["unfinished"]), 0, "{q}");
    assert_eq!(n(&q["completed"]) + n(&q["refused"]), n(&q["arrived"]));
    let reasons = q["refused_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{q}");
    assert_eq!(reasons[0]["reason"], "never_fits");
    let message = reasons[0]["message"].as_str().unwrap();
    assert!(message.contains("can never be admitted"), "{message}");
    assert!(
        table.contains("never_fits: the cost can never fit a limit"),
        "{table}"
    );
}
