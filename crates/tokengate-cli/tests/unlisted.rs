//! A limits file's `unlisted_models = "pass"` is honoured by `simulate`: a model the file does
//! not cover is charged to the account and tenant budgets only, as the library's limiter does,
//! rather than stopping the run.

mod common;

use common::{example_file, fails_with, quick, report, scratch, write};

/// The example's limits without gpt-4o's own budget, with `[account]`, and `extra` on top.
fn limits(extra: &str) -> String {
    let limits = example_file("limits.toml").replace(
        "[models.\"gpt-4o\"]\nrequests_per_minute = 150\ntokens_per_minute = 100_000       # input + output\nmax_in_flight = 32\n",
        "",
    );
    assert!(!limits.contains("[models.\"gpt-4o\"]"));
    format!("{extra}{limits}\n[account]\nrequests_per_minute = 1_000\n")
}

#[test]
fn a_passed_model_runs_on_the_account_and_tenant_budgets() {
    let dir = scratch("unlisted-pass");
    let l = write(&dir, "limits.toml", &limits("unlisted_models = \"pass\"\n"));
    let (json, log) = (dir.join("r.json"), dir.join("a.jsonl"));
    let out = quick(&[
        "simulate",
        "--limits",
        &l,
        "--duration",
        "2m",
        "--json",
        json.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    let r = report(&out, &json);
    // gpt-4o's requests ran, under its name, and no client budget of its own limits them.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains("\"key\": \"gpt-4o\", \"provider_key\": \"gpt-4o\", \"model\": \"gpt-4o\"")
    );
    let keys: Vec<&str> = r["client"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert!(!keys.contains(&"gpt-4o"), "{keys:?}");
    assert!(keys.contains(&"account"), "{keys:?}");
}

#[test]
fn a_refused_model_says_how_to_pass_it() {
    let dir = scratch("unlisted-error");
    let l = write(&dir, "limits.toml", &limits(""));
    fails_with(
        &["simulate", "--limits", &l],
        &[
            "no limits for model \"gpt-4o\"",
            "unlisted_models = \"pass\"",
        ],
    );
}
