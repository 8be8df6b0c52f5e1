//! A provider file's `[account]` is enforced (an organisation-wide limit, charged with each
//! request's model budget, all or none), and tenants, which a provider does not limit, are
//! refused with the file, line and field.

mod common;

use common::{example_file, fails_with, quick, report, scratch, write};
use serde_json::Value;

#[test]
fn the_providers_account_limit_is_enforced() {
    let dir = scratch("provider-account");
    let provider = example_file("provider.toml") + "\n[account]\nrequests_per_minute = 1\n";
    let p = write(&dir, "provider.toml", &provider);
    let json = dir.join("r.json");
    let out = quick(&[
        "simulate",
        "--provider",
        &p,
        "--duration",
        "5m",
        "--seed",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let r = report(&out, &json);
    let n = |v: &Value| v.as_u64().unwrap();
    // One a minute over five minutes, whatever the model: the rest is refused with a 429.
    assert!(n(&r["requests"]["throttled"]) > 0, "{}", r["requests"]);
    assert!(n(&r["requests"]["completed"]) <= 6, "{}", r["requests"]);
    let keys = r["provider"]["keys"].as_array().unwrap();
    let account = keys
        .iter()
        .find(|k| k["key"] == "account")
        .expect("the account in the provider's keys");
    assert!(n(&account["throttled"]) > 0);
    assert_eq!(
        n(&account["admitted"]),
        keys.iter()
            .filter(|k| k["key"] != "account")
            .map(|k| n(&k["admitted"]))
            .sum::<u64>(),
        "every call accepted is charged to the account"
    );
    let limit = &account["limits"][0];
    assert_eq!(limit["limit"], "1 per minute");
    assert!(n(&limit["worst_window"]) <= 1, "{limit}");
    assert_eq!(r["binding"]["key"], "account");
}

#[test]
fn tenants_in_a_provider_file_are_refused_with_their_place() {
    let dir = scratch("provider-tenants");
    let base = example_file("provider.toml");
    let lines = base.lines().count();
    for (extra, field) in [
        ("[tenants.acme]\nrequests_per_minute = 5\n", "tenants"),
        (
            "[defaults.tenant]\nrequests_per_minute = 5\n",
            "defaults.tenant",
        ),
        (
            "[defaults]\ntenant = { requests_per_minute = 5 }\n",
            "defaults.tenant",
        ),
    ] {
        let p = write(&dir, "provider.toml", &format!("{base}\n{extra}"));
        let line = if field == "tenants" || extra.starts_with("[defaults.tenant]") {
            lines + 2
        } else {
            lines + 3
        };
        fails_with(
            &["simulate", "--provider", &p],
            &[
                &format!("{p}:{line}:"),
                &format!("field `{field}`"),
                "a provider limits its account and its models, not a client's tenants",
                "[account]",
            ],
        );
    }
}
