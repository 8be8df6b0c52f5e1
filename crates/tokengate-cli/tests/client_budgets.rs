//! The report covers every budget of the client's limiter, not only the models': the
//! `[account]` and the tenants appear in the table, the JSON and the chart, and the binding
//! limit is the one that held traffic back, the client's or the provider's.

mod common;

use common::{example_file, quick, scratch, text, write};
use serde_json::Value;

#[test]
fn account_and_tenant_budgets_are_reported_and_can_bind() {
    let dir = scratch("client-budgets");
    // acme may send 30 requests a minute, far below what it asks for and what the models
    // allow; the account's token limit is generous.
    let limits = example_file("limits.toml").replace(
        "[tenants.acme]\nrequests_per_minute = 600",
        "[tenants.acme]\nrequests_per_minute = 30",
    ) + "\n[account]\ntokens_per_minute = 5_000_000\n";
    assert!(limits.contains("requests_per_minute = 30"));
    let l = write(&dir, "limits.toml", &limits);
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let out = quick(&[
        "simulate",
        "--limits",
        &l,
        "--duration",
        "5m",
        "--seed",
        "5",
        "--json",
        json.to_str().unwrap(),
        "--chart",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // The JSON: every client budget, each with its limits.
    let client = r["client"].as_array().unwrap();
    let key = |name: &str| {
        client
            .iter()
            .find(|k| k["key"] == name)
            .unwrap_or_else(|| panic!("no client key {name:?} in {client:?}"))
    };
    let acme = &key("tenant acme")["limits"][0];
    assert_eq!(acme["limit"], "30 per minute");
    assert!(acme["worst_window"].as_u64().unwrap() <= 30, "{acme}");
    assert!(acme["utilisation_pct"].as_f64().unwrap() > 90.0, "{acme}");
    assert_eq!(key("tenant globex")["limits"][0]["limit"], "300 per minute");
    let account = &key("account")["limits"][0];
    assert_eq!(account["dimension"], "tokens");
    // The account counts every admission; acme's budget only acme's.
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        n(&key("account")["admitted"]),
        n(&r["requests"]["admitted"])
    );
    assert!(n(&key("tenant acme")["admitted"]) < n(&r["requests"]["admitted"]));

    // The binding limit is acme's, on the client's side.
    let b = &r["binding"];
    assert_eq!(b["side"], "client", "{b}");
    assert_eq!(b["key"], "tenant acme", "{b}");
    assert_eq!(b["dimension"], "requests");
    assert_eq!(b["limit"], "30 per minute");

    // The table.
    for needle in [
        "tenant acme    client    requests       30 per minute",
        "tenant globex  client    requests       300 per minute",
        "account        client    tokens         5000000 per minute",
        "binding limit: tenant acme requests 30 per minute at ",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in\n{stdout}");
    }

    // The chart.
    let svg = std::fs::read_to_string(&svg).unwrap();
    for label in [
        "tenant acme requests limit (30 per minute)",
        "tenant acme requests admitted in the last 1 min",
        "account tokens limit (5000000 per minute)",
    ] {
        assert!(svg.contains(label), "no {label:?} in the chart");
    }
}
