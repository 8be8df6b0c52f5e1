//! `tokengate check`: what it says about a limits file beyond its limits.

mod common;

use common::{example_file, examples, fails_with, quick, scratch, text, write};

/// `check`'s output for a limits file holding `limits`.
fn check(name: &str, limits: &str) -> String {
    let dir = scratch(name);
    let path = write(&dir, "limits.toml", limits);
    let out = quick(&["check", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn check_says_what_the_file_does_with_an_unlisted_model() {
    let strict = check(
        "unlisted-error",
        "[models.gpt-4o]\nrequests_per_minute = 500\n",
    );
    assert!(
        strict.contains("unlisted models are refused (unlisted_models = \"error\", the default): a request for one is an error"),
        "{strict}"
    );
    let pass = check(
        "unlisted-pass",
        "unlisted_models = \"pass\"\n[account]\nrequests_per_minute = 900\n[models.gpt-4o]\nrequests_per_minute = 500\n",
    );
    assert!(
        pass.contains("unlisted models pass (unlisted_models = \"pass\"): charged to the account and tenant budgets only"),
        "{pass}"
    );
    assert!(!pass.contains("is an error"), "{pass}");
    let no_models = check("unlisted-none", "[account]\nrequests_per_minute = 900\n");
    assert!(
        no_models.contains("unlisted models pass: the file limits no model"),
        "{no_models}"
    );
    let default = check(
        "unlisted-default",
        "[defaults.model]\nrequests_per_minute = 5\n[models.gpt-4o]\nrequests_per_minute = 500\n",
    );
    assert!(
        default.contains("unlisted models get [defaults.model]"),
        "{default}"
    );
}

#[test]
fn check_shows_weights_and_periods_below_a_millisecond() {
    let s = check(
        "weights-periods",
        r#"
margin = "0s"

[models."anthropic.claude-3-5-sonnet"]
tokens_per_minute = { amount = 2_000_000, output_weight = 5 }

[models.fast]
limits = [
  { dimension = "requests", amount = 3, per = "250us" },
  { dimension = "input_tokens", amount = 7, per = "100ns" },
  { dimension = "output_tokens", amount = 9, per = "1500us" },
]
"#,
    );
    let tokens = s
        .lines()
        .position(|l| {
            l.trim_start()
                .starts_with("tokens         2000000 per minute")
        })
        .unwrap_or_else(|| panic!("no tokens line in\n{s}"));
    assert!(
        s.lines().nth(tokens + 1).is_some_and(|l| l
            .contains("counted as input x 1 + output x 5 (input_weight = 1, output_weight = 5)")),
        "{s}"
    );
    for needle in ["3 per 250 µs", "7 per 100 ns", "9 per 1.5 ms"] {
        assert!(s.contains(needle), "no {needle:?} in\n{s}");
    }
    // Unweighted limits say nothing more.
    assert_eq!(s.matches("counted as").count(), 1, "{s}");
}

#[test]
fn check_explains_a_workload_file_and_says_which_command_runs_it() {
    let w = examples().join("workload.toml");
    let out = quick(&["check", w.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "workload.toml: valid workload file",
        "tokengate simulate --workload",
        "590 a minute, Poisson",
        "200 requests at once at 20m",
        "capped by max_tokens = 1024",
        "gpt-4o-mini (weight 39)",
        "acme (weight 3)",
    ] {
        assert!(s.contains(needle), "no {needle:?} in\n{s}");
    }
    // Its mistakes are a workload's, not a limits file's.
    let dir = scratch("check-workload");
    let bad = write(
        &dir,
        "workload.toml",
        &example_file("workload.toml").replace("rate_per_minute = 590", "rate_per_minit = 590"),
    );
    fails_with(
        &["check", &bad],
        &[
            "field `arrivals.rate_per_minit`",
            "(did you mean `rate_per_minute`?)",
        ],
    );
}

#[test]
fn check_explains_a_provider_file_as_the_provider_enforces_it() {
    let p = examples().join("provider.toml");
    let out = quick(&["check", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "provider.toml: valid provider file (for tokengate simulate --provider)",
        "enforced as smooth window",
        "output tokens are counted as max_tokens, never given back",
        "family gpt-4o-mini",
    ] {
        assert!(s.contains(needle), "no {needle:?} in\n{s}");
    }
    // The provider's algorithm applies to every limit that names none.
    let dir = scratch("check-provider");
    let bucket = write(
        &dir,
        "provider.toml",
        &example_file("provider.toml").replace(
            "algorithm = \"smooth_window\"",
            "algorithm = \"token_bucket\"",
        ),
    );
    let out = quick(&["check", &bucket]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let row = s
        .lines()
        .find(|l| l.trim_start().starts_with("requests       500 per minute"))
        .unwrap_or_else(|| panic!("no row in\n{s}"));
    assert!(row.contains("token bucket"), "{row}");
    // A limit the provider's algorithm cannot enforce is an error naming its budget.
    let leaky = write(
        &dir,
        "leaky.toml",
        &example_file("provider.toml")
            .replace(
                "algorithm = \"smooth_window\"",
                "algorithm = \"leaky_bucket\"",
            )
            .replace(
                "requests_per_minute = 150",
                "requests_per_minute = { amount = 150, burst = 5 }",
            ),
    );
    fails_with(
        &["check", &leaky],
        &["model gpt-4o", "burst", "leaky bucket"],
    );
}
