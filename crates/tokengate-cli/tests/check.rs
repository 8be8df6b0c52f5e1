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

/// A `[store]` whose URL and password come from the environment: explained with the variable,
/// and checked where the variables are not set (a secret only production has) as where they
/// are; a set variable that holds no URL is still an error.
#[test]
fn check_explains_a_store_whose_url_comes_from_the_environment() {
    const URL: &str = "TOKENGATE_CHECK_TEST_URL";
    const PASSWORD: &str = "TOKENGATE_CHECK_TEST_PASSWORD";
    let dir = scratch("store-env");
    let limits = format!(
        "[store]\nurl = {{ env = \"{URL}\" }}\npassword = {{ env = \"{PASSWORD}\" }}\n\
         namespace = \"prod\"\non_error = {{ local_share = 0.25 }}\n\
         [models.gpt-4o]\nrequests_per_minute = 500\n"
    );
    let path = write(&dir, "limits.toml", &limits);
    let run = |env: &[(&str, &str)]| {
        common::tokengate_with_env(common::QUICK_BOUND, &["check", &path], env)
    };
    let unset = run(&[]);
    assert!(unset.status.success(), "{}", text(&unset.stderr));
    let out = text(&unset.stdout);
    assert!(
        out.contains(&format!(
            "shares its limits in Redis at the URL in environment variable {URL}, which is not \
             set here"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "note: environment variable {PASSWORD}, which the file reads, is not set here"
        )),
        "{out}"
    );
    assert!(out.contains("namespace \"prod\""), "{out}");
    assert!(out.contains("on 25% of every limit (local share)"), "{out}");
    assert!(
        out.contains("model gpt-4o"),
        "the limits are explained too: {out}"
    );

    let set = run(&[(URL, "redis://10.1.2.3:6379/0"), (PASSWORD, "s3cret")]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let out = text(&set.stdout);
    assert!(
        out.contains(&format!(
            "redis://:***@10.1.2.3:6379/0 (from environment variable {URL})"
        )),
        "{out}"
    );
    assert!(!out.contains("s3cret") && !out.contains("note:"), "{out}");

    let wrong = run(&[(URL, "not a url")]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains(&format!(
            "environment variable `{URL}` holds text that is not a URL"
        )),
        "{}",
        text(&wrong.stderr)
    );
}
