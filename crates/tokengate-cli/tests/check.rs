//! `tokengate check`: what it says about a limits file beyond its limits.

mod common;

use common::{quick, scratch, text, write};

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
